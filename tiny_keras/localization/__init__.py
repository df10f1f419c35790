"""Object localisation (paper2 sections 3.5 and 4.8): boxes, augmentation that moves them,
TensorBox's matching loss, the detection metrics, the baselines, and the training run.

The model is ``tiny_keras.models.build("paper2_localizer")`` (``models/localizer.py``):
images to ``[batch, max_boxes, 5]`` detections, ``(cx, cy, w, h, confidence logit)`` per
decoder step, boxes as fractions of the image.

One module a concern; every public name is here as well (``localization.run``,
``localization.MatchingLoss`` ...):

- :mod:`~tiny_keras.localization.boxes`: the box conventions (pixel boxes, corners,
  ``(cx, cy, w, h)``), IoU, the model's detections as boxes (``decode``), and
  ``BoxAugment``, flips, shifts and scales that move the boxes with the image.
- :mod:`~tiny_keras.localization.matching`: TensorBox's Hungarian matching (``match``)
  and paper2's Eq. 1 on it (``MatchingLoss``).
- :mod:`~tiny_keras.localization.metrics`: mean IoU of the most confident box, CorLoc,
  AP at IoU 0.5 (``evaluate_boxes``), and the baselines a localiser has to beat.
- :mod:`~tiny_keras.localization.training`: the images with their boxes (``load_boxes``), the
  input pipeline, the run (``Config``, ``run``) and its held-out images (``held_out_split``).
- :mod:`~tiny_keras.localization.command`: the command line of
  ``reproductions/paper2_localization.py`` (``command_line``); its docstring is the script's help.

``import tiny_keras`` imports the first three (they register ``MatchingLoss``); the last two,
which bring the callbacks and the run folder's records, load on first use of one of their
names (``localization.run`` ...).
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
_LAZY = {**dict.fromkeys(("GOLDFISH", "BoxSplit", "Config", "build_model", "held_out_split", "load_boxes",
                          "make_dataset", "run"), "training"),
         "command_line": "command"}
_SUBMODULES = ("command", "training")

__all__ = [
    "BoxAugment", "BoxSplit", "Config", "DISTANCE_SCALE", "FULL_IMAGE", "GOLDFISH", "IMAGE_SIZE", "MATCH_IOU",
    "MatchingLoss", "NO_OVERLAP_COST", "average_precision", "baselines", "best_constant_box", "build_model",
    "command_line", "constant_predictions", "corners_to_cxcywh", "corners_to_pixels", "cxcywh_to_corners", "decode",
    "evaluate_boxes", "format_table", "held_out_split", "iou", "load_boxes", "make_dataset", "match", "match_batch",
    "metrics_row", "pixel_to_corners", "run", "top_box_ious", "transform", "transform_boxes", "transform_images",
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
