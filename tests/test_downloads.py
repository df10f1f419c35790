"""Downloads that fail or arrive damaged: the Tiny ImageNet archive (TFDS) and ResNet50's
ImageNet weights, fetched for real from a server on this machine's loopback interface."""
import contextlib
import importlib
import functools
import hashlib
import http.server
import socket
import threading

import pytest

from conftest import run_script
from tiny_keras import download


@contextlib.contextmanager
def serving(folder):
    """An HTTP server for ``folder`` on 127.0.0.1; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def refused_url(name):
    """The URL of a port on 127.0.0.1 where nothing listens: the connection is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


@pytest.fixture
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
def test_script_without_data_whose_download_is_refused_says_what_to_do(tmp_path, monkeypatch, no_proxy):
    url = refused_url("tiny-imagenet-200.zip")
    monkeypatch.setenv("TINY_IMAGENET_URL", url)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    args = ("paper5_caffe_cnn.py", "--smoke", "--model", "shallow", "--workdir", tmp_path / "run")
    out = run_script(*args)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    (message,) = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert message.startswith(f"error: Could not download Tiny ImageNet from {url}: ")
    assert "Connection refused" in message or "ConnectionRefused" in message
    for way in ("--data PATH", "$TINY_IMAGENET_URL", str(tmp_path / "tfds" / "downloads" / "manual")):
        assert way in message
    debug = run_script(*args, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DownloadError" in debug.stderr


def test_truncated_archive_is_detected_by_its_checksum_and_deleted(fixture_zip, tmp_path, monkeypatch, no_proxy):
    import tensorflow_datasets as tfds

    importlib.import_module("tiny_keras.data")  # registers tiny_imagenet

    served = tmp_path / "served"
    served.mkdir()
    whole = fixture_zip.read_bytes()
    (served / "tiny-imagenet-200.zip").write_bytes(whole[: len(whole) // 2])
    with serving(served) as base:
        monkeypatch.setenv("TINY_IMAGENET_URL", f"{base}/tiny-imagenet-200.zip")
        monkeypatch.setenv("TINY_IMAGENET_SHA256", hashlib.sha256(whole).hexdigest())
        with pytest.raises(download.DownloadError) as error:
            tfds.load("tiny_imagenet", split="validation", data_dir=str(tmp_path / "tfds"))
    message = str(error.value)
    assert message.startswith(f"Could not download Tiny ImageNet from {base}/tiny-imagenet-200.zip: ")
    assert f"is damaged: its sha256 is {hashlib.sha256(whole[: len(whole) // 2]).hexdigest()}, expected " \
           f"{hashlib.sha256(whole).hexdigest()} ({len(whole) // 2:,} bytes arrived" in message
    assert not list((tmp_path / "tfds" / "downloads").rglob("*tiny-imagenet-200*.zip"))  # nothing damaged kept


def test_resnet50_weights_refused_or_damaged(tmp_path, monkeypatch, no_proxy):
    from tiny_keras import models
    from tiny_keras.models import paper4

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    url = refused_url(paper4.IMAGENET_WEIGHTS_FILE)
    monkeypatch.setenv("TINY_KERAS_RESNET50_WEIGHTS_URL", url)
    with pytest.raises(download.DownloadError) as error:
        models.build("paper4_model5", weights="imagenet")
    message = str(error.value)
    assert message.startswith(f"Could not get ResNet50's ImageNet weights from {url}: ")
    assert "--weights PATH" in message and "--weights none" in message and str(tmp_path / "keras" / "models") in message

    served = tmp_path / "served"
    served.mkdir()
    (served / paper4.IMAGENET_WEIGHTS_FILE).write_bytes(b"not the weights" * 100)
    with serving(served) as base:
        monkeypatch.setenv("TINY_KERAS_RESNET50_WEIGHTS_URL", f"{base}/{paper4.IMAGENET_WEIGHTS_FILE}")
        with pytest.raises(download.DownloadError, match=f"is damaged: its md5 is .*, expected "
                                                         f"{paper4.IMAGENET_WEIGHTS_MD5} \\(1,500 bytes arrived"):
            models.build("paper4_model5", weights="imagenet")
    assert not (tmp_path / "keras" / "models" / paper4.IMAGENET_WEIGHTS_FILE).exists()
