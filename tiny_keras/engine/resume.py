"""Where a run is, and the checkpoint it resumes from.

``progress.json`` holds the finished stages' rows, ``state.json`` the position in the
current stage (epochs done, and where a time limit stopped it inside an epoch, that
epoch's steps done and training metrics so far) and ``checkpoint-*.keras`` the model with
its optimizer there. Each is written atomically, ``state.json`` last, so a run killed at
any point continues from the position it names: same stage, schedule position and stream
of batches.
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

# The names of the metric variables that are sums: a resumed epoch adds them up.
SUMS = ("total", "count")

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
    the stateful ``callbacks``' state, this session's timings and what timed them,
    ``timed_on``), then the older checkpoint removed.

    Written after every epoch while one costs at most ``max_cost`` of an epoch (this
    session's last whole epoch, else the resume point's mean), else every k epochs, the
    smallest k within it; with ``every``, every ``every`` epochs; always after
    the stage's last. ``save_now`` writes one out of turn, at an epoch's end or inside an
    epoch (at a time limit): a resume point inside an epoch also holds the steps of it done
    and the training metrics' state, so the resumed epoch's metrics cover all its steps.
    Put it after the callbacks it records: it puts their saved state (``restore``) back
    after Keras resets it in ``on_train_begin``.

    It keeps the timings the time limit judges by: the mean complete epoch, a training
    step, an epoch's tail after its last step (validation and the epoch-end callbacks) and
    the longest checkpoint write; before this session has measured one, ``point``'s (the
    ``state.json`` the stage resumed from) where it was timed the same way (``timed_on``).
    ``steps_per_epoch`` and ``steps_per_execution`` are the stage's; ``point`` also says
    where inside an epoch the stage resumed.
    """

    def __init__(self, folder, stage_index, stage_name, callbacks=(), restore=None, start=None, epochs=None,
                 max_cost=0.05, every=None, clock=time.perf_counter, timed_on=None, steps_per_epoch=None,
                 steps_per_execution=1, point=None):
        super().__init__()
        self.clock = clock
        self.timed_on = timed_on
        self.start = clock() if start is None else start
        self.folder, self.stage_index, self.stage_name = folder, stage_index, stage_name
        self.callbacks = list(callbacks)
        point = point or {}
        self.restore = (point.get("callbacks") if restore is None else restore) or {}
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.steps_per_execution = steps_per_execution
        self.max_cost = max_cost
        self.fixed_every = every  # None: adapt to the cost
        self.every = every or 1
        self.resumed = runs.resumed_inside(point)  # (epoch, steps of it done) or None
        self._metrics = point.get("metrics") if self.resumed else None
        self.prior = point if runs.timed_here(point, timed_on) else {}
        self.saves = []  # (seconds to write, seconds of the epoch)
        self._last_saved = None
        self.epoch = None  # the epoch in training (0-based) and its steps done
        self.steps_done = 0
        self._offset = 0  # the steps of this epoch done before this session
        self._epoch_start = self._train_end = None
        self._epoch_seconds = []  # this session's complete epochs, training and validation
        self._train = [0.0, 0]  # this session's training seconds and steps (epoch start to last step)
        self._tails = []  # this session's epoch tails: last step to epoch end

    def mean_epoch_seconds(self):
        """The mean of this session's complete epochs (None before the first ends)."""
        return sum(self._epoch_seconds) / len(self._epoch_seconds) if self._epoch_seconds else None

    def longest_write(self):
        """The longest checkpoint write of this session in seconds, or before the first the
        resume point's record (0.0 without one)."""
        return max((seconds for seconds, _ in self.saves), default=float(self.prior.get("write_seconds") or 0.0))

    def step_seconds(self):
        """A training step's mean in this session (the epoch in training included), or
        before one ends the resume point's record (None without one)."""
        seconds, steps = self._train
        if self._epoch_start is not None and self._train_end is not None and self.steps_done > self._offset:
            seconds, steps = seconds + self._train_end - self._epoch_start, steps + self.steps_done - self._offset
        return seconds / steps if steps else runs.recorded_step_seconds(self.prior, self.steps_per_epoch)

    def tail_seconds(self):
        """The longest epoch tail of this session (validation and the epoch-end callbacks),
        or the resume point's record (0.0 without one)."""
        return max(self._tails, default=float(self.prior.get("tail_seconds") or 0.0))

    def on_train_begin(self, logs=None):
        restore_callback_state(self.callbacks, self.restore)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start, self._train_end = self.clock(), None
        self._offset = runs.steps_before(self.resumed, epoch)
        self.epoch, self.steps_done = epoch, self._offset
        if self._last_saved is None:
            self._last_saved = (epoch, self._offset)  # where the stage (re)started

    def on_train_batch_end(self, batch, logs=None):
        # Keras passes the index of the execution's last step. (No ``self.model`` here: on
        # JAX reading it copies the training state back into the model at every step.)
        self._train_end = self.clock()
        self.steps_done = self._offset + batch + 1
        if self._metrics is not None and self._offset:
            # Keras builds its metrics in the first step: the sums saved before it are added.
            self._add_metrics(self._metrics)
            self._metrics = None

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        if self._train_end is not None:
            self._train[0] += self._train_end - self._epoch_start
            self._train[1] += self.steps_done - self._offset
            self._tails.append(now - self._train_end)
        if not self._offset:
            self._epoch_seconds.append(now - (self._epoch_start or self.start))
        self._epoch_start = self._train_end = None
        last = self.epochs is not None and epoch + 1 >= self.epochs
        if last or epoch + 1 - self._last_saved[0] >= self.every:
            self.save_now(epoch)

    def save_now(self, epoch, steps_done=None):
        """Writes the resume point after ``epoch`` (0-based), or with ``steps_done`` inside it
        after that many of its steps, unless it is written already."""
        at = (epoch + 1, 0) if steps_done is None or steps_done >= (self.steps_per_epoch or 0) else (epoch, steps_done)
        if self._last_saved == at:
            return
        # The rule judges a write against a whole epoch: this session's last, else the resume
        # point's record; an epoch resumed inside is neither (0.0: the rule waits).
        epoch_seconds = (self._epoch_seconds[-1] if self._epoch_seconds
                         else float(self.prior.get("epoch_seconds") or 0.0))
        begin = self.clock()
        self._save(*at)
        seconds = self.clock() - begin
        self.saves.append((seconds, epoch_seconds))
        self._last_saved = at
        if self.fixed_every is None and not at[1] and epoch_seconds:
            budget = self.max_cost * epoch_seconds
            self.every = 1 if seconds <= budget else int(math.ceil(seconds / budget))

    def _save(self, epochs_done, steps_done):
        name = runs.checkpoint_name(self.stage_index, epochs_done, steps_done)
        begin = self.clock()
        files.save_model(self.model, os.path.join(self.folder, name))
        model_seconds = self.clock() - begin  # the write's cost, near enough: state.json is small
        step = self.step_seconds()
        state = dict(stage_index=self.stage_index, stage=self.stage_name, epochs_done=epochs_done, checkpoint=name,
                     learning_rate=cbs.current_lr(self.model), seconds=self.clock() - self.start,
                     epoch_seconds=self.mean_epoch_seconds() or self.prior.get("epoch_seconds"),
                     step_seconds=step, tail_seconds=self.tail_seconds(),
                     write_seconds=max(self.longest_write(), model_seconds), timed_on=self.timed_on,
                     callbacks=callback_state(self.callbacks))
        if steps_done:
            state.update(steps_done=steps_done, metrics=self._metric_state())
        files.write_json(state, os.path.join(self.folder, runs.STATE))
        runs.remove_checkpoints(self.folder, keep=name)

    def _metric_state(self):
        """The training metrics' sums so far this epoch (``[[path, value], ...]``), where
        every one is a sum (a Keras ``Mean``'s or ``Sum``'s ``total`` and ``count``), else None."""
        variables = self.model.metrics_variables
        if not all(v.path.rsplit("/", 1)[-1] in SUMS for v in variables):
            return None
        return [[v.path, keras.ops.convert_to_numpy(v).tolist()] for v in variables]

    def _add_metrics(self, saved):
        variables = self.model.metrics_variables
        if [path for path, _ in saved] != [v.path for v in variables]:
            raise runs.RunFolderError(
                f"{os.path.join(self.folder, runs.STATE)}: its training metrics ({', '.join(p for p, _ in saved)}) are "
                f"not this model's ({', '.join(v.path for v in variables)}); remove the file to train stage "
                f"'{self.stage_name}' again from its first epoch")
        for variable, (_, value) in zip(variables, saved):
            variable.assign(variable + keras.ops.convert_to_tensor(value, variable.dtype))

    def report(self):
        """One line: how many checkpoints, their mean write time and share of an epoch."""
        if not self.saves:
            return "resume checkpoints: none written"
        seconds = sum(s for s, _ in self.saves) / len(self.saves)
        share = 100 * sum(s / max(e, 1e-9) for s, e in self.saves if e) / max(sum(1 for _, e in self.saves if e), 1)
        return (f"resume checkpoints: {len(self.saves)} written, {seconds:.2f} s each, {share:.1f}% of an epoch"
                + (f"; now every {self.every} epochs" if self.every > 1 else ""))

