#!/usr/bin/env python
"""Draw the papers' analyses of a trained run or model as a PNG.

    python tools/plot.py KIND RUN_OR_MODEL --out FILE.png [--data PATH] [--overwrite]
        [--width 1200] [--height 800] [--classes N | WNID ...] [-k 5] [--samples N]
        [--split val] [--seed 0] [--title TEXT]

KIND:
  curves       loss and top-1 per epoch (train and val), stage boundaries, learning rate on
               a second axis. RUN_OR_MODEL: a run folder, or a reproduction workdir (a
               study's): then its runs' curves together.
  activations  percentile bands of the last conv block's and the logits' outputs per epoch
               (paper2 figures 9-10). RUN_OR_MODEL: a run folder.
  filters      the first conv layer's filters as an RGB grid (paper2 fig. 14, paper5 fig. 4).
  tsne         t-SNE of the penultimate layer's features of --split images, by class, the
               --classes named in the legend (paper5 figure 2). Needs --data.
  classes      the -k best and -k worst classes by top-1, --samples images each
               (paper2 figure 7, paper5 figures 5-6). Needs --data.
  mistakes     --samples misclassified images, true and predicted names (paper2 fig. 8).
               Needs --data.
  boxes        --samples held-out images of a localisation run (reproductions/
               paper2_localization.py) with ground truth, accepted and rejected boxes
               (paper2 fig. 15). RUN_OR_MODEL: its run folder. Needs --data.
For filters, tsne, classes and mistakes RUN_OR_MODEL is a run folder (its model.keras) or
a .keras file. The logic lives in ``tiny_keras.plots``.
"""
import argparse
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

KINDS = ("curves", "filters", "tsne", "classes", "mistakes", "activations")  # = tiny_keras.plots.KINDS
NEEDS_DATA = ("tsne", "classes", "mistakes")
BOX_KINDS = ("boxes",)  # = tiny_keras.plots.BOX_KINDS: a localisation run's; they need --data too


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = KINDS + BOX_KINDS
    parser.add_argument("kind", choices=kinds, metavar="KIND", help=f"one of {', '.join(kinds)}")
    parser.add_argument("path", metavar="RUN_OR_MODEL", help="run folder, reproduction workdir or .keras file")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="the figure to write")
    parser.add_argument("--data", help="tiny-imagenet-200.zip or its folder (tsne, classes, mistakes, boxes)")
    parser.add_argument("--split", default="val", choices=("val", "train"), help="images to run the model on")
    parser.add_argument("--width", type=int, default=1200, help="pixels (default 1200)")
    parser.add_argument("--height", type=int, default=800, help="pixels (default 800)")
    parser.add_argument("--classes", nargs="+", metavar="N_OR_WNID",
                        help="tsne: how many classes the legend names (default 10), or their wnids")
    parser.add_argument("-k", type=int, default=5, help="classes: how many best and worst classes (default 5)")
    parser.add_argument("--samples", type=int, default=None,
                        help="classes: images per class (default 4); mistakes, boxes: images (16); tsne: images "
                             "embedded (2000, as many of each class)")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE and sampling seed")
    parser.add_argument("--title", help="replace the figure's title")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    if args.kind in NEEDS_DATA + BOX_KINDS and not args.data:
        parser.error(f"{args.kind} runs the model on images: pass --data PATH (the zip or its folder)")
    extension = os.path.splitext(args.out)[1]
    if not extension:
        parser.error(f"--out: {args.out} has no extension; name the format, e.g. {args.out}.png")
    from matplotlib.backend_bases import FigureCanvasBase  # the formats savefig writes

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if extension[1:].lower() not in formats:
        parser.error(f"--out: {args.out}: matplotlib cannot write {extension} files; name one of {', '.join(formats)}")
    if args.width < 100 or args.height < 100:
        parser.error(f"--width and --height must be at least 100 pixels. Received: {args.width}x{args.height}")
    if args.k < 1 or (args.samples is not None and args.samples < 1):
        parser.error("-k and --samples must be positive")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must lie in 0..2**32 - 1. Received: {args.seed}")
    if args.classes:
        check_classes(parser, args.classes)
    from tiny_keras import files  # after parsing: --help needs no TensorFlow

    problem = files.output_problem(args.out, overwrite=args.overwrite)
    if problem:
        parser.error(f"--out: {problem}")
    return args


def check_classes(parser, classes):
    """--classes: one number of classes (1 or more), or class indices and wnids (the dataset
    checks that they exist, before the features are computed)."""
    if len(classes) == 1 and classes[0].isdigit():
        if int(classes[0]) < 1:
            parser.error(f"--classes: the legend names 1 class or more. Received: {classes[0]}")
        return
    for item in classes:
        if not (item.isdigit() or re.fullmatch(r"n\d{8}", item)):
            parser.error(f"--classes takes a number of classes, or class indices and wnids (n01443537). "
                         f"Received: {item!r}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tiny_keras import plots

    try:
        fig = plots.make_plot(args.kind, args.path, data=args.data, split=args.split, classes=args.classes, k=args.k,
                              samples=args.samples, seed=args.seed, size=(args.width, args.height), title=args.title,
                              progress=True)
    except (ValueError, OSError) as err:  # PlotError and data.DatasetError are ValueErrors
        raise SystemExit(f"error: {err}") from None
    try:
        plots.save(fig, args.out, size=(args.width, args.height))
    except (ValueError, OSError) as err:  # checked in parse_args; what is left: e.g. no permission
        raise SystemExit(f"error: --out {args.out}: {err}") from None
    print(f"wrote {args.out} ({args.width}x{args.height})")


if __name__ == "__main__":
    main()
