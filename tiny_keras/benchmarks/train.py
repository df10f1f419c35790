"""The training engine's speed against a bare ``model.fit``, on synthetic data.

For each model (default: paper 4's model 2 and a narrow paper 2 ResNet-18, the registry's
small variant; ``--model main``: every paper's main model), trained with the first stage
of its reproduction script's recipe, in one process and in alternating rounds:

- ``engine``: ``tiny_keras.engine.train`` running the paper's recipe (its optimizer,
  schedule, augmentation on the device, callbacks, checkpoints, validation) on synthetic
  uint8 images, once per ``--steps-per-execution`` value;
- ``bare``: the same model (the same ``ImageClassifier``, augmentation included) compiled
  with the same optimizer, loss and metrics, fed by ``tf.data.Dataset.from_tensor_slices``
  (on JAX and PyTorch: the numpy arrays themselves) and trained by ``model.fit`` with no
  callbacks.

It runs on whichever Keras backend the process has (``KERAS_BACKEND``); the results name it.
``--precision`` takes several dtype policies (``float32 mixed_bfloat16``; ``auto``: what a
run picks on this machine, ``tiny_keras.engine.precision.auto_precision``), ``--xla`` several
settings of XLA for the train step (``on off``; ``auto``: what a run picks here,
``Session.resolve``): each round then measures every pair in turn, bare and engine, so that
all see the same machine state.

The figure is training steps per second inside epochs (from the first to the last batch
of each epoch after the first, so compilation, validation and checkpoints are left out;
their cost shows in ``epoch_seconds``). Target: the engine within 5% of the bare fit.
Synthetic data makes the numbers independent of the dataset; use it on machines without
the data (the model learns nothing from it, which does not change its speed).

Memory: TensorFlow keeps most of what each measured model allocated until the process ends
(``clear_session`` and ``gc.collect`` give back little). Every setting of a large model adds
to it: four runs of paper 4's model 3 (140M parameters) reach 14 GB. Measure such models
one ``--model`` at a time.
"""
import dataclasses
import tempfile
import time

import keras
import numpy as np

from tiny_keras import backend, engine, models, provenance, recipes
from tiny_keras.benchmarks import at_least
from tiny_keras.engine import precision as precision_lib
from tiny_keras.engine.model import compile_model, stage_model
from tiny_keras.recipe import PRECISIONS
from tiny_keras.backend import tf
from tiny_keras.data import official_classes
from tiny_keras.data.arrays import DecodedSplit
from tiny_keras.flags import positive_int

DEFAULT_MODELS = ("paper4_model2", "paper2_resnet18")
XLA = {"on": True, "off": False}


def add_arguments(parser):
    parser.add_argument("--model", action="append", default=None,
                        help=f"registered model (repeatable; default: {', '.join(DEFAULT_MODELS)}; "
                             "'main': every paper's main model)")
    parser.add_argument("--steps", type=positive_int, default=60, help="training steps per timed epoch")
    parser.add_argument("--epochs", type=positive_int, default=3, help="epochs per measurement (the first is warm-up)")
    parser.add_argument("--rounds", type=positive_int, default=2, help="alternating rounds (the best is reported)")
    parser.add_argument("--steps-per-execution", type=positive_int, nargs="+", default=[1, 4],
                        help="engine runs with each of these, each below --steps (default: 1 4)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="default: the recipe's")
    parser.add_argument("--full-width", action="store_true",
                        help="paper 2's ResNet-18 at its full width (default: the registry's narrow variant)")
    parser.add_argument("--precision", nargs="+", choices=("auto",) + PRECISIONS, default=["auto"],
                        help="dtype policies to measure, alternating within each round (default: auto, what "
                             "a run picks on this machine)")
    parser.add_argument("--xla", nargs="+", choices=("auto",) + tuple(XLA), default=["auto"],
                        help="XLA for the train step, each measured in turn like the precisions (default: auto, "
                             "what a run picks here: on a GPU with TensorFlow, always with JAX, never with PyTorch)")


def check_arguments(parser, args):
    names = args.model or []
    known = trained_models()
    for name in names:
        if name not in known and not (name == "main" and names == ["main"]):
            alone = "; 'main' (every paper's main model) goes alone" if "main" in names else ""
            parser.error(f"--model {name}: expected a model a paper's recipe trains ({', '.join(known)}) or "
                         f"'main'{alone}")
    at_least(parser, args, "--steps", 2, " (a timed epoch runs from its first step to its last)")
    at_least(parser, args, "--epochs", 2, " (the first is warm-up)")
    too_many = [n for n in args.steps_per_execution if n >= args.steps]
    if too_many:
        parser.error(f"--steps-per-execution {too_many[0]}: expected less than --steps ({args.steps}); an epoch "
                     "is timed from its first execution to its last")


def trained_models():
    """The registered models a paper's recipe trains: what ``--model`` takes besides 'main'."""
    return [name for name in models.names()
            if any(r.model == name for r in recipes.get(models.get_entry(name).paper).RECIPES.values())]


class StepTimer(keras.callbacks.Callback):
    """Training steps per second inside every epoch after the first (which compiles)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        self._first = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, batch)
        self._last = (now, batch)

    def on_epoch_end(self, epoch, logs=None):
        steps = self._last[1] - self._first[1]
        if epoch > 0 and steps > 0:
            self.rates.append(steps / (self._last[0] - self._first[0]))

    @property
    def best(self):
        return max(self.rates) if self.rates else float("nan")


def print_table(columns, rows):
    """``columns``: ``(title, width, format spec)``, e.g. ``("batch", 6, "d")``, ``("vs", 8, "+.1f")``;
    ``rows``: tuples of values, one per column. Text is left-aligned, numbers right-aligned."""
    def cell(value, width, spec, text):
        sign, rest = (spec[0], spec[1:]) if spec[:1] in "+- " and spec else ("", spec)
        return format(value, f"{'<' if text else '>'}{sign}{width}{rest}")

    header = "".join(cell(title, width, "s", spec == "s") for title, width, spec in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        print("".join(cell(value, width, spec, spec == "s") for value, (_, width, spec) in zip(row, columns)))


# The run of each paper's script that trains its main model.
MAIN_RUNS = {"paper1": "resnet", "paper2": "resnet18", "paper3": "vgg_y", "paper4": "model2", "paper5": "cnn8"}


def paper_recipe(name, small=False):
    """The first stage of the recipe the paper's reproduction script trains model ``name``
    with (its optimizer, schedule, augmentation, preprocessing), built offline; with
    ``small``, the registry's small variant of the network."""
    entry = models.get_entry(name)
    chosen = [r for r in recipes.get(entry.paper).RECIPES.values() if r.model == name]
    if not chosen:
        raise ValueError(f"no recipe of {entry.paper} (tiny_keras.recipes) trains {name}")
    recipe = chosen[0]
    options = {**recipe.model_options, **(entry.small_options if small else {}), **entry.offline_options}
    return recipe.replace(stages=recipe.stages[:1], model_options=options)


def add_paper_arguments(parser, widths=True):
    """``--paper`` (repeatable; default: all five) and, with ``widths``, ``--full-width``."""
    parser.add_argument("--paper", action="append", default=None, choices=sorted(MAIN_RUNS),
                        help="only these papers (repeatable; default: all five)")
    if widths:
        parser.add_argument("--full-width", action="store_true",
                            help="the papers' own widths (default: the registry's small variants)")


def main_recipes(args):
    """``(paper, model name, recipe)`` for each paper ``args.paper`` chose (its main model's
    first stage), at the papers' widths with ``args.full_width``, else the small variants."""
    for paper in args.paper or sorted(MAIN_RUNS):
        name = f"{paper}_{MAIN_RUNS[paper]}"
        yield paper, name, paper_recipe(name, small=not getattr(args, "full_width", False))


def synthetic_split(n, split, seed=0, num_classes=200):
    rng = np.random.default_rng(seed)
    return DecodedSplit(split=split, images=rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
                        labels=rng.integers(0, num_classes, n).astype(np.int32),
                        boxes=np.full((n, 4), -1, np.int32), grayscale=np.zeros(n, bool),
                        files=[f"synthetic_{i}.JPEG" for i in range(n)], classes=official_classes())


def _engine(recipe, splits, xla, spe, steps, epochs, workdir):
    timer = StepTimer()
    stage = dataclasses.replace(recipe.stages[0], epochs=epochs, steps_per_epoch=steps)
    session = engine.Session(jit_compile=xla, steps_per_execution=spe, tensorboard=False, activation_samples=0,
                             verbose=0)
    start = time.perf_counter()
    engine.train(recipe.replace(stages=[stage]), workdir, data=splits, session=session, extra_callbacks=[timer])
    return timer.best, time.perf_counter() - start


def concrete_precisions(requested):
    """``requested`` with "auto" made the precision a run picks on this machine, each once, in order."""
    device = dict(compute_capability=backend.gpu_compute_capability(), cpu_flags=backend.cpu_flags())
    return list(dict.fromkeys(precision_lib.auto_precision(**device)[0] if p == "auto" else p for p in requested))


def concrete_xla(requested):
    """``requested`` ("on", "off", "auto") as ``jit_compile`` values, "auto" made what a run
    picks here, each once, in order."""
    auto = engine.Session().resolve(backend.gpu_compute_capability()).jit_compile
    return list(dict.fromkeys(auto if x == "auto" else XLA[x] for x in requested))


def bare_fit(recipe, splits, steps, epochs, xla="auto"):
    """Training steps/s of a bare ``model.fit`` of ``recipe``'s model, in its precision
    ("auto": what a run would pick here), with XLA or without (``xla``: a ``jit_compile``)."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(concrete_precisions([recipe.precision])[0])
    try:
        return _bare_fit(recipe, splits, steps, epochs, xla)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _bare_fit(recipe, splits, steps, epochs, xla):
    keras.utils.set_random_seed(recipe.seed)
    stage = recipe.stages[0]
    model = stage_model(recipe, stage, 0, train_images=splits["train"].images)
    session = engine.Session(jit_compile=xla).resolve(backend.gpu_compute_capability())
    compile_model(model, recipe, stage, steps, session)
    images, labels = splits["train"].images, splits["train"].labels
    timer = StepTimer()
    if not backend.is_tensorflow():  # Keras's array adapter: one pass of the arrays per epoch
        model.fit(images[:steps * stage.batch_size], labels[:steps * stage.batch_size], batch_size=stage.batch_size,
                  epochs=epochs, callbacks=[timer], verbose=0, shuffle=False)
        return timer.best
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(stage.batch_size, drop_remainder=True)
    model.fit(ds.prefetch(tf.data.AUTOTUNE), epochs=epochs, steps_per_epoch=steps, callbacks=[timer],
              verbose=0, shuffle=False)
    return timer.best


def _row(precision, xla, batch, bare, engine):
    row = {"precision": precision, "xla": xla, "bare_steps_per_s": round(max(bare), 3),
           "bare_images_per_s": round(max(bare) * batch, 1), "engine": {}}
    for spe, rates in engine.items():
        best = max(rates)
        row["engine"][str(spe)] = {"steps_per_s": round(best, 3), "images_per_s": round(best * batch, 1),
                                   "slower_than_bare_percent": round(100 * (1 - best / max(bare)), 1)}
    return row


def run(args):
    names = args.model or list(DEFAULT_MODELS)
    if names == ["main"]:
        names = [f"{paper}_{run}" for paper, run in MAIN_RUNS.items()]
    precisions, xlas = concrete_precisions(args.precision), concrete_xla(args.xla)
    settings = [(p, x) for p in precisions for x in xlas]
    environment = provenance.environment()
    results = {"backend": environment["backend"], "machine": environment["machine"], "precisions": precisions,
               "xla": xlas, "models": {}}
    print(f"Keras backend: {environment['backend']}; {provenance.describe_machine(environment)} "
          f"(CPU flags: {', '.join(environment['machine']['cpu_flags']) or 'none of note'}); "
          f"precision {', '.join(precisions)}; XLA {', '.join(_on_off(x) for x in xlas)}", flush=True)
    for name in names:
        recipe = paper_recipe(name, small=name == "paper2_resnet18" and not args.full_width)
        if args.batch_size:
            recipe = recipe.with_stage_changes(batch_size=args.batch_size)
        batch = recipe.stages[0].batch_size
        n = batch * args.steps
        splits = {"train": synthetic_split(n, "train"), "val": synthetic_split(max(batch, 256), "val", seed=1)}
        engine = {s: {spe: [] for spe in args.steps_per_execution} for s in settings}
        bare = {s: [] for s in settings}
        for r in range(args.rounds):
            for precision, xla in settings:
                measured = recipe.replace(precision=precision)
                bare[precision, xla].append(bare_fit(measured, splits, args.steps, args.epochs, xla))
                for spe in args.steps_per_execution:
                    with tempfile.TemporaryDirectory(prefix="tiny_keras_bench_") as workdir:
                        rate, seconds = _engine(measured, splits, xla, spe, args.steps, args.epochs, workdir)
                    engine[precision, xla][spe].append(rate)
                    print(f"{name} round {r + 1}, {precision}, XLA {_on_off(xla)}: engine spe={spe} {rate:.2f} "
                          f"steps/s (run {seconds:.1f} s), bare {bare[precision, xla][-1]:.2f} steps/s", flush=True)
        results["models"][name] = {"batch_size": batch, "settings": [
            _row(p, x, batch, bare[p, x], engine[p, x]) for p, x in settings]}
    print()
    columns = [("model", 20, "s"), ("precision", 16, "s"), ("XLA", 5, "s"), ("batch", 6, "d"),
               ("bare images/s", 16, ".1f")]
    for spe in args.steps_per_execution:
        columns += [(f"engine spe={spe}", 16, ".1f"), ("vs bare %", 10, "+.1f")]
    if len(settings) > 1:
        columns.append(("x first row", 12, ".2f"))
    rows = []
    for name, model in results["models"].items():
        base = model["settings"][0]["bare_images_per_s"]
        for row in model["settings"]:
            cells = [name, row["precision"], _on_off(row["xla"]), model["batch_size"], row["bare_images_per_s"]]
            for spe in args.steps_per_execution:
                cells += [row["engine"][str(spe)]["images_per_s"], -row["engine"][str(spe)]["slower_than_bare_percent"]]
            if len(settings) > 1:
                cells.append(row["bare_images_per_s"] / base)
            rows.append(tuple(cells))
    print_table(columns, rows)
    return results


def _on_off(jit_compile):
    return "on" if jit_compile else "off"
