"""The time limit: a session ends within its duration at a checkpointed epoch, and the
same command continues the run (exit status :data:`EXIT_TIME_LIMIT`).

Before a stage's first epoch in a session, :meth:`Deadline.check_stage` asks whether it
fits, judged by the last session's epochs of the stage, or for a new stage the stage
before it's scaled by pixels, where timed as this session runs (``timed_on``). After each
epoch, :class:`TimeLimit` asks whether the next one and a checkpoint write fit, judged by
this session's epochs. Where one does not, the run stops at a resume point and raises
:class:`TimeLimitReached`.
"""
import argparse
import re
import time

import keras

from tiny_keras import backend, provenance
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
    if not row or not row.get("epochs") or row.get("timed_on") != timing:
        return None

    def work(stage):
        size = stage.image_size or recipe.crop or 64
        return stage.steps(train_images) * stage.batch_size * size * size

    return row["seconds"] / row["epochs"] * work(recipe.stages[index]) / work(before)


class Deadline:
    """A session's deadline ``stop_by`` (a ``time.time()`` timestamp) on the engine's clock
    (``time.perf_counter``, which epochs are timed on), for the run in ``workdir``."""

    def __init__(self, stop_by, workdir):
        self.at = time.perf_counter() + (stop_by - time.time())
        self.workdir = workdir

    def left(self):
        return self.at - time.perf_counter()

    def check_stage(self, recipe, index, resume, progress, train_images, timing):
        """Raise :class:`TimeLimitReached` where stage ``index``'s next epoch (``resume``: its
        ``state.json``, None for a new stage) would not end before the deadline."""
        stage = recipe.stages[index]
        done = int(resume["epochs_done"]) if resume else 0
        if done >= stage.epochs:  # only the stage's ending is left
            return
        if resume and resume.get("epoch_seconds") and resume.get("timed_on") == timing:
            estimate = resume["epoch_seconds"] + resume.get("write_seconds", 0.0)
        else:
            estimate = new_stage_epoch_seconds(recipe, index, progress, train_images, timing)
        left = self.left()
        if left > 0 and not (estimate and left < estimate):
            return
        self.stop(f"Stage '{stage.name}': not started, at the time limit ("
                  + (f"an epoch takes about {log.format_duration(estimate)}, " if estimate else "")
                  + f"{log.format_duration(max(left, 0.0))} left): epoch {done + 1}/{stage.epochs} is next",
                  "the run continues when started again")

    def stop(self, message, continues):
        """End the session: ``message`` and how the run ``continues`` to the log, the stop to
        ``run.json``, and :class:`TimeLimitReached` raised."""
        log.info(f"{message}; {continues}")
        provenance.record_stop(self.workdir, message)
        raise TimeLimitReached(message)


class TimeLimit(keras.callbacks.Callback):
    """Ends the stage after an epoch when the next, at this session's mean epoch plus its
    longest checkpoint write (``run_checkpoint``'s record), would end after ``deadline``;
    ``run_checkpoint`` writes that epoch's resume point and ``stopped_after`` is the epochs
    done. A stage's last epoch, or one early stopping ended, is left alone. Put it after
    ``run_checkpoint``."""

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

    def message(self, stage):
        """What the stop says (``stage``: the stage's name)."""
        return (f"Stage '{stage}': stopped at the time limit after epoch {self.stopped_after}/{self.epochs} (an "
                f"epoch takes about {log.format_duration(self.next_epoch_seconds())}, "
                f"{log.format_duration(self.seconds_left())} left), its checkpoint written")
