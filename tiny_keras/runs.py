"""The run folder: the names of what ``tiny_keras.train`` writes in a run's ``workdir``,
and the functions that read it. Every module that reads or writes a run folder takes
the names from here.

What a run folder holds::

    recipe.json            RECIPE: the recipe, as run (what makes a folder a run folder)
    state.json,            STATE: the position of an unfinished run (stage, epochs done, the
    checkpoint-*.keras     mean epoch time) and its model with optimizer state, written after
                           every epoch (every k epochs where one would cost more than 5% of an
                           epoch; see ``engine.resume``), after each stage's last and
                           where a time limit stops the run (``engine.time_limit``)
    progress.json          PROGRESS: the results of the stages already finished
    stages/<name>/         STAGES: per stage (:func:`stage_folder`): history.csv (HISTORY),
                           best.weights.h5 (BEST_WEIGHTS), model.keras (MODEL),
                           snapshots/ (SNAPSHOTS), activations.json (ACTIVATIONS)
    tensorboard/<name>/    TENSORBOARD: TensorBoard logs
    model.keras            MODEL: the final model (preprocessing included: feed it 0..255 images)
    results.json           RESULTS: per-stage results beside the paper's numbers
    train.log              LOG: one line per epoch (and per stage), appended as the run goes,
                           and a progress line every 2 minutes inside longer epochs:
                           ``tail -f WORKDIR/train.log`` follows a background run
    run.json               RUN_INFO: where the run came from: each session's command, date,
                           commit, backend, library versions and machine; the training time

A localisation run (``Recipe(task="localization")``) adds::

    split.json             SPLIT: the held-out images (their files) it is evaluated on

Older versions trained the localiser outside the engine: their folders hold
``config.json`` (CONFIG) and ``history.csv`` at the top, and are refused, not resumed.

A reproduction workdir (``tiny_keras.reproduce``) holds one run folder per model and a
``results.json`` (RESULTS) naming them under ``recipe``, with a table beside it
(``results.txt``, RESULTS_TABLE). A published run (``tiny_keras.published``) keeps the
run folder's names for the records it copies.
"""
import csv
import dataclasses
import glob
import json
import os
import shutil
import tempfile
from typing import Optional

import numpy as np

from tiny_keras import files

RECIPE = "recipe.json"
STATE = "state.json"
PROGRESS = "progress.json"
RESULTS = "results.json"
RESULTS_TABLE = "results.txt"
RUN_INFO = "run.json"
LOG = "train.log"
MODEL = "model.keras"
STAGES = "stages"
TENSORBOARD = "tensorboard"
HISTORY = "history.csv"
BEST_WEIGHTS = "best.weights.h5"
SNAPSHOTS = "snapshots"
ACTIVATIONS = "activations.json"
CHECKPOINT_PREFIX = "checkpoint-"
SNAPSHOT_PREFIX = "snapshot-"
SAVED_MODEL = "saved_model.pb"  # the file that makes a folder a SavedModel

# A localisation run's held-out images; and the settings of one written by an older version
SPLIT = "split.json"
CONFIG = "config.json"


class RunFolderError(RuntimeError):
    """The run folder holds something this run must not overwrite."""


class RunRecordError(ValueError):
    """A path that is not the run folder asked for, or a run folder without the record
    asked for (the message names what is missing)."""


class ModelLoadError(ValueError):
    """A model path that cannot be read: missing, not a model, or corrupt."""


# -- names ------------------------------------------------------------------------------------
def stage_folder(run, stage):
    """The folder of stage ``stage`` (its name) in ``run``."""
    return os.path.join(run, STAGES, stage)


def checkpoint_name(stage_index, epochs_done, steps_done=0):
    """The run checkpoint written after ``epochs_done`` epochs of stage ``stage_index`` and
    ``steps_done`` steps of the next (``checkpoint-0-0002.keras``, ``checkpoint-0-0002-s001234.keras``)."""
    inside = f"-s{steps_done:06d}" if steps_done else ""
    return f"{CHECKPOINT_PREFIX}{stage_index}-{epochs_done:04d}{inside}.keras"


def snapshot_name(epoch=None, step=None):
    """A snapshot's file name: ``snapshot-eNNN.keras`` after ``epoch`` epochs, or
    ``snapshot-sNNNNNN.keras`` after ``step`` steps."""
    if (epoch is None) == (step is None):
        raise ValueError(f"give exactly one of epoch or step. Received: {epoch=}, {step=}")
    return f"{SNAPSHOT_PREFIX}e{epoch:03d}.keras" if step is None else f"{SNAPSHOT_PREFIX}s{step:06d}.keras"


def snapshot_paths(run):
    """Every snapshot of ``run`` (all stages), sorted by path."""
    return sorted(glob.glob(os.path.join(run, STAGES, "*", SNAPSHOTS, "*.keras")))


# -- a resume point (``state.json``) ----------------------------------------------------------
def resumed_inside(point):
    """``(epoch, steps done)`` where ``point`` (a ``state.json``) stopped inside an epoch
    (0-based: the epoch in training), else None."""
    steps = int((point or {}).get("steps_done") or 0)
    return (int(point["epochs_done"]), steps) if steps else None


def steps_before(resumed, epoch):
    """The steps of ``epoch`` (0-based) trained before this session: ``resumed`` is
    :func:`resumed_inside`'s answer for the point the stage started from."""
    return resumed[1] if resumed and epoch == resumed[0] else 0


def timed_here(record, timing):
    """Whether ``record`` (a ``state.json`` or a ``progress.json`` row) was timed as this
    session runs (``timing``: the machine, backend and execution it names)."""
    return bool(record) and record.get("timed_on") is not None and record.get("timed_on") == timing


def recorded_step_seconds(point, steps_per_epoch):
    """A training step's seconds as ``point`` (a ``state.json``) recorded them: its mean step,
    else its mean epoch over ``steps_per_epoch`` steps; None without either."""
    point = point or {}
    if point.get("step_seconds"):
        return float(point["step_seconds"])
    if point.get("epoch_seconds") and steps_per_epoch:
        return float(point["epoch_seconds"]) / steps_per_epoch
    return None


# -- what a path is ---------------------------------------------------------------------------
def is_run_folder(path):
    """A folder written by ``tiny_keras.train.train`` (it holds ``recipe.json``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, RECIPE))


def workdir_runs(path):
    """The run folders of a reproduction workdir (``tiny_keras.reproduce``: ``results.json``
    naming its runs, one folder each), in the order they ran; [] if ``path`` is not one."""
    results = os.path.join(path, RESULTS)
    if not os.path.isdir(path) or is_run_folder(path) or not os.path.isfile(results):
        return []
    recipes = files.read_json(results).get("recipe")
    if not isinstance(recipes, dict):
        return []
    return [os.path.join(path, name) for name in recipes if is_run_folder(os.path.join(path, name))]


def _not_a_run(path):
    runs = workdir_runs(path)
    if runs:
        names = ", ".join(os.path.basename(r) for r in runs)
        return RunRecordError(f"{path} is a reproduction workdir holding the runs {names}; this needs one of "
                              f"them (e.g. {runs[0]})")
    if not os.path.exists(path):
        return RunRecordError(f"{path}: no such file or folder")
    return RunRecordError(f"{path} is not a run folder (no {RECIPE}): this needs the folder tiny_keras.train "
                          "wrote")


def _single_model(path):
    """The one model ``path`` stands for directly (a file, a SavedModel folder, a folder's
    ``model.keras``), or None."""
    if os.path.isfile(path):
        return path
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, SAVED_MODEL)):
        return path
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, MODEL)):
        return os.path.join(path, MODEL)
    return None


def model_path(path):
    """The model file behind ``path``: a ``.keras`` file, a SavedModel folder, or a run
    folder (its ``model.keras``; in an unfinished run, the last finished stage's)."""
    path = os.fspath(path)
    single = _single_model(path)
    if single is not None:
        return single
    if is_run_folder(path):
        for name in reversed(stage_names(path)):
            candidate = os.path.join(stage_folder(path, name), MODEL)
            if os.path.isfile(candidate):
                return candidate
        raise RunRecordError(f"{path}: this run has no model yet (no {MODEL}, no finished stage)")
    raise _not_a_run(path) if os.path.isdir(path) else RunRecordError(f"{path}: no such file or folder")


def member_paths(path):
    """The model files or SavedModel folders that ``path`` stands for: a file; a SavedModel
    folder; a run folder's ``model.keras`` (an unfinished run is refused, naming its last
    finished stage's model); else every ``*.keras`` in the folder (a snapshot folder), sorted."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such file or folder")
    single = _single_model(path)
    if single is not None:
        return [single]
    if is_run_folder(path):
        raise ModelLoadError(_unfinished(path))
    found = sorted(p for p in glob.glob(os.path.join(path, "*.keras")) if not os.path.basename(p).startswith("."))
    if found:
        return found
    raise ModelLoadError(f"{path}: a folder with no model: expected {SAVED_MODEL} (a SavedModel), {MODEL} "
                         "(a run folder) or *.keras files (a snapshot folder)")


def _unfinished(run):
    """The line for a run folder with no ``model.keras``: how to finish it, and its last
    finished stage's model."""
    try:
        sessions = files.read_json(os.path.join(run, RUN_INFO), {}).get("sessions") or [{}]
        command = sessions[-1].get("command")
    except (ValueError, AttributeError):  # a corrupt run.json: the command is only a hint
        command = None
    again = f"run its command again to continue it ({command})" if command else "run its command again to continue it"
    stages = [name for name in stage_names(run) if os.path.isfile(os.path.join(stage_folder(run, name), MODEL))]
    if stages:
        stage_model = os.path.join(stage_folder(run, stages[-1]), MODEL)
        return (f"{run}: an unfinished run (no {MODEL} yet): {again}, or pass its last finished stage's model, "
                f"{stage_model}")
    return f"{run}: an unfinished run with no model yet (no {MODEL}, no finished stage): {again}"


# -- records ----------------------------------------------------------------------------------
def read_recipe(run):
    """The run's ``recipe.json`` (a dict)."""
    if not is_run_folder(run):
        raise _not_a_run(run)
    return files.read_json(os.path.join(run, RECIPE))


def stage_names(run):
    """The run's stage names, in training order (from its ``recipe.json``)."""
    return [s["name"] for s in read_recipe(run)["stages"]]


@dataclasses.dataclass
class Boundary:
    """Where a stage starts on the run's epoch axis (``start``: epochs before it)."""

    start: int
    stage: str
    image_size: Optional[int] = None


@dataclasses.dataclass
class History:
    """A run's per-epoch records over all its stages.

    ``epoch``: the run's epoch number, 1-based and counting across stages (so a stage's
    epochs follow the previous stage's); ``columns``: the CSVLogger columns (``loss``,
    ``top1``, ``val_loss``, ``val_top1``, ``learning_rate`` ...) as float arrays, NaN where
    a stage lacks one; ``boundaries``: where each stage starts.
    """

    run: str
    epoch: np.ndarray
    columns: dict
    boundaries: list

    def get(self, name):
        return self.columns.get(name, np.full(len(self.epoch), np.nan))


def _stage_sizes(run):
    return {s["name"]: s.get("image_size") for s in read_recipe(run)["stages"]}


def read_stage_history(run, stage):
    """The rows of stage ``stage``'s ``history.csv`` in ``run`` (dicts of strings, as
    CSVLogger wrote them), in epoch order; [] where the stage has none yet."""
    path = os.path.join(stage_folder(run, stage), HISTORY)
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("epoch", "") != ""]
    return sorted(rows, key=lambda r: int(r["epoch"]))


def read_history(run):
    """The :class:`History` of a run folder: its stages' ``history.csv`` files, in stage order.

    Stages not started yet (an unfinished run) are left out; a run with no history at all
    is an error naming the files looked for."""
    names = stage_names(run)
    sizes = _stage_sizes(run)
    rows, boundaries, offset = [], [], 0
    for name in names:
        stage_rows = read_stage_history(run, name)
        if not stage_rows:
            break
        boundaries.append(Boundary(offset, name, sizes.get(name)))
        for r in stage_rows:
            rows.append({**r, "_x": offset + int(r["epoch"]) + 1})
        offset += int(stage_rows[-1]["epoch"]) + 1
    if not rows:
        wanted = ", ".join(os.path.join(STAGES, n, HISTORY) for n in names)
        raise RunRecordError(f"{run}: no training history ({wanted} missing or empty): no epoch has finished yet")
    keys = [k for k in rows[0] if k not in ("epoch", "_x")]
    for r in rows[1:]:
        keys += [k for k in r if k not in keys and k not in ("epoch", "_x")]
    columns = {k: np.array([_float(r.get(k)) for r in rows]) for k in keys}
    if "learning_rate" not in columns and "lr" in columns:
        columns["learning_rate"] = columns["lr"]
    return History(run, np.array([r["_x"] for r in rows]), columns, boundaries)


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def read_activations(run):
    """The run's activation percentiles over all stages.

    Returns ``{"percentiles": [...], "layers": {"last_block": name, "logits": name},
    "epoch": [run epochs, 1-based], "last_block": [E, P], "logits": [E, P],
    "boundaries": [Boundary]}``."""
    names = stage_names(run)
    sizes = _stage_sizes(run)
    epochs, blocks, logits, boundaries, layers, percentiles, offset = [], [], [], [], {}, None, 0
    for name in names:
        path = os.path.join(stage_folder(run, name), ACTIVATIONS)
        if not os.path.isfile(path):
            break
        data = files.read_json(path)
        records = sorted(data.get("epochs", []), key=lambda e: e["epoch"])
        if not records:
            break
        percentiles = data["percentiles"]
        layers = data.get("layers", layers)
        boundaries.append(Boundary(offset, name, sizes.get(name)))
        for record in records:
            epochs.append(offset + int(record["epoch"]) + 1)
            blocks.append(record["last_block"])
            logits.append(record["logits"])
        offset += int(records[-1]["epoch"]) + 1
    if not epochs:
        raise RunRecordError(
            f"{run}: no activation records ({STAGES}/<stage>/{ACTIVATIONS} for stages {names}): the run was "
            "trained with activation_samples=0, or no epoch has finished yet")
    return {"percentiles": list(percentiles), "layers": layers, "epoch": np.array(epochs),
            "last_block": np.array(blocks, float), "logits": np.array(logits, float), "boundaries": boundaries}


# -- keeping a run folder -----------------------------------------------------------------------
def saved_recipe(workdir):
    """The recipe (a dict) of the run in ``workdir``, None where there is none, read as this
    version reads recipes (``Recipe.from_dict``): a field added since it was written holds
    its default and a renamed one its new name (``mixed_precision`` -> ``precision``), so a
    run started by an older version continues. A recipe this version cannot read (a newer
    version's fields) is returned as written."""
    from tiny_keras.recipe import Recipe  # here: it imports Keras, which the rest of this module does not need

    saved = files.read_json(os.path.join(workdir, RECIPE), None)
    if saved is None:
        return None
    try:
        return json.loads(Recipe.from_dict(saved).to_json())
    except (TypeError, ValueError, AttributeError):
        return saved


# What a run folder may hold before its recipe.json (a start that failed early; an older version's run)
RUN_FILES = (RECIPE, STATE, PROGRESS, RESULTS, RESULTS_TABLE, RUN_INFO, LOG, MODEL, STAGES, TENSORBOARD, SPLIT, CONFIG)


def has_trained(workdir):
    """Whether ``workdir`` holds anything a run's training made: its results or position
    (``progress.json``, ``state.json``), a checkpoint, a model (the final one or a stage's)
    or a snapshot. A folder where a start failed before its first epoch holds none of these."""
    if not os.path.isdir(workdir):
        return False
    names = os.listdir(workdir)
    if {RESULTS, PROGRESS, STATE, MODEL} & set(names) or any(n.startswith(CHECKPOINT_PREFIX) for n in names):
        return True
    return bool(glob.glob(os.path.join(workdir, STAGES, "*", MODEL)) or snapshot_paths(workdir))


def _foreign_files(workdir):
    """The names in ``workdir`` that no run writes (hidden files aside)."""
    return sorted(n for n in os.listdir(workdir) if not n.startswith(".") and n not in RUN_FILES
                  and not n.startswith(CHECKPOINT_PREFIX))


def _empty(workdir):
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def prepare_folder(workdir, recipe, overwrite):
    """Make ``workdir`` the run folder of ``recipe`` (a ``tiny_keras.recipe.Recipe``): write
    its ``recipe.json``; a folder holding another recipe's run is an error
    (:class:`RunFolderError`) unless ``overwrite``, which empties it first, or unless that
    run never trained (:func:`has_trained`), which is replaced. A folder holding files no
    run writes (a SavedModel) is always refused. A folder an older version wrote is read as
    this version reads recipes (:func:`saved_recipe`).

    Returns a line saying what was replaced, or None."""
    if os.path.isdir(workdir) and not os.path.exists(os.path.join(workdir, RECIPE)):
        foreign = _foreign_files(workdir)
        if foreign:
            what = f"a SavedModel ({SAVED_MODEL})" if SAVED_MODEL in foreign else "files no run writes"
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunFolderError(f"{workdir} is not a run folder: it holds {what}: {shown}; choose another workdir "
                                 "(a new folder, or a run's)")
    os.makedirs(workdir, exist_ok=True)
    recipe_path = os.path.join(workdir, RECIPE)
    saved = saved_recipe(workdir)
    ours = json.loads(recipe.to_json())
    older = saved is None and os.path.exists(os.path.join(workdir, CONFIG))
    if older and not overwrite:
        raise RunFolderError(f"{workdir} holds a localisation run written by an older version (its {CONFIG}, "
                             "which trained outside the engine and cannot resume); choose another workdir or pass "
                             "overwrite=True (--overwrite) to replace it")
    if (saved is not None or older) and overwrite:
        _empty(workdir)
        saved = None
    changed = [] if saved is None else sorted(
        k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    replaced = None
    if changed and not has_trained(workdir):
        _empty(workdir)
        replaced = f"{workdir} held a run that never trained (recipe differs in {changed}): replaced by this one"
        saved, changed = None, []
    if changed:
        raise RunFolderError(
            f"{workdir} holds a different run (recipe differs in {changed}); choose another workdir "
            "or pass overwrite=True (--overwrite) to replace it"
        )
    if saved is None or not os.path.exists(os.path.join(workdir, RESULTS)):  # a finished run's stays as it ran
        files.write_json(ours, recipe_path)
    return replaced


def worker_copy(workdir):
    """A temporary folder holding a copy of the run in ``workdir`` (none: empty), for a
    process that trains beside the chief and must not write where it writes: it resumes
    from the same checkpoint and writes its own files there. Snapshots and TensorBoard logs
    are left out (nothing resumes from them)."""
    copy = tempfile.mkdtemp(prefix="tiny_keras_worker_")
    if os.path.isdir(workdir):
        shutil.copytree(workdir, copy, dirs_exist_ok=True,
                        ignore=lambda folder, names: [n for n in names if n in (SNAPSHOTS, TENSORBOARD)])
    return copy


def write_results(folder, results, table):
    """Write ``results`` to ``folder/results.json`` and ``table`` beside it (``results.txt``);
    return the path of ``results.json``."""
    path = os.path.join(folder, RESULTS)
    files.write_json(results, path)
    files.write_text(table + "\n", os.path.join(folder, RESULTS_TABLE))
    return path


def truncate_history(path, epochs):
    """Keep the history rows of the first ``epochs`` epochs: a run killed after logging an
    epoch but before checkpointing it trains that epoch again, and logs it once."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    with files.atomic_open(path, newline="") as f:
        csv.writer(f).writerows(rows[:1] + [row for row in rows[1:] if row and int(row[0]) < epochs])


def remove_checkpoints(folder, keep=None):
    """Delete the run checkpoints in ``folder`` other than ``keep``."""
    for old in os.listdir(folder):
        if old.startswith(CHECKPOINT_PREFIX) and old.endswith(".keras") and old != keep:
            os.remove(os.path.join(folder, old))
