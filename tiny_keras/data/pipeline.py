"""tf.data pipelines for training and evaluation.

One fixed order, each step for a reason:

1. decode once and cache (``load_split``, before ``make_dataset``): JPEG decoding is the
   costly part; the decoded uint8 split lives in memory (100k images are 1.2 GB) or a
   cache file;
2. shuffle indices with a seed (cheap: the images themselves are not copied into a
   shuffle buffer), reshuffled each epoch;
3. repeat (optional: Keras ``fit`` can also iterate epoch by epoch);
4. batch, then gather the batch's images: every later step sees whole batches;
5. optionally, augment the batch on the host: ``augment(images, seed)`` with float32 images
   in 0..255 and a per-batch stateless seed of shape [2], so the same ``seed`` gives the
   same batches;
6. optionally, resize to ``image_size``;
7. prefetch, so the accelerator never waits for the CPU.

Training (``tiny_keras.train``) uses steps 1-4 and 7 only: batches stay uint8 (a quarter
of float32's bytes to the device) and the model augments, crops and resizes them on the
device (``tiny_keras.models.ImageClassifier``). Steps 5 and 6 serve models without those
layers.

tf.data needs TensorFlow (on any Keras backend); on JAX and PyTorch without it,
:class:`~tiny_keras.data.loader.BatchLoader` batches a loaded split instead.
"""
import numpy as np

from tiny_keras import backend
from tiny_keras.backend import tf
from tiny_keras.data.arrays import DecodedSplit


def resize_images(images, size, method="bilinear", antialias=True):
    """Resize a float batch to ``size`` x ``size`` (or (height, width)); no-op if already that size."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[1:3]) == size:
        return images
    return tf.image.resize(images, size, method=method, antialias=antialias)


def make_dataset(
    split,
    batch_size=128,
    *,
    training=None,
    shuffle=None,
    seed=0,
    augment=None,
    image_size=None,
    repeat=False,
    skip_batches=0,
    drop_remainder=None,
    shard=None,
):
    """A ``tf.data.Dataset`` of ``(images, labels)`` batches of a loaded split.

    >>> train = make_dataset(load_split("tiny-imagenet-200.zip", "train"), batch_size=128)

    Args:
      split: a :class:`~tiny_keras.data.DecodedSplit`, from :func:`load_split` (which
        takes the source, the subset, the cache and error options) or built in memory.
      batch_size: the global batch size.
      training: shuffle and drop the last partial batch (default: ``split.split == "train"``).
      shuffle: override ``training``'s choice of shuffling.
      seed: seeds the shuffle order and the augmentation.
      augment: ``augment(images, seed) -> images`` applied to whole float32 batches
        (values 0..255) after batching; see ``tiny_keras.augment``.
      image_size: resize every batch to this size after augmentation.
      repeat: repeat forever (``fit`` then needs ``steps_per_epoch``); batches then run
        on across epoch boundaries as one seeded stream.
      skip_batches: start the (repeated) stream this many batches in, with the same
        images and augmentation seeds it would have had there: a resumed run continues
        exactly where it stopped.
      shard: ``(num_shards, index)``: this input pipeline's share of the stream (one
        worker's under multi-worker training). Every shard shuffles with the same seed and
        takes every ``num_shards``-th image of the stream, after ``skip_batches`` batches of
        all shards, so the shards are disjoint and together read each epoch once;
        ``batch_size`` is then this pipeline's batch (``InputContext.get_per_replica_batch_size``).

    Images come out as stored (uint8, 0..255) or, with ``augment`` or ``image_size``,
    float32 (augmented, resized); labels int32.
    """
    backend.require_tensorflow("make_dataset (tf.data pipelines; BatchLoader needs no TensorFlow)")
    if not isinstance(split, DecodedSplit):
        raise TypeError(
            "make_dataset takes a split loaded with tiny_keras.data.load_split(source, split_name, ...), "
            f"which takes the source and the loading options. Received: {type(split).__name__} {split!r:.80}"
        )
    if isinstance(batch_size, str):
        raise TypeError(f"batch_size must be an int; the split's name comes with the loaded split. "
                        f"Received: {batch_size=}")
    decoded = split
    training = (decoded.split == "train") if training is None else training
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive. Received: {batch_size=}")
    n = len(decoded)
    if drop_remainder and not repeat and n < batch_size:
        raise ValueError(f"{decoded.split} has {n} images, fewer than one batch of {batch_size=}")
    if decoded.tensors is None:
        with tf.device("/CPU:0"):
            decoded.tensors = (tf.constant(np.asarray(decoded.images)),
                               tf.constant(np.asarray(decoded.labels, np.int32)))
    images, labels = decoded.tensors

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    num_shards, shard_index = shard or (1, 0)
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard must be (num_shards, index) with 0 <= index < num_shards. Received: {shard=}")
    if skip_batches:
        if not repeat:
            raise ValueError(f"skip_batches needs repeat=True. Received: {skip_batches=}")
        ds = ds.skip(skip_batches * batch_size * num_shards)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    as_float = augment is not None or image_size is not None

    def gather(index):
        batch = tf.gather(images, index)
        return (tf.cast(batch, tf.float32) if as_float else batch), tf.gather(labels, index)

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        seeds = seeds.skip(skip_batches)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda batch, s: (augment(batch[0], s), batch[1]), num_parallel_calls=tf.data.AUTOTUNE
        )
    if image_size is not None:
        ds = ds.map(lambda x, y: (resize_images(x, image_size), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
