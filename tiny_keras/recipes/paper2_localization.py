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
        [--encoder small|paper2_resnet18|<any registered model>] [--model goldfish|all_classes]

``--model all_classes`` trains one class-agnostic localiser on all 200 classes' training
images and evaluates it on the official validation boxes (beyond the paper).

From the paper: the encoder-decoder (section 3.5), Eq. 1's loss ``alpha * L1(box) +
cross-entropy(confidence)`` with matching that respects precedence and localisation
(Fig. 5), boxes accepted while their confidence is above a threshold, goldfish 400/100.
From TensorBox (the paper says it started from its code): Adam at lr 1e-3, at most 5
boxes, the matching cost (overlap at IoU 0.25, then rank, then L1), the box weight 0.1
per pixel (``alpha`` 6.4 per image width here), the confidence threshold 0.5 (its
default for drawing accepted boxes). Ours: the 80/20 split's seed (0), batch 32 (an epoch
is the training images' whole batches: 12 for goldfish), cosine decay of the learning
rate to 0, 100 epochs, float32, augmentation by flips, shifts and scales of up to 10%
that move the boxes with the image (the paper's classifier augmentation, with boxes),
and one decoder for the whole 64 px image instead of TensorBox's grid of cells (see
``tiny_keras/models/localizer.py``).

It trains on ``tiny_keras.engine`` like every paper's classifier (``Recipe(task=
"localization")``, ``tiny_keras.localization.task``): the same run folder, ``--time-limit``
and resume. WORKDIR/<run>/ holds results.json (ours and the baselines: mean IoU of the
most confident box, CorLoc, AP at IoU 0.5), recipe.json, split.json (the held-out
images), stages/train/history.csv, model.keras, train.log and run.json. Figure 15:
``python tools/plot.py boxes WORKDIR/goldfish --data tiny-imagenet-200.zip --out boxes.png``.
"""
from tiny_keras import flags
from tiny_keras.localization.task import GOLDFISH, OPTIONS
from tiny_keras.recipe import Recipe, Stage


LR = 1e-3  # Adam's, decayed to 0 over the run (cosine)
MAX_BOXES = 5


def recipe(classes=(GOLDFISH,), encoder="paper2_resnet18", encoder_options=None, max_boxes=MAX_BOXES, epochs=100,
           batch_size=32, lr=LR, seed=0, **task_options):
    """The localiser's recipe: ``classes`` (wnids, or None for all with the official val
    set held out), the encoder and decoder, one stage of Adam with cosine decay, and the
    task's options (``tiny_keras.localization.task.OPTIONS``)."""
    model_options = dict(encoder=encoder, max_boxes=max_boxes)
    if encoder_options:
        model_options["encoder_options"] = dict(encoder_options)
    return Recipe(paper="paper2", model="paper2_localizer", task="localization", model_options=model_options,
                  classes=None if classes is None else list(classes), seed=seed, precision="float32",
                  task_options={**OPTIONS, **task_options},
                  stages=[Stage(name="train", epochs=epochs, batch_size=batch_size,
                                optimizer={"name": "adam", "learning_rate": lr}, schedule={"name": "cosine"})])


def encoder_name(text):
    """An argparse type: ``small`` or a registered classifier."""
    import argparse

    from tiny_keras import models

    if text != "small" and text not in models.names():
        raise argparse.ArgumentTypeError(f"expected 'small' or a registered model, one of {', '.join(models.names())}. "
                                         f"Received: {text!r}")
    return text


def extra_flags(parser):
    parser.add_argument("--encoder", type=encoder_name, default="paper2_resnet18",
                        help="'small' (trains on a CPU) or a registered model whose feature maps encode the image "
                             "(default paper2_resnet18; --smoke: small)")
    parser.add_argument("--lr", type=flags.positive_number, default=LR,
                        help=f"Adam's initial learning rate (default {LR})")
    parser.add_argument("--alpha", type=flags.positive_number, default=OPTIONS["alpha"],
                        help=f"box loss weight of Eq. 1 (default {OPTIONS['alpha']})")
    parser.add_argument("--max-boxes", type=flags.positive_int, default=MAX_BOXES,
                        help=f"decoder steps (default {MAX_BOXES})")


def configure(_, args):
    import os

    from tiny_keras import runs

    workdir = args.workdir  # the run folder's parent, default runs/paper2_localization
    if os.path.exists(os.path.join(workdir, runs.CONFIG)):  # the localiser's run before it trained on the engine
        raise SystemExit(f"error: --workdir {workdir} holds a localisation run written by an older version (its "
                         f"{runs.CONFIG}); runs now go to {os.path.join(workdir, '<run>')}: choose another --workdir")
    encoder = "small" if args.smoke else args.encoder
    options = dict(encoder=encoder, max_boxes=args.max_boxes, lr=args.lr, alpha=args.alpha)
    return {"goldfish": recipe(**options), "all_classes": recipe(classes=None, **options)}


RECIPES = {"goldfish": recipe(), "all_classes": recipe(classes=None)}
DEFAULT_RUNS = ["goldfish"]
ENSEMBLES = ()
