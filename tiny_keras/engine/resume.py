"""Where a run is, and the checkpoint it resumes from.

``progress.json`` holds the finished stages' rows, ``state.json`` the position in the
current stage and ``checkpoint-*.keras`` the model with its optimizer there. Each is
written atomically, ``state.json`` last, so a run killed at any point continues from the
epoch it names: same stage, schedule position and stream of batches.
"""
import collections
import dataclasses
import math
import os
import time
from typing import Optional

import keras

from tiny_keras import callbacks as cbs
from tiny_keras import files, runs

# The attributes of Keras's stateful callbacks that a resumed run needs back.
_CALLBACK_STATE = {
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    keras.callbacks.EarlyStopping: ("wait", "best", "stopped_epoch", "best_epoch"),
    keras.callbacks.ModelCheckpoint: ("best",),
    cbs.BestCheckpoint: ("best",),
}


def callback_state(callbacks):
    state = {}
    for i, cb in enumerate(callbacks):
        for cls, attrs in _CALLBACK_STATE.items():
            if isinstance(cb, cls):
                state[f"{i}:{type(cb).__name__}"] = {a: getattr(cb, a, None) for a in attrs}
    return state


def restore_callback_state(callbacks, state):
    """Give each callback its saved state, matched by class and by order among the callbacks
    of its class: a callback added or moved elsewhere in the list shifts none of them."""
    saved = collections.defaultdict(list)
    for key in sorted(state, key=lambda k: int(k.split(":", 1)[0])):
        saved[key.split(":", 1)[1]].append(state[key])
    for cb in callbacks:
        values = saved[type(cb).__name__]
        for attr, value in (values.pop(0) if values else {}).items():
            if value is not None:
                setattr(cb, attr, value)


@dataclasses.dataclass
class Position:
    """Where the run in a folder is: ``progress`` (``{"runs": [rows of finished stages]}``)
    and ``state`` (``state.json``: the unfinished stage's position, or None)."""

    progress: dict
    state: Optional[dict]

    @property
    def done(self):
        return {r["stage"] for r in self.progress["runs"]}

    def resume_point(self, stage):
        """``state.json`` where the run stopped inside ``stage`` (its name), else None."""
        return self.state if self.state and self.state.get("stage") == stage else None


def read_position(workdir):
    return Position(files.read_json(os.path.join(workdir, runs.PROGRESS), {"runs": []}),
                    files.read_json(os.path.join(workdir, runs.STATE), None))


class RunCheckpoint(keras.callbacks.Callback):
    """The resume point: the model with its optimizer, then ``state.json`` (the position,
    the stateful ``callbacks``' state, this session's mean epoch and longest write, and
    what timed them, ``timed_on``), then the older checkpoint removed.

    Written after every epoch while one costs at most ``max_cost`` of an epoch, else every
    k epochs, the smallest k within it; with ``every``, every ``every`` epochs; always after
    the stage's last. ``save_now`` writes one out of turn (at a time limit). Put it after
    the callbacks it records: it puts their saved state (``restore``) back after Keras
    resets it in ``on_train_begin``.
    """

    def __init__(self, folder, stage_index, stage_name, callbacks=(), restore=None, start=None, epochs=None,
                 max_cost=0.05, every=None, clock=time.perf_counter, timed_on=None):
        super().__init__()
        self.clock = clock
        self.timed_on = timed_on
        self.start = clock() if start is None else start
        self.folder, self.stage_index, self.stage_name = folder, stage_index, stage_name
        self.callbacks = list(callbacks)
        self.restore = restore or {}
        self.epochs = epochs
        self.max_cost = max_cost
        self.fixed_every = every  # None: adapt to the cost
        self.every = every or 1
        self.saves = []  # (seconds to write, seconds of the epoch)
        self._last_saved = None
        self._epoch_start = None
        self._epoch_seconds = []  # this session's epochs, training and validation

    def mean_epoch_seconds(self):
        """The mean of this session's epochs (None before the first ends)."""
        return sum(self._epoch_seconds) / len(self._epoch_seconds) if self._epoch_seconds else None

    def longest_write(self):
        """The longest checkpoint write of this session in seconds (0.0 before the first)."""
        return max((seconds for seconds, _ in self.saves), default=0.0)

    def on_train_begin(self, logs=None):
        restore_callback_state(self.callbacks, self.restore)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.clock()
        if self._last_saved is None:
            self._last_saved = epoch  # epochs done when the stage (re)started

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_seconds.append(self.clock() - (self._epoch_start or self.start))
        last = self.epochs is not None and epoch + 1 >= self.epochs
        if last or epoch + 1 - (self._last_saved or 0) >= self.every:
            self.save_now(epoch)

    def save_now(self, epoch):
        """Writes the checkpoint of ``epoch`` (0-based) unless it is written already."""
        if self._last_saved == epoch + 1:
            return
        epoch_seconds = self._epoch_seconds[-1] if self._epoch_seconds else 0.0
        begin = self.clock()
        self._save(epoch)
        seconds = self.clock() - begin
        self.saves.append((seconds, epoch_seconds))
        self._last_saved = epoch + 1
        if self.fixed_every is None:
            budget = self.max_cost * max(epoch_seconds, 1e-9)
            self.every = 1 if seconds <= budget else int(math.ceil(seconds / budget))

    def _save(self, epoch):
        name = runs.checkpoint_name(self.stage_index, epoch + 1)
        begin = self.clock()
        files.save_model(self.model, os.path.join(self.folder, name))
        model_seconds = self.clock() - begin  # the write's cost, near enough: state.json is small
        files.write_json(
            dict(stage_index=self.stage_index, stage=self.stage_name, epochs_done=epoch + 1, checkpoint=name,
                 learning_rate=cbs.current_lr(self.model), seconds=self.clock() - self.start,
                 epoch_seconds=self.mean_epoch_seconds(), write_seconds=max(self.longest_write(), model_seconds),
                 timed_on=self.timed_on, callbacks=callback_state(self.callbacks)),
            os.path.join(self.folder, runs.STATE),
        )
        runs.remove_checkpoints(self.folder, keep=name)

    def report(self):
        """One line: how many checkpoints, their mean write time and share of an epoch."""
        if not self.saves:
            return "resume checkpoints: none written"
        seconds = sum(s for s, _ in self.saves) / len(self.saves)
        share = 100 * sum(s / max(e, 1e-9) for s, e in self.saves) / len(self.saves)
        return (f"resume checkpoints: {len(self.saves)} written, {seconds:.2f} s each, {share:.1f}% of an epoch"
                + (f"; now every {self.every} epochs" if self.every > 1 else ""))
