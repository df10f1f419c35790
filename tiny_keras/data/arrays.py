"""A split decoded once into uint8 arrays, and the cache file that keeps it between runs.

``load_split(source, split)`` returns a :class:`DecodedSplit`. A source is the official
layout (:class:`~tiny_keras.data.layout.TinyImageNet`: the zip or the folder) or the
prepared TFDS dataset (:class:`~tiny_keras.data.tfds_builder.TfdsSource`); both list
records and read their bytes the same way, and everything after that is one path. The
first call decodes every JPEG (with a progress bar) and writes the arrays to the cache
folder (``$TINY_KERAS_CACHE``, default ``~/.cache/tiny_keras``); later calls map the
cache file instead. The cache key holds the source's signature (archive size and mtime,
every file's size and mtime for a folder, the prepared dataset's folder and metadata for
TFDS), so a changed source is decoded again. The key does not hold the decoder: TensorFlow's
and Pillow's give the same pixels (measured over the whole dataset, see
:mod:`tiny_keras.data.decode`), so an entry written on one backend is read on every other.
Cache entries are written to a temporary folder and renamed into place, so an
interrupted run never leaves a half-written cache behind.
"""
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from tiny_keras.data import decode, layout, tfds_builder
from tiny_keras.data.classes import ClassNames

CACHE_VERSION = 1


@dataclasses.dataclass
class DecodedSplit:
    """Decoded images of one split with everything known about them.

    ``images`` uint8 [N, 64, 64, 3]; ``labels`` int32 [N] (sorted-wnid index, -1 for
    test); ``boxes`` int32 [N, 4] (x0, y0, x1, y1, -1 when unknown); ``grayscale``
    bool [N] (the JPEG had one channel); ``files`` the file names; ``classes`` the
    dataset's :class:`ClassNames`; ``problems`` bad files skipped with ``on_error="skip"``.
    """

    split: str
    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    grayscale: np.ndarray
    files: list
    classes: ClassNames
    problems: list = dataclasses.field(default_factory=list)
    # The images and labels as tensors, made once by the pipeline and reused by every
    # dataset built on this split (each training stage builds its own).
    tensors: tuple = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __len__(self):
        return len(self.labels)

    @property
    def wnids(self):
        return [self.classes.wnid(i) if i >= 0 else "" for i in self.labels]


def default_cache_dir():
    return os.environ.get("TINY_KERAS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tiny_keras")


def _key(parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _write_cache(folder, decoded, meta):
    """``meta`` records who wrote the entry (its ``decoder``); readers of any decoder use it."""
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(folder) + ".tmp-", dir=parent)
    try:
        np.save(os.path.join(tmp, "images.npy"), decoded.images)
        np.savez(
            os.path.join(tmp, "arrays.npz"), labels=decoded.labels, boxes=decoded.boxes, grayscale=decoded.grayscale
        )
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(dict(meta, files=decoded.files, problems=decoded.problems), f)
        try:
            os.rename(tmp, folder)
        except OSError:  # another run finished the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_cache(folder, split, classes):
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    return DecodedSplit(
        split=split,
        images=np.load(os.path.join(folder, "images.npy"), mmap_mode="r"),
        labels=arrays["labels"],
        boxes=arrays["boxes"],
        grayscale=arrays["grayscale"],
        files=meta["files"],
        classes=classes,
        problems=meta["problems"],
    )


def decode_records(records, read, describe, classes, split, on_error="raise", progress=True, location="",
                   problems=(), decoder=None):
    """Decode ``records`` (``read(record) -> bytes``; ``describe(path)`` names a file in errors)
    with ``decoder`` (``"tensorflow"``, ``"pillow"``, ``None`` for the backend's default)."""
    found = list(problems)
    items = ((describe(r.path), (lambda r=r: read(r))) for r in records)
    if progress:
        print(f"Decoding {len(records)} {split} images from {location}")
    images, gray, keep = decode.decode_all(items, len(records), on_error=on_error, problems=found, progress=progress,
                                           decoder=decoder)
    kept = [r for r, k in zip(records, keep) if k]
    return DecodedSplit(
        split=split,
        images=images,
        labels=np.array([r.label for r in kept], np.int32),
        boxes=np.array([r.bbox for r in kept], np.int32).reshape(-1, 4),
        grayscale=gray,
        files=[r.file_name for r in kept],
        classes=classes,
        problems=found,
    )


def cached(make, key_parts, split, classes, source, cache="disk", cache_dir=None, progress=True, meta=None):
    """``make()`` a DecodedSplit, or read it from the cache entry for ``key_parts`` (``meta``:
    more to record in a new entry's meta.json, not part of the key)."""
    if cache == "memory":
        return make()
    key = _key(dict(key_parts, version=CACHE_VERSION, split=split))
    folder = os.path.join(cache_dir or default_cache_dir(), f"{split}-{key}")
    if not os.path.isfile(os.path.join(folder, "meta.json")):
        _write_cache(folder, make(), {"source": source, "split": split, **(meta or {})})
    elif progress:
        print(f"Using cached {split} images: {folder}")
    return _read_cache(folder, split, classes)


def open_source(source, on_error="raise"):
    """The source object for ``source``: a :class:`~tiny_keras.data.layout.TinyImageNet` for
    a path, a :class:`~tiny_keras.data.tfds_builder.TfdsSource` for ``None``; a source
    object is returned as it is."""
    if isinstance(source, (layout.TinyImageNet, tfds_builder.TfdsSource)):
        return source
    if source is None:
        return tfds_builder.TfdsSource()
    return layout.TinyImageNet(source, on_error=on_error)


def load_split(
    source,
    split="train",
    classes=None,
    per_class=None,
    cache="disk",
    cache_dir=None,
    on_error="raise",
    progress=True,
    decoder=None,
):
    """Decode (or read from the cache) one split of Tiny ImageNet.

    Args:
      source: the zip, the ``tiny-imagenet-200`` folder, a folder holding either, or a
        :class:`~tiny_keras.data.layout.TinyImageNet`; ``None`` for the TFDS dataset,
        downloaded and prepared when absent, or a
        :class:`~tiny_keras.data.tfds_builder.TfdsSource` (its ``data_dir``, its
        ``download_config``). Both kinds are read the same way.
      split: "train", "val" or "test" ("validation" is accepted for "val").
      classes: a subset: wnids, class indices, or an int n for the first n classes
        (labels keep their full-dataset indices).
      per_class: at most this many images of each class (the first ones, in file order).
      cache: "disk" (decode once, reuse the cache file), "memory" (decode every run).
      on_error: "raise" at the first bad file, or "skip" bad files and list them in
        ``.problems``.
      decoder: the JPEG decoder, ``"tensorflow"`` or ``"pillow"``; ``None`` (default):
        TensorFlow's on the TensorFlow backend, Pillow's on JAX and PyTorch. Both give the
        same pixels, so they share the cache (see :mod:`tiny_keras.data.decode`).
    """
    split = {"validation": "val"}.get(split, split)
    if cache not in ("disk", "memory"):
        raise ValueError(f"cache must be 'disk' or 'memory'. Received: {cache=}")
    decoder = decode.resolve_decoder(decoder)
    dataset = open_source(source, on_error=on_error)
    records = layout.select(dataset.records(split), classes=classes, per_class=per_class)
    if not records:
        raise ValueError(f"{dataset.location}: no {split} images match {classes=} and {per_class=}")

    def make():
        return decode_records(records, dataset.read, dataset.describe, dataset.classes, split, on_error=on_error,
                              progress=progress, location=dataset.location, problems=dataset.problems,
                              decoder=decoder)

    key_parts = {
        "files": [r.path for r in records],
        "labels": [r.label for r in records],
        "source": dataset.signature(split),
        "on_error": on_error,
    }
    # No decoder in the key: both decoders' pixels are the same (decode's docstring).
    return cached(make, key_parts, split, dataset.classes, dataset.location, cache, cache_dir, progress,
                  meta={"decoder": decoder})
