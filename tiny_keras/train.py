"""``tiny_keras.train``: the training engine's entry points, as ``tiny_keras.engine`` has them.

``train.train(recipe, workdir, data)`` runs any paper's recipe; a ``Session`` says how this
process runs it; ``TimeLimitReached`` ends a session at its time limit.
"""
from tiny_keras.engine import Session, TimeLimitReached, format_table, train

__all__ = ["Session", "TimeLimitReached", "format_table", "train"]
