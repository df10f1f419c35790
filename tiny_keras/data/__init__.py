"""Tiny ImageNet: the official layout (folder or zip), a TFDS builder, tf.data pipelines.

>>> from tiny_keras import data
>>> val = data.load_split("tiny-imagenet-200.zip", "val")   # uint8 arrays, labels, boxes
>>> train = data.make_dataset(data.load_split("tiny-imagenet-200.zip", "train"), batch_size=128)

``load_split`` reads a source: the official layout (``TinyImageNet``: a path to the zip or
the folder) or the TFDS dataset (``TfdsSource``, or ``None``: downloaded and prepared by
the builder ``TinyImageNetBuilder`` when absent); ``make_dataset`` batches a loaded split.

Class index = position of the wnid in sorted order (``tiny_keras.data.classes``).
Importing this package registers the TFDS builder ``tiny_imagenet``.
"""
from tiny_keras.data.arrays import DecodedSplit, default_cache_dir, load_split
from tiny_keras.data.classes import ClassNames, official_classes, sort_wnids
from tiny_keras.data.layout import NO_BOX, SPLITS, DatasetError, Record, TinyImageNet
from tiny_keras.data.pipeline import make_dataset, resize_images
from tiny_keras.data import tfds_builder  # registers "tiny_imagenet" with TFDS
from tiny_keras.data.tfds_builder import TfdsSource

__all__ = [
    "ClassNames",
    "DatasetError",
    "DecodedSplit",
    "NO_BOX",
    "Record",
    "SPLITS",
    "TfdsSource",
    "TinyImageNet",
    "default_cache_dir",
    "load_split",
    "make_dataset",
    "official_classes",
    "resize_images",
    "sort_wnids",
    "tfds_builder",
]
