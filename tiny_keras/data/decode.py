"""Decoding JPEG bytes into uint8 arrays, once, on all cores, with TensorFlow or Pillow.

Two decoders give the same pixels (``decoder=`` of :func:`decode_all` and
:func:`~tiny_keras.data.load_split`):

- ``"tensorflow"`` (the default on Keras's TensorFlow backend): TensorFlow's libjpeg with
  ``dct_method="INTEGER_ACCURATE"``, in a parallel ``tf.data`` map, chunk by chunk, while a
  thread reads the next chunk's bytes;
- ``"pillow"`` (the default on JAX and PyTorch, where TensorFlow need not be installed):
  Pillow's libjpeg-turbo (its default DCT is the same accurate integer one), in a thread
  pool (Pillow decodes without holding the GIL).

Both follow TensorFlow's ``channels=3`` conventions: a grayscale JPEG becomes 3 channels
by repeating the gray channel, and a CMYK (or YCCK) JPEG becomes RGB by TensorFlow's
formula, ``R = C * K / 255`` on the stored values (inverted first unless the file has
Adobe's marker), rounded down; Pillow's own CMYK conversion rounds and differs by 1, so
it is not used. Any other JPEG is RGB already.

Measured: Pillow 13.0 and TensorFlow 2.21 decode every image of the real archive
(train, val and test: 120,000 JPEGs, 117,822 RGB and 2,178 grayscale) to identical
pixels: maximum absolute difference 0, 0 images differing. The tests check the same on
JPEGs they make (RGB, grayscale and CMYK, qualities 30 to 95, 4:4:4, 4:2:2 and 4:2:0
subsampling) and on a sample of the real archive where it is found. Since the pixels
are the same, both decoders write and read one cache entry
(:mod:`tiny_keras.data.arrays`), on every backend.

A bad file raises :class:`~tiny_keras.data.layout.DatasetError` naming it, in the same
words whichever decoder found it (``"<file>: not a valid JPEG image (truncated or
corrupt JPEG data)"``); with ``on_error="skip"`` it is left out and described instead.
With TensorFlow, a chunk that fails is decoded again file by file to find which file.
"""
import concurrent.futures
import contextlib
import io
import os
import re

import keras
import numpy as np

from tiny_keras import backend
from tiny_keras.backend import tf
from tiny_keras.data.layout import DatasetError

IMAGE_SHAPE = (64, 64, 3)
_CHUNK = 1024
TENSORFLOW = "tensorflow"
PILLOW = "pillow"
DECODERS = (TENSORFLOW, PILLOW)


def default_decoder():
    """``"tensorflow"`` on Keras's TensorFlow backend, ``"pillow"`` on the others."""
    return TENSORFLOW if backend.is_tensorflow() else PILLOW


def resolve_decoder(decoder=None):
    """``decoder``, checked (``None``: :func:`default_decoder`); TensorFlow's must be importable."""
    if decoder is None:
        return default_decoder()
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, or None for the backend's default "
                         f"({TENSORFLOW!r} on TensorFlow, {PILLOW!r} on JAX and PyTorch). Received: {decoder=}")
    if decoder == TENSORFLOW:
        backend.require_tensorflow("decoder='tensorflow' (TensorFlow's JPEG decoder)")
    return decoder


def decode_jpeg(contents):
    """One JPEG (bytes or string tensor) -> uint8 [H, W, 3] tensor, TensorFlow's decoder."""
    return tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")


def _pillow():
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(f"decoder='pillow' needs Pillow, which cannot be imported ({error}). "
                          "Install it with `pip install pillow`.") from error
    return Image


def decode_jpeg_pillow(contents):
    """One JPEG (bytes) -> ``(uint8 [H, W, 3] array, channels in the file)`` with Pillow, to
    TensorFlow's pixels (see the module's docstring). Raises Pillow's errors (``OSError``,
    ``PIL.UnidentifiedImageError`` for data that is not a JPEG)."""
    Image = _pillow()
    with Image.open(io.BytesIO(contents), formats=("JPEG",)) as image:
        image.load()
        channels = len(image.getbands())
        if image.mode == "CMYK":
            # Pillow inverts CMYK as Adobe writes it; TensorFlow works on the stored values.
            stored = 255 - np.asarray(image, np.int32)
            if "adobe" not in image.info:
                stored = 255 - stored
            rgb = stored[..., :3] * stored[..., 3:] // 255
            return rgb.astype(np.uint8), channels
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), np.uint8), channels


def _decode_with_channels(contents):
    return decode_jpeg(contents), tf.io.extract_jpeg_shape(contents)[2]


def _decode_chunk_fast(contents):
    ds = tf.data.Dataset.from_tensor_slices(contents)
    ds = ds.map(_decode_with_channels, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images, channels = ds.batch(len(contents)).get_single_element()
    return images.numpy(), channels.numpy()


# TensorFlow's decoder messages, in the words of someone holding the file.
_REASONS = {
    "Invalid JPEG data or crop window": "truncated or corrupt JPEG data",
    "Unknown image file format": "unrecognised image data (not JPEG, PNG, GIF, BMP or WebP)",
}


def _reason(error):
    """What is wrong with the file, without TensorFlow's op and device names (``"{{function_node
    __wrapped__DecodeJpeg_device_/job:localhost/...}} ... [Op:DecodeJpeg]"``)."""
    text = str(getattr(error, "message", error))
    for known, plain in _REASONS.items():
        if known in text:
            return plain
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]|\w+::\w+ failed\.", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "unreadable").rstrip(". ")[:160]


def _pillow_reason(error):
    if isinstance(error, _pillow().UnidentifiedImageError):
        return _REASONS["Unknown image file format"]
    return _REASONS["Invalid JPEG data or crop window"]


def _decode_chunk_pillow(contents, names, on_error, problems, shape, pool):
    """Pillow, file by file in ``pool``. Returns arrays and a keep mask."""
    def one(data):
        try:
            return decode_jpeg_pillow(data)
        except (OSError, SyntaxError, ValueError) as error:  # what Pillow raises for bad data
            return _pillow_reason(error)

    return _collect(pool.map(one, contents), len(contents), names, on_error, problems, shape)


def _decode_chunk_slow(contents, names, on_error, problems, shape):
    """TensorFlow, file by file: finds which images are bad. Returns arrays and a keep mask."""
    def one(data):
        try:
            image, c = _decode_with_channels(tf.constant(data))
            return image.numpy(), int(c)
        except tf.errors.InvalidArgumentError as e:
            return _reason(e)

    return _collect(map(one, contents), len(contents), names, on_error, problems, shape)


def _collect(decoded, count, names, on_error, problems, shape):
    """``count`` decoded files into arrays and a keep mask: each of ``decoded`` is
    ``(image, channels)`` or, for a file that is not a valid JPEG, the reason (a string).
    A bad file raises DatasetError naming it, or with ``on_error="skip"`` is left out
    and its message added to ``problems``."""
    images = np.zeros((count,) + shape, np.uint8)
    channels = np.zeros(count, np.int32)
    keep = np.ones(count, bool)
    for i, (result, name) in enumerate(zip(decoded, names)):
        if isinstance(result, str):
            message = f"{name}: not a valid JPEG image ({result})"
        elif result[0].shape == shape:
            images[i], channels[i] = result
            continue
        else:
            message = f"{name}: decoded to shape {result[0].shape}, expected {shape}"
        if on_error == "raise":
            raise DatasetError(message + ". `python -m tiny_keras.data PATH` lists every bad file; in Python, "
                               "on_error='skip' leaves them out")
        problems.append(message)
        keep[i] = False
    return images, channels, keep


def decode_all(items, count, on_error="raise", problems=None, progress=True, shape=IMAGE_SHAPE, decoder=None):
    """Decode ``count`` images from ``items``, an iterable of ``(name, read_bytes)`` pairs
    (``read_bytes`` a zero-argument callable, or bytes). ``name`` is what an error names.
    ``decoder``: ``"tensorflow"``, ``"pillow"`` or ``None`` (the backend's default); both
    give the same pixels.

    Returns ``(images uint8 [N, 64, 64, 3], grayscale bool [N], keep bool [count])``:
    with ``on_error="skip"`` bad files are left out (``keep`` False) and described in
    ``problems``; with ``"raise"`` the first bad file raises :class:`DatasetError`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'. Received: {on_error=}")
    decoder = resolve_decoder(decoder)

    problems = [] if problems is None else problems
    images = np.empty((count,) + tuple(shape), np.uint8)
    gray = np.zeros(count, bool)
    keep = np.ones(count, bool)
    bar = keras.utils.Progbar(count, unit_name="image") if progress and count else None

    def chunks():
        chunk = []
        for name, data in items:
            chunk.append((name, data))
            if len(chunk) == _CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def read(chunk):
        return [n for n, _ in chunk], [d() if callable(d) else d for _, d in chunk]

    start = 0
    decoders = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) if decoder == PILLOW else None
    with concurrent.futures.ThreadPoolExecutor(1) as reader, (decoders or contextlib.nullcontext()) as pool:
        it = chunks()
        pending = None
        first = next(it, None)
        if first is not None:
            pending = reader.submit(read, first)
        while pending is not None:
            names, contents = pending.result()
            nxt = next(it, None)
            pending = reader.submit(read, nxt) if nxt is not None else None
            n = len(contents)
            if start + n > count:
                raise ValueError(f"decode_all: more than {count=} items were given")
            if pool is not None:
                chunk_images, channels, ok = _decode_chunk_pillow(contents, names, on_error, problems, tuple(shape),
                                                                  pool)
            else:
                try:
                    chunk_images, channels = _decode_chunk_fast(contents)
                    ok = np.ones(n, bool)
                    if chunk_images.shape[1:] != tuple(shape):
                        raise tf.errors.InvalidArgumentError(None, None, "shape")
                except tf.errors.InvalidArgumentError:
                    chunk_images, channels, ok = _decode_chunk_slow(contents, names, on_error, problems,
                                                                    tuple(shape))
            images[start:start + n] = chunk_images
            gray[start:start + n] = channels == 1
            keep[start:start + n] = ok
            start += n
            if bar is not None:
                bar.update(start)
    if start != count:
        raise ValueError(f"decode_all: expected {count} items, got {start}")
    if not keep.all():
        images, gray = images[keep], gray[keep]
    return images, gray, keep
