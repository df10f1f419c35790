"""Building blocks shared by the paper models.

Blocks are plain functions ``apply_xxx(x, ..., name=...)`` that take a Keras
tensor and return one, naming every layer they create ``f"{name}_conv"``,
``f"{name}_bn"`` and so on, so that a model's layers can be found by name and
weights can be moved between models built at different input sizes.

Conventions used by every builder in ``tiny_keras.models``:

- ``weight_decay`` is the coefficient lambda of the penalty
  ``lambda / 2 * sum(w ** 2)`` (the gradient gets ``lambda * w``): Caffe's
  ``weight_decay`` (paper5), TF-slim's ``l2_regularizer(scale)`` (paper2) and the
  ``1/2 lambda sum W^2`` term written out in paper3 section 3.1 all mean this.
  Keras' ``L2(l2)`` penalises ``l2 * sum(w ** 2)``, so it is applied as
  ``L2(weight_decay / 2)``. It regularises kernels only (not biases, BN or PReLU).
- Initialisers are given as Keras identifiers (``"glorot_uniform"``), config
  dicts, or instances; every layer gets a fresh instance (an unseeded Keras 3
  initialiser instance returns the same values on every call, so sharing one
  would give identical layers). Two aliases name the paper2 study:
  ``"xavier"`` is Glorot uniform and ``"variance_scaling"`` is
  ``N(0, 2 / fan_in)`` (He normal, truncated as Keras does), not Keras'
  ``VarianceScaling()`` default of scale 1.
- Every convolution goes through :func:`apply_conv`, which computes a 1x1 strided
  convolution on fewer than 16 input channels as subsampling followed by a stride-1
  1x1 convolution (the same arithmetic): oneDNN's AVX-512 kernel for the filter
  gradient of such a convolution writes past its buffer and crashes the process.
- Models return logits: the classifier is a ``Dense`` without activation
  followed by a float32 ``Activation("linear")`` named ``"logits"`` so that the
  output is float32 under a ``mixed_float16`` policy. Train with
  ``from_logits=True``.
"""

import numbers
import random

import keras
from keras import layers
from keras import ops

# Names accepted for the initialisation study of paper2 (section 4.5) and the
# Gaussian / Xavier choice of paper5 (section 4.1), besides Keras identifiers.
INITIALIZER_ALIASES = {
    "xavier": "glorot_uniform",
    "variance_scaling": {
        "class_name": "VarianceScaling",
        "config": {"scale": 2.0, "mode": "fan_in", "distribution": "truncated_normal"},
    },
    # Gaussian N(0, 0.01): the CS231n ``0.01 * randn`` convention, i.e. std 0.01.
    "gaussian_0.01": {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.01}},
}


def make_initializer(spec):
    """Returns a fresh initialiser instance for ``spec`` (see module docstring)."""
    if isinstance(spec, str) and spec in INITIALIZER_ALIASES:
        spec = INITIALIZER_ALIASES[spec]
    if isinstance(spec, keras.initializers.Initializer):
        return spec.__class__.from_config(spec.get_config())
    if isinstance(spec, dict):
        spec = {"class_name": spec["class_name"], "config": dict(spec.get("config", {}))}
    try:
        return keras.initializers.get(spec)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "Expected a Keras initializer identifier, config dict or instance, or one of "
            f"{sorted(INITIALIZER_ALIASES)}. Received: {spec=}"
        ) from err


def check_initializer(spec, arg_name="kernel_initializer"):
    """Validates an initialiser spec up front, raising ``ValueError``."""
    try:
        make_initializer(spec)
    except ValueError as err:
        raise ValueError(f"Invalid `{arg_name}`. {err}") from None


def l2_regularizer(weight_decay):
    """``L2(weight_decay / 2)``, or ``None`` for no decay (see module docstring)."""
    if not weight_decay:
        return None
    return keras.regularizers.L2(weight_decay / 2.0)


# --- argument checks shared by the builders ---------------------------------


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_num_classes(num_classes):
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer. Received: {num_classes=}")
    return int(num_classes)


def check_input_shape(input_shape, min_size=1, allow_none=True):
    """Checks ``input_shape`` is ``(height, width, channels)``.

    Args:
        input_shape: the shape to check.
        min_size: smallest height / width the model supports.
        allow_none: whether ``None`` spatial sizes are allowed (models with a
            global pooling head); models that flatten need a fixed size.
    Returns:
        ``input_shape`` as a tuple.
    """
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels). Received: {input_shape=}")
    shape = tuple(None if size is None else int(size) if _is_int(size) else size for size in shape)
    height, width, channels = shape
    if not _is_int(channels) or channels < 1:
        raise ValueError(f"`input_shape` needs a fixed positive channel count. Received: {input_shape=}")
    for size in (height, width):
        if size is None:
            if not allow_none:
                raise ValueError(
                    "This model flattens its feature map, so `input_shape` needs a fixed "
                    f"height and width. Received: {input_shape=}"
                )
        elif not _is_int(size) or size < min_size:
            raise ValueError(
                f"`input_shape` height and width must be None or integers >= {min_size} "
                f"for this model. Received: {input_shape=}"
            )
    return shape


def check_rate(value, arg_name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{arg_name}` must be a number in [0, 1). Received: {arg_name}={value!r}")


def check_non_negative(value, arg_name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{arg_name}` must be a number >= 0. Received: {arg_name}={value!r}")


def check_positive_ints(values, arg_name, length=None):
    """Checks ``values`` is a sequence of positive ints (of ``length`` if given)."""
    try:
        items = tuple(values)
    except TypeError:
        items = None
    ok = items is not None and all(_is_int(v) and v > 0 for v in items)
    if not ok or not items or (length is not None and len(items) != length):
        what = f"{length} positive integers" if length else "a non-empty sequence of positive integers"
        raise ValueError(f"`{arg_name}` must be {what}. Received: {arg_name}={values!r}")
    return tuple(int(v) for v in items)


def check_positive_int(value, arg_name):
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{arg_name}` must be a positive integer. Received: {arg_name}={value!r}")
    return int(value)


# --- custom layers -------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tiny_keras")
class ScaledResidual(layers.Layer):
    """``shortcut + scale * residual``: the scaled residual add of Inception-ResNet.

    Replaces the ``Lambda`` Keras' InceptionResNetV2 uses, so that models save
    and load as ``.keras`` files. Called on ``[shortcut, residual]``.
    """

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        shortcut, residual = inputs
        return ops.add(shortcut, ops.multiply(residual, ops.cast(self.scale, residual.dtype)))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


# --- blocks --------------------------------------------------------------------

# oneDNN's AVX-512 convolutions work on blocks of 16 channels. Its kernel for the filter
# gradient of a 1x1 convolution with stride > 1 on NHWC input of fewer channels than that
# overflows a heap buffer ("1x1 convolution backward_weights writes past the rtus
# workspace", oneDNN issue 6035): a segmentation fault or heap corruption in training,
# on TensorFlow 2.19-2.21 with oneDNN on (the default) on AVX-512 CPUs. XLA and other
# CPUs are not affected; 16 channels and more never reach that code.
ONEDNN_CHANNEL_BLOCK = 16


def needs_strided_pointwise_workaround(kernel_size, strides, in_channels):
    """Whether a convolution has the shape that crashes oneDNN's filter gradient: a 1x1
    kernel, a stride above 1, and fewer than ``ONEDNN_CHANNEL_BLOCK`` input channels."""
    kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
    return (kernel_size == (1, 1) and max(strides) > 1 and in_channels is not None
            and in_channels < ONEDNN_CHANNEL_BLOCK)


def apply_conv(x, filters, kernel_size, strides=1, padding="same", use_bias=True,
               kernel_initializer="glorot_uniform", weight_decay=0.0, activation=None, name=None):
    """``Conv2D`` named ``name``, safe on every CPU.

    A 1x1 convolution with stride ``s`` samples every ``s``-th pixel, so it equals
    ``x[:, ::s, ::s, :]`` followed by a stride-1 1x1 convolution, for "same" and "valid"
    padding alike (a 1x1 kernel pads nothing). Where the input has fewer than 16
    channels it is built that way, the subsampling being a ``MaxPooling2D`` with a 1x1
    window named ``{name}_subsample`` (see ``ONEDNN_CHANNEL_BLOCK``); the weights, their
    names and the outputs are those of the strided convolution.
    """
    if needs_strided_pointwise_workaround(kernel_size, strides, x.shape[-1]):
        x = layers.MaxPooling2D(pool_size=1, strides=strides, padding="valid", name=f"{name}_subsample")(x)
        strides = 1
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        activation=activation,
        kernel_initializer=make_initializer(kernel_initializer),
        kernel_regularizer=l2_regularizer(weight_decay),
        name=name,
    )(x)


def apply_conv_bn_act(
    x,
    filters,
    kernel_size,
    strides=1,
    padding="same",
    activation="relu",
    use_bias=False,
    use_bn=True,
    kernel_initializer="glorot_uniform",
    weight_decay=0.0,
    name=None,
):
    """Conv2D, then BatchNormalization, then an activation.

    Layers: ``{name}_conv``, ``{name}_bn`` (if ``use_bn``) and ``{name}_relu``
    (or ``{name}_prelu`` for ``activation="prelu"``, a per-channel PReLU as in He
    et al. 2015; ``{name}_act`` for other activations; none if ``activation`` is
    None).
    """
    x = apply_conv(x, filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                   kernel_initializer=kernel_initializer, weight_decay=weight_decay, name=f"{name}_conv")
    if use_bn:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return apply_activation(x, activation, name=name)


def apply_dense_bn_act(
    x,
    units,
    activation="relu",
    use_bias=False,
    use_bn=True,
    dropout=0.0,
    kernel_initializer="glorot_uniform",
    weight_decay=0.0,
    name=None,
):
    """Dense, BatchNormalization, activation, Dropout (layers ``{name}_dense`` ...)."""
    x = layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=make_initializer(kernel_initializer),
        kernel_regularizer=l2_regularizer(weight_decay),
        name=f"{name}_dense",
    )(x)
    if use_bn:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = apply_activation(x, activation, name=name)
    if dropout:
        x = seeded_dropout(dropout, name=f"{name}_dropout")(x)
    return x


def seeded_dropout(rate, name):
    """``Dropout(rate)`` with an explicit seed, drawn as Keras draws a default one (Python's
    ``random``, which ``keras.utils.set_random_seed`` seeds). On TensorFlow and JAX that is
    what an unseeded Dropout does; on PyTorch an unseeded Dropout draws its masks from
    torch's global generator instead of its seed generator, whose state a checkpoint holds
    (``ImageClassifier``), so a resumed run would continue with other masks."""
    return layers.Dropout(rate, seed=random.randint(1, 10**9), name=name)


def apply_activation(x, activation, name):
    """``activation`` as a named layer: ``relu``, per-channel ``prelu`` or any Keras activation."""
    if activation is None:
        return x
    if activation == "relu":
        return layers.ReLU(name=f"{name}_relu")(x)
    if activation == "prelu":
        # One slope per channel (He et al. 2015, "channel-wise" PReLU), shared
        # over the spatial axes so that it does not depend on the input size.
        shared_axes = list(range(1, len(x.shape) - 1)) or None
        return layers.PReLU(shared_axes=shared_axes, name=f"{name}_prelu")(x)
    return layers.Activation(activation, name=f"{name}_act")(x)


def apply_basic_block(
    x,
    filters,
    strides=1,
    use_bias=False,
    shortcut_bn=True,
    force_projection=False,
    kernel_initializer="he_normal",
    weight_decay=0.0,
    name=None,
):
    """The two-conv residual block of He et al. 2016 (ResNet v1, "basic" block).

    ``conv3x3(stride) - BN - ReLU - conv3x3 - BN``, added to the shortcut, then
    ReLU. The shortcut is the identity when shape is unchanged, else (or with
    ``force_projection``) a 1x1 strided convolution ("option B"), followed by BN
    when ``shortcut_bn``.

    Layers: ``{name}_1_conv/_1_bn/_1_relu``, ``{name}_2_conv/_2_bn``,
    ``{name}_0_conv/_0_bn`` (projection), ``{name}_add``, ``{name}_out``.
    """
    common = dict(use_bias=use_bias, kernel_initializer=kernel_initializer, weight_decay=weight_decay)
    in_filters = x.shape[-1]
    if force_projection or strides != 1 or in_filters != filters:
        shortcut = apply_conv(x, filters, 1, strides=strides, padding="valid", use_bias=use_bias,
                              kernel_initializer=kernel_initializer, weight_decay=weight_decay,
                              name=f"{name}_0_conv")
        if shortcut_bn:
            shortcut = layers.BatchNormalization(name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    y = apply_conv_bn_act(x, filters, 3, strides=strides, name=f"{name}_1", **common)
    y = apply_conv_bn_act(y, filters, 3, activation=None, name=f"{name}_2", **common)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def apply_classifier(
    x,
    num_classes,
    dropout=0.0,
    kernel_initializer="glorot_uniform",
    weight_decay=0.0,
    name="classifier",
):
    """Optional Dropout, ``Dense(num_classes)`` (no activation), float32 ``logits``.

    Layers: ``{name}_dropout``, ``{name}`` (the Dense) and ``logits``.
    """
    if dropout:
        x = seeded_dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Dense(
        num_classes,
        kernel_initializer=make_initializer(kernel_initializer),
        kernel_regularizer=l2_regularizer(weight_decay),
        name=name,
    )(x)
    return as_float32_logits(x)


def as_float32_logits(x):
    """Identity that casts to float32 (mixed precision), named ``logits``."""
    return layers.Activation("linear", dtype="float32", name="logits")(x)
