"""Paper 5's regularisation study: L2 weight decay with and without dropout, 8-layer CNN.

Paper: "Tiny ImageNet classification with convolutional neural networks (Caffe)", sections
5.2, 5.5 and the table of section 6 (text in shared/papers/paper5_caffe_8layer_cnn_ensemble.txt).

Command (six 8-layer models of 70,000 iterations each):

    python reproductions/paper5_studies.py --data tiny-imagenet-200.zip [--workdir runs/paper5_l2_dropout] \
        [--model wd_5e-4_dropout_0.5 --model wd_5e-4_no_dropout ...]

Every run is paper 5's 8-layer recipe, ``tiny_keras.recipes.paper5`` (mean image, 56px
crops, mirror, tint, contrast and noise; SGD momentum 0.9; 40,000 iterations at lambda 1e-3,
then 30,000 at the run's lambda, lr 1e-3 then 1e-4; Xavier; one seed) without the fine-tune
stage or snapshots (the table's rows are single models), with Caffe's lambda and the FC
layers' dropout set by ``tiny_keras.studies.paper5_l2_dropout``. The paper continued every
lambda from one shared 40,000-iteration snapshot; ours trains that first stage once per run
(same seed, so the same weights). ``--lambda-history scratch`` trains each lambda from
scratch instead.

Runs and the paper's val top-1 (100 - val error, section 6):

    wd_1e-4_dropout_0.5   36.4  (63.6)        wd_1e-4_no_dropout   -
    wd_3e-4_dropout_0.5   40.5  (59.5)        wd_3e-4_no_dropout   -
    wd_5e-4_dropout_0.5   42.0  (58.0)        wd_5e-4_no_dropout   -

The paper's "8 Layer CNN" without dropout reached 32.6 (val error 67.4) at a lambda it
does not give, so no row carries it; the text says it "does about 4 percent worse than the
ones with dropout". Pools have stride 2 as in ``tiny_keras.recipes.paper5`` (``--pool-strides 1``:
the literal Caffe default).
"""
from tiny_keras import studies
from tiny_keras.recipes import paper5

NAME = "paper5_l2_dropout"  # the results' name and the default run folder, runs/paper5_l2_dropout


def base_recipe(pool_strides=2, history="paper"):
    """paper5's 8-layer recipe without the fine-tune stage or snapshots (the study's base)."""
    stages = paper5.lambda_history if history == "paper" else paper5.from_scratch
    return paper5.recipe("cnn8", {"pool_strides": pool_strides, "weight_decay": 5e-4},
                         stages(5e-4, snapshots=False), seed=0)


def recipes(pool_strides=2, history="paper"):
    return studies.paper5_l2_dropout(base_recipe(pool_strides, history))


extra_flags = paper5.history_flags  # --pool-strides, --lambda-history


def configure(_, args):
    return recipes(args.pool_strides, args.lambda_history)


RECIPES = recipes()
DEFAULT_RUNS = None  # all six
ENSEMBLES = []
