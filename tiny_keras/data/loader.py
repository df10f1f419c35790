"""Batches of a loaded split on any Keras backend: :class:`BatchLoader`, a
``keras.utils.PyDataset`` over the decoded uint8 arrays, with no TensorFlow.

>>> train = BatchLoader(load_split(path, "train"), 128, training=True, seed=0)
>>> val = BatchLoader(load_split(path, "val"), 128, training=False)
>>> model.fit(train, epochs=30, validation_data=val, shuffle=False)

Batches are ``(images uint8 [B, 64, 64, 3], labels int32 [B])`` numpy arrays, sliced from
the split's arrays (the cache's memory map); the model augments, crops and resizes them on
the device, as on TensorFlow.

**The stream.** Training (``training=True``) shuffles every epoch: epoch ``e`` is the
permutation ``numpy.random.default_rng([seed, e]).permutation(len(split))``, cut into
batches of ``batch_size``, the last partial batch dropped. Evaluation keeps the split's
order and its last partial batch, every epoch alike. The epochs follow one another as one
stream of batches, batch ``b`` of epoch ``e`` at position ``e * len(loader) + b``.
The TensorFlow path (:func:`~tiny_keras.data.make_dataset`) shuffles with tf.data's
``shuffle`` instead, so the two see different orders, each seeded and resumable.

**Passes.** ``loader[i]`` is batch ``i`` of the current pass. A pass ends at the first
``on_epoch_end()`` (Keras calls it after each epoch) by which each of its ``len(loader)``
batches has been read, in any order; an epoch end before that changes nothing. So
``model.fit`` reads one pass per epoch, and ``fit``'s first look at a batch to build the
model (an epoch begun and ended after one batch) does not use up a pass; with
``steps_per_epoch`` below ``len(loader)`` one pass spans several Keras epochs.
``for images, labels in loader`` reads one pass and ends it. The first pass starts
``start_epoch`` epochs and ``skip_batches`` batches into the stream; each pass is the next
``len(loader)`` batches of the stream from there. A run resumed at epoch ``k``
(``fit(..., initial_epoch=k)``) with ``start_epoch=k`` gets the batches the uninterrupted
run had; one stopped mid-epoch resumes with ``skip_batches`` (as
``make_dataset(..., repeat=True, skip_batches=...)`` does). (A loader of one batch is read
whole by that first look, so there the first pass ends with it.)

**Shards.** ``shard=(num_shards, index)``: one worker's share. Every shard uses the same
permutation and takes every ``num_shards``-th image of it (training: of its first
``num_shards * (len(split) // num_shards)`` images, so each shard has as many batches),
so shards are disjoint and together read each epoch once; ``batch_size`` is the shard's.

**Keras's adapter, and why the loader reads ahead itself.** Keras 3's PyDataset adapter
runs an ``OrderedEnqueuer`` for a dataset whose ``workers`` is above 1; when a pass is cut
short (``fit`` reads one batch to build the model, then starts over), the batches it had
already prefetched are kept and served at the start of the next epoch, ahead of that
epoch's own: two passes' batches mixed, some twice, some never. So the loader tells Keras
``workers=1`` (Keras then reads batches on its own thread, one pass per epoch) and reads
ahead itself: ``workers`` threads make the next ``workers`` batches of the stream,
keyed by their position, so nothing read ahead can land in another pass.
``use_multiprocessing`` must stay False: batches are slices of arrays this process holds
(a memory map of the cache), which processes would copy through a pipe.

**fit's shuffle.** Keras's adapter also permutes the order of a PyDataset's batches within
each epoch with Python's unseeded ``random`` when ``fit(shuffle=True)``, its default. Every
image still comes once per epoch, but the order no longer repeats: pass ``shuffle=False``
to ``fit``; the loader shuffles.
"""
import concurrent.futures
import operator
import threading

import keras
import numpy as np

from tiny_keras.data.arrays import DecodedSplit


def _integer(name, value, minimum, expected):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {expected}. Received: {name}={value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {expected}. Received: {name}={value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be {expected}. Received: {name}={value!r}")
    return value


class BatchLoader(keras.utils.PyDataset):
    """Seeded, resumable batches of a :class:`~tiny_keras.data.DecodedSplit` (see the module).

    Args:
      split: a split loaded with :func:`~tiny_keras.data.load_split`.
      batch_size: images per batch (this shard's, with ``shard``).
      training: shuffle each epoch and drop the last partial batch (``True``), or keep the
        split's order and its last partial batch (``False``). Default: ``split.split == "train"``.
      seed: seeds the permutations (training).
      start_epoch: the epoch the first pass reads (a run resumed at ``initial_epoch``).
      skip_batches: further batches into the stream to start at (a run stopped mid-epoch).
      shard: ``(num_shards, index)``, ``0 <= index < num_shards``: this worker's share.
      workers: threads making the next batches ahead of use (1: none, batches are made
        when read).
      use_multiprocessing: must be False (see the module).
      max_queue_size: passed to ``keras.utils.PyDataset``.
    """

    def __init__(self, split, batch_size, *, training=None, seed=0, start_epoch=0, skip_batches=0, shard=None,
                 workers=1, use_multiprocessing=False, max_queue_size=10):
        if not isinstance(split, DecodedSplit):
            raise TypeError(
                "split must be a split loaded with tiny_keras.data.load_split(source, split_name, ...). "
                f"Received: split={type(split).__name__} {split!r:.80}"
            )
        batch_size = _integer("batch_size", batch_size, 1, "a positive int")
        if training is None:
            training = split.split == "train"
        if not isinstance(training, (bool, np.bool_)):
            raise TypeError(f"training must be True or False (or None for split.split == 'train'). "
                            f"Received: training={training!r}")
        seed = _integer("seed", seed, 0, "a non-negative int")
        start_epoch = _integer("start_epoch", start_epoch, 0, "a non-negative int (the epoch to start at)")
        skip_batches = _integer("skip_batches", skip_batches, 0, "a non-negative int (batches to skip)")
        workers = _integer("workers", workers, 1, "a positive int (threads making batches ahead)")
        max_queue_size = _integer("max_queue_size", max_queue_size, 1, "a positive int")
        if use_multiprocessing:
            raise ValueError(
                "use_multiprocessing must be False: batches are slices of arrays in this process (a memory map "
                "of the cache), which threads read without copying; use workers=N for N threads. "
                f"Received: use_multiprocessing={use_multiprocessing!r}"
            )
        expected_shard = "(num_shards, index) with integers 0 <= index < num_shards"
        try:
            num_shards, shard_index = (1, 0) if shard is None else shard
            num_shards = _integer("shard", num_shards, 1, expected_shard)
            shard_index = _integer("shard", shard_index, 0, expected_shard)
        except (TypeError, ValueError):
            raise ValueError(f"shard must be {expected_shard}. Received: shard={shard!r}") from None
        if shard_index >= num_shards:
            raise ValueError(f"shard must be {expected_shard}. Received: shard={shard!r}")

        # Keras is told workers=1: its own enqueuer mixes passes (see the module's docstring).
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=max_queue_size)
        self.split = split
        self.batch_size = batch_size
        self.training = bool(training)
        self.seed = seed
        self.shard = (num_shards, shard_index)
        self.threads = workers
        self._images = split.images
        self._labels = np.asarray(split.labels, np.int32)
        n = len(split)
        if self.training:
            self._per_shard = n // num_shards
            self._batches = self._per_shard // batch_size
        else:
            self._per_shard = len(range(shard_index, n, num_shards))
            self._batches = -(-self._per_shard // batch_size)
        if self._batches == 0:
            share = f"shard {shard} has" if shard is not None else "has"
            raise ValueError(
                f"The {split.split} split {share} {self._per_shard} images, fewer than one batch of "
                f"batch_size={batch_size}{' (training drops a partial batch)' if self.training else ''}."
            )
        self._offset = start_epoch * self._batches + skip_batches
        self._passes = 0
        self._served = set()
        self._lock = threading.Lock()
        self._orders = {}
        self._ahead = {}
        self._pool = None

    # -- the stream ---------------------------------------------------------------------
    def __len__(self):
        return self._batches

    @property
    def epoch(self):
        """The epoch of the stream the current pass begins in."""
        return (self._offset + self._passes * self._batches) // self._batches

    def order(self, epoch):
        """This shard's image indices for ``epoch``, in the order they are read."""
        with self._lock:
            if epoch not in self._orders:
                n = len(self.split)
                num_shards, index = self.shard
                if self.training:
                    order = np.random.default_rng([self.seed, epoch]).permutation(n)
                    order = order[index:num_shards * self._per_shard:num_shards]
                else:
                    order = np.arange(index, n, num_shards)
                if len(self._orders) >= 2:
                    self._orders.pop(min(self._orders))
                self._orders[epoch] = order
            return self._orders[epoch]

    def batch_at(self, position):
        """The batch at ``position`` in the stream (epoch ``position // len(self)``)."""
        epoch, b = divmod(position, self._batches)
        index = self.order(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        return np.asarray(self._images[index]), self._labels[index]

    # -- keras.utils.PyDataset ----------------------------------------------------------
    def __getitem__(self, index):
        index = operator.index(index)
        if not 0 <= index < self._batches:
            raise IndexError(f"batch index {index} out of range for {self._batches} batches")
        with self._lock:
            position = self._offset + self._passes * self._batches + index
            self._served.add(index)
            future = self._ahead.pop(position, None)
            if self.threads > 1:
                self._read_ahead(position)
        return future.result() if future is not None else self.batch_at(position)

    def on_epoch_end(self):
        """End the pass if each of its batches has been read (see the module's docstring)."""
        with self._lock:
            if len(self._served) == self._batches:
                self._passes += 1
                self._served = set()

    def __iter__(self):
        """One pass, in order, then its end."""
        for index in range(len(self)):
            yield self[index]
        self.on_epoch_end()

    def stream(self):
        """Every batch from the loader's start on, endlessly, pass after pass: what
        ``fit(..., steps_per_epoch=k)`` takes for any ``k`` (a run's epochs need not be
        passes of the split), as ``make_dataset(..., repeat=True)`` on TensorFlow. Keras
        reads a generator in order, once: no pass bookkeeping is needed."""
        position = self._offset
        while True:
            with self._lock:
                future = self._ahead.pop(position, None)
                if self.threads > 1:
                    self._read_ahead(position)
            yield future.result() if future is not None else self.batch_at(position)
            position += 1

    def _read_ahead(self, position):
        """Start making the ``threads`` batches after ``position`` (under the lock)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="BatchLoader")
        wanted = range(position + 1, position + 1 + self.threads)
        for stale in [p for p in self._ahead if p not in wanted]:
            self._ahead.pop(stale).cancel()
        for p in wanted:
            if p not in self._ahead:
                self._ahead[p] = self._pool.submit(self.batch_at, p)

    def close(self):
        """Stop the read-ahead threads (a later read starts them again)."""
        with self._lock:
            pool, self._pool = self._pool, None
            for future in self._ahead.values():
                future.cancel()
            self._ahead = {}
        if pool is not None:
            pool.shutdown(wait=True)

    def __repr__(self):
        return (f"BatchLoader({self.split.split!r}, {len(self.split)} images, batch_size={self.batch_size}, "
                f"training={self.training}, seed={self.seed}, epoch={self.epoch}, shard={self.shard}, "
                f"{len(self)} batches)")
