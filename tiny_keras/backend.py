"""The Keras backend a process runs on, and TensorFlow only where it is used.

The package runs on Keras's TensorFlow, JAX and PyTorch backends. TensorFlow is the
default and keeps what only it has (tf.data, the TFDS builder, SavedModel export,
``tf.distribute``); on JAX and PyTorch ``import tiny_keras`` works without it installed.
Modules that use TensorFlow for some of their functions import it as

    from tiny_keras.backend import tf

a stand-in that imports TensorFlow on first use: where it is installed that is TensorFlow
itself, on any backend; where it is not, the first use raises :class:`TensorFlowRequired`
naming what was asked for. Entry points of TensorFlow-only features call
:func:`require_tensorflow` first, so their error names the feature. Off the TensorFlow
backend TensorFlow is a host library only: imported with its GPUs hidden from it
(``_startup.import_tensorflow_beside_backend``), it never takes the accelerator memory
the backend needs.
"""
import importlib

import keras

from tiny_keras import _startup

TENSORFLOW = "tensorflow"
JAX = "jax"
TORCH = "torch"


class TensorFlowRequired(ImportError):
    """A TensorFlow-only feature was used where TensorFlow cannot be imported."""


def name():
    """The Keras backend of this process: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    return keras.backend.backend()


def is_tensorflow():
    return name() == TENSORFLOW


def require_tensorflow(feature):
    """TensorFlow, imported for ``feature`` (e.g. ``"SavedModel export"``); raises
    :class:`TensorFlowRequired` naming ``feature`` where it cannot be imported."""
    try:
        if name() != TENSORFLOW:
            return _startup.import_tensorflow_beside_backend()
        return importlib.import_module("tensorflow")
    except ImportError as error:
        raise TensorFlowRequired(
            f"{feature} needs TensorFlow, which cannot be imported here (Keras backend: {name()}; "
            f"{type(error).__name__}: {error}). Install it with `pip install tensorflow`, or use "
            f"a feature every backend has (see docs/training.md, 'Backends')."
        ) from error


def tensorflow_if_installed():
    """TensorFlow where it can be imported, else None. Off the TensorFlow backend, call
    this before anything that imports it by itself (Keras's ``set_random_seed`` seeds
    TensorFlow where installed): imported here, its GPUs are hidden from it first."""
    try:
        return require_tensorflow("TensorFlow")
    except TensorFlowRequired:
        return None


class _LazyTensorFlow:
    """``tensorflow``, imported on the first attribute read."""

    _module = None

    def __getattr__(self, attribute):
        if _LazyTensorFlow._module is None:
            _LazyTensorFlow._module = require_tensorflow(f"tf.{attribute} (tiny_keras on the {name()} backend)")
        return getattr(_LazyTensorFlow._module, attribute)

    def __repr__(self):
        return "<tensorflow, imported on first use>"


tf = _LazyTensorFlow()
