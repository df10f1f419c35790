"""paper2's object localiser: a convolutional encoder and an LSTM box decoder.

Paper text: ``../shared/papers/paper2_resnet_inception_resnet_vgg.txt`` section 3.5 (the
model and its loss, Eq. 1, Fig. 5) and section 4.8 (trained on goldfish; pictures only,
Fig. 15). It is built on TensorBox (Stewart et al. 2016, "End-to-end people detection in
crowded scenes", [15]/[16] in paper2): "the localization network first encodes an image
into a block of high level features using a convolutional architecture, then decodes
that representation into a set of bounding boxes. At each step, LSTM gives a new bounding
box and a confidence ... until LSTM is unable to find another box with a confidence
greater than the threshold."

The matching loss, the metrics and the training loop are in ``tiny_keras.localization``.
"""
import keras
from keras import layers

from tiny_keras.models import blocks
from tiny_keras.models.classifier import ImageClassifier


# Columns of the model's output, per decoder step: the box, then the confidence logit.
BOX_COLUMNS = ("cx", "cy", "w", "h")
OUTPUT_COLUMNS = BOX_COLUMNS + ("confidence_logit",)
SMALL_ENCODER_FILTERS = (32, 64, 128, 128)


def apply_small_encoder(x, filters=SMALL_ENCODER_FILTERS, name="small_encoder"):
    """A CPU-sized encoder: per stage a 3x3 conv-BN-ReLU and a 2x2 max pool (the last
    stage keeps its resolution), 64 px -> 8x8x``filters[-1]``. About 0.1 GFLOP per 64 px
    image, so a class's 400 training images take seconds an epoch on 2 CPU cores."""
    for stage, stage_filters in enumerate(filters, start=1):
        x = blocks.apply_conv_bn_act(x, stage_filters, 3, kernel_initializer="he_normal",
                                     name=f"{name}_stage{stage}")
        if stage < len(filters):
            x = layers.MaxPooling2D(2, name=f"{name}_stage{stage}_pool")(x)
    return x


def build_localizer(
    max_boxes=5,
    input_shape=(64, 64, 3),
    encoder="small",
    encoder_options=None,
    code_channels=32,
    code_units=256,
    lstm_units=256,
):
    """The localiser of paper2 section 3.5: encoder, then an LSTM emitting boxes.

    Layout (Keras functional API)::

        image (0..255) -> rescale to [-1, 1] -> encoder -> feature maps [h, w, c]
          -> 1x1 conv to ``code_channels`` -> flatten -> dense ``code_units`` (ReLU)
          -> repeated ``max_boxes`` times -> LSTM ``lstm_units`` (one step per box)
          -> per step: dense 4 (sigmoid: cx, cy, w, h in [0, 1] of the image)
                       dense 1 (the confidence logit)
          -> "detections" [batch, max_boxes, 5], float32

    From the text: a convolutional encoder, an LSTM decoder emitting one box and one
    confidence per step, boxes as position, width and height (section 3.5).

    Reconstruction choices (ours; the paper gives none of these):

    - One decoder for the whole image. TensorBox runs its LSTM once per cell of a
      15x20 grid of 640x480 images; a 64 px image with one object needs no grid, so the
      flattened feature maps (which keep where things are, unlike global pooling) are
      fed to the LSTM at every step, as TensorBox feeds each cell's features.
    - Boxes are ``(cx, cy, w, h)`` as fractions of the image, through a sigmoid, so a
      box never leaves [0, 1]; TensorBox regresses pixel offsets from the cell centre.
    - ``encoder``: a classifier network's feature maps (through the registry, any
      registered model by name; its default is paper 2's ResNet-18), or ``"small"``, a
      4-stage conv encoder that trains on a CPU (:func:`apply_small_encoder`). TensorBox
      used GoogLeNet; the paper does not say which it used.
    - The input is scaled from 0..255 to [-1, 1] inside the model, so it takes the
      dataset's uint8 images as they are.

    Args:
        max_boxes: decoder steps (boxes emitted, accepted or not); TensorBox's default 5.
        input_shape: ``(height, width, channels)``; boxes are relative to it.
        encoder: ``"small"``, or a registered classifier (a ``tiny_keras.models.ImageClassifier``)
            whose backbone's feature maps (the input of its head) are used. ``models.build("paper2_localizer",
            encoder=NAME, encoder_options=...)`` builds the registered model ``NAME``
            for it.
        encoder_options: for ``"small"``, ``{"filters": (...)}``.
        code_channels: channels of the 1x1 conv that shrinks the feature maps.
        code_units: the dense code the LSTM reads at every step.
        lstm_units: the LSTM's state size.

    Returns:
        A ``keras.Model`` mapping images to ``[batch, max_boxes, 5]`` detections:
        columns :data:`OUTPUT_COLUMNS`. ``sigmoid(column 4)`` is the confidence.

    Example::

        model = build_localizer(max_boxes=3, encoder="small")
        detections = model(np.zeros((1, 64, 64, 3), "uint8"))   # [1, 3, 5]
    """
    max_boxes = blocks.check_positive_int(max_boxes, "max_boxes")
    input_shape = blocks.check_input_shape(input_shape, min_size=16, allow_none=False)
    for value, arg_name in ((code_channels, "code_channels"), (code_units, "code_units"), (lstm_units, "lstm_units")):
        blocks.check_positive_int(value, arg_name)
    if encoder != "small" and not isinstance(encoder, ImageClassifier):
        raise ValueError(
            "`encoder` must be 'small' or a classifier (an ImageClassifier; the registry's "
            f"models.build('paper2_localizer', encoder=NAME) builds one by name). Received: {encoder=}"
        )

    # === Functional Model ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    if encoder == "small":
        filters = blocks.check_positive_ints((encoder_options or {}).get("filters", SMALL_ENCODER_FILTERS), "filters")
        unknown = set(encoder_options or {}) - {"filters"}
        if unknown:
            raise ValueError(f"The small encoder takes only `filters`. Received: {encoder_options=}")
        features = apply_small_encoder(x, filters)
    else:  # the network's feature maps: the input of its head
        backbone = encoder.backbone  # its feature maps [h, w, c], the input of its head
        features = keras.Model(backbone.inputs, backbone.outputs[0], name=f"{encoder.network.name}_features")(x)
    code = blocks.apply_conv_bn_act(features, code_channels, 1, name="code")
    code = layers.Flatten(name="code_flatten")(code)
    code = layers.Dense(code_units, activation="relu", name="code_dense")(code)
    steps = layers.RepeatVector(max_boxes, name="steps")(code)
    hidden = layers.LSTM(lstm_units, return_sequences=True, name="decoder_lstm")(steps)
    boxes = layers.Dense(4, activation="sigmoid", name="boxes")(hidden)
    confidence = layers.Dense(1, name="confidence_logit")(hidden)
    detections = layers.Concatenate(name="detections_concat")([boxes, confidence])
    detections = layers.Activation("linear", dtype="float32", name="detections")(detections)
    return keras.Model(inputs, detections, name="paper2_localizer")
