"""Paper 2's ResNet studies: weight decay, initialisation, depth and width.

Paper: "Tiny ImageNet challenge: ResNet, Inception-ResNet and VGG from scratch", sections
4.4-4.6 and figures 11-13 (text in shared/papers/paper2_resnet_inception_resnet_vgg.txt).

Command (one study at a time; each run is a ResNet of about 40 epochs, a few GPU hours):

    python reproductions/paper2_studies.py --study weight_decay --data tiny-imagenet-200.zip \
        [--workdir runs/paper2_weight_decay] [--model wd_1e-4 --model wd_3e-4 ...]

Every run is paper 2's ResNet-18 recipe, ``tiny_keras.recipes.paper2`` (SGD + Nesterov, lr
0.1 / 10 on plateau, the paper's augmentation, 56px crops; weight decay 2e-4, variance
scaling, wide filters) with one change (``tiny_keras.studies``). The table prints our val
top-1 with the paper's beside it (100 - its val top-1 error) where the paper gives a number.

Studies (``--study``) and their runs (``--model`` picks some; default: all of the study):

    weight_decay  wd_1e-4  wd_2e-4  wd_3e-4     paper (fig. 13): 56.3 / 57.9 / 56.8
                  (val error 43.7 / 42.1 / 43.2: 2e-4 best, our default)
    init          init_xavier  init_variance_scaling
                  (fig. 12, no numbers survive: "variance scaling wins after the first
                  learning-rate decay")
    depth         depth_10  depth_18           ([64, 128, 256, 512] filters)
                  (fig. 11: "performs very similarly"; the 10-layer one learns faster at first)
    width         width_narrow  width_wide     (18 layers, [16, 32, 64, 128] vs [64 .. 512])
                  (fig. 11: the wide one "does perform significantly better")

Each study writes WORKDIR (default ``runs/paper2_<study>``)/results.json and results.txt;
``python tools/plot.py curves WORKDIR --out study.png`` draws its runs' curves together, as
figures 11-13 do.
"""
import argparse

from tiny_keras import studies
from tiny_keras.recipes import paper2


def extra_flags(parser):
    parser.add_argument("--study", choices=sorted(studies.PAPER2_STUDIES), required=True,
                        help="which study to run (its runs are the --model choices)")



def chosen_study(argv):
    """The ``--study`` on the command line, read before the full parser (whose ``--model``
    choices are that study's runs); None if absent."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--study", choices=sorted(studies.PAPER2_STUDIES))
    return pre.parse_known_args(argv)[0].study


def study_recipes(study):
    """The runs of ``study`` (one of ``tiny_keras.studies.PAPER2_STUDIES``), each paper 2's
    ResNet-18 recipe with one change."""
    return studies.paper2_study(study, paper2.RECIPES["resnet18"])


def select(argv):
    """``(results name, recipes)`` for the command line ``argv``: the runs of its ``--study``;
    without one (``--help``, or the parser's "--study is required" error), every run."""
    study = chosen_study(argv)
    if study is None:
        return "paper2_studies", RECIPES
    return f"paper2_{study}", study_recipes(study)


RECIPES = {name: r for s in studies.PAPER2_STUDIES for name, r in study_recipes(s).items()}
DEFAULT_RUNS = None  # every run of the study
ENSEMBLES = []
