"""Published measured runs (``results/``) and the papers table made from them.

A published run is a finished run folder's record, without its weights::

    results/<paper>/<run>/results.json         per-stage val top-1 / top-5 (the run's own)
                         /recipe.json          the recipe it ran
                         /run.json             command, commit, backend, versions, machine, time
                         /stages/<stage>/history.csv
                         /note.md              optional: what a gap to the paper's figure comes from

It keeps the run folder's names, so ``tools/plot.py curves results/paper4/model2`` works
on it. A localisation run (paper 2's localiser, ``reproductions/paper2_localization.py``)
is published the same way with its own record (:data:`LOCALIZATION_FILES`), under
``results/<paper>_localization/<run>/``, and has its own table (:func:`localization_markdown`). :func:`publish` copies a run folder there; :func:`papers_table` puts each row the
papers report (:class:`Row`, listed by the reproduction scripts) beside what was measured.
"""
import csv
import dataclasses
import os
import re
from typing import Optional

from tiny_keras import files, provenance, runs

RECORD_FILES = (runs.RESULTS, runs.RECIPE, runs.RUN_INFO)
NOTE = "note.md"  # optional: what a gap to the paper's figure comes from
LOCALIZATION_FILES = (*RECORD_FILES, runs.SPLIT)  # and the stages' history.csv
# The estimate for rows not yet run, on one H100-class GPU: training FLOPs (3 x forward) at a
# sustained 100 TFLOP/s, but no faster than 5,000 images/s, a conservative allowance for what
# bounds small models there instead of FLOPs (per-step dispatch at the recipes' batches of
# 32-128, validation, checkpoints). Not measured: no GPU figures exist yet.
GPU_FLOPS_PER_SECOND = 100e12
GPU_MAX_IMAGES_PER_SECOND = 5_000
TRAIN_IMAGES = 100_000


class PublishError(RuntimeError):
    """A run folder that cannot be published as asked."""


class PublishedRunExists(PublishError):
    """A published run of that name is there already (``target``); ``overwrite`` replaces it."""

    def __init__(self, target):
        super().__init__(f"{target} exists; pass overwrite=True to replace it")
        self.target = target


PLAIN_NAME = "letters, digits, _ - .; not . or .."  # what a published paper's or run's name may hold


def is_plain_name(name):
    """True for a name that is one folder under the results folder (:data:`PLAIN_NAME`)."""
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]+", name)) and name not in (".", "..")


@dataclasses.dataclass
class Row:
    """One result a paper reports: ``run``'s ``stage`` (or an ensemble) and its val top-1."""

    paper: str
    run: str
    stage: str
    paper_top1: Optional[float]
    title: str = ""
    training_images: Optional[int] = None  # for the estimate, where not yet run
    training_flops: Optional[float] = None
    downloads: Optional[str] = None  # what its run downloads first ("ImageNet weights from Keras's servers")


# -- publishing ---------------------------------------------------------------------------
def publish(run_folder, results_dir, paper=None, run=None, overwrite=False, note=None, keep_note=False):
    """Copy a finished run's record (no weights) to ``results_dir/<paper>/<run>/``; return that path.

    ``paper`` defaults to the recipe's, ``run`` to the folder's name; each is a plain name
    (:func:`is_plain_name`). A smoke or subset run, an unfinished run, or an existing
    published run (unless ``overwrite``, :class:`PublishedRunExists`) is refused. With
    ``keep_note`` and no ``note``, the published run's ``note.md`` is kept when it is replaced.
    A record file that is not valid JSON raises :class:`tiny_keras.files.CorruptFile`.
    """
    for name in (paper, run):
        if name is not None and not is_plain_name(name):
            raise PublishError(f"{name!r}: a published paper or run name is a plain name ({PLAIN_NAME})")
    run_folder = os.path.abspath(run_folder)
    if is_localization(files.read_json(os.path.join(run_folder, runs.RESULTS), {})):
        return _publish_localization(run_folder, results_dir, paper, run, overwrite, note, keep_note)
    missing = [name for name in RECORD_FILES if not os.path.isfile(os.path.join(run_folder, name))]
    if missing:
        raise PublishError(f"{run_folder}: not a finished run (no {', '.join(missing)}); "
                           "only finished runs are published")
    recipe = files.read_json(os.path.join(run_folder, runs.RECIPE))
    subset = {k: recipe.get(k) for k in ("classes", "per_class", "val_per_class") if recipe.get(k)}
    if subset or recipe.get("run_eagerly"):
        raise PublishError(f"{run_folder}: a smoke or subset run ({subset or 'run eagerly'}) is not a measured "
                           "result; publish runs of the full recipe")
    paper = paper or recipe["paper"]
    run = run or os.path.basename(run_folder)
    histories = [os.path.join(runs.stage_folder("", stage["name"]), runs.HISTORY) for stage in recipe["stages"]]
    histories = [h for h in histories if os.path.isfile(os.path.join(run_folder, h))]
    return _copy_record(run_folder, os.path.join(results_dir, paper, run), list(RECORD_FILES) + histories,
                        overwrite, note, keep_note)


def _copy_record(run_folder, target, paths, overwrite, note, keep_note):
    """Copy ``paths`` (relative to ``run_folder``) and the note to ``target``; return it.
    An existing record is refused unless ``overwrite``, and replaced only once the new one
    is complete; with ``keep_note`` and no ``note``, its ``note.md`` goes into the new one."""
    if os.path.exists(target) and not overwrite:
        raise PublishedRunExists(target)
    with files.atomic_path(target, overwrite=True) as staging:
        for path in paths:
            files.copy(os.path.join(run_folder, path), os.path.join(staging, path))
        if note:
            files.write_text(note.strip() + "\n", os.path.join(staging, NOTE))
        elif note is None and keep_note and os.path.isfile(os.path.join(target, NOTE)):
            files.copy(os.path.join(target, NOTE), os.path.join(staging, NOTE))
    return target


def is_localization(results):
    """True for a localisation run's ``results.json`` (``tiny_keras.localization``)."""
    return results.get("task") == "localization"


def _publish_localization(run_folder, results_dir, paper, run, overwrite, note, keep_note):
    """``publish`` for a localisation run: to ``results_dir/<paper>_localization/<run>/``."""
    missing = [name for name in LOCALIZATION_FILES if not os.path.isfile(os.path.join(run_folder, name))]
    if missing:
        raise PublishError(f"{run_folder}: not a finished localisation run (no {', '.join(missing)}); "
                           "only finished runs are published")
    results = files.read_json(os.path.join(run_folder, runs.RESULTS))
    recipe = results["recipe"]
    subset = {k: recipe.get(k) for k in ("per_class", "val_per_class") if recipe.get(k)}
    if subset:
        raise PublishError(f"{run_folder}: a smoke or subset run ({subset}) is not a measured result; "
                           "publish a full run")
    histories = [os.path.join(runs.stage_folder("", stage["name"]), runs.HISTORY) for stage in recipe["stages"]]
    histories = [h for h in histories if os.path.isfile(os.path.join(run_folder, h))]
    target = os.path.join(results_dir, paper or f"{results['paper']}_localization", run or os.path.basename(run_folder))
    return _copy_record(run_folder, target, list(LOCALIZATION_FILES) + histories, overwrite, note, keep_note)


# -- reading --------------------------------------------------------------------------------
def read_history(folder, stage):
    path = os.path.join(runs.stage_folder(folder, stage), runs.HISTORY)
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def first_epoch_reaching(history, top1):
    """The first epoch (1-based) whose val top-1 (percent) is at least ``top1``, or None."""
    for row in history:
        if 100.0 * float(row["val_top1"]) >= top1:
            return int(row["epoch"]) + 1
    return None


def _published_folders(results_dir):
    """``(paper, run, folder, results)`` for every published run folder, in name order."""
    if not os.path.isdir(results_dir):
        return
    for paper in sorted(os.listdir(results_dir)):
        paper_dir = os.path.join(results_dir, paper)
        if not os.path.isdir(paper_dir):
            continue
        for run in sorted(os.listdir(paper_dir)):
            folder = os.path.join(paper_dir, run)
            if os.path.isfile(os.path.join(folder, runs.RESULTS)):
                yield paper, run, folder, files.read_json(os.path.join(folder, runs.RESULTS))


def read_published(results_dir):
    """``{(paper, run): {"folder", "results", "recipe", "run", "note"}}`` for every published
    classification run."""
    return {
        (paper, run): {
            "folder": folder,
            "results": results,
            "recipe": files.read_json(os.path.join(folder, runs.RECIPE)),
            "run": files.read_json(os.path.join(folder, runs.RUN_INFO)),
            "note": _read_note(os.path.join(folder, NOTE)),
        }
        for paper, run, folder, results in _published_folders(results_dir) if not is_localization(results)
    }


def localization_markdown(results_dir, link_prefix=""):
    """Every published localisation run as a Markdown table (held-out images, percent),
    the baselines beside ours, then how it was measured, the command and its note. Its links to the
    records are relative to the repository, after ``link_prefix`` (``"../"`` for a page in
    ``docs/``)."""
    blocks = []
    for paper, run, folder, results in _published_folders(results_dir):
        if not is_localization(results):
            continue
        record = files.read_json(os.path.join(folder, runs.RUN_INFO))
        session = record["sessions"][-1]
        commits = commits_of(record, short=True)
        encoder = results["recipe"]["model_options"].get("encoder", "paper2_resnet18")  # the localiser's default
        lines = [f"{paper} / {run}: classes {results['classes']}, held out {results['held_out']}; "
                 f"{encoder} encoder, {results['epochs']} epochs.",
                 "",
                 "| method | mean IoU | CorLoc | AP@0.5 | images |",
                 "| --- | --- | --- | --- | --- |"]
        for row in results["rows"]:
            method = row["method"] + (f" {tuple(row['box'])}" if "box" in row else "")
            lines.append(f"| {method} | {100 * row['mean_iou']:.1f} | {100 * row['corloc']:.1f} "
                         f"| {100 * row['ap50']:.1f} | {row['images']} |")
        link = os.path.relpath(folder, os.path.dirname(os.path.abspath(results_dir)))
        date = (record.get("finished") or session["started"])[:10]
        lines += ["", f"Measured on {machine_of(record)}, {date}, "
                      f"commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}: "
                      f"{_hours(results['train_seconds'] / 3600.0)} of training ([record]({link_prefix}{link})).",
                  "", "```bash", session["command"], "```"]
        note = _read_note(os.path.join(folder, NOTE))
        if note:
            lines += ["", note]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "No localisation run is published yet."


def _read_note(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def machine_of(run_record):
    """Where the run trained, ``"AMD EPYC, 2 cores (tensorflow)"``; a run continued in later
    sessions (``--time-limit``) on other machines names each once, in order, with its
    backend where they differ: ``"AMD EPYC, 2 cores; Intel(R) Xeon(R) CPU @ 2.20GHz, 2 cores
    (tensorflow)"``, ``"NVIDIA H100 80GB HBM3 (jax); AMD EPYC, 2 cores (tensorflow)"``."""
    ran = dict.fromkeys((provenance.describe_machine(s["environment"]), s["environment"]["backend"])
                        for s in run_record["sessions"])
    backends = dict.fromkeys(backend for _, backend in ran)
    if len(backends) == 1:
        return f"{'; '.join(dict.fromkeys(machine for machine, _ in ran))} ({next(iter(backends))})"
    return "; ".join(f"{machine} ({backend})" for machine, backend in ran)


def commits_of(run_record, short=False):
    """The package commits the run's sessions ran, each once, in order (a ``+dirty`` suffix
    where the checkout had uncommitted changes; ``unknown`` outside a git checkout); with
    ``short``, their first 7 characters."""
    sources = (session["environment"]["source"] for session in run_record["sessions"])
    return list(dict.fromkeys(
        (s.get("commit") or "unknown")[:7 if short else None] + ("+dirty" if s.get("dirty") else "") for s in sources))


def estimate_gpu_hours(row):
    if not row.training_images:
        return None
    seconds = max((row.training_flops or 0.0) / GPU_FLOPS_PER_SECOND,
                  row.training_images / GPU_MAX_IMAGES_PER_SECOND)
    return seconds / 3600.0


# -- the table ------------------------------------------------------------------------------
VARIANT_SEPARATOR = "-"  # results/paper4/model2-bfloat16: a variant of the row paper4 / model2


def precision_of(recipe):
    """The dtype policy a published recipe ran in (records from before ``precision``:
    ``mixed_precision`` true is mixed_float16, else float32)."""
    if recipe.get("precision") not in (None, "auto"):
        return recipe["precision"]
    return "mixed_float16" if recipe.get("mixed_precision") else "float32"


def _records_of(row, published):
    """``(variant, record)`` for every published run of catalogue ``row``: its own folder
    (variant None) first, then ``<run>-<variant>`` folders (another precision, another
    reading of the paper), in name order."""
    own = published.get((row.paper, row.run))
    found = [(None, own)] if own is not None else []
    prefix = row.run + VARIANT_SEPARATOR
    found += [(run[len(prefix):], record) for (paper, run), record in sorted(published.items())
              if paper == row.paper and run.startswith(prefix)]
    return found


def papers_table(rows, results_dir):
    """Each catalogue row with what was measured: a list of dicts (JSON-ready), one per
    published run of it (variants after the run itself), or one saying it is not yet run."""
    published = read_published(results_dir)
    table = []
    for row in rows:
        entry = dict(paper=row.paper, run=row.run, stage=row.stage, title=row.title, paper_top1=row.paper_top1,
                     variant=None, ours_top1=None, difference=None, epochs=None, first_epoch_at_paper_figure=None,
                     machine=None, precision=None, wall_hours=None, date=None, command=None, commit=None,
                     sessions=None, commits=None, note=None, folder=None)
        measured_rows = []
        for variant, record in _records_of(row, published):
            measured = next((r for r in record["results"]["runs"] if r["stage"] == row.stage), None)
            if measured is not None:
                measured_rows.append(_measured_entry(dict(entry, variant=variant), row, record, measured, results_dir))
        if not measured_rows:
            hours = estimate_gpu_hours(row)
            entry["status"] = "not yet run" + (
                f": needs {row.downloads}, which the machines this project trained on could not reach"
                if row.downloads else "") + (
                f" ({row.training_images / 1e6:.1f}M training images; est. {_hours(hours)} on one H100-class GPU)"
                if hours is not None else "")
            measured_rows = [entry]
        table += measured_rows
    return table


def _measured_entry(entry, row, record, measured, results_dir):
    session = record["run"]["sessions"][-1]
    entry.update(
        status="measured",
        ours_top1=round(measured["val_top1"], 2),
        difference=None if row.paper_top1 is None else round(measured["val_top1"] - row.paper_top1, 2),
        epochs=measured.get("epochs"),
        machine=machine_of(record["run"]),
        precision=precision_of(record["recipe"]),
        wall_hours=round(record["run"].get("train_seconds", 0.0) / 3600.0, 2),
        date=(record["run"].get("finished") or session["started"])[:10],
        command=session["command"],
        commit=session["environment"]["source"].get("commit"),  # the last session's
        sessions=len(record["run"]["sessions"]),
        commits=commits_of(record["run"]),
        note=record["note"],
        folder=os.path.relpath(record["folder"], os.path.dirname(os.path.abspath(results_dir))),
    )
    if row.paper_top1 is not None:
        entry["first_epoch_at_paper_figure"] = first_epoch_reaching(read_history(record["folder"], row.stage),
                                                                    row.paper_top1)
    return entry


def _hours(hours):
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def _number(value, sign=False):
    if value is None:
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def markdown(table, notes=True, link_prefix=""):
    """The papers table as Markdown: the table, then a numbered note under it for each
    measured row with a ``note.md`` (marked "(1)", "(2)" ... beside its figure). Without
    ``notes``, the table alone, unmarked (README.md's). Links to the published runs are
    relative to the repository, after ``link_prefix`` (``"../"`` for a page in ``docs/``)."""
    lines = ["| paper | model | paper's val top-1 | ours | difference | epochs | reached the paper's figure "
             "| precision | machine, date | training time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    footnotes = []
    previous = (None, None)
    for e in table:
        model = f"{e['run']} ({e['stage']})" if e["stage"] not in ("train", "ensemble") else e["run"]
        if e.get("variant"):
            model += f", {e['variant']}"
        paper = "" if e["paper"] == previous[0] else (f"{e['paper']}: {e['title']}" if e["title"] else e["paper"])
        status = "not yet run" if (e["paper"], e["run"]) == previous else e["status"]
        previous = (e["paper"], e["run"])
        if e["status"] != "measured":
            lines.append(f"| {paper} | {model} | {_number(e['paper_top1'])} | {status} | | | | | | |")
            continue
        reached = "-" if e["paper_top1"] is None else (
            f"epoch {e['first_epoch_at_paper_figure']}" if e["first_epoch_at_paper_figure"] else "not reached")
        ours = f"[{_number(e['ours_top1'])}]({link_prefix}{e['folder']})"
        if e["note"] and notes:
            footnotes.append(f"{len(footnotes) + 1}. {e['paper']} {model}: {e['note']}")
            ours += f" ({len(footnotes)})"
        lines.append(f"| {paper} | {model} | {_number(e['paper_top1'])} | {ours} | {_number(e['difference'], True)} "
                     f"| {e['epochs']} | {reached} | {e['precision']} | {e['machine']}, {e['date']} "
                     f"| {_hours(e['wall_hours'])} |")
    return "\n".join(lines + ([""] + footnotes if footnotes else []))
