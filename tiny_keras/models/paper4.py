"""paper4: simple CNNs and ResNet50 transfer learning.

Paper text: ``../shared/papers/paper4_cnns_resnet50_transfer.txt``. Section IV
prints the Keras summaries of models 1-4 (Figs. 5-8) and section V (Fig. 9)
the parameter counts of all five:

    model1 13,070,472   model2 2,555,656   model3 140,382,728
    model4 8,866,376    model5 25,890,888

Models 1-4 below reproduce those summaries layer for layer, and every count
exactly, at the 64x64 input the summaries show (``(None, 64, 64, 64)`` after
model3's first conv; 62x62 after model1's valid 3x3 conv). The paper ends each
model in a softmax; here the last Dense returns logits instead.

All four flatten their feature map, so they need a fixed input size; the
parameter count depends on it. Model 5 ends in global average pooling and runs
at any size.
"""

import os

import keras
from keras import layers

from tiny_keras import download
from tiny_keras.models import blocks
from tiny_keras.models.classifier import Head, Hidden, ImageClassifier
from tiny_keras.models.registry import register_model


def _conv(x, filters, name, padding="valid", activation="relu", weight_decay=0.0, initializer="glorot_uniform"):
    return blocks.apply_conv(x, filters, 3, padding=padding, activation=activation, kernel_initializer=initializer,
                             weight_decay=weight_decay, name=name)


def _dense(x, units, name, activation="relu", weight_decay=0.0, initializer="glorot_uniform"):
    return layers.Dense(
        units,
        activation=activation,
        kernel_initializer=blocks.make_initializer(initializer),
        kernel_regularizer=blocks.l2_regularizer(weight_decay),
        name=name,
    )(x)


def _check_common(num_classes, input_shape, min_size, weight_decay, kernel_initializer):
    num_classes = blocks.check_num_classes(num_classes)
    shape = blocks.check_input_shape(input_shape, min_size=min_size, allow_none=False)
    blocks.check_non_negative(weight_decay, "weight_decay")
    blocks.check_initializer(kernel_initializer)
    return num_classes, shape


@register_model(
    paper="paper4", input_shape=(64, 64, 3), size_agnostic=False, paper_params=13_070_472,
    description="conv32-pool-conv64-pool-dense1024-dense200, valid padding, L2", small={"dense_units": 32},
)
def build_model1(
    num_classes=200,
    input_shape=(64, 64, 3),
    dense_units=1024,
    weight_decay=0.002,
    kernel_initializer="glorot_uniform",
):
    """paper4 Model 1 (section IV.A, Fig. 5): 13,070,472 parameters.

    conv 32 3x3 valid ReLU - max pool 2 - conv 64 3x3 valid ReLU - max pool 2 -
    flatten - dense 1024 ReLU - dense 200 (softmax in the paper; logits here).

    "L2 regularization" is used (section IV.A) with no strength or layers
    given; we put it on every conv and dense kernel with ``weight_decay=0.002``,
    i.e. ``L2(0.001)`` (see ``blocks`` for the factor of 2), the reading
    paper 4's script trains with. Keras' ``L2()`` default, 0.01
    (``weight_decay=0.02``), was measured and refuted there (its docstring
    gives the figures). Adam 1e-4 and 15 epochs are the paper's training recipe.

    Args:
        num_classes: number of output logits.
        input_shape: fixed ``(height, width, channels)``; 64x64 in the paper.
        dense_units: width of the hidden dense layer (1024).
        weight_decay: L2 coefficient on all kernels.
        kernel_initializer: Keras' default Glorot uniform.
    """
    num_classes, input_shape = _check_common(num_classes, input_shape, 10, weight_decay, kernel_initializer)
    dense_units = blocks.check_positive_int(dense_units, "dense_units")
    common = dict(weight_decay=weight_decay, initializer=kernel_initializer)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv(inputs, 32, "conv1", **common)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = _conv(x, 64, "conv2", **common)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    backbone = keras.Model(inputs, x, name="paper4_model1_backbone")
    head = Head(num_classes, pooling="flatten", hidden=(Hidden(dense_units, fused=True),),
                kernel_initializer=kernel_initializer, weight_decay=weight_decay)
    return ImageClassifier(backbone, head=head, name="paper4_model1")


@register_model(
    paper="paper4", input_shape=(64, 64, 3), size_agnostic=False, paper_params=2_555_656,
    description="[conv-pool] x3 (32/64/128)-dense512-dropout0.5-dense200", small={"dense_units": 32},
)
def build_model2(
    num_classes=200,
    input_shape=(64, 64, 3),
    dense_units=512,
    dropout=0.5,
    kernel_initializer="glorot_uniform",
):
    """paper4 Model 2 (section IV.B, Fig. 6): 2,555,656 parameters.

    [conv 3x3 valid ReLU - max pool 2] x 3 with 32 / 64 / 128 filters - flatten -
    dense 512 ReLU - dropout 0.5 - dense 200 (softmax in the paper). No weight
    decay is mentioned for this model.

    Args:
        num_classes: number of output logits.
        input_shape: fixed ``(height, width, channels)``; 64x64 in the paper.
        dense_units: width of the hidden dense layer (512).
        dropout: dropout rate before the classifier (0.5).
        kernel_initializer: Keras' default Glorot uniform.
    """
    num_classes, input_shape = _check_common(num_classes, input_shape, 22, 0.0, kernel_initializer)
    dense_units = blocks.check_positive_int(dense_units, "dense_units")
    blocks.check_rate(dropout, "dropout")

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, filters in enumerate((32, 64, 128), start=1):
        x = _conv(x, filters, f"conv{i}", initializer=kernel_initializer)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    backbone = keras.Model(inputs, x, name="paper4_model2_backbone")
    head = Head(num_classes, pooling="flatten", hidden=(Hidden(dense_units, fused=True),), dropout=dropout,
                kernel_initializer=kernel_initializer)
    return ImageClassifier(backbone, head=head, name="paper4_model2")


@register_model(
    paper="paper4", input_shape=(64, 64, 3), size_agnostic=False, paper_params=140_382_728,
    description="6 conv-BN-ReLU (64..512, same) with 3 pools, dense4096-BN, dense1024-BN, dense200",
    small={"dense_units": (64, 32)},
)
def build_model3(
    num_classes=200,
    input_shape=(64, 64, 3),
    dense_units=(4096, 1024),
    kernel_initializer="glorot_uniform",
):
    """paper4 Model 3, "Deep Neural Network 1" (section IV.C, Fig. 7): 140,382,728 parameters.

    conv 64 - BN - ReLU - conv 64 - BN - ReLU - max pool - conv 128 - BN - ReLU -
    conv 128 - BN - ReLU - max pool - conv 256 - BN - ReLU - conv 512 - BN - ReLU -
    max pool - flatten (32768) - dense 4096 - BN - ReLU - dense 1024 - BN - ReLU -
    dense 200 (softmax in the paper). Convs are 3x3 "same" with bias; no dropout.

    134M of the parameters are the first dense layer; ``dense_units`` makes a
    small variant (used by the save / reload tests).

    Args:
        num_classes: number of output logits.
        input_shape: fixed ``(height, width, channels)``; 64x64 in the paper.
        dense_units: widths of the two hidden dense layers.
        kernel_initializer: Keras' default Glorot uniform.
    """
    num_classes, input_shape = _check_common(num_classes, input_shape, 8, 0.0, kernel_initializer)
    dense_units = blocks.check_positive_ints(dense_units, "dense_units", length=2)
    conv_bn_relu = dict(use_bias=True, kernel_initializer=kernel_initializer)

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    stages = ((64, 64), (128, 128), (256, 512))
    for stage, stage_filters in enumerate(stages, start=1):
        for i, filters in enumerate(stage_filters, start=1):
            x = blocks.apply_conv_bn_act(x, filters, 3, name=f"block{stage}_conv{i}", **conv_bn_relu)
        x = layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
    backbone = keras.Model(inputs, x, name="paper4_model3_backbone")
    hidden = tuple(Hidden(units, batch_norm=True) for units in dense_units)
    head = Head(num_classes, pooling="flatten", hidden=hidden, kernel_initializer=kernel_initializer)
    return ImageClassifier(backbone, head=head, name="paper4_model3")


@register_model(
    paper="paper4", input_shape=(64, 64, 3), size_agnostic=False, paper_params=8_866_376,
    description="[conv-BN-ReLU-pool] x3 (64/128/256), dense512-BN-ReLU-dropout0.5, dense200",
    small={"dense_units": 32},
)
def build_model4(
    num_classes=200,
    input_shape=(64, 64, 3),
    dense_units=512,
    dropout=0.5,
    kernel_initializer="glorot_uniform",
):
    """paper4 Model 4, "Deep Neural Network 2" (section IV.D, Fig. 8): 8,866,376 parameters.

    [conv 3x3 same - BN - ReLU - max pool 2] x 3 with 64 / 128 / 256 filters -
    flatten (16384) - dense 512 - BN - ReLU - dropout 0.5 - dense 200 (softmax
    in the paper).

    Args:
        num_classes: number of output logits.
        input_shape: fixed ``(height, width, channels)``; 64x64 in the paper.
        dense_units: width of the hidden dense layer (512).
        dropout: dropout rate after the hidden dense layer (0.5).
        kernel_initializer: Keras' default Glorot uniform.
    """
    num_classes, input_shape = _check_common(num_classes, input_shape, 8, 0.0, kernel_initializer)
    dense_units = blocks.check_positive_int(dense_units, "dense_units")
    blocks.check_rate(dropout, "dropout")

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for stage, filters in enumerate((64, 128, 256), start=1):
        x = blocks.apply_conv_bn_act(
            x, filters, 3, use_bias=True, kernel_initializer=kernel_initializer, name=f"block{stage}_conv1"
        )
        x = layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
    backbone = keras.Model(inputs, x, name="paper4_model4_backbone")
    head = Head(num_classes, pooling="flatten", hidden=(Hidden(dense_units, batch_norm=True, dropout=dropout),),
                kernel_initializer=kernel_initializer)
    return ImageClassifier(backbone, head=head, name="paper4_model4")


IMAGENET_WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_WEIGHTS_FILE
IMAGENET_WEIGHTS_MD5 = "4d473c1dd8becc155b73f8504c6f6626"  # keras.applications.resnet's hash of the file


def imagenet_weights():
    """The path of ResNet50's ImageNet weights (no top), downloaded once into
    ``~/.keras/models`` (``$KERAS_HOME/models``) from ``$TINY_KERAS_RESNET50_WEIGHTS_URL``
    or Keras's address and checked against Keras's MD5; a failure raises
    :class:`tiny_keras.download.DownloadError` saying what to do instead."""
    url = os.environ.get("TINY_KERAS_RESNET50_WEIGHTS_URL") or IMAGENET_WEIGHTS_URL
    cache = os.path.join(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"), "models")
    target = os.path.join(cache, IMAGENET_WEIGHTS_FILE)
    try:
        return download.fetch(url, target, IMAGENET_WEIGHTS_MD5, algorithm="md5")
    except download.DownloadError as error:
        raise download.DownloadError(
            f"Could not get ResNet50's ImageNet weights from {url}: {error}. Instead: run again when "
            f"{download.host(url)} can be reached (or set $TINY_KERAS_RESNET50_WEIGHTS_URL to a mirror); or "
            f"get {IMAGENET_WEIGHTS_FILE} yourself and pass --weights PATH (weights=PATH in Python), or put it "
            f"in {cache}/; or use --weights none (weights=None) for random initial weights.") from None


@register_model(
    paper="paper4", input_shape=(64, 64, 3), size_agnostic=True, paper_params=25_890_888,
    description="Keras ResNet50 (ImageNet weights, optionally frozen) + GAP + dense1024 + dense200",
    offline={"weights": None}, small={"dense_units": 32},
)
def build_model5(
    num_classes=200,
    input_shape=(64, 64, 3),
    weights="imagenet",
    freeze_backbone=False,
    dense_units=1024,
    kernel_initializer="glorot_uniform",
):
    """paper4 Model 5 (section IV.E): ResNet50 transfer, 25,890,888 parameters.

    ``keras.applications.ResNet50(include_top=False)`` (23,587,712 parameters),
    global average pooling, dense 1024 ReLU, dense 200 (softmax in the paper;
    logits here). The paper fine-tunes from ImageNet weights; the head layers
    are our reading of "ResNet50 + dense layers" that matches the count
    exactly.

    The backbone is nested as one layer named ``"resnet50"``, so
    ``model.get_layer("resnet50")`` gives it. ``freeze_backbone=True`` sets it
    non-trainable: its BN layers then also run in inference mode (Keras 3), the
    usual way to train only a new head. Input pixels go in as the data pipeline
    gives them: with ImageNet weights, apply
    ``keras.applications.resnet50.preprocess_input`` (caffe-style BGR mean
    subtraction on 0-255 pixels) there; the paper only says it rescaled pixels.

    Args:
        num_classes: number of output logits.
        input_shape: ``(height, width, channels)``; ``None`` sizes allowed
            (at least 32 px).
        weights: ``"imagenet"`` (downloaded once by Keras into
            ``~/.keras/models``), ``None`` (random initialisation) or the path
            of a weights file for ``ResNet50(include_top=False)``: the Keras
            applications file ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``
            or a ``.weights.h5`` saved from such a backbone.
        freeze_backbone: make the backbone non-trainable.
        dense_units: width of the hidden dense layer (1024).
        kernel_initializer: initialiser of the two dense layers.

    Raises:
        ValueError: bad arguments, or a weights path that does not exist.
        tiny_keras.download.DownloadError: ``weights="imagenet"`` could not be
            downloaded (a ``RuntimeError``).
    """
    num_classes = blocks.check_num_classes(num_classes)
    input_shape = blocks.check_input_shape(input_shape, min_size=32)
    if weights is not None and weights != "imagenet":
        if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
            raise ValueError(
                '`weights` must be "imagenet", None, or the path of an existing weights file. '
                f"Received: {weights=}"
            )
        weights = os.fspath(weights)
    if not isinstance(freeze_backbone, bool):
        raise ValueError(f"`freeze_backbone` must be a bool. Received: {freeze_backbone=}")
    dense_units = blocks.check_positive_int(dense_units, "dense_units")
    blocks.check_initializer(kernel_initializer)

    if weights == "imagenet":
        weights = imagenet_weights()
    # Keras names this model "resnet50".
    backbone = keras.applications.ResNet50(include_top=False, weights=weights, input_shape=input_shape)
    backbone.trainable = not freeze_backbone

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = backbone(inputs)
    features = keras.Model(inputs, x, name="paper4_model5_backbone")
    head = Head(num_classes, pooling="avg", hidden=(Hidden(dense_units, fused=True),),
                kernel_initializer=kernel_initializer)
    return ImageClassifier(features, head=head, name="paper4_model5")
