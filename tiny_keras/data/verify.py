"""Verify a Tiny ImageNet copy and summarise it: ``python -m tiny_keras.data PATH [--json]``."""
import argparse
import json
import sys

from tiny_keras.data import arrays, layout


def summarize(path, progress=True, decoder=None):
    """Decode every image of every split (with ``decoder``, see ``load_split``); count images,
    classes, grayscale images and boxes, and collect every problem found (bad files are
    counted, not fatal)."""
    dataset = layout.TinyImageNet(path, on_error="skip")
    summary = {"source": dataset.location, "classes": len(dataset.classes)}
    grayscale, boxes, problems = {}, {}, []
    for split in layout.SPLITS:
        try:
            decoded = arrays.load_split(dataset, split, cache="memory", on_error="skip", progress=progress,
                                        decoder=decoder)
        except (layout.DatasetError, ValueError) as e:
            summary[split] = 0
            problems.append(str(e))
            continue
        summary[split] = len(decoded)
        grayscale[split] = int(decoded.grayscale.sum())
        boxes[split] = int((decoded.boxes[:, 0] >= 0).sum())
        problems.extend(p for p in decoded.problems if p not in problems)
    summary.update(
        grayscale=sum(grayscale.values()),
        grayscale_per_split=grayscale,
        boxes=boxes,
        problems=problems,
    )
    return summary


def format_summary(s):
    lines = [
        f"Tiny ImageNet at {s['source']}",
        f"  classes     {s['classes']}",
        *(f"  {split:<11} {s[split]:>7,} images, {s['grayscale_per_split'].get(split, 0):>4} grayscale, "
          f"{s['boxes'].get(split, 0):>7,} boxes" for split in layout.SPLITS),
        f"  grayscale   {s['grayscale']} images in all (decoded to 3 channels)",
    ]
    if s["problems"]:
        lines.append(f"  PROBLEMS    {len(s['problems'])}:")
        lines.extend(f"    {p}" for p in s["problems"][:50])
        if len(s["problems"]) > 50:
            lines.append(f"    ... and {len(s['problems']) - 50} more (see --json)")
    else:
        lines.append("  problems    none")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tiny_keras.data", description=__doc__)
    parser.add_argument("path", help="tiny-imagenet-200.zip, the tiny-imagenet-200 folder, or a folder holding either")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--decoder", choices=("tensorflow", "pillow"), default=None,
                        help="JPEG decoder (default: tensorflow on the TensorFlow backend, pillow on the others)")
    args = parser.parse_args(argv)
    try:
        summary = summarize(args.path, progress=not args.json, decoder=args.decoder)
    except layout.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 1 if summary["problems"] else 0
