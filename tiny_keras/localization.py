"""Object localisation (paper2 sections 3.5 and 4.8): boxes, augmentation that moves them,
TensorBox's matching loss, the detection metrics, the baselines, and the training run.

The model is ``tiny_keras.models.build("paper2_localizer")`` (``models/localizer.py``):
images to ``[batch, max_boxes, 5]`` detections, ``(cx, cy, w, h, confidence logit)`` per
decoder step, boxes as fractions of the image.

Box conventions. Tiny ImageNet's boxes (``DecodedSplit.boxes``) are ``(x0, y0, x1, y1)``
inclusive pixel indices of a 64 px image, so ``(0, 0, 63, 63)`` is the whole image. Here
a pixel ``k`` covers ``[k, k + 1)``, and a box is its continuous extent as fractions of
the image: corners ``(x0 / 64, y0 / 64, (x1 + 1) / 64, (y1 + 1) / 64)``
(:func:`pixel_to_corners`); the whole image is ``(0, 0, 1, 1)``. The model's targets and
outputs are the same boxes as ``(cx, cy, w, h)``; a box of zero width marks "no box".

Training (paper2 Eq. 1, TensorBox's Hungarian loss):

    L = alpha * sum over matched steps |b_step - b_gt|_1 + sum over all steps BCE(c_step, matched)

where each ground-truth box is matched to one decoder step by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on TensorBox's lexicographic cost: a step whose
box overlaps the ground truth (IoU >= 0.25) always beats one that does not ("localization",
4 vs 3 in paper2 Fig. 5); among those, an earlier step beats a later one ("precedence",
1 vs 2); among equals, the closer box (L1) wins (:func:`match`, :class:`MatchingLoss`).

Evaluation (:func:`evaluate_boxes`): mean IoU of each image's most confident box with its
ground truth, CorLoc (the fraction of images whose most confident box has IoU >= 0.5),
and AP at IoU 0.5 over every emitted box (VOC's all-points interpolation). The baselines
(:func:`best_constant_box`, the whole image) are scored by the same functions.
"""
import csv
import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tiny_keras import files, provenance

IMAGE_SIZE = 64
GOLDFISH = "n01443537"  # paper2 section 4.8: "Here we use gold fish as an example"
FULL_IMAGE = (0.0, 0.0, 1.0, 1.0)
# TensorBox's matching: overlap first, then rank, then distance (its hungarian.cc adds 100
# for "no overlap", the step index, and the L1 distance scaled below 1).
MATCH_IOU = 0.25  # TensorBox's "hungarian_iou"
NO_OVERLAP_COST = 100.0
DISTANCE_SCALE = 1 / 8  # L1 of two (cx, cy, w, h) in [0, 1] is at most 4: scaled below 1 step


# -- boxes ------------------------------------------------------------------------------------
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


# -- matching and the loss --------------------------------------------------------------------
def match(true_boxes, pred_boxes, iou_threshold=MATCH_IOU):
    """TensorBox's assignment of ground-truth boxes to decoder steps, for one image.

    Args:
        true_boxes: ``[G, 4]`` (cx, cy, w, h); rows of zero width or height are no box.
        pred_boxes: ``[T, 4]`` (cx, cy, w, h), the decoder's steps in order.

    Returns:
        ``[T]`` int32: the ground-truth row matched to each step, -1 for unmatched steps.

    The cost of matching ground truth ``g`` to step ``t`` is ``100 * [IoU < iou_threshold]
    + t + L1 / 8``: lexicographic in (no overlap, rank, distance), since ``t < 100`` and
    the scaled distance is below one step. The Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``) minimises the sum. With more steps than
    boxes the extra steps stay unmatched (their confidence target is 0); with more boxes
    than steps the extra boxes are left out.
    """
    from scipy.optimize import linear_sum_assignment

    true_boxes = np.asarray(true_boxes, np.float64).reshape(-1, 4)
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    steps = len(pred_boxes)
    if steps >= NO_OVERLAP_COST:
        raise ValueError(f"match needs fewer than {NO_OVERLAP_COST:.0f} steps. Received: {steps}")
    assignment = np.full(steps, -1, np.int32)
    rows = np.flatnonzero((true_boxes[:, 2] > 0) & (true_boxes[:, 3] > 0))
    if len(rows) == 0 or steps == 0:
        return assignment
    truth = true_boxes[rows]
    overlaps = iou(cxcywh_to_corners(truth)[:, None], cxcywh_to_corners(pred_boxes)[None, :])
    distance = np.abs(truth[:, None, :] - pred_boxes[None, :, :]).sum(-1)
    cost = NO_OVERLAP_COST * (overlaps < iou_threshold) + np.arange(steps)[None, :] + DISTANCE_SCALE * distance
    g, t = linear_sum_assignment(cost)
    assignment[t] = rows[g]
    return assignment


def match_batch(true_boxes, pred_boxes, iou_threshold=MATCH_IOU):
    """:func:`match` for every image: ``[B, G, 4]``, ``[B, T, 4]`` -> ``[B, T]`` int32."""
    return np.stack([match(t, p, iou_threshold) for t, p in zip(true_boxes, pred_boxes)]).astype(np.int32)


@keras.saving.register_keras_serializable(package="tiny_keras")
class MatchingLoss(keras.losses.Loss):
    """paper2's Eq. 1 with TensorBox's Hungarian matching, per image:
    ``alpha * sum_matched |box - gt|_1 + sum_steps BCE(logit, matched)``.

    ``y_true``: ``[B, G, 4]`` ground-truth (cx, cy, w, h), zero-width rows for no box;
    ``y_pred``: the model's ``[B, T, 5]`` detections. The assignment (:func:`match`) is
    computed by scipy through ``tf.numpy_function`` on the predictions with their
    gradient stopped: matching is a discrete choice with no gradient. The gradient
    flows through the predictions gathered for the matched steps and through every
    step's confidence. The numpy call needs TensorFlow, and cannot be XLA-compiled
    (compile with ``jit_compile=False``).

    ``alpha`` 6.4 is TensorBox's box weight, 0.1 per pixel, for our boxes in units of
    a 64 px image (the paper gives none).
    """

    def __init__(self, alpha=6.4, iou_threshold=MATCH_IOU, name="matching_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = float(alpha)
        self.iou_threshold = float(iou_threshold)

    def assignment(self, y_true, y_pred):
        boxes = tf.stop_gradient(tf.cast(y_pred[..., :4], tf.float32))
        y_true = tf.cast(y_true, tf.float32)
        found = tf.numpy_function(lambda t, p: match_batch(t, p, self.iou_threshold), [y_true, boxes],
                                  tf.int32, stateful=False, name="hungarian_match")
        found.set_shape(boxes.shape[:2])
        return tf.reshape(found, tf.shape(boxes)[:2])

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)
        assignment = self.assignment(y_true, y_pred)
        matched = assignment >= 0
        target = tf.gather(y_true, tf.maximum(assignment, 0), axis=1, batch_dims=1)
        l1 = tf.reduce_sum(tf.abs(y_pred[..., :4] - target), axis=-1)
        box_loss = tf.reduce_sum(tf.where(matched, l1, 0.0), axis=-1)
        confidence_loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(matched, tf.float32), logits=y_pred[..., 4]), axis=-1)
        return self.alpha * box_loss + confidence_loss

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "iou_threshold": self.iou_threshold}


# -- metrics ----------------------------------------------------------------------------------
def decode(detections):
    """The model's ``[N, T, 5]`` detections -> corners ``[N, T, 4]`` and confidences ``[N, T]``."""
    detections = np.asarray(detections, np.float32)
    return cxcywh_to_corners(detections[..., :4]), 1 / (1 + np.exp(-detections[..., 4].astype(np.float64)))


def _as_truth(true_corners):
    true_corners = np.asarray(true_corners, np.float64)
    return true_corners[:, None, :] if true_corners.ndim == 2 else true_corners


def top_box_ious(pred_corners, scores, true_corners):
    """IoU of each image's most confident box with its ground truth (the best-overlapping
    one where an image has several): ``[N]``."""
    pred_corners, scores, truth = np.asarray(pred_corners), np.asarray(scores), _as_truth(true_corners)
    top = pred_corners[np.arange(len(pred_corners)), np.argmax(scores, axis=1)]
    return iou(top[:, None, :], truth).max(axis=1)


def average_precision(pred_corners, scores, true_corners, iou_threshold=0.5):
    """AP at ``iou_threshold`` over every emitted box, PASCAL VOC style (2010 and later):
    detections of all images ranked by confidence (ties in image, then step order); each is
    a true positive if it overlaps a ground-truth box of its image not yet taken by a more
    confident one by at least the threshold (the best-overlapping such box is taken), else a
    false positive; AP is the area under the precision-recall curve with precision made
    monotone (each recall's precision is the best at that recall or beyond)."""
    pred_corners, scores, truth = np.asarray(pred_corners), np.asarray(scores), _as_truth(true_corners)
    valid = (truth[..., 2] > truth[..., 0]) & (truth[..., 3] > truth[..., 1])
    positives = int(valid.sum())
    if positives == 0:
        return float("nan")
    n, steps = scores.shape
    order = np.argsort(-scores.ravel(), kind="stable")
    taken = np.zeros_like(valid)
    hits = np.zeros(len(order), bool)
    for rank, flat in enumerate(order):
        image, step = divmod(int(flat), steps)
        overlaps = np.where(valid[image] & ~taken[image], iou(pred_corners[image, step][None], truth[image]), -1.0)
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            taken[image, best] = True
            hits[rank] = True
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / positives
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * precision))


def evaluate_boxes(pred_corners, scores, true_corners):
    """``{"mean_iou", "corloc", "ap50", "images"}`` (fractions) for predictions
    ``[N, T, 4]`` with confidences ``[N, T]`` against ground truth ``[N, 4]`` or ``[N, G, 4]``."""
    ious = top_box_ious(pred_corners, scores, true_corners)
    return {"mean_iou": float(ious.mean()), "corloc": float((ious >= 0.5).mean()),
            "ap50": average_precision(pred_corners, scores, true_corners), "images": int(len(ious))}


# -- baselines --------------------------------------------------------------------------------
def best_constant_box(true_corners, grid=16, refine=64, max_boxes=4000, seed=0):
    """The one box that maximises the mean IoU with ``true_corners`` ``[N, 4]``.

    Searched exhaustively over boxes whose corners lie on a ``grid`` x ``grid`` lattice of
    the image (every x0 < x1, y0 < y1: 18,496 boxes for 16), then over the ``refine``
    lattice within one coarse step of the best corners. Mean IoU is not concave in the
    corners, so a lattice search (rather than gradient ascent) finds the global best up to
    the lattice's resolution. More than ``max_boxes`` boxes are subsampled (fixed seed)
    for the search; the result is scored on all of them by the caller."""
    truth = np.asarray(true_corners, np.float64).reshape(-1, 4)
    if len(truth) > max_boxes:
        truth = truth[np.random.default_rng(seed).choice(len(truth), max_boxes, replace=False)]

    def best_of(xs0, xs1, ys0, ys1):
        xs = [(a, b) for a in xs0 for b in xs1 if b > a]
        ys = [(a, b) for a in ys0 for b in ys1 if b > a]
        candidates = np.array([(x0, y0, x1, y1) for x0, x1 in xs for y0, y1 in ys])
        scores = np.zeros(len(candidates))
        for start in range(0, len(candidates), 512):
            scores[start:start + 512] = iou(candidates[start:start + 512, None, :], truth[None]).mean(axis=1)
        return candidates[int(np.argmax(scores))]

    coarse = np.linspace(0, 1, grid + 1)
    box = best_of(coarse, coarse, coarse, coarse)
    fine = np.linspace(0, 1, refine + 1)

    def near(value):
        return fine[np.abs(fine - value) <= 1 / grid + 1e-9]

    box = best_of(near(box[0]), near(box[2]), near(box[1]), near(box[3]))
    return tuple(float(v) for v in box)


def constant_predictions(box, n):
    """``n`` images' predictions of one box with confidence 1: ``([n, 1, 4], [n, 1])``."""
    return np.tile(np.asarray(box, np.float32), (n, 1, 1)), np.ones((n, 1))


# -- data -------------------------------------------------------------------------------------
@dataclasses.dataclass
class BoxSplit:
    """Images with their ground-truth corner boxes ``[N, 4]`` and file names."""

    images: np.ndarray
    corners: np.ndarray
    files: list

    def __len__(self):
        return len(self.files)


def _subset(split, index):
    return BoxSplit(np.asarray(split.images[index]), pixel_to_corners(split.boxes[index]),
                    [split.files[i] for i in index])


def load_boxes(data, classes=GOLDFISH, train_fraction=0.8, seed=0, per_class=None, val_per_class=None,
               progress=True):
    """The training and held-out images with their boxes.

    ``classes`` a wnid (paper2 section 4.8: one class, ``train_fraction`` of its training
    images to train on, the rest held out, split by a permutation with ``seed``), or
    ``"all"``: every class's training images, held out the official validation set.
    Returns ``(train, held_out, description of the held-out set)``."""
    from tiny_keras import data as data_lib

    if classes == "all":
        train = data_lib.load_split(data, "train", per_class=per_class, progress=progress)
        val = data_lib.load_split(data, "val", per_class=val_per_class, progress=progress)
        return _subset(train, np.arange(len(train))), _subset(val, np.arange(len(val))), "the official val set"
    split = data_lib.load_split(data, "train", classes=[classes], per_class=per_class, progress=progress)
    if (split.boxes < 0).any():
        raise ValueError(f"{data}: some {classes} training images have no box")
    order = np.random.default_rng(seed).permutation(len(split))
    cut = int(round(train_fraction * len(split)))
    if not 0 < cut < len(split):
        raise ValueError(f"train_fraction {train_fraction} leaves no training or no held-out images of {len(split)}")
    train, held = np.sort(order[:cut]), np.sort(order[cut:])
    return _subset(split, train), _subset(split, held), f"{len(held)} of the {len(split)} {classes} training images"


def make_dataset(split, batch_size, seed=0, augment=None, repeat=True):
    """``(images float32, targets [B, 1, 4] cx cy w h)`` batches. Order: shuffle (reshuffled
    every epoch), repeat, batch, augment the whole batch with a per-batch seed, prefetch."""
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.corners[:, None, :].astype(np.float32)))
    if repeat:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size).enumerate()

    def prepare(step, batch):
        images, corners = batch
        if augment is not None:
            images, corners = augment(images, corners, tf.stack([tf.cast(seed, tf.int64), step]))
        x0, y0, x1, y1 = tf.unstack(corners, axis=-1)
        targets = tf.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)
        return tf.cast(images, tf.float32), targets

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# -- the run ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
    """One localisation run, as data (saved as ``config.json`` in the run folder).

    Every default is paper2 section 4.8's setting or, where it says nothing, TensorBox's
    or ours (the script's docstring says which)."""

    classes: str = GOLDFISH
    train_fraction: float = 0.8
    encoder: str = "paper2_resnet18"
    encoder_options: dict = dataclasses.field(default_factory=dict)
    max_boxes: int = 5
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3  # Adam, cosine decay to 0 over the run
    alpha: float = 6.4
    match_iou: float = MATCH_IOU
    confidence_threshold: float = 0.5  # boxes at or above it are accepted (paper2 section 3.5)
    flip: bool = True
    shift: float = 0.1
    scale: float = 0.1
    seed: int = 0
    steps_per_epoch: int = None  # None: one pass over the training images
    per_class: int = None  # at most this many training images per class (smoke runs)
    val_per_class: int = None
    smoke: bool = False

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        return cls(**values)


def _predict(model, images, batch_size=256):
    return model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)


def _metrics_row(name, corners, scores, truth, accepted=None):
    row = {"method": name, **evaluate_boxes(corners, scores, truth)}
    if accepted is not None:
        row["boxes_accepted_per_image"] = float(accepted)
    return row


def baselines(train, held_out):
    """The two rows a localiser has to beat: the constant box best on the training boxes,
    and the whole image, both scored on ``held_out``."""
    box = best_constant_box(train.corners)
    n = len(held_out)
    rows = [dict(_metrics_row("best constant box", *constant_predictions(box, n), held_out.corners),
                 box=[round(v, 4) for v in box]),
            dict(_metrics_row("full image", *constant_predictions(FULL_IMAGE, n), held_out.corners),
                 box=list(FULL_IMAGE))]
    return rows


def format_table(rows):
    header = f"{'method':<22}{'mean IoU':>10}{'CorLoc':>9}{'AP@0.5':>9}{'images':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['method']:<22}{100 * r['mean_iou']:>10.1f}{100 * r['corloc']:>9.1f}"
                     f"{100 * r['ap50']:>9.1f}{r['images']:>8}")
    return "\n".join(lines)


def _record_session(workdir):
    path = os.path.join(workdir, "run.json")
    run = files.read_json(path, {"sessions": []})
    run["sessions"].append({"command": provenance.command(), "cwd": os.getcwd(), "started": provenance.now(),
                            "environment": provenance.environment()})
    files.write_json(run, path)


def _write_history(rows, path):
    with files.atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build_model(config):
    from tiny_keras import models

    return models.build("paper2_localizer", max_boxes=config.max_boxes, encoder=config.encoder,
                        encoder_options=dict(config.encoder_options) or None)


def run(config, workdir, data=None, overwrite=False, verbose=2):
    """Train and evaluate ``config`` in ``workdir``; returns the results dict.

    Writes ``config.json``, ``split.json`` (the held-out files), ``history.csv`` (per epoch:
    loss, learning rate, held-out mean IoU and CorLoc, seconds), ``model.keras``,
    ``results.json`` / ``results.txt`` (ours and the baselines) and ``run.json`` (command,
    commit, machine, wall time). Runs take minutes, so an interrupted one starts again."""
    workdir = os.fspath(workdir)
    if os.path.exists(os.path.join(workdir, "results.json")) and not overwrite:
        raise FileExistsError(f"{workdir} holds a finished run; choose another workdir or pass --overwrite")
    os.makedirs(workdir, exist_ok=True)
    files.write_json(json.loads(config.to_json()), os.path.join(workdir, "config.json"))
    _record_session(workdir)
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)

    train, held_out, held_name = load_boxes(data, config.classes, config.train_fraction, config.seed,
                                            config.per_class, config.val_per_class, progress=verbose > 0)
    files.write_json({"classes": config.classes, "held_out": held_name, "held_out_files": held_out.files,
                      "train_files": len(train)}, os.path.join(workdir, "split.json"))
    steps = config.steps_per_epoch or math.ceil(len(train) / config.batch_size)
    augment = BoxAugment(config.flip, config.shift, config.scale)
    dataset = make_dataset(train, config.batch_size, config.seed, augment)
    model = build_model(config)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, config.epochs * steps))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=MatchingLoss(config.alpha, config.match_iou),
                  jit_compile=False, run_eagerly=config.smoke)
    if verbose:
        print(f"localiser: {model.count_params():,} parameters ({config.encoder} encoder); {len(train)} training "
              f"images, held out {held_name}; {config.epochs} epochs of {steps} steps")

    history = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            corners, scores = decode(_predict(model, held_out.images))
            ious = top_box_ious(corners, scores, held_out.corners)
            row = {"epoch": epoch + 1, "loss": float(logs["loss"]),
                   "learning_rate": float(keras.ops.convert_to_numpy(schedule(model.optimizer.iterations))),
                   "held_out_mean_iou": float(ious.mean()), "held_out_corloc": float((ious >= 0.5).mean()),
                   "seconds": round(time.perf_counter() - self.start, 2)}
            history.append(row)
            _write_history(history, os.path.join(workdir, "history.csv"))
            if verbose:
                print(f"epoch {row['epoch']}/{config.epochs}: loss {row['loss']:.4f}, held-out mean IoU "
                      f"{100 * row['held_out_mean_iou']:.1f}, CorLoc {100 * row['held_out_corloc']:.1f} "
                      f"({row['seconds']:.0f} s)", flush=True)

    train_start = time.perf_counter()
    model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps, callbacks=[Record()], verbose=0,
              shuffle=False)  # the dataset is shuffled already
    train_seconds = time.perf_counter() - train_start
    files.save_model(model, os.path.join(workdir, "model.keras"))

    corners, scores = decode(_predict(model, held_out.images))
    accepted = (scores >= config.confidence_threshold).sum(axis=1).mean()
    rows = [_metrics_row("ours", corners, scores, held_out.corners, accepted)] + baselines(train, held_out)
    wall = time.perf_counter() - started
    results = {"paper": "paper2", "task": "localization", "classes": config.classes, "held_out": held_name,
               "rows": rows, "beats_baselines": {k: all(rows[0][k] > r[k] for r in rows[1:])
                                                 for k in ("mean_iou", "corloc")},
               "epochs": config.epochs, "train_seconds": round(train_seconds, 1), "wall_seconds": round(wall, 1),
               "smoke": config.smoke, "data": data or "tfds:tiny_imagenet", "config": json.loads(config.to_json())}
    files.write_json(results, os.path.join(workdir, "results.json"))
    table = format_table(rows)
    with files.atomic_open(os.path.join(workdir, "results.txt")) as f:
        f.write(table + "\n")
    path = os.path.join(workdir, "run.json")
    record = files.read_json(path, {"sessions": []})
    record.update(finished=provenance.now(),
                  train_seconds=round(train_seconds, 1), wall_seconds=round(wall, 1))
    files.write_json(record, path)
    if verbose:
        print(f"\nheld-out localisation ({held_name}; percent)\n{table}")
    return results


def held_out_split(workdir, data):
    """The held-out images of the run in ``workdir`` (its ``split.json``), with their boxes."""
    config = Config.from_dict(files.read_json(os.path.join(workdir, "config.json")))
    split = files.read_json(os.path.join(workdir, "split.json"))
    _, held_out, _ = load_boxes(data, config.classes, config.train_fraction, config.seed, config.per_class,
                                config.val_per_class, progress=False)
    if held_out.files != split["held_out_files"]:
        raise ValueError(f"{data}: its held-out images differ from those {workdir} was evaluated on")
    return held_out, config
