"""Tiny ImageNet: the official layout (folder or zip), decoding and its cache, batches for
every Keras backend, tf.data pipelines and a TFDS builder.

>>> from tiny_keras import data
>>> val = data.load_split("tiny-imagenet-200.zip", "val")   # uint8 arrays, labels, boxes
>>> train = data.make_dataset(data.load_split("tiny-imagenet-200.zip", "train"), batch_size=128)  # tf.data
>>> train = data.BatchLoader(data.load_split("tiny-imagenet-200.zip", "train"), 128, seed=0)  # any backend

``load_split`` reads a source: the official layout (``TinyImageNet``: a path to the zip or
the folder) or the TFDS dataset (``TfdsSource``, or ``None``: downloaded and prepared by
the builder ``TinyImageNetBuilder`` when absent), and decodes it with TensorFlow or Pillow
(``decoder=``; the same pixels, one cache). ``make_dataset`` batches a loaded split with
tf.data; ``BatchLoader`` batches it as a ``keras.utils.PyDataset``, with no TensorFlow.

Class index = position of the wnid in sorted order (``tiny_keras.data.classes``).
On the TensorFlow backend, importing this package registers the TFDS builder
``tiny_imagenet``; on JAX and PyTorch the package imports neither TensorFlow nor TFDS,
and the TFDS pieces import them when used (``tiny_keras.data.tfds_builder``).
"""
from tiny_keras import backend as _backend
from tiny_keras.data.arrays import DecodedSplit, default_cache_dir, load_split
from tiny_keras.data.classes import ClassNames, official_classes, sort_wnids
from tiny_keras.data.decode import DECODERS, default_decoder
from tiny_keras.data.layout import NO_BOX, SPLITS, DatasetError, Record, TinyImageNet
from tiny_keras.data.loader import BatchLoader
from tiny_keras.data.pipeline import make_dataset, resize_images
from tiny_keras.data import tfds_builder
from tiny_keras.data.tfds_builder import TfdsSource

if _backend.is_tensorflow():
    try:
        tfds_builder.register()  # "tiny_imagenet" for tfds.load
    except ImportError:  # no TFDS here: TfdsSource says so when used
        pass

__all__ = [
    "BatchLoader",
    "ClassNames",
    "DECODERS",
    "DatasetError",
    "DecodedSplit",
    "NO_BOX",
    "Record",
    "SPLITS",
    "TfdsSource",
    "TinyImageNet",
    "default_cache_dir",
    "default_decoder",
    "load_split",
    "make_dataset",
    "official_classes",
    "resize_images",
    "sort_wnids",
    "tfds_builder",
]
