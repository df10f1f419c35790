"""Paper 3: VGG-style networks with small (1x1, 2x1, 1x2, 2x2) filters, and InceptionV3-lite.

Paper: "Tiny ImageNet with small-filter VGG networks and a reduced InceptionV3"
(text in shared/papers/paper3_vgg_small_filters_inceptionv3.txt; spec in PAPERS.md).

Command (one GPU; three VGGs of 60 epochs each, then their ensemble):

    python reproductions/paper3_vgg.py --data tiny-imagenet-200.zip --workdir runs/paper3

``--model vgg_z|vgg_f|vgg_y|inception_v3_lite`` (repeatable) picks models; by default the
three VGGs are trained and their ensemble (average of class probabilities, the paper's
final predictor) is reported. The paper's figures and tables are lost: it reports no
accuracy we can put beside ours, and the three VGG variants are our reconstruction
(``tiny_keras.models.paper3``).

Recipe (sections 3-4):
- The mean training image is subtracted (a layer of the saved model).
- Augmentation (ImageDataGenerator): rotation up to 60 degrees, zoom up to 1.2x
  (``zoom_range=0.2``), horizontal and vertical shifts (0.1 of the size: not stated).
- VGGs: Adam, lr 1e-3 halved every 20 epochs; L2 on every conv (builder default 1e-4).
- InceptionV3-lite: Adam, lr 5e-4, ReduceLROnPlateau on the validation loss; 85 epochs
  (the text's 50 + 35).
Not stated, so ours: 60 epochs for the VGGs, batch 128, ReduceLROnPlateau factor 0.5,
patience 5.
"""
from tiny_keras import augment
from tiny_keras.recipe import Recipe, Stage
from tiny_keras.recipe import Ensemble

AUGMENT = augment.serialize(augment.Augmenter(rotation_range=60, zoom_range=0.2, width_shift_range=0.1,
                                              height_shift_range=0.1, fill_mode="nearest"))


def recipe(model, epochs, optimizer, **stage):
    return Recipe(
        paper="paper3",
        model=f"paper3_{model}",
        preprocessing={"mean_image": True},
        stages=[Stage(name="train", epochs=epochs, batch_size=128, optimizer=optimizer, augment=AUGMENT, **stage)],
    )


VGG = dict(epochs=60, optimizer={"name": "adam", "learning_rate": 1e-3},
           schedule={"name": "step", "every_epochs": 20, "factor": 0.5})
RECIPES = {
    "vgg_z": recipe("vgg_z", **VGG),
    "vgg_f": recipe("vgg_f", **VGG),
    "vgg_y": recipe("vgg_y", **VGG),
    "inception_v3_lite": recipe("inception_v3_lite", 85, {"name": "adam", "learning_rate": 5e-4},
                                reduce_lr_on_plateau={"monitor": "val_loss", "factor": 0.5, "patience": 5}),
}

DEFAULT_RUNS = ["vgg_z", "vgg_f", "vgg_y"]
ENSEMBLES = [Ensemble("ensemble of 3 VGGs", ["vgg_z", "vgg_f", "vgg_y"])]
