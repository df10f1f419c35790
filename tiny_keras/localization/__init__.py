"""Object localisation (paper2 sections 3.5 and 4.8): boxes, augmentation that moves them,
TensorBox's matching loss, the detection metrics, the baselines, and the engine's task.

The model is ``tiny_keras.models.build("paper2_localizer")`` (``models/localizer.py``):
images to ``[batch, max_boxes, 5]`` detections, ``(cx, cy, w, h, confidence logit)`` per
decoder step, boxes as fractions of the image.

One module a concern; every public name is here as well (``localization.load_boxes``,
``localization.MatchingLoss`` ...):

- :mod:`~tiny_keras.localization.boxes`: the box conventions (pixel boxes, corners,
  ``(cx, cy, w, h)``), IoU, the model's detections as boxes (``decode``), and
  ``BoxAugment``, flips, shifts and scales that move the boxes with the image.
- :mod:`~tiny_keras.localization.matching`: TensorBox's Hungarian matching (``match``)
  and paper2's Eq. 1 on it (``MatchingLoss``).
- :mod:`~tiny_keras.localization.metrics`: mean IoU of the most confident box, CorLoc,
  AP at IoU 0.5 (``evaluate_boxes``), and the baselines a localiser has to beat.
- :mod:`~tiny_keras.localization.task`: the localiser as a ``tiny_keras.engine`` task
  (``Localization``): the images with their boxes (``load_boxes``), the input pipeline,
  the held-out scores, and a run's held-out images (``held_out_split``). Its recipe is
  ``tiny_keras.recipes.paper2_localization``.

``import tiny_keras`` imports the first three (they register ``MatchingLoss``); the task,
which brings the engine, loads on first use of one of its names (``localization.load_boxes`` ...).
"""
import importlib

from tiny_keras.localization.boxes import (
    FULL_IMAGE, IMAGE_SIZE, BoxAugment, corners_to_cxcywh, corners_to_pixels, cxcywh_to_corners, decode, iou,
    pixel_to_corners, transform, transform_boxes, transform_images)
from tiny_keras.localization.matching import (
    DISTANCE_SCALE, MATCH_IOU, NO_OVERLAP_COST, MatchingLoss, match, match_batch)
from tiny_keras.localization.metrics import (
    average_precision, baselines, best_constant_box, constant_predictions, evaluate_boxes, format_table,
    metrics_row, top_box_ious)

# name -> the submodule that defines it, imported on first use (PEP 562)
_LAZY = dict.fromkeys(("GOLDFISH", "OPTIONS", "BoxSplit", "HeldOutBoxes", "Localization", "held_out_split",
                       "load_boxes", "make_dataset"), "task")
_SUBMODULES = ("task",)

__all__ = [
    "BoxAugment", "BoxSplit", "DISTANCE_SCALE", "FULL_IMAGE", "GOLDFISH", "HeldOutBoxes", "IMAGE_SIZE", "Localization",
    "MATCH_IOU", "MatchingLoss", "NO_OVERLAP_COST", "OPTIONS", "average_precision", "baselines", "best_constant_box",
    "constant_predictions", "corners_to_cxcywh", "corners_to_pixels", "cxcywh_to_corners", "decode",
    "evaluate_boxes", "format_table", "held_out_split", "iou", "load_boxes", "make_dataset", "match", "match_batch",
    "metrics_row", "pixel_to_corners", "top_box_ious", "transform", "transform_boxes", "transform_images",
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
