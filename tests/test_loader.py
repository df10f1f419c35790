"""BatchLoader: the seeded, resumable PyDataset over a decoded split, on any backend."""
import json
import textwrap

import keras
import numpy as np
import pytest

from conftest import run_python
from tiny_keras.data import BatchLoader, DecodedSplit, official_classes

N = 50


def make_split(n=N, name="train"):
    """Image i carries i in its first pixel (i % 256, i // 256) and label i: a batch shows
    which images it holds and that images and labels stay together."""
    images = np.zeros((n, 64, 64, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    images[:, 0, 0, 1] = np.arange(n) // 256
    labels = np.arange(n, dtype=np.int32)
    return DecodedSplit(split=name, images=images, labels=labels, boxes=np.full((n, 4), -1, np.int32),
                        grayscale=np.zeros(n, bool), files=[f"{i}.JPEG" for i in range(n)],
                        classes=official_classes())


def read_pass(loader):
    batches = [loader[i] for i in range(len(loader))]
    loader.on_epoch_end()
    for images, labels in batches:
        assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3) and labels.dtype == np.int32
        assert np.array_equal(images[:, 0, 0, 0] + 256 * images[:, 0, 0, 1].astype(int), labels)
    return [labels for _, labels in batches]


def test_training_every_image_once_per_epoch_reshuffled():
    loader = BatchLoader(make_split(), 8, training=True, seed=3)
    assert len(loader) == N // 8 and isinstance(loader, keras.utils.PyDataset)
    epochs = []
    for epoch in range(3):
        assert loader.epoch == epoch
        batches = read_pass(loader)
        assert all(len(b) == 8 for b in batches)  # the last partial batch (2 images) is dropped
        stream = np.concatenate(batches)
        assert len(set(stream)) == 48
        # numpy's Generator seeded by (seed, epoch), cut into batches
        assert np.array_equal(stream, np.random.default_rng([3, epoch]).permutation(N)[:48])
        epochs.append(stream)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_same_seed_same_stream_and_iteration_reads_one_epoch():
    def stream(seed, passes=2):
        loader = BatchLoader(make_split(), 8, training=True, seed=seed)
        return [np.concatenate([labels for _, labels in loader]) for _ in range(passes)]

    a, b, c = stream(1), stream(1), stream(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])  # `for ... in loader` twice: two epochs


def test_start_epoch_and_skip_batches_resume_the_stream():
    whole = BatchLoader(make_split(), 8, seed=5)  # split "train": training by default
    epochs = [read_pass(whole) for _ in range(4)]
    flat = [b for epoch in epochs for b in epoch]
    resumed = BatchLoader(make_split(), 8, seed=5, start_epoch=2)
    assert resumed.epoch == 2
    for expected in epochs[2:]:
        assert all(np.array_equal(x, y) for x, y in zip(read_pass(resumed), expected))
    # Stopped mid-epoch: each pass is the next len(loader) batches of the stream.
    mid = BatchLoader(make_split(), 8, seed=5, start_epoch=1, skip_batches=4)
    assert all(np.array_equal(x, y) for x, y in zip(read_pass(mid) + read_pass(mid), flat[10:22]))
    assert all(np.array_equal(mid.batch_at(p)[1], flat[p]) for p in range(24))


@pytest.mark.parametrize("workers", [1, 3])
def test_stream_runs_on_across_epochs_from_where_it_starts(workers):
    """``stream()``, what the engine gives fit off TensorFlow: the stream's batches in
    order from the loader's start, through epoch ends, whatever fit's steps per epoch."""
    whole = BatchLoader(make_split(), 8, seed=5)
    flat = [b for _ in range(4) for b in read_pass(whole)]
    loader = BatchLoader(make_split(), 8, seed=5, skip_batches=9, workers=workers)
    stream = loader.stream()
    for position in range(9, 24):
        images, labels = next(stream)
        np.testing.assert_array_equal(labels, flat[position])
        np.testing.assert_array_equal(images[:, 0, 0, 0] + 256 * images[:, 0, 0, 1].astype(int), labels)
    loader.close()


def test_a_pass_ends_at_the_first_epoch_end_after_each_batch_was_read():
    loader = BatchLoader(make_split(), 8, seed=0)
    reference = BatchLoader(make_split(), 8, seed=0)
    first, second = read_pass(reference), read_pass(reference)
    # fit's look at one batch to build the model: an epoch begun and ended after one read
    # (fit(shuffle=True) picks it at random) leaves the pass as it was.
    assert np.array_equal(loader[4][1], first[4])
    loader.on_epoch_end()
    assert loader.epoch == 0
    order = np.random.default_rng(0).permutation(len(loader))  # as fit(shuffle=True) reads
    assert all(np.array_equal(loader[i][1], first[i]) for i in order)
    assert np.array_equal(loader[0][1], first[0])  # read again before the epoch's end: the same
    loader.on_epoch_end()
    assert loader.epoch == 1 and np.array_equal(loader[0][1], second[0])
    # steps_per_epoch below len(loader): a pass over two epoch ends
    for i in range(3):
        loader[i]
    loader.on_epoch_end()
    assert np.array_equal(loader[3][1], second[3])


def test_evaluation_in_order_keeps_the_last_partial_batch():
    loader = BatchLoader(make_split(name="val"), 8)
    assert not loader.training and len(loader) == 7
    for _ in range(2):
        batches = read_pass(loader)
        assert [len(b) for b in batches] == [8] * 6 + [2]
        assert np.array_equal(np.concatenate(batches), np.arange(N))


@pytest.mark.parametrize("training", [True, False])
def test_shards_are_disjoint_and_cover_the_epoch(training):
    shards = [BatchLoader(make_split(), 4, training=training, seed=7, shard=(3, i)) for i in range(3)]
    streams = [np.concatenate(read_pass(s)) for s in shards]
    union = np.concatenate(streams)
    assert len(set(union)) == len(union)  # disjoint
    if training:
        assert [len(s) for s in shards] == [4, 4, 4]  # 16 images each: the same number of steps
        permutation = np.random.default_rng([7, 0]).permutation(N)
        assert sorted(union) == sorted(permutation[:48])  # every num_shards-th of one permutation
        assert np.array_equal(streams[1], permutation[1:48:3])
    else:
        assert sorted(union) == list(range(N))  # everything, once
        assert np.array_equal(streams[2], np.arange(2, N, 3))


def test_read_ahead_threads_give_the_same_batches():
    plain = BatchLoader(make_split(), 8, seed=2)
    ahead = BatchLoader(make_split(), 8, seed=2, workers=3)
    try:
        order = list(range(6)) + [3, 1, 0, 5, 2, 4] + list(range(6))  # in order, shuffled, in order
        for k, i in enumerate(order, 1):
            x1, y1 = plain[i]
            x2, y2 = ahead[i]
            assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
            if k % 6 == 0:  # the epoch's end
                plain.on_epoch_end()
                ahead.on_epoch_end()
        assert ahead.epoch == plain.epoch == 3
    finally:
        ahead.close()


@pytest.mark.parametrize("kwargs,error,match", [
    ({"batch_size": 0}, ValueError, r"batch_size must be a positive int. Received: batch_size=0"),
    ({"batch_size": 2.5}, TypeError, r"batch_size must be a positive int. Received: batch_size=2.5"),
    ({"batch_size": 64}, ValueError, r"train split has 50 images, fewer than one batch of batch_size=64"),
    ({"training": "yes"}, TypeError, r"training must be True or False"),
    ({"seed": -1}, ValueError, r"seed must be a non-negative int"),
    ({"start_epoch": -2}, ValueError, r"start_epoch must be a non-negative int.*start_epoch=-2"),
    ({"skip_batches": 1.0}, TypeError, r"skip_batches must be a non-negative int"),
    ({"shard": (2, 2)}, ValueError, r"shard must be \(num_shards, index\) with integers 0 <= index < num_shards. "
                                    r"Received: shard=\(2, 2\)"),
    ({"shard": 2}, ValueError, r"shard must be \(num_shards, index\).*Received: shard=2"),
    ({"shard": (50, 3), "batch_size": 2}, ValueError, r"shard \(50, 3\) has 1 images, fewer than one batch"),
    ({"workers": 0}, ValueError, r"workers must be a positive int"),
    ({"use_multiprocessing": True}, ValueError, r"use_multiprocessing must be False.*workers=N"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    kwargs = {"batch_size": 8, **kwargs}
    with pytest.raises(error, match=match):
        BatchLoader(make_split(), **kwargs)


def test_takes_a_loaded_split():
    with pytest.raises(TypeError, match=r"split must be a split loaded with tiny_keras.data.load_split"):
        BatchLoader("tiny-imagenet-200.zip", 8)
    with pytest.raises(IndexError, match="out of range"):
        BatchLoader(make_split(), 8)[6]


# A model on JAX that records the labels of every batch it trains on (run eagerly).
_FIT = """
import json, numpy as np, keras
from conftest_free import make_split
from tiny_keras.data import BatchLoader

seen = []


class Recorder(keras.Model):
    def train_step(self, state, data):
        seen.append(np.asarray(data[1]).tolist())
        return super().train_step(state, data)


def fit(shuffle):
    seen.clear()
    inputs = keras.Input((64, 64, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.ops.cast(inputs, "float32"))
    model = Recorder(inputs, keras.layers.Dense(50)(x))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    train = BatchLoader(make_split(), 8, training=True, seed=4, start_epoch=1, workers=3)
    val = BatchLoader(make_split(name="val"), 16, training=False, workers=2)
    model.fit(train, epochs=4, initial_epoch=1, steps_per_epoch=len(train), validation_data=val,
              shuffle=shuffle, verbose=0)
    return seen[:]


print(json.dumps({"in_order": fit(False), "fit_shuffled": fit(True)}))
"""


def test_fit_on_jax_with_read_ahead_sees_each_epoch_once(tmp_path):
    """model.fit on JAX, workers=3, resumed at initial_epoch=1: each Keras epoch gets exactly
    its own epoch's batches (the build's look at one batch, the read-ahead across epoch
    ends and the validation loader change nothing); with fit(shuffle=True) Keras reorders
    the batches within an epoch and nothing else."""
    helper = tmp_path / "conftest_free.py"
    helper.write_text("import numpy as np\nfrom tiny_keras.data import DecodedSplit, official_classes\nN = 50\n\n"
                      + textwrap.dedent(_source(make_split)))
    (tmp_path / "fit.py").write_text(_FIT)
    out = run_python(tmp_path / "fit.py", env={"KERAS_BACKEND": "jax"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = BatchLoader(make_split(), 8, training=True, seed=4)
    for name in ("in_order", "fit_shuffled"):
        seen = result[name]
        assert len(seen) == 3 * len(expected)
        for k, epoch in enumerate(range(1, 4)):
            batches = seen[k * 6:(k + 1) * 6]
            wanted = [expected.batch_at(epoch * 6 + b)[1].tolist() for b in range(6)]
            if name == "in_order":
                assert batches == wanted
            else:
                assert sorted(batches) == sorted(wanted)


def _source(function):
    import inspect

    return inspect.getsource(function)
