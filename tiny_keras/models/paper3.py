"""paper3: VGG-Z, VGG-F, VGG-Y with tiny filters, and InceptionV3-lite.

Paper text: ``../shared/papers/paper3_vgg_small_filters_inceptionv3.txt``.
The four architecture figures ("Final Architectures") are lost; the text gives
only their ingredients (sections 3.1-3.6):

- filters of 1x1, 2x1, 1x2 and 2x2 only, "stacking them at times to generate
  effective receptive fields of up to 3x3" (section 3.5);
- batch normalisation "throughout all my networks" (section 3.5); no dropout
  in the final models (section 3.4);
- "a couple max pooling layers" and "a single Global Average Pooling layer"
  instead of the fully connected layers, then softmax (section 3.5);
- L2 regularisation and a bias on every conv (section 3.1); Glorot uniform
  initialisation (section 3.2);
- InceptionV3-lite: InceptionV3's modules with the filters cut to the same four
  shapes, fewer modules of each type, the last module type removed (section 3.6).

So the three VGG variants and the Inception layout below are ours. They are
written as data (``VGG_VARIANTS``) so the choice is visible in one place. All
four end in global average pooling and run at any input size; the paper
trained on the 64x64 images.

Shared choices: every conv is conv (with bias) - BN - ReLU with "same"
padding (Keras pads a 2-wide kernel on the bottom / right); max pools are
2x2, stride 2; ``weight_decay`` defaults to 1e-4 (the paper gives no value).
The VGG classifier is a 1x1 conv to ``num_classes`` maps followed by global
average pooling (Network-in-Network style: no FC layer at all, as section 3.5
says); InceptionV3-lite keeps InceptionV3's own head, global average pooling
then a Dense layer.
"""

import functools

import keras
from keras import layers

from tiny_keras.models import blocks
from tiny_keras.models.classifier import Head, ImageClassifier
from tiny_keras.models.registry import register_model

# A "unit" is a stack of small convs with the same filter count.
#   square:     2x2, 2x2            -> 3x3 receptive field, like one VGG 3x3 conv
#   factorised: 2x1, 1x2, 2x1, 1x2  -> 3x3 receptive field from thin filters
#   bottleneck: 1x1, 2x2, 2x2       -> channel mixing, then 3x3
UNITS = {
    "square": ((2, 2), (2, 2)),
    "factorised": ((2, 1), (1, 2), (2, 1), (1, 2)),
    "bottleneck": ((1, 1), (2, 2), (2, 2)),
}

# Our reconstruction of the three VGG variants (paper3 figures lost):
#   unit:  the conv stack of every stage (see UNITS);
#   filters: filters per stage (one unit per stage), max pool after every
#            stage but the last (64 -> 32 -> 16 -> 8 for four stages).
VGG_VARIANTS = {
    # Z: the plain one, four stages of square units, VGG-11-like depth (8 convs;
    #    2.19M parameters with 200 classes).
    "z": dict(unit="square", filters=(64, 128, 256, 512)),
    # F: the same widths with factorised 2x1 / 1x2 units: twice as deep (16
    #    convs) for a similar parameter count (2.56M).
    "f": dict(unit="factorised", filters=(64, 128, 256, 512)),
    # Y: five narrower-first stages of bottleneck units (15 convs), pooling
    #    down to 4x4 before the global average pool (3.09M).
    "y": dict(unit="bottleneck", filters=(32, 64, 128, 256, 512)),
}


def build_vgg(
    num_classes=200,
    input_shape=(64, 64, 3),
    variant="z",
    filters=None,
    weight_decay=1e-4,
    kernel_initializer="glorot_uniform",
):
    """One of paper3's VGG-style models with 1x1 / 2x1 / 1x2 / 2x2 filters.

    See the module docstring for what the paper says and ``VGG_VARIANTS`` for
    our three variants (the figures are lost). Each stage is one unit of small
    convs (conv with bias - BN - ReLU each), followed by a 2x2 max pool except
    after the last stage; then a 1x1 conv with bias to ``num_classes`` maps,
    global average pooling, and the float32 logits.

    Args:
        num_classes: number of output logits.
        input_shape: ``(height, width, channels)``; ``None`` sizes allowed.
        variant: ``"z"``, ``"f"`` or ``"y"``.
        filters: filters per stage, overriding the variant's (its length sets
            the number of stages).
        weight_decay: L2 coefficient on every conv kernel (section 3.1).
        kernel_initializer: Glorot uniform in the paper (section 3.2).

    Returns:
        An ``ImageClassifier`` mapping images to ``num_classes`` logits.
    """
    num_classes = blocks.check_num_classes(num_classes)
    if variant not in VGG_VARIANTS:
        raise ValueError(f"`variant` must be one of {sorted(VGG_VARIANTS)}. Received: {variant=}")
    config = VGG_VARIANTS[variant]
    filters = blocks.check_positive_ints(config["filters"] if filters is None else filters, "filters")
    input_shape = blocks.check_input_shape(input_shape, min_size=2 ** (len(filters) - 1))
    blocks.check_non_negative(weight_decay, "weight_decay")
    blocks.check_initializer(kernel_initializer)
    conv = functools.partial(
        blocks.apply_conv_bn_act,
        use_bias=True,
        kernel_initializer=kernel_initializer,
        weight_decay=weight_decay,
    )

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for stage, stage_filters in enumerate(filters, start=1):
        for i, kernel_size in enumerate(UNITS[config["unit"]], start=1):
            x = conv(x, stage_filters, kernel_size, name=f"block{stage}_conv{i}")
        if stage < len(filters):
            x = layers.MaxPooling2D(2, strides=2, name=f"block{stage}_pool")(x)
    backbone = keras.Model(inputs, x, name=f"paper3_vgg_{variant}_backbone")
    head = Head(num_classes, pooling="avg", conv_classifier=True, kernel_initializer=kernel_initializer,
                weight_decay=weight_decay)
    return ImageClassifier(backbone, head=head, name=f"paper3_vgg_{variant}")


@register_model(
    paper="paper3", input_shape=(64, 64, 3), size_agnostic=True,
    description="VGG-Z (ours): 4 stages of 2x2+2x2 convs, BN, 1x1 classifier conv + GAP",
    small={"filters": (8, 16, 32, 64)},
)
def build_vgg_z(num_classes=200, input_shape=(64, 64, 3), **options):
    """paper3's VGG-Z (our reconstruction): ``build_vgg(variant="z")``."""
    return build_vgg(num_classes, input_shape, variant="z", **options)


@register_model(
    paper="paper3", input_shape=(64, 64, 3), size_agnostic=True,
    description="VGG-F (ours): 4 stages of 2x1/1x2 factorised convs, BN, 1x1 classifier conv + GAP",
    small={"filters": (8, 16, 32, 64)},
)
def build_vgg_f(num_classes=200, input_shape=(64, 64, 3), **options):
    """paper3's VGG-F (our reconstruction): ``build_vgg(variant="f")``."""
    return build_vgg(num_classes, input_shape, variant="f", **options)


@register_model(
    paper="paper3", input_shape=(64, 64, 3), size_agnostic=True,
    description="VGG-Y (ours): 5 stages of 1x1+2x2+2x2 convs, BN, 1x1 classifier conv + GAP",
    small={"filters": (8, 8, 16, 32, 64)},
)
def build_vgg_y(num_classes=200, input_shape=(64, 64, 3), **options):
    """paper3's VGG-Y (our reconstruction): ``build_vgg(variant="y")``."""
    return build_vgg(num_classes, input_shape, variant="y", **options)


# --- InceptionV3-lite (section 3.6) ---------------------------------------------


def _avg_pool_branch(x, filters, name, conv):
    y = layers.AveragePooling2D(2, strides=1, padding="same", name=f"{name}_pool")(x)
    return conv(y, filters, 1, name=f"{name}_1x1")


def apply_inception_a(x, pool_filters, name, conv):
    """InceptionV3's 35x35 module (``mixed0``-``mixed2``) with tiny filters.

    Branches: 1x1 64 | 1x1 48, 2x2 64 (was 5x5) | 1x1 64, 2x2 96, 2x2 96
    (was two 3x3) | 2x2 average pool, 1x1 ``pool_filters``.
    """
    b0 = conv(x, 64, 1, name=f"{name}_b0_1x1")
    b1 = conv(x, 48, 1, name=f"{name}_b1_1x1")
    b1 = conv(b1, 64, (2, 2), name=f"{name}_b1_2x2")
    b2 = conv(x, 64, 1, name=f"{name}_b2_1x1")
    b2 = conv(b2, 96, (2, 2), name=f"{name}_b2_2x2a")
    b2 = conv(b2, 96, (2, 2), name=f"{name}_b2_2x2b")
    b3 = _avg_pool_branch(x, pool_filters, f"{name}_b3", conv)
    return layers.Concatenate(name=f"{name}_concat")([b0, b1, b2, b3])


def apply_grid_reduction(x, name, conv):
    """InceptionV3's grid reduction (``mixed3``) with tiny filters.

    Branches: 2x2/2 384 | 1x1 64, 2x2 96, 2x2/2 96 | 2x2/2 max pool.
    """
    b0 = conv(x, 384, (2, 2), strides=2, name=f"{name}_b0_2x2")
    b1 = conv(x, 64, 1, name=f"{name}_b1_1x1")
    b1 = conv(b1, 96, (2, 2), name=f"{name}_b1_2x2a")
    b1 = conv(b1, 96, (2, 2), strides=2, name=f"{name}_b1_2x2b")
    b2 = layers.MaxPooling2D(2, strides=2, name=f"{name}_b2_pool")(x)
    return layers.Concatenate(name=f"{name}_concat")([b0, b1, b2])


def apply_inception_b(x, mid_filters, name, conv):
    """InceptionV3's 17x17 module (``mixed4``-``mixed7``) with 1x2 / 2x1 filters.

    Branches: 1x1 192 | 1x1 c, 1x2 c, 2x1 192 (was 1x7, 7x1) | 1x1 c, 2x1 c,
    1x2 c, 2x1 c, 1x2 192 (was 7x1, 1x7, 7x1, 1x7) | 2x2 average pool, 1x1
    192; c = ``mid_filters``. Output 768 channels.
    """
    c = mid_filters
    b0 = conv(x, 192, 1, name=f"{name}_b0_1x1")
    b1 = conv(x, c, 1, name=f"{name}_b1_1x1")
    b1 = conv(b1, c, (1, 2), name=f"{name}_b1_1x2")
    b1 = conv(b1, 192, (2, 1), name=f"{name}_b1_2x1")
    b2 = conv(x, c, 1, name=f"{name}_b2_1x1")
    b2 = conv(b2, c, (2, 1), name=f"{name}_b2_2x1a")
    b2 = conv(b2, c, (1, 2), name=f"{name}_b2_1x2a")
    b2 = conv(b2, c, (2, 1), name=f"{name}_b2_2x1b")
    b2 = conv(b2, 192, (1, 2), name=f"{name}_b2_1x2b")
    b3 = _avg_pool_branch(x, 192, f"{name}_b3", conv)
    return layers.Concatenate(name=f"{name}_concat")([b0, b1, b2, b3])


@register_model(
    paper="paper3", input_shape=(64, 64, 3), size_agnostic=True,
    description="InceptionV3-lite (ours): 2x2/1x2/2x1 filters, 2 A modules, reduction, 2 B modules, GAP",
    small={"num_a_modules": 1, "num_b_modules": 1},
)
def build_inception_v3_lite(
    num_classes=200,
    input_shape=(64, 64, 3),
    num_a_modules=2,
    num_b_modules=2,
    dropout=0.0,
    weight_decay=1e-4,
    kernel_initializer="glorot_uniform",
):
    """paper3's InceptionV3-lite (section 3.6; our layout, the figure is lost).

    InceptionV3 (Szegedy et al. 2016, "Rethinking the Inception Architecture")
    has 3 modules of the 35x35 type, a grid reduction, 4 of the 17x17 type, a
    second reduction and 2 of the 8x8 type (the paper counts "3, 5 and 3").
    Following section 3.6 we keep the module types with every filter cut to
    1x1 / 2x1 / 1x2 / 2x2, use fewer modules of each type and drop the last
    type (and the reduction that precedes it):

    - stem: 2x2 convs of 32, 32, 64 filters, 2x2/2 max pool, 1x1 80, 2x2 192,
      2x2/2 max pool (64 px -> 16 px; InceptionV3's 3x3 convs cut to 2x2 and its
      stride-2 valid convs replaced by "same" ones for small images);
    - ``num_a_modules`` (default 2, of 3) 35x35-type modules
      (``apply_inception_a``), pool projections 32 then 64;
    - the grid reduction (``apply_grid_reduction``), 16 -> 8 px;
    - ``num_b_modules`` (default 2, of 4) 17x17-type modules
      (``apply_inception_b``), inner widths 128 then 160;
    - global average pooling, optional dropout (default 0: section 3.4 found
      BN better than dropout), Dense(num_classes).

    Every conv is conv (with bias) - BN - ReLU with L2 (section 3.1).

    Args:
        num_classes: number of output logits.
        input_shape: ``(height, width, channels)``; ``None`` sizes allowed.
        num_a_modules: number of 35x35-type modules.
        num_b_modules: number of 17x17-type modules.
        dropout: dropout rate before the classifier.
        weight_decay: L2 coefficient on conv and dense kernels.
        kernel_initializer: Glorot uniform in the paper (section 3.2).

    Returns:
        An ``ImageClassifier`` mapping images to ``num_classes`` logits.
    """
    num_classes = blocks.check_num_classes(num_classes)
    input_shape = blocks.check_input_shape(input_shape, min_size=8)
    num_a_modules = blocks.check_positive_int(num_a_modules, "num_a_modules")
    num_b_modules = blocks.check_positive_int(num_b_modules, "num_b_modules")
    blocks.check_rate(dropout, "dropout")
    blocks.check_non_negative(weight_decay, "weight_decay")
    blocks.check_initializer(kernel_initializer)
    common = dict(kernel_initializer=kernel_initializer, weight_decay=weight_decay)
    conv = functools.partial(blocks.apply_conv_bn_act, use_bias=True, **common)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = conv(inputs, 32, (2, 2), name="stem_1")
    x = conv(x, 32, (2, 2), name="stem_2")
    x = conv(x, 64, (2, 2), name="stem_3")
    x = layers.MaxPooling2D(2, strides=2, name="stem_pool1")(x)
    x = conv(x, 80, 1, name="stem_4")
    x = conv(x, 192, (2, 2), name="stem_5")
    x = layers.MaxPooling2D(2, strides=2, name="stem_pool2")(x)
    for i in range(1, num_a_modules + 1):
        x = apply_inception_a(x, 32 if i == 1 else 64, name=f"mixed_a{i}", conv=conv)
    x = apply_grid_reduction(x, name="reduction", conv=conv)
    for i in range(1, num_b_modules + 1):
        x = apply_inception_b(x, 128 if i == 1 else 160, name=f"mixed_b{i}", conv=conv)
    backbone = keras.Model(inputs, x, name="paper3_inception_v3_lite_backbone")
    head = Head(num_classes, pooling="avg", dropout=dropout, **common)
    return ImageClassifier(backbone, head=head, name="paper3_inception_v3_lite")
