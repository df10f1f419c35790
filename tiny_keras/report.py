"""What an evaluation reports, as text and files: the tables ``tools/evaluate.py`` prints,
the per-class CSV and the challenge's submission file. The numbers come from
``tiny_keras.evaluate``; every file is written through ``tiny_keras.files``.
"""
import csv

import numpy as np

from tiny_keras import files
from tiny_keras.evaluate import best_and_worst

PER_CLASS_COLUMNS = ["index", "wnid", "name", "images", "top1", "top5"]


def _short(text, width):
    text = str(text)
    return text if len(text) <= width else "..." + text[-(width - 3):]


# -- tables ------------------------------------------------------------------------------------
def format_scores(result):
    """Per model (and ensemble) top-1, top-5 and loss as a fixed-width table."""
    rows = [(m["path"], m) for m in result["models"]]
    if any("as_trained" in m for m in result["models"]):  # precise BN: the statistics as trained, beside
        rows = [row for m in result["models"]
                for row in [(f"{m['path']} (precise BN)", m)] + ([(f"{m['path']} (as trained)", m["as_trained"])]
                                                                  if "as_trained" in m else [])]
    if result.get("ensemble"):
        rows.append((f"ensemble of {result['ensemble']['members']}", result["ensemble"]))
    width = max([len("model")] + [min(60, len(name)) for name, _ in rows])
    header = f"{'model':<{width}}  {'top-1 %':>8}  {'top-5 %':>8}  {'loss':>8}"
    lines = [header, "-" * len(header)]
    for name, r in rows:
        lines.append(f"{_short(name, width):<{width}}  {r['top1']:>8.2f}  {r['top5']:>8.2f}  {r['loss']:>8.4f}")
    return "\n".join(lines)


def format_per_class(rows, title):
    header = f"{'index':>5}  {'wnid':<10}  {'name':<28}  {'images':>6}  {'top-1 %':>7}  {'top-5 %':>7}"
    lines = [title, header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['index']:>5}  {r['wnid']:<10}  {_short(r['name'], 28):<28}  {r['images']:>6}  "
                     f"{r['top1']:>7.2f}  {r['top5']:>7.2f}")
    return "\n".join(lines)


def format_confusions(rows, all_correct=False):
    """The confusions as a table. ``all_correct``: every image was classified correctly;
    without it an empty ``rows`` says only that none were listed."""
    header = f"{'true':<28}  {'':2}  {'predicted':<28}  {'count':>5}  {'% of class':>10}"
    lines = ["Most frequent confusions", header, "-" * len(header)]
    for r in rows:
        lines.append(f"{_short(r['true_name'], 28):<28}  ->  {_short(r['predicted_name'], 28):<28}  "
                     f"{r['count']:>5}  {r['percent']:>10.1f}")
    if not rows:
        lines.append("(none: every image is classified correctly)" if all_correct else "(none listed)")
    return "\n".join(lines)


def format_report(result, n=5):
    """Scores, the ``n`` best and worst classes, and the confusions (``tiny_keras.evaluate.evaluate``'s
    result), as printed by ``tools/evaluate.py``."""
    best, worst = best_and_worst(result["per_class"], n)
    of = result["per_class_of"]
    return "\n\n".join([
        format_scores(result),
        format_per_class(best, f"{n} best classes ({of})"),
        format_per_class(worst, f"{n} worst classes ({of})"),
        format_confusions(result["confusions"], all_correct=all(r["top1"] == 100 for r in result["per_class"])),
    ])


# -- files -------------------------------------------------------------------------------------
def submission_lines(probabilities, file_names, classes):
    """The challenge's submission format: ``"file_name wnid"`` per image (top-1 prediction;
    ties: the lower class index, as everywhere in ``tiny_keras.evaluate``)."""
    probabilities = np.asarray(probabilities)
    if len(probabilities) != len(file_names):
        raise ValueError(f"{len(probabilities)} predictions for {len(file_names)} files")
    if probabilities.shape[-1] != len(classes):
        raise ValueError(f"the predictions have {probabilities.shape[-1]} classes but the class list has "
                         f"{len(classes)}: cannot name the predicted classes")
    return [f"{name} {classes.wnid(i)}" for name, i in zip(file_names, np.argmax(probabilities, axis=-1))]


def write_submission(probabilities, file_names, classes, path):
    """The :func:`submission_lines` as the file ``path``."""
    files.write_text("".join(line + "\n" for line in submission_lines(probabilities, file_names, classes)), path)


def write_per_class_csv(rows, path):
    """Per-class rows (``tiny_keras.evaluate.per_class_accuracy``) as CSV: index, wnid, name,
    images, top1, top5."""
    with files.atomic_open(path, newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PER_CLASS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
