"""Boxes: their conventions, conversions and overlap, the model's detections as boxes, and
the geometric augmentation that moves boxes with their images.

Tiny ImageNet's boxes (``DecodedSplit.boxes``) are ``(x0, y0, x1, y1)`` inclusive pixel
indices of a 64 px image, so ``(0, 0, 63, 63)`` is the whole image. Here a pixel ``k``
covers ``[k, k + 1)``, and a box is its continuous extent as fractions of the image:
corners ``(x0 / 64, y0 / 64, (x1 + 1) / 64, (y1 + 1) / 64)`` (:func:`pixel_to_corners`);
the whole image is ``(0, 0, 1, 1)``. The model's targets and outputs are the same boxes
as ``(cx, cy, w, h)``; a box of zero width marks "no box".
"""
import dataclasses

import numpy as np

from tiny_keras.backend import tf

IMAGE_SIZE = 64
FULL_IMAGE = (0.0, 0.0, 1.0, 1.0)


def pixel_to_corners(boxes, size=IMAGE_SIZE):
    """Inclusive pixel boxes ``(x0, y0, x1, y1)`` -> continuous corners as fractions of a
    ``size`` px image; rows of -1 (no box) -> zeros."""
    boxes = np.asarray(boxes)
    corners = (boxes.astype(np.float64) + np.array([0, 0, 1, 1])) / size
    return np.where((boxes < 0).any(axis=-1, keepdims=True), 0.0, corners).astype(np.float32)


def corners_to_pixels(corners, size=IMAGE_SIZE):
    """The inverse of :func:`pixel_to_corners`: the pixels whose centres lie in the box."""
    corners = np.asarray(corners, np.float64) * size
    first = np.ceil(corners[..., :2] - 0.5)
    last = np.ceil(corners[..., 2:] - 0.5) - 1
    return np.concatenate([first, last], axis=-1).astype(np.int32)


def corners_to_cxcywh(corners):
    c = np.asarray(corners, np.float32)
    return np.stack([(c[..., 0] + c[..., 2]) / 2, (c[..., 1] + c[..., 3]) / 2,
                     c[..., 2] - c[..., 0], c[..., 3] - c[..., 1]], axis=-1)


def cxcywh_to_corners(boxes):
    b = np.asarray(boxes, np.float32)
    return np.stack([b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2,
                     b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2], axis=-1)


def iou(a, b):
    """Intersection over union of corner boxes ``a`` and ``b`` (broadcast); 0 where a box is empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def decode(detections):
    """The model's ``[N, T, 5]`` detections -> corners ``[N, T, 4]`` and confidences ``[N, T]``."""
    detections = np.asarray(detections, np.float32)
    return cxcywh_to_corners(detections[..., :4]), 1 / (1 + np.exp(-detections[..., 4].astype(np.float64)))


# -- augmentation that moves the boxes --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BoxAugment:
    """Geometric augmentation of images and their boxes together: a horizontal flip (half
    the images), a scale about the image centre by U[1 - scale, 1 + scale], and a shift by
    U[-shift, shift] of the image size on each axis. Pixels are sampled nearest-neighbour,
    and what comes from outside the image is black, so a box's pixels are exactly the
    pixels of the transformed box: the output pixel whose centre lies in the transformed
    box is the one sampled from inside the original box."""

    flip: bool = True
    shift: float = 0.1
    scale: float = 0.1

    def draw(self, batch, seed):
        """Per-image parameters ``(flip [B] bool, scale [B], shift [B, 2])`` from ``seed``
        (a shape-[2] int tensor): stateless, so the same seed gives the same draws."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
        flip = tf.random.stateless_uniform([batch], seeds[0]) < (0.5 if self.flip else 0.0)
        scale = tf.random.stateless_uniform([batch], seeds[1], 1 - self.scale, 1 + self.scale)
        shift = tf.random.stateless_uniform([batch, 2], seeds[2], -self.shift, self.shift)
        return flip, scale, shift

    def __call__(self, images, corners, seed):
        return transform(images, corners, *self.draw(tf.shape(images)[0], seed))


def transform_boxes(corners, flip, scale, shift):
    """Corner boxes ``[B, G, 4]`` through the flip, then the scale about the centre, then the
    shift; clipped to the image. A box that leaves the image (or was empty) becomes zeros."""
    corners = tf.convert_to_tensor(corners, tf.float32)
    x0, y0, x1, y1 = tf.unstack(corners, axis=-1)
    valid = (x1 > x0) & (y1 > y0)
    flip = flip[:, None]
    x0, x1 = tf.where(flip, 1.0 - x1, x0), tf.where(flip, 1.0 - x0, x1)
    s = scale[:, None]
    tx, ty = shift[:, 0:1], shift[:, 1:2]
    x0, x1 = 0.5 + s * (x0 - 0.5) + tx, 0.5 + s * (x1 - 0.5) + tx
    y0, y1 = 0.5 + s * (y0 - 0.5) + ty, 0.5 + s * (y1 - 0.5) + ty
    out = tf.clip_by_value(tf.stack([x0, y0, x1, y1], axis=-1), 0.0, 1.0)
    keep = valid & (out[..., 2] > out[..., 0]) & (out[..., 3] > out[..., 1])
    return tf.where(keep[..., None], out, 0.0)


def _source_index(size, scale, shift, flip=None):
    """For each output pixel of one axis, the input pixel it samples, and whether it exists."""
    u = (tf.range(size, dtype=tf.float32) + 0.5) / tf.cast(size, tf.float32)  # output pixel centres
    x = (u[None, :] - 0.5 - shift[:, None]) / scale[:, None] + 0.5  # before the scale and shift
    if flip is not None:
        x = tf.where(flip[:, None], 1.0 - x, x)
    index = tf.cast(tf.floor(x * tf.cast(size, tf.float32)), tf.int32)
    return tf.clip_by_value(index, 0, size - 1), (index >= 0) & (index < size)


def transform_images(images, flip, scale, shift):
    """Images ``[B, H, W, C]`` through the same map as :func:`transform_boxes`: nearest
    sampling, black outside. Any dtype; vectorised over the batch (two gathers)."""
    images = tf.convert_to_tensor(images)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows, rows_ok = _source_index(height, scale, shift[:, 1])
    cols, cols_ok = _source_index(width, scale, shift[:, 0], flip)
    out = tf.gather(images, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    inside = (rows_ok[:, :, None] & cols_ok[:, None, :])[..., None]
    return tf.where(inside, out, tf.zeros_like(out))


def transform(images, corners, flip, scale, shift):
    return transform_images(images, flip, scale, shift), transform_boxes(corners, flip, scale, shift)
