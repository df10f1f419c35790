"""Downloads the package makes (the Tiny ImageNet archive, ResNet50's ImageNet weights),
and the one error they raise when the file cannot be had.

:func:`fetch` downloads with ``keras.utils.get_file`` (one attempt, a progress bar, kept
once complete) and checks the file's hash. A failed download becomes a
:class:`DownloadError` whose message is one paragraph: the address, what went wrong,
and the other ways to get the file. The command-line scripts
print it without a traceback (``--debug`` keeps the traceback). A file that arrives with
the wrong checksum (a truncated or altered download) is deleted and named.
"""
import hashlib
import os
import urllib.parse

import keras


class DownloadError(RuntimeError):
    """A file the package needs could not be downloaded; the message says what to do instead."""


def file_hash(path, algorithm="sha256"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reason(error):
    """What went wrong, in one line: the innermost cause of ``error`` without its traceback."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def host(url):
    return urllib.parse.urlsplit(url).netloc or url


def check_file(path, url, expected, algorithm="sha256", what="the download"):
    """Delete ``path`` and raise :class:`DownloadError` unless its hash is ``expected``."""
    got = file_hash(path, algorithm)
    if got != expected:
        size = os.path.getsize(path)
        os.remove(path)
        raise DownloadError(
            f"{what} from {url} is damaged: its {algorithm} is {got}, expected {expected} "
            f"({size:,} bytes arrived: truncated or altered on the way). The file was deleted; "
            "run the command again to download it again.")
    return path


def fetch(url, path, expected, algorithm="sha256"):
    """Download ``url`` to ``path`` unless a file with the ``expected`` hash is there already;
    return ``path``. Raises :class:`DownloadError` naming the URL and the reason; a file
    with another hash is deleted (see :func:`check_file`)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)  # get_file falls back to /tmp/.keras for a folder it cannot write
        try:
            keras.utils.get_file(os.path.basename(path), origin=url, cache_dir=os.path.dirname(folder),
                                 cache_subdir=os.path.basename(folder))
        except Exception as error:  # Keras raises a bare Exception for failed downloads
            raise DownloadError(reason(error)) from error
    return check_file(path, url, expected, algorithm, what=os.path.basename(path))
