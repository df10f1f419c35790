#!/usr/bin/env python
"""Evaluate trained models, alone or as an ensemble, on a Tiny ImageNet split.

    python tools/evaluate.py MODEL [MODEL ...] --data PATH [--split val] [--ensemble [--weights W ...]]
        [--tta none|flip|crops10] [--json OUT] [--per-class-csv OUT] [--predict-test OUT.txt] [--overwrite]

MODEL is a .keras file, a run folder (its model.keras), a snapshot folder (every *.keras
inside is a member) or a SavedModel folder. Each model carries its own preprocessing, so
no preprocessing flags exist. Prints top-1, top-5 and loss per model (and for the
ensemble: the weighted mean of the members' probabilities; one weight per MODEL, shared
equally by a folder's snapshots), the 5 best and 5 worst classes and the most frequent
confusions. ``--predict-test`` writes the challenge submission (``file_name wnid`` per
test image) from ``--split test``. The logic lives in ``tiny_keras.evaluate``, the tables
and files in ``tiny_keras.report``.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    for flag in ("json", "per_class_csv", "predict_test"):
        path = getattr(args, flag)
        if path and os.path.exists(path) and not args.overwrite:
            parser.error(f"--{flag.replace('_', '-')}: {path} exists; pass --overwrite to replace it")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be positive. Received: {args.batch_size}")
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
    probabilities = ev.predict_members(members, split.images, tta=args.tta, batch_size=args.batch_size,
                                       progress=sys.stdout.isatty(), verbose=True)

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
    print()
    print(report.format_report(result))
    if args.per_class_csv:
        report.write_per_class_csv(result["per_class"], args.per_class_csv)
        print(f"wrote {args.per_class_csv}")
    if args.json:
        files.write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
