"""Paper 2: ResNet, Inception-ResNet and VGG trained from scratch on Tiny ImageNet.

Paper: "Tiny ImageNet challenge: ResNet, Inception-ResNet and VGG from scratch"
(text in shared/papers/paper2_resnet_inception_resnet_vgg.txt; spec in PAPERS.md).

Command (one GPU; each model about 40 epochs, a few hours each on an A100):

    python reproductions/paper2_resnet_inception.py --data tiny-imagenet-200.zip --workdir runs/paper2 \
        [--model resnet18 --model inception_resnet ...]

Models (``--model``, repeatable; default: the four the paper reports):
``resnet18``, ``resnet10`` (the depth study), ``inception_resnet``, ``vgg16``, ``vgg19``.

The paper's numbers (val top-1 = 100 - val top-1 error; val top-5 error, test top-1 error):

    Inception-ResNet  62.44   (18.96, 43.10)
    ResNet-18         56.50   (20.30, 46.90)
    VGG-19            54.69   (23.75, 50.22)
    VGG-16            52.78   (25.20, 51.93)

Recipe (section 3):
- The mean training image is subtracted (a layer of the model): the paper loads the data
  with CS231n's ``utils.py`` (footnote 1), whose ``load_tiny_imagenet`` subtracts it.
  Augmentation runs before it, on 0..255 pixels, which is what lets contrast clip to
  [0, 255] as the text says. ``--no-mean-image`` feeds raw pixels instead.
- Random 56x56 crops in training, the centre crop at evaluation (a layer of the model).
- Horizontal flip of half the images; each of translation, rotation, contrast scaling by
  U[0.9, 1.08] with clipping to [0, 255], and gamma correction with gamma in U[0.9, 1.08]
  is applied at random (probability 1/2 each, our reading of "in a random fashion").
- ResNets: stages 2-4 down-sample and stage 1 keeps the stem's 56x56 (the evidence is
  in ``tiny_keras.models.paper2.build_resnet``); ``--resnet-downsample-first-stage`` gives
  the other reading (56 -> 28 -> 14 -> 7 -> 4).
- ResNets: SGD with Nesterov momentum 0.9, lr 0.1 divided by 10 when the validation
  error plateaus (ReduceLROnPlateau on val top-1, patience 3: ours), weight decay 2e-4
  (the best of the paper's study, the builder's default).
- Inception-ResNet: RMSProp (decay 0.9, epsilon 1.0), lr 0.05 decayed per step as
  0.05 * 0.9 ** (t / T), T = steps per epoch.
- VGG-16/19: Adam, lr 1e-3 with the same per-step decay.
Not stated, so ours: 40 epochs, batch 128, translation 0.1 of the size, rotation 10 degrees.
"""
from tiny_keras import augment
from tiny_keras.recipe import Recipe, Stage

EPOCHS = 40
BATCH = 128
EXPONENTIAL = {"name": "exponential", "rate": 0.9}  # decay_steps defaults to one epoch


def augmentation():
    half = lambda t: augment.RandomApply(t, p=0.5)  # noqa: E731
    return augment.serialize(augment.Compose([
        augment.RandomFlip(horizontal=True),  # flips half the images by itself
        half(augment.Augmenter(width_shift_range=0.1, height_shift_range=0.1, fill_mode="nearest")),
        half(augment.Augmenter(rotation_range=10, fill_mode="nearest")),
        half(augment.RandomContrast(0.9, 1.08)),
        half(augment.RandomGamma(0.9, 1.08)),
    ]))


def recipe(model, optimizer, paper_top1=None, **stage):
    return Recipe(
        paper="paper2",
        model=f"paper2_{model}",
        crop=56,
        preprocessing={"mean_image": True},
        stages=[Stage(name="train", epochs=EPOCHS, batch_size=BATCH, optimizer=optimizer, augment=augmentation(),
                      **stage)],
        paper_results={"train": paper_top1} if paper_top1 is not None else {},
    )


NESTEROV = {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True}
PLATEAU = {"monitor": "val_top1", "mode": "max", "factor": 0.1, "patience": 3}
RECIPES = {
    "resnet18": recipe("resnet18", NESTEROV, 56.50, reduce_lr_on_plateau=PLATEAU),
    "resnet10": recipe("resnet10", NESTEROV, reduce_lr_on_plateau=PLATEAU),
    "inception_resnet": recipe("inception_resnet", {"name": "rmsprop", "learning_rate": 0.05, "rho": 0.9,
                                                    "epsilon": 1.0}, 62.44, schedule=EXPONENTIAL),
    "vgg16": recipe("vgg16", {"name": "adam", "learning_rate": 1e-3}, 52.78, schedule=EXPONENTIAL),
    "vgg19": recipe("vgg19", {"name": "adam", "learning_rate": 1e-3}, 54.69, schedule=EXPONENTIAL),
}

RESNETS = ("resnet18", "resnet10")


def extra_flags(parser):
    parser.add_argument("--no-mean-image", action="store_true",
                        help="feed raw 0..255 pixels instead of subtracting the mean training image")
    parser.add_argument("--resnet-downsample-first-stage", action="store_true",
                        help="ResNets: stride 2 in the first stage too (56 -> 28 -> 14 -> 7 -> 4)")


def configure(recipes, args):
    changed = {}
    for name, r in recipes.items():
        if args.no_mean_image:
            r = r.replace(preprocessing={})
        if args.resnet_downsample_first_stage and name in RESNETS:
            r = r.replace(model_options=dict(r.model_options, downsample_first_stage=True))
        changed[name] = r
    return changed


DEFAULT_RUNS = ["resnet18", "inception_resnet", "vgg16", "vgg19"]
ENSEMBLES = []  # the paper reports single models
