"""Paper 2, section 4.8: object localisation with a conv encoder and an LSTM box decoder.

Paper: "Tiny ImageNet: ResNet, Inception-ResNet and VGG from scratch" (text in
shared/papers/paper2_resnet_inception_resnet_vgg.txt, sections 3.5 and 4.8; spec in
PAPERS.md). Built on TensorBox (Stewart et al. 2016). The paper trained on one class,
goldfish (n01443537): 80% of its 500 training images to train on, the other 20% held
out, and shows only pictures (Fig. 15): it reports no number. Ours are beside two
baselines a localiser must beat: the one constant box best on the training boxes, and
the whole image.

Command (the paper's setting; ``--encoder small`` trains on a CPU in minutes):

    python reproductions/paper2_localization.py --data tiny-imagenet-200.zip --workdir runs/paper2_localization \\
        [--encoder small|paper2_resnet18|<any registered model>] [--classes n01443537|all]

``--classes all`` trains one class-agnostic localiser on all 200 classes' training images
and evaluates it on the official validation boxes (beyond the paper).

From the paper: the encoder-decoder (section 3.5), Eq. 1's loss ``alpha * L1(box) +
cross-entropy(confidence)`` with matching that respects precedence and localisation
(Fig. 5), boxes accepted while their confidence is above a threshold, goldfish 400/100.
From TensorBox (the paper says it started from its code): Adam at lr 1e-3, at most 5
boxes, the matching cost (overlap at IoU 0.25, then rank, then L1), the box weight 0.1
per pixel (``alpha`` 6.4 per image width here), the confidence threshold 0.5 (its
default for drawing accepted boxes). Ours: the 80/20 split's seed (0), batch 32, cosine
decay of the learning rate, 100 epochs, augmentation by flips, shifts and scales of
up to 10% that move the boxes with the image (the paper's classifier augmentation, with
boxes), and one decoder for the whole 64 px image instead of TensorBox's grid of cells
(see ``tiny_keras/models/localizer.py``).

Writes WORKDIR/results.json (ours and the baselines: mean IoU of the most confident box,
CorLoc, AP at IoU 0.5), results.txt, history.csv, config.json, split.json, model.keras
and run.json (command, commit, machine, wall time). Figure 15:
``python tools/plot.py boxes WORKDIR --data tiny-imagenet-200.zip --out boxes.png``.
"""
import argparse
import os
import sys

from tiny_keras import reproduce
from tiny_keras.localization import training

SMOKE = dict(epochs=1, steps_per_epoch=2, batch_size=4, per_class=4, val_per_class=1, encoder="small",
             smoke=True)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="tiny-imagenet-200.zip or its folder (default: the TFDS dataset, downloaded if absent)")
    parser.add_argument("--workdir", default=os.path.join("runs", "paper2_localization"), help="run folder")
    parser.add_argument("--classes", default=training.GOLDFISH,
                        help="a wnid (default n01443537, goldfish: the paper's 80/20 split of its training images), "
                             "or 'all': every class, evaluated on the official val boxes")
    parser.add_argument("--encoder", default="paper2_resnet18",
                        help="'small' (trains on a CPU) or a registered model whose feature maps encode the image "
                             "(default paper2_resnet18)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 100)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=None, help="Adam's initial learning rate (default 1e-3)")
    parser.add_argument("--alpha", type=float, default=None, help="box loss weight of Eq. 1 (default 6.4)")
    parser.add_argument("--max-boxes", type=int, default=None, help="decoder steps (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the split, weights, shuffling, augmentation")
    parser.add_argument("--smoke", action="store_true",
                        help="small encoder, 1 epoch of 2 steps on a few images: checks the whole script in seconds")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --workdir")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2, help="0: quiet; 1, 2: a line per epoch")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (a failed download, bad data) instead of its "
                             "one line")
    return parser


def config_from(args):
    """The run's ``Config`` from the parsed flags."""
    changes = {"classes": args.classes, "encoder": args.encoder}
    for flag, field in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "learning_rate"),
                        ("alpha", "alpha"), ("max_boxes", "max_boxes"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            changes[field] = getattr(args, flag)
    if args.smoke:
        changes.update(SMOKE)
    for field in ("epochs", "batch_size", "max_boxes"):
        if field in changes and changes[field] < 1:
            raise SystemExit(f"--{field.replace('_', '-')} must be at least 1. Received: {changes[field]}")
    return training.Config(**changes)


def command_line(argv=None):
    """``reproductions/paper2_localization.py [flags]``: train and evaluate the localiser the
    flags of ``argv`` (default: the command line) describe; returns the results dict. A bad
    input (:func:`tiny_keras.reproduce.input_errors`) or a finished run in ``--workdir``
    exits with status 1 and one line."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    config = config_from(args)
    try:
        return training.run(config, args.workdir, data=args.data, overwrite=args.overwrite, verbose=args.verbose)
    except reproduce.input_errors() as error:
        if args.debug:
            raise
        print(f"error: {reproduce.describe_input_error(error, args.data)}", file=sys.stderr)
        raise SystemExit(1) from None
    except FileExistsError as error:
        raise SystemExit(f"error: {error}") from None
