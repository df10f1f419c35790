"""paper2: ResNet, Inception-ResNet and VGG trained from scratch.

Paper text: ``../shared/papers/paper2_resnet_inception_resnet_vgg.txt``
(sections 3.2 ResNet, 3.3 Inception-ResNet, 3.4 VGGNet; Table 1 gives the
parameter counts 11.28M, 8.3M, 40.2M (VGG-19) and 36.7M (VGG-16); the
architecture figures 2-4 are lost). Training crops are 56x56 (section 3.1), so
the default input shape is ``(56, 56, 3)``; the ResNet and Inception-ResNet end
in global average pooling and also run at any other size.

The paper's initialisation study (section 4.5) compares Xavier (Glorot
uniform) with variance scaling ``N(0, 2/n)``: every builder takes
``kernel_initializer="xavier" | "variance_scaling"`` or any Keras initializer.
"""

import functools

import keras
from keras import layers

from tiny_keras.models import blocks
from tiny_keras.models.classifier import Head, Hidden, ImageClassifier
from tiny_keras.models.registry import register_model

# Inception-ResNet-v2 hyper-parameters (Szegedy et al. 2016, "Inception-v4,
# Inception-ResNet and the Impact of Residual Connections", [17] in paper2).
_REDUCTION_A = dict(k=256, l=256, m=384, n=384)  # their Table 1, Inception-ResNet-v2 row

# VGG convolutions per stage (Simonyan & Zisserman 2015, configurations D and E).
_VGG_CONVS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


# --- ResNet (section 3.2) ------------------------------------------------------


def build_resnet(
    num_classes=200,
    input_shape=(56, 56, 3),
    n=2,
    filters=(64, 128, 256, 512),
    kernel_initializer="variance_scaling",
    weight_decay=2e-4,
    downsample_first_stage=False,
):
    """The modified ResNet of paper2 section 3.2 ("10-layer" n=1, "18-layer" n=2).

    From the text (section 3.2): a first 7x7 conv with stride 1 and no max pool
    after it; then four "building blocks" (stages) of 2n 3x3 convs with
    [64, 128, 256, 512] filters; down-sampling by stride 2 "at the first layer of
    each building block"; BN between every conv and its ReLU; shortcuts of type
    (B), a 1x1 stride-2 conv, with BN on both branches before the add and ReLU
    after it; average pooling; an FC-200 scoring layer.

    Reconstruction choices:

    - Each stage is n basic blocks of two convs (He et al. 2016), so a stage has
      2n convs and the network 8n + 2 weight layers: 10 for n=1, 18 for n=2 (the
      "[64, 128, 256, 512] x 2" and "x 4" of section 4.4).
    - The first stage keeps the stem's resolution (stride 1, identity shortcuts)
      and stages 2-4 down-sample, 56 -> 56 -> 28 -> 14 -> 7, as in He et al.
      The text's "down-sampling is performed at the first layer of each building
      block" could also mean the first stage, 56 -> 28 -> 14 -> 7 -> 4
      (``downsample_first_stage=True``). The parameter count cannot decide (the
      readings differ by 4,352 parameters and both round to 11.28M), but the text
      can: (1) it introduces the 1x1 stride-2 projection "for two volumes with
      different depths and different feature map sizes", and only stages 2-4
      change depth (the stem already has 64 filters), so a stride-2 first stage
      would need a projection the text does not describe; (2) for VGG the same
      authors removed the last max pool because "the feature map needs to
      maintain enough spatial size before the average pooling layer", which a
      4x4 final map would contradict; (3) without a stride-2 stem or max pool,
      a 56px input reaching 7x7 before pooling is exactly ResNet's 224 -> 7
      geometry at a quarter of the scale.
    - Convs have no bias (BN follows each one).
    - ``kernel_initializer`` defaults to variance scaling, the better of the two
      in section 4.5; ``weight_decay`` defaults to 2e-4, the best of Table 3.

    Parameters (n=2, 200 classes): 11,288,712 by Keras ``count_params``, which
    includes 9,600 BN moving means and variances; the 11,279,112 trainable ones
    round to the paper's 11.28M (Table 1). The remaining difference to "11.28M"
    is rounding (+0.08% for the Keras count).

    Args:
        num_classes: number of output logits.
        input_shape: ``(height, width, channels)``; ``None`` sizes allowed.
        n: blocks per stage; 2n convs per stage (1: "10-layer", 2: "18-layer").
        filters: filters of the four stages; section 4.4 also trains the narrow
            ``(16, 32, 64, 128)``.
        kernel_initializer: ``"variance_scaling"`` (He normal), ``"xavier"``
            (Glorot uniform) or any Keras initializer.
        weight_decay: L2 coefficient on conv and dense kernels (section 4.6).
        downsample_first_stage: stride 2 (and a projection) in the first stage
            too: the other reading of the text (see above).

    Returns:
        An ``ImageClassifier`` mapping images to ``num_classes`` logits.
    """
    num_classes = blocks.check_num_classes(num_classes)
    input_shape = blocks.check_input_shape(input_shape, min_size=16)
    n = blocks.check_positive_int(n, "n")
    filters = blocks.check_positive_ints(filters, "filters")
    blocks.check_initializer(kernel_initializer)
    blocks.check_non_negative(weight_decay, "weight_decay")
    if not isinstance(downsample_first_stage, bool):
        raise ValueError(
            f"`downsample_first_stage` must be a bool. Received: {downsample_first_stage=}"
        )
    common = dict(kernel_initializer=kernel_initializer, weight_decay=weight_decay)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = blocks.apply_conv_bn_act(inputs, filters[0], 7, name="stem", **common)
    for stage, stage_filters in enumerate(filters, start=1):
        for block in range(1, n + 1):
            first = block == 1 and (stage > 1 or downsample_first_stage)
            x = blocks.apply_basic_block(
                x,
                stage_filters,
                strides=2 if first else 1,
                shortcut_bn=True,
                name=f"stage{stage}_block{block}",
                **common,
            )
    backbone = keras.Model(inputs, x, name=f"paper2_resnet{8 * n + 2}_backbone")
    head = Head(num_classes, pooling="avg", **common)
    return ImageClassifier(backbone, head=head, name=f"paper2_resnet{8 * n + 2}")


@register_model(
    paper="paper2", input_shape=(56, 56, 3), size_agnostic=True, paper_params=11_280_000,
    description="18-layer ResNet, 7x7 stride-1 stem, no max pool, BN on both shortcut branches (11.28M)",
    small={"filters": (8, 16, 32, 64)},
)
def build_resnet18(num_classes=200, input_shape=(56, 56, 3), **options):
    """paper2's 18-layer ResNet: ``build_resnet(n=2)``; 11.28M parameters (Table 1)."""
    return build_resnet(num_classes, input_shape, n=2, **options)


@register_model(
    paper="paper2", input_shape=(56, 56, 3), size_agnostic=True,
    description="10-layer ResNet (n=1) of the depth study, section 4.4", small={"filters": (8, 16, 32, 64)},
)
def build_resnet10(num_classes=200, input_shape=(56, 56, 3), **options):
    """paper2's 10-layer ResNet (section 4.4): ``build_resnet(n=1)``."""
    return build_resnet(num_classes, input_shape, n=1, **options)


# --- Inception-ResNet (section 3.3) --------------------------------------------


def _concat(branches, name):
    return layers.Concatenate(name=name)(branches)


def apply_inception_resnet_stem(x, name="stem", **common):
    """The Inception-v4 / Inception-ResNet-v2 stem ([17] Fig. 3), for small images.

    Parallel branches concatenated three times, with the 7x1 / 1x7 factorised
    pair. Changes for 56-64 px inputs: "same" padding everywhere and stride 1
    in the first conv (the original's stride-2 conv and valid paddings shrink
    299 px to 35 px), so the stem down-samples by 4 (56 -> 14), in its two
    parallel conv / max-pool reductions. Output: 384 channels.
    """
    conv = functools.partial(blocks.apply_conv_bn_act, **common)
    x = conv(x, 32, 3, name=f"{name}_1")
    x = conv(x, 32, 3, name=f"{name}_2")
    x = conv(x, 64, 3, name=f"{name}_3")
    x = _concat(
        [
            layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_4_pool")(x),
            conv(x, 96, 3, strides=2, name=f"{name}_4_conv3x3"),
        ],
        name=f"{name}_4_concat",
    )
    b0 = conv(x, 64, 1, name=f"{name}_5_b0_1x1")
    b0 = conv(b0, 96, 3, name=f"{name}_5_b0_3x3")
    b1 = conv(x, 64, 1, name=f"{name}_5_b1_1x1")
    b1 = conv(b1, 64, (7, 1), name=f"{name}_5_b1_7x1")
    b1 = conv(b1, 64, (1, 7), name=f"{name}_5_b1_1x7")
    b1 = conv(b1, 96, 3, name=f"{name}_5_b1_3x3")
    x = _concat([b0, b1], name=f"{name}_5_concat")
    x = _concat(
        [
            conv(x, 192, 3, strides=2, name=f"{name}_6_conv3x3"),
            layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_6_pool")(x),
        ],
        name=f"{name}_6_concat",
    )
    return x


def apply_inception_resnet_a(x, residual_scale, name, **common):
    """Inception-ResNet-A ([17] Fig. 16), BN after every conv, scaled residual.

    Branches 1x1 32 | 1x1 32, 3x3 32 | 1x1 32, 3x3 48, 3x3 64; concat (128);
    1x1 conv back to the input depth, with BN and no activation; input +
    ``residual_scale`` * residual; ReLU.
    """
    conv = functools.partial(blocks.apply_conv_bn_act, **common)
    b0 = conv(x, 32, 1, name=f"{name}_b0_1x1")
    b1 = conv(x, 32, 1, name=f"{name}_b1_1x1")
    b1 = conv(b1, 32, 3, name=f"{name}_b1_3x3")
    b2 = conv(x, 32, 1, name=f"{name}_b2_1x1")
    b2 = conv(b2, 48, 3, name=f"{name}_b2_3x3a")
    b2 = conv(b2, 64, 3, name=f"{name}_b2_3x3b")
    return _apply_scaled_residual(x, [b0, b1, b2], residual_scale, name, **common)


def apply_inception_resnet_b(x, residual_scale, name, **common):
    """Inception-ResNet-B ([17] Fig. 17), BN after every conv, scaled residual.

    Branches 1x1 192 | 1x1 128, 1x7 160, 7x1 192; concat (384); 1x1 conv back
    to the input depth (1152; [17]'s figure says 1154, which cannot be added to
    a 1152-deep input), with BN; input + ``residual_scale`` * residual; ReLU.
    """
    conv = functools.partial(blocks.apply_conv_bn_act, **common)
    b0 = conv(x, 192, 1, name=f"{name}_b0_1x1")
    b1 = conv(x, 128, 1, name=f"{name}_b1_1x1")
    b1 = conv(b1, 160, (1, 7), name=f"{name}_b1_1x7")
    b1 = conv(b1, 192, (7, 1), name=f"{name}_b1_7x1")
    return _apply_scaled_residual(x, [b0, b1], residual_scale, name, **common)


def _apply_scaled_residual(x, branches, residual_scale, name, **common):
    mixed = _concat(branches, name=f"{name}_concat")
    residual = blocks.apply_conv_bn_act(mixed, x.shape[-1], 1, activation=None, name=f"{name}_up", **common)
    x = blocks.ScaledResidual(residual_scale, name=f"{name}_add")([x, residual])
    return layers.ReLU(name=f"{name}_out")(x)


def apply_reduction_a(x, k, l, m, n, name, **common):  # noqa: E741 (the paper's names)
    """Reduction-A ([17] Fig. 7): 3x3/2 n | 1x1 k, 3x3 l, 3x3/2 m | max pool 3x3/2."""
    conv = functools.partial(blocks.apply_conv_bn_act, **common)
    b0 = conv(x, n, 3, strides=2, name=f"{name}_b0_3x3")
    b1 = conv(x, k, 1, name=f"{name}_b1_1x1")
    b1 = conv(b1, l, 3, name=f"{name}_b1_3x3a")
    b1 = conv(b1, m, 3, strides=2, name=f"{name}_b1_3x3b")
    b2 = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_b2_pool")(x)
    return _concat([b0, b1, b2], name=f"{name}_concat")


@register_model(
    paper="paper2", input_shape=(56, 56, 3), size_agnostic=True, paper_params=8_300_000,
    description="Inception-ResNet-v2-lite: stem, 2 A, Reduction-A, 4 B modules, residuals x0.1 (8.3M)",
    small={"n": 1},
)
def build_inception_resnet(
    num_classes=200,
    input_shape=(56, 56, 3),
    n=2,
    residual_scale=0.1,
    dropout=0.5,
    kernel_initializer="glorot_uniform",
    weight_decay=4e-5,
):
    """The modified Inception-ResNet-v2 of paper2 section 3.3.

    From the text: a stem with parallel branches and a 1x7 + 7x1 pair; n
    Inception-ResNet-A modules; one reduction module; 2n Inception-ResNet-B
    modules; average pooling; dropout with keep probability 0.5; FC-200. Each
    module ends in a 1x1 conv restoring the input depth, its residual is scaled
    by 0.1 before the add, and BN follows every conv (not only the module
    ends, as in [17]).

    Reconstruction choices:

    - Modules follow Inception-ResNet-v2 as drawn in [17] (Szegedy et al. 2016):
      stem Fig. 3 (384 channels out), A Fig. 16, Reduction-A Fig. 7 with the
      v2 sizes k, l, m, n = 256, 256, 384, 384 (Table 1 of [17]; 1152 channels
      out), B Fig. 17. Paper2 confirms the B width by quoting "1154 x 1 x 1"
      filters (section 4.1) and depths "exceeding 1000" (section 3.3).
    - The stem is adapted to 56 px (see ``apply_inception_resnet_stem``): the
      A modules run at 14x14, the B modules at 7x7.
    - ``n=2`` (2 A, 1 reduction, 4 B): the paper does not give n; n=1 has 6.2M
      parameters and n=3 11.2M, so n=2 is the one near 8.3M.
    - Convs have no bias (BN follows every conv); ReLU after each residual add.
    - Initialisation and weight decay for this model are not given; the
      defaults are those of TF-slim's Inception-ResNet-v2 (Xavier, 4e-5), the
      public TensorFlow implementation of [17].

    Parameters (n=2, 200 classes): 8,728,360 by Keras ``count_params``
    (8,706,984 trainable), +5.2% over the paper's 8.3M. No reading of the
    text with these module types reaches 8.3M: the count is fixed by the
    1152-channel B modules the paper itself describes, and changes by about
    2.5M per step of n. This is the one paper2 model outside 3% of its Table 1
    figure besides VGG-19; see ``tests/test_models.py``.

    Args:
        num_classes: number of output logits.
        input_shape: ``(height, width, channels)``; ``None`` sizes allowed.
        n: number of A modules; the model has 2n B modules.
        residual_scale: factor on the residual branch before the add (0.1).
        dropout: dropout rate before the classifier (keep probability 0.5).
        kernel_initializer: ``"xavier"``, ``"variance_scaling"`` or any Keras
            initializer.
        weight_decay: L2 coefficient on conv and dense kernels.

    Returns:
        An ``ImageClassifier`` mapping images to ``num_classes`` logits.
    """
    num_classes = blocks.check_num_classes(num_classes)
    input_shape = blocks.check_input_shape(input_shape, min_size=16)
    n = blocks.check_positive_int(n, "n")
    if not isinstance(residual_scale, (int, float)) or isinstance(residual_scale, bool) or residual_scale <= 0:
        raise ValueError(f"`residual_scale` must be a positive number. Received: {residual_scale=}")
    blocks.check_rate(dropout, "dropout")
    blocks.check_initializer(kernel_initializer)
    blocks.check_non_negative(weight_decay, "weight_decay")
    common = dict(kernel_initializer=kernel_initializer, weight_decay=weight_decay)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = apply_inception_resnet_stem(inputs, name="stem", **common)
    for i in range(1, n + 1):
        x = apply_inception_resnet_a(x, residual_scale, name=f"block_a{i}", **common)
    x = apply_reduction_a(x, **_REDUCTION_A, name="reduction_a", **common)
    for i in range(1, 2 * n + 1):
        x = apply_inception_resnet_b(x, residual_scale, name=f"block_b{i}", **common)
    backbone = keras.Model(inputs, x, name="paper2_inception_resnet_backbone")
    head = Head(num_classes, pooling="avg", dropout=dropout, **common)
    return ImageClassifier(backbone, head=head, name="paper2_inception_resnet")


# --- VGG (section 3.4) ---------------------------------------------------------


def build_vgg(
    num_classes=200,
    input_shape=(56, 56, 3),
    depth=16,
    filters=(64, 128, 256, 512, 512),
    fc_units=2048,
    dropout=0.5,
    weight_decay=5e-4,
    conv_weight_decay=0.0,
    kernel_initializer="glorot_uniform",
):
    """The modified VGG-16 / VGG-19 of paper2 section 3.4.

    From the text: VGG-16 / VGG-19 (Simonyan & Zisserman 2015, configurations D
    and E: five stages of 3x3 convs, [64, 128, 256, 512, 512] filters, "same"
    padding); hidden FC layers of 2048 instead of 4096 units; the last max pool
    removed (the other four are 2x2, stride 2, zero-padded); PReLU instead of
    ReLU, with BN before each activation; L2 regularisation and dropout on the
    FC layers; FC-200 scores.

    Reconstruction choices:

    - PReLU has one slope per channel (He et al. 2015, the paper's [5]).
    - Convs and hidden FC layers have no bias (BN follows each one).
    - "L2 ... and dropout on each fully connected layer": ``weight_decay``
      (default 5e-4, the VGG paper's value; paper2 gives none) applies to the
      three FC layers and ``conv_weight_decay`` (default 0) to the convs, so the
      other reading is one flag away. Dropout 0.5 (VGG's rate) follows the two
      hidden FC layers.
    - With 56 px crops and zero-padded pools the last feature map is 4x4x512
      (56 -> 28 -> 14 -> 7 -> 4), as it is for 64 px images, so the FC layers
      and the parameter count are the same at both sizes.

    Parameters (200 classes): VGG-16 36,133,384 (-1.5% vs the paper's 36.7M),
    VGG-19 41,448,200 (+3.1% vs 40.2M). The paper's two figures cannot both be
    met: VGG-19 adds three 3x3 convs (256 and 2 x 512 filters, 5.31M weights)
    to VGG-16 whatever the head, while Table 1 differs by 3.5M. Over 99.9% of
    each count is conv and FC weights fixed by the text (BN and PReLU add
    about 0.1%), so we keep the standard configurations and report the gap.

    Args:
        num_classes: number of output logits.
        input_shape: ``(height, width, channels)``; fixed size (the FC head
            flattens the feature map).
        depth: 16 or 19.
        filters: filters of the five stages.
        fc_units: width of the two hidden FC layers (2048; VGG's is 4096).
        dropout: dropout rate after each hidden FC layer.
        weight_decay: L2 coefficient on the FC kernels.
        conv_weight_decay: L2 coefficient on the conv kernels.
        kernel_initializer: ``"xavier"``, ``"variance_scaling"`` or any Keras
            initializer.

    Returns:
        An ``ImageClassifier`` mapping images to ``num_classes`` logits.
    """
    num_classes = blocks.check_num_classes(num_classes)
    input_shape = blocks.check_input_shape(input_shape, min_size=16, allow_none=False)
    if depth not in _VGG_CONVS:
        raise ValueError(f"`depth` must be one of {sorted(_VGG_CONVS)}. Received: {depth=}")
    filters = blocks.check_positive_ints(filters, "filters", length=5)
    fc_units = blocks.check_positive_int(fc_units, "fc_units")
    blocks.check_rate(dropout, "dropout")
    blocks.check_non_negative(weight_decay, "weight_decay")
    blocks.check_non_negative(conv_weight_decay, "conv_weight_decay")
    blocks.check_initializer(kernel_initializer)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for stage, (stage_filters, num_convs) in enumerate(zip(filters, _VGG_CONVS[depth]), start=1):
        for i in range(1, num_convs + 1):
            x = blocks.apply_conv_bn_act(
                x,
                stage_filters,
                3,
                activation="prelu",
                kernel_initializer=kernel_initializer,
                weight_decay=conv_weight_decay,
                name=f"block{stage}_conv{i}",
            )
        if stage < 5:  # the last max pool is removed (section 3.4)
            x = layers.MaxPooling2D(2, strides=2, padding="same", name=f"block{stage}_pool")(x)
    backbone = keras.Model(inputs, x, name=f"paper2_vgg{depth}_backbone")
    fc = Hidden(fc_units, activation="prelu", use_bias=False, batch_norm=True, dropout=dropout)
    head = Head(num_classes, pooling="flatten", hidden=(fc, fc), kernel_initializer=kernel_initializer,
                weight_decay=weight_decay)
    return ImageClassifier(backbone, head=head, name=f"paper2_vgg{depth}")


@register_model(
    paper="paper2", input_shape=(56, 56, 3), size_agnostic=False, paper_params=36_700_000,
    description="VGG-16 with FC 2048, last max pool removed, BN + PReLU (36.7M)",
    small={"filters": (8, 16, 32, 64, 64), "fc_units": 32},
)
def build_vgg16(num_classes=200, input_shape=(56, 56, 3), **options):
    """paper2's modified VGG-16: ``build_vgg(depth=16)``; 36.7M parameters (Table 1)."""
    return build_vgg(num_classes, input_shape, depth=16, **options)


@register_model(
    paper="paper2", input_shape=(56, 56, 3), size_agnostic=False, paper_params=40_200_000,
    description="VGG-19 with FC 2048, last max pool removed, BN + PReLU (40.2M)",
    small={"filters": (8, 16, 32, 64, 64), "fc_units": 32},
)
def build_vgg19(num_classes=200, input_shape=(56, 56, 3), **options):
    """paper2's modified VGG-19: ``build_vgg(depth=19)``; 40.2M parameters (Table 1)."""
    return build_vgg(num_classes, input_shape, depth=19, **options)
