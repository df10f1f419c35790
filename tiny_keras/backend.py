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

Backend checks go through :func:`name`, :func:`is_tensorflow`, :func:`is_jax` and
:func:`is_torch`; the machine the backend runs on is discovered here once per process
(:func:`gpu_compute_capability`, :func:`accelerators`; :func:`cpu_flags` reads the CPU's).
"""
import functools
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
    """Whether this process runs Keras's TensorFlow backend."""
    return name() == TENSORFLOW


def is_jax():
    """Whether this process runs Keras's JAX backend."""
    return name() == JAX


def is_torch():
    """Whether this process runs Keras's PyTorch backend."""
    return name() == TORCH


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


@functools.cache
def gpu_compute_capability():
    """``(major, minor)`` of the first GPU the Keras backend sees, or None without one.
    Discovered once per process (``gpu_compute_capability.cache_clear()`` forgets it)."""
    if is_jax():
        import jax  # the JAX backend's own library

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            return None
        major, _, minor = str(getattr(gpus[0], "compute_capability", "0.0")).partition(".")
        return int(major or 0), int(minor or 0)
    if is_torch():
        import torch  # the PyTorch backend's own library

        return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    if not is_tensorflow():
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0))


@functools.cache
def accelerators():
    """The accelerators the backend sees, as a tuple of ``"GPU: NVIDIA H100 80GB HBM3"``
    strings (empty on a CPU). Discovered once per process (``accelerators.cache_clear()``
    forgets them)."""
    try:  # each backend's own library, imported on that backend only
        if is_jax():
            import jax  # optional

            return tuple(f"{d.platform.upper()}: {d.device_kind}" for d in jax.devices() if d.platform != "cpu")
        if is_torch():
            import torch  # optional

            return tuple(f"GPU: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        if is_tensorflow():
            return tuple(f"GPU: {tf.config.experimental.get_device_details(d).get('device_name', d.name)}"
                         for d in tf.config.list_physical_devices("GPU"))
    except Exception as error:  # a broken driver must not stop a run from being recorded
        return (f"unknown ({type(error).__name__}: {error})",)
    return ()


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (the first ``flags`` line of ``/proc/cpuinfo``:
    ``{"avx512f", "avx512_bf16", "amx_bf16", ...}``); empty where there is none to read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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
