"""Where a run stands, read from its folder: :func:`read_status` and :func:`format_status`
(``tools/status.py``).

A long run is trained over several sessions (``--time-limit``, or a stop of any kind),
and its folder holds all that says where it is: the stage and epoch reached
(``state.json``, ``progress.json``), each epoch's scores (``stages/<name>/history.csv``),
its speed and the epoch in training (``train.log``'s epoch and progress lines) and each
session's command, folder and commit (``run.json``). It only reads them, so it can watch
a run that trains in the background. A folder copied elsewhere is continued where it is
now (``--workdir`` made its parent).
"""
import os
import re
import shlex
import time

from tiny_keras import files, runs

# An epoch line of train.log (``engine.log.format_epoch``), after its time stamp.
EPOCH_LINE = re.compile(r"stage '(?P<stage>.+)' epoch (?P<epoch>\d+)/\d+: .* \| (?P<rate>[\d,]+) images/s \| "
                        r"(?P<seconds>\d+) s")
# A progress line inside an epoch (``engine.log.format_progress``).
STEP_LINE = re.compile(r"stage '(?P<stage>.+)' epoch (?P<epoch>\d+)/\d+: step (?P<step>[\d,]+)/(?P<steps>[\d,]+) "
                       r"\(\d+%\) \| (?P<rate>[\d,]+) images/s \| ")


def run_folders(path):
    """The run folders ``path`` stands for: itself (a run folder), or the run folders in it
    (a reproduction's workdir, ``--workdir``), sorted by name; [] for neither."""
    path = os.fspath(path)
    if runs.is_run_folder(path):
        return [path]
    if not os.path.isdir(path):
        return []
    return [os.path.join(path, name) for name in sorted(os.listdir(path))
            if runs.is_run_folder(os.path.join(path, name))]


def _score_column(rows):
    """The held-out score the rows hold, the one a stage's best weights are chosen by: a
    classifier's ``val_top1``, a localiser's ``val_mean_iou`` (else the first ``val_`` one)."""
    names = [k for k in (rows[0] if rows else {}) if k.startswith("val_") and k != "val_loss"]
    return next((k for k in ("val_top1", "val_mean_iou") if k in names), names[0] if names else None)


def _last_lines(run, stage):
    """The stage's last epoch line in ``train.log`` and the last progress line after it (an
    epoch in training, or cut short by a stop), as matches: None where there is none."""
    epoch_line = step_line = None
    try:
        with open(os.path.join(run, runs.LOG), encoding="utf-8", errors="replace") as f:
            for line in f:
                match = EPOCH_LINE.search(line)
                if match and match["stage"] == stage:
                    epoch_line, step_line = match, None
                    continue
                match = STEP_LINE.search(line)
                if match and match["stage"] == stage:
                    step_line = match
    except OSError:
        pass
    return epoch_line, step_line


def _number(text):
    return int(text.replace(",", ""))


def _stage_status(run, stage, done_rows):
    """One stage's record: epochs done and its scores, in percent."""
    rows = runs.read_stage_history(run, stage["name"])
    column = _score_column(rows)
    scores = [100.0 * float(r[column]) for r in rows if column and r.get(column) not in (None, "")]
    record = dict(name=stage["name"], epochs=stage["epochs"], epochs_done=len(rows), score=column,
                  last=scores[-1] if scores else None, best=max(scores) if scores else None,
                  best_epoch=scores.index(max(scores)) + 1 if scores else None)
    row = done_rows.get(stage["name"])
    if row is not None:  # a finished stage: its reported scores (best weights restored, or a last evaluation)
        record.update(finished=True, epochs_done=row.get("epochs") or len(rows), result=_result(row))
    else:
        record.update(finished=False, result=None)
    return record


def _result(row):
    """A finished stage's scores in percent: a classifier's ``val_top1`` (and top-5), or a
    localiser's mean IoU, CorLoc and AP50 (fractions in its rows)."""
    if row.get("val_top1") is not None:
        return {k: row[k] for k in ("val_top1", "val_top5") if row.get(k) is not None}
    return {k: 100.0 * row[k] for k in ("mean_iou", "corloc", "ap50") if isinstance(row.get(k), (int, float))}


def read_status(run):
    """Where the run in folder ``run`` stands, as a dict (JSON-ready): ``state`` ("finished",
    "in progress" or "not started"), its ``stages`` (epochs done, last and best score), the
    current ``stage`` with its speed and the time its epochs left take at that pace, the
    ``sessions`` that trained it, and, for a run not finished, the command and folder that
    continue it (the last session's: the same command continues a run; its ``--workdir``
    made the folder's parent where the folder has moved since, ``moved_from`` then naming
    where it was; ``cwd_here``: whether its folder is on this machine)."""
    recipe = runs.read_recipe(run)
    if not isinstance(recipe, dict) or not isinstance(recipe.get("stages"), list):
        raise runs.RunRecordError(f"{os.path.join(run, runs.RECIPE)}: no list of stages; not a recipe this version "
                                  "reads")
    progress = files.read_json(os.path.join(run, runs.PROGRESS), {"runs": []})
    state = files.read_json(os.path.join(run, runs.STATE), None)
    info = files.read_json(os.path.join(run, runs.RUN_INFO), {})
    finished = os.path.isfile(os.path.join(run, runs.RESULTS))
    if finished:
        progress = files.read_json(os.path.join(run, runs.RESULTS))
    done_rows = {r["stage"]: r for r in progress.get("runs", [])}
    stages = [_stage_status(run, s, done_rows) for s in recipe["stages"]]
    current = None if finished else next((s for s in stages if not s["finished"]), None)
    pace = _pace(run, current, state)
    started = any(s["epochs_done"] for s in stages) or pace["in_epoch"] is not None
    status = dict(run=os.fspath(run), paper=recipe.get("paper"), model=recipe.get("model"),
                  precision=recipe.get("precision"), stages=stages,
                  state="finished" if finished else "in progress" if started else "not started",
                  stage=None if current is None else current["name"], **pace)
    seconds = sum(r.get("seconds") or 0.0 for r in done_rows.values())
    if not finished and state and state.get("stage") == status["stage"]:
        seconds += state.get("seconds") or 0.0
    status["train_seconds"] = round(seconds, 1)
    log = os.path.join(run, runs.LOG)
    status["log_written"] = round(time.time() - os.path.getmtime(log), 1) if os.path.isfile(log) else None
    status.update(_sessions(run, info, finished))
    return status


def _pace(run, current, state):
    """The current stage's speed (``train.log``'s last epoch or progress line, ``state.json``'s
    mean epoch of the last session), its epochs left at that pace, and where ``train.log``
    last saw an epoch that has not ended (``in_epoch``: its number, step and steps)."""
    if current is None:
        return dict(images_per_second=None, epoch_seconds=None, checkpointed=None, checkpointed_steps=None,
                    epochs_left=None, left_seconds=None, in_epoch=None)
    line, step = _last_lines(run, current["name"])
    here = state if (state or {}).get("stage") == current["name"] else {}
    epoch_seconds = here.get("epoch_seconds") or (None if line is None else float(line["seconds"]))
    # A restart continues from the last resume point (after an epoch, or inside one after
    # ``steps_done`` of its steps), which may come before the last epoch trained.
    checkpointed = int(here.get("epochs_done", 0))
    checkpointed_steps = int(here.get("steps_done") or 0)
    left = current["epochs"] - checkpointed
    newest = step or line
    return dict(images_per_second=None if newest is None else float(_number(newest["rate"])),
                epoch_seconds=epoch_seconds, checkpointed=checkpointed, checkpointed_steps=checkpointed_steps,
                epochs_left=left,
                left_seconds=None if epoch_seconds is None else round(left * epoch_seconds, 1),
                in_epoch=None if step is None else dict(epoch=int(step["epoch"]), step=_number(step["step"]),
                                                        steps=_number(step["steps"])))


def _sessions(run, info, finished):
    sessions = info.get("sessions") or []
    commits = []
    for session in sessions:
        commit = ((session.get("environment") or {}).get("source") or {}).get("commit")
        if commit and commit[:7] not in commits:
            commits.append(commit[:7])
    last = sessions[-1] if sessions else {}
    record = dict(sessions=len(sessions), commits=commits, last_started=last.get("started"),
                  last_stopped=last.get("stopped"), stop_reason=last.get("stop_reason"), command=None, cwd=None,
                  cwd_here=None, moved_from=None)
    if not finished:
        record.update(command=last.get("command"), cwd=last.get("cwd"))
    if record["command"]:
        record["command"], record["moved_from"] = _moved(run, record["command"], record["cwd"])
    if record["cwd"]:
        record["cwd_here"] = os.path.isdir(record["cwd"])
    return record


def _moved(run, command, cwd):
    """The command that continues the run in folder ``run`` where the folder is now, and
    the folder its last session trained it in where that was elsewhere (None: not moved):
    a folder copied to another path or machine keeps its last session's ``--workdir``."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command, None
    for i, word in enumerate(words):
        if word.startswith("--workdir="):
            at, workdir = i, word[len("--workdir="):]
        elif word == "--workdir" and i + 1 < len(words):
            at, workdir = i + 1, words[i + 1]
        else:
            continue
        now = os.path.abspath(run)
        then = os.path.normpath(os.path.join(cwd or "", workdir, os.path.basename(now)))
        if os.path.realpath(then) == os.path.realpath(now):
            return command, None
        words[at] = os.path.dirname(now) if at == i + 1 else f"--workdir={os.path.dirname(now)}"
        return shlex.join(words), then
    return command, None


def format_duration(seconds):
    """``"45 s"``, ``"12 min"``, ``"3.1 h"`` (here and in the engine's log)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


LABELS = {"top1": "top-1", "top5": "top-5", "mean_iou": "mean IoU", "corloc": "CorLoc", "ap50": "AP50"}


def _score(name, value):
    """``"val top-1 36.62%"`` for the score named ``val_top1`` (``val_mean_iou``: ``"val mean IoU"``)."""
    prefix, base = ("val ", name[4:]) if name and name.startswith("val_") else ("", name or "score")
    return f"{prefix}{LABELS.get(base, base.replace('_', ' '))} {value:.2f}%"


def format_status(status):
    """The status as a few lines: what the run is, where it stands, how to continue it."""
    head = f"{status['run']}: {status['model']} ({status['paper']}, {status['precision']}), {status['state']}"
    lines = []
    for i, stage in enumerate(status["stages"], 1):
        where = f"  stage {i}/{len(status['stages'])} '{stage['name']}': epoch {stage['epochs_done']}/{stage['epochs']}"
        if stage["finished"]:
            where += ", finished" + (": " + ", ".join(_score(k, v) for k, v in stage["result"].items())
                                     if stage["result"] else "")
        elif stage["last"] is not None:
            where += (f"; last epoch {_score(stage['score'], stage['last'])}, best {stage['best']:.2f}% at epoch "
                      f"{stage['best_epoch']}")
        if stage["name"] == status["stage"] and status["in_epoch"]:
            at = status["in_epoch"]
            where += (f"; {runs.LOG}'s last line: epoch {at['epoch']}, step {at['step']:,}/{at['steps']:,} "
                      f"({100 * at['step'] / at['steps']:.0f}%)")
        if stage["name"] == status["stage"] and status.get("checkpointed_steps"):
            where += (f" (checkpointed inside epoch {status['checkpointed'] + 1}, after its step "
                      f"{status['checkpointed_steps']:,}: a restart continues from there)")
        elif stage["name"] == status["stage"] and status["checkpointed"] != stage["epochs_done"]:
            where += (f" (checkpointed after epoch {status['checkpointed']}: a restart continues from there)"
                      if status["checkpointed"] else " (no checkpoint yet: a restart begins the stage again)")
        lines.append(where)
    if status["stage"] is not None and status["epoch_seconds"] is not None:
        pace = f"  pace: {format_duration(status['epoch_seconds'])} an epoch"
        if status["images_per_second"] is not None:
            pace += f", {status['images_per_second']:,.0f} images/s in training"
        later = sum(s["epochs"] for s in status["stages"] if not s["finished"] and s["name"] != status["stage"])
        left = status["epochs_left"]
        pace += (f"; {left} epoch{'s' * (left != 1)} of '{status['stage']}' left, about "
                 f"{format_duration(status['left_seconds'])}" + (f", then {later} epochs of later stages" if later
                                                                   else ""))
        lines.append(pace)
    elif status["stage"] is not None and status["images_per_second"] is not None:
        lines.append(f"  pace: {status['images_per_second']:,.0f} images/s in training; no epoch of "
                     f"'{status['stage']}' has ended")
    commits = f" (commit {', '.join(status['commits'])})" if status["commits"] else ""
    count = status["sessions"]
    trained = f"  trained {format_duration(status['train_seconds'])} over {count} session{'s' * (count != 1)}{commits}"
    if status["stop_reason"] and status["state"] != "finished":
        trained += f"; the last stopped at {status['last_stopped']}: {status['stop_reason']}"
    lines.append(trained)
    if status["log_written"] is not None and status["state"] != "finished":
        lines.append(f"  {runs.LOG} last written {format_duration(status['log_written'])} ago"
                     + (" (it is written at least every 2 minutes while the run trains)"
                        if status["log_written"] > 300 else ""))
    if status["moved_from"]:
        lines.append(f"  moved: its last session trained it in {status['moved_from']}; the command below names "
                     "the folder it is in now")
    if status["command"] and status["cwd_here"] is False:  # another machine's folder
        lines.append(f"  continue, from a checkout of tiny_keras ({status['cwd']}, where the last session ran, is "
                     f"not here): {status['command']}")
    elif status["command"]:
        lines.append(f"  continue: cd {status['cwd']} && {status['command']}")
    return "\n".join([head] + lines)
