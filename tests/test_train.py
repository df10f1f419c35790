"""The training engine: recipes, progressive resizing, resume, run folders, strategies."""
import csv
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

from conftest import REPO
from killed_runs import Interrupt, KillAt
from tiny_keras import augment, backend, losses, models, provenance, runs, train
from tiny_keras.engine import inputs, precision, resume, strategy, time_limit
from tiny_keras.engine import log as engine_log
from tiny_keras.engine import model as engine_model
from tiny_keras.engine.session import Session, stage_steps_per_execution
from tiny_keras.recipe import Recipe, Stage

TINY = {"filters": (4, 8, 8, 8)}


def tiny_recipe(**changes):
    stage = dict(epochs=3, batch_size=4, steps_per_epoch=2, image_size=32,
                 optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
                 schedule={"name": "step", "every_epochs": 1, "factor": 0.5},
                 augment=augment.serialize(augment.RandomFlip()))
    stage.update(changes.pop("stage", {}))
    recipe = dict(paper="paper1", model="paper1_resnet", model_options=TINY,
                  preprocessing={"featurewise_std_normalization": True}, stages=[Stage(**stage)])
    recipe.update(changes)
    return Recipe(**recipe)


# Checkpoints after every epoch: the resume tests kill runs at given epochs (the cost rule
# would thin out these tiny epochs' checkpoints; it has its own test).
SESSION = Session(tensorboard=False, checkpoint_every=1)
EAGER = Session(tensorboard=False, checkpoint_every=1, run_eagerly=True)  # no tracing: for runs of a few steps


def fit(recipe, workdir, **kwargs):
    """``train.train`` in the tests' session; ``kwargs`` may change its fields."""
    kwargs.setdefault("session", SESSION)
    return train.train(recipe, workdir, **kwargs)


def network_weights(model):
    return [w.copy() for w in model.network.get_weights()]  # the backbone and the head


def read_history(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_recipe_json_round_trip_and_validation():
    recipe = tiny_recipe()
    again = Recipe.from_json(recipe.to_json())
    assert again.to_json() == recipe.to_json() and isinstance(again.stages[0], Stage)
    with pytest.raises(ValueError, match="optimizer name must be one of"):
        tiny_recipe(stage={"optimizer": {"name": "lion", "learning_rate": 1}}).validate()
    with pytest.raises(ValueError, match="schedule and ReduceLROnPlateau"):
        tiny_recipe(stage={"reduce_lr_on_plateau": {"patience": 2}}).validate()
    with pytest.raises(ValueError, match="Unknown model"):
        tiny_recipe(model="resnet9000").validate()


def test_progressive_resizing_stage2_starts_from_stage1_weights(fixture_zip, tmp_path):
    starts = []

    class RecordStart(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            starts.append(network_weights(self.model))

    recipe = tiny_recipe(stages=[
        Stage(name="32px", epochs=1, batch_size=4, steps_per_epoch=2, image_size=32),
        Stage(name="48px", epochs=1, batch_size=4, steps_per_epoch=2, image_size=48,
              optimizer={"name": "sgd", "learning_rate": 0.01}),
    ])
    result = fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0, extra_callbacks=[RecordStart()])
    assert [r["stage"] for r in result["runs"]] == ["32px", "48px"]
    stage1 = keras.models.load_model(tmp_path / "run" / "stages" / "32px" / "model.keras")
    assert len(starts) == 2
    for a, b in zip(starts[1], network_weights(stage1)):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(starts[0], starts[1]))  # stage 1 did train
    # Each stage's model carries its own input resolution.
    stage2 = keras.models.load_model(tmp_path / "run" / "stages" / "48px" / "model.keras")
    assert stage2.get_layer("resize_48") is not None and stage1.get_layer("resize_32") is not None


def test_resume_after_kill_continues_from_epoch_2_with_the_right_lr(fixture_zip, tmp_path):
    recipe = tiny_recipe()
    whole = fit(recipe, tmp_path / "whole", data=fixture_zip, verbose=0)
    run = tmp_path / "killed"
    with pytest.raises(Interrupt):
        fit(recipe, run, data=fixture_zip, verbose=0, extra_callbacks=[KillAt(epoch=1)])
    state = json.loads((run / "state.json").read_text())
    assert state["epochs_done"] == 1 and state["stage"] == "train"
    assert not (run / "results.json").exists()

    starts = []

    class RecordResume(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            starts.append((epoch, float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))))

        def on_train_batch_begin(self, batch, logs=None):
            if len(starts) == 1 and batch == 0:
                starts.append(("lr at first batch", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))))

    resumed = fit(recipe, run, data=fixture_zip, verbose=0, extra_callbacks=[RecordResume()])
    assert starts[0][0] == 1  # continues with the second epoch (index 1)
    assert starts[1][1] == pytest.approx(0.1 * 0.5)  # step decay after one epoch
    history = read_history(run / "stages" / "train" / "history.csv")
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]
    assert [float(r["learning_rate"]) for r in history] == pytest.approx([0.1, 0.05, 0.025])
    # Nothing lost: the same weights as the uninterrupted run.
    for a, b in zip(network_weights(keras.models.load_model(run / "model.keras")),
                    network_weights(keras.models.load_model(tmp_path / "whole" / "model.keras"))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert resumed["runs"][0]["val_top1"] == pytest.approx(whole["runs"][0]["val_top1"])
    # Provenance: one session per start, each with its command and environment; the training
    # time counts both sessions' epochs (the stage's seconds carry over the resume).
    record = json.loads((run / "run.json").read_text())
    assert len(record["sessions"]) == 2 and record["finished"] >= record["sessions"][1]["started"]
    env = record["sessions"][0]["environment"]
    assert env["backend"] == keras.backend.backend() and env["versions"]["keras"] == keras.__version__
    assert env["machine"]["cores"] == os.cpu_count() and env["machine"]["cpu"]
    if (REPO / ".git").exists():  # a git checkout names its commit; an unpacked archive cannot
        assert len(env["source"]["commit"]) == 40 and isinstance(env["source"]["dirty"], bool)
    assert record["sessions"][0]["command"] == " ".join(["python"] + [shlex.quote(a) for a in sys.orig_argv[1:]])
    assert record["train_seconds"] == pytest.approx(sum(r["seconds"] for r in resumed["runs"]), abs=0.11)
    assert len(json.loads((tmp_path / "whole" / "run.json").read_text())["sessions"]) == 1


def test_a_stopped_run_moved_to_another_folder_continues_there(fixture_zip, tmp_path):
    """A run folder carried elsewhere (another machine, another path) resumes where it is
    now: nothing it reads on resuming names the folder it was written in."""
    recipe = tiny_recipe()
    fit(recipe, tmp_path / "whole", data=fixture_zip, verbose=0, session=EAGER)
    first = tmp_path / "machine_a" / "run"
    with pytest.raises(Interrupt):
        fit(recipe, first, data=fixture_zip, verbose=0, session=EAGER, extra_callbacks=[KillAt(epoch=2)])
    moved = tmp_path / "machine_b" / "runs" / "run"
    moved.parent.mkdir(parents=True)
    first.rename(moved)
    (tmp_path / "machine_a").rmdir()  # nothing left behind to read from
    fit(recipe, moved, data=fixture_zip, verbose=0, session=EAGER)
    assert [int(r["epoch"]) for r in read_history(moved / "stages" / "train" / "history.csv")] == [0, 1, 2]
    assert len(json.loads((moved / "run.json").read_text())["sessions"]) == 2
    for a, b in zip(network_weights(keras.models.load_model(moved / "model.keras")),
                    network_weights(keras.models.load_model(tmp_path / "whole" / "model.keras"))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_finished_and_different_runs_are_not_overwritten(fixture_zip, tmp_path):
    recipe = tiny_recipe(stage={"epochs": 1})
    first = fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0)
    mtime = (tmp_path / "run" / "model.keras").stat().st_mtime_ns
    again = fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0)
    assert again == first and (tmp_path / "run" / "model.keras").stat().st_mtime_ns == mtime
    saved = (tmp_path / "run" / "recipe.json").read_bytes()
    faster = fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0, jit_compile=True,
                 steps_per_execution=2)  # speed settings alone: the same run, finished, and its record as it ran
    assert faster == first and (tmp_path / "run" / "recipe.json").read_bytes() == saved
    with pytest.raises(runs.RunFolderError, match="holds a different run .*seed"):
        fit(recipe.replace(seed=1), tmp_path / "run", data=fixture_zip, verbose=0)
    replaced = fit(recipe.replace(seed=1), tmp_path / "run", data=fixture_zip, verbose=0, overwrite=True)
    assert replaced["recipe"]["seed"] == 1


def test_saved_model_carries_its_preprocessing(fixture_zip, tmp_path):
    from tiny_keras import data

    recipe = tiny_recipe(stage={"epochs": 1}, crop=None)
    fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0)
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert isinstance(model, models.ImageClassifier) and model.augmenter is not None
    std = model.preprocessor.get_layer("standardize")
    images = np.asarray(data.load_split(fixture_zip, "train", progress=False).images, np.float64)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(std.mean), images.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(std.std), images.std(axis=(0, 1, 2)), rtol=1e-4)
    # 64px input straight from the dataset: the model resizes to its 32px itself.
    val = data.load_split(fixture_zip, "val", progress=False)
    assert model.predict(np.asarray(val.images, np.float32), verbose=0).shape == (6, 200)
    # uint8 as the pipeline feeds it, or float: the same predictions.
    np.testing.assert_array_equal(model.predict(np.asarray(val.images), verbose=0),
                                  model.predict(np.asarray(val.images, np.float32), verbose=0))


def test_weight_decay_regularizes_every_kernel(fixture_zip):
    model = models.ImageClassifier(engine_model.build_network(tiny_recipe()), image_size=32)
    network = model.network  # the backbone and the head
    assert {id(model.classifier.kernel), id(model.classifier.bias)} <= {id(v) for v in network.trainable_variables}
    engine_model.set_weight_decay(network, 2e-4)
    x = np.zeros((1, 32, 32, 3), np.float32)
    model(x)
    kernels = [v for v in network.trainable_variables if v.path.split("/")[-1] in engine_model.KERNEL_NAMES]
    expected = sum(1e-4 * float(np.sum(keras.ops.convert_to_numpy(v) ** 2)) for v in kernels)
    assert len(kernels) > 5
    assert float(sum(keras.ops.convert_to_numpy(l) for l in network.losses)) == pytest.approx(expected, rel=1e-4)


def test_label_smoothing_loss_matches_dense_form():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], np.float32)
    labels = np.array([0, 2])
    ours = losses.SparseCategoricalCrossentropy(label_smoothing=0.1)(labels, logits)
    dense = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(np.eye(3)[labels], logits)
    assert float(ours) == pytest.approx(float(dense), rel=1e-6)


def test_mirrored_strategy_over_two_cpu_devices_trains_a_step(fixture_zip, tmp_path):
    script = textwrap.dedent(f"""
        import json, os, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {str(REPO / "tests")!r})
        from test_train import fit, tiny_recipe
        recipe = tiny_recipe(stage={{"epochs": 1, "steps_per_epoch": 1}})
        result = fit(recipe, {str(tmp_path / "run")!r}, data={str(fixture_zip)!r}, verbose=0, strategy="mirrored")
        print("REPLICAS", tf.distribute.MirroredStrategy().num_replicas_in_sync)
        print("RESULT", json.dumps(result["runs"]))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "REPLICAS 2" in out.stdout
    runs = json.loads(out.stdout.split("RESULT", 1)[1])
    assert runs[0]["epochs"] == 1 and 0 <= runs[0]["val_top1"] <= 100
    history = read_history(tmp_path / "run" / "stages" / "train" / "history.csv")
    assert len(history) == 1 and np.isfinite(float(history[0]["loss"]))


def test_activation_percentiles_recorded_every_epoch(fixture_zip, tmp_path):
    recipe = tiny_recipe(stage={"epochs": 2})
    fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0, activation_samples=4)
    record = json.loads((tmp_path / "run" / "stages" / "train" / "activations.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [0, 1]
    assert record["percentiles"] == [0, 7, 16, 31, 50, 69, 84, 93, 100]
    # The logits of the final model on the same images give the last epoch's percentiles.
    from tiny_keras import data

    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    images = np.asarray(data.load_split(fixture_zip, "val", progress=False).images[:4], np.float32)
    logits = model.predict(images, verbose=0)
    np.testing.assert_allclose(record["epochs"][-1]["logits"], np.percentile(logits, record["percentiles"]),
                               rtol=1e-4, atol=1e-5)
    last = record["epochs"][-1]["last_block"]
    assert last == sorted(last) and last[0] >= 0.0  # a ReLU block: non-negative, ordered
    assert record["layers"]["logits"] and record["layers"]["last_block"]


def test_kill_while_checkpointing_leaves_a_consistent_resumable_state(fixture_zip, tmp_path, monkeypatch):
    from tiny_keras import files

    recipe = tiny_recipe()
    run = tmp_path / "run"
    real_write = files.write_json
    calls = []

    def write_then_die(obj, path):
        if str(path).endswith("state.json"):
            calls.append(obj["epochs_done"])
            if obj["epochs_done"] == 2:  # epoch 2's checkpoint is on disk, its state is not
                raise Interrupt("killed between the checkpoint and state.json")
        real_write(obj, path)

    monkeypatch.setattr(files, "write_json", write_then_die)
    with pytest.raises(Interrupt):
        fit(recipe, run, data=fixture_zip, verbose=0)
    monkeypatch.setattr(files, "write_json", real_write)
    state = json.loads((run / "state.json").read_text())
    assert state["epochs_done"] == 1 and (run / state["checkpoint"]).exists()
    resumed = fit(recipe, run, data=fixture_zip, verbose=0)
    history = read_history(run / "stages" / "train" / "history.csv")
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]  # epoch 2 (index 1) trained again, logged once
    assert resumed["runs"][0]["epochs"] == 3
    assert not list(run.glob("checkpoint-*.keras")) and not (run / "state.json").exists()


def test_tensorboard_logs_with_optional_histograms(fixture_zip, tmp_path):
    import tensorflow as tf

    recipe = tiny_recipe(stage={"epochs": 1})
    fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0, tensorboard=True, tensorboard_histograms=1)
    tags = set()
    for path in (tmp_path / "run" / "tensorboard" / "train").rglob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.add((value.tag, value.metadata.plugin_data.plugin_name))
    assert ("epoch_loss", "scalars") in tags and ("epoch_top1", "scalars") in tags
    histograms = [tag for tag, plugin in tags if plugin == "histograms"]
    assert any("kernel" in tag for tag in histograms)


def test_mixed_precision_and_xla_run(fixture_zip, tmp_path):
    recipe = tiny_recipe(stage={"epochs": 1}, precision="mixed_float16")
    result = fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0, jit_compile=True)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for the caller
    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)  # for inference
    network = model.backbone
    assert network.get_layer("stem_conv").dtype_policy.name == "mixed_float16"
    history = read_history(tmp_path / "run" / "stages" / "train" / "history.csv")
    assert np.isfinite(float(history[0]["loss"])) and 0 <= result["runs"][0]["val_top1"] <= 100
    logits = model.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()


def test_mixed_precision_run_resumes_with_its_optimizer_state(fixture_zip, tmp_path):
    """A mixed_float16 run continues with its optimizer state, also where the continuing
    session's own settings differ as on another machine: "auto" precision keeps the run's
    (a CPU would pick float32), XLA and steps per execution are the session's; an explicit
    other precision is another run."""
    import warnings

    recipe = tiny_recipe(stage={"epochs": 2}, precision="mixed_float16")
    with pytest.raises(Interrupt):
        fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0, extra_callbacks=[KillAt(epoch=1)],
            jit_compile=False, steps_per_execution=1)
    with pytest.raises(runs.RunFolderError, match=r"holds a different run \(recipe differs in \['precision'\]\)"):
        fit(recipe.replace(precision="float32"), tmp_path / "run", data=fixture_zip, verbose=0)
    elsewhere = recipe.replace(precision="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. "Skipping variable loading for optimizer"
        warnings.filterwarnings("ignore", message=".*shuffle.*")
        result = fit(elsewhere, tmp_path / "run", data=fixture_zip, verbose=0, jit_compile=True,
                     steps_per_execution=2)
    assert result["runs"][0]["epochs"] == 2
    saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    session = json.loads((tmp_path / "run" / "run.json").read_text())["sessions"][-1]["session"]
    assert (saved["precision"], session["jit_compile"], session["steps_per_execution"]) == ("mixed_float16", True, 2)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "mixed_float16, XLA off, 1 step per execution" in log
    assert "mixed_float16, XLA on, 2 steps per execution" in log
    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert model.backbone.get_layer("stem_conv").dtype_policy.name == "mixed_float16"


EPOCH_LINE = re.compile(r"stage 'train' epoch (\d)/3: loss [\d.]+ top1 [\d.]+% top5 [\d.]+% \| val_loss [\d.]+ "
                        r"val_top1 [\d.]+% val_top5 [\d.]+% \| lr ([\d.e-]+) \| [\d,]+ images/s \| \d+ s"
                        r"( \| (\d) epochs? left, about \d+ s)?$")


def test_one_line_per_epoch_when_asked_and_always_in_train_log(fixture_zip, tmp_path, capsys):
    recipe = tiny_recipe()
    fit(recipe, tmp_path / "lines", data=fixture_zip, verbose=2)
    out = capsys.readouterr().out
    epochs = [EPOCH_LINE.search(line) for line in out.splitlines() if "epoch" in line and "stage '" in line]
    assert [int(m.group(1)) for m in epochs] == [1, 2, 3]
    assert [m.group(4) for m in epochs] == ["2", "1", None]  # what is left of the stage
    assert [float(m.group(2)) for m in epochs] == pytest.approx([0.1, 0.05, 0.025])
    assert "━" not in out and "\b" not in out and len(out) < 3000  # no progress bars: a few lines in all
    log = (tmp_path / "lines" / "train.log").read_text().splitlines()
    assert [EPOCH_LINE.search(line).group(1) for line in log if "' epoch " in line] == ["1", "2", "3"]
    assert log[0].endswith("Precision float32: auto: a CPU without bfloat16 instructions (no amx_bf16 or "
                           "avx512_bf16 flag)")
    assert log[1].endswith("Stage 1/1 'train': 3 epochs of 2 steps, batch 4, 32px; float32, XLA off, 1 step per execution")
    # Quiet: nothing printed, the log still written.
    fit(recipe, tmp_path / "quiet", data=fixture_zip, verbose=0)
    assert capsys.readouterr().out == ""
    assert sum("' epoch " in line for line in (tmp_path / "quiet" / "train.log").read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="verbose must be 0, 1, 2 or 'auto'"):
        fit(recipe, tmp_path / "bad", data=fixture_zip, verbose=3)


# -- fast defaults -----------------------------------------------------------------------------------
def test_auto_precision_xla_and_steps_per_execution_follow_the_device():
    recipe, session = tiny_recipe(), Session()
    assert (recipe.precision, session.jit_compile, session.steps_per_execution) == ("auto", "auto", "auto")
    cpu = session.resolve(None)
    assert (precision.settle(recipe.precision)[0], cpu.jit_compile, cpu.steps_per_execution) == ("float32", False, 1)
    h100 = session.resolve((9, 0))
    assert (precision.settle(recipe.precision, None, (9, 0))[0], h100.jit_compile, h100.steps_per_execution) == (
        "mixed_bfloat16", True, 32)
    assert precision.settle(recipe.precision, None, (7, 0))[0] == "mixed_float16"  # no bfloat16 before 8.0
    # What the user chose stays, on any device.
    chosen = Session(jit_compile=False, steps_per_execution=4).resolve((9, 0))
    assert (precision.settle("float32", None, (9, 0))[0], chosen.jit_compile, chosen.steps_per_execution) == (
        "float32", False, 4)
    with pytest.raises(ValueError, match="precision must be one of"):
        recipe.replace(precision="float16").validate()
    with pytest.raises(ValueError, match="steps_per_execution must be"):
        Session(steps_per_execution=0).validate()


AMX = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})  # an Intel Xeon's (Sapphire Rapids and later)
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})  # an AMD EPYC's (Zen 4): bfloat16 instructions, no AMX
AVX2 = frozenset({"avx", "avx2", "fma"})  # no bfloat16 instructions


def test_auto_precision_is_bfloat16_on_a_cpu_with_bfloat16_instructions_where_the_backend_uses_them():
    assert precision.auto_precision(None, AMX, "tensorflow") == (
        "mixed_bfloat16", "a CPU with AMX-BF16, which tensorflow's CPU kernels (oneDNN) use")
    assert precision.auto_precision(None, AVX512_BF16, "tensorflow") == (
        "mixed_bfloat16", "a CPU with AVX512-BF16, which tensorflow's CPU kernels (oneDNN) use")
    for other in ("jax", "torch"):  # their CPU paths are not measured: float32, with the reason
        picked, reason = precision.auto_precision(None, AMX, other)
        assert picked == "float32" and f"bfloat16 on the {other} backend's CPU path is not measured" in reason
    for flags in (AVX2, frozenset()):
        assert precision.auto_precision(None, flags, "tensorflow") == (
            "float32", "a CPU without bfloat16 instructions (no amx_bf16 or avx512_bf16 flag)")
    # A GPU decides by its compute capability, whatever its host CPU has.
    assert precision.auto_precision((9, 0), frozenset(), "jax")[0] == "mixed_bfloat16"
    assert precision.auto_precision((7, 5), AMX, "tensorflow") == (
        "mixed_float16", "a GPU of compute capability 7.5 (below 8.0) has no fast bfloat16")
    assert precision.settle("auto", None, None, AMX)[0] == "mixed_bfloat16"
    assert precision.settle("auto", None, None, AVX2)[0] == "float32"
    assert precision.settle("float32", None, None, AMX)[0] == "float32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
                       "flags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert backend.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
                                               "amx_int8"}
    assert backend.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_auto_precision_on_an_amx_cpu_is_recorded_and_kept_where_the_run_continues(fixture_zip, tmp_path,
                                                                                   monkeypatch):
    """A run started on a CPU with AMX trains in bfloat16, says why in train.log and
    run.json, and continues in bfloat16 on a CPU without bfloat16 instructions (a run
    keeps its precision)."""
    recipe = tiny_recipe(stage={"epochs": 2})
    monkeypatch.setattr(backend, "cpu_flags", lambda path=None: AMX)
    with pytest.raises(Interrupt):
        fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0, extra_callbacks=[KillAt(epoch=1)])
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["precision"] == "mixed_bfloat16"
    monkeypatch.setattr(backend, "cpu_flags", lambda path=None: AVX2)
    fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0)
    log = (tmp_path / "run" / "train.log").read_text()
    assert ("Precision mixed_bfloat16: auto: a CPU with AMX-BF16, which tensorflow's CPU kernels (oneDNN) use"
            in log) == (keras.backend.backend() == "tensorflow")
    assert "Precision mixed_bfloat16: the precision the run started in (mixed_bfloat16; a run keeps it)" in log
    sessions = json.loads((tmp_path / "run" / "run.json").read_text())["sessions"]
    assert [s["precision"]["policy"] for s in sessions] == ["mixed_bfloat16", "mixed_bfloat16"]
    assert sessions[1]["precision"]["reason"].startswith("the precision the run started in")
    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert model.backbone.get_layer("stem_conv").dtype_policy.name == "mixed_bfloat16"


def test_steps_per_execution_divide_epochs_and_snapshot_intervals():
    assert stage_steps_per_execution(32, 3125) == 25      # paper 4: 100,000 / 32
    assert stage_steps_per_execution(32, 781) == 11       # 781 = 11 * 71
    assert stage_steps_per_execution(32, 1000, every_steps=10000) == 25
    assert stage_steps_per_execution(32, 1000, every_steps=7) == 1
    assert stage_steps_per_execution(1, 3125) == 1


def test_recipes_written_before_precision_still_read(tmp_path):
    old = json.loads(tiny_recipe().to_json())
    del old["precision"]
    old["mixed_precision"] = True
    assert Recipe.from_dict(old).precision == "mixed_float16"
    # A run folder an older version started: the same run (continued), unless it differs.
    old.update(checkpoint_every=1, jit_compile="auto")  # fields a recipe held before the session: dropped
    old["mixed_precision"] = False
    recipe = tiny_recipe(precision="float32")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.json").write_text(json.dumps(old))
    (tmp_path / "run" / "state.json").write_text("{}")  # it trained: an epoch's resume point
    assert runs.saved_recipe(tmp_path / "run") == json.loads(recipe.to_json())
    runs.prepare_folder(tmp_path / "run", recipe, overwrite=False)
    with pytest.raises(runs.RunFolderError, match=r"recipe differs in \['seed'\]"):
        runs.prepare_folder(tmp_path / "run", recipe.replace(seed=7), overwrite=False)
    newer = dict(old, field_of_a_newer_version=1)  # unreadable here: compared as written, and refused
    (tmp_path / "run" / "recipe.json").write_text(json.dumps(newer))
    assert runs.saved_recipe(tmp_path / "run") == newer
    with pytest.raises(runs.RunFolderError, match="field_of_a_newer_version"):
        runs.prepare_folder(tmp_path / "run", recipe, overwrite=False)


def test_a_folder_whose_run_never_trained_is_replaced_and_one_holding_other_files_refused(tmp_path):
    """A start that failed before its first epoch (bad data, a model that cannot be built)
    leaves recipe.json, run.json and train.log: a different recipe replaces that, in one
    line, where a run that trained is refused. A folder another tool wrote (a SavedModel)
    is never a run folder, --overwrite or not."""
    recipe, run = tiny_recipe(), tmp_path / "run"
    assert runs.prepare_folder(run, recipe, overwrite=False) is None
    (run / "run.json").write_text("{}")
    (run / "train.log").write_text("a start that failed on its data\n")
    assert runs.prepare_folder(run, recipe.replace(seed=5), overwrite=False) == (
        f"{run} held a run that never trained (recipe differs in ['seed']): replaced by this one")
    assert sorted(os.listdir(run)) == ["recipe.json"] and json.loads((run / "recipe.json").read_text())["seed"] == 5
    for trained in ("progress.json", "state.json", "checkpoint-0-0001.keras", "model.keras",
                    "stages/train/model.keras", "stages/train/snapshots/snapshot-e001.keras"):
        (run / trained).parent.mkdir(parents=True, exist_ok=True)
        (run / trained).write_text("{}")
        with pytest.raises(runs.RunFolderError, match=re.escape(f"{run} holds a different run (recipe differs in "
                                                                "['seed']); choose another workdir")):
            runs.prepare_folder(run, recipe, overwrite=False)
        (run / trained).unlink()
    saved_model = tmp_path / "exported"
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(b"")
    with pytest.raises(runs.RunFolderError) as refused:
        runs.prepare_folder(saved_model, recipe, overwrite=True)
    assert str(refused.value) == (f"{saved_model} is not a run folder: it holds a SavedModel (saved_model.pb): "
                                  "saved_model.pb, variables; choose another workdir (a new folder, or a run's)")
    assert sorted(os.listdir(saved_model)) == ["saved_model.pb", "variables"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    with pytest.raises(runs.RunFolderError, match=re.escape(f"{tmp_path / 'notes'} is not a run folder: it holds "
                                                            "files no run writes: notes.txt; choose another")):
        runs.prepare_folder(tmp_path / "notes", recipe, overwrite=False)
    (tmp_path / "empty").mkdir()
    for fresh in (tmp_path / "empty", tmp_path / "new" / "run"):
        assert runs.prepare_folder(fresh, recipe, overwrite=False) is None
        assert json.loads((fresh / "recipe.json").read_text()) == json.loads(recipe.to_json())


def test_an_unfinished_run_names_how_to_finish_it_and_its_stage_model(tmp_path):
    recipe, run = tiny_recipe(stage={"name": "train"}), tmp_path / "run"
    runs.prepare_folder(run, recipe.replace(stages=[*recipe.stages, Stage(name="fine_tune")]), overwrite=False)
    (run / "run.json").write_text(json.dumps({"sessions": [{"command": "python train.py --workdir run"}]}))
    (run / "checkpoint-0-0001.keras").write_text("")
    with pytest.raises(runs.ModelLoadError) as error:
        runs.member_paths(run)
    assert str(error.value) == (f"{run}: an unfinished run with no model yet (no model.keras, no finished stage): "
                                "run its command again to continue it (python train.py --workdir run)")
    (run / "stages" / "train").mkdir(parents=True)
    (run / "stages" / "train" / "model.keras").write_text("")
    with pytest.raises(runs.ModelLoadError) as error:
        runs.member_paths(run)
    assert str(error.value) == (f"{run}: an unfinished run (no model.keras yet): run its command again to continue "
                                f"it (python train.py --workdir run), or pass its last finished stage's model, "
                                f"{run / 'stages' / 'train' / 'model.keras'}")
    (run / "model.keras").write_text("")
    assert runs.member_paths(run) == [str(run / "model.keras")]


def test_a_run_records_what_it_chose_and_trains_several_steps_per_execution(fixture_zip, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_log, "PROGRESS_SECONDS", 0)  # a progress line after every execution
    recipe = tiny_recipe(stage={"epochs": 2, "steps_per_epoch": 4})
    result = fit(recipe, tmp_path / "run", data=fixture_zip, verbose=0, steps_per_execution=2)
    log = (tmp_path / "run" / "train.log").read_text()
    # Keras reports each execution's last step: steps 2 and 4 of each epoch.
    assert re.findall(r"epoch (\d)/2: step (\d)/4 \((\d+)%\)", log) == [
        ("1", "2", "50"), ("1", "4", "100"), ("2", "2", "50"), ("2", "4", "100")]
    saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    session = json.loads((tmp_path / "run" / "run.json").read_text())["sessions"][-1]["session"]
    assert (saved["precision"], session["jit_compile"], session["steps_per_execution"]) == ("float32", False, 2)
    assert result["recipe"]["precision"] == "float32"
    assert "float32, XLA off, 2 steps per execution" in (tmp_path / "run" / "train.log").read_text()
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 8  # 2 epochs of 4 steps, 2 per call


def test_long_epochs_log_their_progress_and_every_epoch_what_is_left(tmp_path):
    """A progress line at most every ``progress_seconds`` inside an epoch (step, images/s,
    when its training steps end), and each epoch's line says how much of the stage is left
    at the mean epoch time so far. Times from a fake clock."""
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    log = tmp_path / "train.log"
    cb = engine_log.EpochLog("train", 3, images_per_epoch=1000 * 32, steps_per_epoch=1000, progress_seconds=120,
                             clock=clock)
    logs = {"loss": 4.0, "top1": 0.1, "val_top1": 0.12, "learning_rate": 1e-3}
    with engine_log.run_log(str(log), verbose=0):
        for epoch in range(2):
            cb.on_epoch_begin(epoch)
            for batch in range(0, 1000, 4):  # 4 steps per execution, 1 s each: a 1,000 s epoch
                clock.now += 4.0
                cb.on_train_batch_end(batch + 3)
            cb.on_test_begin()
            clock.now += 200.0 if epoch == 0 else 400.0  # validation
            cb.on_epoch_end(epoch, logs)
    lines = [line.split(" ", 2)[2] for line in log.read_text().splitlines()]  # without the time stamp
    progress = [line for line in lines if ": step " in line]
    # One line per 120 s: after 120, 240, ..., 960 s of each 1,000 s epoch.
    assert len(progress) == 16
    assert progress[0] == ("stage 'train' epoch 1/3: step 120/1,000 (12%) | 32 images/s | "
                           "training steps end in about 15 min")
    assert progress[8] == ("stage 'train' epoch 2/3: step 120/1,000 (12%) | 32 images/s | "
                           "training steps end in about 15 min")
    assert progress[7].startswith("stage 'train' epoch 1/3: step 960/1,000 (96%)")
    assert progress[7].endswith("training steps end in about 40 s")
    epochs = [line for line in lines if ": step " not in line]
    assert epochs[0].endswith("| 32 images/s | 1200 s | 2 epochs left, about 40 min")
    assert epochs[1].endswith("| 32 images/s | 1400 s | 1 epoch left, about 22 min")  # the mean of 1,200 and 1,400
    # Off, or without the steps per epoch: only the epoch lines.
    with engine_log.run_log(str(tmp_path / "off.log"), verbose=0):
        for quiet in (engine_log.EpochLog("train", 1, 32, steps_per_epoch=10, progress_seconds=None, clock=clock),
                      engine_log.EpochLog("train", 1, 32, clock=clock)):
            quiet.on_epoch_begin(0)
            for batch in range(10):
                clock.now += 1000.0
                quiet.on_train_batch_end(batch)
            quiet.on_epoch_end(0, logs)
    assert [": step " in line for line in (tmp_path / "off.log").read_text().splitlines()] == [False, False]


def test_resume_checkpoints_thin_out_when_they_cost_more_than_5_percent_of_an_epoch(tmp_path):
    class Clock:  # the times the callback reads: epochs take 100 s, a checkpoint 12 s
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()

    class Recording(resume.RunCheckpoint):
        def __init__(self, cost, **kwargs):
            super().__init__(str(tmp_path), 0, "train", clock=clock, **kwargs)
            self.cost, self.saved = cost, []

        def _save(self, epochs_done, steps_done):
            self.saved.append(epochs_done)
            clock.now += self.cost

    cb = Recording(12.0, epochs=10)
    for epoch in range(10):
        cb.on_epoch_begin(epoch)
        clock.now += 100.0
        cb.on_epoch_end(epoch)
    # 12 s is 12% of an epoch: after the first, every ceil(12 / 5) = 3 epochs, and the last.
    assert cb.saved == [1, 4, 7, 10] and cb.every == 3
    assert cb.report() == "resume checkpoints: 4 written, 12.00 s each, 12.0% of an epoch; now every 3 epochs"

    cheap = Recording(1.0, epochs=4)  # 1% of an epoch: every epoch
    for epoch in range(2, 4):  # a resumed stage: epochs 3 and 4
        cheap.on_epoch_begin(epoch)
        clock.now += 100.0
        cheap.on_epoch_end(epoch)
    assert cheap.saved == [3, 4] and cheap.every == 1

    # Resumed inside epoch 5 after step 936: that epoch's length is not known, so its write
    # is judged by the resume point's mean epoch where timed as this session runs, else not
    # at all until a whole epoch has been timed.
    timing = "AMD EPYC, 2 cores; tensorflow; XLA off, 1 step per execution"
    point = {"epochs_done": 4, "steps_done": 936, "epoch_seconds": 100.0, "timed_on": timing}
    for cost, timed_on, saved, every in ((1.0, timing, [5, 6, 7, 8, 9, 10], 1),
                                         (12.0, "NVIDIA H100 80GB HBM3; jax; XLA on", [5, 6, 9, 10], 3)):
        inside = Recording(cost, epochs=10, point=point, timed_on=timed_on, steps_per_epoch=3125)
        for epoch in range(4, 10):
            inside.on_epoch_begin(epoch)
            clock.now += 100.0 * (3125 - inside._offset) / 3125
            inside.on_epoch_end(epoch)
        assert inside.saved == saved and inside.every == every
    assert inside.report() == "resume checkpoints: 4 written, 12.00 s each, 12.0% of an epoch; now every 3 epochs"


def test_sharded_input_gives_each_replica_distinct_images():
    """Two replicas (two logical CPUs, MirroredStrategy): per-replica batches of half the
    global batch, disjoint, every image once an epoch, a resumed stream continuing the
    same stream; each replica draws its own augmentation."""
    code = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import numpy as np
        from tiny_keras import augment
        from tiny_keras.data import DecodedSplit, official_classes
        from tiny_keras.engine import inputs

        n = 64
        images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 8, 8, 3)).copy()
        split = DecodedSplit("train", images, np.arange(n, dtype=np.int32), np.full((n, 4), -1, np.int32),
                             np.zeros(n, bool), [str(i) for i in range(n)], official_classes())
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        def steps(skip, count):
            stream = iter(inputs.train_input(strategy, split, 8, seed=3, skip_batches=skip))
            return [[p.numpy()[:, 0, 0, 0] for p in strategy.experimental_local_results(next(stream)[0])]
                    for _ in range(count)]

        first = steps(0, 16)  # two epochs of 8 steps
        for parts in first:
            assert [len(p) for p in parts] == [4, 4], parts
            assert not set(parts[0]) & set(parts[1]), parts  # each replica its own images
        for epoch in (first[:8], first[8:]):  # every image once an epoch
            assert sorted(np.concatenate([np.concatenate(parts) for parts in epoch])) == list(range(n))
        resumed = steps(3, 5)  # a resumed run's stream continues the same stream
        for a, b in zip(first[3:8], resumed):
            np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
        layer = augment.AugmentationLayer(augment.GaussianNoise(10.0), seed=0)
        same = tf.zeros((2, 4, 4, 3))
        out = strategy.run(lambda: layer(same, training=True))
        a, b = (v.numpy() for v in strategy.experimental_local_results(out))
        assert not np.allclose(a, b)  # the replicas' draws differ
        print("sharded ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0 and "sharded ok" in done.stdout, done.stderr[-3000:]


def test_resumed_run_with_dropout_has_the_uninterrupted_weights(fixture_zip, tmp_path):
    """Dropout's seed generator state is saved with the checkpoint, so its masks after a
    resume are the uninterrupted run's (as the augmentation's are)."""
    recipe = tiny_recipe(model_options={**TINY, "dropout": 0.5})
    fit(recipe, tmp_path / "whole", data=fixture_zip, verbose=0)
    run = tmp_path / "killed"
    with pytest.raises(Interrupt):
        fit(recipe, run, data=fixture_zip, verbose=0, extra_callbacks=[KillAt(epoch=2)])
    fit(recipe, run, data=fixture_zip, verbose=0)
    whole = keras.models.load_model(tmp_path / "whole" / "model.keras")
    resumed = keras.models.load_model(run / "model.keras")
    for a, b in zip(network_weights(resumed), network_weights(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    dropout = [layer for layer in whole.network.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropout  # the saved model carries the seed state too
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dropout[0].seed_generator.state),
                                  keras.ops.convert_to_numpy(resumed.network.get_layer(dropout[0].name)
                                                             .seed_generator.state))


class FakeClock:
    """A clock the tests move: starts at the real ``perf_counter`` (the engine's clock)."""

    def __init__(self):
        self.now = time.perf_counter()

    def __call__(self):
        return self.now


def test_time_limit_stops_at_the_last_step_that_fits_and_the_run_continues_exactly(fixture_zip, tmp_path,
                                                                                  monkeypatch):
    """On the limit's clock a step takes 10 s and validation 50 s: an epoch of 4 steps is 90 s.
    With 150 s the run stops inside epoch 2 after its step 3 (the fourth and the validation
    after it would end at 180 s), its resume point written although the checkpoint schedule
    (every 3 epochs) would write none there; with 95 s it stops after epoch 1 (a step more
    would end at 100 s). Run again, each ends with the uninterrupted run's weights, history
    (epoch 2's training metrics over all its steps) and snapshots (every 2 steps: one falls
    on the step after the stop)."""
    recipe = tiny_recipe(stage={"epochs": 3, "steps_per_epoch": 4, "snapshot_every_steps": 2})
    every3 = Session(tensorboard=False, checkpoint_every=3, run_eagerly=True)  # eager: no tracing per run
    fit(recipe, tmp_path / "whole", data=fixture_zip, verbose=0, session=every3)
    whole_history = read_history(tmp_path / "whole" / "stages" / "train" / "history.csv")
    snapshots = sorted(p.name for p in (tmp_path / "whole" / "stages" / "train" / "snapshots").iterdir())
    assert snapshots == [f"snapshot-s{s:06d}.keras" for s in (2, 4, 6, 8, 10, 12)]

    for limit, stopped, message in (
            (150.0, (1, 3), r"in epoch 2/3 after step 3/4 \(a step takes about 10 s, 30 s left\)"),
            (95.0, (1, 0), r"after epoch 1/3 \(a step takes about 10 s, 5 s left\)")):
        clock = FakeClock()

        class TimedSteps(resume.RunCheckpoint):  # the record the limit judges by
            def __init__(self, *args, **kwargs):
                # The stage's start (``start``) stays on the real clock, where the fake one starts too.
                super().__init__(*args, **kwargs, clock=clock)

            def on_train_batch_end(self, batch, logs=None):
                clock.now += 10.0
                super().on_train_batch_end(batch, logs)

            def on_epoch_end(self, epoch, logs=None):
                clock.now += 50.0
                super().on_epoch_end(epoch, logs)

        class LimitFromNow(time_limit.TimeLimit):
            def __init__(self, deadline, *args, **kwargs):
                super().__init__(deadline, *args, **kwargs)
                clock.now = deadline - limit  # the limit's seconds, whatever setting up the run took

        run = tmp_path / f"limited-{limit:.0f}"
        with monkeypatch.context() as patch, pytest.raises(
                train.TimeLimitReached, match=rf"^Stage 'train': stopped at the time limit {message}, its checkpoint "
                                              r"written$"):
            patch.setattr(resume, "RunCheckpoint", TimedSteps)
            patch.setattr(time_limit, "TimeLimit", LimitFromNow)
            fit(recipe, run, data=fixture_zip, verbose=0, session=every3, stop_by=time.time() + limit)
        state = json.loads((run / "state.json").read_text())
        assert (state["epochs_done"], state.get("steps_done", 0)) == stopped
        assert state["checkpoint"] == runs.checkpoint_name(0, *stopped) and (run / state["checkpoint"]).exists()
        assert [p.name for p in run.glob("checkpoint-*")] == [state["checkpoint"]]
        assert state["step_seconds"] == pytest.approx(10.0) and state["tail_seconds"] == pytest.approx(50.0)
        assert ("metrics" in state) == bool(stopped[1])  # the training metrics' totals so far in epoch 2
        assert not (run / "results.json").exists() and not (run / "model.keras").exists()
        assert [int(r["epoch"]) for r in read_history(run / "stages" / "train" / "history.csv")] == [0]
        log = (run / "train.log").read_text()
        assert "stopped at the time limit" in log and "continues from there when started again" in log
        session = json.loads((run / "run.json").read_text())["sessions"][-1]
        assert session["stop_reason"].startswith("Stage 'train': stopped at the time limit")

        fit(recipe, run, data=fixture_zip, verbose=0, session=every3)
        history = read_history(run / "stages" / "train" / "history.csv")
        assert [int(r["epoch"]) for r in history] == [0, 1, 2]
        for resumed_row, whole_row in zip(history, whole_history):
            assert resumed_row.keys() == whole_row.keys()
            for key in whole_row:
                assert float(resumed_row[key]) == pytest.approx(float(whole_row[key]), rel=1e-4, abs=1e-5), key
        for a, b in zip(network_weights(keras.models.load_model(run / "model.keras")),
                        network_weights(keras.models.load_model(tmp_path / "whole" / "model.keras"))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert sorted(p.name for p in (run / "stages" / "train" / "snapshots").iterdir()) == snapshots
        if stopped[1]:
            assert "(resumed in epoch 2 after step 3)" in (run / "train.log").read_text()
            assert "| resumed after step 3/4" in (run / "train.log").read_text()


def test_time_limit_starts_no_step_it_cannot_finish(fixture_zip, tmp_path):
    """A limit already passed starts nothing; a resumed stage whose previous session measured
    steps of 500 s and checkpoint writes of 200 s does not start one with 10 minutes left,
    and leaves its folder as it was."""
    recipe = tiny_recipe()
    run = tmp_path / "run"
    with pytest.raises(train.TimeLimitReached, match=r"^Stage 'train': not started, at the time limit \(0 s left\): "
                                                     r"epoch 1/3 is next$"):
        fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, stop_by=time.time() - 1.0)
    assert not (run / "state.json").exists() and not list(run.glob("checkpoint-*"))

    with pytest.raises(Interrupt):
        fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, extra_callbacks=[KillAt(epoch=1)])
    state = json.loads((run / "state.json").read_text())
    assert state["write_seconds"] > 0.0  # epoch 1's checkpoint, the one written before the kill
    assert state["step_seconds"] > 0.0 and state["tail_seconds"] > 0.0
    state.update(step_seconds=500.0, write_seconds=200.0)  # as a slower machine with a slow disk measured
    (run / "state.json").write_text(json.dumps(state))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.json"}
    with pytest.raises(train.TimeLimitReached, match=r"not started, at the time limit \(a step takes about 8 min, "
                                                     r"10 min left\): epoch 2/3 is next$"):
        fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, stop_by=time.time() + 600.0)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.json"}
    train_log = run / "train.log"
    assert {p: v for p, v in after.items() if p != train_log} == {p: v for p, v in before.items() if p != train_log}
    assert after[train_log].decode().endswith("epoch 2/3 is next; the run continues when started again\n")
    assert state["timed_on"] == time_limit.timed_on(EAGER.resolve()) and provenance.this_machine() in state["timed_on"]
    state["timed_on"] = "NVIDIA H100 80GB HBM3; jax; XLA on"  # timed elsewhere: no estimate here, the epoch starts
    (run / "state.json").write_text(json.dumps(state))
    finished = fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, stop_by=time.time() + 600.0)
    assert finished["runs"][0]["epochs"] == 3 and not (run / "state.json").exists()


def test_a_resume_point_s_step_is_read_alike_by_the_checkpoint_and_the_deadline(tmp_path):
    """A ``state.json`` written at an epoch's end by an older version holds only the mean
    epoch (3,000 s of 3,125 steps: 0.96 s a step); a newer one, written inside an epoch,
    holds its mean step. ``RunCheckpoint`` (before a step of its own) and ``Deadline`` read
    the same step from each, and only where it was timed as this session runs."""
    timing = "AMD EPYC, 2 cores; tensorflow; XLA off, 1 step per execution"
    older = {"epochs_done": 2, "epoch_seconds": 3000.0, "timed_on": timing}
    inside = {"epochs_done": 4, "steps_done": 936, "step_seconds": 1.094, "epoch_seconds": 3498.0,
              "tail_seconds": 92.0, "write_seconds": 6.4, "timed_on": timing}
    assert runs.resumed_inside(older) is None and runs.resumed_inside(None) is None
    assert runs.resumed_inside(inside) == (4, 936)
    assert [runs.steps_before((4, 936), epoch) for epoch in (3, 4, 5)] == [0, 936, 0]
    assert runs.steps_before(None, 4) == 0
    assert runs.recorded_step_seconds(older, 3125) == pytest.approx(0.96)
    assert runs.recorded_step_seconds(inside, 3125) == 1.094
    assert runs.recorded_step_seconds({"epochs_done": 1}, 3125) is None
    assert runs.timed_here(inside, timing) and not runs.timed_here(inside, "NVIDIA H100 80GB HBM3; jax; XLA on")
    assert not runs.timed_here(None, timing) and not runs.timed_here({"epochs_done": 4}, None)

    def checkpoint_step(point, timed_on):
        return resume.RunCheckpoint(folder=None, stage_index=0, stage_name="train", epochs=15, timed_on=timed_on,
                                    steps_per_epoch=3125, point=point).step_seconds()

    assert checkpoint_step(older, timing) == pytest.approx(0.96)
    assert checkpoint_step(inside, timing) == 1.094
    assert checkpoint_step(inside, "NVIDIA H100 80GB HBM3; jax; XLA on") is None

    recipe = tiny_recipe(stage=dict(epochs=15, batch_size=32, steps_per_epoch=3125))
    deadline = time_limit.Deadline(time.time() + 0.4, str(tmp_path))  # under a second left: no step fits
    for point, step in ((older, "0.96 s"), (inside, "1.1 s")):
        where = "epoch 3/15" if point is older else "epoch 5/15, step 937/3,125"
        with pytest.raises(train.TimeLimitReached, match=rf"^Stage 'train': not started, at the time limit \(a step "
                                                         rf"takes about {re.escape(step)}, 0 s left\): {where} is next$"):
            deadline.check_stage(recipe, 0, point, {"runs": []}, 100_000, timing)
    # 5 s left: the step and the checkpoint write recorded here (1.1 + 6.4 s) do not fit; a
    # point timed elsewhere gives no estimate, and the step starts.
    deadline = time_limit.Deadline(time.time() + 5.0, str(tmp_path))
    with pytest.raises(train.TimeLimitReached, match=r"a step takes about 1\.1 s, \d s left\): epoch 5/15, step 937"):
        deadline.check_stage(recipe, 0, inside, {"runs": []}, 100_000, timing)
    deadline.check_stage(recipe, 0, dict(inside, timed_on="NVIDIA H100 80GB HBM3; jax; XLA on"), {"runs": []},
                         100_000, timing)


def test_a_damaged_resume_checkpoint_is_one_line_that_says_what_to_do(fixture_zip, tmp_path):
    """A checkpoint damaged outside the engine (a disk, a hand): the run refuses to resume in
    one line naming it and what to do; removing state.json as it says trains the stage again."""
    recipe = tiny_recipe()
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, extra_callbacks=[KillAt(epoch=1)])
    checkpoint = run / json.loads((run / "state.json").read_text())["checkpoint"]
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(runs.RunFolderError) as error:
        fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0)
    message = str(error.value)
    assert message.startswith(f"{checkpoint}: the resume checkpoint cannot be read (")
    assert message.endswith(f"); remove {run / 'state.json'} to train stage 'train' again from its first epoch, or "
                            "pass --overwrite to start the run again")
    (run / "state.json").unlink()
    finished = fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0)
    assert finished["runs"][0]["epochs"] == 3
    assert [int(r["epoch"]) for r in read_history(run / "stages" / "train" / "history.csv")] == [0, 1, 2]


def test_time_limit_stops_at_the_last_step_that_fits_and_leaves_early_stopping_alone():
    """The stop rule on a fake clock, judged from a real ``RunCheckpoint``'s record: epochs of
    4 steps of 20 s and 20 s of validation after them (100 s), checkpoints that take
    ``write_seconds`` (written every ``every`` epochs and at the stage's last). The next step,
    its validation where it ends an epoch, and one checkpoint write must fit."""
    class FakeWrites(resume.RunCheckpoint):
        def __init__(self, epochs, every, write_seconds, clock):
            super().__init__(folder=None, stage_index=0, stage_name="train", epochs=epochs, every=every, clock=clock,
                             steps_per_epoch=4)
            self.write_seconds, self.written = write_seconds, []

        def _save(self, epochs_done, steps_done):
            self.clock.now += self.write_seconds
            self.written.append((epochs_done, steps_done))

    def run(epochs, deadline, stop_early_at=None, write_seconds=0.0, every=100):
        clock, model = FakeClock(), keras.Sequential()
        clock.now = 0.0
        checkpoint = FakeWrites(epochs, every, write_seconds, clock)
        limit = time_limit.TimeLimit(deadline, checkpoint, epochs)
        for callback in (checkpoint, limit):
            callback.set_model(model)
        model.stop_training = False
        try:
            for epoch in range(epochs):
                checkpoint.on_epoch_begin(epoch)
                for step in range(4):
                    clock.now += 20.0
                    checkpoint.on_train_batch_end(step)
                    limit.on_train_batch_end(step)
                clock.now += 20.0  # validation
                model.stop_training = epoch == stop_early_at
                checkpoint.on_epoch_end(epoch)
                limit.on_epoch_end(epoch)
                if model.stop_training:
                    break
        except time_limit.StopInsideEpoch as stop:
            assert str(stop) == limit.message("train")
        return limit.stopped_at, checkpoint.written

    # Epoch 4 starts at 300 s; its third step would end at 360 s: the stop writes the second's, off schedule.
    assert run(10, 350.0) == ((3, 2), [(3, 2)])
    assert run(10, 400.0) == ((4, 0), [(4, 0)])  # the fourth epoch, ending at exactly 400 s, runs
    assert run(10, 399.0) == ((3, 3), [(3, 3)])  # its last step and validation would end at 400 s
    assert run(10, 10_000.0) == (None, [(10, 0)])  # the stage's end writes its checkpoint
    assert run(1, 50.0) == ((0, 2), [(0, 2)])  # also inside the stage's last epoch
    assert run(1, 100.0) == (None, [(1, 0)])  # whose end is the stage's, however late
    assert run(10, 350.0, stop_early_at=1) == (None, [])  # early stopping ended it first
    # 10 s writes after every epoch: epoch k ends at 110k s with its checkpoint. The fourth
    # epoch's last step (from 390 s) runs with 445 s left; after it, one more step and a write
    # (470 s) do not fit: the stop writes nothing more. With 435 s, it stops before that step.
    assert run(10, 445.0, write_seconds=10.0, every=1) == ((4, 0), [(1, 0), (2, 0), (3, 0), (4, 0)])
    assert run(10, 435.0, write_seconds=10.0, every=1) == ((3, 3), [(1, 0), (2, 0), (3, 0), (3, 3)])


def test_resumed_run_keeps_reduce_lr_on_plateau_and_early_stopping_state(fixture_zip, tmp_path):
    """Stopping is now routine (--time-limit), so a stage with ReduceLROnPlateau and
    EarlyStopping (paper 4's model 2) must resume with their waits and best values. Killed in
    the first epoch whose validation loss is worse than an earlier one (which epoch that is
    depends on the CPU's arithmetic), the resumed run must reduce the rate there and stop
    early where the uninterrupted run does: without the saved best values, that epoch would
    count as an improvement."""
    recipe = tiny_recipe(stage={"epochs": 8, "schedule": None,
                                "reduce_lr_on_plateau": {"monitor": "val_loss", "factor": 0.5, "patience": 1},
                                "early_stopping": {"monitor": "val_loss", "patience": 3}})
    whole = fit(recipe, tmp_path / "whole", data=fixture_zip, session=EAGER, verbose=0)
    expected = read_history(tmp_path / "whole" / "stages" / "train" / "history.csv")
    rates = [float(r["learning_rate"]) for r in expected]
    losses = [float(r["val_loss"]) for r in expected]
    worse = [e for e in range(1, len(losses) - 1) if losses[e] > min(losses[:e])]
    assert worse, losses  # lr 0.1 on 12 images: the loss does not fall every epoch
    kill = worse[0]
    assert rates[kill + 1] < rates[kill]  # the plateau acted on that epoch's loss
    assert whole["runs"][0]["epochs"] < 8  # early stopping ended it
    run = tmp_path / "killed"
    with pytest.raises(Interrupt):
        fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, extra_callbacks=[KillAt(epoch=kill)])
    resumed = fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0)
    got = read_history(run / "stages" / "train" / "history.csv")
    assert [float(r["learning_rate"]) for r in got] == rates
    np.testing.assert_allclose([float(r["val_loss"]) for r in got], losses, rtol=1e-5)
    assert resumed["runs"][0]["epochs"] == whole["runs"][0]["epochs"]
    for a, b in zip(network_weights(keras.models.load_model(run / "model.keras")),
                    network_weights(keras.models.load_model(tmp_path / "whole" / "model.keras"))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_multi_worker_strategy_is_refused_with_its_reason():
    with pytest.raises(ValueError, match="'multi_worker' is not supported: Keras 3's TensorFlow trainer cannot fit"):
        strategy.make_strategy("multi_worker")


def test_time_limit_is_refused_with_multi_worker(tmp_path):
    with pytest.raises(ValueError, match="time limit .* not supported with strategy 'multi_worker'"):
        fit(tiny_recipe(), tmp_path / "run", data=None, verbose=0, strategy="multi_worker", stop_by=time.time() + 60)
    assert not (tmp_path / "run").exists()


def test_training_stream_runs_without_the_autotune_thread_and_gives_the_same_batches():
    """Deleting an iterator waits for tf.data's autotuning thread (up to 60 s when a stage
    ends, TensorFlow 2.21): the engine's training stream runs without it, with the same
    batches as ``make_dataset``'s."""
    from tiny_keras.data import DecodedSplit, make_dataset, official_classes

    n = 40
    images = np.arange(n * 2 * 2 * 3, dtype=np.int64).reshape(n, 2, 2, 3).astype(np.uint8)
    split = DecodedSplit("train", images, np.arange(n, dtype=np.int32) % 7, np.full((n, 4), -1, np.int32),
                         np.zeros(n, bool), [str(i) for i in range(n)], official_classes())
    stream = inputs.train_input(strategy.make_strategy("default"), split, 8, seed=5, skip_batches=3)
    assert stream.options().autotune.enabled is False
    assert make_dataset(split, batch_size=8, training=True, seed=5, repeat=True).options().autotune.enabled is not False
    reference = make_dataset(split, batch_size=8, training=True, seed=5, repeat=True, skip_batches=3)
    for (a, la), (b, lb) in zip(stream.take(12), reference.take(12)):  # across two epoch ends
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(la.numpy(), lb.numpy())


def test_time_limit_judges_a_new_stage_by_the_stage_before_it_scaled_by_its_pixels(fixture_zip, tmp_path):
    """Stage 1 (32 px) done at 4,000 s an epoch: stage 2 (64 px, the same images an epoch, half
    the batch, 4 steps) should take 16,000 s an epoch, 4,000 s a step, so it does not start
    with an hour left, and it does with two."""
    class StopAtStage2(keras.callbacks.Callback):
        stages = 0

        def on_train_begin(self, logs=None):
            self.stages += 1
            if self.stages == 2:
                raise Interrupt("killed as stage 2 starts")

    recipe = tiny_recipe(stages=[
        Stage(name="32px", epochs=2, batch_size=4, steps_per_epoch=2, image_size=32),
        Stage(name="64px", epochs=2, batch_size=2, steps_per_epoch=4, image_size=64),
    ])
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, extra_callbacks=[StopAtStage2()])
    progress = json.loads((run / "progress.json").read_text())
    assert [r["stage"] for r in progress["runs"]] == ["32px"]
    progress["runs"][0]["seconds"] = 8000.0  # two epochs of 4,000 s, as a slow machine measured
    (run / "progress.json").write_text(json.dumps(progress))
    timing = time_limit.timed_on(EAGER.resolve())  # as the engine passes it
    assert time_limit.new_stage_epoch_seconds(recipe, 1, progress, 12, timing) == pytest.approx(16000.0)
    assert time_limit.new_stage_epoch_seconds(recipe, 0, progress, 12, timing) is None
    elsewhere = {"runs": [dict(progress["runs"][0], timed_on="NVIDIA H100 80GB HBM3; jax; XLA on")]}
    assert time_limit.new_stage_epoch_seconds(recipe, 1, elsewhere, 12, timing) is None  # not for this machine
    with pytest.raises(train.TimeLimitReached, match=r"^Stage '64px': not started, at the time limit \(a step takes "
                                                     r"about 67 min, 60 min left\): epoch 1/2 is next$"):
        fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, stop_by=time.time() + 3600.0)
    assert not list(run.glob("checkpoint-1-*.keras"))  # no epoch of stage 2 ran
    result = fit(recipe, run, data=fixture_zip, session=EAGER, verbose=0, stop_by=time.time() + 7200.0)
    assert [(r["stage"], r["epochs"]) for r in result["runs"]] == [("32px", 2), ("64px", 2)]


def test_callback_state_is_restored_by_class_and_order_not_by_position(tmp_path):
    """A resume point's callback state, saved as ``"index:Class"``, goes back to the callbacks
    of that class in order: a callback added ahead of them (a task's) shifts none."""
    from tiny_keras import callbacks as cbs

    plateau = keras.callbacks.ReduceLROnPlateau(patience=3)
    plateau.wait, plateau.best = 2, 4.5
    first, second = (cbs.BestCheckpoint(str(tmp_path / f"{i}.weights.h5"), monitor="val_top1", mode="max")
                     for i in range(2))
    first.best, second.best = 0.25, 0.5
    state = resume.callback_state([plateau, keras.callbacks.TerminateOnNaN(), first, second])
    assert set(state) == {"0:ReduceLROnPlateau", "2:BestCheckpoint", "3:BestCheckpoint"}
    state = json.loads(json.dumps(state))  # as state.json holds it
    again = [keras.callbacks.CSVLogger(str(tmp_path / "h.csv")), keras.callbacks.ReduceLROnPlateau(patience=3),
             cbs.BestCheckpoint(str(tmp_path / "a.weights.h5"), monitor="val_top1", mode="max"),
             cbs.BestCheckpoint(str(tmp_path / "b.weights.h5"), monitor="val_top1", mode="max")]
    resume.restore_callback_state(again, state)
    assert (again[1].wait, again[1].best, again[2].best, again[3].best) == (2, 4.5, 0.25, 0.5)


def test_epoch_line_of_a_classifier_and_of_the_localiser():
    """The epoch line: a classifier's metrics in their order, then any other held-out score
    (the localiser's), fractions of the image's boxes in percent like accuracies."""
    classifier = {"top5": 0.3, "loss": 4.2423, "top1": 0.109, "val_top1": 0.12, "val_loss": 4.0, "val_top5": 0.31,
                  "learning_rate": 1e-3}
    assert engine_log.format_epoch("train", 3, 15, classifier, 2041.2, 190.4) == (
        "stage 'train' epoch 3/15: loss 4.2423 top1 10.90% top5 30.00% | val_loss 4.0000 val_top1 12.00% "
        "val_top5 31.00% | lr 0.001 | 2,041 images/s | 190 s")
    localiser = {"loss": 2.2, "val_loss": 2.6, "learning_rate": 5e-4, "val_mean_iou": 0.6238, "val_corloc": 0.72}
    assert engine_log.format_epoch("train", 17, 100, localiser, 193.0, 2.4) == (
        "stage 'train' epoch 17/100: loss 2.2000 | val_loss 2.6000 val_mean_iou 62.38% val_corloc 72.00% | "
        "lr 0.0005 | 193 images/s | 2 s")
