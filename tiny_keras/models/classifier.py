"""``ImageClassifier``: a registered network with everything a trained model needs around it.

The model every run trains, evaluates, ensembles and exports (in the manner of keras-hub's
``ImageClassifier``)::

    images (uint8 or float, 0..255) -> augmenter -> preprocessor -> crop -> resize -> backbone -> logits
                                       (training)

Its parts are attributes, so nothing has to find them by walking the layer graph:

- ``augmenter``: the training augmentation (any ``tiny_keras.augment`` transform in an
  ``AugmentationLayer``), drawn per image from the layer's seed generator on the device;
  identity at inference. ``None`` for none.
- ``preprocessor``: the fitted preprocessing (mean image, featurewise statistics, the
  ImageNet input convention), a layer (a ``keras.Sequential``) or ``None``; it always runs.
- ``crop``: random ``crop`` x ``crop`` crops in training, the centre crop at inference.
- ``resize``: resize to ``image_size`` (a progressive-resizing stage).
- ``backbone``: the registered network (``tiny_keras.models.build``), images to logits.
  Its head starts at ``head_start`` (the layer that turns the last feature maps into a
  vector, one of :data:`HEAD_START_LAYERS`: :func:`head_start_layer`; the network up to
  it is :func:`feature_maps_model`) and ends with the Dense named
  :data:`CLASSIFIER_LAYER`; every registered builder keeps to those names.

The host pipeline only gathers and batches uint8 images; the model casts them. A
training stage builds one around the previous stage's ``backbone`` and ``preprocessor``
with :meth:`with_stage`.
"""
import keras

from tiny_keras import augment as augment_lib

# Every registered builder names the layer that turns feature maps into a vector (global
# pooling or flatten) one of these, and its final Dense "classifier".
HEAD_START_LAYERS = ("avg_pool", "flatten")
CLASSIFIER_LAYER = "classifier"


@keras.saving.register_keras_serializable(package="tiny_keras")
class ImageClassifier(keras.Model):
    """Augmentation, preprocessing, crop, resize and a network as one Keras model.

    Args:
      backbone: the network (a functional ``keras.Model`` returning logits).
      preprocessor: a layer (or list of layers, made a ``keras.Sequential``) applied to
        0..255 float32 images in training and inference, or ``None``.
      augmenter: a ``tiny_keras.augment`` transform (or its serialized dict, or an
        ``AugmentationLayer``) applied only with ``training=True``, or ``None``.
      crop: crop size (int) or ``None``: random crops in training, the centre crop at
        inference.
      image_size: resize to this size after the crop, or ``None``.
      seed: seeds the augmentation's and the crop's draws (``None``: unseeded).

    Example::

        network = models.build("paper5_cnn8", num_classes=200)
        model = ImageClassifier(network, preprocessor=[MeanImageSubtraction(mean)],
                                augmenter=Compose([RandomFlip(), GaussianNoise(1.0)]), crop=56, seed=0)
        model.compile(...)
        model.fit(uint8_images, labels)          # augments on the device
        model.predict(uint8_images)              # centre crop, no augmentation
    """

    def __init__(self, backbone, preprocessor=None, augmenter=None, crop=None, image_size=None, seed=None,
                 **kwargs):
        kwargs.setdefault("name", f"{backbone.name}_classifier")
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
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.augmenter = augmenter
        self.crop = (augment_lib.AugmentationLayer(augment_lib.RandomCrop(crop), seed=crop_seed, name="crop")
                     if crop else None)
        self.resize = (augment_lib.AugmentationLayer(augment_lib.Resize(image_size), name=f"resize_{image_size}")
                       if image_size else None)
        # === Functional model === (uint8 or float images; cast to float32 inside the model)
        inputs = keras.Input((None, None, 3), name="images")
        x = inputs
        for layer in self.front_layers:
            x = layer(x)
        super().__init__(inputs=inputs, outputs=self.backbone(x), **kwargs)
        # === Config ===
        self.crop_size = crop
        self.image_size = image_size
        self.seed = seed

    def __setattr__(self, name, value):
        # On PyTorch a Keras layer is a torch.nn.Module, which refuses a sub-module before
        # Module.__init__ (run by super().__init__, after the layers above are set). Until
        # then a layer is tracked by Keras, in the same order as on the other backends (the
        # order of the seed states saved below), and kept as a plain attribute; the
        # functional graph holds it for PyTorch's purposes (its variables) as it does there.
        if isinstance(value, keras.layers.Layer) and "_modules" not in self.__dict__ \
                and keras.backend.backend() == "torch":
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

    # -- the backbone's head ----------------------------------------------------------------------
    @property
    def head_start(self):
        """The backbone's layer that turns its last feature maps into a vector."""
        return head_start_layer(self.backbone)

    @property
    def classifier(self):
        """The backbone's final Dense (its input is the penultimate features)."""
        if not _has_layer(self.backbone, CLASSIFIER_LAYER):
            raise ValueError(f"{self.backbone.name}: no layer named {CLASSIFIER_LAYER!r}")
        return self.backbone.get_layer(CLASSIFIER_LAYER)

    def backbone_probe(self, *outputs):
        """A model from the backbone's input to ``outputs``: ``"feature_maps"`` (the last
        conv block, the head's input), ``"penultimate"`` (the classifier's input) or
        ``"logits"``."""
        tensors = {"feature_maps": lambda: self.head_start.input, "penultimate": lambda: self.classifier.input,
                   "logits": lambda: self.backbone.outputs[0]}
        unknown = [o for o in outputs if o not in tensors]
        if unknown:
            raise ValueError(f"outputs must be among {sorted(tensors)}. Received: {unknown}")
        chosen = [tensors[o]() for o in outputs]
        return keras.Model(self.backbone.inputs, chosen if len(chosen) > 1 else chosen[0],
                           name=f"{self.backbone.name}_probe")

    # -- stages and serialization -----------------------------------------------------------------
    def with_stage(self, augmenter=None, crop=None, image_size=None, seed=None):
        """A new classifier around this one's backbone and preprocessor (shared, not copied)
        with another stage's augmentation, crop and resolution."""
        return ImageClassifier(self.backbone, preprocessor=self.preprocessor, augmenter=augmenter, crop=crop,
                               image_size=image_size, seed=seed)

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
            "preprocessor": None if self.preprocessor is None else serialize(self.preprocessor),
            "augmenter": None if self.augmenter is None else serialize(self.augmenter),
            "crop": self.crop_size,
            "image_size": self.image_size,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "preprocessor", "augmenter"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def head_start_layer(network):
    """The layer of a registered ``network`` that turns its last feature maps into a vector:
    the one layer named one of :data:`HEAD_START_LAYERS`."""
    found = [name for name in HEAD_START_LAYERS if _has_layer(network, name)]
    if len(found) != 1:
        raise ValueError(f"{network.name}: expected one layer named one of {HEAD_START_LAYERS} "
                         f"(the start of its head), found {found}")
    return network.get_layer(found[0])


def feature_maps_model(network, name=None):
    """A model from a registered ``network``'s input to its last feature maps (its head's
    input, ``[h, w, c]``): the encoder of the network without its head."""
    return keras.Model(network.inputs, head_start_layer(network).input, name=name or f"{network.name}_features")


def _has_layer(model, name):
    try:
        model.get_layer(name)
    except ValueError:
        return False
    return True
