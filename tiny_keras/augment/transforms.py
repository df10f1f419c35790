"""The papers' own augmentations and preprocessing, batched and seeded.

Every class is a ``Transform`` (see ``core``): ``t(images, seed)`` in training,
``t(images, training=False)`` / ``t.inference(images)`` in evaluation. Values are on the
0..255 scale. Where a paper gives no number, the default is ours and says so.

- Crops (paper 2 section 3.1: random 56x56 crop in training, centre crop at evaluation;
  paper 5 section 5.1: random 56x56 crops and their mirrors): ``RandomCrop``,
  ``CenterCrop``, and ``five_crop`` / ``ten_crop`` views for test-time augmentation.
- Photometric (paper 2 section 3.1): ``RandomContrast`` (contrast scaling by U[a, b] with
  clipping to [0, 255]) and ``RandomGamma`` (gamma in U[a, b]); paper 5 section 5.1:
  ``RandomTint`` (a constant added per channel), ``RandomMultiply`` (every pixel multiplied
  by a constant) and ``GaussianNoise`` (std 1 on the 0-255 scale).
- Preprocessing: ``SubtractMeanImage`` (papers 3 and 5; the mean training image, with
  ``fit``), ``Resize`` (paper 1's progressive resizing), ``Rescale``, ``RandomFlip``.
"""
import numpy as np
from keras import ops

from tiny_keras.augment.core import (
    Transform, batch_size, batch_uniform, fold_seed, identity_where_not, no_autograph, normal, select, to_float32,
    uniform, uniform_int
)
from tiny_keras.augment.standardization import mean_image, read_stats, write_stats


def _pair(size, name="size"):
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"{name} must be an int or a pair of ints (height, width). Received: {name}={size!r}")


def _check_interval(name, lower, upper):
    if not lower <= upper:
        raise ValueError(f"{name}: lower must be <= upper. Received: lower={lower}, upper={upper}")
    return float(lower), float(upper)


def _check_fits(images, height, width, what):
    h, w = images.shape[1], images.shape[2]
    if h is not None and w is not None and (height > h or width > w):
        raise ValueError(f"{what} of {height}x{width} does not fit in images of {h}x{w}.")


@no_autograph
def crop(images, top, left, height, width):
    """Crop each image at its own offset: ``top``/``left`` are [B] int tensors."""
    rows = ops.cast(top, "int32")[:, None] + ops.arange(height, dtype="int32")[None, :]
    cols = ops.cast(left, "int32")[:, None] + ops.arange(width, dtype="int32")[None, :]
    images = ops.take_along_axis(images, rows[:, :, None, None], axis=1)
    return ops.take_along_axis(images, cols[:, None, :, None], axis=2)


@no_autograph
def center_crop(images, size):
    """Centre ``size`` crop (offset ``(H - h) // 2``, as ``keras.layers.CenterCrop``)."""
    images = to_float32(images)
    height, width = _pair(size)
    _check_fits(images, height, width, "A centre crop")
    return _crop_at(images, *_centre_offsets(images, height, width), height, width)


def _centre_offsets(images, height, width):
    h, w = _spatial(images)
    return (h - height) // 2, (w - width) // 2


def _crop_at(images, top, left, height, width):
    """One offset for the whole batch; the output keeps static height and width even when
    the input size is only known at run time (e.g. a model taking ``(None, None, 3)``)."""
    b, channels = ops.shape(images)[0], ops.shape(images)[3]
    return ops.slice(images, [0, top, left, 0], [b, height, width, channels])


def _spatial(images):
    """(H, W) as Python ints when static (so crops keep static shapes), else tensors."""
    shape = ops.shape(images)  # static ints where known, scalar tensors elsewhere
    return shape[1], shape[2]


@no_autograph
def five_crop(images, size):
    """Five views per image: the four corners and the centre, ``[B, 5, h, w, C]``.

    Order: top-left, top-right, bottom-left, bottom-right, centre. For test-time
    augmentation, reshape to ``[B * 5, h, w, C]``, predict, and average over axis 1.
    """
    images = to_float32(images)
    height, width = _pair(size)
    _check_fits(images, height, width, "A crop")
    h, w = _spatial(images)
    corners = [(0, 0), (0, w - width), (h - height, 0), (h - height, w - width)]
    views = [_crop_at(images, top, left, height, width) for top, left in corners]
    views.append(center_crop(images, (height, width)))
    return ops.stack(views, axis=1)


@no_autograph
def ten_crop(images, size):
    """The five crops and their horizontal mirrors, ``[B, 10, h, w, C]`` (mirrors last)."""
    views = five_crop(images, size)
    return ops.concatenate([views, ops.flip(views, axis=3)], axis=1)


def _clip_range(clip):
    """A transform's ``clip`` argument as ``(low, high)`` floats, or None (no clipping)."""
    return None if clip is None else (float(clip[0]), float(clip[1]))


def _clip_where(images, clip, apply):
    """``images`` clipped to ``clip`` (None: not clipped), only where ``apply`` holds (None: all)."""
    if clip is None:
        return images
    clipped = ops.clip(images, *clip)
    return clipped if apply is None else select(apply, clipped, images)


class RandomCrop(Transform):
    """A random ``size`` crop per image in training; the centre crop at evaluation.

    Paper 2 section 3.1 ("a 56x56 crop randomly generated ... During validation and
    testing, we use the center crop"); paper 5 section 5.1 (random 56x56 crops).
    Offsets are uniform over all ``(H - h + 1) x (W - w + 1)`` positions.
    """

    random = True

    def __init__(self, size=56):
        self.size = _pair(size)

    def _train(self, images, seed):
        height, width = self.size
        _check_fits(images, height, width, "A random crop")
        n, h, w = ops.shape(images)[:3]
        top = uniform_int([n], fold_seed(seed, 0), 0, h - height + 1)
        left = uniform_int([n], fold_seed(seed, 1), 0, w - width + 1)
        return crop(images, top, left, height, width)

    def _eval(self, images):
        return center_crop(images, self.size)

    def output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[3])

    def get_config(self):
        return {"size": list(self.size)}


class CenterCrop(Transform):
    """Deterministic centre crop (training and evaluation)."""

    def __init__(self, size=56):
        self.size = _pair(size)

    def _eval(self, images):
        return center_crop(images, self.size)

    def output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[3])

    def get_config(self):
        return {"size": list(self.size)}


class RandomFlip(Transform):
    """Mirror each image with probability 1/2 (horizontally, and/or vertically)."""

    random = True

    def __init__(self, horizontal=True, vertical=False):
        if not (horizontal or vertical):
            raise ValueError("RandomFlip needs horizontal=True or vertical=True.")
        self.horizontal, self.vertical = bool(horizontal), bool(vertical)

    def _train(self, images, seed):
        return self._train_masked(images, seed, ops.ones([batch_size(images)], "bool"))

    def _train_masked(self, images, seed, apply):
        n = batch_size(images)
        for axis, enabled, index in ((2, self.horizontal, 0), (1, self.vertical, 1)):
            if enabled:
                coin = uniform([n], fold_seed(seed, index)) < 0.5
                images = select(ops.logical_and(coin, apply), ops.flip(images, axis=axis), images)
        return images

    def get_config(self):
        return {"horizontal": self.horizontal, "vertical": self.vertical}


class RandomContrast(Transform):
    """Contrast scaling by a factor in U[lower, upper], clipped to ``clip``.

    Paper 2 section 3.1: "scaling factor ... random([0.9, 1.08]) ..., and clip pixel
    values to the range [0, 255]". The paper does not say around what it scales; we scale
    around each image's per-channel mean (``tf.image.adjust_contrast``'s definition, the
    usual "contrast"); ``RandomMultiply`` scales around 0. The paper draws the factor "at
    every batch" but applies each method "randomly to this image": per image by default,
    ``per_image=False`` for one factor per batch.
    """

    random = True

    def __init__(self, lower=0.9, upper=1.08, clip=(0.0, 255.0), per_image=True):
        self.lower, self.upper = _check_interval("RandomContrast", lower, upper)
        self.clip = _clip_range(clip)
        self.per_image = bool(per_image)

    def _train(self, images, seed):
        factor = batch_uniform(images, seed, self.lower, self.upper, self.per_image)[:, None, None, None]
        mean = ops.mean(images, axis=(1, 2), keepdims=True)
        out = (images - mean) * factor + mean
        return _clip_where(out, self.clip, None)

    def get_config(self):
        return {"lower": self.lower, "upper": self.upper, "clip": self.clip and list(self.clip),
                "per_image": self.per_image}


class RandomGamma(Transform):
    """Gamma correction ``max_value * (x / max_value) ** gamma``, gamma in U[lower, upper].

    Paper 2 section 3.1 (gamma = random([0.9, 1.08])). Inputs are clipped to
    [0, max_value] first (a power of a negative number is undefined).
    """

    random = True

    def __init__(self, lower=0.9, upper=1.08, max_value=255.0, per_image=True):
        self.lower, self.upper = _check_interval("RandomGamma", lower, upper)
        if self.lower <= 0:
            raise ValueError(f"RandomGamma needs gamma > 0. Received: lower={lower}")
        self.max_value = float(max_value)
        self.per_image = bool(per_image)

    def _train(self, images, seed):
        gamma = batch_uniform(images, seed, self.lower, self.upper, self.per_image)[:, None, None, None]
        x = ops.clip(images, 0.0, self.max_value) / self.max_value
        return self.max_value * ops.power(x, gamma)

    def get_config(self):
        return {"lower": self.lower, "upper": self.upper, "max_value": self.max_value,
                "per_image": self.per_image}


class RandomTint(Transform):
    """Add a constant per channel and image, each in U[-max_delta, max_delta].

    Paper 5 section 5.1 ("changed the tint (adding a constant to each RGB channel)"); the
    paper gives no range: ``max_delta=20`` (about 8% of the range) is ours.
    """

    random = True

    def __init__(self, max_delta=20.0, clip=None):
        if max_delta < 0:
            raise ValueError(f"max_delta must be >= 0. Received: {max_delta=}")
        self.max_delta = float(max_delta)
        self.clip = _clip_range(clip)

    def _train(self, images, seed):
        return self._train_masked(images, seed, None)

    def _train_masked(self, images, seed, apply):
        channels = images.shape[-1]
        if channels is None:
            raise ValueError("RandomTint needs a known number of channels.")
        delta = batch_uniform(images, seed, -self.max_delta, self.max_delta, shape_suffix=(channels,))
        if apply is not None:
            delta = identity_where_not(apply, delta, 0.0)  # x + 0 is x
        out = images + delta[:, None, None, :]
        return _clip_where(out, self.clip, apply)

    def get_config(self):
        return {"max_delta": self.max_delta, "clip": self.clip and list(self.clip)}


class RandomMultiply(Transform):
    """Multiply every pixel of an image by one constant in U[lower, upper].

    Paper 5 section 5.1 ("the contrast (multiplying a constant to each pixel)"); the
    paper gives no range: [0.8, 1.2] is ours.
    """

    random = True

    def __init__(self, lower=0.8, upper=1.2, clip=None):
        self.lower, self.upper = _check_interval("RandomMultiply", lower, upper)
        self.clip = _clip_range(clip)

    def _train(self, images, seed):
        return self._train_masked(images, seed, None)

    def _train_masked(self, images, seed, apply):
        factor = batch_uniform(images, seed, self.lower, self.upper)
        if apply is not None:
            factor = identity_where_not(apply, factor, 1.0)  # x * 1 is x
        return _clip_where(images * factor[:, None, None, None], self.clip, apply)

    def get_config(self):
        return {"lower": self.lower, "upper": self.upper, "clip": self.clip and list(self.clip)}


class GaussianNoise(Transform):
    """Add N(0, stddev^2) noise to every value; paper 5 section 5.1 (std 1, 0-255 scale)."""

    random = True

    def __init__(self, stddev=1.0, clip=None):
        if stddev < 0:
            raise ValueError(f"stddev must be >= 0. Received: {stddev=}")
        self.stddev = float(stddev)
        self.clip = _clip_range(clip)

    def _train(self, images, seed):
        return self._train_masked(images, seed, None)

    def _train_masked(self, images, seed, apply):
        noise = self.stddev * normal(ops.shape(images), seed)
        if apply is not None:
            noise = identity_where_not(apply, noise, 0.0)
        return _clip_where(images + noise, self.clip, apply)

    def get_config(self):
        return {"stddev": self.stddev, "clip": self.clip and list(self.clip)}


class Rescale(Transform):
    """``x * scale + offset`` (e.g. ``Rescale(1 / 255)``, paper 4's rescaling)."""

    def __init__(self, scale, offset=0.0):
        self.scale, self.offset = float(scale), float(offset)

    def _eval(self, images):
        return images * self.scale + self.offset

    def get_config(self):
        return {"scale": self.scale, "offset": self.offset}


class Resize(Transform):
    """Resize to ``size`` with ``keras.ops.image.resize`` (paper 1's progressive resizing).

    Paper 1 does not say how it resized; bilinear without antialiasing (the
    ``keras.utils.image_dataset_from_directory`` default) is ours; pass
    ``interpolation="nearest"`` for ``flow_from_directory(target_size=...)``'s default.
    """

    def __init__(self, size, interpolation="bilinear", antialias=False):
        self.size = _pair(size)
        self.interpolation = interpolation
        self.antialias = bool(antialias)

    def _eval(self, images):
        out = ops.image.resize(images, self.size, interpolation=self.interpolation, antialias=self.antialias)
        return ops.cast(out, "float32")

    def output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[3])

    def get_config(self):
        return {"size": list(self.size), "interpolation": self.interpolation, "antialias": self.antialias}


class SubtractMeanImage(Transform):
    """Subtract the mean training image (paper 3 section 2.3, paper 5 section 2).

    ``fit(train_images)`` computes it (per pixel and channel, in float64 over chunks);
    ``save_stats`` / ``load_stats`` store it as JSON with a run. Applies in training and
    evaluation; the mean image must have the images' size, so put it before any crop.
    """

    _FORMAT = "tiny_keras.augment.SubtractMeanImage.stats/1"

    def __init__(self, mean_image=None):
        self.mean_image = None if mean_image is None else np.asarray(mean_image, np.float32)
        if self.mean_image is not None and self.mean_image.ndim != 3:
            raise ValueError(f"mean_image must be [H, W, C]; received shape {self.mean_image.shape}.")

    def fit(self, x, batch_size=1024):
        self.mean_image = mean_image(x, batch_size)
        return self

    def _eval(self, images):
        if self.mean_image is None:
            raise ValueError("SubtractMeanImage has no mean image: call fit(train_images) or load_stats(path).")
        h, w = images.shape[1], images.shape[2]
        if h is not None and w is not None and (h, w) != self.mean_image.shape[:2]:
            raise ValueError(
                f"The mean image is {self.mean_image.shape[0]}x{self.mean_image.shape[1]} but the images are "
                f"{h}x{w}; subtract the mean image before cropping or resizing."
            )
        return images - ops.convert_to_tensor(self.mean_image)

    def save_stats(self, path):
        if self.mean_image is None:
            raise ValueError("No mean image to save: call fit() first.")
        write_stats(path, self._FORMAT, indent=None, mean_image=self.mean_image.tolist())

    def load_stats(self, path):
        stats = read_stats(path, self._FORMAT, "a mean-image file")
        self.mean_image = np.asarray(stats["mean_image"], np.float32)
        return self

    def get_config(self):
        return {"mean_image": None if self.mean_image is None else self.mean_image.tolist()}
