"""Where a run stands (``tiny_keras.status``, ``tools/status.py``): read from a real run
folder at each point of its life: killed inside a stage, stopped at a time limit, finished."""
import csv
import json
import shlex
import time

import pytest

from conftest import REPO, run_python
from killed_runs import Interrupt, KillAt
from tiny_keras import status, train
from tiny_keras.engine import Session, TimeLimitReached
from tiny_keras.engine import log as engine_log
from tiny_keras.recipe import Recipe, Stage

EAGER = Session(tensorboard=False, checkpoint_every=1, run_eagerly=True, verbose=0)


def two_stage_recipe():
    stage = dict(batch_size=4, steps_per_epoch=2, image_size=32,
                 optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9})
    return Recipe(paper="paper1", model="paper1_resnet", model_options={"filters": (4, 8, 8, 8)},
                  stages=[Stage(name="first", epochs=3, **stage), Stage(name="second", epochs=2, **stage)])


def val_top1(run, stage):
    with open(run / "stages" / stage / "history.csv", newline="") as f:
        return [100.0 * float(r["val_top1"]) for r in csv.DictReader(f)]


def test_epoch_line_reads_what_the_engine_writes():
    line = engine_log.format_epoch("64px", 3, 15, {"loss": 4.2, "top1": 0.1, "val_loss": 4.3, "val_top1": 0.09},
                                   2041.4, 190.2)
    match = status.EPOCH_LINE.search(f"2026-12-06 19:51:54 {line} | 12 epochs left, about 38 min")
    assert (match["stage"], match["epoch"], match["rate"], match["seconds"]) == ("64px", "3", "2,041", "190")
    line = engine_log.format_progress("64px", 4, 15, 1_200, 3_125, 1_987.6, 700.0)
    match = status.STEP_LINE.search(f"2026-12-06 19:53:54 {line}")
    assert (match["stage"], match["epoch"], match["step"], match["steps"], match["rate"]) == (
        "64px", "4", "1,200", "3,125", "1,988")
    assert status.EPOCH_LINE.search(line) is None


def test_a_run_killed_in_its_first_epoch_is_in_progress(fixture_zip, tmp_path, monkeypatch):
    """``train.log``'s progress lines (here after every step) tell a run inside its first
    epoch from one that never trained."""
    monkeypatch.setattr(engine_log, "PROGRESS_SECONDS", 0)
    run = tmp_path / "resnet"
    with pytest.raises(Interrupt):  # after the first of the first epoch's two steps
        train.train(two_stage_recipe(), run, data=fixture_zip, session=EAGER, extra_callbacks=[KillAt(epoch=0)])
    found = status.read_status(run)
    assert (found["state"], found["stage"], found["in_epoch"]) == ("in progress", "first",
                                                                 {"epoch": 1, "step": 1, "steps": 2})
    assert (found["stages"][0]["epochs_done"], found["checkpointed"], found["epoch_seconds"]) == (0, 0, None)
    assert found["images_per_second"] > 0
    text = status.format_status(found).splitlines()
    assert text[:3] == [
        f"{run}: paper1_resnet (paper1, float32), in progress",
        "  stage 1/2 'first': epoch 0/3; train.log's last line: epoch 1, step 1/2 (50%)",
        "  stage 2/2 'second': epoch 0/2"]
    assert text[3] == f"  pace: {found['images_per_second']:,.0f} images/s in training; no epoch of 'first' has ended"
    log = run / "train.log"
    log.write_text("".join(line for line in log.read_text().splitlines(True) if ": step " not in line))
    found = status.read_status(run)
    assert (found["state"], found["in_epoch"], found["images_per_second"]) == ("not started", None, None)
    assert "pace:" not in status.format_status(found)


def test_a_moved_run_s_command_names_the_folder_it_is_in_now(fixture_zip, tmp_path):
    """A run folder copied to another path: the command that continues it names its new
    parent as --workdir; where the last session's checkout is gone, the line says so."""
    run = tmp_path / "machine_a" / "runs" / "resnet"
    with pytest.raises(Interrupt):  # after the first epoch's first step
        train.train(two_stage_recipe(), run, data=fixture_zip, session=EAGER, extra_callbacks=[KillAt(epoch=0)])
    # The session record a reproduction script writes (``provenance``): its command and folder.
    checkout = tmp_path / "machine_a" / "tiny_keras"
    checkout.mkdir()
    info = json.loads((run / "run.json").read_text())
    command = ("python reproductions/paper1_progressive_resnet.py --data tiny-imagenet-200.zip --workdir ../runs "
               "--model resnet")
    info["sessions"][-1].update(command=command, cwd=str(checkout))
    (run / "run.json").write_text(json.dumps(info))
    found = status.read_status(run)
    assert (found["command"], found["moved_from"]) == (command, None)
    assert status.format_status(found).endswith(f"  continue: cd {checkout} && {command}")

    moved = tmp_path / "machine b" / "resnet"
    moved.parent.mkdir()
    run.rename(moved)
    found = status.read_status(moved)
    now = command.replace("--workdir ../runs", f"--workdir '{tmp_path / 'machine b'}'")
    assert (found["command"], found["moved_from"]) == (now, str(run))
    assert status.format_status(found).endswith(
        f"  moved: its last session trained it in {run}; the command below names the folder it is in now\n"
        f"  continue: cd {checkout} && {now}")
    checkout.rmdir()  # another machine: the last session's checkout is not here
    assert status.format_status(status.read_status(moved)).endswith(
        f"  continue, from a checkout of tiny_keras ({checkout}, where the last session ran, is not here): {now}")
    here = "--workdir=" + shlex.quote(str(tmp_path / "machine b"))
    info["sessions"][-1]["command"] = command.replace("--workdir ../runs", here)
    (moved / "run.json").write_text(json.dumps(info))
    assert status.read_status(moved)["moved_from"] is None  # a command naming where the folder is


def test_status_follows_a_run_from_a_kill_to_its_end(fixture_zip, tmp_path):
    run = tmp_path / "workdir" / "resnet"
    recipe = two_stage_recipe()
    with pytest.raises(Interrupt):  # killed in the first stage's third epoch: two are checkpointed
        train.train(recipe, run, data=fixture_zip, session=EAGER, extra_callbacks=[KillAt(epoch=2)])
    state = json.loads((run / "state.json").read_text())
    found = status.read_status(run)
    first, second = found["stages"]
    assert found["state"] == "in progress" and found["stage"] == "first"
    assert (found["paper"], found["model"], found["precision"]) == ("paper1", "paper1_resnet", "float32")
    # The history counts the epochs that ended; the killed one ended none.
    assert (first["epochs_done"], first["epochs"], first["finished"], found["checkpointed"]) == (2, 3, False, 2)
    assert first["last"] == pytest.approx(val_top1(run, "first")[-1])
    assert first["best"] == pytest.approx(max(val_top1(run, "first")))
    assert (second["epochs_done"], second["last"], second["finished"]) == (0, None, False)
    assert found["epoch_seconds"] == pytest.approx(state["epoch_seconds"])
    assert found["epochs_left"] == 1 and found["left_seconds"] == pytest.approx(state["epoch_seconds"], abs=0.1)
    assert found["train_seconds"] == pytest.approx(state["seconds"], abs=0.1)
    assert found["images_per_second"] > 0
    session = json.loads((run / "run.json").read_text())["sessions"][-1]
    assert (found["command"], found["cwd"], found["sessions"]) == (session["command"], session["cwd"], 1)
    text = status.format_status(found)
    assert text.splitlines()[:2] == [
        f"{run}: paper1_resnet (paper1, float32), in progress",
        f"  stage 1/2 'first': epoch 2/3; last epoch val top-1 {first['last']:.2f}%, best {first['best']:.2f}% at "
        f"epoch {first['best_epoch']}"]
    assert "  stage 2/2 'second': epoch 0/2" in text
    assert "; 1 epoch of 'first' left, about " in text and ", then 2 epochs of later stages" in text
    assert text.endswith(f"  continue: cd {session['cwd']} && {session['command']}")
    assert "checkpoint" not in text  # epoch 2 is checkpointed
    # Checkpoints every k epochs: the epochs trained after the last one are trained again on a restart.
    assert "epoch 2/3; last epoch" in status.format_status(dict(found, checkpointed=1))
    assert "(checkpointed after epoch 1: a restart continues from there)" in status.format_status(
        dict(found, checkpointed=1))
    assert "(no checkpoint yet: a restart begins the stage again)" in status.format_status(dict(found, checkpointed=0))
    # A resume point inside an epoch (a time limit's): where a restart continues.
    saved = (run / "state.json").read_text()
    (run / "state.json").write_text(json.dumps(dict(state, steps_done=1)))
    inside = status.read_status(run)
    (run / "state.json").write_text(saved)
    assert (inside["checkpointed"], inside["checkpointed_steps"]) == (2, 1)
    assert ("  stage 1/2 'first': epoch 2/3; last epoch val top-1 " in status.format_status(inside)
            and "(checkpointed inside epoch 3, after its step 1: a restart continues from there)"
            in status.format_status(inside))
    assert found["checkpointed_steps"] == 0

    with pytest.raises(TimeLimitReached):  # a session that starts nothing: its stop is the last
        train.train(recipe, run, data=fixture_zip, session=EAGER, stop_by=time.time() - 1.0)
    found = status.read_status(run)
    assert found["sessions"] == 2 and found["stop_reason"].startswith("Stage 'first': not started, at the time limit (")
    assert found["stop_reason"].endswith("epoch 3/3 is next")
    assert len(found["commits"]) == 1
    assert f"over 2 sessions (commit {found['commits'][0]})" in status.format_status(found)
    assert f"; the last stopped at {found['last_stopped']}: Stage 'first': not started" in status.format_status(found)

    results = train.train(recipe, run, data=fixture_zip, session=EAGER)
    found = status.read_status(run)
    assert found["state"] == "finished" and found["stage"] is None and found["command"] is None
    assert [(s["epochs_done"], s["finished"]) for s in found["stages"]] == [(3, True), (2, True)]
    assert [s["result"] for s in found["stages"]] == [{"val_top1": r["val_top1"], "val_top5": r["val_top5"]}
                                                      for r in results["runs"]]
    assert found["train_seconds"] == pytest.approx(sum(r["seconds"] for r in results["runs"]), abs=0.2)
    text = status.format_status(found)
    row = results["runs"][1]
    assert f"  stage 2/2 'second': epoch 2/2, finished: val top-1 {row['val_top1']:.2f}%, val top-5 " \
           f"{row['val_top5']:.2f}%\n" in text
    assert "continue:" not in text and "pace:" not in text

    # The command line: a workdir stands for its run folders; --json keeps the same records.
    out = tmp_path / "status.json"
    done = run_python(REPO / "tools" / "status.py", run.parent, "--json", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{run}: paper1_resnet (paper1, float32), finished\n")
    written = json.loads(out.read_text())
    assert [{k: v for k, v in s.items() if k != "log_written"} for s in written] == [
        {k: v for k, v in json.loads(json.dumps(found)).items() if k != "log_written"}]
    done = run_python(REPO / "tools" / "status.py", run, "--json", out)
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"--json: {out} exists; pass --overwrite to replace it")


def test_bad_paths_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "recipe.json").write_text('{"paper": "paper1"')
    for path, code, line in [
            (tmp_path / "none", 2, f"{tmp_path / 'none'}: no such file or folder; expected a run folder or a "
                                   "reproduction's --workdir"),
            (tmp_path / "empty", 2, f"{tmp_path / 'empty'}: no run folder here (none holds recipe.json); expected a "
                                    "run folder or a reproduction's --workdir"),
            (broken, 1, f"error: {broken / 'recipe.json'}: not valid JSON (")]:
        done = run_python(REPO / "tools" / "status.py", path)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == code and line in last and "Traceback" not in done.stderr, done.stderr
