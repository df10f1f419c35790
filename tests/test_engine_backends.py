"""The training engine, evaluation and the reproduction scripts on Keras's JAX and
PyTorch backends, and the package without TensorFlow.

The other backends run in fresh processes (``KERAS_BACKEND`` is fixed per process), with
TensorFlow unimportable: a tiny recipe (augmentation, dropout, a step schedule) trained
whole and killed-and-resumed on each (``tests/engine_cases.py``), on JAX also split over
two devices, a reproduction script's ``--smoke`` and ``tools/evaluate.py``. This process,
on TensorFlow, reads what they wrote.
"""
import json

import keras
import numpy as np
import pytest

from conftest import REPO, run_python
from tiny_keras import backend, data, runs, train
from tiny_keras.engine import strategy

pytestmark = pytest.mark.xdist_group("engine_backends")  # one worker runs each backend's case process once

BLOCK_TENSORFLOW = "import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None; "


ENGINE_RUNS = {}


def engine_run(name, fixture_zip, tmp_path_factory):
    """``tests/engine_cases.py`` on backend ``name``, once per test session."""
    if name not in ENGINE_RUNS:
        out = tmp_path_factory.mktemp(f"{name}_engine")
        done = run_python(REPO / "tests" / "engine_cases.py", fixture_zip, out, env={"KERAS_BACKEND": name})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        ENGINE_RUNS[name] = out, json.loads((out / "cases.json").read_text())
    return ENGINE_RUNS[name]


@pytest.fixture(params=["jax", "torch"])
def engine(request, fixture_zip, tmp_path_factory):
    return engine_run(request.param, fixture_zip, tmp_path_factory)


def test_run_resumes_exactly_without_tensorflow(engine):
    out, cases = engine
    assert cases["backend"] in ("jax", "torch") and cases["recorded_backend"] == cases["backend"]
    assert cases["tensorflow_blocked"]  # trained, resumed and evaluated with TensorFlow unimportable
    # Killed in epoch 2 and resumed: the uninterrupted run's weights (augmentation, dropout
    # and the batch stream all continue from the checkpoint).
    assert cases["resumed_max_weight_diff"] < 1e-5
    assert (out / "killed" / runs.RESULTS).exists() and not list((out / "killed").glob("checkpoint-*"))
    # Stopped by the time limit inside epoch 2 and resumed there: the same weights, and the
    # same history (epoch 2's training metrics over both sessions' steps).
    assert cases["stopped_at"] == [1, 1]
    assert cases["stopped_max_weight_diff"] < 1e-5 and cases["stopped_max_history_diff"] < 1e-5


def test_run_scores_agree_with_evaluate(engine):
    _, cases = engine
    assert 0.0 <= cases["run_val_top1"] <= 100.0
    assert cases["run_val_top1"] == pytest.approx(cases["evaluate_val_top1"], abs=1e-4)


def test_model_trained_there_predicts_the_same_on_tensorflow(engine, fixture_zip):
    out, _ = engine
    model = keras.models.load_model(out / "whole" / runs.MODEL)
    val = data.load_split(fixture_zip, "val")
    ours = keras.ops.convert_to_numpy(model.predict(val.images.astype(np.float32), verbose=0))
    np.testing.assert_allclose(ours, np.load(out / "logits.npy"), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_reproduction_smoke_and_evaluate_tool_on_jax(fixture_zip, tmp_path):
    workdir = tmp_path / "paper4"
    done = run_python(REPO / "reproductions" / "paper4_cnn_transfer.py", "--data", fixture_zip, "--workdir", workdir,
                      "--smoke", "--model", "model2", env={"KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results = json.loads((workdir / runs.RESULTS).read_text())
    assert [(r["model"], r["stage"]) for r in results["runs"]] == [("model2", "train")]
    run_info = json.loads((workdir / "model2" / runs.RUN_INFO).read_text())
    assert run_info["sessions"][0]["environment"]["backend"] == "jax"
    model_file = workdir / "model2" / runs.MODEL
    evaluated = run_python(REPO / "tools" / "evaluate.py", model_file, "--data", fixture_zip, "--json",
                           tmp_path / "eval.json", env={"KERAS_BACKEND": "jax"})
    assert evaluated.returncode == 0, evaluated.stdout[-2000:] + evaluated.stderr[-4000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["models"][0]["top1"] == pytest.approx(results["runs"][0]["val_top1"], abs=1e-4)
    # The .keras export runs there (reloaded and checked); the SavedModel one says where it runs.
    exported = run_python(REPO / "tools" / "export.py", model_file, "--out", tmp_path / "export.keras",
                          "--format", "keras", env={"KERAS_BACKEND": "jax"})
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-4000:]
    assert (tmp_path / "export.keras").is_file()
    refused = run_python(REPO / "tools" / "export.py", model_file, "--out", tmp_path / "savedmodel",
                         env={"KERAS_BACKEND": "jax"})
    assert refused.returncode != 0 and not (tmp_path / "savedmodel").exists()
    assert "SavedModel export runs on Keras's TensorFlow backend" in refused.stdout + refused.stderr


@pytest.mark.slow
def test_data_parallel_over_two_devices_trains_as_one_device(fixture_zip, tmp_path):
    """``--strategy data_parallel`` on two (host-platform) JAX devices, each batch split over
    both: without random draws, the same updates as on one device to float rounding of the
    split reductions (measured: 2e-5). With augmentation and dropout it trains too; its
    draws are seeded but not those of one device (JAX draws per shard)."""
    done = run_python(REPO / "tests" / "engine_cases.py", fixture_zip, tmp_path, "data_parallel",
                      env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    cases = json.loads((tmp_path / "cases.json").read_text())
    assert cases["backend"] == "jax" and cases["devices"] == 2
    assert cases["max_weight_diff"] < 1e-4
    assert 0.0 <= cases["random_val_top1"] <= 100.0
    session = json.loads((tmp_path / "split" / runs.RUN_INFO).read_text())["sessions"][-1]["session"]
    assert session["strategy"] == "data_parallel"


def test_import_without_tensorflow_on_jax_and_tf_only_features_say_so(fixture_zip):
    code = BLOCK_TENSORFLOW + (
        "import numpy as np, tiny_keras, keras\n"
        "from tiny_keras import backend, data, evaluate, export, models, train\n"
        "assert keras.backend.backend() == 'jax'\n"
        "model = models.build('paper4_model2')\n"
        "assert model(np.zeros((1, 64, 64, 3), 'float32')).shape == (1, 200)\n"
        "split = data.load_split(%r, 'val')\n"
        "try:\n"
        "    export.export_savedmodel(model, '/nonexistent/out')\n"
        "except backend.TensorFlowRequired as error:\n"
        "    print('savedmodel:', error)\n"
        "try:\n"
        "    data.load_split(None, 'val')\n"
        "except backend.TensorFlowRequired as error:\n"
        "    print('tfds:', error)\n"
        "print('ok', len(split), sorted(m for m, v in sys.modules.items() if m.startswith('tensorflow') and v))\n"
    ) % str(fixture_zip)
    done = run_python("-c", code, env={"KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-4000:]
    assert "ok 6 []" in done.stdout
    assert "savedmodel: SavedModel export runs on Keras's TensorFlow backend" in done.stdout
    assert "tfds: " in done.stdout and "TFDS" in done.stdout.split("tfds: ")[1]


def test_strategies_name_the_backend_they_need():
    assert backend.name() == "tensorflow"
    with pytest.raises(ValueError, match="'data_parallel' is keras.distribution's and needs the JAX backend"):
        strategy.make_strategy("data_parallel")
    done = run_python("-c", "from tiny_keras.engine import strategy\nstrategy.make_strategy('mirrored')",
                      env={"KERAS_BACKEND": "jax"})
    assert done.returncode != 0
    assert "strategy 'mirrored' is tf.distribute's and needs the TensorFlow backend" in done.stderr
    assert "on JAX use data_parallel" in done.stderr
