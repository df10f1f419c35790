"""``Augmenter``: Keras's legacy ``ImageDataGenerator`` as a seeded, batched tf.data transform.

Papers 1, 3 and 4 trained with ``ImageDataGenerator`` (paper 1 section IV: rotation 35,
shifts 0.2, nearest fill, featurewise std normalisation; paper 3 section 2.3: rotation 60,
zoom 1.2x, shifts; paper 4 section V: rescale, shear, zoom, rotation, flip, brightness).
``Augmenter`` takes the same arguments with the same meanings and draws the same per-image
parameters from the same distributions as the legacy ``get_random_transform``, but for a
whole batch at once, from a stateless seed, and applies them in one resampling pass
(``tiny_keras.augment.affine.apply_transform``), followed by ``standardize`` exactly as the
legacy iterators (``flow``, ``flow_from_directory``) do::

    aug = Augmenter(rotation_range=35, width_shift_range=0.2, height_shift_range=0.2,
                    fill_mode="nearest", horizontal_flip=True,
                    featurewise_center=True, featurewise_std_normalization=True)
    aug.fit(train_images)                      # uint8 [N, 64, 64, 3], or batches
    aug.save_stats(workdir / "augment_stats.json")
    train_ds = make_dataset(load_split(path), augment=aug)                # random transform + standardize
    val_ds = make_dataset(load_split(path, "val"), augment=aug.inference)  # standardize only

Fit the statistics before building the dataset: ``tf.data`` traces the function once and
keeps the statistics it saw.

Differences from the legacy class, all deliberate: parameters are drawn with TF stateless
RNG (same distributions, different random streams, so outputs match only for equal
parameters); ``fit`` accumulates in float64 (the legacy fit sums float32 and is off by about
1% of the std on thousands of images; ``standardize`` with the same statistics matches);
``zca_whitening`` and spline orders above 1 are not implemented (none of the papers uses
them); ``samplewise_*`` statistics are per image, as in the legacy iterators (the legacy
``standardize`` called on a whole batch would pool the batch); there is no
``preprocessing_function``, ``validation_split`` or ``data_format`` (channels last only).
"""
import numbers

import numpy as np
from keras import ops

from tiny_keras.augment.affine import IDENTITY, FILL_MODES, GEOMETRIC_KEYS, apply_params, apply_transform, resample
from tiny_keras.augment.core import (
    Transform, compile_function, fold_seed, identity_where_not, no_autograph, to_float32, uniform, uniform_int
)
from tiny_keras.augment.standardization import channel_mean_std, read_stats, standardize, write_stats

_STATS_FORMAT = "tiny_keras.augment.Augmenter.stats/1"

# One sub-seed index per parameter, fixed, so enabling one transform does not change the
# draws of another.
_SEED_INDEX = {"theta": 0, "tx": 1, "tx_sign": 2, "ty": 3, "ty_sign": 4, "shear": 5, "zx": 6,
               "zy": 7, "flip_horizontal": 8, "flip_vertical": 9, "channel_shift_intensity": 10,
               "brightness": 11}


def _check_range(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"{name} must be a non-negative number. Received: {name}={value!r}")
    return value


def _check_shift(name, value):
    """Legacy accepts a float (uniform +-), an int n (integers 0..n-1 with a random sign), or
    a list of choices (with a random sign); below 1 it is a fraction of the image size."""
    if value is None:
        return 0.0
    if isinstance(value, (list, tuple, np.ndarray)):
        values = [float(v) for v in np.asarray(value).ravel()]
        if not values:
            raise ValueError(f"{name} must not be an empty list. Received: {name}={value!r}")
        return values
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(
            f"{name} must be a non-negative float, an int or a list of numbers. Received: {name}={value!r}"
        )
    return int(value) if isinstance(value, numbers.Integral) else float(value)


class Augmenter(Transform):
    """The random transforms and standardisation of ``ImageDataGenerator``, batched and seeded.

    Args (same names and meanings as ``keras.preprocessing.image.ImageDataGenerator``;
    keyword-only):
        rotation_range: degrees; theta ~ U(-r, r).
        width_shift_range, height_shift_range: float f: U(-f, f), times the image size if
            f < 1; int n: one of 0..n-1 pixels with a random sign; list: one of its values
            with a random sign (times the size if all < 1). As in the legacy code,
            ``height_shift_range`` gives ``tx`` (scaled by the height) and ``width_shift_range``
            gives ``ty``; see ``affine.apply_transform`` for which axis those move.
        shear_range: degrees; shear ~ U(-s, s).
        zoom_range: float z means [1 - z, 1 + z], or a pair [lo, hi]; zx and zy are drawn
            independently (values > 1 zoom out, as in the legacy code).
        channel_shift_range: intensity ~ U(-r, r), added to all channels, clipped to the
            image's range.
        brightness_range: pair [lo, hi]; brightness ~ U(lo, hi) (legacy PIL semantics).
        horizontal_flip, vertical_flip: flip each image with probability 1/2.
        fill_mode: "nearest", "reflect", "wrap" or "constant" (scipy's rules), ``cval`` for
            "constant".
        rescale: multiply by this before the other standardisation steps (None or 0: no).
        featurewise_center, featurewise_std_normalization: subtract the per-channel mean and
            divide by (std + 1e-6) of the data given to ``fit``; std normalisation implies
            centring, as in the legacy class.
        samplewise_center, samplewise_std_normalization: the same per image (over all its
            pixels and channels).
        interpolation_order: 1 (bilinear, default) or 0 (nearest).
        mean, std: featurewise statistics (per channel) if already known, e.g. from
            ``get_config()`` or ``load_stats``.
        jit_compile: compile transform + standardisation with XLA (default True; 3-4x
            faster on 2 CPU cores than the TensorFlow kernels used with False, which XLA
            cannot compile: keep True inside models compiled with XLA).

    Call it as any transform: ``aug(images, seed)`` (random transform, then standardize),
    ``aug(images, training=False)`` or ``aug.inference(images)`` (standardize only).
    """

    def __init__(
        self,
        *,
        featurewise_center=False,
        samplewise_center=False,
        featurewise_std_normalization=False,
        samplewise_std_normalization=False,
        zca_whitening=False,
        rotation_range=0.0,
        width_shift_range=0.0,
        height_shift_range=0.0,
        brightness_range=None,
        shear_range=0.0,
        zoom_range=0.0,
        channel_shift_range=0.0,
        fill_mode="nearest",
        cval=0.0,
        horizontal_flip=False,
        vertical_flip=False,
        rescale=None,
        interpolation_order=1,
        mean=None,
        std=None,
        jit_compile=True,
    ):
        if zca_whitening:
            raise NotImplementedError("zca_whitening is not implemented (none of the five papers uses it).")
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}. Received: {fill_mode=}")
        if interpolation_order not in (0, 1):
            raise ValueError(f"interpolation_order must be 0 or 1. Received: {interpolation_order=}")
        self.rotation_range = _check_range("rotation_range", rotation_range)
        self.shear_range = _check_range("shear_range", shear_range)
        self.channel_shift_range = _check_range("channel_shift_range", channel_shift_range)
        self.width_shift_range = _check_shift("width_shift_range", width_shift_range)
        self.height_shift_range = _check_shift("height_shift_range", height_shift_range)
        if isinstance(zoom_range, numbers.Real) and not isinstance(zoom_range, bool):
            self.zoom_range = [1.0 - zoom_range, 1.0 + zoom_range]
        elif isinstance(zoom_range, (list, tuple)) and len(zoom_range) == 2 and all(
            isinstance(v, numbers.Real) for v in zoom_range
        ):
            self.zoom_range = [float(zoom_range[0]), float(zoom_range[1])]
        else:
            raise ValueError(f"zoom_range must be a float or a pair of floats. Received: {zoom_range=}")
        if brightness_range is not None:
            if not isinstance(brightness_range, (list, tuple)) or len(brightness_range) != 2:
                raise ValueError(f"brightness_range must be a pair of floats. Received: {brightness_range=}")
            brightness_range = [float(brightness_range[0]), float(brightness_range[1])]
        self.brightness_range = brightness_range
        self.fill_mode = fill_mode
        self.cval = float(cval)
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        self.rescale = rescale
        self.interpolation_order = int(interpolation_order)
        # As the legacy constructor: std normalisation implies centring.
        self.featurewise_std_normalization = bool(featurewise_std_normalization)
        self.featurewise_center = bool(featurewise_center) or self.featurewise_std_normalization
        self.samplewise_std_normalization = bool(samplewise_std_normalization)
        self.samplewise_center = bool(samplewise_center) or self.samplewise_std_normalization
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(-1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(-1)
        self.fitted_on = None  # number of images the statistics come from, if known
        self.jit_compile = bool(jit_compile)
        self.random = any([
            self.rotation_range, self.width_shift_range, self.height_shift_range, self.shear_range,
            self.zoom_range != [1.0, 1.0], self.channel_shift_range, self.brightness_range is not None,
            self.horizontal_flip, self.vertical_flip,
        ])

    # --- random parameters -------------------------------------------------------------

    @no_autograph
    def get_random_transform(self, batch_size, seed, image_size=(64, 64)):
        """Per-image parameters, as the legacy ``get_random_transform`` draws them per image.

        Args:
            batch_size: number of images (int or scalar tensor).
            seed: stateless seed (int or int tensor [2]).
            image_size: (height, width), for shifts given as fractions.

        Returns:
            dict with the legacy keys, each a [batch_size] tensor (flips bool, the rest
            float32); ``channel_shift_intensity`` and ``brightness`` are None when disabled.
        """
        n = batch_size
        height, width = (ops.cast(s, "float32") for s in image_size)

        def draw(key, lo, hi):
            return uniform([n], fold_seed(seed, _SEED_INDEX[key]), lo, hi)

        def shift(key, spec, size):
            if not spec:
                return ops.zeros([n])
            if isinstance(spec, float):
                value = draw(key, -spec, spec)
            else:
                choices = np.arange(spec) if isinstance(spec, int) else np.asarray(spec)
                pick = uniform_int([n], fold_seed(seed, _SEED_INDEX[key]), 0, len(choices))
                sign = uniform_int([n], fold_seed(seed, _SEED_INDEX[key + "_sign"]), 0, 2)
                value = ops.take(ops.convert_to_tensor(choices, "float32"), pick) * ops.cast(2 * sign - 1, "float32")
            if np.max(spec) < 1:
                value = value * size
            return value

        zero = ops.zeros([n])
        params = {
            "theta": draw("theta", -self.rotation_range, self.rotation_range) if self.rotation_range else zero,
            # Legacy: tx comes from height_shift_range and the image height, ty from the width.
            "tx": shift("tx", self.height_shift_range, height),
            "ty": shift("ty", self.width_shift_range, width),
            "shear": draw("shear", -self.shear_range, self.shear_range) if self.shear_range else zero,
        }
        if self.zoom_range == [1.0, 1.0]:
            params["zx"] = params["zy"] = ops.ones([n])
        else:
            params["zx"] = draw("zx", *self.zoom_range)
            params["zy"] = draw("zy", *self.zoom_range)
        no_flip = ops.zeros([n], "bool")
        params["flip_horizontal"] = draw("flip_horizontal", 0.0, 1.0) < 0.5 if self.horizontal_flip else no_flip
        params["flip_vertical"] = draw("flip_vertical", 0.0, 1.0) < 0.5 if self.vertical_flip else no_flip
        params["channel_shift_intensity"] = (
            draw("channel_shift_intensity", -self.channel_shift_range, self.channel_shift_range)
            if self.channel_shift_range else None
        )
        params["brightness"] = draw("brightness", *self.brightness_range) if self.brightness_range else None
        return params

    @no_autograph
    def apply_transform(self, images, params):
        """``affine.apply_transform`` with this augmenter's fill mode, cval and interpolation."""
        return apply_transform(
            images, params, fill_mode=self.fill_mode, cval=self.cval,
            interpolation_order=self.interpolation_order, jit_compile=self.jit_compile,
        )

    @no_autograph
    def random_transform(self, images, seed):
        """Draw parameters for the batch and apply them (no standardisation)."""
        images = to_float32(images)
        if not self.random:
            return images
        return self._compiled(images, self._draw(images, seed), None, None, False)

    # --- standardisation ---------------------------------------------------------------

    @no_autograph
    def standardize(self, images):
        """Legacy ``standardize``, per image: rescale, samplewise, then featurewise steps."""
        return standardize(images, *self._stats(True), rescale=self.rescale,
                           samplewise_center=self.samplewise_center,
                           samplewise_std_normalization=self.samplewise_std_normalization)

    def _train(self, images, seed):
        if not self.random:
            return self.standardize(images)
        return self._compiled(images, self._draw(images, seed), *self._stats(True), True)

    def _eval(self, images):
        return self.standardize(images)

    def _train_masked(self, images, seed, apply):
        # Identity parameters (no rotation, shift, shear, flip; zoom 1; channel shift 0) give
        # the image back exactly, so a coin folds into them: one resampling pass for the
        # batch. Brightness (its truncation to integers is not an identity at 1) and
        # standardisation (which RandomApply would leave out for unchosen images) keep the
        # default two-branch path.
        if not self.random or self.brightness_range is not None or self._standardizes:
            return super()._train_masked(images, seed, apply)
        params = {k: identity_where_not(apply, v, IDENTITY.get(k, 0.0)) for k, v in self._draw(images, seed).items()}
        return self._compiled(images, params, None, None, False)

    @property
    def _standardizes(self):
        return bool(self.rescale or self.featurewise_center or self.samplewise_center)

    def _draw(self, images, seed):
        """The random parameters the batch needs (disabled steps left out)."""
        n, h, w = ops.shape(images)[:3]
        params = self.get_random_transform(n, seed, (h, w))
        geometric = any([self.rotation_range, self.width_shift_range, self.height_shift_range,
                         self.shear_range, self.zoom_range != [1.0, 1.0], self.horizontal_flip,
                         self.vertical_flip])
        return {k: v for k, v in params.items() if v is not None and (geometric or k not in GEOMETRIC_KEYS)}

    def _stats(self, standardize):
        """(mean, std) tensors for ``standardize`` (None where that step is off)."""
        if not standardize or not self.featurewise_center:
            return None, None
        if self.mean is None:
            raise ValueError(
                "This Augmenter uses featurewise_center/featurewise_std_normalization but has no "
                "statistics: call fit(train_images) or load_stats(path) first."
            )
        std = ops.convert_to_tensor(self.std, "float32") if self.featurewise_std_normalization else None
        return ops.convert_to_tensor(self.mean, "float32"), std

    @property
    def _compiled(self):
        """Transform + standardize for given parameters, as one (XLA-)compiled function.

        The random parameters are drawn outside it (``get_random_transform``, the same
        numbers with or without XLA: see ``core.uniform``). Without XLA the resampling uses TensorFlow's projective-transform kernel, which XLA
        cannot compile: keep ``jit_compile=True`` for models compiled with XLA.
        """
        if getattr(self, "_compiled_fn", None) is None:
            method = "gather" if self.jit_compile else "projective"

            def sample(images, matrices):
                return resample(images, matrices, self.cval, self.fill_mode, self.interpolation_order, method)

            def fn(images, params, mean, std, then_standardize):
                x = apply_params(images, params, sample)
                if not then_standardize:
                    return x
                return standardize(x, mean, std, rescale=self.rescale,
                                   samplewise_center=self.samplewise_center,
                                   samplewise_std_normalization=self.samplewise_std_normalization)

            self._compiled_fn = compile_function(fn, self.jit_compile)
        return self._compiled_fn

    def fit(self, x, augment=False, rounds=1, seed=0, batch_size=1024):
        """Compute the featurewise mean and std per channel, as the legacy ``fit``.

        Args:
            x: images ``[N, H, W, C]`` (numpy/tensor, any real dtype, 0..255), or an iterable
                of such batches (e.g. a ``tf.data.Dataset`` of images or (images, labels)).
                Processed in chunks in float64, so the whole training set (1.2 GB as uint8)
                never has to exist as float32.
            augment: fit on randomly augmented copies (``rounds`` passes), as the legacy fit.
            seed: seed for ``augment``.

        Returns:
            self.
        """
        def augmented(images, r, i):
            return ops.convert_to_numpy(self.random_transform(images, fold_seed(fold_seed(seed, r), i)))

        self.mean, self.std, self.fitted_on = channel_mean_std(
            x, batch_size, rescale=self.rescale, augment=augmented if augment else None, rounds=rounds)
        return self

    def save_stats(self, path):
        """Write the fitted featurewise statistics as JSON (to store with a training run)."""
        if self.mean is None:
            raise ValueError("No statistics to save: call fit() first.")
        write_stats(path, _STATS_FORMAT, mean=self.mean.tolist(), std=self.std.tolist(), rescale=self.rescale,
                    num_images=self.fitted_on)

    def load_stats(self, path):
        """Read statistics written by ``save_stats``; the rescale they were fitted with must match."""
        stats = read_stats(path, _STATS_FORMAT, "an Augmenter statistics file")
        if stats.get("rescale") != self.rescale:
            raise ValueError(
                f"{path} was fitted with rescale={stats.get('rescale')!r} but this Augmenter has "
                f"rescale={self.rescale!r}; the statistics would be on the wrong scale."
            )
        self.mean = np.asarray(stats["mean"], np.float32)
        self.std = np.asarray(stats["std"], np.float32)
        self.fitted_on = stats.get("num_images")
        return self

    # --- configuration -----------------------------------------------------------------

    def get_config(self):
        def plain(v):
            return v if not isinstance(v, np.ndarray) else v.tolist()

        return {
            "featurewise_center": self.featurewise_center,
            "samplewise_center": self.samplewise_center,
            "featurewise_std_normalization": self.featurewise_std_normalization,
            "samplewise_std_normalization": self.samplewise_std_normalization,
            "rotation_range": self.rotation_range,
            "width_shift_range": self.width_shift_range,
            "height_shift_range": self.height_shift_range,
            "brightness_range": self.brightness_range,
            "shear_range": self.shear_range,
            "zoom_range": list(self.zoom_range),
            "channel_shift_range": self.channel_shift_range,
            "fill_mode": self.fill_mode,
            "cval": self.cval,
            "horizontal_flip": self.horizontal_flip,
            "vertical_flip": self.vertical_flip,
            "rescale": self.rescale,
            "interpolation_order": self.interpolation_order,
            "mean": plain(self.mean),
            "std": plain(self.std),
            "jit_compile": self.jit_compile,
        }
