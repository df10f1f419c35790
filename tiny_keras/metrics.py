"""Top-k accuracy for training that ranks classes exactly as ``tiny_keras.evaluate`` does.

``tiny_keras.evaluate`` ranks a row's classes with numpy's stable sort: of equal scores,
the lower class index ranks first (``np.argmax`` picks the same top-1). Keras's own
metrics decide ties otherwise: ``SparseCategoricalAccuracy`` takes ``ops.argmax``, which on
the TensorFlow backend ranks -0.0 below 0.0 and leaves the winner among equal values to
the kernel; ``SparseTopKCategoricalAccuracy`` uses ``in_top_k``, which counts every class
tied at the k-th place as a hit. Tied logits are rare in float32 but not in float16 or
bfloat16 (mixed precision) or from a saturated network.

:class:`TopKAccuracy` ranks as numpy does and keeps its counts in float64, so its mean over
N images is the same float as numpy's: a run's ``val_top1`` (``results.json``) and
``tools/evaluate.py``'s top-1 for the same predictions agree to the last digit. On JAX
without 64-bit types (``JAX_ENABLE_X64`` unset, JAX's default) it counts in float32:
counts stay exact below 2**24 images, and the mean is numpy's to float32 rounding (1e-7).
"""
import keras
from keras import ops

from tiny_keras import backend


def count_dtype(requested="float64"):
    """``requested``, unless it is float64 on JAX without 64-bit types: then float32."""
    if requested == "float64" and backend.is_jax():
        import jax  # the JAX backend's own library

        if not jax.config.jax_enable_x64:
            return "float32"
    return requested


def top_k_hits(y_true, y_pred, k=1):
    """1.0 where the label is among the ``k`` highest scores of its row, else 0.0.

    The label's rank is the number of classes with a higher score plus those with an equal
    score and a lower index (numpy's stable order); a NaN score for the label is a miss."""
    scores = ops.cast(y_pred, "float32")  # exact for float16 / bfloat16 / float32 logits
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    own = ops.take_along_axis(scores, labels[:, None], axis=-1)  # [B, 1]
    index = ops.arange(scores.shape[-1], dtype="int32")[None, :]
    ahead = ops.logical_or(ops.greater(scores, own),
                           ops.logical_and(ops.equal(scores, own), ops.less(index, labels[:, None])))
    rank = ops.sum(ops.cast(ahead, "int32"), axis=-1)
    return ops.cast(ops.logical_and(ops.less(rank, k), ops.equal(own[:, 0], own[:, 0])), "float32")


@keras.saving.register_keras_serializable(package="tiny_keras")
class TopKAccuracy(keras.metrics.MeanMetricWrapper):
    """The fraction of images whose label ranks in the top ``k`` (see :func:`top_k_hits`),
    counted in float64 (see :func:`count_dtype`); ``name`` defaults to ``top{k}``."""

    def __init__(self, k=1, name=None, dtype="float64"):
        super().__init__(fn=top_k_hits, name=name or f"top{k}", dtype=count_dtype(dtype), k=k)
        self.k = k
        self._direction = "up"

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "k": self.k}
