"""A run's input: the splits, the training stream and the evaluation batches.

The host pipeline only shuffles, gathers and batches uint8 images; the model augments
and preprocesses them on the device (``engine.model``). On TensorFlow the streams are
tf.data datasets; on JAX and PyTorch ``tiny_keras.data.BatchLoader``'s (numpy).
"""
import dataclasses

from tiny_keras import backend
from tiny_keras import data as data_lib
from tiny_keras.backend import tf


def load_splits(recipe, data, progress=False):
    """``(train, val)`` ``DecodedSplit``s of ``data``: the zip, the folder, None for TFDS (the
    recipe's class and per-class subsets applied), or ``{"train": DecodedSplit, "val":
    DecodedSplit}`` already in memory (used as they are)."""
    if isinstance(data, dict):
        missing = {"train", "val"} - set(data)
        if missing or not all(isinstance(data[k], data_lib.DecodedSplit) for k in ("train", "val")):
            raise ValueError("data as a dict must map 'train' and 'val' to tiny_keras.data.DecodedSplit objects; "
                             f"received keys {sorted(data)}")
        splits = data["train"], data["val"]
    else:
        splits = tuple(data_lib.load_split(data, name, classes=recipe.classes, per_class=per_class, progress=progress)
                       for name, per_class in (("train", recipe.per_class), ("val", recipe.val_per_class)))
    for split in splits:
        if split.labels.max() >= recipe.num_classes:
            raise ValueError(f"{split.split} labels go up to {split.labels.max()}, but {recipe.num_classes=}")
    return splits


def train_input(strategy, split, batch_size, seed, skip_batches=0):
    """The training stream for ``strategy``: an endless seeded stream of uint8
    ``batch_size`` batches, started ``skip_batches`` in (a resumed run's position).

    With several replicas on TensorFlow (``distribute_datasets_from_function``) each input
    pipeline reads its own shard of the stream in per-replica batches: the global batch
    stays ``batch_size``, the replicas of a step see distinct images and an epoch every
    image once. Under ``data_parallel`` Keras splits each global batch across the devices;
    with several processes each reads every count-th image of the stream's order."""
    if batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"batch size {batch_size} does not split over {strategy.num_replicas_in_sync} replicas")
    if not backend.is_tensorflow():
        count, index = getattr(strategy, "num_processes", 1), getattr(strategy, "process_index", 0)
        return data_lib.BatchLoader(split, batch_size // count, training=True, seed=seed, skip_batches=skip_batches,
                                    shard=(count, index) if count > 1 else None).stream()
    if strategy.num_replicas_in_sync == 1:
        return without_autotune_thread(data_lib.make_dataset(split, batch_size=batch_size, training=True, seed=seed,
                                                             repeat=True, skip_batches=skip_batches))

    def per_pipeline(context):
        # A step takes one batch per replica: this pipeline's replicas' batches from it.
        replicas_here = strategy.num_replicas_in_sync // context.num_input_pipelines
        return without_autotune_thread(data_lib.make_dataset(
            split, batch_size=context.get_per_replica_batch_size(batch_size), training=True, seed=seed, repeat=True,
            skip_batches=skip_batches * replicas_here, shard=(context.num_input_pipelines, context.input_pipeline_id)))

    return strategy.distribute_datasets_from_function(per_pipeline)


def without_autotune_thread(dataset):
    """``dataset`` without tf.data's autotuning thread (``Options.autotune.enabled = False``).

    Keras deletes the training iterator when ``fit`` returns, and with TensorFlow 2.21 that
    deletion waits for the autotuning thread's current sleep to end (``Model::OptimizeLoop``;
    its period doubles up to 60 s): measured on the real training stream, 4 of 9 stage
    endings took 20-40 s more, none of 8 without the thread. The stream only gathers uint8
    batches from memory, and it gives 140,000-360,000 images/s on 2 CPU cores at batch
    32-128 either way: parallel map calls default to the cores, and prefetch keeps its own
    buffer tuning."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def eval_input(split, batch_size, strategy=None):
    """``split`` in order, in ``batch_size`` batches (the last one partial). With several
    processes (``strategy.num_processes``) each reads its shard, every count-th image, of a
    split cut to a multiple of the count (so every process has as many batches, of the same
    sizes: at most count - 1 images are left out)."""
    if backend.is_tensorflow():
        return data_lib.make_dataset(split, batch_size=batch_size, training=False)
    count, index = getattr(strategy, "num_processes", 1), getattr(strategy, "process_index", 0)
    if count == 1:
        return data_lib.BatchLoader(split, batch_size, training=False)
    n = len(split) - len(split) % count
    split = dataclasses.replace(split, images=split.images[:n], labels=split.labels[:n], boxes=split.boxes[:n],
                                grayscale=split.grayscale[:n], files=split.files[:n])
    return data_lib.BatchLoader(split, max(1, batch_size // count), training=False, shard=(count, index))
