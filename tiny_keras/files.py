"""Writing files so that an interruption never leaves a half-written one.

Everything the package writes (checkpoints, models, results, histories, reports) goes
through :func:`atomic_path`: the content is written to a temporary name in the same
folder and renamed into place only when complete. The one exception is a run's
``train.log``, which only ever grows by whole lines (``engine.log``).
"""
import contextlib
import json
import os
import shutil


@contextlib.contextmanager
def atomic_path(path, suffix="", overwrite=None):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds,
    remove it if not. ``suffix`` keeps an extension some writers require (``.keras``).

    The block may write a file or a folder (a SavedModel) there. ``overwrite``: None
    replaces an existing file as ``os.replace`` does; True replaces whatever is at
    ``path``, a folder too; False keeps it and raises ``FileExistsError``."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")
    _remove(tmp)  # left by an earlier process of the same id
    try:
        yield tmp
        if os.path.lexists(path) and overwrite is not None:
            if not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """``open`` for writing through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


_REQUIRED = object()


def read_json(path, default=_REQUIRED):
    """The JSON document at ``path``; ``default`` where the file does not exist, if given."""
    if default is not _REQUIRED and not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(obj, path):
    with atomic_open(path, encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=float)


def write_text(text, path):
    """``text`` as the whole content of ``path`` (UTF-8)."""
    with atomic_open(path, encoding="utf-8") as f:
        f.write(text)


def copy(src, dst):
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_model(model, path):
    """``model.save(path)`` (a ``.keras`` file), atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def save_weights(model, path):
    """``model.save_weights(path)`` (a ``.weights.h5`` file: no optimizer state), atomically."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
