"""Augmentation and preprocessing for the five papers, vectorised, seeded and tf.data-ready.

Every transform maps a batch ``[B, H, W, C]`` (0..255, any real dtype) to a float32 batch,
drawing its random parameters per image from a stateless seed, so the same seed gives the
same batch eagerly and inside ``tf.data.Dataset.map``. The data pipeline calls them as
``images = fn(images, seed)`` after batching (``tiny_keras.data.make_dataset(augment=fn)``).

- ``Augmenter``: Keras's legacy ``ImageDataGenerator`` (papers 1, 3, 4): same arguments,
  same per-image distributions, one resampling pass per batch, ``fit`` / ``standardize`` /
  ``save_stats`` / ``load_stats``; ``apply_transform(images, params)`` is its deterministic
  half, matching the legacy ``apply_transform`` pixel for pixel.
- The papers' own transforms (papers 2 and 5): ``RandomCrop``, ``CenterCrop``,
  ``five_crop``/``ten_crop`` (test-time augmentation), ``RandomFlip``, ``RandomContrast``,
  ``RandomGamma``, ``RandomTint``, ``RandomMultiply``, ``GaussianNoise``,
  ``SubtractMeanImage``, ``Resize``, ``Rescale``; ``Compose`` and ``RandomApply`` combine them.
- ``standardize`` and the statistics it uses (per-channel mean and std, the mean image),
  fitted by streaming over the training images: ``standardization``, shared by
  ``Augmenter``, ``SubtractMeanImage`` and the layers.
- Keras layers (``AugmentationLayer``, ``Standardization``, ``MeanImageSubtraction``,
  ``ImageNetPreprocessing``; ``augmenter_layers(aug)`` for a fitted ``Augmenter``) run
  the same code in a model and save with it.

Example (paper 1)::

    aug = Augmenter(rotation_range=35, width_shift_range=0.2, height_shift_range=0.2,
                    fill_mode="nearest", horizontal_flip=True, featurewise_std_normalization=True)
    aug.fit(load_split(path).images)
    train = make_dataset(load_split(path), augment=aug)
    val = make_dataset(load_split(path, "val"), augment=aug.inference)
"""
from tiny_keras.augment.affine import apply_transform, transform_matrices
from tiny_keras.augment.core import Compose, RandomApply, Transform, as_seed, deserialize, serialize
from tiny_keras.augment.generator import Augmenter
from tiny_keras.augment.layers import (
    AugmentationLayer,
    ImageNetPreprocessing,
    MeanImageSubtraction,
    Standardization,
    augmenter_layers,
)
from tiny_keras.augment.standardization import standardize
from tiny_keras.augment.transforms import (
    CenterCrop,
    GaussianNoise,
    RandomContrast,
    RandomCrop,
    RandomFlip,
    RandomGamma,
    RandomMultiply,
    RandomTint,
    Rescale,
    Resize,
    SubtractMeanImage,
    center_crop,
    five_crop,
    ten_crop,
)

__all__ = [
    "AugmentationLayer", "Augmenter", "CenterCrop", "Compose", "GaussianNoise", "ImageNetPreprocessing",
    "MeanImageSubtraction",
    "RandomApply", "RandomContrast", "RandomCrop", "RandomFlip", "RandomGamma", "RandomMultiply",
    "RandomTint", "Rescale", "Resize", "Standardization", "SubtractMeanImage", "Transform",
    "apply_transform", "as_seed", "augmenter_layers", "center_crop", "deserialize", "five_crop", "serialize",
    "standardize", "ten_crop", "transform_matrices",
]
