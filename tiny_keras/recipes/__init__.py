"""The papers' recipes: one module per paper, and one per study of a paper.

Each module holds what a paper's reproduction trains, as data, with the paper's readings
in its docstring (what the text says, the reading chosen, the flags that give the others):

- ``RECIPES``: run name -> :class:`tiny_keras.recipe.Recipe`, each carrying the paper's
  figures (``paper_results``, by stage) where the paper reports them;
- ``DEFAULT_RUNS``: the runs trained when ``--model`` is not given (None: all of them);
- ``ENSEMBLES``: the paper's ensembles (:class:`tiny_keras.recipe.Ensemble`), with
  the paper's figure where it gives one;
- optionally ``extra_flags(parser)``, the paper's own flags, and ``configure(recipes, args)``,
  the recipes those flags give (a module's recipe functions build them);
- for a study, optionally ``NAME`` (the results' name, default the module's key) and
  ``select(argv)`` (the results' name and the runs, from flags read before the full parser).

:data:`PAPERS` lists the papers and :data:`STUDIES` the studies; :func:`get` returns a
module by its key. ``tiny_keras.reproduce.run_paper(key)`` trains one from the command line,
which is all that each script in a checkout's ``reproductions/`` does.
"""
import collections
import importlib

Entry = collections.namedtuple("Entry", ["module", "subject", "script"])
Entry.__doc__ = "A recipes module of this package, its subject, and the reproduction script that runs it."

PAPERS = {
    "paper1": Entry("paper1", "progressive resizing ResNet, cyclic LR", "paper1_progressive_resnet"),
    "paper2": Entry("paper2", "ResNet, Inception-ResNet, VGG from scratch", "paper2_resnet_inception"),
    "paper3": Entry("paper3", "small-filter VGGs (no figures survive)", "paper3_vgg"),
    "paper4": Entry("paper4", "simple CNNs, ResNet50 transfer", "paper4_cnn_transfer"),
    "paper5": Entry("paper5", "8-layer Caffe CNN, ensembles", "paper5_caffe_cnn"),
}
STUDIES = {
    "paper2_studies": Entry("paper2_studies", "paper 2's ResNet studies: weight decay, initialisation, depth, width",
                            "paper2_studies"),
    "paper5_studies": Entry("paper5_studies", "paper 5's L2 weight decay with and without dropout",
                            "paper5_studies"),
    "paper2_localization": Entry("paper2_localization", "paper 2's object localiser (section 4.8)",
                                 "paper2_localization"),
}


def get(name):
    """The recipes module of ``name``, a key of :data:`PAPERS` or :data:`STUDIES`."""
    entry = PAPERS.get(name) or STUDIES.get(name)
    if entry is None:
        raise ValueError(f"expected a paper ({', '.join(PAPERS)}) or a study ({', '.join(STUDIES)}). "
                         f"Received: {name=}")
    return importlib.import_module(f"{__name__}.{entry.module}")


def by_script(script):
    """The key of the paper or study that ``reproductions/<script>.py`` runs (``paper5_caffe_cnn``,
    or its file name): ``"paper5"``."""
    stem = script[:-3] if script.endswith(".py") else script
    for name, entry in {**PAPERS, **STUDIES}.items():
        if entry.script == stem:
            return name
    scripts = ", ".join(f"{e.script}.py" for e in {**PAPERS, **STUDIES}.values())
    raise ValueError(f"no recipes are run by the script {script!r}: expected one of {scripts}")
