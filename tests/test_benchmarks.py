"""tools/benchmark.py's train and pipeline benchmarks run end to end and write their numbers
(small settings; the numbers themselves are measured, not asserted: tests never time)."""
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
