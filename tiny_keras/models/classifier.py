"""``ImageClassifier``: a backbone, the head it owns, and everything a trained model needs around it.

The model every run trains, evaluates, ensembles and exports (in the manner of keras-hub's
``ImageClassifier``: the backbone returns features, the classifier builds the head)::

    images (uint8 or float, 0..255) -> augmenter -> preprocessor -> crop -> resize
        -> backbone -> feature maps [h, w, c] -> head -> logits
        (augmenter: training only)

Its parts are attributes, so nothing has to find them by walking the layer graph or by
layer names:

- ``augmenter``: the training augmentation (any ``tiny_keras.augment`` transform in an
  ``AugmentationLayer``), drawn per image from the layer's seed generator on the device;
  identity at inference. ``None`` for none.
- ``preprocessor``: the fitted preprocessing (mean image, featurewise statistics, the
  ImageNet input convention), a layer (a ``keras.Sequential``) or ``None``; it always runs.
- ``crop``: random ``crop`` x ``crop`` crops in training, the centre crop at inference.
- ``resize``: resize to ``image_size`` (a progressive-resizing stage).
- ``backbone``: a functional ``keras.Model`` from images to the last feature maps
  ``[h, w, c]`` (``feature_maps``).
- ``head``: the head's named metadata, a :class:`Head` (pooling, hidden dense stack,
  dropout, dense or 1x1-conv classifier, initialiser, weight decay); its layers are built by
  the classifier and held as:

  - ``pooler``: ``GlobalAveragePooling2D`` (``"avg_pool"``) or ``Flatten`` (``"flatten"``);
  - ``hidden``: the hidden dense blocks' layers in order (``fc1_dense``, ``fc1_bn``,
    ``fc1_relu``, ``fc1_dropout``, ``fc2_...``; paper 4's ``fc1`` is one ``Dense`` with its
    ReLU), empty for none;
  - ``output_dropout``: the ``Dropout`` before the classifier (``"classifier_dropout"``) or
    ``None``;
  - ``classifier``: the layer that scores the classes (keras-hub's ``output_dense``): a
    ``Dense(num_classes)``, or for paper 3's VGG models a 1x1 ``Conv2D(num_classes)``
    applied to the feature maps *before* ``pooler`` (Network-in-Network style);
  - ``logits_layer``: the float32 cast named ``"logits"`` (mixed precision), or ``None``.

- ``network``: backbone and head as one functional model, the backbone's input to the
  logits, in one flat graph (the registered network of earlier versions, whose weights
  files keep their layout).
- ``feature_maps``: the backbone's output, and ``penultimate``: the classifier's input,
  both tensors of ``network``'s graph (``backbone_probe`` makes models of them). The
  penultimate features are the classifier layer's input, for every head: the last hidden
  dense block's output (paper 5's 400-d FC, paper 4's dense 1024/512, paper 2's VGG FC
  2048), or the pooled features where there is no hidden layer (ResNets, InceptionV3-lite,
  paper 5's baselines), or, for paper 3's 1x1-conv classifier, the feature maps themselves.

The host pipeline only gathers and batches uint8 images; the model casts them. A
training stage builds one around the previous stage's backbone, head and preprocessor
with :meth:`with_stage`.

A saved model whose ``backbone`` is a whole network ending in logits (files written before
the backbone and head were split) loads as the same model: :meth:`ImageClassifier.from_config`
splits that network (see :func:`split_network`), and its weights file has the layout of
``network``.
"""
import dataclasses

import keras

from tiny_keras import augment as augment_lib
from tiny_keras import backend
from tiny_keras.models import blocks

POOLINGS = ("avg", "flatten")


@dataclasses.dataclass(frozen=True)
class Hidden:
    """One hidden dense block of a head: ``Dense(units)`` (``fc{i}_dense``), optional
    ``BatchNormalization`` (``fc{i}_bn``), the activation (``fc{i}_relu`` / ``fc{i}_prelu``),
    optional ``Dropout`` (``fc{i}_dropout``). ``fused``: one ``Dense(units, activation)``
    named ``fc{i}`` instead (paper 4's Keras summaries), no BN or dropout."""

    units: int
    activation: str = "relu"
    use_bias: bool = True
    batch_norm: bool = False
    dropout: float = 0.0
    fused: bool = False


@dataclasses.dataclass(frozen=True)
class Head:
    """A classification head as named metadata; ``ImageClassifier`` builds its layers.

    Attributes:
        num_classes: logits.
        pooling: ``"avg"`` (global average pooling, any input size) or ``"flatten"``.
        hidden: the hidden dense blocks (:class:`Hidden`), in order.
        dropout: rate of the dropout on the classifier's input (0: none).
        conv_classifier: score the classes with a 1x1 ``Conv2D`` on the feature maps, then
            pool (paper 3's VGG models), instead of a ``Dense`` after the pooling.
        kernel_initializer: of every kernel in the head (``blocks.make_initializer``).
        weight_decay: L2 coefficient on every kernel in the head (``blocks``).
        hidden_weight_decay: on the hidden blocks' kernels, if it differs (paper 4's
            model 5: none there; None: ``weight_decay``).
        float32_logits: end in the float32 ``logits`` cast (every registered model).
        dtype: the dtype policy of the head's layers (``"mixed_bfloat16"`` ...); None: the
            global policy when they are built. A classifier's config records its head's.
    """

    num_classes: int
    pooling: str = "avg"
    hidden: tuple = ()
    dropout: float = 0.0
    conv_classifier: bool = False
    kernel_initializer: object = "glorot_uniform"
    weight_decay: float = 0.0
    hidden_weight_decay: object = None
    float32_logits: bool = True
    dtype: object = None

    def __post_init__(self):
        blocks.check_num_classes(self.num_classes)
        if self.pooling not in POOLINGS:
            raise ValueError(f"Head pooling must be one of {POOLINGS}. Received: pooling={self.pooling!r}")
        hidden = tuple(h if isinstance(h, Hidden) else Hidden(**h) for h in self.hidden)
        object.__setattr__(self, "hidden", hidden)
        if self.conv_classifier and (hidden or self.pooling != "avg"):
            raise ValueError("A 1x1-conv classifier takes global average pooling and no hidden layers. "
                             f"Received: {self.pooling=}, {self.hidden=}")
        blocks.check_rate(self.dropout, "dropout")
        blocks.check_non_negative(self.weight_decay, "weight_decay")

    def get_config(self):
        config = dataclasses.asdict(self)
        config["hidden"] = [dataclasses.asdict(h) for h in self.hidden]
        if not isinstance(self.kernel_initializer, (str, dict)):
            config["kernel_initializer"] = keras.initializers.serialize(self.kernel_initializer)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def build_layers(self):
        """The head's layers, new, in the order they run (and are created: the dropout
        seeds are drawn in that order)."""
        init, dtype = self.kernel_initializer, self.dtype

        def dense(units, name, weight_decay, activation=None, use_bias=True):
            return keras.layers.Dense(units, activation=activation, use_bias=use_bias,
                                      kernel_initializer=blocks.make_initializer(init),
                                      kernel_regularizer=blocks.l2_regularizer(weight_decay), name=name, dtype=dtype)

        if self.conv_classifier:
            classifier = keras.layers.Conv2D(
                self.num_classes, 1, padding="valid", kernel_initializer=blocks.make_initializer(init),
                kernel_regularizer=blocks.l2_regularizer(self.weight_decay), name="classifier", dtype=dtype)
            pooler = keras.layers.GlobalAveragePooling2D(name="avg_pool", dtype=dtype)
            return _HeadLayers(pooler, [], None, classifier, self._logits_layer())
        pooler = (keras.layers.GlobalAveragePooling2D(name="avg_pool", dtype=dtype) if self.pooling == "avg"
                  else keras.layers.Flatten(name="flatten", dtype=dtype))
        hidden_decay = self.weight_decay if self.hidden_weight_decay is None else self.hidden_weight_decay
        hidden = []
        for i, spec in enumerate(self.hidden, start=1):
            if spec.fused:
                hidden.append(dense(spec.units, f"fc{i}", hidden_decay, spec.activation, spec.use_bias))
                continue
            hidden.append(dense(spec.units, f"fc{i}_dense", hidden_decay, use_bias=spec.use_bias))
            if spec.batch_norm:
                hidden.append(keras.layers.BatchNormalization(name=f"fc{i}_bn", dtype=dtype))
            hidden.append(_activation_layer(spec.activation, f"fc{i}", dtype))
            if spec.dropout:
                hidden.append(_dropout(spec.dropout, f"fc{i}_dropout", dtype))
        output_dropout = _dropout(self.dropout, "classifier_dropout", dtype) if self.dropout else None
        classifier = dense(self.num_classes, "classifier", self.weight_decay)
        return _HeadLayers(pooler, hidden, output_dropout, classifier, self._logits_layer())

    def _logits_layer(self):
        return keras.layers.Activation("linear", dtype="float32", name="logits") if self.float32_logits else None


def _activation_layer(activation, name, dtype):
    if activation == "relu":
        return keras.layers.ReLU(name=f"{name}_relu", dtype=dtype)
    if activation == "prelu":  # one slope per channel, as blocks.apply_activation
        return keras.layers.PReLU(shared_axes=None, name=f"{name}_prelu", dtype=dtype)
    return keras.layers.Activation(activation, name=f"{name}_act", dtype=dtype)


def _dropout(rate, name, dtype):
    layer = blocks.seeded_dropout(rate, name=name)  # its seed drawn as the builders draw it
    return layer if dtype is None else keras.layers.Dropout(rate, seed=layer.seed, name=name, dtype=dtype)


@dataclasses.dataclass
class _HeadLayers:
    pooler: object
    hidden: list
    output_dropout: object
    classifier: object
    logits_layer: object


def _apply_head(parts, features):
    """``(logits, penultimate)`` of the head ``parts`` on ``features``."""
    x = features
    if isinstance(parts.classifier, keras.layers.Conv2D):  # class maps, then their average
        penultimate = x
        x = parts.pooler(parts.classifier(x))
    else:
        x = parts.pooler(x)
        for layer in parts.hidden:
            x = layer(x)
        if parts.output_dropout is not None:
            x = parts.output_dropout(x)
        penultimate = x
        x = parts.classifier(x)
    if parts.logits_layer is not None:
        x = parts.logits_layer(x)
    return x, penultimate


def split_network(network):
    """``(backbone, head, layers)`` of a whole ``network`` (a functional model from images to
    logits, as registered networks were before the split, and as files saved then hold),
    its layers shared, not copied.

    The split is structural: the head starts at the first layer whose output is a vector
    (rank 2: the global pooling or the flatten), or at the 1x1 ``Conv2D`` without activation
    that feeds it, if there is one with as many filters as there are logits (paper 3's
    class maps); the backbone ends at that layer's input. The head's layers after it are
    read by their types: ``Dense`` blocks with their ``BatchNormalization``, activation and
    ``Dropout``, the last ``Dense`` (the classifier), a ``Dropout`` just before it, and the
    float32 ``logits`` cast."""
    layers = [layer for layer in network.layers if not isinstance(layer, keras.layers.InputLayer)]
    vector = [i for i, layer in enumerate(layers) if len(layer.output.shape) == 2]
    if not vector:
        raise ValueError(f"{network.name}: no layer turns the feature maps into a vector, so no head to split off")
    start = vector[0]
    num_classes = network.outputs[0].shape[-1]
    before = layers[start - 1] if start else None
    conv_classifier = (isinstance(before, keras.layers.Conv2D) and tuple(before.kernel_size) == (1, 1)
                       and before.filters == num_classes and before.get_config()["activation"] == "linear"
                       and isinstance(layers[start], keras.layers.GlobalAveragePooling2D))
    if conv_classifier:
        start -= 1
    backbone = keras.Model(network.inputs, layers[start].input, name=f"{network.name}_backbone")
    rest = layers[start:]
    logits_layer = None
    if isinstance(rest[-1], keras.layers.Activation) and rest[-1].get_config()["activation"] == "linear":
        logits_layer, rest = rest[-1], rest[:-1]
    if conv_classifier:
        classifier, pooler, rest = rest[0], rest[1], rest[2:]
    else:
        pooler, classifier, rest = rest[0], rest[-1], rest[1:-1]
    if not isinstance(classifier, (keras.layers.Dense, keras.layers.Conv2D)) or not isinstance(
            pooler, (keras.layers.GlobalAveragePooling2D, keras.layers.Flatten)) or (rest and conv_classifier):
        raise ValueError(f"{network.name}: its head is not pooling or flatten, dense blocks and a classifier")
    # A Dropout belongs to the hidden block before it (Dense, BN, activation, Dropout), except
    # after a one-layer (fused) block or none: then it is the classifier's input dropout.
    hidden, specs, decays, output_dropout = [], [], [], None
    for layer in rest:
        if output_dropout is not None:
            raise ValueError(f"{network.name}: {layer.name} follows the dropout before its classifier")
        if isinstance(layer, keras.layers.Dense):
            activation = layer.get_config()["activation"]
            fused = activation != "linear"
            specs.append(dict(units=layer.units, activation=activation if fused else "relu",
                              use_bias=layer.use_bias, fused=fused))
            decays.append(_weight_decay(layer))
        elif isinstance(layer, keras.layers.Dropout) and (not specs or specs[-1]["fused"] or "dropout" in specs[-1]):
            output_dropout = layer
            continue
        elif not specs or specs[-1]["fused"]:
            raise ValueError(f"{network.name}: unexpected layer {layer.name} ({type(layer).__name__}) in its head")
        elif isinstance(layer, keras.layers.BatchNormalization):
            specs[-1]["batch_norm"] = True
        elif isinstance(layer, keras.layers.ReLU):
            specs[-1]["activation"] = "relu"
        elif isinstance(layer, keras.layers.PReLU):
            specs[-1]["activation"] = "prelu"
        elif isinstance(layer, keras.layers.Activation):
            specs[-1]["activation"] = layer.get_config()["activation"]
        elif isinstance(layer, keras.layers.Dropout):
            specs[-1]["dropout"] = layer.rate
        else:
            raise ValueError(f"{network.name}: unexpected layer {layer.name} ({type(layer).__name__}) in its head")
        hidden.append(layer)
    weight_decay = _weight_decay(classifier)
    head = Head(num_classes=num_classes, pooling="avg" if isinstance(pooler, keras.layers.GlobalAveragePooling2D)
                else "flatten", hidden=tuple(specs), dropout=output_dropout.rate if output_dropout else 0.0,
                conv_classifier=conv_classifier,
                kernel_initializer=keras.initializers.serialize(classifier.kernel_initializer),
                weight_decay=weight_decay,
                hidden_weight_decay=None if all(d == weight_decay for d in decays) else decays[0],
                float32_logits=logits_layer is not None, dtype=classifier.dtype_policy.name)
    return backbone, head, _HeadLayers(pooler, hidden, output_dropout, classifier, logits_layer)


def _weight_decay(layer):
    regularizer = layer.kernel_regularizer
    return 2.0 * float(regularizer.l2) if regularizer is not None else 0.0


@keras.saving.register_keras_serializable(package="tiny_keras")
class ImageClassifier(keras.Model):
    """Augmentation, preprocessing, crop, resize, a backbone and its head as one Keras model.

    Args:
      backbone: the backbone (a functional ``keras.Model`` from images to feature maps
        ``[h, w, c]``) with ``head``; or a model of ``tiny_keras.models.build`` (an
        ``ImageClassifier``), whose backbone, head and head layers this one shares; or a
        whole network ending in logits, split by :func:`split_network` (its layers shared).
      preprocessor: a layer (or list of layers, made a ``keras.Sequential``) applied to
        0..255 float32 images in training and inference, or ``None``.
      augmenter: a ``tiny_keras.augment`` transform (or its serialized dict, or an
        ``AugmentationLayer``) applied only with ``training=True``, or ``None``.
      crop: crop size (int) or ``None``: random crops in training, the centre crop at
        inference.
      image_size: resize to this size after the crop, or ``None``.
      seed: seeds the augmentation's and the crop's draws (``None``: unseeded).
      head: (keyword only) a :class:`Head` (or its config dict) when ``backbone`` is a
        backbone; the classifier builds its layers.

    Example::

        network = models.build("paper5_cnn8", num_classes=200)   # an ImageClassifier
        model = ImageClassifier(network, preprocessor=[MeanImageSubtraction(mean)],
                                augmenter=Compose([RandomFlip(), GaussianNoise(1.0)]), crop=56, seed=0)
        model.compile(...)
        model.fit(uint8_images, labels)          # augments on the device
        model.predict(uint8_images)              # centre crop, no augmentation
    """

    def __init__(self, backbone, preprocessor=None, augmenter=None, crop=None, image_size=None, seed=None, *,
                 head=None, **kwargs):
        if isinstance(backbone, ImageClassifier):
            if head is not None:
                raise ValueError(f"A built model brings its own head; pass no head with it. Received: {head=}")
            network_name, head, parts = backbone.network.name, backbone.head, backbone.head_layers
            backbone = backbone.backbone
        elif head is None:
            network_name = backbone.name
            backbone, head, parts = split_network(backbone)
        else:
            head = head if isinstance(head, Head) else Head.from_config(head)
            network_name = backbone.name.removesuffix("_backbone")
            parts = head.build_layers()
        kwargs.setdefault("name", f"{network_name}_classifier")
        if isinstance(preprocessor, (list, tuple)):
            preprocessor = keras.Sequential(list(preprocessor), name="preprocessor") if preprocessor else None
        if augmenter is not None and not isinstance(augmenter, augment_lib.AugmentationLayer):
            augmenter = augment_lib.AugmentationLayer(augmenter, seed=seed, name="augmenter")
        if crop is not None and (not isinstance(crop, int) or crop < 1):
            raise ValueError(f"crop must be a positive int or None. Received: {crop=}")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None. Received: {image_size=}")
        crop_seed = None if seed is None else seed + 2**20  # a stream of its own
        # === Layers ===
        # Backbone and head in one flat graph (the head's layers built on the backbone's
        # output shape, known for fixed-size networks): the registered network. Tracked
        # first, so that the seed generators come in the order of files saved before the
        # split, where it was the backbone (``_all_seed_generators``).
        logits, penultimate = _apply_head(parts, backbone.outputs[0])
        self.network = keras.Model(backbone.inputs, logits, name=network_name)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.augmenter = augmenter
        self.crop = (augment_lib.AugmentationLayer(augment_lib.RandomCrop(crop), seed=crop_seed, name="crop")
                     if crop else None)
        self.resize = (augment_lib.AugmentationLayer(augment_lib.Resize(image_size), name=f"resize_{image_size}")
                       if image_size else None)
        self.pooler = parts.pooler
        self.hidden = list(parts.hidden)
        self.output_dropout = parts.output_dropout
        self.classifier = parts.classifier
        self.logits_layer = parts.logits_layer
        # === Functional model === (uint8 or float images; cast to float32 inside the model)
        # A bare network (no layers before the backbone) takes the backbone's input size.
        shape = (None, None, 3) if self.front_layers else tuple(backbone.input_shape[1:])
        inputs = keras.Input(shape, name="images")
        x = inputs
        for layer in self.front_layers:
            x = layer(x)
        super().__init__(inputs=inputs, outputs=self.network(x), **kwargs)
        # === Config ===
        self.head = head
        self.crop_size = crop
        self.image_size = image_size
        self.seed = seed
        self.feature_maps = backbone.outputs[0]
        self.penultimate = penultimate

    def __setattr__(self, name, value):
        # On PyTorch a Keras layer is a torch.nn.Module, which refuses a sub-module before
        # Module.__init__ (run by super().__init__, after the layers above are set). Until
        # then a layer is tracked by Keras, in the same order as on the other backends (the
        # order of the seed states saved below), and kept as a plain attribute; the
        # functional graph holds it for PyTorch's purposes (its variables) as it does there.
        if isinstance(value, keras.layers.Layer) and "_modules" not in self.__dict__ \
                and backend.is_torch():
            if not hasattr(self, "_tracker"):
                self._initialize_tracker()
            object.__setattr__(self, name, self._tracker.track(value))
            return
        super().__setattr__(name, value)

    # -- the forward pass, in parts ----------------------------------------------------------------
    @property
    def front_layers(self):
        """The layers before the backbone, in order: augmenter, preprocessor, crop, resize
        (those present)."""
        return [layer for layer in (self.augmenter, self.preprocessor, self.crop, self.resize) if layer is not None]

    def prepare(self, images, training=False):
        """The backbone's input for 0..255 ``images``: augmentation (training only),
        preprocessing, crop (random in training, centre otherwise) and resize."""
        x = keras.ops.cast(images, "float32")
        for layer in self.front_layers:
            x = layer(x, training=training)
        return x

    def get_layer(self, name=None, index=None):
        """A layer of this model (``index``, or ``name``), or by ``name`` a layer of
        ``network`` (the backbone's and the head's: ``get_layer("fc1_dense")``)."""
        if index is not None or name in {layer.name for layer in self.layers}:
            return super().get_layer(name, index)
        return self.network.get_layer(name)

    # -- the head ------------------------------------------------------------------------------
    @property
    def head_layers(self):
        """The head's layers (pooler, hidden, output_dropout, classifier, logits_layer)."""
        return _HeadLayers(self.pooler, self.hidden, self.output_dropout, self.classifier, self.logits_layer)

    def backbone_probe(self, *outputs):
        """A model from the backbone's input to ``outputs``: ``"feature_maps"`` (the
        backbone's output, the head's input), ``"penultimate"`` (the classifier's input) or
        ``"logits"``."""
        tensors = {"feature_maps": self.feature_maps, "penultimate": self.penultimate,
                   "logits": self.network.outputs[0]}
        unknown = [o for o in outputs if o not in tensors]
        if unknown:
            raise ValueError(f"outputs must be among {sorted(tensors)}. Received: {unknown}")
        chosen = [tensors[o] for o in outputs]
        return keras.Model(self.network.inputs, chosen if len(chosen) > 1 else chosen[0],
                           name=f"{self.network.name}_probe")

    # -- stages and serialization -----------------------------------------------------------------
    def with_stage(self, augmenter=None, crop=None, image_size=None, seed=None):
        """A new classifier around this one's backbone and preprocessor (shared, not copied)
        with another stage's augmentation, crop and resolution."""
        return ImageClassifier(self, preprocessor=self.preprocessor, augmenter=augmenter, crop=crop,
                               image_size=image_size, seed=seed, name=f"{self.network.name}_classifier")

    # Keras saves layers' variables but not their seed generators' states (Dropout's and the
    # like): where those random streams stand, which a resumed run needs to draw what the
    # uninterrupted run would. The model saves them with its own variables.
    SEED_STATE = "seed_state_"

    def _all_seed_generators(self):
        """Every seed generator of the model's layers, in a fixed order."""
        return [generator for layer in self._flatten_layers(include_self=False, recursive=True)
                for generator in layer._seed_generators]

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, generator in enumerate(self._all_seed_generators()):
            store[f"{self.SEED_STATE}{i}"] = generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        super().load_own_variables({k: store[k] for k in keys if not k.startswith(self.SEED_STATE)})
        for i, generator in enumerate(self._all_seed_generators()):
            if f"{self.SEED_STATE}{i}" in keys:
                generator.state.assign(store[f"{self.SEED_STATE}{i}"])

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "backbone": serialize(self.backbone),
            "head": dataclasses.replace(self.head, dtype=self.classifier.dtype_policy.name).get_config(),
            "preprocessor": None if self.preprocessor is None else serialize(self.preprocessor),
            "augmenter": None if self.augmenter is None else serialize(self.augmenter),
            "crop": self.crop_size,
            "image_size": self.image_size,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        # A config without "head" (saved before the split) has the whole network as its
        # backbone: deserialized as it is and split by the constructor (split_network).
        config = dict(config)
        for key in ("backbone", "preprocessor", "augmenter"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


