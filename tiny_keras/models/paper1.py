"""paper1: progressive-resizing ResNet with a cyclic learning rate.

Paper text: ``../shared/papers/paper1_progressive_resizing_resnet_clr.txt``
(its title is not in the extracted text).
Table 1 gives 11,282,248 parameters at every input size (32, 40, 48, 54, 64 px);
the layer figure (Fig. 5) is lost.
"""

import keras

from tiny_keras.models import blocks
from tiny_keras.models.classifier import Head, ImageClassifier
from tiny_keras.models.registry import register_model


@register_model(
    paper="paper1", input_shape=(64, 64, 3), size_agnostic=True, paper_params=11_282_248,
    description="ResNet-18 with a 3x3 stem and GAP head; same weights at 32-64 px (progressive resizing)",
    small={"filters": (8, 16, 32, 64)},
)
def build_resnet(
    num_classes=200,
    input_shape=(None, None, 3),
    filters=(64, 128, 256, 512),
    blocks_per_stage=(2, 2, 2, 2),
    dropout=0.0,
    kernel_initializer="glorot_uniform",
    weight_decay=0.0,
):
    """The residual network of paper1, size-agnostic.

    Reconstruction (paper1 section IV and Table 1; the architecture figure,
    Fig. 5, is lost), chosen because it gives exactly the paper's
    11,282,248 parameters (Keras ``count_params``, which includes the BN moving
    statistics, as the paper's Keras summary would):

    - ResNet-18 layout: a 3x3 stride-1 conv stem (64 filters, BN, ReLU, no max
      pool: the CIFAR-style stem for small images), four stages of two basic
      blocks with [64, 128, 256, 512] filters, stride 2 in the first block of
      stages 2-4, global average pooling, Dense(num_classes).
    - Every Conv2D keeps Keras' default bias (``use_bias=True``) even before BN,
      and the 1x1 stride-2 projection shortcuts have no BN: with these two
      choices the count is exactly 11,282,248 (a 7x7 stem, no conv biases or BN
      on the shortcuts all move it away from the paper's figure).
    - Global average pooling makes the parameter count independent of the input
      size, as Table 1 requires, and lets the same weights run at 32, 40, 48,
      54 and 64 pixels: the default ``input_shape`` is ``(None, None, 3)``.
    - Section IV: "deploying Dropouts at a later stage in the training process":
      ``dropout`` adds a Dropout layer (no weights) before the classifier, so
      weights load unchanged between models with and without it.
    - Initialisation and weight decay are not given in the paper; Keras'
      defaults (Glorot uniform, no decay) are used, as the paper used Keras.

    Args:
        num_classes: number of output logits.
        input_shape: ``(height, width, channels)``; ``None`` sizes allowed.
        filters: filters of the four stages.
        blocks_per_stage: basic blocks per stage ((2, 2, 2, 2) is ResNet-18).
        dropout: dropout rate before the classifier (0 disables).
        kernel_initializer: initialiser for conv and dense kernels.
        weight_decay: L2 coefficient (see ``blocks``), 0 for none.

    Returns:
        An ``ImageClassifier`` mapping images to ``num_classes`` logits.

    Example:
        >>> model = build_resnet(num_classes=200)  # doctest: +SKIP
        >>> model.count_params()  # doctest: +SKIP
        11282248
    """
    num_classes = blocks.check_num_classes(num_classes)
    input_shape = blocks.check_input_shape(input_shape, min_size=8)
    filters = blocks.check_positive_ints(filters, "filters")
    blocks_per_stage = blocks.check_positive_ints(blocks_per_stage, "blocks_per_stage", len(filters))
    blocks.check_rate(dropout, "dropout")
    blocks.check_non_negative(weight_decay, "weight_decay")
    blocks.check_initializer(kernel_initializer)
    common = dict(kernel_initializer=kernel_initializer, weight_decay=weight_decay)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = blocks.apply_conv_bn_act(inputs, filters[0], 3, use_bias=True, name="stem", **common)
    for stage, (stage_filters, num_blocks) in enumerate(zip(filters, blocks_per_stage), start=1):
        for block in range(1, num_blocks + 1):
            strides = 2 if (stage > 1 and block == 1) else 1
            x = blocks.apply_basic_block(
                x,
                stage_filters,
                strides=strides,
                use_bias=True,
                shortcut_bn=False,
                name=f"stage{stage}_block{block}",
                **common,
            )
    backbone = keras.Model(inputs, x, name="paper1_resnet_backbone")
    head = Head(num_classes, pooling="avg", dropout=dropout, **common)
    return ImageClassifier(backbone, head=head, name="paper1_resnet")
