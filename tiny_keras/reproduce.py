"""The command line shared by the reproduction scripts in ``reproductions/``.

:func:`run_paper` takes a paper's (or a study's) recipes from ``tiny_keras.recipes`` and
hands them to :func:`main`: its recipes (one per model it trains) and, where the paper
reports them, its ensembles. Each script is that one call, and so is
``python -m tiny_keras.reproduce PAPER [flags]`` (an installed package, no checkout
needed). :func:`main` parses the common flags, trains every recipe with
``tiny_keras.engine``, evaluates the ensembles, and writes ``WORKDIR/results.json`` with
a table beside it (``results.txt``), keeping the rows of the runs an earlier command
trained there (:func:`merge_results`; another paper's are refused, :func:`earlier_results`)::

    {"paper": ..., "runs": [{"model", "stage", "epochs", "val_top1", "val_top5",
                             "paper_val_top1", "seconds", ...}, ...],
     "recipe": {run name: recipe, ...}}

The flags: ``build_parser`` (``--help``), and docs/training.md. Flags that change what a
run computes change its recipe (:func:`apply_flags`); the others, how this process runs
it, make its ``engine.Session`` (:func:`session_from_flags`). Bad flags exit with status
2, bad inputs with 1 and one line (``--debug``: the traceback), a ``--time-limit`` stop
with ``EXIT_TIME_LIMIT`` (75); the same command continues.
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import keras

from tiny_keras import download, evaluate, files, models, runs
from tiny_keras.engine.session import STRATEGIES, Session, UnsupportedSession
from tiny_keras.engine.time_limit import EXIT_TIME_LIMIT, TimeLimitReached, parse_duration
from tiny_keras.flags import positive_int, whole_number
from tiny_keras.recipe import PRECISIONS, SEED_MAX, Ensemble  # noqa: F401 (Ensemble: the scripts' ensembles)


def input_errors():
    """What a bad input raises (data, a run folder, a batch beyond memory, a failed
    download, a backend or strategy the task cannot train under): the scripts print it as
    one line and exit with status 1, the traceback only with --debug. Bad arguments exit
    with 2 (argparse). Imported here, when one is raised: the training modules load only to
    train."""
    from tiny_keras.data.layout import DatasetError
    from tiny_keras.engine.model import BatchTooLarge

    return (download.DownloadError, DatasetError, runs.RunFolderError, runs.ModelLoadError, BatchTooLarge,
            UnsupportedSession, PermissionError, NotADirectoryError, files.CorruptFile)


def describe_input_error(error, data):
    """``error`` as its one line, naming ``--data`` where the data is at fault."""
    from tiny_keras.data.layout import DatasetError

    text = str(error)
    if not isinstance(error, DatasetError) or data is None:
        return text
    return f"--data {text}" if text.startswith(str(data)) else f"--data {data}: {text}"


SMOKE = dict(per_class=2, val_per_class=1, epochs=1, steps_per_epoch=2, batch_size=4)


def smoke_recipe(recipe):
    """The same recipe, cut down to seconds: a few images per class, two steps per stage,
    and built offline: a model that would download weights (paper 4's ResNet50) starts
    from random ones, since a smoke run checks the pipeline, not the weights."""
    offline = dict(models.get_entry(recipe.model).offline_options)
    stages = []
    for stage in recipe.stages:
        changes = dict(epochs=SMOKE["epochs"], steps_per_epoch=SMOKE["steps_per_epoch"],
                       batch_size=SMOKE["batch_size"])
        if stage.snapshot_every_epochs:
            changes["snapshot_every_epochs"] = 1
        if stage.snapshot_every_steps:
            changes["snapshot_every_steps"] = 1
        if stage.schedule and stage.schedule.get("name") == "cyclic":
            changes["schedule"] = dict(stage.schedule, step_size=1)
        stages.append(dataclasses.replace(stage, **changes))
    return recipe.replace(stages=stages, per_class=SMOKE["per_class"], val_per_class=SMOKE["val_per_class"],
                          model_options={**recipe.model_options, **offline})


def build_parser(description, run_names, default_runs=None, extra=None):
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="tiny-imagenet-200.zip or its folder (default: the TFDS dataset, downloaded if absent)")
    parser.add_argument("--workdir", default=None, help="run folder (default: runs/<paper>)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="override the epochs of every stage")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="override the (global) batch size of every stage")
    if len(run_names) > 1:
        parser.add_argument("--model", action="append", choices=run_names, default=None,
                            help=f"train only this model (repeatable; default: {', '.join(default_runs or run_names)})")
    parser.add_argument("--smoke", action="store_true",
                        help="2 training and 1 validation image of each class, 2 steps per stage: checks the whole "
                             "script in seconds")
    parser.add_argument("--overwrite", action="store_true", help="replace runs already in --workdir")
    parser.add_argument("--seed", type=whole_number(0, SEED_MAX), default=None,
                        help="seed for weights, shuffling, augmentation (0 to 2**32 - 1)")
    parser.add_argument("--precision", choices=("auto",) + PRECISIONS, default=None,
                        help="compute dtype policy (default auto: mixed_bfloat16 on a GPU of compute capability "
                             "8.0 and up, mixed_float16 on an older one; on a CPU mixed_bfloat16 where it has "
                             "AMX-BF16 or AVX512-BF16 (TensorFlow backend), else float32)")
    parser.add_argument("--mixed-precision", action="store_true", help="the same as --precision mixed_float16")
    xla = parser.add_mutually_exclusive_group()
    xla.add_argument("--xla", action="store_true", help="compile the train step with XLA (default: on a GPU)")
    xla.add_argument("--no-xla", action="store_true", help="do not compile the train step with XLA")
    parser.add_argument("--steps-per-execution", type=positive_int, default=None, metavar="N",
                        help="at most N train steps per call from the host (default: 32 on a GPU, 1 on a CPU; "
                             "each stage takes the largest divisor of its steps per epoch up to N)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None,
                        help="mirrored: tf.distribute (TensorFlow backend; multi_worker is refused, see "
                             "docs/training.md); data_parallel: "
                             "keras.distribution over the devices (JAX backend; several hosts with the "
                             "flags below); --batch-size stays "
                             "the global batch")
    hosts = parser.add_argument_group(
        "several hosts (JAX, --strategy data_parallel)",
        "every process runs the same command with its own --process-id; default: Keras's "
        "KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID environment variables")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                       help="address of process 0, which the others join")
    hosts.add_argument("--num-processes", type=positive_int, default=None, metavar="N",
                       help="processes training together (one per host, each with its devices)")
    hosts.add_argument("--process-id", type=int, default=None, metavar="I",
                       help="this process's index, 0 (the chief: it writes --workdir) to N - 1")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                        help="1: progress bars; 2: one line per epoch, and one every 2 minutes inside longer epochs; "
                             "0: quiet (default: 1 on a terminal, else 2). These lines always go to "
                             "WORKDIR/<model>/train.log")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (a failed download, bad data, a batch too "
                             "large) instead of its one line")
    parser.add_argument("--tensorboard-histograms", type=whole_number(0, note=" (0: off)"), default=None,
                        metavar="N", help="also write TensorBoard weight/activation histograms every N epochs (0: off)")
    parser.add_argument("--time-limit", type=parse_duration, default=None, metavar="DURATION",
                        help="stop after the last training step that ends within DURATION of the start "
                             "(5400, 90m, 1.5h, 1h30m), inside an epoch or at its end, judged by the mean step, "
                             "validation and checkpoint write, with its checkpoint written; the exit status is "
                             f"then {EXIT_TIME_LIMIT} and the same command continues from that step")
    if extra is not None:
        extra(parser)
    return parser


def join_processes(parser, args):
    """Join the other processes of a multi-host run (``keras.distribution.initialize``)
    where the flags or Keras's environment variables name more than one; return the count."""
    env = os.environ.get
    count = args.num_processes or int(env("KERAS_DISTRIBUTION_NUM_PROCESSES", "1") or 1)
    if count == 1:
        if args.coordinator or args.process_id is not None:
            parser.error("--coordinator and --process-id need --num-processes N (N > 1)")
        return 1
    coordinator = args.coordinator or env("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    index = args.process_id if args.process_id is not None else env("KERAS_DISTRIBUTION_PROCESS_ID")
    if not coordinator or index is None:
        parser.error(f"{count} processes need --coordinator HOST:PORT and --process-id I (or Keras's "
                     "KERAS_DISTRIBUTION_JOB_ADDRESSES and KERAS_DISTRIBUTION_PROCESS_ID)")
    index = int(index)
    if not 0 <= index < count:
        parser.error(f"--process-id must be from 0 to {count - 1}. Received: {index}")
    from tiny_keras import backend

    if backend.name() != backend.JAX or args.strategy != "data_parallel":
        parser.error(f"{count} processes train together on the JAX backend with --strategy data_parallel "
                     f"(this process: backend {backend.name()}, --strategy {args.strategy or 'default'})")
    if args.time_limit is not None:
        parser.error("--time-limit is not supported with several processes: each would judge it by its own clock")
    import jax  # the JAX backend's own library

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices' collectives across hosts
    keras.distribution.initialize(job_addresses=coordinator, num_processes=count, process_id=index)
    return count


def apply_flags(recipe, args):
    """The recipe with the command line's overrides of what it computes, validated before
    ``--smoke`` cuts it down (``ValueError``)."""
    if args.epochs is not None:
        recipe = recipe.with_stage_changes(epochs=args.epochs)
    if args.batch_size is not None:
        recipe = recipe.with_stage_changes(batch_size=args.batch_size)
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.precision or args.mixed_precision:
        if args.precision and args.mixed_precision and args.precision != "mixed_float16":
            raise SystemExit(f"--mixed-precision means --precision mixed_float16, not {args.precision}")
        changes["precision"] = args.precision or "mixed_float16"
    if changes:
        recipe = recipe.replace(**changes)
    recipe.validate()  # the whole recipe, as the real run trains it: --smoke checks it too
    if args.smoke:
        smoke = smoke_recipe(recipe)
        if smoke.model_options != recipe.model_options:
            changed = {k: v for k, v in smoke.model_options.items() if recipe.model_options.get(k) != v}
            print(f"--smoke: {recipe.model} built with {changed} (random initial weights, no download: "
                  "a smoke run checks the pipeline, not the weights)")
        recipe = smoke
    return recipe


def session_from_flags(args, stop_by=None):
    """The ``engine.Session`` of the command line: how this process runs the recipes. A
    ``--smoke`` run runs eagerly (compiling each stage's train step would take longer than
    its two steps), unless XLA or a distribution strategy was asked for."""
    options = dict(strategy=args.strategy or "default", tensorboard_histograms=args.tensorboard_histograms or 0,
                   verbose="auto" if args.verbose is None else args.verbose, stop_by=stop_by)
    if args.xla or args.no_xla:
        options["jit_compile"] = bool(args.xla)
    if args.steps_per_execution is not None:
        options["steps_per_execution"] = args.steps_per_execution
    options["run_eagerly"] = bool(args.smoke) and not args.xla and options["strategy"] == "default"
    return Session(**options)


def earlier_results(parser, workdir, paper, args):
    """The ``results.json`` already in ``workdir`` that this command adds to (None: none, or
    ``--overwrite`` replacing another's): one of ``paper`` and of the same kind (``--smoke``
    or not). Another paper's or study's, or a file that is not a workdir's, is refused
    (status 2) unless ``--overwrite``, before anything trains."""
    path = os.path.join(workdir, runs.RESULTS)
    if runs.is_run_folder(workdir):
        parser.error(f"--workdir {workdir} is a run folder (it holds {runs.RECIPE}); name a folder for the runs, "
                     "new or a reproduction's")
    earlier = files.read_json(path, None)
    if earlier is None:
        return None
    if not (isinstance(earlier, dict) and isinstance(earlier.get("runs"), list)
            and isinstance(earlier.get("recipe"), dict)):
        found = f"a {runs.RESULTS} that is not a reproduction's (no runs and recipe)"
    elif earlier.get("paper") != paper:
        found = f"the results of {earlier.get('paper')} ({runs.RESULTS}), not of {paper}"
    elif bool(earlier.get("smoke")) != bool(args.smoke):
        kind = "--smoke" if earlier.get("smoke") else "full"
        found = f"the results of {kind} runs of {paper} ({runs.RESULTS}); this command's runs are " + (
            "--smoke" if args.smoke else "full")
    else:
        return earlier
    if args.overwrite:
        print(f"--overwrite: {path} ({found.split(' (')[0]}) is replaced")
        return None
    parser.error(f"--workdir {workdir} holds {found}; choose another --workdir, or pass --overwrite to replace them")


def merge_results(earlier, results, order):
    """``results`` with what ``earlier`` (the workdir's results of the same paper) holds of
    the runs and ensembles it did not compute: rows of the same name are replaced, the
    others kept (with their ``data`` where it is not this command's); rows and recipes in
    ``order`` (the paper's runs, then its ensembles)."""
    if not earlier:
        return results
    rank = {name: i for i, name in enumerate(order)}
    computed = {r["model"] for r in results["runs"]} | set(results["recipe"])
    kept = [r if "data" in r or earlier.get("data") in (None, results["data"]) else {**r, "data": earlier["data"]}
            for r in earlier["runs"] if r.get("model") not in computed]
    rows = kept + results["runs"]
    recipes = {**{k: v for k, v in earlier["recipe"].items() if k not in results["recipe"]}, **results["recipe"]}
    return dict(results, runs=sorted(rows, key=lambda r: rank.get(r.get("model"), len(rank))),
                recipe={k: recipes[k] for k in sorted(recipes, key=lambda k: rank.get(k, len(rank)))})


def evaluate_ensemble(ensemble, recipes, workdir, data):
    """Rows for the ensemble: the members' probabilities averaged on the validation set
    (``tiny_keras.evaluate``, as ``tools/evaluate.py --ensemble`` does)."""
    # tiny_keras.data brings tensorflow_datasets (~0.4 s): loaded only to evaluate
    from tiny_keras import data as data_lib

    first = recipes[ensemble.members[0]]
    val = data_lib.load_split(data, "val", classes=first.classes, per_class=first.val_per_class, progress=False)
    paths = []
    for member in ensemble.members:
        if ensemble.snapshots:
            paths += runs.snapshot_paths(os.path.join(workdir, member))
        else:
            paths.append(os.path.join(workdir, member, runs.MODEL))
    start = time.perf_counter()
    members, _ = evaluate.load_members(paths)
    result = evaluate.evaluate(members, val.images, val.labels, ensemble=True)["ensemble"]
    return dict(model=ensemble.name, stage="ensemble", epochs=None, members=[os.path.relpath(p, workdir) for p in paths],
                val_top1=result["top1"], val_top5=result["top5"], paper_val_top1=ensemble.paper_val_top1,
                seconds=round(time.perf_counter() - start, 1))


def main(paper, recipes, description, default_runs=None, ensembles=(), argv=None, extra=None, configure=None):
    """Parse flags, train ``recipes`` (run name -> Recipe), evaluate ``ensembles``, write results.

    ``configure(recipes, args)`` may change the recipes from script-specific flags
    (added by ``extra(parser)``) before the common overrides apply; its ``args.workdir`` is
    the folder the runs go to (default ``runs/<paper>``).
    """
    run_names = list(recipes)
    parser = build_parser(description, run_names, default_runs, extra)
    args = parser.parse_args(argv)
    if args.precision and args.mixed_precision and args.precision != "mixed_float16":
        parser.error(f"--mixed-precision means --precision mixed_float16, not {args.precision}")
    if args.strategy == "multi_worker":
        from tiny_keras.engine.strategy import MULTI_WORKER_REFUSED

        parser.error(MULTI_WORKER_REFUSED)
    join_processes(parser, args)
    stop_by = None if args.time_limit is None else time.time() + args.time_limit
    workdir = args.workdir = args.workdir or os.path.join("runs", paper)
    if configure is not None:
        recipes = configure(dict(recipes), args)
    selected = getattr(args, "model", None) or default_runs or run_names
    applied = {}
    for name in selected:
        try:
            applied[name] = apply_flags(recipes[name], args)
        except ValueError as error:  # a recipe the flags make invalid
            parser.error(f"the recipe of {name}: {error}")
    recipes = applied
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        parser.error(f"--workdir {workdir}: exists and is not a folder; name a folder (new or a run's)")
    problem = files.output_problem(workdir, overwrite=True, folder=True)
    if problem is not None:
        parser.error(f"--workdir {workdir}: {problem}")
    if args.data is not None and not os.path.exists(args.data):
        parser.error(f"--data {args.data}: no such file or folder; expected tiny-imagenet-200.zip or its folder")
    try:
        earlier = earlier_results(parser, workdir, paper, args)
        os.makedirs(workdir, exist_ok=True)
        order = run_names + [e.name for e in ensembles]
        return _run(paper, recipes, ensembles, workdir, args, session_from_flags(args, stop_by), earlier, order)
    except input_errors() as error:
        if args.debug:
            raise
        print(f"error: {describe_input_error(error, args.data)}", file=sys.stderr)
        raise SystemExit(1) from None
    except TimeLimitReached as stopped:
        again = "the same command without --overwrite" if args.overwrite else "the same command"
        print(f"\n{paper}: --time-limit reached. {stopped}.\nRun {again} to continue (exit status "
              f"{EXIT_TIME_LIMIT}).", file=sys.stderr)
        raise SystemExit(EXIT_TIME_LIMIT) from None


def _run(paper, recipes, ensembles, workdir, args, session, earlier=None, order=()):
    # the engine brings tiny_keras.data and tensorflow_datasets (~0.4 s): loaded only to train
    from tiny_keras import engine
    from tiny_keras.engine import task as engine_task
    from tiny_keras.engine.strategy import processes

    rows = []
    for i, (name, recipe) in enumerate(recipes.items()):
        print(f"\n=== {paper}: {name} ({i + 1}/{len(recipes)}) ===")
        try:
            result = engine.train(recipe, os.path.join(workdir, name), data=args.data, session=session,
                                  overwrite=args.overwrite)
        except TimeLimitReached as stopped:
            raise TimeLimitReached(f"{name} ({os.path.join(workdir, name)}): {stopped}") from None
        rows += [dict(r, model=name, architecture=r["model"]) for r in result["runs"]]
    chief = processes()[1] == 0  # with several processes, the chief evaluates ensembles and writes results
    members = {**_finished_earlier(earlier, workdir), **recipes}
    for ensemble in ensembles:  # those with a member trained now, and every member here
        if chief and any(m in recipes for m in ensemble.members) and all(m in members for m in ensemble.members):
            print(f"\n=== {paper}: ensemble {ensemble.name} ===")
            rows.append(evaluate_ensemble(ensemble, members, workdir, args.data))
    results = {"paper": paper, "runs": rows, "recipe": {name: json.loads(r.to_json()) for name, r in recipes.items()},
               "smoke": bool(args.smoke), "data": args.data or "tfds:tiny_imagenet"}
    results = merge_results(earlier, results, order)
    task = engine_task.get(next(iter(recipes.values())))
    table = task.format_table(results["runs"])
    if not chief:
        print(f"\n{paper}: trained as process {processes()[1]}; the chief (process 0) writes the results")
        return results
    path = runs.write_results(workdir, results, table)
    print(f"\n{paper} results ({task.title})\n{table}")
    print(f"\nwrote {path}")
    return results


def _finished_earlier(earlier, workdir):
    """The recipes (run name -> Recipe) of ``earlier``'s runs whose models are in ``workdir``:
    members of an ensemble beside the runs trained now."""
    from tiny_keras.recipe import Recipe

    found = {}
    for name, recipe in (earlier or {}).get("recipe", {}).items():
        if os.path.isfile(os.path.join(workdir, name, runs.MODEL)):
            try:
                found[name] = Recipe.from_dict(recipe)
            except (TypeError, ValueError):  # a newer version's recipe: not a member here
                pass
    return found


def run_paper(name, argv=None):
    """Train the recipes of ``name``, a paper or a study of ``tiny_keras.recipes``
    (``"paper5"``, ``"paper2_studies"``), with the flags of ``argv`` (default: the command
    line): what ``reproductions/<script>.py`` runs. Returns what :func:`main` returns."""
    from tiny_keras import recipes as registry

    module = registry.get(name)
    argv = sys.argv[1:] if argv is None else list(argv)
    if hasattr(module, "select"):  # runs chosen by a flag read first (paper 2's --study)
        title, recipes = module.select(argv)
    else:
        title, recipes = getattr(module, "NAME", name), module.RECIPES
    return main(title, recipes, module.__doc__, default_runs=module.DEFAULT_RUNS, ensembles=module.ENSEMBLES,
                argv=argv, extra=getattr(module, "extra_flags", None), configure=getattr(module, "configure", None))


def command_line(argv=None):
    """``python -m tiny_keras.reproduce PAPER [flags]``: :func:`run_paper` for PAPER, a paper
    or study of ``tiny_keras.recipes``, with the flags that follow it."""
    from tiny_keras import recipes as registry

    argv = sys.argv[1:] if argv is None else list(argv)
    names = [*registry.PAPERS, *registry.STUDIES]
    usage = (f"usage: python -m tiny_keras.reproduce {{{','.join(names)}}} [flags]\n"
             "(the flags of that paper's script; PAPER --help lists them)")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        raise SystemExit(0 if argv else 2)
    if argv[0] not in names:
        print(f"{usage}\nerror: expected a paper or study first, one of {', '.join(names)}. Received: {argv[0]!r}",
              file=sys.stderr)
        raise SystemExit(2)
    return run_paper(argv[0], argv[1:])


if __name__ == "__main__":
    command_line()
