"""TensorBox's matching of decoder steps to ground-truth boxes, and the loss on it
(paper2 Eq. 1):

    L = alpha * sum over matched steps |b_step - b_gt|_1 + sum over all steps BCE(c_step, matched)

where each ground-truth box is matched to one decoder step by the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``) on TensorBox's lexicographic cost: a step whose
box overlaps the ground truth (IoU >= 0.25) always beats one that does not ("localization",
4 vs 3 in paper2 Fig. 5); among those, an earlier step beats a later one ("precedence",
1 vs 2); among equals, the closer box (L1) wins (:func:`match`, :class:`MatchingLoss`).
"""
import keras
import numpy as np
from scipy.optimize import linear_sum_assignment

from tiny_keras.backend import tf
from tiny_keras.localization.boxes import cxcywh_to_corners, iou

# TensorBox's matching: overlap first, then rank, then distance (its hungarian.cc adds 100
# for "no overlap", the step index, and the L1 distance scaled below 1).
MATCH_IOU = 0.25  # TensorBox's "hungarian_iou"
NO_OVERLAP_COST = 100.0
DISTANCE_SCALE = 1 / 8  # L1 of two (cx, cy, w, h) in [0, 1] is at most 4: scaled below 1 step


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
