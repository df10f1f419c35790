"""Paper 5: an 8-layer Caffe-style CNN, its regularisation, and model/snapshot ensembles.

Paper: "Tiny ImageNet classification with convolutional neural networks (Caffe)"
(text in shared/papers/paper5_caffe_8layer_cnn_ensemble.txt; spec in PAPERS.md).

Command (one GPU; three 8-layer models of 70,000 iterations plus a fine-tune, then the ensembles):

    python reproductions/paper5_caffe_cnn.py --data tiny-imagenet-200.zip --workdir runs/paper5

Runs (``--model``, repeatable; default: the three ensemble members):
``cnn8`` (dropout, lambda 5e-4, then the fine-tune stage), ``cnn8_b`` (lambda 3e-4, another
seed), ``cnn8_c`` (lambda 1e-4, another seed), and the baselines ``shallow``, ``cnn5``.

The paper's numbers (val top-1 = 100 - val error):

    shallow 17.5    5-layer 22.4    8-layer 32.6 (no dropout)
    8-layer + dropout: lambda 1e-4 36.4, 3e-4 40.5, 5e-4 42.0    ensemble of 3: 43.1

Measured: the shallow baseline reaches 23.94% with this recipe (results/paper5/shallow),
6.4 points above the paper's 17.5, and the 5-layer one 27.17% (results/paper5/cnn5), 4.8
points above its 22.4 (it passed 22.4 in its 10th of 30 epochs). Looked into before
publishing: the recipe runs as written here, and the paper does not define the models
that made its figures. It names the baselines only "3-layer" and "5-layer" with 32
filters and N(0, 0.01) weights (sections 4.1 and 6) and trained them with "light
parameter tuning ... over many epochs"; their layout, pooling, input and augmentation are
not given. Ours ([conv-relu-pool] x 2, fc and [[conv-relu] x 2 - pool] x 2, fc; stride-2
pools; the 8-layer models' mean image, 56px crops and augmentation; 30 passes) is one
reading; with Caffe's literal stride-1 pools (``--pool-strides 1``) the same layers would
be different models (18.7M weights in the shallow model's fc layer instead of 1.25M). Both
gaps point the same way and keep the paper's finding: the small models underfit (cnn5's
augmented training top-1 ended at 29.1%, barely above its val 27.2%), shallow < 5-layer <
8-layer. So the gaps measure the paper's unstated choices, not an error of ours; runs with
``--pool-strides 1`` are the next thing to compare.

The 8-layer ``cnn8`` reaches 39.40% after its fine-tune (results/paper5/cnn8), 2.6 points
below the paper's 42.0, with the centre crop. The paper does not say how it tested; with
pycaffe's default, ``Classifier.predict``'s oversampling (the mean of the centre, corner
and mirrored crops: ``tools/evaluate.py --tta crops10``), the same model scores 42.16%.

Recipe (sections 4-5 and 7):
- The mean training image is subtracted (a layer of the model); training on random
  56x56 crops and their mirrors, the centre crop at evaluation (a layer of the model).
- Tint (a constant per channel added, U[-20, 20]), contrast (each image multiplied by
  U[0.8, 1.2]) and Gaussian noise (std 1 on the 0-255 scale): amounts of tint and
  contrast are ours; each is applied with probability 1/2. The paper's "contrast"
  multiplies every pixel by a constant, before Caffe's data layer subtracts the mean: so
  it scales brightness and contrast together, and ours does the same (the multiplication
  runs on 0..255 pixels, the mean image is subtracted inside the model afterwards).
- The lambda history of the 8-layer models (sections 5.3 and 7): each model first trains
  40,000 iterations at lambda 1e-3 (stage ``lambda_1e-3``), then continues from there for
  20,000-40,000 more at its own lambda (stage ``train``; ours 30,000, the middle). These
  two stages count epochs of 1,000 iterations, so validation runs every 1,000 iterations
  and snapshots are taken every 10,000 (section 5.4: "snapshots (10,000 iterations
  apart)"), all three in the ``train`` stage, at the model's own lambda.
  ``--lambda-history scratch`` trains each lambda from scratch instead (30 passes over the
  data, lr / 10 every 10, snapshots every 10 passes).
- SGD with momentum 0.9 from lr 1e-3 (section 4.2). The paper divides it by 10 "every 10
  epochs", but its epochs are of its 2 million pre-augmented images (section 5.1, 15,625
  iterations at batch 128), so at 1e-3 through the 40,000 iterations at lambda 1e-3; the
  dropout models then used "a learning rate ranging from 1e-3 to 1e-4" (section 6.1):
  ours 1e-3 for the first 20,000 continued iterations, 1e-4 for the last 10,000.
- The best model (lambda 5e-4) is fine-tuned at lr 5e-6 with a lower weight decay (1e-4:
  ours, "lower regularisation") for "another 5 epochs" (section 4.2): read as 5 passes
  over the 100,000 training images (3,905 iterations). Read as the paper's own epochs of
  2 million pre-augmented images, as the learning-rate schedule above reads them, those
  are 78,125 iterations, longer than the rest of the run: ``--fine-tune paper_epochs``
  trains 78 epochs of 1,000 iterations instead.
- Ensembles average class probabilities: the 3 models, and 3 snapshots of each (9 in all).
- Baselines (shallow, 5-layer; "light parameter tuning and training over many epochs"):
  30 passes over the data, lr 1e-3 / 10 every 10 passes, no weight decay (none is given).
- Pools have stride 2 (the physical reading, see PAPERS.md): ``--pool-strides 1`` gives
  the literal Caffe default.
Not stated, so ours: batch 128.
"""
from tiny_keras import augment
from tiny_keras.recipe import Recipe, Stage
from tiny_keras.recipe import Ensemble


def augmentation():
    half = lambda t: augment.RandomApply(t, p=0.5)  # noqa: E731
    return augment.serialize(augment.Compose([
        augment.RandomFlip(horizontal=True),
        half(augment.RandomTint(20.0)),
        half(augment.RandomMultiply(0.8, 1.2)),
        half(augment.GaussianNoise(1.0)),
    ]))


ITERATIONS_PER_EPOCH = 1_000  # the 8-layer stages count epochs of 1,000 iterations
FIRST_LAMBDA = 1e-3  # sections 5.2 and 7: "we initially used a value of 1e-3"
FIRST_ITERATIONS = 40_000
CONTINUED_ITERATIONS = 30_000  # "an additional 20,000-40,000 iterations"
SNAPSHOT_ITERATIONS = 10_000
SGD = {"name": "sgd", "learning_rate": 1e-3, "momentum": 0.9}


def lambda_history(weight_decay, snapshots=True, continued_iterations=CONTINUED_ITERATIONS):
    """The 8-layer models' stages: 40,000 iterations at lambda 1e-3, then more at ``weight_decay``."""
    per_epoch = dict(batch_size=128, steps_per_epoch=ITERATIONS_PER_EPOCH, augment=augmentation())
    continued = continued_iterations // ITERATIONS_PER_EPOCH
    return [
        Stage(name="lambda_1e-3", epochs=FIRST_ITERATIONS // ITERATIONS_PER_EPOCH, optimizer=SGD,
              weight_decay=FIRST_LAMBDA, **per_epoch),
        Stage(name="train", epochs=continued, optimizer=SGD, weight_decay=weight_decay,
              schedule={"name": "step", "every_epochs": 20_000 // ITERATIONS_PER_EPOCH, "factor": 0.1},
              snapshot_every_epochs=SNAPSHOT_ITERATIONS // ITERATIONS_PER_EPOCH if snapshots else None,
              **per_epoch),
    ]


def from_scratch(weight_decay=None, snapshots=True, epochs=30):
    """One stage of ``epochs`` passes over the data, lr 1e-3 / 10 every 10 (the baselines'
    recipe, and the 8-layer models' with ``--lambda-history scratch``)."""
    return [Stage(name="train", epochs=epochs, batch_size=128, optimizer=SGD, weight_decay=weight_decay,
                  schedule={"name": "step", "every_epochs": 10, "factor": 0.1}, augment=augmentation(),
                  snapshot_every_epochs=10 if snapshots else None)]


FINE_TUNE_READINGS = ("passes", "paper_epochs")
FINE_TUNE_EPOCHS = 5  # section 4.2: "another 5 epochs"
PAPER_EPOCH_ITERATIONS = 15_625  # section 5.1: 2 million pre-augmented images at batch 128


def fine_tune(reading="passes"):
    """The best model's fine-tune, lr 5e-6 and lambda 1e-4, for "another 5 epochs": 5 passes
    over the training images (``passes``), or 5 of the paper's 2-million-image epochs
    (``paper_epochs``: 78 epochs of 1,000 iterations, the 78,125 rounded down)."""
    if reading not in FINE_TUNE_READINGS:
        raise ValueError(f"fine-tune reading must be one of {FINE_TUNE_READINGS}. Received: {reading=}")
    length = dict(epochs=FINE_TUNE_EPOCHS)
    if reading == "paper_epochs":
        length = dict(epochs=FINE_TUNE_EPOCHS * PAPER_EPOCH_ITERATIONS // ITERATIONS_PER_EPOCH,
                      steps_per_epoch=ITERATIONS_PER_EPOCH)
    return Stage(name="fine_tune", batch_size=128, optimizer=dict(SGD, learning_rate=5e-6), weight_decay=1e-4,
                 augment=augmentation(), **length)


def recipe(model, model_options, stages, seed=0, paper=None):
    return Recipe(paper="paper5", model=f"paper5_{model}", model_options=model_options, crop=56,
                  preprocessing={"mean_image": True}, stages=stages, seed=seed, paper_results=paper or {})


def recipes(pool_strides=2, history="paper", fine_tune_reading="passes"):
    if history not in ("paper", "scratch"):
        raise ValueError(f"history must be 'paper' or 'scratch'. Received: {history=}")
    pools = {"pool_strides": pool_strides}
    stages = lambda_history if history == "paper" else from_scratch
    return {
        "cnn8": recipe("cnn8", dict(pools, weight_decay=5e-4), stages(5e-4) + [fine_tune(fine_tune_reading)], 0,
                       {"fine_tune": 42.0}),
        "cnn8_b": recipe("cnn8", dict(pools, weight_decay=3e-4), stages(3e-4), 1, {"train": 40.5}),
        "cnn8_c": recipe("cnn8", dict(pools, weight_decay=1e-4), stages(1e-4), 2, {"train": 36.4}),
        "shallow": recipe("shallow", pools, from_scratch(snapshots=False), 0, {"train": 17.5}),
        "cnn5": recipe("cnn5", pools, from_scratch(snapshots=False), 0, {"train": 22.4}),
    }


ENSEMBLES = [
    Ensemble("ensemble of 3", ["cnn8", "cnn8_b", "cnn8_c"], paper_val_top1=43.1),
    Ensemble("ensemble of 9 snapshots", ["cnn8", "cnn8_b", "cnn8_c"], snapshots=True),
]


def history_flags(parser):
    """The flags of the 8-layer models' layout and lambda history (this paper's and its study's)."""
    parser.add_argument("--pool-strides", type=int, choices=(1, 2), default=2,
                        help="max-pool stride (2: the physical reading; 1: Caffe's default, 144M parameters)")
    parser.add_argument("--lambda-history", choices=("paper", "scratch"), default="paper",
                        help="8-layer models: 40k iterations at lambda 1e-3 then their own (paper), "
                             "or their own lambda from scratch")


def extra_flags(parser):
    history_flags(parser)
    parser.add_argument("--fine-tune", choices=FINE_TUNE_READINGS, default="passes",
                        help="cnn8's fine-tune of 'another 5 epochs': 5 passes over the training images (default), "
                             "or 5 of the paper's 2-million-image epochs (78,000 iterations)")


def configure(_, args):
    return recipes(args.pool_strides, args.lambda_history, args.fine_tune)


RECIPES = recipes()
DEFAULT_RUNS = ["cnn8", "cnn8_b", "cnn8_c"]
