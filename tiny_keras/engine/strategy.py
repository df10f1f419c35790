"""Where a run's steps execute: one device, ``tf.distribute``'s mirrored strategy, or
``keras.distribution``'s data parallelism (one host or several), each with
``tf.distribute``'s ``scope()`` and ``num_replicas_in_sync``."""
import contextlib

import keras

from tiny_keras import backend
from tiny_keras.backend import tf
from tiny_keras.engine.session import STRATEGIES, UnsupportedSession

# Measured with Keras 3.15 and TensorFlow 2.21, two workers on 127.0.0.1 (tests/test_distributed.py):
# fit fails at its first step under MultiWorkerMirroredStrategy, in Keras's own trainer.
MULTI_WORKER_REFUSED = (
    "strategy 'multi_worker' is not supported: Keras 3's TensorFlow trainer cannot fit under "
    "tf.distribute.MultiWorkerMirroredStrategy (its first step reduces per-replica values eagerly and scalar "
    "metrics along an axis, and fails; keras-team/keras issue 20585). On several hosts use the JAX backend: "
    "KERAS_BACKEND=jax with strategy 'data_parallel' (--strategy data_parallel --coordinator HOST:PORT "
    "--num-processes N --process-id I)")


class OneDevice:
    """The default strategy off TensorFlow: one device, nothing to distribute."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def processes():
    """``(count, index)`` of the processes training together: JAX's processes where
    ``keras.distribution.initialize`` joined several (multi-host ``data_parallel``), else
    ``(1, 0)``. Process 0 is the chief: it alone writes the run folder."""
    if not backend.is_jax():
        return 1, 0
    import jax  # the JAX backend's own library

    return jax.process_count(), jax.process_index()


class DataParallel:
    """``keras.distribution.DataParallel`` over every device of the processes training
    together (JAX: this host's, or with ``keras.distribution.initialize`` every host's).
    Inside ``scope()`` the model's variables are replicated and each global batch is split
    across the devices; with several processes each feeds its own shard of each batch
    (``num_processes``, ``process_index``), and Keras assembles the global batch."""

    def __init__(self):
        devices = keras.distribution.list_devices()
        self.num_processes, self.process_index = processes()
        self.distribution = keras.distribution.DataParallel(devices=devices,
                                                            auto_shard_dataset=self.num_processes == 1)
        self.num_replicas_in_sync = len(devices)

    def scope(self):
        return self.distribution.scope()


def check_strategy(name):
    """Raise ``UnsupportedSession`` (one line for the command line) where strategy ``name``
    cannot run on this process's backend; called before a run folder is touched."""
    on = backend.name()
    if name == "multi_worker":
        raise UnsupportedSession(MULTI_WORKER_REFUSED)
    if name == "mirrored" and not backend.is_tensorflow():
        raise UnsupportedSession(f"strategy {name!r} is tf.distribute's and needs the TensorFlow backend; this "
                                 f"process runs {on}" + ("; on JAX use data_parallel" if backend.is_jax() else ""))
    if name == "data_parallel" and not backend.is_jax():
        raise UnsupportedSession(f"strategy 'data_parallel' is keras.distribution's and needs the JAX backend; this "
                                 f"process runs {on}" + ("; on TensorFlow use mirrored" if backend.is_tensorflow()
                                                         else ""))


def make_strategy(name):
    """The device strategy ``name`` (see ``Session.strategy``) on this process's backend."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: {name=}")
    check_strategy(name)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "data_parallel":
        return DataParallel()
    return tf.distribute.get_strategy() if backend.is_tensorflow() else OneDevice()
