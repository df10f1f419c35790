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


class CorruptFile(ValueError):
    """A file the package wrote that cannot be read back (truncated, edited by hand); its
    message names the file. The command-line tools print it as one line."""


def read_json(path, default=_REQUIRED):
    """The JSON document at ``path``; ``default`` where the file does not exist, if given.
    Raises :class:`CorruptFile` where it is not valid JSON."""
    if default is not _REQUIRED and not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CorruptFile(f"{path}: not valid JSON ({error})") from None


def output_problem(path, overwrite=False, folder=False):
    """What is wrong with writing a tool's output to ``path``, as the end of one line (the
    caller names its flag and may add what it expected), or None: it exists and
    ``overwrite`` is False; it is a folder where a file is expected, or a file where a
    folder is (``folder=True``); a part of its parent is a file. Checked before the work
    that makes the output, so that a mistake costs nothing."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path) and not folder:
        return f"{path} is a folder; name a file"
    if folder and os.path.lexists(path) and not os.path.isdir(path):
        return f"{path} is a file"
    if os.path.lexists(path) and not overwrite:
        return f"{path} exists; pass --overwrite to replace it"
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent, up = os.path.dirname(parent), parent
        if up == parent:
            break
    if parent and not os.path.isdir(parent):
        return f"{parent} is a file, not a folder: the output cannot be written under it"
    return None


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
