#!/usr/bin/env python
"""Evaluate trained models, alone or as an ensemble, on a Tiny ImageNet split.

    python tools/evaluate.py MODEL [MODEL ...] --data PATH [--split val] [--ensemble [--weights W ...]]
        [--tta none|flip|crops10] [--precise-bn N [--precise-bn-images augmented]] [--json OUT]
        [--per-class-csv OUT] [--predict-test OUT.txt] [--overwrite]

MODEL is a .keras file, a run folder (its model.keras), a snapshot folder (every *.keras
inside is a member) or a SavedModel folder. Each model carries its own preprocessing, so
no preprocessing flags exist. Prints top-1, top-5 and loss per model (and for the
ensemble: the weighted mean of the members' probabilities; one weight per MODEL, shared
equally by a folder's snapshots), the 5 best and 5 worst classes and the most frequent
confusions. ``--predict-test`` writes the challenge submission (``file_name wnid`` per
test image) from ``--split test``. ``--precise-bn N`` first recomputes every
BatchNormalization layer's statistics from N batches of clean training images of
``--data`` (no augmentation, the weights untouched; pycls/fvcore's PreciseBN) and reports
each model both ways; ``--precise-bn-images augmented`` takes them through the model's
training augmentation instead. The logic lives in ``tiny_keras.evaluate``, the tables
and files in ``tiny_keras.report``.
"""
import argparse
import functools
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --precise-bn-images: what the JSON says of each
PRECISE_BN_IMAGES = {"clean": "train split, clean (no augmentation, centre crop)",
                     "augmented": "train split, through the model's training augmentation and random crop"}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help=".keras file, run folder, snapshot folder or SavedModel folder")
    parser.add_argument("--data", required=True, help="tiny-imagenet-200.zip or its folder")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--ensemble", action="store_true", help="also evaluate the mean of the members' probabilities")
    parser.add_argument("--weights", type=float, nargs="+", metavar="W",
                        help="ensemble weights, one per MODEL argument (default: every member counts once)")
    parser.add_argument("--tta", default="none", choices=("none", "flip", "crops10"), help="test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=256, help="network inputs per step (default 256)")
    parser.add_argument("--precise-bn", type=int, metavar="N",
                        help="recompute BatchNorm statistics from N batches of clean training images first "
                             "(weights untouched) and report the models both ways")
    parser.add_argument("--precise-bn-batch-size", type=int, default=128, metavar="B",
                        help="images per batch for --precise-bn (default 128)")
    parser.add_argument("--precise-bn-images", choices=tuple(PRECISE_BN_IMAGES), default="clean",
                        help="--precise-bn's training images as they are (clean, the default) or through the "
                             "model's training augmentation (augmented: the statistics of what training saw, "
                             "averaged evenly)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--per-class-csv", metavar="OUT", help="write per-class accuracy (index, wnid, name) as CSV")
    parser.add_argument("--predict-test", metavar="OUT", help="write 'file_name wnid' per image (needs --split test)")
    parser.add_argument("--confusions", type=int, default=10, metavar="N", help="confusions to list (default 10)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)

    if args.weights is not None and not args.ensemble:
        parser.error("--weights needs --ensemble")
    if args.predict_test and args.split != "test":
        parser.error(f"--predict-test writes predictions for the test split; pass --split test (not {args.split})")
    if args.split == "test" and not args.predict_test:
        parser.error("the test split has no labels, so accuracy cannot be measured; "
                     "pass --predict-test OUT.txt to write predictions, or use --split val")
    if args.split == "test" and (args.json or args.per_class_csv):
        parser.error("--json and --per-class-csv report accuracy, which the unlabelled test split cannot give")
    if args.predict_test and len(args.models) > 1 and not args.ensemble:
        parser.error("--predict-test with several models needs --ensemble (one prediction per image)")
    if args.weights is not None and (not all(math.isfinite(w) and w >= 0 for w in args.weights)
                                     or sum(args.weights) == 0):
        parser.error(f"--weights must be non-negative numbers, not all zero. Received: {args.weights}")
    if args.confusions < 1:
        parser.error(f"--confusions must be at least 1. Received: {args.confusions}")
    from tiny_keras import files  # after parsing: --help needs no TensorFlow

    outputs = {}
    for flag in ("json", "per_class_csv", "predict_test"):
        path, name = getattr(args, flag), f"--{flag.replace('_', '-')}"
        if not path:
            continue
        problem = files.output_problem(path, overwrite=args.overwrite)
        if problem:
            parser.error(f"{name}: {problem}")
        same = outputs.setdefault(os.path.abspath(path), name)
        if same != name:
            parser.error(f"{same} and {name} name the same file {path}; give each its own")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be positive. Received: {args.batch_size}")
    if args.precise_bn is not None and args.precise_bn < 1:
        parser.error(f"--precise-bn must be at least 1 batch. Received: {args.precise_bn}")
    if args.precise_bn_images != "clean" and args.precise_bn is None:
        parser.error("--precise-bn-images needs --precise-bn N")
    if args.precise_bn_batch_size < 1:
        parser.error(f"--precise-bn-batch-size must be positive. Received: {args.precise_bn_batch_size}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tiny_keras import data, files, report
    from tiny_keras import evaluate as ev

    try:
        members, groups = ev.load_members(args.models)
        for member in members:
            member.check_tta(args.tta)
        weights = ev.member_weights(groups, args.weights) if args.ensemble else None
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    try:
        split = data.load_split(args.data, args.split, progress=sys.stdout.isatty())
    except (data.DatasetError, OSError, ValueError) as err:
        raise SystemExit(f"error: --data {args.data}: {err}") from None
    try:
        classes = ev.resolve_classes(members[0].num_classes, split.classes) if members[0].num_classes else None
    except ValueError as err:
        if args.predict_test:
            raise SystemExit(f"error: {err}") from None
        print(f"warning: {err}; classes are named by index")
        classes = None
    print(f"{len(members)} model(s) on {len(split)} {args.split} images from {args.data}, tta={args.tta}")
    # Progress bars on a terminal only: in a log file each update would be one more line.
    predict = functools.partial(ev.predict_members, members, split.images, tta=args.tta, batch_size=args.batch_size,
                                progress=sys.stdout.isatty(), verbose=True)
    as_trained = None
    if args.precise_bn:
        as_trained = predict() if args.split != "test" else None
        precise_bn(members, args)
    probabilities = predict()

    if args.predict_test:
        final = ev.ensemble_probabilities(probabilities, weights) if args.ensemble else probabilities[0]
        classes = classes or ev.resolve_classes(final.shape[-1], split.classes)
        report.write_submission(final, split.files, classes, args.predict_test)
        print(f"wrote {args.predict_test} ({len(split.files)} lines)")
        return 0

    result = ev.evaluate(members, split.images, split.labels, ensemble=args.ensemble, weights=weights,
                         tta=args.tta, classes=classes, top_confusions=args.confusions,
                         probabilities=probabilities)
    result = {"data": os.fspath(args.data), "split": args.split, **result}
    if as_trained is not None:
        result["precise_bn"] = {"batches": args.precise_bn, "batch_size": args.precise_bn_batch_size,
                                "images": PRECISE_BN_IMAGES[args.precise_bn_images], "seed": 0}
        for row, p in zip(result["models"], as_trained):
            row["as_trained"] = ev.metrics(p, split.labels)
    print()
    print(report.format_report(result))
    if args.per_class_csv:
        report.write_per_class_csv(result["per_class"], args.per_class_csv)
        print(f"wrote {args.per_class_csv}")
    if args.json:
        files.write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def precise_bn(members, args):
    """Recompute the members' BatchNorm statistics from ``--precise-bn`` batches of the
    training split of ``--data`` (see ``tiny_keras.evaluate.recompute_bn_statistics``)."""
    from tiny_keras import data
    from tiny_keras import evaluate as ev

    for member in members:
        if member.kind != "keras":
            raise SystemExit(f"error: --precise-bn: {member.path} is a SavedModel; it needs the .keras model "
                             "(its layers and augmentation apart)")
    try:
        train = data.load_split(args.data, "train", progress=sys.stdout.isatty())
        images = ev.precise_bn_images(train.images, args.precise_bn, args.precise_bn_batch_size)
    except (data.DatasetError, OSError, ValueError) as err:
        raise SystemExit(f"error: --precise-bn with --data {args.data}: {err}") from None
    for member in members:
        try:
            layers = ev.recompute_bn_statistics(member.model, images, args.precise_bn_batch_size,
                                                augmented=args.precise_bn_images == "augmented")
        except ValueError as err:
            raise SystemExit(f"error: --precise-bn: {member.path}: {err}") from None
        print(f"{member.path}: BatchNorm statistics of {len(layers)} layer(s) recomputed from {args.precise_bn} "
              f"batches of {args.precise_bn_batch_size} {args.precise_bn_images} training images")


if __name__ == "__main__":
    sys.exit(main())
