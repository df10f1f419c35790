"""Decoding JPEG bytes into uint8 arrays, once, on all cores.

Images are decoded by TensorFlow's libjpeg with ``dct_method="INTEGER_ACCURATE"``,
which gives exactly the pixels PIL (and so Keras's ``load_img``) gives; grayscale
JPEGs become 3-channel by repeating the gray channel. Decoding runs in a parallel
``tf.data`` map, chunk by chunk, while a thread reads the next chunk's bytes. A
chunk that fails is decoded again file by file, so the error names the bad file.
"""
import concurrent.futures
import re

import keras
import numpy as np
import tensorflow as tf

from tiny_keras.data.layout import DatasetError

IMAGE_SHAPE = (64, 64, 3)
_CHUNK = 1024


def decode_jpeg(contents):
    """One JPEG (bytes or string tensor) -> uint8 [H, W, 3], the package's decoder."""
    return tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")


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


def _decode_chunk_slow(contents, names, on_error, problems, shape):
    """File by file: finds which images are bad. Returns arrays and a keep mask."""
    images = np.zeros((len(contents),) + shape, np.uint8)
    channels = np.zeros(len(contents), np.int32)
    keep = np.ones(len(contents), bool)
    for i, (data, name) in enumerate(zip(contents, names)):
        try:
            image, c = _decode_with_channels(tf.constant(data))
            image = image.numpy()
        except tf.errors.InvalidArgumentError as e:
            message = f"{name}: not a valid JPEG image ({_reason(e)})"
        else:
            if image.shape == shape:
                images[i], channels[i] = image, int(c)
                continue
            message = f"{name}: decoded to shape {image.shape}, expected {shape}"
        if on_error == "raise":
            raise DatasetError(message + ". Pass on_error='skip' to leave such files out and count them.")
        problems.append(message)
        keep[i] = False
    return images, channels, keep


def decode_all(items, count, on_error="raise", problems=None, progress=True, shape=IMAGE_SHAPE):
    """Decode ``count`` images from ``items``, an iterable of ``(name, read_bytes)`` pairs
    (``read_bytes`` a zero-argument callable, or bytes). ``name`` is what an error names.

    Returns ``(images uint8 [N, 64, 64, 3], grayscale bool [N], keep bool [count])``:
    with ``on_error="skip"`` bad files are left out (``keep`` False) and described in
    ``problems``; with ``"raise"`` the first bad file raises :class:`DatasetError`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'. Received: {on_error=}")

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
    with concurrent.futures.ThreadPoolExecutor(1) as reader:
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
            try:
                chunk_images, channels = _decode_chunk_fast(contents)
                ok = np.ones(n, bool)
                if chunk_images.shape[1:] != tuple(shape):
                    raise tf.errors.InvalidArgumentError(None, None, "shape")
            except tf.errors.InvalidArgumentError:
                chunk_images, channels, ok = _decode_chunk_slow(contents, names, on_error, problems, tuple(shape))
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
