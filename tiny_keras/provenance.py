"""Where a run came from: the command, the package's commit, the backend, the library
versions and the machine, so a published number can be traced and repeated.

``train.train`` writes this to ``WORKDIR/run.json`` as each session of a run starts
(a resumed run adds a session), and completes it when the run finishes::

    {"sessions": [{"command", "started", "environment"[, "stopped", "stop_reason"]}, ...],
     "finished": date, "train_seconds": seconds spent in the stages (resumes included)}

:func:`record_session` and :func:`record_finish` write it; :func:`record_stop` marks a
session that ended at its time limit.
"""
import datetime
import functools
import os
import platform
import shlex
import subprocess
import sys

import keras
import numpy

from tiny_keras import __version__, backend, files, runs

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Environment variables that change what a run computes or where it runs.
RELEVANT_ENV = ("KERAS_BACKEND", "CUDA_VISIBLE_DEVICES", "TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS", "TINY_KERAS_CACHE")


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command(argv=None):
    """The command line of this process as it can be typed again: ``python`` and its
    arguments (``-m module`` and ``-c`` included), paths as given."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv) if argv is None else list(argv)
    return " ".join(["python"] + [shlex.quote(a) for a in argv[1:]])


def git_commit(root=PACKAGE_ROOT):
    """``{"commit": sha, "dirty": bool}`` of the checkout the package runs from, or ``{}``
    where it is not a git checkout (an installed wheel)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": sha, "dirty": bool(status.strip())}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide a run's speed in a precision (recorded with the machine).
PRECISION_CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def versions():
    found = {"python": platform.python_version(), "keras": keras.__version__, "numpy": numpy.__version__}
    for name in ("tensorflow", "jax", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = getattr(module, "__version__", "?")
    found["tiny_keras"] = __version__
    return found


def environment():
    """Everything about this process that a reader needs to judge or repeat a number."""
    return {
        "backend": backend.name(),
        "versions": versions(),
        "source": git_commit(),
        "machine": machine(),
        "environment_variables": {k: os.environ[k] for k in RELEVANT_ENV if k in os.environ},
    }


def describe_machine(env):
    """A short name for the machine of an :func:`environment`: the accelerator, or the CPU and cores."""
    machine = env["machine"]
    if machine.get("accelerators"):
        return ", ".join(machine["accelerators"])
    return f"{machine['cpu']}, {machine['cores']} cores"


def machine():
    """This process's machine: CPU model, cores, the CPU features that matter to precision
    (:data:`PRECISION_CPU_FLAGS`), accelerators, platform."""
    flags = backend.cpu_flags()
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "cpu_flags": [f for f in PRECISION_CPU_FLAGS if f in flags],
            "accelerators": list(backend.accelerators()), "platform": platform.platform()}


@functools.lru_cache(maxsize=None)
def this_machine():
    """:func:`describe_machine` of this process's machine (its accelerators, or its CPU and cores)."""
    return describe_machine({"machine": machine()})


def record_session(workdir, new_run=False, **fields):
    """Add this process (command, date, commit, backend, versions, machine, and ``fields``,
    e.g. ``precision``) to ``workdir/run.json``; with ``new_run`` (a run that starts over),
    as its only session."""
    path = os.path.join(workdir, runs.RUN_INFO)
    run = {"sessions": []} if new_run else files.read_json(path, {"sessions": []})
    run["sessions"].append({"command": command(), "cwd": os.getcwd(), "started": now(), "environment": environment(),
                            **fields})
    files.write_json(run, path)


def record_stop(workdir, reason):
    """Mark this process's session in ``workdir/run.json`` stopped now, for ``reason``
    (the run is unfinished: a later session continues it)."""
    path = os.path.join(workdir, runs.RUN_INFO)
    run = files.read_json(path, {"sessions": []})
    if run["sessions"]:
        run["sessions"][-1].update(stopped=now(), stop_reason=reason)
        files.write_json(run, path)


def record_finish(workdir, **fields):
    """Mark the run in ``workdir/run.json`` finished now, with ``fields`` (``train_seconds`` ...)."""
    path = os.path.join(workdir, runs.RUN_INFO)
    run = files.read_json(path, {"sessions": []})
    run.update(finished=now(), **fields)
    files.write_json(run, path)
