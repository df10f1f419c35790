"""Thin Keras callbacks over the package's mechanisms: learning-rate logs, snapshots, run state.

Every file written here goes through ``tiny_keras.files`` (a temporary name, then a
rename), so an interrupted run never leaves a half-written checkpoint.
"""
import json
import math
import os
import time

import keras
import numpy as np

from tiny_keras import files, runs


def current_lr(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate of each epoch's last step to the logs (``learning_rate``).

    With ``schedule`` (the optimizer's ``LearningRateSchedule``), the rate is the schedule
    at the optimizer's last step, read once per epoch; without one, the optimizer's rate
    (which ReduceLROnPlateau may have changed)."""

    def __init__(self, schedule=None):
        super().__init__()
        self.schedule = schedule

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.schedule is None:
            logs["learning_rate"] = current_lr(self.model)
        else:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.schedule(max(step, 0))))


def log_line(path, text, echo=True):
    """Append ``text`` (one or more lines) to the run's plain-text log ``path`` and, with
    ``echo``, print it: what ``tail -f WORKDIR/train.log`` shows of a background run."""
    if echo:
        print(text, flush=True)
    if path is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(f"{stamp} {line}\n" for line in text.splitlines()))


def format_epoch(stage, epoch, epochs, logs, images_per_second, seconds):
    """``stage 'train' epoch 3/15: loss 4.2423 top1 10.90% ... | lr 0.001 | 2,041 images/s | 190 s``."""
    def metric(name):
        value = float(logs[name])
        return f"{name} {100 * value:.2f}%" if name.endswith(("top1", "top5")) else f"{name} {value:.4f}"

    train = [metric(k) for k in ("loss", "top1", "top5") if k in logs]
    val = [metric(k) for k in ("val_loss", "val_top1", "val_top5") if k in logs]
    lr = f" | lr {float(logs['learning_rate']):.3g}" if "learning_rate" in logs else ""
    return (f"stage '{stage}' epoch {epoch}/{epochs}: {' '.join(train)}" + (f" | {' '.join(val)}" if val else "")
            + f"{lr} | {images_per_second:,.0f} images/s | {seconds:.0f} s")


PROGRESS_SECONDS = 120  # EpochLog's progress lines inside an epoch: at most one per this many seconds


def format_duration(seconds):
    """``"45 s"``, ``"12 min"``, ``"3.1 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class EpochLog(keras.callbacks.Callback):
    """One line per epoch (stage, epoch, metrics, learning rate, training images/s, seconds,
    and what is left of the stage) appended to ``path`` and, with ``echo``, printed: the
    output of runs whose stdout is not a terminal, where a progress bar would write a line
    per step. Put it after ``LearningRateLogger`` so the line has the learning rate.

    An epoch that lasts longer than ``progress_seconds`` (a CPU epoch of many minutes) also
    gets a progress line at most every ``progress_seconds``: the step reached, the training
    rate so far and when the epoch's training steps will end. ``None`` turns them off.
    """

    async_safe = True  # reads the clock and appends to the log: Keras may call it from its dispatch thread

    def __init__(self, path, stage, epochs, images_per_epoch, echo=True, steps_per_epoch=None,
                 progress_seconds=PROGRESS_SECONDS, clock=time.perf_counter):
        super().__init__()
        self.path, self.stage, self.epochs = path, stage, epochs
        self.images_per_epoch = images_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.progress_seconds = progress_seconds if steps_per_epoch else None
        self.echo = echo
        self.clock = clock
        self._start = self._train_end = self._last_progress = None
        self._epoch = 0
        self._epoch_seconds = []  # this process's epochs: the estimate of what is left

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._start, self._train_end = epoch, self.clock(), None
        self._last_progress = self._start

    def on_train_batch_end(self, batch, logs=None):
        if self.progress_seconds is None or self._start is None:
            return
        now = self.clock()
        if now - self._last_progress < self.progress_seconds:
            return
        self._last_progress = now
        done = batch + 1  # Keras passes the index of the execution's last step
        total = self.steps_per_epoch
        rate = self.images_per_epoch / total * done / max(now - self._start, 1e-9)
        left = (total - done) * (now - self._start) / done
        log_line(self.path, f"stage '{self.stage}' epoch {self._epoch + 1}/{self.epochs}: step {done:,}/{total:,} "
                            f"({100 * done / total:.0f}%) | {rate:,.0f} images/s | training steps end in about "
                            f"{format_duration(left)}", self.echo)

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_end is None:  # validation inside fit
            self._train_end = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        train_seconds = max((self._train_end or now) - self._start, 1e-9)
        self._epoch_seconds.append(now - self._start)
        line = format_epoch(self.stage, epoch + 1, self.epochs, logs or {}, self.images_per_epoch / train_seconds,
                            now - self._start)
        left = self.epochs - (epoch + 1)
        if left > 0:
            mean = sum(self._epoch_seconds) / len(self._epoch_seconds)
            line += f" | {left} epoch{'s' if left > 1 else ''} left, about {format_duration(left * mean)}"
        log_line(self.path, line, self.echo)


class Snapshots(keras.callbacks.Callback):
    """Saves ``snapshot-eNNN.keras`` every ``every_epochs`` epochs, or ``snapshot-sNNNNNN.keras``
    every ``every_steps`` steps (paper 5's snapshot ensembles; names: ``runs.snapshot_name``)."""

    def __init__(self, folder, every_epochs=None, every_steps=None, steps_per_epoch=None):
        super().__init__()
        if bool(every_epochs) == bool(every_steps):
            raise ValueError(f"give exactly one of every_epochs or every_steps. Received: {every_epochs=}, {every_steps=}")
        self.folder = folder
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0
        self.saved = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _save(self, name):
        path = os.path.join(self.folder, name)
        files.save_model(self.model, path)
        self.saved.append(path)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps:
            step = self._epoch * self.steps_per_epoch + batch + 1
            if step % self.every_steps == 0:
                self._save(runs.snapshot_name(step=step))

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
            self._save(runs.snapshot_name(epoch=epoch + 1))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model's weights (no optimizer state: a third of a full checkpoint with
    Adam) to ``filepath`` (``*.weights.h5``) whenever ``monitor`` improves, atomically
    (unlike ``keras.callbacks.ModelCheckpoint``, whose interrupted write leaves a broken
    file). ``model.load_weights(filepath)`` puts them back."""

    def __init__(self, filepath, monitor="val_top1", mode="max"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'. Received: {mode=}")
        self.filepath = filepath
        self.monitor = monitor
        self.mode = mode
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value
            files.save_weights(self.model, self.filepath)


class ActivationPercentiles(keras.callbacks.Callback):
    """Records, after every epoch, percentiles of two outputs on a fixed batch of
    validation images: the backbone's feature maps (the last conv block, the head's input;
    ``ImageClassifier.feature_maps``) and the logits (paper 2, figures 9-10). Cheap: one
    forward pass of a few images per epoch.

    Writes ``path`` (JSON, atomically): ``{"percentiles": [...], "layers": {"last_block":
    "<backbone name> output", "logits": "logits"}, "epochs": [{"epoch": e, "last_block": [...],
    "logits": [...]}, ...]}``; a resumed run appends to the same file.
    """

    PERCENTILES = (0, 7, 16, 31, 50, 69, 84, 93, 100)  # TensorBoard's histogram bands

    def __init__(self, images, path):
        super().__init__()
        self.images = images
        self.path = path
        self._probe = None

    def on_epoch_end(self, epoch, logs=None):
        # The model is an ImageClassifier: its backbone's input for these images, and a probe
        # giving the backbone's feature maps (the input of its head) and the logits.
        if self._probe is None:
            self._probe = (self.model.backbone_probe("feature_maps", "logits"),
                           {"last_block": f"{self.model.backbone.name} output",
                            "logits": self.model.network.layers[-1].name})
        probe, names = self._probe
        x = self.model.prepare(keras.ops.convert_to_tensor(self.images), training=False)
        block, logits = probe(x, training=False)
        record = {"epoch": epoch}
        for key, value in (("last_block", block), ("logits", logits)):
            values = keras.ops.convert_to_numpy(keras.ops.cast(value, "float32")).ravel()
            record[key] = [float(v) for v in np.percentile(values, self.PERCENTILES)]
        data = {"percentiles": list(self.PERCENTILES), "layers": names, "epochs": []}
        if os.path.exists(self.path):
            with open(self.path) as f:
                data = json.load(f)
        data["epochs"] = [e for e in data["epochs"] if e["epoch"] < epoch] + [record]
        files.write_json(data, self.path)


# The attributes of Keras's stateful callbacks that a resumed run needs back.
_CALLBACK_STATE = {
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    keras.callbacks.EarlyStopping: ("wait", "best", "stopped_epoch", "best_epoch"),
    keras.callbacks.ModelCheckpoint: ("best",),
    BestCheckpoint: ("best",),
}


def callback_state(callbacks):
    state = {}
    for i, cb in enumerate(callbacks):
        for cls, attrs in _CALLBACK_STATE.items():
            if isinstance(cb, cls):
                state[f"{i}:{type(cb).__name__}"] = {a: getattr(cb, a, None) for a in attrs}
    return state


def restore_callback_state(callbacks, state):
    for i, cb in enumerate(callbacks):
        saved = state.get(f"{i}:{type(cb).__name__}")
        if saved:
            for attr, value in saved.items():
                if value is not None:
                    setattr(cb, attr, value)


class RunCheckpoint(keras.callbacks.Callback):
    """The run's resume point: the model (with its optimizer) to
    ``checkpoint-<stage>-<epochs>.keras``, then the run position to ``state.json`` (stage,
    completed epochs, that checkpoint's name, stateful callbacks' state, this session's mean
    epoch time and longest checkpoint write, and what timed them, ``timed_on``), then the older
    checkpoint is removed. Each file is written atomically and ``state.json`` is written
    last, so whenever a run is killed, ``state.json`` names a complete checkpoint of the
    epoch it records. ``tiny_keras.train`` resumes from these files.

    Written after every epoch while a checkpoint costs at most ``max_cost`` (5%) of an
    epoch's time; when it costs more (a large model whose epochs take seconds on a GPU),
    every k epochs, k the smallest that keeps it within ``max_cost``; always after the
    stage's last epoch (``epochs``). A resumed run so loses at most k - 1 epochs. With
    ``every`` it is every ``every`` epochs whatever the cost. ``save_now(epoch)`` writes one
    out of turn (where ``TimeLimit`` stops the run). ``report()`` says what the checkpoints cost.

    Put it after the callbacks it records: Keras's callbacks reset their state in
    ``on_train_begin``, so the saved state (``restore``) is put back after them.
    """

    def __init__(self, folder, stage_index, stage_name, callbacks=(), restore=None, start=None, epochs=None,
                 max_cost=0.05, every=None, clock=time.perf_counter, timed_on=None):
        super().__init__()
        self.clock = clock
        self.timed_on = timed_on  # the machine and settings the epochs run on, saved beside their mean
        self.start = clock() if start is None else start
        self.folder = folder
        self.stage_index = stage_index
        self.stage_name = stage_name
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
        """The mean length of this session's epochs (None before the first ends); saved in
        ``state.json``, where a time-limited session judges its first epoch by it (and by the
        longest write), and ``TimeLimit`` the next."""
        return sum(self._epoch_seconds) / len(self._epoch_seconds) if self._epoch_seconds else None

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
        """Writes the checkpoint of ``epoch`` (0-based) unless it is written already: at an
        epoch's end, where the run is to stop (``TimeLimit``)."""
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
            dict(
                stage_index=self.stage_index,
                stage=self.stage_name,
                epochs_done=epoch + 1,
                checkpoint=name,
                learning_rate=current_lr(self.model),
                seconds=self.clock() - self.start,
                epoch_seconds=self.mean_epoch_seconds(),
                write_seconds=max(self.longest_write(), model_seconds),
                timed_on=self.timed_on,
                callbacks=callback_state(self.callbacks),
            ),
            os.path.join(self.folder, runs.STATE),
        )
        runs.remove_checkpoints(self.folder, keep=name)

    def longest_write(self):
        """The longest checkpoint write of this session in seconds (0.0 before the first)."""
        return max((seconds for seconds, _ in self.saves), default=0.0)

    def report(self):
        """One line: how many checkpoints, their mean write time and share of an epoch."""
        if not self.saves:
            return "resume checkpoints: none written"
        seconds = sum(s for s, _ in self.saves) / len(self.saves)
        share = 100 * sum(s / max(e, 1e-9) for s, e in self.saves) / len(self.saves)
        return (f"resume checkpoints: {len(self.saves)} written, {seconds:.2f} s each, {share:.1f}% of an epoch"
                + (f"; now every {self.every} epochs" if self.every > 1 else ""))


class TimeLimitReached(Exception):
    """A run stopped at its time limit (``tiny_keras.train.train(stop_by=...)``) at a resume
    point: its folder holds the checkpoint of the last epoch done, and the same call (the
    same command) continues from there."""


class TimeLimit(keras.callbacks.Callback):
    """Ends the stage at the end of an epoch after which the next would not finish before
    ``deadline`` (a time on ``run_checkpoint.clock``), having ``run_checkpoint`` (a
    ``RunCheckpoint``) write that epoch's resume point; ``stopped_after`` is then the number
    of epochs done.

    The next epoch is judged from ``run_checkpoint``'s record of this session: the mean of its
    epochs (training and validation), and the longest checkpoint write so far for the one
    written at that epoch's end (on schedule or by a stop). A stage's last epoch always
    completes its stage, and an epoch where an earlier callback (early stopping) ended the
    stage is left to it. Put it after ``run_checkpoint``, which has then recorded the epoch.
    (Whether a stage's first epoch in a session starts at all is the engine's question:
    ``tiny_keras.train.time_left_for_stage``.)
    """

    def __init__(self, deadline, run_checkpoint, epochs):
        super().__init__()
        self.deadline = deadline
        self.run_checkpoint = run_checkpoint
        self.epochs = epochs
        self.stopped_after = None

    def next_epoch_seconds(self):
        """The expected length of the next epoch: the mean of this session's (0.0 before one ends)."""
        return self.run_checkpoint.mean_epoch_seconds() or 0.0

    def seconds_left(self):
        return max(self.deadline - self.run_checkpoint.clock(), 0.0)

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training or epoch + 1 >= self.epochs:  # the stage ends here anyway (early stopping)
            return
        checkpoint = self.run_checkpoint
        if checkpoint.clock() + self.next_epoch_seconds() + checkpoint.longest_write() <= self.deadline:
            return
        checkpoint.save_now(epoch)
        self.stopped_after = epoch + 1
        self.model.stop_training = True
