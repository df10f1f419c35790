"""The time limit: a session ends within its duration at a resume point, and the same
command continues the run (exit status :data:`EXIT_TIME_LIMIT`).

Before a stage's first step in a session, :meth:`Deadline.check_stage` asks whether one
fits, judged by the last session's steps of the stage, or for a new stage the stage
before it's scaled by pixels, where timed as this session runs (``timed_on``). After each
step and each epoch, :class:`TimeLimit` asks whether the next step (and, where it ends an
epoch, the validation after it) and a checkpoint write fit, judged by this session's
record. Where one does not, the run writes its resume point there, inside an epoch or at
its end, and raises :class:`TimeLimitReached`.
"""
import argparse
import re
import time

import keras

from tiny_keras import backend, provenance, runs
from tiny_keras.engine import log
from tiny_keras.engine.session import describe_speed

EXIT_TIME_LIMIT = 75  # sysexits.h's EX_TEMPFAIL: stopped at --time-limit, to be run again
_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"{_NUMBER}|(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")


def parse_duration(text):
    """Seconds in ``text``: ``"5400"``, ``"90s"``, ``"90m"``, ``"1.5h"``, ``"1h30m"``, ``"2h5m10s"``."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 5400, 90s, 90m, 1.5h or 1h30m. Received: {text!r}")
    plain, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return plain + 3600 * hours + 60 * minutes + seconds


class TimeLimitReached(Exception):
    """A run stopped at its time limit at a resume point: its folder holds the checkpoint of
    the last epoch done, and the same call (the same command) continues from there."""


def timed_on(session):
    """What an epoch's time depends on beyond the recipe: the machine, the backend, XLA and
    steps per execution of a resolved ``session`` (``"AMD EPYC, 2 cores; tensorflow; XLA
    off, 1 step per execution"``). Epoch times are estimates for another session only where
    this is the same."""
    return (f"{provenance.this_machine()}; {backend.name()}; "
            f"{describe_speed(session.jit_compile, session.steps_per_execution)}")


def new_stage_epoch_seconds(recipe, index, progress, train_images, timing):
    """What an epoch of stage ``index`` should take before one has ended: the finished stage
    before it's mean epoch (``progress``), scaled by the images and pixels an epoch of each
    trains on (paper 1's 40px stage after its 32px one: x1.56). None for a first stage, and
    where that stage's epochs were not all timed as this session runs (``timing``)."""
    if index == 0:
        return None
    before = recipe.stages[index - 1]
    row = next((r for r in progress["runs"] if r["stage"] == before.name), None)
    if not row or not row.get("epochs") or not runs.timed_here(row, timing):
        return None

    def work(stage):
        size = stage.image_size or recipe.crop or 64
        return stage.steps(train_images) * stage.batch_size * size * size

    return row["seconds"] / row["epochs"] * work(recipe.stages[index]) / work(before)


class StopInsideEpoch(Exception):
    """Raised by :class:`TimeLimit` inside an epoch, its resume point written: Keras would
    otherwise validate and end the epoch. The stage catches it (``engine.stage``)."""


def format_step(seconds):
    """``"0.96 s"``, ``"12 s"``, ``"3 min"``: a step's length."""
    return f"{seconds:.2g} s" if seconds < 10 else log.format_duration(seconds)


class Deadline:
    """A session's deadline ``stop_by`` (a ``time.time()`` timestamp) on the engine's clock
    (``time.perf_counter``, which epochs are timed on), for the run in ``workdir``."""

    def __init__(self, stop_by, workdir):
        self.at = time.perf_counter() + (stop_by - time.time())
        self.workdir = workdir

    def left(self):
        return self.at - time.perf_counter()

    def check_stage(self, recipe, index, resume, progress, train_images, timing, steps_per_execution=1):
        """Raise :class:`TimeLimitReached` where stage ``index``'s next execution of
        ``steps_per_execution`` steps and a checkpoint write (``resume``: its ``state.json``,
        None for a new stage) would not end before the deadline."""
        stage = recipe.stages[index]
        steps = stage.steps(train_images)
        done = int(resume["epochs_done"]) if resume else 0
        done_steps = int((resume or {}).get("steps_done") or 0)
        if done >= stage.epochs:  # only the stage's ending is left
            return
        step = runs.recorded_step_seconds(resume, steps) if runs.timed_here(resume, timing) else None
        if step is not None:
            write, tail = resume.get("write_seconds") or 0.0, resume.get("tail_seconds") or 0.0
        else:
            epoch = new_stage_epoch_seconds(recipe, index, progress, train_images, timing)
            step, write, tail = (None, 0.0, 0.0) if epoch is None else (epoch / steps, 0.0, 0.0)
        estimate = None
        if step is not None:
            estimate = step * steps_per_execution + write + (tail if done_steps + steps_per_execution >= steps else 0.0)
        left = self.left()
        if left > 0 and not (estimate and left < estimate):
            return
        where = f"epoch {done + 1}/{stage.epochs}" + (f", step {done_steps + 1:,}/{steps:,}" if done_steps else "")
        self.stop(f"Stage '{stage.name}': not started, at the time limit ("
                  + (f"a step takes about {format_step(step)}, " if step else "")
                  + f"{log.format_duration(max(left, 0.0))} left): {where} is next",
                  "the run continues when started again")

    def stop(self, message, continues):
        """End the session: ``message`` and how the run ``continues`` to the log, the stop to
        ``run.json``, and :class:`TimeLimitReached` raised."""
        log.info(f"{message}; {continues}")
        provenance.record_stop(self.workdir, message)
        raise TimeLimitReached(message)


class TimeLimit(keras.callbacks.Callback):
    """Ends the stage where the next execution of steps would end after ``deadline``, with
    its validation where it ends an epoch, plus the longest checkpoint write: after an epoch
    (``run_checkpoint`` writes that epoch's resume point; ``stopped_at`` is ``(epochs done,
    0)``) or inside one (the resume point holds the steps done; ``stopped_at`` is ``(epochs
    done, steps done)`` and :class:`StopInsideEpoch` is raised). The timings are
    ``run_checkpoint``'s record. A stage's last epoch's end, or one early stopping ended, is
    left alone. Put it after ``run_checkpoint``."""

    def __init__(self, deadline, run_checkpoint, epochs):
        super().__init__()
        self.deadline = deadline
        self.run_checkpoint = run_checkpoint
        self.epochs = epochs
        self.stopped_at = None

    def seconds_left(self):
        return max(self.deadline - self.run_checkpoint.clock(), 0.0)

    def _fits(self, steps_done):
        """Whether the execution after ``steps_done`` steps of an epoch fits, with its checkpoint."""
        checkpoint = self.run_checkpoint
        step = checkpoint.step_seconds()
        if step is None:  # nothing timed yet: the stage's first execution on this machine
            return True
        execution = checkpoint.steps_per_execution
        need = step * execution + checkpoint.longest_write()
        if checkpoint.steps_per_epoch is not None and steps_done + execution >= checkpoint.steps_per_epoch:
            need += checkpoint.tail_seconds()
        return checkpoint.clock() + need <= self.deadline

    def on_train_batch_end(self, batch, logs=None):
        checkpoint = self.run_checkpoint
        done, steps = checkpoint.steps_done, checkpoint.steps_per_epoch
        if steps is None or done >= steps or self._fits(done):
            return
        checkpoint.save_now(checkpoint.epoch, done)
        self.stopped_at = (checkpoint.epoch, done)
        raise StopInsideEpoch(self.message(checkpoint.stage_name))

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training or epoch + 1 >= self.epochs:  # the stage ends here anyway (early stopping)
            return
        if self._fits(0):
            return
        self.run_checkpoint.save_now(epoch)
        self.stopped_at = (epoch + 1, 0)
        self.model.stop_training = True

    def message(self, stage):
        """What the stop says (``stage``: the stage's name)."""
        epochs, steps = self.stopped_at
        checkpoint = self.run_checkpoint
        where = (f"after epoch {epochs}/{self.epochs}" if not steps else
                 f"in epoch {epochs + 1}/{self.epochs} after step {steps:,}/{checkpoint.steps_per_epoch:,}")
        step = checkpoint.step_seconds()
        return (f"Stage '{stage}': stopped at the time limit {where} ("
                + (f"a step takes about {format_step(step)}, " if step else "")
                + f"{log.format_duration(self.seconds_left())} left), its checkpoint written")
