"""tools/benchmark.py's train and pipeline benchmarks run end to end and write their numbers
(small settings; the numbers themselves are measured, not asserted: tests never time), and
its bad flags, data and output paths are one line each, found before anything is measured."""
import importlib.util
import json

import pytest

from conftest import REPO, run_python


def test_pipeline_benchmark_covers_every_paper(tmp_path):
    out = tmp_path / "pipeline.json"
    done = run_python(REPO / "tools" / "benchmark.py", "pipeline", "--images", "512", "--seconds", "0.2",
                      "--json", out)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert sorted(result["papers"]) == ["paper1", "paper2", "paper3", "paper4", "paper5"]
    assert result["papers"]["paper4"]["batch_size"] == 32  # the recipe's own batch
    for row in result["papers"].values():
        assert row["device_aug_images_per_s_per_core"] > 0 and row["host_aug_images_per_s_per_core"] > 0


def test_train_benchmark_compares_the_engine_with_a_bare_fit(tmp_path):
    out = tmp_path / "train.json"
    done = run_python(REPO / "tools" / "benchmark.py", "train", "--model", "paper5_shallow", "--steps", "4",
                      "--epochs", "2", "--rounds", "1", "--steps-per-execution", "1", "2", "--batch-size", "8",
                      "--precision", "float32", "mixed_bfloat16", "float32", "--xla", "off", "on", "--json", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "engine spe=2" in done.stdout and "mixed_bfloat16, XLA on: engine spe=1" in done.stdout
    result = json.loads(out.read_text())
    assert result["precisions"] == ["float32", "mixed_bfloat16"]  # each once, in the order asked
    assert result["xla"] == [False, True]
    model = result["models"]["paper5_shallow"]
    assert model["batch_size"] == 8
    assert [(row["precision"], row["xla"]) for row in model["settings"]] == [
        ("float32", False), ("float32", True), ("mixed_bfloat16", False), ("mixed_bfloat16", True)]
    for row in model["settings"]:
        # Both rounded (images/s to 0.1, steps/s to 0.001): equal within the rounding.
        assert row["bare_steps_per_s"] > 0 and row["bare_images_per_s"] == pytest.approx(8 * row["bare_steps_per_s"],
                                                                                          abs=0.06)
        assert sorted(row["engine"]) == ["1", "2"] and all(e["steps_per_s"] > 0 for e in row["engine"].values())
    # Writing over an existing file needs --overwrite.
    again = run_python(REPO / "tools" / "benchmark.py", "train", "--model", "paper5_shallow", "--json", out)
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_augment_benchmark_measures_the_augmentation_share_of_a_step(tmp_path):
    out = tmp_path / "augment.json"
    done = run_python(REPO / "tools" / "benchmark.py", "augment", "--paper", "paper5", "--steps", "3", "--epochs", "2",
                      "--rounds", "1", "--json", out)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())["papers"]["paper5"]
    assert row["model"] == "paper5_cnn8" and row["batch_size"] == 128
    assert row["step_ms_with"] > 0 and row["step_ms_without"] > 0


def test_evaluate_benchmark_scores_every_tta(tmp_path):
    out = tmp_path / "evaluate.json"
    done = run_python(REPO / "tools" / "benchmark.py", "evaluate", "--paper", "paper4", "--images", "24",
                      "--batch-size", "20", "--rounds", "2", "--json", out)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    row = result["papers"]["paper4"]
    assert row["model"] == "paper4_model2" and result["images"] == 24 and result["backend"] == "tensorflow"
    assert all(row[f"{tta}_images_per_s"] > 0 for tta in ("none", "flip", "crops10"))
    once = run_python(REPO / "tools" / "benchmark.py", "evaluate", "--paper", "paper4", "--rounds", "1")
    assert once.returncode != 0 and "--rounds must be at least 2" in once.stderr


def test_train_benchmark_measures_auto_as_the_precision_a_run_would_pick(monkeypatch):
    from tiny_keras import backend
    from tiny_keras.benchmarks import train as bench

    monkeypatch.setattr(backend, "cpu_flags", lambda path=None: frozenset({"avx512_bf16", "amx_bf16", "amx_tile"}))
    assert bench.concrete_precisions(["auto", "float32", "mixed_bfloat16"]) == ["mixed_bfloat16", "float32"]
    monkeypatch.setattr(backend, "cpu_flags", lambda path=None: frozenset({"avx2"}))
    assert bench.concrete_precisions(["float32", "auto"]) == ["float32"]


def test_train_benchmark_measures_auto_as_the_xla_a_run_would_pick(monkeypatch):
    from tiny_keras import backend
    from tiny_keras.benchmarks import train as bench

    monkeypatch.setattr(backend, "gpu_compute_capability", lambda: None)
    assert bench.concrete_xla(["auto", "on", "off"]) == [False, True]  # TensorFlow on a CPU: off
    monkeypatch.setattr(backend, "gpu_compute_capability", lambda: (9, 0))
    assert bench.concrete_xla(["off", "auto"]) == [False, True]  # on a GPU: on
    assert bench.concrete_xla(["on", "auto"]) == [True]


def benchmark(*argv):
    """``tools/benchmark.py ARGV`` in this process: its exit status (argparse's too)."""
    spec = importlib.util.spec_from_file_location("benchmark_tool", REPO / "tools" / "benchmark.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    try:
        return tool.main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code


def last_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["data", "--data", "d.zip", "--batch-size", "0"],
     "argument --batch-size: expected a whole number of at least 1. Received: '0'"),
    (["data", "--data", "d.zip", "--per-class", "-1"],
     "argument --per-class: expected a whole number of at least 1. Received: '-1'"),
    (["data", "--data", "d.zip", "--epochs", "0"],
     "argument --epochs: expected a whole number of at least 1. Received: '0'"),
    (["generator", "--data", "d.zip", "--images", "0"],
     "argument --images: expected a whole number of at least 1. Received: '0'"),
    (["generator", "--data", "d.zip", "--rounds", "abc"],
     "argument --rounds: expected a whole number of at least 1. Received: 'abc'"),
    (["generator", "--data", "d.zip", "--min-seconds", "0"],
     "argument --min-seconds: expected a number above 0. Received: '0'"),
    (["generator", "--data", "d.zip", "--seed", "-1"], "--seed must be at least 0. Received: -1"),
    (["augment", "--rounds", "0"], "argument --rounds: expected a whole number of at least 1. Received: '0'"),
    (["augment", "--steps", "1"],
     "--steps must be at least 2 (a timed epoch runs from its first step to its last). Received: 1"),
    (["augment", "--epochs", "1"], "--epochs must be at least 2 (the first is warm-up). Received: 1"),
    (["train", "--rounds", "0"], "argument --rounds: expected a whole number of at least 1. Received: '0'"),
    (["train", "--batch-size", "-5"], "argument --batch-size: expected a whole number of at least 1. Received: '-5'"),
    (["train", "--steps-per-execution", "1", "0"],
     "argument --steps-per-execution: expected a whole number of at least 1. Received: '0'"),
    (["train", "--epochs", "1"], "--epochs must be at least 2 (the first is warm-up). Received: 1"),
    (["train", "--steps", "4", "--steps-per-execution", "2", "4"],
     "--steps-per-execution 4: expected less than --steps (4); an epoch is timed from its first execution to its last"),
    (["evaluate", "--images", "0"], "argument --images: expected a whole number of at least 1. Received: '0'"),
    (["evaluate", "--batch-size", "0"], "argument --batch-size: expected a whole number of at least 1. Received: '0'"),
    (["evaluate", "--rounds", "1"], "--rounds must be at least 2 (the first compiles). Received: 1"),
    (["pipeline", "--images", "0"], "argument --images: expected a whole number of at least 1. Received: '0'"),
    (["pipeline", "--seconds", "-1"], "argument --seconds: expected a number above 0. Received: '-1'"),
])
def test_a_bad_number_is_one_line_naming_its_flag_and_exit_status_2(argv, message, capsys):
    assert benchmark(*argv) == 2
    line = last_error_line(capsys)
    assert line.endswith(f" {argv[0]}: error: {message}"), line  # the usage's program name, then the subcommand


def test_an_unknown_model_is_one_line_listing_the_models_train_takes(capsys):
    from tiny_keras import models

    assert benchmark("train", "--model", "bogus") == 2
    line = last_error_line(capsys)
    assert line.endswith(f" train: error: --model bogus: expected a model a paper's recipe trains "
                         f"({', '.join(models.names())}) or 'main'"), line
    assert benchmark("train", "--model", "main", "--model", "paper4_model2") == 2
    assert last_error_line(capsys).endswith("--model main: expected a model a paper's recipe trains ("
                                            f"{', '.join(models.names())}) or 'main'; 'main' (every paper's main "
                                            "model) goes alone")


@pytest.mark.parametrize("command", ["data", "generator", "pipeline"])
def test_bad_data_is_one_line_naming_data_and_exit_status_1(command, tmp_path, capsys):
    """A missing path, a file that is not a zip, an empty folder; the traceback with --debug."""
    from tiny_keras.data import DatasetError

    missing, not_zip, empty = tmp_path / "nonexist.zip", tmp_path / "notzip.zip", tmp_path / "empty"
    not_zip.write_text("not a zip")
    empty.mkdir()
    for path, expected in ((missing, f"error: --data {missing}: no such file or folder. Expected the "
                                     "tiny-imagenet-200.zip archive, its extracted tiny-imagenet-200/ folder, "
                                     "or a folder holding either."),
                           (not_zip, f"error: --data {not_zip}: "),
                           (empty, f"error: --data {empty}: no wnids.txt, tiny-imagenet-200/ folder or "
                                   "tiny-imagenet-200.zip here. Expected the official layout "
                                   "tiny-imagenet-200/{wnids.txt, words.txt, train/, val/, test/} or its zip.")):
        assert benchmark(command, "--data", path) == 1
        line = last_error_line(capsys)
        assert line.startswith(expected) and (line == expected) == (path != not_zip), line
    with pytest.raises(DatasetError):
        benchmark(command, "--data", empty, "--debug")


def test_fewer_images_than_one_batch_names_batch_size_and_the_images(fixture_zip, capsys):
    assert benchmark("data", "--data", fixture_zip) == 1
    assert last_error_line(capsys) == ("error: --batch-size 128: the training split of --data has 12 images, fewer "
                                       "than one batch; pass a smaller --batch-size")
    assert benchmark("data", "--data", fixture_zip, "--per-class", "2", "--batch-size", "7") == 1
    assert last_error_line(capsys) == ("error: --batch-size 7: the training split of --data has 6 images at "
                                       "--per-class 2, fewer than one batch; pass a smaller --batch-size")


def test_an_output_path_that_cannot_be_written_is_refused_before_measuring(tmp_path, capsys):
    """A --json folder or a path under a file (and generator's --tmp under a file) exit with
    status 2 before the data is read: the missing --data would exit with 1."""
    folder, afile = tmp_path / "folder", tmp_path / "afile.txt"
    folder.mkdir()
    afile.write_text("x")
    missing = tmp_path / "nonexist.zip"
    assert benchmark("data", "--data", missing, "--json", folder, "--overwrite") == 2
    assert last_error_line(capsys).endswith(f" data: error: --json: {folder} is a folder; name a file")
    assert benchmark("data", "--data", missing, "--json", afile / "out.json") == 2
    assert last_error_line(capsys).endswith(f" data: error: --json: {afile} is a file, not a folder: the output "
                                            "cannot be written under it")
    assert benchmark("data", "--data", missing, "--json", afile) == 2
    assert last_error_line(capsys).endswith(f" data: error: --json: {afile} exists; pass --overwrite to replace it")
    assert benchmark("generator", "--data", missing, "--tmp", afile) == 2
    assert last_error_line(capsys).endswith(f" generator: error: --tmp: {afile} is a file; name a folder for the "
                                            "extracted JPEGs")
    assert benchmark("generator", "--data", missing, "--tmp", afile / "jpegs") == 2
    assert last_error_line(capsys).endswith(f" generator: error: --tmp: {afile} is a file, not a folder: the output "
                                            "cannot be written under it; name a folder for the extracted JPEGs")
