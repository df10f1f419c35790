"""Scoring boxes, and the baselines a localiser has to beat.

:func:`evaluate_boxes`: mean IoU of each image's most confident box with its ground truth,
CorLoc (the fraction of images whose most confident box has IoU >= 0.5), and AP at IoU 0.5
over every emitted box (VOC's all-points interpolation). The baselines
(:func:`best_constant_box`, the whole image) are scored by the same functions
(:func:`baselines`); :func:`format_table` prints them beside ours.
"""
import numpy as np

from tiny_keras.localization.boxes import FULL_IMAGE, iou


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


def metrics_row(name, corners, scores, truth, accepted=None):
    """A table row: ``name`` and :func:`evaluate_boxes`' scores (and the boxes accepted per image)."""
    row = {"method": name, **evaluate_boxes(corners, scores, truth)}
    if accepted is not None:
        row["boxes_accepted_per_image"] = float(accepted)
    return row


def baselines(train, held_out):
    """The two rows a localiser has to beat: the constant box best on the training boxes,
    and the whole image, both scored on ``held_out``."""
    box = best_constant_box(train.corners)
    n = len(held_out)
    rows = [dict(metrics_row("best constant box", *constant_predictions(box, n), held_out.corners),
                 box=[round(v, 4) for v in box]),
            dict(metrics_row("full image", *constant_predictions(FULL_IMAGE, n), held_out.corners),
                 box=list(FULL_IMAGE))]
    return rows


def format_table(rows):
    header = f"{'method':<22}{'mean IoU':>10}{'CorLoc':>9}{'AP@0.5':>9}{'images':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['method']:<22}{100 * r['mean_iou']:>10.1f}{100 * r['corloc']:>9.1f}"
                     f"{100 * r['ap50']:>9.1f}{r['images']:>8}")
    return "\n".join(lines)
