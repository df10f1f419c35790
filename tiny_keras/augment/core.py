"""Seeds, the ``Transform`` protocol and the combinators every augmentation shares.

A transform maps a batch to a batch: ``images = transform(images, seed, training=True)``.
``images`` is a float batch ``[B, H, W, C]`` on the 0..255 scale (anything numeric is cast
to float32 first, so float16 under mixed precision and decoded uint8 both work) and the
result is float32. ``seed`` is a stateless-RNG seed, an int32/int64 tensor of shape [2]
(a Python int ``s`` is read as ``[s, 0]``): the same seed gives the same batch, eagerly and
inside ``tf.data.Dataset.map``, in a model and under XLA, because every random parameter
is drawn from the backend's stateless random bits (:func:`random_bits`: Philox on
TensorFlow, threefry on JAX, a SplitMix64 counter hash on PyTorch; :func:`uniform`,
:func:`normal`) of a sub-seed folded out of it. Deterministic transforms ignore the seed. With ``training=False`` a transform does what evaluation needs instead (a random
crop becomes a centre crop, random photometric changes do nothing, standardisation still
applies); ``transform.inference`` is that, in the ``fn(images, seed)`` form the data
pipeline calls.
"""
import keras
import numpy as np
from keras import ops

from tiny_keras import backend
from tiny_keras.backend import tf

# Transforms are registered with Keras under this package ("tiny_keras.augment>RandomCrop").
PACKAGE = "tiny_keras.augment"


def no_autograph(fn):
    """``fn`` kept out of AutoGraph on the TensorFlow backend (``do_not_convert``); as is on
    the others, which have no AutoGraph (and need no TensorFlow for it).

    Nothing here branches on tensor values, so AutoGraph has nothing to convert; keeping it
    out also keeps it from rewriting this code when a user calls a transform inside
    ``Dataset.map``. The backend is fixed per process, so deciding at import is enough.
    """
    if not backend.is_tensorflow():
        return fn
    return tf.autograph.experimental.do_not_convert(fn)


def as_seed(seed):
    """A stateless-RNG seed as a tensor of shape [2]: int64 for TensorFlow's Philox and
    PyTorch's counter hash, uint32 key data for JAX's threefry.

    Accepts a Python/numpy int (read as ``[seed, 0]``), a pair, or a tensor of shape [2]
    (int32, uint32 or int64, e.g. the per-batch seed the data pipeline passes, or
    ``keras.random.SeedGenerator.next()``).
    """
    if seed is None:
        raise ValueError(
            "A random transform needs a seed (an int or an int tensor of shape [2], "
            "e.g. the per-batch seed tiny_keras.data.make_dataset passes). Received: seed=None"
        )
    on = backend.name()
    if on not in RANDOM_BACKENDS:
        raise NotImplementedError(
            f"Random augmentation draws its numbers with stateless generators on the "
            f"{', '.join(RANDOM_BACKENDS)} backends; "
            f"the {on!r} backend has none yet. Deterministic transforms (crops, resizing, "
            f"standardisation, apply_transform with given parameters) work on every backend."
        )
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seed = [seed, 0]
    if isinstance(seed, (list, tuple)) and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seed):
        seed = np.array([int(s) % (1 << 64) for s in seed], np.uint64).astype(np.int64)  # wrapped to 64 bits
    seed = ops.convert_to_tensor(seed)
    if "int" not in str(seed.dtype):
        raise ValueError(f"A seed must be integer; received dtype {seed.dtype}.")
    if len(seed.shape) != 1 or seed.shape[0] not in (None, 2):
        raise ValueError(f"A seed must have shape [2]; received shape {tuple(seed.shape)}.")
    if on == backend.JAX:
        import jax.numpy as jnp  # optional: JAX only on its backend

        return jnp.asarray(seed).astype(jnp.uint32)  # int64 values wrap, as uint32 key data
    if on == backend.TORCH:
        return ops.cast(seed, "int64")
    return tf.cast(seed, tf.int64)


# The transforms are written with keras.ops; the random bits below are the one place that
# speaks a backend's own generator (no keras.random function folds seeds or gives raw bits):
# TensorFlow's stateless Philox, JAX's threefry, and on PyTorch a counter hash of our own
# (below). The three give different numbers for the same seed; each is the same eagerly and
# compiled.
#
# On TensorFlow, random numbers are the same eagerly, in a tf.function and under XLA: the
# Philox generator named explicitly ("auto_select" picks another under XLA) gives the same
# *bits* everywhere, and the bits are made floats here (TensorFlow's float conversion
# differs under XLA).
#
# PyTorch has no stateless generator: a torch.Generator is a stream with state, seeding one
# needs the seed on the host (a device sync per draw when it comes from a SeedGenerator on
# the GPU), and the CPU one keeps only 32 bits of its seed. So on PyTorch the bits are
# SplitMix64 run as a counter-based generator in int64 tensor ops: the seed's two words are
# mixed into a 64-bit key, element i of a draw is the upper half of SplitMix64's output
# function at key + (i + 1) * gamma (the i-th output of SplitMix64 started at key), and a
# sub-seed is (mix(key), index). Integer arithmetic is exact (int64 products wrap modulo
# 2**64, as SplitMix64 wants), so the bits are the same on CPU and GPU, eagerly and under
# torch.compile, with the seed never leaving the device.
RNG_ALG = "philox"
RANDOM_BACKENDS = (backend.TENSORFLOW, backend.JAX, backend.TORCH)

_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (2**64 / golden ratio, odd)
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # its output function's multipliers


def _int64(value):
    """A 64-bit constant as the signed value int64 arithmetic (wrapping) uses."""
    return value - (1 << 64) if value >= (1 << 63) else value


def _shift_right_logical(x, bits):
    """``x >> bits`` on int64 as on uint64 (PyTorch's shift is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x):
    """SplitMix64's output function on an int64 tensor (a bijection of 64-bit words)."""
    x = (x ^ _shift_right_logical(x, 30)) * _int64(_MIX1)
    x = (x ^ _shift_right_logical(x, 27)) * _int64(_MIX2)
    return x ^ _shift_right_logical(x, 31)


def _torch_key(seed):
    """The seed's two int64 words mixed into one (a 0-d int64 tensor)."""
    seed = as_seed(seed)
    return _mix64(_mix64(seed[0] + _int64(_GAMMA)) ^ seed[1])


def _jax_key(seed):
    import jax  # optional: JAX only on its backend

    return jax.random.wrap_key_data(as_seed(seed), impl="threefry2x32")


def fold_seed(seed, index):
    """The sub-seed number ``index`` of ``seed`` (independent streams for each parameter)."""
    if backend.is_jax():
        import jax  # optional: JAX only on its backend

        return jax.random.key_data(jax.random.fold_in(_jax_key(seed), index))
    if backend.is_torch():
        import torch  # optional: PyTorch only on its backend

        key = _torch_key(seed)
        return torch.stack([_mix64(key + _int64(_GAMMA)), torch.full_like(key, 0) + index])
    return tf.random.experimental.stateless_fold_in(as_seed(seed), index, alg=RNG_ALG)


def random_bits(shape, seed):
    """Uniform uint32 bits of ``shape`` from a stateless ``seed`` (on PyTorch, which has no
    shifts for uint32, int64 values in ``[0, 2**32)``)."""
    if backend.is_jax():
        import jax  # optional: JAX only on its backend

        return jax.random.bits(_jax_key(seed), tuple(shape), dtype="uint32")
    if backend.is_torch():
        import torch  # optional: PyTorch only on its backend

        key = _torch_key(seed)
        shape = [int(s) for s in shape]
        counter = torch.arange(1, int(np.prod(shape)) + 1, dtype=torch.int64, device=key.device)
        return _shift_right_logical(_mix64(key + counter * _int64(_GAMMA)), 32).reshape(shape)
    return tf.random.stateless_uniform(shape, as_seed(seed), minval=None, maxval=None, dtype=tf.uint32, alg=RNG_ALG)


def uniform(shape, seed, minval=0.0, maxval=1.0):
    """Uniform float32 draws in ``[minval, maxval)`` (24 random bits each)."""
    unit = ops.cast(ops.right_shift(random_bits(shape, seed), 8), "float32") * (1.0 / (1 << 24))
    return minval + (maxval - minval) * unit


def uniform_int(shape, seed, minval, maxval):
    """Uniform int32 draws in ``[minval, maxval)``."""
    if backend.is_jax():
        import jax  # optional: JAX only on its backend

        return jax.random.randint(_jax_key(seed), tuple(shape), minval, maxval, dtype="int32")
    if backend.is_torch():
        # 32 random bits times the range, high half (Lemire's multiply-shift): exact in
        # int64 for ranges below 2**31, biased by at most range / 2**32.
        span = ops.cast(ops.convert_to_tensor(maxval) - minval, "int64")
        return ops.cast(minval + ((random_bits(shape, seed) * span) >> 32), "int32")
    return tf.random.stateless_uniform(shape, as_seed(seed), minval=minval, maxval=maxval, dtype=tf.int32,
                                       alg=RNG_ALG)


def normal(shape, seed):
    """Standard normal float32 draws (Box-Muller over two :func:`uniform` streams)."""
    u1 = 1.0 - uniform(shape, fold_seed(seed, 0))  # in (0, 1]: the log stays finite
    u2 = uniform(shape, fold_seed(seed, 1))
    return ops.sqrt(-2.0 * ops.log(u1)) * ops.cos(2.0 * np.pi * u2)


def compile_function(fn, jit_compile):
    """``fn`` compiled once for use outside a model (eagerly, in ``Dataset.map``): a
    ``tf.function`` (with XLA if ``jit_compile``) on the TensorFlow backend. Inside a model
    the model's own compilation applies, so on other backends ``fn`` is returned as is."""
    if not backend.is_tensorflow():
        return fn
    return tf.function(fn, jit_compile=bool(jit_compile), reduce_retracing=True, autograph=False)


def to_float32(images):
    """``images`` as a float32 tensor; raises unless it is a batch ``[B, H, W, C]``."""
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError(
            f"Expected a batch of images [B, H, W, C]; received shape {tuple(images.shape)}. "
            "Add a batch axis (images[None]) for a single image."
        )
    return ops.cast(images, "float32")


def batch_size(images):
    """The batch size: a Python int when static, else a scalar tensor."""
    return ops.shape(images)[0]


def batch_uniform(images, seed, minval, maxval, per_image=True, shape_suffix=()):
    """Uniform draws in [minval, maxval): one per image (or one for the whole batch)."""
    n = batch_size(images)
    values = uniform([n if per_image else 1, *shape_suffix], seed, minval, maxval)
    if not per_image:
        values = ops.repeat(values, n, axis=0)
    return values


class Transform:
    """Base class: a batch-to-batch augmentation or preprocessing step.

    Subclasses set ``random`` and implement ``_train(images, seed)`` (random ones) and
    ``_eval(images)`` (what ``training=False`` does; deterministic transforms implement only
    this, and it runs in both modes), and ``get_config()`` returning their constructor
    arguments. Every subclass is registered with Keras
    (``keras.saving.register_keras_serializable``, package ``tiny_keras.augment``), so that
    ``deserialize`` (and the Keras layer wrapper) can rebuild it from its config, as can
    ``keras.saving.deserialize_keras_object``.
    """

    random = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        keras.saving.register_keras_serializable(package=PACKAGE)(cls)

    @no_autograph
    def __call__(self, images, seed=None, training=True):
        images = to_float32(images)
        if training and self.random:
            return self._train(images, as_seed(seed))
        return self._eval(images)

    @no_autograph
    def inference(self, images, seed=None):
        """The evaluation behaviour in the pipeline-hook form ``fn(images, seed)``."""
        return self(images, seed, training=False)

    def _train(self, images, seed):
        return self._eval(images)

    def _eval(self, images):
        return images

    def output_shape(self, input_shape):
        """The output's shape for an input of ``input_shape`` where the transform declares it
        (the crops, ``Resize``, a ``Compose`` of such), else None: Keras then infers it by
        running the transform on symbolic inputs. Keras's JAX backend cannot run a crop on
        inputs of unknown size, so the layers use this there."""
        return None

    def _train_masked(self, images, seed, apply):
        """The training behaviour for the images where ``apply`` ([B] bool) holds; the others
        unchanged. ``RandomApply`` and ``Compose`` call it with their per-image coins.

        This default computes the transform for every image and keeps it where ``apply``
        holds. A transform whose randomness is per-image parameters with an exact identity
        value (a zero shift, a factor of 1, no flip) overrides it and sets those parameters
        to the identity where ``apply`` is false, so it computes one branch, not two: the
        same numbers, exactly, at the cost of one pass (``Augmenter``'s resampling above all).
        """
        out = self(images, seed, training=True)
        _check_same_shape(self, images, out)
        return select(apply, out, images)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if not _is_large(v))
        return f"{type(self).__name__}({args})"


def select(apply, transformed, images):
    """``transformed`` where the per-image ``apply`` ([B] bool) holds, else ``images``."""
    return ops.where(apply[:, None, None, None], transformed, images)


def identity_where_not(apply, values, identity):
    """Per-image parameters ``values`` ([B, ...]) with ``identity`` where ``apply`` is false."""
    mask = ops.reshape(apply, [-1] + [1] * (len(values.shape) - 1))
    return ops.where(mask, values, ops.cast(identity, values.dtype))


def _check_same_shape(transform, images, out):
    before, after = tuple(images.shape), tuple(out.shape)
    if None not in before and None not in after and before != after:
        raise ValueError(
            f"RandomApply needs a shape-preserving transform; {transform!r} maps {before} to {after}."
        )


def _is_large(value):
    return isinstance(value, (list, tuple)) and len(value) > 8


# serialize/deserialize keep their own two-key dict rather than Keras's
# serialize_keras_object/deserialize_keras_object: that adds "module" and "registered_name"
# to every dict, so a recipe serialised again would no longer equal the recipe.json of a
# run made before (runs.prepare_folder refuses a folder whose recipe differs), and
# deserialize_keras_object cannot rebuild the dicts already in recipe.json files and saved
# .keras models (it finds a registered class by "registered_name", not by "class_name").
# The classes themselves are Keras's registry's (Transform.__init_subclass__).
def serialize(transform):
    """``{"class_name": ..., "config": ...}``, JSON-compatible."""
    if not isinstance(transform, Transform):
        raise TypeError(f"Expected a tiny_keras.augment Transform; received {type(transform).__name__}.")
    return {"class_name": type(transform).__name__, "config": transform.get_config()}


def deserialize(config):
    """Inverse of ``serialize``; a ``Transform`` passes through unchanged."""
    if isinstance(config, Transform):
        return config
    name = config.get("class_name") if isinstance(config, dict) else None
    cls = keras.saving.get_registered_object(f"{PACKAGE}>{name}")
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise ValueError(
            f"Unknown transform {name!r}; expected one of {registered_names()} "
            f"in a dict {{'class_name': ..., 'config': ...}}. Received: {config!r:.200}"
        )
    return cls.from_config(config.get("config", {}))


def registered_names():
    """The class names ``deserialize`` knows, sorted."""
    prefix = f"{PACKAGE}>"
    return sorted(key[len(prefix):] for key in keras.saving.get_custom_objects() if key.startswith(prefix))


class Compose(Transform):
    """Apply transforms in order; transform ``i`` gets sub-seed ``i`` of the batch seed.

    Example::

        train = Compose([RandomCrop(56), RandomFlip(), GaussianNoise(1.0)])
        images = train(images, seed)            # training
        images = train.inference(images)        # evaluation: centre crop only
    """

    def __init__(self, transforms):
        self.transforms = [deserialize(t) for t in transforms]
        self.random = any(t.random for t in self.transforms)

    def _train(self, images, seed):
        for i, t in enumerate(self.transforms):
            images = t(images, fold_seed(seed, i) if t.random else None, training=True)
        return images

    def _train_masked(self, images, seed, apply):
        for i, t in enumerate(self.transforms):
            images = t._train_masked(images, fold_seed(seed, i) if t.random else None, apply)
        return images

    def _eval(self, images):
        for t in self.transforms:
            images = t(images, None, training=False)
        return images

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        for t in self.transforms:
            shape = t.output_shape(shape)
            if shape is None:
                return None
        return shape

    def get_config(self):
        return {"transforms": [serialize(t) for t in self.transforms]}


class RandomApply(Transform):
    """Apply ``transform`` to each image independently with probability ``p``.

    A per-image coin says where; the transform folds it into its own parameters where it
    can (identity parameters for the other images: one computation instead of two, see
    ``Transform._train_masked``), else it is computed for the batch and kept where the
    coin says so. Either way it must keep the image shape. Paper 2 applies each augmentation "randomly to this
    image" (paper 2, section 3.1); ``RandomApply(t, 0.5)`` is that reading.
    """

    random = True

    def __init__(self, transform, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1]. Received: {p=}")
        self.transform = deserialize(transform)
        self.p = float(p)

    def _train(self, images, seed):
        return self._train_masked(images, seed, ops.ones([batch_size(images)], "bool"))

    def _train_masked(self, images, seed, apply):
        coin = uniform([batch_size(images)], fold_seed(seed, 1)) < self.p
        inner = fold_seed(seed, 0) if self.transform.random else None
        return self.transform._train_masked(images, inner, apply & coin)

    def _eval(self, images):
        return images

    def get_config(self):
        return {"transform": serialize(self.transform), "p": self.p}
