"""Paper 4: four simple CNNs and ResNet50 transfer learning on Tiny ImageNet.

Paper: "Image classification on Tiny ImageNet: simple CNNs and ResNet50 transfer"
(text in shared/papers/paper4_cnns_resnet50_transfer.txt; spec in PAPERS.md).

Command (one GPU; 15 epochs per model, minutes each, model3 needs about 2 GB for weights):

    python reproductions/paper4_cnn_transfer.py --data tiny-imagenet-200.zip --workdir runs/paper4 \
        [--model model1 ... --model model5] [--weights imagenet|none|PATH]

The paper's numbers after 15 epochs (train / val top-1):

    model1 22.96 / 14.19    model2 20.17 / 22.72    model3 29.50 / 24.88
    model4 37.52 / 38.61    model5 (ResNet50, ImageNet weights) 68.61 / 43.14

Recipe (sections 3-4): Keras ImageDataGenerator with rescale, shear, zoom, rotation,
horizontal flip and brightness; Adam; 15 epochs. Model 1 uses lr 1e-4 (stated); model 2
adds EarlyStopping and ReduceLROnPlateau (stated). Model 5 is Keras's ResNet50 with
ImageNet weights (``--weights``: "imagenet" downloads them, a path loads a local file,
"none" starts from random weights), the backbone trainable unless ``--freeze-backbone``,
and ResNet50's own "caffe" preprocessing instead of the 1/255 rescale.
Not stated, so ours: the amounts (shear 0.2, zoom 0.2, rotation 20 degrees, brightness
[0.8, 1.2]), lr 1e-3 for models 2-4 (Keras's default) and 1e-4 for model 5 (fine-tuning
pretrained weights), batch 32 (Keras's default), EarlyStopping patience 3 and
ReduceLROnPlateau factor 0.2 patience 2, both on the validation loss.

Model 1's "L2 regularization" has no stated strength; the penalty is ``factor * sum(w ** 2)``
on every kernel (``--model1-l2 FACTOR``). Ours is 0.001. Keras's ``L2()`` default, 0.01,
was our first reading and is refuted by measurement (CPU, the real data): after 8 of 15
epochs it had 5.3% train and 5.2% val top-1, where the paper ends at 22.96% train and
14.19% val, and below the paper's model 2 whose val figure ours matches (23.20 vs 22.72).
A model that fits its training images so little is held back, not overfitting: with 13M
weights at lr 1e-4, 0.01 outweighs the data term. With 0.001 the same run reaches 7.8%,
12.2% and 12.8% val top-1 after epochs 1-3 (0.01: 2.5%, 3.4%, 3.9%), on course for the
paper's figures. ``--model1-l2 0.01`` keeps the other reading reachable.

Model 1's result (results/paper4/model1): 19.29% val top-1 after 15 epochs, 5.1 points above
the paper's 14.19, while its training top-1 (on augmented images, as Keras reports it and as
the paper's would have been) is the paper's: 22.87% against 22.96. Ours fits the training
images exactly as far as the paper's did and generalises better. What we measured, looking
for the paper's 8.8-point gap between training and validation:

- the L2 strength moves the fit, not the gap: 0.01 held training top-1 at 5.3% after 8
  epochs; 1e-4 fits faster than 0.001 (after epochs 1 and 2: 7.1% / 13.2% train and 9.0% /
  14.0% val, against 6.4% / 11.3% and 7.8% / 12.2%; stopped there), heading past the
  paper's training figure with validation still above training; 0.001 lands on it;
- validating on images augmented like the training images (a shared ImageDataGenerator)
  gives ours 21.9% (3 seeds), higher, not lower: the model was trained on augmented images
  only (on clean training images it scores 21.8%);
- validation-pipeline slips give lower figures, but none the paper's: channels swapped (BGR)
  6.5%, no 1/255 rescale 11.7%, grey images 7.5%.

The text gives nothing more to test (its accuracy curves, Figs. 11-12, are not in it), so
ours is published as measured, with this finding.

Model 4's result (results/paper4/model4): 33.10% val top-1 after 15 epochs, 5.5 points below
the paper's 38.61, with training top-1 39.46% (on augmented images; the paper's 37.52). The
network matches the paper's summary layer by layer (8,866,376 parameters), and its weights
are not what falls short: its four BatchNormalization layers' running statistics are. Every
training image is resampled (rotation, shear and zoom, bilinear, as the ImageDataGenerator
does), which softens it, so the means and variances BN keeps describe softened images while
the validation images come sharp. Measured on the final model (and on the epoch-10
checkpoint, 29.37% as trained):

- BN statistics recomputed, no weight changed, as an even average over 100 batches of 128
  clean training images: 42.24% val top-1, above the paper's figure (epoch 10: 39.37%); over
  augmented ones, at epoch 10: 31.63%, close to the moving averages' 29.37%;
- one augmentation at a time (epoch 10, statistics from 6,400 training images, the first
  5,000 validation images, 29.64% as trained): none 39.86%, brightness only 39.90%, flip
  only 39.76%, rotation only 33.30%, zoom only 33.10%: the resampling shifts them, the
  brightness change and the flip do not;
- validating through the training augmentation (a shared ImageDataGenerator, a reading the
  text allows): 37.78% (2 draws; epoch 10: 34.97%), within 1 point of the paper: augmented
  validation images fit the statistics;
- the validation figure swings by up to 5 points from epoch to epoch (epochs 8-15: 25.43,
  31.19, 29.37, 25.95, 30.06, 32.59, 34.63, 33.10), where models 1 and 2, without BN, move
  by at most 2-3: statistics averaged over the last hundred or so batches of weights still
  moving at lr 1e-3.

The paper's pipeline resamples its training images the same way, and its text does not say
how it validated; its figure is what ours gives validated through the training
augmentation, or with statistics that fit clean images. The recipe is kept as the paper
states it and ours is published as measured, with this finding.
"""
from tiny_keras import augment, flags
from tiny_keras.recipe import Recipe, Stage

AUGMENT = augment.serialize(augment.Augmenter(shear_range=0.2, zoom_range=0.2, rotation_range=20,
                                              horizontal_flip=True, brightness_range=(0.8, 1.2)))
PAPER_VAL = {"model1": 14.19, "model2": 22.72, "model3": 24.88, "model4": 38.61, "model5": 43.14}


def recipe(model, lr=1e-3, preprocessing=None, model_options=None, **stage):
    return Recipe(
        paper="paper4",
        model=f"paper4_{model}",
        model_options=model_options or {},
        preprocessing=preprocessing or {"rescale": 1 / 255},
        stages=[Stage(name="train", epochs=15, batch_size=32, optimizer={"name": "adam", "learning_rate": lr},
                      augment=AUGMENT, **stage)],
        paper_results={"train": PAPER_VAL[model]},
    )


def recipes(weights="imagenet", freeze_backbone=False, model1_l2=0.001):
    return {
        "model1": recipe("model1", lr=1e-4, model_options={"weight_decay": 2 * model1_l2}),
        "model2": recipe("model2", early_stopping={"monitor": "val_loss", "patience": 3},
                         reduce_lr_on_plateau={"monitor": "val_loss", "factor": 0.2, "patience": 2}),
        "model3": recipe("model3"),
        "model4": recipe("model4"),
        "model5": recipe("model5", lr=1e-4, preprocessing={"imagenet": "caffe"},
                         model_options={"weights": weights, "freeze_backbone": freeze_backbone}),
    }


def weights_source(text):
    """An argparse type: "imagenet", "none", or an existing weights file."""
    import argparse
    import os

    if text == "imagenet" or text.lower() == "none" or os.path.isfile(text):
        return text
    found = "a folder" if os.path.isdir(text) else "no such file"
    raise argparse.ArgumentTypeError(f'expected "imagenet", "none" or a weights file; {text}: {found}')


def extra_flags(parser):
    parser.add_argument("--weights", type=weights_source, default="imagenet",
                        help='model5 backbone: "imagenet" (downloaded), "none", or a local weights file')
    parser.add_argument("--freeze-backbone", action="store_true", help="model5: train only the new head")
    parser.add_argument("--model1-l2", type=flags.non_negative_number, default=0.001, metavar="FACTOR",
                        help="model1: L2 factor on every kernel (unstated in the paper; default 0.001, "
                             "0.01 is Keras's L2() default; see the docstring)")


def configure(_, args):
    weights = None if args.weights.lower() == "none" else args.weights
    return recipes(weights, args.freeze_backbone, args.model1_l2)


RECIPES = recipes()
DEFAULT_RUNS = list(RECIPES)
ENSEMBLES = []  # the paper reports single models
