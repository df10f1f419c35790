"""What a run says: the ``logging`` logger ``tiny_keras.engine``, sent while a run trains
(:func:`run_log`) to its ``train.log`` (every line, time-stamped: ``tail -f`` follows a
background run) and to the console: ``INFO`` lines (stages, time limits, results) unless
``verbose=0``, ``EPOCH`` lines (every epoch, progress inside long ones) with ``verbose=2``.
"""
import contextlib
import logging
import sys
import time

import keras

from tiny_keras import runs
from tiny_keras.status import format_duration  # noqa: F401 (the engine's modules take it from here)

LOGGER = logging.getLogger("tiny_keras.engine")
LOGGER.setLevel(logging.DEBUG)
LOGGER.propagate = False
EPOCH = 15  # between DEBUG and INFO
logging.addLevelName(EPOCH, "EPOCH")
CONSOLE_LEVELS = {1: logging.INFO, 2: EPOCH}  # verbose 0: no console handler
PROGRESS_SECONDS = 120  # EpochLog's progress lines inside an epoch: at most one per this many seconds


class _Stamped(logging.Formatter):
    """Every line of a record with its time: ``2026-12-05 22:38:39 Stage 1/3 ...``."""

    def format(self, record):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return "\n".join(f"{stamp} {line}" for line in record.getMessage().splitlines())


@contextlib.contextmanager
def run_log(path, verbose):
    """Send :data:`LOGGER`'s lines to ``path`` (appended; None: no file) and, by ``verbose``
    (0, 1 or 2), to ``sys.stdout``, until the block ends."""
    handlers = []
    if path is not None:
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
        handlers[-1].setFormatter(_Stamped())
        handlers[-1].setLevel(EPOCH)
    if verbose in CONSOLE_LEVELS:
        handlers.append(logging.StreamHandler(sys.stdout))
        handlers[-1].setLevel(CONSOLE_LEVELS[verbose])
    for handler in handlers:
        LOGGER.addHandler(handler)
    try:
        yield LOGGER
    finally:
        for handler in handlers:
            LOGGER.removeHandler(handler)
            handler.close()


def info(text):
    LOGGER.info(text)


def epoch(text):
    LOGGER.log(EPOCH, text)


PERCENT_METRICS = ("top1", "top5", "mean_iou", "corloc")  # fractions shown as percent in the epoch lines


def format_epoch(stage, number, epochs, logs, images_per_second, seconds):
    """``stage 'train' epoch 3/15: loss 4.2423 top1 10.90% ... | lr 0.001 | 2,041 images/s | 190 s``."""
    def metric(name):
        value = float(logs[name])
        return f"{name} {100 * value:.2f}%" if name.endswith(PERCENT_METRICS) else f"{name} {value:.4f}"

    train = [metric(k) for k in ("loss", "top1", "top5") if k in logs]
    val = [metric(k) for k in ("val_loss", "val_top1", "val_top5") if k in logs]
    val += [metric(k) for k in logs if k.startswith("val_") and k not in ("val_loss", "val_top1", "val_top5")]
    lr = f" | lr {float(logs['learning_rate']):.3g}" if "learning_rate" in logs else ""
    return (f"stage '{stage}' epoch {number}/{epochs}: {' '.join(train)}" + (f" | {' '.join(val)}" if val else "")
            + f"{lr} | {images_per_second:,.0f} images/s | {seconds:.0f} s")


def format_progress(stage, number, epochs, step, steps, images_per_second, seconds_left):
    """``stage 'train' epoch 1/60: step 90/781 (12%) | 96 images/s | training steps end in about 15 min``."""
    return (f"stage '{stage}' epoch {number}/{epochs}: step {step:,}/{steps:,} ({100 * step / steps:.0f}%) | "
            f"{images_per_second:,.0f} images/s | training steps end in about {format_duration(seconds_left)}")


def format_table(rows):
    """The per-stage results with the paper's figure beside ours."""
    header = f"{'model':<26}{'stage':<12}{'epochs':>7}{'val top-1':>11}{'val top-5':>11}{'paper top-1':>13}{'seconds':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        paper = "-" if r.get("paper_val_top1") is None else f"{r['paper_val_top1']:.2f}"
        top5 = "-" if r.get("val_top5") is None else f"{r['val_top5']:.2f}"
        lines.append(
            f"{r['model']:<26}{r['stage']:<12}{r.get('epochs') or '-':>7}{r['val_top1']:>11.2f}{top5:>11}"
            f"{paper:>13}{r.get('seconds', 0):>10.1f}"
        )
    return "\n".join(lines)


class EpochLog(keras.callbacks.Callback):
    """One ``EPOCH`` line per epoch (metrics, learning rate, images/s, seconds, what is
    left of the stage), and inside epochs longer than ``progress_seconds`` a progress line
    at most that often (step, images/s, when the epoch's steps end; off with None or no
    ``steps_per_epoch``). ``resumed``: ``(epoch, steps done)`` where the stage resumed
    inside an epoch, whose line then counts this session's steps of it. Put it after
    ``LearningRateLogger``, whose rate it prints."""

    async_safe = True  # reads the clock and logs: Keras may call it from its dispatch thread

    def __init__(self, stage, epochs, images_per_epoch, steps_per_epoch=None, progress_seconds=PROGRESS_SECONDS,
                 clock=time.perf_counter, resumed=None):
        super().__init__()
        self.stage, self.epochs, self.images_per_epoch = stage, epochs, images_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.progress_seconds = progress_seconds if steps_per_epoch else None
        self.clock = clock
        self.resumed = resumed
        self._start = self._train_end = self._last_progress = None
        self._epoch = 0
        self._offset = 0  # the steps of this epoch done before this session
        self._epoch_seconds = []  # this process's epochs, as whole epochs: the estimate of what is left

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._start, self._train_end = epoch, self.clock(), None
        self._last_progress = self._start
        self._offset = runs.steps_before(self.resumed, epoch)

    def _share(self):
        """The share of this epoch's steps trained in this session."""
        return 1.0 - self._offset / self.steps_per_epoch if self._offset else 1.0

    def on_train_batch_end(self, batch, logs=None):
        if self.progress_seconds is None or self._start is None:
            return
        now = self.clock()
        if now - self._last_progress < self.progress_seconds:
            return
        self._last_progress = now
        total, here = self.steps_per_epoch, batch + 1  # Keras passes the index of the execution's last step
        done = self._offset + here
        rate = self.images_per_epoch / total * here / max(now - self._start, 1e-9)
        epoch(format_progress(self.stage, self._epoch + 1, self.epochs, done, total, rate,
                              (total - done) * (now - self._start) / here))

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_end is None:  # validation inside fit
            self._train_end = self.clock()

    def on_epoch_end(self, number, logs=None):
        now = self.clock()
        train_seconds = max((self._train_end or now) - self._start, 1e-9)
        share = self._share()
        self._epoch_seconds.append((now - self._start) / share)
        line = format_epoch(self.stage, number + 1, self.epochs, logs or {},
                            self.images_per_epoch * share / train_seconds, now - self._start)
        left = self.epochs - (number + 1)
        if left > 0:
            mean = sum(self._epoch_seconds) / len(self._epoch_seconds)
            line += f" | {left} epoch{'s' if left > 1 else ''} left, about {format_duration(left * mean)}"
        if self._offset:
            line += f" | resumed after step {self._offset:,}/{self.steps_per_epoch:,}"
        epoch(line)
