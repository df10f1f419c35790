"""TensorFlow's start-up notices, held back where ``TF_CPP_MIN_LOG_LEVEL`` asks for it.

TensorFlow 2.20+ prints its start-up notices (oneDNN on, no CUDA driver, CPU features)
through absl before its log level applies, so ``TF_CPP_MIN_LOG_LEVEL=2`` does not hide
them. The package's command-line tools and scripts (and ``python -m tiny_keras.data`` /
``.models``) set that variable to 2 unless the user set it; where it is 1 or more and
TensorFlow is not loaded yet, the first import of TensorFlow runs with the process's
stderr captured, and only the lines that are not such notices are written back. Warnings and errors still show; ``TF_CPP_MIN_LOG_LEVEL=0``
shows everything.
"""
import os
import re
import sys
import tempfile

# The notices: absl's banner, INFO lines, and "failed call to cuInit" where TensorFlow has
# just said there is no CUDA driver (a CPU-only machine with a CUDA build).
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_INFO = re.compile(r"^I\d{4} ")
_NO_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT = "failed call to cuInit"


def _notice_filter(lines):
    no_driver = any(_NO_DRIVER in line for line in lines)
    for line in lines:
        if line.strip() == _BANNER or _INFO.match(line) or (no_driver and _CUINIT in line):
            continue
        if line.startswith("To enable the following instructions:"):  # the CPU-features notice's 2nd line
            continue
        yield line


def import_tensorflow():
    """Import TensorFlow (and start its devices) with the notices held back, where asked."""
    command = getattr(sys, "orig_argv", [])
    if len(command) > 2 and command[1] == "-m" and command[2].startswith("tiny_keras."):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # python -m tiny_keras.data / .models
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow" or "tensorflow" in sys.modules:
        return
    _quietly(_start_tensorflow, needed=False)  # nothing to hold back: Keras imports it as usual


def import_tensorflow_beside_backend():
    """On JAX or PyTorch: TensorFlow as a host library only (TensorBoard's summaries, TFDS,
    and Keras's ``set_random_seed``, which seeds it where installed), imported with its
    notices held back and its GPUs hidden from it, so it never starts CUDA nor takes the
    accelerator memory the backend needs. Raises ImportError where it is not installed."""
    if "tensorflow" in sys.modules:
        if sys.modules["tensorflow"] is None:
            raise ImportError("import of tensorflow halted; None in sys.modules")
        return sys.modules["tensorflow"]
    return _quietly(_hide_gpus, needed=True)


def _start_tensorflow():
    import tensorflow as tf  # here, with stderr captured: the point of this module

    tf.config.list_logical_devices()  # device start-up notices, here rather than mid-run
    return tf


def _hide_gpus():
    import tensorflow as tf  # here, with stderr captured: the point of this module

    tf.config.set_visible_devices([], "GPU")  # before anything starts TensorFlow's devices
    return tf


def _quietly(start, needed):
    """``start()`` with the process's stderr captured where ``TF_CPP_MIN_LOG_LEVEL`` >= 1,
    TensorFlow's start-up notices dropped and every other line written back. Where
    nothing is to be held back, ``start()`` as it is if ``needed``, else nothing."""
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a notebook): nothing to hold back
        stderr_fd = None
    if level < 1 or stderr_fd is None:
        return start() if needed else None
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), stderr_fd)
        try:
            return start()
        finally:  # also when the import fails: its messages are written back
            sys.stderr.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            capture.seek(0)
            kept = list(_notice_filter(capture.read().decode("utf-8", "replace").splitlines()))
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
