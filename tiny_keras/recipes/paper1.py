"""Paper 1: progressive resizing of a ResNet on Tiny ImageNet, finished with a cyclic learning rate.

Paper: "Tiny ImageNet classification with progressive resizing and cyclic learning rate"
(text in shared/papers/paper1_progressive_resizing_resnet_clr.txt; spec in PAPERS.md).

Command (full reproduction, one GPU; about 476 epochs in all, roughly 10-15 h on an A100):

    python reproductions/paper1_progressive_resnet.py --data tiny-imagenet-200.zip --workdir runs/paper1

Quick check of the whole chain on a CPU (seconds): add ``--smoke``.

The paper's numbers (val top-1, Table 1) and the chain we train, each stage starting from
the previous stage's weights (section IV):

    stage   size  epochs  batch  lr                    paper top-1
    32px    32    145     128    0.1 (text: "1.0")     43.91
    40px    40    100     70     0.01, best kept       48.58
    48px    48    100     70     0.1, best kept        54.03
    54px    54    65      70     0.1, best kept        56.81
    64px    64    50      70     0.1, best kept        59.6
    clr     64    16      128    CLR 0.001-0.1         62.57   (the table says 62x62)

Readings of ambiguous text (PAPERS.md):
- "learning rate of 1.0" for the first model: we use 0.1 (SGD at 1.0 diverges with this
  network); ``--first-lr 1.0`` gives the literal reading.
- "rotation=35%": 35 degrees (``rotation_range`` takes degrees). The text lists no flip;
  ``--horizontal-flip`` adds one.
- Stages 3-5 (48, 54, 64 px) "work on the same configuration except for the learning rate
  ... and image size" as the 40px stage: batch 70 and its best weights kept, as the text
  says (section IV). ``--later-batch-size 128 --keep-last-weights`` gives the other reading
  (the batch of stage 1 and the last epoch's weights: about 45% fewer updates per stage).
- The CLR stage keeps batch 128: its step size of 782 iterations is one epoch at batch 128.
- ReduceLROnPlateau "against saturating accuracy" with Keras's defaults on val top-1
  (factor 0.1, patience 10), in every stage but the CLR one, whose schedule sets the rate.
- CLR: triangular, scale 1, 0.001 to 0.1, step size 782 iterations as stated (one epoch
  of batch 128, though the text calls it two).
- Featurewise std normalisation (ImageDataGenerator semantics: centre and divide by the
  per-channel std of the training set) is a layer of the saved model, fitted once.
- "Dropouts at a later stage": the figure with the network is lost, and the text gives no
  rate or stage, so no dropout is added (``--dropout RATE`` builds the head with one).
"""
from tiny_keras import augment, flags
from tiny_keras.recipe import Recipe, Stage

PAPER_TOP1 = {"32px": 43.91, "40px": 48.58, "48px": 54.03, "54px": 56.81, "64px": 59.6, "clr": 62.57}
SGD = {"name": "sgd", "momentum": 0.9}
PLATEAU = {"monitor": "val_top1", "mode": "max", "factor": 0.1, "patience": 10}


def augmentation(horizontal_flip=False):
    """ImageDataGenerator(rotation_range=35, width/height_shift_range=0.2, fill_mode="nearest")."""
    return augment.serialize(augment.Augmenter(
        rotation_range=35, width_shift_range=0.2, height_shift_range=0.2, fill_mode="nearest",
        horizontal_flip=horizontal_flip))


def recipe(first_lr=0.1, horizontal_flip=False, dropout=0.0, later_batch_size=70, keep_best=True):
    aug = augmentation(horizontal_flip)
    later = dict(batch_size=later_batch_size, reduce_lr_on_plateau=PLATEAU, restore_best=keep_best)

    def stage(name, size, epochs, lr, batch_size=128, **kw):
        return Stage(name=name, image_size=size, epochs=epochs, batch_size=batch_size,
                     optimizer=dict(SGD, learning_rate=lr), augment=aug, **kw)

    return Recipe(
        paper="paper1",
        model="paper1_resnet",
        model_options={"dropout": dropout},
        preprocessing={"featurewise_std_normalization": True},
        stages=[
            stage("32px", 32, 145, first_lr, reduce_lr_on_plateau=PLATEAU),
            stage("40px", 40, 100, 0.01, batch_size=70, reduce_lr_on_plateau=PLATEAU, restore_best=True),
            stage("48px", 48, 100, 0.1, **later),
            stage("54px", 54, 65, 0.1, **later),
            stage("64px", 64, 50, 0.1, **later),
            stage("clr", 64, 16, 0.1, schedule={"name": "cyclic", "base_lr": 0.001, "max_lr": 0.1,
                                                 "step_size": 782, "mode": "triangular"}),
        ],
        paper_results=PAPER_TOP1,
    )


def extra_flags(parser):
    parser.add_argument("--first-lr", type=flags.positive_number, default=0.1,
                        help='lr of the 32px stage (the text says "1.0")')
    parser.add_argument("--horizontal-flip", action="store_true", help="add random horizontal flips")
    parser.add_argument("--dropout", type=flags.rate, default=0.0, help="dropout before the classifier (0 to <1)")
    parser.add_argument("--later-batch-size", type=flags.positive_int, default=70,
                        help="batch of the 48/54/64px stages (the text: the 40px stage's 70)")
    parser.add_argument("--keep-last-weights", action="store_true",
                        help="end the 48/54/64px stages with their last weights, not their best")


def configure(recipes, args):
    return {"resnet": recipe(args.first_lr, args.horizontal_flip, args.dropout, args.later_batch_size,
                             keep_best=not args.keep_last_weights)}


RECIPES = {"resnet": recipe()}
DEFAULT_RUNS = ["resnet"]
ENSEMBLES = []  # one model
