"""``train(recipe, workdir, data)``: a whole run, stage after stage, in its run folder
(``tiny_keras.runs`` names its files). Started again, a run continues from its last
resume point (an epoch's end, or the step a time limit stopped it at) under any session;
a folder holding another run, or a finished one, is never overwritten unless
``overwrite=True`` (another run that never trained is replaced: ``runs.prepare_folder``).
"""
import dataclasses
import json
import os
from typing import Optional

import keras

from tiny_keras import backend, files, provenance, runs
from tiny_keras.data.layout import TinyImageNet
from tiny_keras.engine import log, precision, task as task_lib
from tiny_keras.engine.resume import Position, read_position
from tiny_keras.engine.session import Session
from tiny_keras.engine.stage import run_stage
from tiny_keras.engine.strategy import check_strategy, make_strategy, processes
from tiny_keras.engine.time_limit import Deadline, timed_on
from tiny_keras.recipe import Recipe


@dataclasses.dataclass
class Run:
    """What the stages of a run share in a session."""

    recipe: Recipe
    task: object  # ``engine.task``: what the model learns
    session: Session
    workdir: str
    train_split: object
    val_split: object
    strategy: object
    position: Position
    deadline: Optional[Deadline]
    extra_callbacks: tuple
    timing: str  # ``time_limit.timed_on(session)``


def train(recipe, workdir, data=None, session=None, overwrite=False, extra_callbacks=(), **options):
    """Train ``recipe`` (a ``Recipe`` or its dict) in ``workdir`` on ``data``: the zip, the
    folder, None for TFDS, or, for a classifier, ``{"train": DecodedSplit, "val":
    DecodedSplit}`` already in memory (used as they are: the recipe's class and per-class
    subsets do not apply).

    ``session`` (a :class:`Session`) says how this process runs it; ``options`` change its
    fields (``verbose=0``, ``stop_by=time.time() + 3600``, ``run_eagerly=True`` ...).
    ``extra_callbacks`` are added to every stage, after the engine's own.

    Returns the results dict (also written to ``workdir/results.json``):
    ``{"paper", "model", "runs": [per-stage rows], "recipe"}`` and what the recipe's task
    adds (``engine.task``). A finished run in the same
    folder returns its saved results without training again. At ``stop_by`` the run ends at
    a checkpointed step and raises ``TimeLimitReached``; the same call continues it.

    Several processes training together (multi-host ``data_parallel``, each making this
    call) share ``workdir``, on storage all read: the chief (process 0) writes it, the
    others a copy in a temporary folder.
    """
    recipe = (recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe)).validate()
    session = dataclasses.replace(session or Session(), **options).validate()
    count, index = processes()
    if count > 1 and session.stop_by is not None:
        raise ValueError(f"a time limit (stop_by) is not supported with {count} processes training together: each "
                         "would judge it by its own clock")
    if index > 0:
        workdir = runs.worker_copy(workdir)
    started = None  # the precision the run started in; a folder whose run never trained starts afresh
    if not overwrite and runs.has_trained(workdir):
        started = (runs.saved_recipe(workdir) or {}).get("precision")
    capability = backend.gpu_compute_capability()
    settled, why = precision.settle(recipe.precision, started, capability, backend.cpu_flags())
    recipe = recipe.replace(precision=settled)
    task = task_lib.get(recipe)
    session = session.resolve(capability)
    task.check_session(session)
    check_strategy(session.strategy)
    if isinstance(data, (str, os.PathLike)):  # its layout (wnids.txt, words.txt), read once, before the folder is made
        data = TinyImageNet(data)
    replaced = runs.prepare_folder(workdir, recipe, overwrite)
    finished = files.read_json(os.path.join(workdir, runs.RESULTS), None)
    if finished is not None:
        with log.run_log(None, session.verbose):
            log.info(f"{workdir}: this run is finished; its results:\n{task.format_table(finished['runs'])}")
        return finished
    with log.run_log(os.path.join(workdir, runs.LOG), session.verbose):
        if replaced:
            log.info(replaced)
        if task.no_xla and session.jit_compile:
            log.info(f"XLA off: {task.no_xla}")
            session = dataclasses.replace(session, jit_compile=False)
        provenance.record_session(workdir, precision={"policy": settled, "reason": why}, session=session.record())
        log.epoch(f"Precision {settled}: {why}")
        if not backend.is_tensorflow():
            backend.tensorflow_if_installed()  # before set_random_seed imports it with its GPUs
        keras.utils.set_random_seed(recipe.seed)
        deadline = None if session.stop_by is None else Deadline(session.stop_by, workdir)
        policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(settled)
        try:
            return _train(recipe, task, session, workdir, data, deadline, extra_callbacks)
        finally:  # the global dtype policy is the caller's again
            keras.mixed_precision.set_global_policy(policy)


def _train(recipe, task, session, workdir, data, deadline, extra_callbacks):
    strategy = make_strategy(session.strategy)
    train_split, val_split = task.load_splits(data, workdir, progress=session.verbose == 1)
    run = Run(recipe, task, session, workdir, train_split, val_split, strategy, read_position(workdir), deadline,
              tuple(extra_callbacks), timed_on(session))
    model = None
    with strategy.scope():
        done = [i for i, s in enumerate(recipe.stages) if s.name in run.position.done]
        if done:  # finished stages: continue from the last one's model
            model = keras.models.load_model(os.path.join(runs.stage_folder(workdir, recipe.stages[done[-1]].name),
                                                         runs.MODEL))
        for index, stage in enumerate(recipe.stages):
            if stage.name not in run.position.done:
                model = run_stage(run, index, model)
                run.position.state = None
    return _finish_run(run)


def _finish_run(run):
    """The run's results: ``results.json``, the final model (the last stage's), the
    training time in ``run.json``; its resume point removed."""
    workdir, recipe = run.workdir, run.recipe
    final = run.task.results(run, dict(paper=recipe.paper, model=recipe.model, runs=run.position.progress["runs"],
                                       recipe=json.loads(recipe.to_json())))
    files.copy(os.path.join(runs.stage_folder(workdir, recipe.stages[-1].name), runs.MODEL),
               os.path.join(workdir, runs.MODEL))
    files.write_json(final, os.path.join(workdir, runs.RESULTS))
    provenance.record_finish(workdir, train_seconds=round(sum(r["seconds"] for r in final["runs"]), 1))
    if os.path.exists(os.path.join(workdir, runs.STATE)):
        os.remove(os.path.join(workdir, runs.STATE))
    runs.remove_checkpoints(workdir)
    log.info(run.task.format_table(final["runs"]))
    return final
