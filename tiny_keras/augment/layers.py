"""Keras layers over ``tiny_keras.augment``, so augmentation can run in a model (on a GPU)
and deterministic preprocessing travels with a saved ``.keras`` model.

- ``AugmentationLayer(transform, seed=None)``: any ``Transform`` (``Augmenter``,
  ``Compose([...])``, ``RandomCrop(56)``, ``CenterCrop(56)``, ``Resize(32)``, ...). Random
  transforms run only with ``training=True``, seeded by a ``keras.random.SeedGenerator``;
  otherwise the transform's evaluation behaviour runs (a random crop becomes the centre
  crop, deterministic steps always apply). The transform is stored in the layer config.
- ``Standardization``: ``ImageDataGenerator.standardize`` (rescale, samplewise and
  featurewise), with the featurewise mean and std as non-trainable weights.
- ``MeanImageSubtraction``: the mean training image as a non-trainable weight.
- ``augmenter_layers(augmenter)``: a fitted ``Augmenter`` as ``[AugmentationLayer,
  Standardization]``.

The statistics (``adapt``) and ``standardize`` are ``standardization``'s, shared with
``Augmenter`` and ``SubtractMeanImage``.

The transforms are written with ``keras.ops``; their random bits come from the backend's
stateless generator (``core``: Philox on TensorFlow, threefry on JAX, a counter hash on
PyTorch), so the layers run on all three. Inputs are cast to float32, computed there, and
returned in the layer's compute dtype (float16 under ``mixed_float16``); weights stay
float32.
"""
import keras
import numpy as np
from keras import ops

from tiny_keras import backend
from tiny_keras.augment.core import deserialize, fold_seed, serialize
from tiny_keras.augment.standardization import channel_mean_std, mean_image, standardize
from tiny_keras.backend import tf


@keras.saving.register_keras_serializable(package="tiny_keras")
class AugmentationLayer(keras.layers.Layer):
    """A ``tiny_keras.augment`` transform as a Keras layer.

    Example::

        aug = Augmenter(rotation_range=35, width_shift_range=0.2, height_shift_range=0.2,
                        horizontal_flip=True)
        inputs = keras.Input((64, 64, 3))
        x = AugmentationLayer(aug, seed=0)(inputs)          # training only
        x = AugmentationLayer(RandomCrop(56))(x)            # centre crop at inference
    """

    def __init__(self, transform, seed=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.transform = deserialize(transform)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        images = ops.cast(inputs, "float32")
        if training and self.transform.random:
            seed = _per_replica(self.seed_generator.next())
            out = self.transform(images, seed, training=True)
        else:
            out = self.transform(images, None, training=False)
        return ops.cast(out, self.compute_dtype)

    def compute_output_spec(self, inputs, training=None):
        # On JAX, Keras infers shapes by tracing with symbolic dimensions, which cannot be
        # sliced to a fixed size (a crop of inputs of unknown size): the transform's declared
        # shape there. Elsewhere (and for transforms that declare none) Keras's own inference.
        shape = self.transform.output_shape(inputs.shape) if backend.is_jax() else None
        if shape is None:
            return super().compute_output_spec(inputs, training=training)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "transform": serialize(self.transform), "seed": self.seed}

    # Keras saves a layer's variables but not its seed generators' state; the state is
    # where the augmentation stream stands, so a resumed run needs it: saved with the layer.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["seed_state"] = self.seed_generator.state

    def load_own_variables(self, store):
        if "seed_state" in store.keys():
            self.seed_generator.state.assign(store["seed_state"])


def _per_replica(seed):
    """Under a ``tf.distribute`` strategy with several replicas, each replica's own seed
    (the replica id folded in), so replicas draw different augmentation."""
    if not backend.is_tensorflow():
        return seed
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync <= 1:
        return seed
    return fold_seed(seed, replica.replica_id_in_sync_group)


@keras.saving.register_keras_serializable(package="tiny_keras")
class Standardization(keras.layers.Layer):
    """``ImageDataGenerator.standardize`` as a layer, statistics as non-trainable weights.

    Build it from a fitted ``Augmenter`` with ``Standardization.from_augmenter(aug)``, or
    pass ``mean``/``std`` (per channel), or call ``adapt(train_images)``.
    """

    def __init__(self, featurewise_center=False, featurewise_std_normalization=False,
                 samplewise_center=False, samplewise_std_normalization=False, rescale=None,
                 mean=None, std=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.featurewise_std_normalization = bool(featurewise_std_normalization)
        self.featurewise_center = bool(featurewise_center) or self.featurewise_std_normalization
        self.samplewise_std_normalization = bool(samplewise_std_normalization)
        self.samplewise_center = bool(samplewise_center) or self.samplewise_std_normalization
        self.rescale = rescale
        self._initial = (mean, std)

    @classmethod
    def from_augmenter(cls, augmenter, **kwargs):
        return cls(featurewise_center=augmenter.featurewise_center,
                   featurewise_std_normalization=augmenter.featurewise_std_normalization,
                   samplewise_center=augmenter.samplewise_center,
                   samplewise_std_normalization=augmenter.samplewise_std_normalization,
                   rescale=augmenter.rescale, mean=augmenter.mean, std=augmenter.std, **kwargs)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.mean = self.add_weight(name="mean", shape=(channels,), initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=(channels,), initializer="ones", trainable=False)
        mean, std = self._initial
        if mean is not None:
            self.mean.assign(np.asarray(mean, np.float32).reshape(channels))
        if std is not None:
            self.std.assign(np.asarray(std, np.float32).reshape(channels))

    def adapt(self, x, batch_size=1024):
        """Fit the featurewise statistics on training images (as ``Augmenter.fit``)."""
        mean, std, _ = channel_mean_std(x, batch_size, rescale=self.rescale)
        if not self.built:
            self.build((None, None, None, mean.shape[0]))
        self.mean.assign(mean)
        self.std.assign(std)

    def call(self, inputs):
        x = standardize(
            ops.cast(inputs, "float32"),
            mean=self.mean if self.featurewise_center else None,
            std=self.std if self.featurewise_std_normalization else None,
            rescale=self.rescale, samplewise_center=self.samplewise_center,
            samplewise_std_normalization=self.samplewise_std_normalization,
        )
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "featurewise_center": self.featurewise_center,
                "featurewise_std_normalization": self.featurewise_std_normalization,
                "samplewise_center": self.samplewise_center,
                "samplewise_std_normalization": self.samplewise_std_normalization,
                "rescale": self.rescale}


def augmenter_layers(augmenter, seed=None):
    """Keras layers doing what a fitted ``Augmenter`` does, in a model:
    ``[random transform, standardisation]``.

    The first is active only with ``training=True``; the second always, with the
    featurewise statistics stored as non-trainable weights.
    """
    config = augmenter.get_config()
    for key in ("featurewise_center", "featurewise_std_normalization", "samplewise_center",
                "samplewise_std_normalization"):
        config[key] = False
    config.update(rescale=None, mean=None, std=None)
    random_part = AugmentationLayer(type(augmenter)(**config), seed=seed)
    return [random_part, Standardization.from_augmenter(augmenter)]


@keras.saving.register_keras_serializable(package="tiny_keras")
class MeanImageSubtraction(keras.layers.Layer):
    """Subtract a mean image ``[H, W, C]`` held as a non-trainable weight (papers 3 and 5).

    Pass ``mean_image`` (e.g. ``SubtractMeanImage.fit(x).mean_image``) or call
    ``adapt(train_images)``.
    """

    def __init__(self, mean_image=None, image_shape=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self._initial = None if mean_image is None else np.asarray(mean_image, np.float32)
        # The mean image's shape, in the config (its values are a weight), so that the layer
        # builds before it sees an input of known size (a model taking any image size).
        self.image_shape = None if image_shape is None else tuple(image_shape)
        if self._initial is not None:
            self.image_shape = self._initial.shape

    def build(self, input_shape):
        shape = tuple(input_shape[1:])
        if self.image_shape is not None:  # inputs of unknown size take the mean image's
            if len(shape) != 3 or any(s not in (None, m) for s, m in zip(shape, self.image_shape)):
                raise ValueError(f"The mean image is {self.image_shape} but the inputs are {shape}.")
            shape = self.image_shape
        if None in shape:
            raise ValueError(f"MeanImageSubtraction needs a fixed input size; received input shape {input_shape}.")
        self.image_shape = tuple(shape)
        self.mean_image = self.add_weight(name="mean_image", shape=shape, initializer="zeros", trainable=False)
        if self._initial is not None:
            self.mean_image.assign(self._initial)

    def adapt(self, x, batch_size=1024):
        """Fit the mean image on training images (as ``SubtractMeanImage.fit``)."""
        mean = mean_image(x, batch_size)
        if not self.built:
            self.build((None,) + mean.shape)
        self.mean_image.assign(mean)

    def call(self, inputs):
        return ops.cast(ops.cast(inputs, "float32") - ops.cast(self.mean_image, "float32"), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        # The mean image itself is a weight, saved with the model, not part of the config.
        shape = None if self.image_shape is None else list(self.image_shape)
        return {**super().get_config(), "image_shape": shape}


@keras.saving.register_keras_serializable(package="tiny_keras")
class ImageNetPreprocessing(keras.layers.Layer):
    """``keras.applications.imagenet_utils.preprocess_input`` as a layer: the input
    convention of Keras's ImageNet-pretrained models ("caffe": RGB -> BGR and the ImageNet
    mean subtracted, as ResNet50 expects; "tf": scaled to [-1, 1]; "torch": ImageNet
    mean/std). Paper 4's ResNet50 transfer model carries it, so its 0..255 inputs match
    the pretrained weights."""

    MODES = ("caffe", "tf", "torch")

    def __init__(self, mode="caffe", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}. Received: {mode=}")
        self.mode = mode

    def call(self, inputs):
        x = keras.applications.imagenet_utils.preprocess_input(ops.cast(inputs, "float32"), mode=self.mode)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
