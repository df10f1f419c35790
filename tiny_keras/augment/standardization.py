"""Standardisation, in one place: the legacy ``ImageDataGenerator.standardize`` and the
statistics it uses, streamed over the training images.

``Augmenter`` (``generator``), ``SubtractMeanImage`` (``transforms``) and the layers
``Standardization`` and ``MeanImageSubtraction`` (``layers``) all fit and apply their
statistics with these functions:

- :func:`standardize`: rescale, samplewise centring/normalisation, then featurewise
  mean and std, in the legacy order.
- :func:`channel_mean_std`: the featurewise (per-channel) mean and std of a training set.
- :func:`mean_image`: the mean training image (per pixel and channel).
- :func:`image_batches`: the chunks both statistics stream through, so the whole training
  set (1.2 GB as uint8) never has to exist as float64 or float32.
- :func:`write_stats` / :func:`read_stats`: the statistics as a JSON file kept with a run.
"""
import json
import sys

import numpy as np
from keras import ops

from tiny_keras import files
from tiny_keras.augment.core import no_autograph, to_float32
from tiny_keras.backend import tf

EPSILON = 1e-6  # legacy standardize: x /= std + 1e-6


@no_autograph
def standardize(images, mean=None, std=None, rescale=None, samplewise_center=False,
                samplewise_std_normalization=False):
    """Legacy ``ImageDataGenerator.standardize`` per image, featurewise stats as arguments.

    ``rescale`` multiplies first; ``samplewise_*`` use each image's mean and std over all
    its values; ``mean`` (if given) is subtracted per channel, then ``std + 1e-6`` (if
    given) divides, in the legacy order.
    """
    x = to_float32(images)
    if rescale:
        x = x * rescale
    if samplewise_center or samplewise_std_normalization:
        x = x - ops.mean(x, axis=(1, 2, 3), keepdims=True)
    if samplewise_std_normalization:
        x = x / (ops.std(x, axis=(1, 2, 3), keepdims=True) + EPSILON)
    if mean is not None:
        x = x - ops.cast(mean, "float32")
    if std is not None:
        x = x / (ops.cast(std, "float32") + EPSILON)
    return x


def _is_dataset(x):
    """Whether ``x`` is a ``tf.data.Dataset``, without importing TensorFlow where it is not
    loaded (then ``x`` cannot be one)."""
    return sys.modules.get("tensorflow") is not None and isinstance(x, tf.data.Dataset)


def image_batches(x, batch_size):
    """Chunks of images (numpy) from an array/tensor, an object with ``.images`` (a decoded
    split), or an iterable of batches (``(images, labels)`` tuples are fine)."""
    if hasattr(x, "images") and not isinstance(x, np.ndarray) and not _is_dataset(x):
        x = x.images
    if ops.is_tensor(x):
        x = ops.convert_to_numpy(x)
    if isinstance(x, np.ndarray):
        if x.ndim != 4:
            raise ValueError(f"fit() expects images [N, H, W, C]; received shape {tuple(x.shape)}.")
        for start in range(0, x.shape[0], batch_size):
            yield x[start:start + batch_size]
        return
    for batch in x:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        batch = np.asarray(batch)
        if batch.ndim != 4:
            raise ValueError(f"fit() expects batches of images [B, H, W, C]; received shape {batch.shape}.")
        yield batch


def channel_mean_std(x, batch_size=1024, rescale=None, augment=None, rounds=1):
    """The per-channel mean and std (ddof 0, as the legacy ``fit``) of images, in float64.

    Args:
        x: images or batches of images, as :func:`image_batches` reads them.
        rescale: multiply by this first (None or 0: no), as the legacy ``fit``.
        augment: ``fn(images, round, batch_index) -> images`` (float64 numpy): statistics
            of augmented copies, ``rounds`` of them per batch (legacy ``fit(augment=True)``).

    Returns:
        ``(mean, std, num_images)``: float32 ``[C]`` twice, and how many images were read.
    """
    total = num_images = 0
    sum1 = sum2 = None
    for i, batch in enumerate(image_batches(x, batch_size)):
        num_images += batch.shape[0]
        for r in range(rounds if augment else 1):
            xb = np.asarray(batch, np.float64)
            if rescale:  # legacy: rescale first, then augment (if asked), then the statistics
                xb = xb * rescale
            if augment:
                xb = np.asarray(augment(xb, r, i), np.float64)
            flat = xb.reshape(-1, xb.shape[-1])
            s1, s2 = flat.sum(axis=0), np.square(flat).sum(axis=0)
            sum1 = s1 if sum1 is None else sum1 + s1
            sum2 = s2 if sum2 is None else sum2 + s2
            total += flat.shape[0]
    if not total:
        raise ValueError("fit() received no images.")
    mean = sum1 / total
    # Legacy: std of the centred data, ddof=0.
    std = np.sqrt(np.maximum(sum2 / total - np.square(mean), 0.0))
    return mean.astype(np.float32), std.astype(np.float32), num_images


def mean_image(x, batch_size=1024):
    """The mean image ``[H, W, C]`` (float32) of images, summed in float64 over chunks."""
    total, count = None, 0
    for batch in image_batches(x, batch_size):
        s = batch.astype(np.float64).sum(axis=0)
        total = s if total is None else total + s
        count += batch.shape[0]
    if not count:
        raise ValueError("fit() received no images.")
    return (total / count).astype(np.float32)


def write_stats(path, format, indent=2, **fields):
    """Statistics as a JSON file ``{"format": format, **fields}``, written atomically."""
    with files.atomic_open(path, encoding="utf-8") as f:
        json.dump({"format": format, **fields}, f, indent=indent)


def read_stats(path, format, what):
    """The statistics file at ``path``; a ``ValueError`` naming ``what`` was expected unless
    it has ``format``."""
    stats = files.read_json(path)
    if stats.get("format") != format:
        raise ValueError(f"{path} is not {what} (format {stats.get('format')!r}).")
    return stats
