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
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if level < 1 or backend != "tensorflow" or "tensorflow" in sys.modules:
        return
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a notebook): nothing to hold back
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), stderr_fd)
        try:
            import tensorflow as tf  # here, with stderr captured: the point of this function

            tf.config.list_logical_devices()  # device start-up notices, here rather than mid-run
        finally:  # also when the import fails: its messages are written back
            sys.stderr.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            capture.seek(0)
            kept = list(_notice_filter(capture.read().decode("utf-8", "replace").splitlines()))
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
