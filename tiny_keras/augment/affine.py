"""The deterministic half of Keras's legacy ``ImageDataGenerator``, vectorised over a batch.

``apply_transform(images, params)`` does for a whole batch what the legacy
``ImageDataGenerator.apply_transform(x, params)`` does for one image
(``keras.src.legacy.preprocessing.image``), with ``params`` holding one value per image:

- ``theta`` (degrees), ``tx``, ``ty`` (pixels), ``shear`` (degrees), ``zx``, ``zy``: composed
  into one matrix exactly as the legacy ``apply_affine_transform`` does
  (rotation @ shift @ shear @ zoom, about the image centre), which maps output pixel
  coordinates to input coordinates. As there, ``tx`` moves along the columns and ``ty``
  along the rows (keras-team/keras#17398: with ``get_random_transform`` this makes
  ``height_shift_range`` a horizontal shift; we keep that so results match), and a
  positive ``tx`` moves the content left (output pixel c reads input pixel c + tx).
- ``flip_horizontal``, ``flip_vertical``: folded into the same matrix, so rotation, shift,
  shear, zoom and both flips cost one resampling pass.
- ``channel_shift_intensity``: one value added to every channel, clipped to the image's
  own min and max (legacy ``apply_channel_shift``).
- ``brightness``: legacy ``apply_brightness_shift(x, b, scale=False)``, which goes through a
  uint8 PIL image: values are truncated to integers, multiplied by ``b``, truncated and
  clipped to 0..255 (images outside 0..255 are first mapped to it by their min and max,
  and mapped back after).

Resampling is bilinear (``interpolation_order=1``, the legacy default; 0 = nearest) with
``scipy.ndimage``'s boundary rules, which are not TensorFlow's: ``reflect`` is
half-sample symmetric (``dcba|abcd|dcba``), ``wrap`` wraps the *coordinate* with period
``n - 1`` (scipy's definition, first and last sample overlap), ``constant`` gives ``cval``
wherever the source coordinate leaves ``[0, n - 1]`` (no blending with ``cval`` at the
edge), ``nearest`` clamps. One deliberate difference: a source coordinate within 1e-3 pixel
of the edge counts as on it for ``constant`` and ``wrap``, so rotations by multiples of 90
degrees are exact rotations; scipy's answer there depends on the sign of its float64
round-off (``cval`` or the edge pixel; which side of the wrap seam). With
``interpolation_order=0`` a coordinate exactly halfway between two pixels may round the
other way than in scipy (float32 against float64 coordinates).

Resampling (``resample``) is our own bilinear gather, compiled with XLA by default
(``jit_compile=True``), for every fill mode. ``tf.raw_ops.ImageProjectiveTransformV3``
matches scipy for ``reflect`` and ``nearest`` (and ``constant`` with a mask) but ran at
about half that speed on 2 CPU cores; it is the ``jit_compile=False`` path, where the
uncompiled gather would be slower still (it remains the path for ``wrap``).
"""
import math

import numpy as np
from keras import ops

from tiny_keras import backend
from tiny_keras.augment.core import compile_function, no_autograph, to_float32
from tiny_keras.backend import tf

FILL_MODES = ("nearest", "reflect", "wrap", "constant")
GEOMETRIC_KEYS = ("theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal", "flip_vertical")
PARAM_KEYS = GEOMETRIC_KEYS + ("channel_shift_intensity", "brightness")
IDENTITY = {"theta": 0, "tx": 0, "ty": 0, "shear": 0, "zx": 1, "zy": 1,
             "flip_horizontal": False, "flip_vertical": False}

# Source coordinates this far outside [0, n - 1] still count as inside for fill_modes
# "constant" and "wrap": float32 round-off of a 90-degree rotation must not turn an edge row
# into cval, or into the far side of the wrap seam. (Exactly on the edge scipy's answer
# depends on the sign of its float64 round-off; we give the exact rotation there.)
_EDGE_TOLERANCE = 1e-3


def _per_image(value, batch_size, dtype="float32"):
    """A parameter (scalar or per-image) as a [B] tensor."""
    value = ops.cast(ops.convert_to_tensor(value), dtype)
    if len(value.shape) == 0:
        return ops.full([batch_size], value)
    return ops.reshape(value, [batch_size])


@no_autograph
def transform_matrices(params, height, width, batch_size):
    """Per-image 3x3 matrices mapping output ``(col, row, 1)`` to input ``(col, row, 1)``.

    Built as the legacy ``apply_affine_transform`` builds its matrix (rotation @ shift @
    shear @ zoom, then ``transform_matrix_offset_center(m, h, w)``), then right-multiplied
    by the flips. The legacy centre offset uses ``h / 2 - 0.5`` for the column coordinate and
    ``w / 2 - 0.5`` for the row one (it swaps axes after centring); for square images this is
    the true centre, and we keep it so non-square images match too.
    """
    p = {k: params[k] if params.get(k) is not None else IDENTITY[k] for k in GEOMETRIC_KEYS}
    theta = _per_image(p["theta"], batch_size) * (math.pi / 180.0)
    shear = _per_image(p["shear"], batch_size) * (math.pi / 180.0)
    tx, ty = _per_image(p["tx"], batch_size), _per_image(p["ty"], batch_size)
    zx, zy = _per_image(p["zx"], batch_size), _per_image(p["zy"], batch_size)
    zero, one = ops.zeros_like(theta), ops.ones_like(theta)

    def mat(rows):
        return ops.stack([ops.stack(r, axis=-1) for r in rows], axis=-2)  # [B, 3, 3]

    cos, sin = ops.cos(theta), ops.sin(theta)
    rotation = mat([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    shift = mat([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
    shear_m = mat([[one, -ops.sin(shear), zero], [zero, ops.cos(shear), zero], [zero, zero, one]])
    zoom = mat([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]])
    m = ops.matmul(ops.matmul(ops.matmul(rotation, shift), shear_m), zoom)

    o_first = ops.cast(height, "float32") / 2.0 - 0.5  # legacy: x = h (see docstring)
    o_second = ops.cast(width, "float32") / 2.0 - 0.5
    offset = mat([[one, zero, one * o_first], [zero, one, one * o_second], [zero, zero, one]])
    reset = mat([[one, zero, -one * o_first], [zero, one, -one * o_second], [zero, zero, one]])
    m = ops.matmul(ops.matmul(offset, m), reset)

    # Flips happen after the affine map in the legacy code: out = flip(affine(x)), so the
    # output pixel (c, r) reads the affine result at (w - 1 - c, r): m @ flip.
    fh = ops.cast(_per_image(p["flip_horizontal"], batch_size, "bool"), "float32")
    fv = ops.cast(_per_image(p["flip_vertical"], batch_size, "bool"), "float32")
    w1 = ops.cast(width, "float32") - 1.0
    h1 = ops.cast(height, "float32") - 1.0
    flip = mat([[1.0 - 2.0 * fh, zero, fh * w1], [zero, 1.0 - 2.0 * fv, fv * h1], [zero, zero, one]])
    return ops.matmul(m, flip)


def _reflect_index(i, n):
    """scipy 'reflect' (half-sample symmetric, period 2n) for integer indices."""
    i = ops.mod(i, 2 * n)
    return ops.where(i >= n, 2 * n - 1 - i, i)


def _wrap_coordinate(c, n):
    """scipy 'wrap': coordinates outside [0, n - 1] wrap with period n - 1."""
    nf = ops.cast(n, "float32")
    periodic = ops.mod(c, ops.maximum(nf - 1.0, 1.0))
    inside = ops.logical_and(c >= -_EDGE_TOLERANCE, c <= nf - 1.0 + _EDGE_TOLERANCE)
    wrapped = ops.where(inside, c, periodic)
    return ops.where(nf > 1.0, wrapped, ops.zeros_like(c))


def _sample(images, xs, ys, fill_mode, cval, order):
    """Resample ``images`` [B, H, W, C] at source columns ``xs`` / rows ``ys`` [B, H', W']."""
    b, h, w, c = ops.shape(images)
    flat = ops.reshape(images, [-1, c])
    base = (ops.arange(b, dtype="int32") * h * w)[:, None, None]
    inside = _inside(xs, ys, w, h) if fill_mode == "constant" else None
    wf, hf = ops.cast(w, "float32"), ops.cast(h, "float32")
    if fill_mode == "wrap":
        xs, ys = _wrap_coordinate(xs, w), _wrap_coordinate(ys, h)
    if fill_mode in ("constant", "wrap", "nearest"):
        xs = ops.clip(xs, 0.0, wf - 1.0)
        ys = ops.clip(ys, 0.0, hf - 1.0)

    def index(i, n):
        return _reflect_index(i, n) if fill_mode == "reflect" else ops.clip(i, 0, n - 1)

    def gather(yi, xi):
        return ops.take(flat, base + index(yi, h) * w + index(xi, w), axis=0)

    if order == 0:
        out = gather(ops.cast(ops.floor(ys + 0.5), "int32"), ops.cast(ops.floor(xs + 0.5), "int32"))
    else:
        x0f, y0f = ops.floor(xs), ops.floor(ys)
        wx, wy = (xs - x0f)[..., None], (ys - y0f)[..., None]
        x0, y0 = ops.cast(x0f, "int32"), ops.cast(y0f, "int32")
        x1, y1 = x0 + 1, y0 + 1
        top = gather(y0, x0) * (1.0 - wx) + gather(y0, x1) * wx
        bottom = gather(y1, x0) * (1.0 - wx) + gather(y1, x1) * wx
        out = top * (1.0 - wy) + bottom * wy
    if inside is not None:
        out = ops.where(inside[..., None], out, ops.cast(cval, out.dtype))
    return out


def _inside(xs, ys, w, h):
    """Source coordinates within the image (to ``_EDGE_TOLERANCE``): scipy's "constant" mask."""
    eps = _EDGE_TOLERANCE
    wf, hf = ops.cast(w, "float32"), ops.cast(h, "float32")
    return ops.logical_and(ops.logical_and(xs >= -eps, xs <= wf - 1.0 + eps),
                           ops.logical_and(ys >= -eps, ys <= hf - 1.0 + eps))


def _source_coordinates(images, matrices):
    """Source columns and rows [B, H, W] of every output pixel."""
    h, w = ops.shape(images)[1:3]
    rows = ops.cast(ops.arange(h), "float32")[None, :, None]
    cols = ops.cast(ops.arange(w), "float32")[None, None, :]
    m = matrices[:, :, :, None, None]
    xs = m[:, 0, 0] * cols + m[:, 0, 1] * rows + m[:, 0, 2]
    ys = m[:, 1, 0] * cols + m[:, 1, 1] * rows + m[:, 1, 2]
    return xs, ys


def _projective_sample(images, matrices, cval, fill_mode, order):
    """The same with TensorFlow's ImageProjectiveTransformV3 kernel (no XLA; not for "wrap").

    Its NEAREST and REFLECT fill modes are scipy's; scipy's "constant" is its NEAREST inside
    [0, n - 1] and cval outside (TF's own CONSTANT blends cval into the edge pixels).
    TensorFlow only: the fast path of the TensorFlow backend without XLA.
    """
    b = tf.shape(images)[0]
    transforms = tf.concat([tf.reshape(matrices[:, :2, :], [b, 6]), tf.zeros([b, 2])], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR" if order else "NEAREST",
        fill_mode="REFLECT" if fill_mode == "reflect" else "NEAREST",
    )
    if fill_mode == "constant":
        xs, ys = _source_coordinates(images, matrices)
        inside = _inside(xs, ys, tf.shape(images)[2], tf.shape(images)[1])
        out = tf.where(inside[..., None], out, tf.cast(cval, out.dtype))
    return out


def resample(images, matrices, cval, fill_mode, order, method):
    """Bilinear (order 1) or nearest (order 0) resampling with scipy's boundary rules.

    ``method="gather"``: our own gather, meant to run under XLA (fast on CPU and GPU);
    ``"projective"``: TensorFlow's projective-transform kernel where it can match scipy
    (fill modes other than "wrap"), for use without XLA, where the gather is slow.
    """
    if method == "projective" and fill_mode != "wrap" and backend.is_tensorflow():
        return _projective_sample(images, matrices, cval, fill_mode, order)
    xs, ys = _source_coordinates(images, matrices)
    return _sample(images, xs, ys, fill_mode, cval, order)


_COMPILED = {}


@no_autograph
def affine_sample(images, matrices, fill_mode="nearest", cval=0.0, interpolation_order=1, jit_compile=True):
    """Resample a batch through per-image output->input matrices [B, 3, 3] (see module doc).

    ``jit_compile=True``: our gather compiled with XLA; ``False``: TensorFlow's
    projective-transform kernel, 3-4x slower in ``tools/benchmark.py generator`` on 2 CPU
    cores (and the uncompiled gather for ``fill_mode="wrap"``, slower still).
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}. Received: {fill_mode=}")
    if interpolation_order not in (0, 1):
        raise ValueError(
            "interpolation_order must be 0 (nearest) or 1 (bilinear, the ImageDataGenerator "
            f"default); higher spline orders are not supported. Received: {interpolation_order=}"
        )
    key = (fill_mode, interpolation_order, bool(jit_compile))
    if key not in _COMPILED:
        method = "gather" if jit_compile else "projective"

        def fn(images, matrices, cval, _mode=fill_mode, _order=interpolation_order, _method=method):
            return resample(images, matrices, cval, _mode, _order, _method)

        _COMPILED[key] = compile_function(fn, jit_compile)
    return _COMPILED[key](to_float32(images), ops.cast(matrices, "float32"), ops.convert_to_tensor(cval, "float32"))


@no_autograph
def apply_channel_shift(images, intensity):
    """Legacy ``apply_channel_shift`` per image: add ``intensity`` [B], clip to the image's range."""
    lo = ops.min(images, axis=(1, 2, 3), keepdims=True)
    hi = ops.max(images, axis=(1, 2, 3), keepdims=True)
    shifted = images + _per_image(intensity, ops.shape(images)[0])[:, None, None, None]
    return ops.minimum(ops.maximum(shifted, lo), hi)


@no_autograph
def apply_brightness(images, brightness):
    """Legacy ``apply_brightness_shift(x, brightness, scale=False)`` per image.

    The legacy code converts to a uint8 PIL image (truncating; images outside 0..255 are
    first stretched to it by their min and max), lets ``ImageEnhance.Brightness`` blend with
    black (``uint8(value * brightness)``, truncated and clipped) and stretches back.
    """
    b = _per_image(brightness, ops.shape(images)[0])[:, None, None, None]
    lo = ops.min(images, axis=(1, 2, 3), keepdims=True)
    hi = ops.max(images, axis=(1, 2, 3), keepdims=True)
    stretch = ops.logical_or(lo < 0.0, hi > 255.0)
    span = hi - lo
    stretched = ops.where(span != 0.0, (images - lo) / ops.where(span != 0.0, span, 1.0), images - lo) * 255.0
    x = ops.floor(ops.where(stretch, stretched, images))
    x = ops.floor(ops.clip(x * b, 0.0, 255.0))
    return ops.where(stretch, x / 255.0 * span + lo, x)


def _is_identity(params):
    """True when the geometric params are known (Python/numpy values) to do nothing."""
    for key in GEOMETRIC_KEYS:
        value = params.get(key)
        if value is None:
            continue
        if ops.is_tensor(value):
            return False
        if not np.all(np.asarray(value) == IDENTITY[key]):
            return False
    return True


@no_autograph
def apply_transform(images, params, fill_mode="nearest", cval=0.0, interpolation_order=1, jit_compile=True):
    """Apply ImageDataGenerator transform parameters to a batch, one set per image.

    Args:
        images: ``[B, H, W, C]`` batch (any real dtype; computed in float32), 0..255 scale.
        params: dict with any of the keys of ``ImageDataGenerator.get_random_transform``
            (``theta``, ``tx``, ``ty``, ``shear``, ``zx``, ``zy``, ``flip_horizontal``,
            ``flip_vertical``, ``channel_shift_intensity``, ``brightness``), each a scalar or
            an array of B values, meaning exactly what it means there (see module doc).
            Missing keys and ``None`` mean "no change".
        fill_mode: ``"nearest"``, ``"reflect"``, ``"wrap"`` or ``"constant"`` (scipy's rules).
        cval: the value outside the image for ``fill_mode="constant"``.
        interpolation_order: 1 (bilinear, the legacy default) or 0 (nearest).
        jit_compile: resample with our gather compiled by XLA (default; 3-4x faster on
            2 CPU cores), or with TensorFlow's projective-transform kernel (see ``resample``).

    Returns:
        float32 batch of the same shape.

    Example::

        params = {"theta": [10.0, -5.0], "tx": [3.0, 0.0], "flip_horizontal": [True, False]}
        out = apply_transform(images, params, fill_mode="reflect")
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}. Received: {fill_mode=}")

    def sample(images, matrices):
        return affine_sample(images, matrices, fill_mode, cval, interpolation_order, jit_compile)

    return apply_params(images, params, sample)


def apply_params(images, params, sample):
    """``apply_transform`` with the resampling step ``sample(images, matrices)`` given."""
    unknown = set(params) - set(PARAM_KEYS)
    if unknown:
        raise ValueError(f"Unknown transform parameters {sorted(unknown)}; expected keys among {PARAM_KEYS}.")
    images = to_float32(images)
    if not _is_identity(params):
        b, h, w = ops.shape(images)[:3]
        images = sample(images, transform_matrices(params, h, w, b))
    if params.get("channel_shift_intensity") is not None:
        images = apply_channel_shift(images, params["channel_shift_intensity"])
    if params.get("brightness") is not None:
        images = apply_brightness(images, params["brightness"])
    return images
