"""paper5: the 8-layer Caffe-style CNN, and its shallow and 5-layer baselines.

Paper text: ``../shared/papers/paper5_caffe_8layer_cnn_ensemble.txt``
(section 3.3 final model, 4.1 initialisation, 5.1 augmentation, 5.2 weight
decay, 5.5 dropout, 6 results). The networks see random 56x56 crops of the
mean-subtracted images (section 5.1), so the default input shape is
``(56, 56, 3)``. They flatten the last feature map, so they need a fixed size.

Pool stride. Section 3.3 says the 2x2 max pools have "a stride of 1" (Caffe's
default stride), but section 7 says the model has "over 400,000 parameters" and
trained on a 1.5 GB GTX 480. With stride-1 pools the feature map stays
53x53x128 and the first FC layer alone has 143.8M weights (575 MB in float32,
plus gradients and momentum: it would not fit); with stride-2 pools it is
7x7x128 and the model has 3.34M parameters. So ``pool_strides=2`` is the
default and ``pool_strides=1`` (valid pooling, as Caffe's, 56 -> 55 -> 54 ->
53) reproduces the text literally.

Initialisation (section 4.1): the shallow and 5-layer models draw weights from
N(0, 0.01) (standard deviation 0.01, the CS231n ``0.01 * randn``), the 8-layer
one uses Xavier (Glorot uniform, "n_j the fan-in, n_{j+1} the fan-out"); biases
are 0 in all (Keras' default). ``kernel_initializer`` switches either way.

``weight_decay`` is Caffe's lambda (see ``blocks``); section 5.2 tries 1e-4,
3e-4 and 5e-4 (best) on the 8-layer model.
"""

import keras
from keras import layers

from tiny_keras.models import blocks
from tiny_keras.models.classifier import Head, Hidden, ImageClassifier
from tiny_keras.models.registry import register_model


def _build_caffe_cnn(
    name,
    num_classes,
    input_shape,
    conv_groups,
    fc_units,
    filters,
    pool_strides,
    dropout,
    weight_decay,
    kernel_initializer,
):
    """[[conv 3x3 pad 1 - ReLU] x k - max pool 2x2] per group, then FC layers.

    ``conv_groups`` lists the convs before each pool; ``fc_units`` the hidden
    FC widths (each FC - ReLU - Dropout); then FC ``num_classes``. Without
    hidden FC layers, ``dropout`` applies to the input of the classifier.
    """
    num_classes = blocks.check_num_classes(num_classes)
    filters = blocks.check_positive_int(filters, "filters")
    if pool_strides not in (1, 2):
        raise ValueError(f"`pool_strides` must be 1 or 2. Received: {pool_strides=}")
    min_size = 2 ** len(conv_groups) if pool_strides == 2 else len(conv_groups) + 1
    input_shape = blocks.check_input_shape(input_shape, min_size=min_size, allow_none=False)
    blocks.check_rate(dropout, "dropout")
    blocks.check_non_negative(weight_decay, "weight_decay")
    blocks.check_initializer(kernel_initializer)
    common = dict(kernel_initializer=kernel_initializer, weight_decay=weight_decay)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    conv_index = 0
    for group, num_convs in enumerate(conv_groups, start=1):
        for _ in range(num_convs):
            conv_index += 1
            x = blocks.apply_conv_bn_act(
                x, filters, 3, use_bias=True, use_bn=False, name=f"conv{conv_index}", **common
            )
        x = layers.MaxPooling2D(2, strides=pool_strides, padding="valid", name=f"pool{group}")(x)
    backbone = keras.Model(inputs, x, name=f"{name}_backbone")
    hidden = tuple(Hidden(units, dropout=dropout) for units in fc_units)
    head = Head(num_classes, pooling="flatten", hidden=hidden, dropout=0.0 if fc_units else dropout, **common)
    return ImageClassifier(backbone, head=head, name=name)


@register_model(
    paper="paper5", input_shape=(56, 56, 3), size_agnostic=False,
    description="shallow baseline (ours): [conv32-relu-pool] x2, fc200; N(0, 0.01) init", small={"filters": 8},
)
def build_shallow(
    num_classes=200,
    input_shape=(56, 56, 3),
    filters=32,
    pool_strides=2,
    dropout=0.0,
    weight_decay=0.0,
    kernel_initializer="gaussian_0.01",
):
    """paper5's shallow baseline, 3 layers of 32 filters (sections 4.1 and 6).

    The paper gives only "3-layer", "32 filters" and N(0, 0.01); the layout is
    ours: [conv-relu-pool] x 2 - [fc] x 1, two 3x3 convs (pad 1) each followed
    by a 2x2 max pool, then FC ``num_classes`` (1,264,744 parameters at 56x56).

    Args:
        num_classes: number of output logits.
        input_shape: fixed ``(height, width, channels)``; 56x56 crops.
        filters: filters of every conv (32).
        pool_strides: 2 (default) or 1, as for the 8-layer model.
        dropout: dropout rate on the classifier's input.
        weight_decay: Caffe weight decay lambda on all kernels.
        kernel_initializer: ``"gaussian_0.01"`` (N(0, 0.01)) or ``"xavier"`` or
            any Keras initializer.
    """
    return _build_caffe_cnn(
        "paper5_shallow", num_classes, input_shape, (1, 1), (), filters,
        pool_strides, dropout, weight_decay, kernel_initializer,
    )


@register_model(
    paper="paper5", input_shape=(56, 56, 3), size_agnostic=False,
    description="5-layer baseline (ours): [[conv32-relu] x2-pool] x2, fc200; N(0, 0.01) init", small={"filters": 8},
)
def build_cnn5(
    num_classes=200,
    input_shape=(56, 56, 3),
    filters=32,
    pool_strides=2,
    dropout=0.0,
    weight_decay=0.0,
    kernel_initializer="gaussian_0.01",
):
    """paper5's 5-layer CNN baseline, 32 filters (sections 4.1 and 6).

    The paper gives only "5 layer", "32 filters" and N(0, 0.01) initialisation;
    the layout is ours, the 8-layer model's pattern cut to five weight layers:
    [[conv-relu] x 2 - pool] x 2 - [fc] x 1: four 3x3 convs (pad 1), 2x2 max
    pools after conv 2 and 4, FC ``num_classes`` (1,283,240 parameters at 56x56).
    No dropout or weight decay by default (the paper gives none for it).

    Args:
        num_classes: number of output logits.
        input_shape: fixed ``(height, width, channels)``; 56x56 crops.
        filters: filters of every conv (32; section 4.1 also mentions 128).
        pool_strides: 2 (default) or 1, as for the 8-layer model.
        dropout: dropout rate on the classifier's input.
        weight_decay: Caffe weight decay lambda on all kernels.
        kernel_initializer: ``"gaussian_0.01"`` (N(0, 0.01)) or ``"xavier"`` or
            any Keras initializer.
    """
    return _build_caffe_cnn(
        "paper5_cnn5", num_classes, input_shape, (2, 2), (), filters,
        pool_strides, dropout, weight_decay, kernel_initializer,
    )


@register_model(
    paper="paper5", input_shape=(56, 56, 3), size_agnostic=False,
    description="8-layer Caffe CNN: 5 conv128, pools after conv 2/4/5 (stride 2), fc 400-400-200, dropout, L2",
    small={"filters": 16, "fc_units": (32, 32)},
)
def build_cnn8(
    num_classes=200,
    input_shape=(56, 56, 3),
    filters=128,
    fc_units=(400, 400),
    pool_strides=2,
    dropout=0.5,
    weight_decay=5e-4,
    kernel_initializer="xavier",
):
    """paper5's 8-layer CNN (section 3.3), the best single model.

    [[conv-relu] x 2 - pool] x 2 - [conv-relu-pool] - [fc] x 3 - softmax (here
    logits): five 3x3 convs of 128 filters, pad 1, stride 1; 2x2 max pools after
    conv 2, 4 and 5; FC 400, 400 and ``num_classes``; dropout 0.5 after the two
    hidden FC layers ("dropout is only applied to the fully-connected layers",
    section 5.5); L2 on all kernels, lambda 5e-4 (the best of section 5.2);
    Xavier initialisation, zero biases (section 4.1). Pool stride 2 by default,
    see the module docstring: 3,343,720 parameters at 56x56 (200 classes);
    ``pool_strides=1`` gives 144,655,720.

    The paper's "8 Layer CNN" row without dropout is ``dropout=0``.

    Args:
        num_classes: number of output logits.
        input_shape: fixed ``(height, width, channels)``; 56x56 crops.
        filters: filters of every conv (128).
        fc_units: widths of the hidden FC layers ((400, 400)).
        pool_strides: 2 (default) or 1 (the text's literal Caffe stride).
        dropout: dropout rate after each hidden FC layer.
        weight_decay: Caffe weight decay lambda on all kernels.
        kernel_initializer: ``"xavier"`` or ``"gaussian_0.01"`` or any Keras
            initializer.
    """
    fc_units = blocks.check_positive_ints(fc_units, "fc_units")
    return _build_caffe_cnn(
        "paper5_cnn8", num_classes, input_shape, (2, 2, 1), fc_units, filters,
        pool_strides, dropout, weight_decay, kernel_initializer,
    )
