"""The papers' ablation studies, as sweeps of recipes.

A study is a function of a base recipe (the paper's own, from ``tiny_keras.recipes``)
returning ``{run name: Recipe}``: each variant is the base with one change, everything
else (data, augmentation, optimizer, schedule, epochs, seed) held fixed, so a difference
in the results is the change's. ``tiny_keras.recipes.paper2_studies`` and
``tiny_keras.recipes.paper5_studies`` hold the studies' runs; ``reproductions/paper2_studies.py``
and ``reproductions/paper5_studies.py`` hand them to ``tiny_keras.reproduce``, which trains
them and prints one table with the paper's figure beside ours.

paper2 (section 4, figures 11-13; ResNet-18, ``tiny_keras.models.paper2.build_resnet``):

- ``weight_decay``: L2 lambda 1e-4, 2e-4, 3e-4 (val top-1 error 43.7 / 42.1 / 43.2, figure 13);
- ``init``: Xavier (Glorot uniform) vs variance scaling N(0, 2/n) (figure 12; no numbers
  survive: "variance scaling wins after the first learning-rate decay");
- ``depth``: 10 vs 18 layers, [64, 128, 256, 512] filters (figure 11: "very similar",
  the 10-layer one faster at first);
- ``width``: 18 layers with [16, 32, 64, 128] vs [64, 128, 256, 512] filters (figure 11:
  the wide one "significantly better").

paper5 (sections 5.2, 5.5 and 6; the 8-layer CNN): ``l2_dropout``, lambda 1e-4, 3e-4, 5e-4,
each with dropout 0.5 on the hidden FC layers and without (val error with dropout 63.6 /
59.5 / 58.0; without dropout 67.4 at a lambda the paper does not give).
"""
import dataclasses

# The paper's val top-1 *error* (percent) per variant; ours are accuracies, so the table
# shows 100 - error beside them.
PAPER2_WEIGHT_DECAY_ERROR = {1e-4: 43.7, 2e-4: 42.1, 3e-4: 43.2}  # paper2 figure 13 / section 4.6
PAPER5_DROPOUT_ERROR = {1e-4: 63.6, 3e-4: 59.5, 5e-4: 58.0}  # paper5 section 6 table, dropout 0.5
PAPER5_NO_DROPOUT_ERROR = 67.4  # paper5 section 6 table, "8 Layer CNN": its lambda is not given

PAPER2_WEIGHT_DECAYS = (1e-4, 2e-4, 3e-4)
PAPER2_INITIALIZERS = ("xavier", "variance_scaling")  # aliases of tiny_keras.models.blocks
PAPER2_WIDE = (64, 128, 256, 512)  # section 3.2
PAPER2_NARROW = (16, 32, 64, 128)  # section 4.4
PAPER5_WEIGHT_DECAYS = (1e-4, 3e-4, 5e-4)
PAPER5_DROPOUT = 0.5  # section 5.5: "the default value of p = 0.5 ... was the most effective"


def accuracy(error):
    """Top-1 accuracy (percent) from a paper's top-1 error (percent)."""
    return None if error is None else round(100.0 - error, 2)


def variant(base, model=None, model_options=None, paper_top1=None, seed=None, stage_changes=None):
    """``base`` with one change: another registered ``model``, builder options merged into
    its ``model_options``, another ``seed``, or ``stage_changes`` (stage name -> field
    changes, such as the weight decay of one stage); ``paper_top1`` (percent) is the
    paper's figure for this variant, shown beside the last stage's result (None: no figure)."""
    changes = {"paper_results": {} if paper_top1 is None else {base.stages[-1].name: paper_top1}}
    if stage_changes:
        unknown = set(stage_changes) - {s.name for s in base.stages}
        if unknown:
            raise ValueError(f"no stages named {sorted(unknown)} in the base recipe")
        changes["stages"] = [dataclasses.replace(s, **stage_changes.get(s.name, {})) for s in base.stages]
    if model is not None:
        changes["model"] = model
    if model_options:
        changes["model_options"] = {**base.model_options, **model_options}
    if seed is not None:
        changes["seed"] = seed
    return base.replace(**changes)


def _number(value):
    """``1e-4`` -> ``"1e-4"`` for run names."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# -- paper2: ResNet-18 -----------------------------------------------------------------------
def _check_resnet(base):
    if base.model not in ("paper2_resnet18", "paper2_resnet10"):
        raise ValueError(f"the paper2 studies vary paper2's ResNet; received a recipe for {base.model!r}")


def paper2_weight_decay(base, weight_decays=PAPER2_WEIGHT_DECAYS):
    """ResNet-18 with L2 lambda ``weight_decays`` (the builder's ``weight_decay``)."""
    _check_resnet(base)
    return {f"wd_{_number(wd)}": variant(base, model_options={"weight_decay": wd},
                                         paper_top1=accuracy(PAPER2_WEIGHT_DECAY_ERROR.get(wd)))
            for wd in weight_decays}


def paper2_init(base, initializers=PAPER2_INITIALIZERS):
    """ResNet-18 initialised with Xavier or variance scaling (``kernel_initializer``)."""
    _check_resnet(base)
    return {f"init_{init}": variant(base, model_options={"kernel_initializer": init}) for init in initializers}


def paper2_depth(base):
    """10 vs 18 layers (``paper2_resnet10`` / ``paper2_resnet18``), the wide filters."""
    _check_resnet(base)
    return {f"depth_{layers}": variant(base, model=f"paper2_resnet{layers}", model_options={"filters": PAPER2_WIDE})
            for layers in (10, 18)}


def paper2_width(base):
    """18 layers with narrow [16, 32, 64, 128] vs wide [64, 128, 256, 512] filters."""
    _check_resnet(base)
    return {f"width_{name}": variant(base, model="paper2_resnet18", model_options={"filters": filters})
            for name, filters in (("narrow", PAPER2_NARROW), ("wide", PAPER2_WIDE))}


PAPER2_STUDIES = {
    "weight_decay": paper2_weight_decay,
    "init": paper2_init,
    "depth": paper2_depth,
    "width": paper2_width,
}


def paper2_study(name, base):
    """The variants of paper2's study ``name`` (one of :data:`PAPER2_STUDIES`)."""
    if name not in PAPER2_STUDIES:
        raise ValueError(f"paper2 studies are {sorted(PAPER2_STUDIES)}. Received: {name=}")
    return PAPER2_STUDIES[name](base)


# -- paper5: the 8-layer CNN -----------------------------------------------------------------
def paper5_l2_dropout(base, weight_decays=PAPER5_WEIGHT_DECAYS, dropouts=(PAPER5_DROPOUT, 0.0)):
    """The 8-layer CNN with Caffe's lambda ``weight_decays``, each with and without dropout
    on the hidden FC layers (the builder's ``weight_decay`` and ``dropout``). Where the
    base's last stage sets its own weight decay (paper 5's lambda history: lambda 1e-3
    first, then the model's own), the variant's lambda is that stage's."""
    if base.model != "paper5_cnn8":
        raise ValueError(f"the paper5 study varies paper5_cnn8; received a recipe for {base.model!r}")
    last = base.stages[-1]
    runs = {}
    for dropout in dropouts:
        for wd in weight_decays:
            paper = PAPER5_DROPOUT_ERROR.get(wd) if dropout == PAPER5_DROPOUT else None
            name = f"wd_{_number(wd)}_" + (f"dropout_{dropout:g}" if dropout else "no_dropout")
            stages = {last.name: {"weight_decay": wd}} if last.weight_decay is not None else None
            runs[name] = variant(base, model_options={"weight_decay": wd, "dropout": dropout},
                                 paper_top1=accuracy(paper), stage_changes=stages)
    return runs


def changes(recipe, base):
    """What ``recipe`` changes from ``base``: ``{field: new value}``, with only the changed
    ``model_options`` keys (the paper's figure, ``paper_results``, left out)."""
    ours, theirs = dataclasses.asdict(recipe), dataclasses.asdict(base)
    changed = {k: ours[k] for k in ours if ours[k] != theirs[k] and k != "paper_results"}
    if "model_options" in changed:
        missing = object()
        changed["model_options"] = {k: v for k, v in recipe.model_options.items()
                                    if base.model_options.get(k, missing) != v}
    return changed
