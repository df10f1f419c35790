#!/usr/bin/env python
"""Export a trained model for serving, then reload it and check its predictions.

    python tools/export.py MODEL --out DIR [--format savedmodel|keras|litert|onnx] [--data PATH] [--overwrite]

MODEL is a .keras file or a run folder (its model.keras). ``savedmodel`` (the default)
writes a SavedModel whose ``serving_default`` signature takes uint8 images
[None, 64, 64, 3] and returns class probabilities, top-5 class indices and their wnids
(``serving_jpeg`` takes JPEG bytes; ``logits`` float images); the model's own
preprocessing runs inside. ``keras`` writes DIR/model.keras (or the file DIR if it ends
in .keras), a copy without optimizer state. ``litert`` and ``onnx`` write DIR/model.tflite
or DIR/model.onnx through Keras's ``model.export`` (float32 0..255 images [N, 64, 64, 3] in,
logits out) with DIR/wnids.txt, reloaded by LiteRT's interpreter or onnxruntime; a
mixed-precision model (mixed_bfloat16) is exported as a float32 copy, compared with it.
The export is reloaded and its predictions compared with the Keras model's (max abs
difference <= 1e-5) before it is put in place. --out may not be MODEL, hold it, or be its
run folder.
The wnids are the official 200 classes, or the classes of the dataset at ``--data`` (its
own list when it has as many classes as the model has outputs).
The logic lives in ``tiny_keras.export``.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help=".keras file or run folder")
    parser.add_argument("--out", required=True, help="destination folder (or .keras file with --format keras)")
    parser.add_argument("--format", default="savedmodel", choices=("savedmodel", "keras", "litert", "onnx"),
                        help="savedmodel (default), keras, litert (model.tflite) or onnx (model.onnx, needs "
                             "pip install \"tiny_keras[onnx]\"); litert and onnx write a folder with wnids.txt")
    parser.add_argument("--data", help="take the class list (wnids) from this dataset (zip or folder); "
                                       "default: the official 200 classes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    from tiny_keras import export, files

    # Checked before the model is loaded: a mistake here costs nothing.
    out, folder = args.out, args.format != "keras"
    if not folder and not out.endswith(".keras"):
        out = os.path.join(out, "model.keras")
    problem = export.source_problem(args.model, out)
    if problem:
        parser.error(f"--out: {problem}")
    problem = files.output_problem(out, overwrite=args.overwrite, folder=folder)
    if problem and problem.endswith(("is a file", "cannot be written under it")):
        problem += (f"; expected a folder, which is what --format {args.format} writes" if folder
                    else "; expected a folder, or a file name ending in .keras")
    if problem:
        parser.error(f"--out: {problem}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tiny_keras import data, evaluate, export

    try:
        model = export.load_keras_model(args.model)
        classes = None
        if args.data:
            try:
                dataset_classes = data.TinyImageNet(args.data).classes
            except (data.DatasetError, OSError) as err:
                raise SystemExit(f"error: --data {args.data}: {err}") from None
            classes = evaluate.resolve_classes(int(model.outputs[0].shape[-1]), dataset_classes)
        report = export.export(model, args.out, format=args.format, classes=classes, overwrite=args.overwrite)
    except (ValueError, FileExistsError, ImportError) as err:  # unreadable models, failed checks, missing packages
        raise SystemExit(f"error: {err}") from None
    print(f"exported {args.model} -> {report['path']} ({report['format']}, {report['classes']} classes)")
    checks = {k: v for k, v in report.items() if k.endswith("max_abs_diff")}
    print(f"reloaded and checked on {report['images']} images: "
          + ", ".join(f"{k} {v:.2e}" for k, v in checks.items()) + f" (allowed {export.TOLERANCE:g})")
    if "source_dtype_policy" in report:
        print(f"exported in float32: checked above against a float32 copy of the {report['source_dtype_policy']} "
              f"model, whose probabilities are within {report['source_probabilities_diff']:.2e} of the model's "
              f"(logits within {report['source_logits_rel_diff']:.2%} of their range)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
