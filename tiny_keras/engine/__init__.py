"""The training engine: ``train(recipe, workdir, data)`` runs any paper's recipe.

A ``Recipe`` (``tiny_keras.recipe``) says what a run computes; a :class:`Session` how this
process runs it. One module a concern:

- ``run``: ``train``, a whole run in its folder, stage after stage
- ``stage``: one stage: start or resume it, its callbacks, fit, its results
- ``task``: what the model learns (its splits, inputs, model, loss, scores): a
  classifier, or paper 2's localiser (``Recipe.task``)
- ``session``: the ``Session`` and its "auto" settings for the device found
- ``precision``: the precision a run computes in, settled once when it starts
- ``model``: the model a stage trains, its optimizer, weight decay, memory check
- ``inputs``: the splits, the training stream, the evaluation batches
- ``strategy``: one device, ``tf.distribute`` or ``keras.distribution``
- ``resume``: the resume checkpoint and the run's position
- ``time_limit``: ``--time-limit``: stop at a checkpointed step before a deadline
- ``log``: the ``tiny_keras.engine`` logger, ``train.log`` and the console
"""
import importlib

# Public names, each imported from its module on first use: ``tiny_keras.engine.session``
# or ``.time_limit`` alone (the command line's) do not load the data pipeline.
_EXPORTS = {
    "BatchTooLarge": "model", "EXIT_TIME_LIMIT": "time_limit", "EpochLog": "log", "RunCheckpoint": "resume",
    "Session": "session", "TimeLimit": "time_limit", "TimeLimitReached": "time_limit",
    "UnsupportedSession": "session", "auto_precision": "precision", "format_table": "log", "train": "run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tiny_keras.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tiny_keras.engine.{_EXPORTS[name]}"), name)
