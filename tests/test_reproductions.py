"""Every reproduction script runs end to end with --smoke on the fixture dataset."""
import importlib
import json
import os
import re

import keras
import numpy as np
import pytest

from conftest import REPO, run_script

importlib.import_module("tiny_keras")  # registers the layers saved models use

ROW_KEYS = {"model", "stage", "epochs", "val_top1", "val_top5", "paper_val_top1", "seconds"}

# script, extra flags, expected (run, stage) rows, ensembles
CASES = {
    "paper1": ("paper1_progressive_resnet.py", [],
               [("resnet", s) for s in ("32px", "40px", "48px", "54px", "64px", "clr")]),
    "paper2": ("paper2_resnet_inception.py", ["--model", "resnet18", "--model", "inception_resnet"],
               [("resnet18", "train"), ("inception_resnet", "train")]),
    "paper3": ("paper3_vgg.py", [],
               [("vgg_z", "train"), ("vgg_f", "train"), ("vgg_y", "train"), ("ensemble of 3 VGGs", "ensemble")]),
    # model5's default is the ImageNet weights: --smoke must not download them (no network here).
    "paper4": ("paper4_cnn_transfer.py", ["--model", "model2", "--model", "model5"],
               [("model2", "train"), ("model5", "train")]),
    "paper5": ("paper5_caffe_cnn.py", [],
               [("cnn8", "lambda_1e-3"), ("cnn8", "train"), ("cnn8", "fine_tune"), ("cnn8_b", "lambda_1e-3"),
                ("cnn8_b", "train"), ("cnn8_c", "lambda_1e-3"), ("cnn8_c", "train"),
                ("ensemble of 3", "ensemble"), ("ensemble of 9 snapshots", "ensemble")]),
}
PAPER_TOP1 = {("paper1", "clr"): 62.57, ("paper2", "inception_resnet"): 62.44, ("paper4", "model2"): 22.72,
              ("paper5", "ensemble of 3"): 43.1}


@pytest.mark.slow
@pytest.mark.parametrize("paper", sorted(CASES))
def test_smoke_run_writes_valid_results(paper, fixture_zip, tmp_path):
    script, flags, expected = CASES[paper]
    workdir = tmp_path / paper
    out = run_script(script, "--data", fixture_zip, "--workdir", workdir, "--smoke", *flags)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["paper"] == paper and results["smoke"] is True
    assert [(r["model"], r["stage"]) for r in results["runs"]] == expected
    for row in results["runs"]:
        assert ROW_KEYS <= set(row)
        assert 0.0 <= row["val_top1"] <= row["val_top5"] <= 100.0
    for (p, model), value in PAPER_TOP1.items():
        if p == paper:
            row = [r for r in results["runs"] if model in (r["model"], r["stage"])][-1]
            assert row["paper_val_top1"] == value
    runs = {r["model"] for r in results["runs"] if r["stage"] != "ensemble"}
    assert set(results["recipe"]) == runs
    # Every run leaves a real 200-class model that loads and predicts on 64x64 images.
    for run in runs:
        model = keras.models.load_model(workdir / run / "model.keras")
        logits = model.predict(np.zeros((2, 64, 64, 3), np.float32), verbose=0)
        assert logits.shape == (2, 200) and np.isfinite(logits).all()
    if paper == "paper4":
        assert "--smoke: paper4_model5 built with {'weights': None} (random initial weights, no download" in out.stdout
        assert results["recipe"]["model5"]["model_options"]["weights"] is None
    # TensorFlow's start-up notices are held back (TF_CPP_MIN_LOG_LEVEL=2, the scripts' default).
    for notice in ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard", "cudart_stub"):
        assert notice not in out.stderr
    # stdout is not a terminal here: one line per epoch, no progress bars.
    assert "━" not in out.stdout and "' epoch 1/1: loss " in out.stdout
    # The printed table puts the paper's figure beside ours.
    assert "paper top-1" in out.stdout and (workdir / "results.txt").read_text().splitlines()[0] in out.stdout


def test_every_paper_and_study_has_its_recipes_in_the_package():
    """tiny_keras.recipes holds every paper's and study's recipes; each script of
    reproductions/ is one call that runs them."""
    from tiny_keras import recipes
    from tiny_keras.recipe import Recipe

    for name in [*recipes.PAPERS, *recipes.STUDIES]:
        module = recipes.get(name)
        assert module.__name__ == f"tiny_keras.recipes.{name}" and module.__doc__.startswith("Paper ")
        assert module.RECIPES and all(isinstance(r, Recipe) for r in module.RECIPES.values()), name
        assert set(module.DEFAULT_RUNS or ()) <= set(module.RECIPES), name
        for ensemble in module.ENSEMBLES:
            assert set(ensemble.members) <= set(module.RECIPES), (name, ensemble.name)
        if name in recipes.PAPERS:
            assert {r.paper for r in module.RECIPES.values()} == {name}
    scripts = sorted(p.name for p in (REPO / "reproductions").glob("*.py"))
    assert sorted(f"{e.script}.py" for e in {**recipes.PAPERS, **recipes.STUDIES}.values()) == scripts
    for script in scripts:
        text = (REPO / "reproductions" / script).read_text()
        assert f'reproduce.run_paper("{recipes.by_script(script)}")' in text and "sys.path" not in text, script
    with pytest.raises(ValueError, match=r"expected a paper \(paper1, paper2, paper3, paper4, paper5\) or a study "
                                         r"\(paper2_studies, paper5_studies, paper2_localization\). Received: name='paper6'"):
        recipes.get("paper6")
    with pytest.raises(ValueError, match="no recipes are run by the script 'paper6.py': expected one of "
                                         "paper1_progressive_resnet.py"):
        recipes.by_script("paper6.py")


def test_module_command_line_names_the_papers(capsys):
    """python -m tiny_keras.reproduce PAPER [flags]: a paper first, then its script's flags."""
    from tiny_keras import reproduce

    for argv, status in (([], 2), (["paper6", "--smoke"], 2), (["--help"], 0)):
        with pytest.raises(SystemExit) as exit_info:
            reproduce.command_line(argv)
        assert exit_info.value.code == status, argv
        out = capsys.readouterr()
        assert "usage: python -m tiny_keras.reproduce {paper1,paper2,paper3,paper4,paper5,paper2_studies," \
               "paper5_studies,paper2_localization} [flags]" in out.out + out.err
    with pytest.raises(SystemExit):
        reproduce.command_line(["paper6"])
    assert "error: expected a paper or study first, one of paper1, paper2, paper3, paper4, paper5, " \
           "paper2_studies, paper5_studies, paper2_localization. Received: 'paper6'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the paper's own parser: paper 5's flags, its runs
        reproduce.command_line(["paper5", "--model", "cnn8_b", "--pool-strides", "3"])
    assert exit_info.value.code == 2 and "--pool-strides: invalid choice: 3" in capsys.readouterr().err


def test_smoke_uses_every_class_with_few_images():
    from tiny_keras import reproduce
    from tiny_keras.recipes import paper1

    recipe = reproduce.smoke_recipe(paper1.recipe())
    assert recipe.classes is None and recipe.per_class == 2 and recipe.val_per_class == 1
    assert all(s.epochs == 1 and s.steps_per_epoch == 2 and s.batch_size == 4 for s in recipe.stages)
    parser = reproduce.build_parser("x", ["resnet"])
    smoke = reproduce.session_from_flags(parser.parse_args(["--smoke"]))
    assert recipe.num_classes == 200 and smoke.run_eagerly  # two steps: compiling would cost more
    assert not reproduce.session_from_flags(parser.parse_args(["--smoke", "--xla"])).run_eagerly
    full = paper1.recipe()
    assert [s.epochs for s in full.stages] == [145, 100, 100, 65, 50, 16]
    # Stages 3-5 keep the 40px stage's configuration but for lr and size (section IV).
    assert [s.batch_size for s in full.stages] == [128, 70, 70, 70, 70, 128]
    assert [s.restore_best for s in full.stages] == [False, True, True, True, True, False]
    assert [s.optimizer["learning_rate"] for s in full.stages] == [0.1, 0.01, 0.1, 0.1, 0.1, 0.1]
    other = paper1.recipe(later_batch_size=128, keep_best=False)
    assert [(s.batch_size, s.restore_best) for s in other.stages[2:5]] == [(128, False)] * 3
    assert full.stages[-1].schedule == {"name": "cyclic", "base_lr": 0.001, "max_lr": 0.1, "step_size": 782,
                                        "mode": "triangular"}


def test_flags_override_every_stage(tmp_path):
    from tiny_keras import reproduce
    from tiny_keras.recipes import paper1

    parser = reproduce.build_parser("x", ["resnet"])
    args = parser.parse_args(["--epochs", "3", "--batch-size", "16", "--seed", "7", "--mixed-precision",
                              "--xla", "--strategy", "mirrored", "--tensorboard-histograms", "2"])
    recipe, session = reproduce.apply_flags(paper1.recipe(), args), reproduce.session_from_flags(args)
    assert {s.epochs for s in recipe.stages} == {3} and {s.batch_size for s in recipe.stages} == {16}
    assert recipe.seed == 7 and recipe.precision == "mixed_float16" and session.jit_compile is True
    assert session.strategy == "mirrored" and session.tensorboard_histograms == 2
    assert (session.steps_per_execution, paper1.recipe().precision) == ("auto", "auto")  # the run decides
    args = parser.parse_args(["--precision", "mixed_bfloat16", "--no-xla", "--steps-per-execution", "8"])
    recipe, session = reproduce.apply_flags(paper1.recipe(), args), reproduce.session_from_flags(args)
    assert (recipe.precision, session.jit_compile, session.steps_per_execution) == ("mixed_bfloat16", False, 8)
    with pytest.raises(SystemExit):
        parser.parse_args(["--xla", "--no-xla"])
    with pytest.raises(SystemExit, match="mixed_float16"):
        reproduce.apply_flags(paper1.recipe(), parser.parse_args(["--mixed-precision", "--precision", "float32"]))


def _script(name):
    """The recipes module that ``reproductions/<name>.py`` runs."""
    from tiny_keras import recipes

    return recipes.get(recipes.by_script(name))


def test_paper2_flips_half_the_images_and_subtracts_the_mean_image():
    import tensorflow as tf

    from tiny_keras import augment

    paper2 = _script("paper2_resnet_inception")
    chain = augment.deserialize(paper2.augmentation())
    flips = [i for i, t in enumerate(chain.transforms)
             if isinstance(getattr(t, "transform", t), augment.RandomFlip)]
    assert flips == [0]
    # A batch of images bright on the left: count how many come out bright on the right.
    images = np.zeros((4000, 8, 8, 3), np.float32)
    images[:, :, :4] = 255.0
    out = chain.transforms[0](tf.constant(images), tf.constant([3, 4])).numpy()
    flipped = (out[:, :, 4:].mean(axis=(1, 2, 3)) == 255.0).mean()
    assert abs(flipped - 0.5) < 0.025, flipped  # RandomApply(RandomFlip, 0.5) gave 0.25
    for name, recipe in paper2.RECIPES.items():
        assert recipe.preprocessing == {"mean_image": True}, name


def test_paper2_flags_give_the_other_readings():
    from tiny_keras import models, reproduce

    paper2 = _script("paper2_resnet_inception")
    parser = reproduce.build_parser("x", list(paper2.RECIPES), extra=paper2.extra_flags)
    args = parser.parse_args(["--no-mean-image", "--resnet-downsample-first-stage"])
    recipes = paper2.configure(dict(paper2.RECIPES), args)
    assert recipes["resnet18"].model_options == {"downsample_first_stage": True}
    assert recipes["vgg16"].model_options == {} and recipes["vgg16"].preprocessing == {}
    default = models.build("paper2_resnet18", filters=(8, 8, 8, 8))
    literal = models.build("paper2_resnet18", filters=(8, 8, 8, 8), **recipes["resnet18"].model_options)
    assert default.get_layer("avg_pool").input.shape[1] == 7 and literal.get_layer("avg_pool").input.shape[1] == 4


def test_paper5_lambda_history_and_snapshots():
    """Sections 5.3, 5.4 and 7: 40,000 iterations at lambda 1e-3, then 30,000 at the model's
    own lambda (lr 1e-3, then 1e-4 for the last 10,000), snapshots 10,000 iterations apart,
    all taken at the model's own lambda; the best model then fine-tunes at 5e-6."""
    from tiny_keras import schedules

    paper5 = _script("paper5_caffe_cnn")
    recipes = paper5.recipes()
    for name, wd in (("cnn8", 5e-4), ("cnn8_b", 3e-4), ("cnn8_c", 1e-4)):
        first, train = recipes[name].stages[:2]
        assert (first.name, first.weight_decay, first.epochs * first.steps_per_epoch) == ("lambda_1e-3", 1e-3, 40_000)
        assert first.optimizer == {"name": "sgd", "learning_rate": 1e-3, "momentum": 0.9} and first.schedule is None
        assert (train.name, train.weight_decay, train.epochs * train.steps_per_epoch) == ("train", wd, 30_000)
        assert train.snapshot_every_epochs * train.steps_per_epoch == 10_000
        assert first.snapshot_every_epochs is None
        lr = schedules.make_schedule(train.schedule, 1e-3, train.steps_per_epoch)
        assert [lr(step) for step in (0, 19_999, 20_000, 29_999)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert [(s.name, s.optimizer["learning_rate"], s.weight_decay, s.epochs) for s in recipes["cnn8"].stages[2:]] == [
        ("fine_tune", 5e-6, 1e-4, 5)]
    for baseline in ("shallow", "cnn5"):
        (stage,) = recipes[baseline].stages
        assert (stage.epochs, stage.steps_per_epoch, stage.weight_decay) == (30, None, None)
    scratch = paper5.recipes(history="scratch")["cnn8_b"].stages
    assert [(s.name, s.weight_decay, s.epochs, s.snapshot_every_epochs) for s in scratch] == [("train", 3e-4, 30, 10)]


def test_paper5_fine_tune_flag_gives_the_paper_epochs_reading():
    """Section 4.2's "another 5 epochs" of fine-tuning: 5 passes over the 100,000 training
    images by default, or with --fine-tune paper_epochs 5 of the paper's epochs of 2 million
    pre-augmented images (15,625 iterations each at batch 128), in epochs of 1,000."""
    from tiny_keras import reproduce

    paper5 = _script("paper5_caffe_cnn")
    parser = reproduce.build_parser("x", list(paper5.RECIPES), extra=paper5.extra_flags)
    default = paper5.configure({}, parser.parse_args([]))["cnn8"].stages[-1]
    assert (default.epochs, default.steps_per_epoch, default.steps(100_000)) == (5, None, 781)
    longer = paper5.configure({}, parser.parse_args(["--fine-tune", "paper_epochs"]))
    stage = longer["cnn8"].stages[-1]
    assert (stage.name, stage.epochs * stage.steps(100_000), stage.steps_per_epoch) == ("fine_tune", 78_000, 1_000)
    assert (stage.optimizer["learning_rate"], stage.weight_decay, stage.batch_size) == (5e-6, 1e-4, 128)
    assert longer["cnn8"].stages[:2] == paper5.RECIPES["cnn8"].stages[:2]
    assert longer["cnn8_b"] == paper5.RECIPES["cnn8_b"]  # only the fine-tuned model changes
    with pytest.raises(SystemExit):  # the study has no fine-tune stage, so no such flag
        reproduce.build_parser("x", ["a", "b"], extra=_script("paper5_studies").extra_flags).parse_args(
            ["--fine-tune", "paper_epochs"])


def _readme_command(marker):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split(marker, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [part.strip() for part in block.strip().split("&&")]


def test_readme_first_command_installs_what_exists_and_passes_flags_the_script_takes():
    """The README's quick start: the install command installs with the constraints, every
    extra the README names exists, and the training command takes the script's own flags
    and reads the archive the quick start downloads."""
    import configparser
    import shlex

    from tiny_keras import reproduce
    from tiny_keras.data import tfds_builder

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    parts = _readme_command("<!-- install-command -->")
    install = shlex.split(parts[2])
    assert install == ["pip", "install", "-e", ".", "-c", "constraints.txt"]
    assert (REPO / "constraints.txt").is_file()
    extras = configparser.ConfigParser()
    extras.read(REPO / "setup.cfg")
    named = set(re.findall(r'"\.\[(\w+)\]"', readme))  # ".[gpu]", ".[jax]" ...
    assert {"gpu", "jax", "test"} <= named <= set(extras["options.extras_require"])
    (command,) = _readme_command("<!-- reproduce-command -->")
    run = shlex.split(command)
    assert run[0] == "python" and run[1].startswith("reproductions/")
    script = _script(os.path.basename(run[1])[:-3])
    parser = reproduce.build_parser("x", list(script.RECIPES), extra=getattr(script, "extra_flags", None))
    args = parser.parse_args(run[2:])  # exits (fails the test) on a flag the script does not take
    assert f"curl -LO {tfds_builder.DEFAULT_URL}" in readme  # the quick start gets the data it reads
    assert args.data == os.path.basename(tfds_builder.DEFAULT_URL) == "tiny-imagenet-200.zip"


def test_readme_test_command_uses_the_constraints():
    parts = _readme_command("<!-- test-command -->")
    assert parts[2] == 'pip install -e ".[test]" -c constraints.txt' and parts[3] == "python -m pytest -n 2"


def test_startup_notices_are_filtered_and_other_messages_kept():
    from tiny_keras import _startup

    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795434317.652195   10829 port.cc:153] oneDNN custom operations are on. You may see ...",
        "I0000 00:00:1795434317.656625   10829 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.",
        "I0000 00:00:1795434317.763108   10829 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...",
        "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, ...",
        "E0000 00:00:1795434324.450591   10829 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
        "E0000 00:00:1795434324.450591   10829 something.cc:1] a real error",
        "Traceback (most recent call last):",
    ]
    assert list(_startup._notice_filter(lines)) == lines[-2:]
    # With a driver present, a failing cuInit is news, not a notice.
    assert list(_startup._notice_filter([lines[5]])) == [lines[5]]


def test_paper4_model1_l2_flag_gives_the_other_reading():
    from tiny_keras import models, reproduce

    paper4 = _script("paper4_cnn_transfer")
    parser = reproduce.build_parser("x", list(paper4.RECIPES), extra=paper4.extra_flags)
    default = paper4.configure(None, parser.parse_args([]))["model1"]
    keras_default = paper4.configure(None, parser.parse_args(["--model1-l2", "0.01"]))["model1"]
    assert default.model_options == {"weight_decay": 0.002}  # factor 0.001, the measured reading
    assert keras_default.model_options == {"weight_decay": 0.02}  # Keras's L2() default factor 0.01
    network = models.build(default.model, **default.model_options)
    assert network.get_layer("fc1").kernel_regularizer.l2 == pytest.approx(0.001)
    # The registry's default is the recipe's reading, so models.build("paper4_model1") trains the same model.
    assert models.build("paper4_model1").get_layer("conv1").kernel_regularizer.l2 == pytest.approx(0.001)
    with pytest.raises(SystemExit) as exit_info:  # argparse's own line, status 2
        paper4.configure(None, parser.parse_args(["--model1-l2", "-1"]))
    assert exit_info.value.code == 2


def test_time_limit_flag_reads_durations_and_names_what_it_expects(capsys):
    from tiny_keras import reproduce

    parser = reproduce.build_parser("x", ["resnet"])
    for text, seconds in (("5400", 5400), ("90s", 90), ("90m", 5400), ("1.5h", 5400), ("1h30m", 5400),
                          ("2h5m10s", 7510), (" 45M ", 2700), ("0", 0)):
        assert parser.parse_args(["--time-limit", text]).time_limit == seconds, text
    assert parser.parse_args([]).time_limit is None
    for bad in ("", "soon", "-5", "1d", "m", "1h30", "5 m"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--time-limit", bad])
        assert "expected a duration such as 5400, 90s, 90m, 1.5h or 1h30m" in capsys.readouterr().err


def test_time_limit_stops_a_script_with_status_75_and_the_same_command_continues(fixture_zip, tmp_path, capsys):
    """In process: paper 4's --smoke with a limit already reached stops before its first
    epoch with exit status 75, writing no results; the same command with time left runs it."""
    from tiny_keras import reproduce

    paper4 = _script("paper4_cnn_transfer")
    argv = ["--data", str(fixture_zip), "--workdir", str(tmp_path), "--smoke", "--model", "model2", "--verbose", "0"]

    def script(*flags):
        return reproduce.main("paper4", paper4.RECIPES, paper4.__doc__, argv=argv + list(flags),
                              extra=paper4.extra_flags, configure=paper4.configure)

    with pytest.raises(SystemExit) as stopped:
        script("--time-limit", "0")
    assert stopped.value.code == reproduce.EXIT_TIME_LIMIT == 75
    err = capsys.readouterr().err
    assert (f"paper4: --time-limit reached. model2 ({tmp_path / 'model2'}): Stage 'train': not started, at the time "
            "limit (0 s left): epoch 1/1 is next.\nRun the same command to continue (exit status 75).") in err
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(SystemExit):
        script("--time-limit", "0", "--overwrite")
    assert "Run the same command without --overwrite to continue" in capsys.readouterr().err
    results = script("--time-limit", "1h")
    assert [(r["model"], r["stage"], r["epochs"]) for r in results["runs"]] == [("model2", "train", 1)]
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == results["runs"]


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "argument --batch-size: expected a whole number of at least 1. Received: '0'"),
    (["--epochs", "0"], "argument --epochs: expected a whole number of at least 1. Received: '0'"),
    (["--epochs", "2.5"], "argument --epochs: expected a whole number of at least 1. Received: '2.5'"),
    (["--steps-per-execution", "-1"], "argument --steps-per-execution: expected a whole number of at least 1"),
    (["--workdir", "{file}"], "--workdir {file}: exists and is not a folder"),
    (["--data", "{missing}"], "--data {missing}: no such file or folder; expected tiny-imagenet-200.zip"),
])
def test_bad_arguments_are_one_line_and_exit_status_2(flags, message, fixture_zip, tmp_path, capsys):
    from tiny_keras import reproduce

    (tmp_path / "a_file").write_text("not a folder")
    paths = {"file": str(tmp_path / "a_file"), "missing": str(tmp_path / "missing.zip")}
    flags, message = [f.format(**paths) for f in flags], message.format(**paths)
    paper4 = _script("paper4_cnn_transfer")
    argv = ["--data", str(fixture_zip), "--workdir", str(tmp_path / "run"), "--model", "model2", "--verbose", "0"]
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main("paper4", paper4.RECIPES, paper4.__doc__, argv=argv + flags, extra=paper4.extra_flags,
                       configure=paper4.configure)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_bad_inputs_are_one_line_and_exit_status_1_with_the_traceback_under_debug(fixture_zip, tmp_path):
    """In fresh processes, as a user runs them: an empty --data folder, and a batch whose
    activations cannot fit in memory (caught before the first step, which would crash)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    common = ["--workdir", tmp_path / "run", "--model", "model2", "--verbose", "0"]
    done = run_script("paper4_cnn_transfer.py", "--data", empty, *common)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --data {empty}: no wnids.txt") and "tiny-imagenet-200" in last, last
    debug = run_script("paper4_cnn_transfer.py", "--data", empty, *common, "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    huge = run_script("paper4_cnn_transfer.py", "--data", fixture_zip, *common[2:], "--workdir", tmp_path / "huge",
                      "--batch-size", "100000")
    assert huge.returncode == 1 and "Traceback" not in huge.stderr, huge.stderr[-2000:]
    assert re.search(r"error: stage 'train': a batch of 100,000 images needs at least [\d,.]+ GiB for its "
                     r"activations, and this machine has [\d,.]+ GiB available; pass a smaller --batch-size",
                     huge.stderr.strip().splitlines()[-1])


def test_a_strategy_for_another_backend_is_one_line_before_anything_is_written(fixture_zip, tmp_path, capsys):
    """On TensorFlow, --strategy data_parallel (keras.distribution's, JAX only) ends the
    script with status 1 and one line naming the backend, before the run folder is made."""
    from tiny_keras import reproduce

    paper4 = _script("paper4_cnn_transfer")
    argv = ["--data", str(fixture_zip), "--workdir", str(tmp_path), "--smoke", "--model", "model2", "--verbose", "0",
            "--strategy", "data_parallel"]
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main("paper4", paper4.RECIPES, paper4.__doc__, argv=argv, extra=paper4.extra_flags,
                       configure=paper4.configure)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "error: strategy 'data_parallel' is keras.distribution's and needs the JAX backend; this process runs "
        "tensorflow; on TensorFlow use mirrored")
    assert not (tmp_path / "model2").exists()


def test_activation_bytes_count_every_layer_output_for_the_batch():
    from tiny_keras import models
    from tiny_keras.engine import model as train

    inputs = keras.Input((8, 8, 3))                             # 8*8*3 = 192
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)       # 8*8*4 = 256
    x = keras.layers.MaxPooling2D()(x)                          # 4*4*4 = 64
    x = keras.layers.Flatten()(x)                               # 64
    outputs = keras.layers.Dense(10)(x)                         # 10
    classifier = models.ImageClassifier(keras.Model(inputs, outputs))  # split: flatten + dense head
    assert classifier.pooler.name.startswith("flatten") and classifier.classifier.units == 10
    assert train.activation_bytes(classifier, 5) == 2 * 4 * 5 * (192 + 256 + 64 + 64 + 10)
    from tiny_keras.recipe import Stage

    stage = Stage(epochs=1, batch_size=10**6, optimizer={"name": "sgd", "learning_rate": 0.1})
    with pytest.raises(train.BatchTooLarge, match="a batch of 1,000,000 images needs at least 4.4 GiB"):
        train.check_batch_fits(classifier, stage, available=2**30)
    train.check_batch_fits(classifier, stage, available=5 * 2**30)
    train.check_batch_fits(classifier, stage, available=None)  # unknown memory: no check


@pytest.mark.parametrize("script, flags, message", [
    ("paper4_cnn_transfer", ["--seed", "-1"], "argument --seed: expected a whole number from 0 to 4294967295. "
                                              "Received: '-1'"),
    ("paper4_cnn_transfer", ["--seed", str(2**32)], "argument --seed: expected a whole number from 0 to 4294967295"),
    ("paper4_cnn_transfer", ["--tensorboard-histograms", "-1"],
     "argument --tensorboard-histograms: expected a whole number of at least 0 (0: off). Received: '-1'"),
    ("paper4_cnn_transfer", ["--precision", "float32", "--mixed-precision"],
     "error: --mixed-precision means --precision mixed_float16, not float32"),
    ("paper4_cnn_transfer", ["--model", "model5", "--weights", "{missing}"],
     'argument --weights: expected "imagenet", "none" or a weights file; {missing}: no such file'),
    ("paper1_progressive_resnet", ["--first-lr", "-1"], "argument --first-lr: expected a number above 0. "
                                                        "Received: '-1'"),
    ("paper1_progressive_resnet", ["--dropout", "2"],
     "argument --dropout: expected a number from 0 up to (not including) 1. Received: '2'"),
    ("paper1_progressive_resnet", ["--later-batch-size", "0"],
     "argument --later-batch-size: expected a whole number of at least 1. Received: '0'"),
    ("paper2_localization", ["--alpha", "-1"], "argument --alpha: expected a number above 0. Received: '-1'"),
    ("paper2_localization", ["--max-boxes", "0"],
     "argument --max-boxes: expected a whole number of at least 1. Received: '0'"),
    ("paper4_cnn_transfer", ["--model1-l2", "-1"],
     "argument --model1-l2: expected a number of at least 0. Received: '-1'"),
    ("paper2_localization", ["--lr", "nan"], "argument --lr: expected a number above 0. Received: 'nan'"),
    ("paper2_localization", ["--encoder", "bogus"],
     "argument --encoder: expected 'small' or a registered model, one of paper1_resnet, paper2_resnet18, "),
    ("paper4_cnn_transfer", ["--workdir", "{file}/sub"],
     "error: --workdir {file}/sub: {file} is a file, not a folder: the output cannot be written under it"),
])
def test_bad_recipe_flags_are_one_line_with_status_2_before_anything_is_written(script, flags, message, fixture_zip,
                                                                                tmp_path, capsys):
    """Flags that would make the run crash are refused before anything is written, also with
    --smoke (which would cut down the recipe they break)."""
    from tiny_keras import recipes, reproduce

    (tmp_path / "a_file").write_text("not a folder")
    paths = {"file": str(tmp_path / "a_file"), "missing": str(tmp_path / "missing.weights.h5")}
    flags, message = [f.format(**paths) for f in flags], message.format(**paths)
    argv = ["--data", str(fixture_zip), "--workdir", str(tmp_path / "run"), "--smoke", "--verbose", "0"]
    with pytest.raises(SystemExit) as exit_info:
        reproduce.run_paper(recipes.by_script(script), argv + flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_the_whole_recipe_is_validated_before_smoke_cuts_it_down():
    from tiny_keras import reproduce
    from tiny_keras.recipes import paper1

    parser = reproduce.build_parser("x", ["resnet"])
    broken = paper1.recipe(later_batch_size=0)  # what a recipe function may be given without the flag's check
    with pytest.raises(ValueError, match=r"stage '48px': batch_size must be positive. Received: self.batch_size=0"):
        reproduce.apply_flags(broken, parser.parse_args(["--smoke"]))
    with pytest.raises(ValueError, match=r"stage '32px': the learning rate must be above 0. Received: -1"):
        reproduce.apply_flags(paper1.recipe(first_lr=-1), parser.parse_args(["--smoke"]))
    with pytest.raises(ValueError, match=r"seed must be a whole number from 0 to 2\*\*32 - 1. Received: self.seed=-1"):
        paper1.recipe().replace(seed=-1).validate()


def test_workdir_results_keep_the_runs_not_trained_now_and_another_paper_s_are_refused(fixture_zip, tmp_path,
                                                                                       capsys):
    """WORKDIR/results.json gains this command's runs: rows of models trained before stay
    (in the paper's order), a model's own earlier rows are replaced. Another paper's results,
    or full runs' results under --smoke, are refused before anything trains."""
    from tiny_keras import reproduce

    paper4 = _script("paper4_cnn_transfer")
    argv = ["--data", str(fixture_zip), "--workdir", str(tmp_path), "--smoke", "--model", "model2", "--verbose", "0"]

    def script(*flags):
        return reproduce.main("paper4", paper4.RECIPES, paper4.__doc__, argv=argv + list(flags),
                              extra=paper4.extra_flags, configure=paper4.configure)

    recipe = {name: json.loads(paper4.RECIPES[name].to_json()) for name in ("model1", "model2")}
    row = dict(stage="train", epochs=1, val_top1=1.0, val_top5=2.0, paper_val_top1=None, seconds=1.0)
    earlier = {"paper": "paper4", "runs": [dict(row, model="model2"), dict(row, model="model1", val_top1=12.5)],
               "recipe": {"model2": recipe["model2"], "model1": recipe["model1"]}, "smoke": True, "data": "x.zip"}
    for other, found in ((dict(earlier, paper="paper5"), "the results of paper5 (results.json), not of paper4"),
                         (dict(earlier, smoke=False), "the results of full runs of paper4 (results.json); this "
                                                      "command's runs are --smoke")):
        (tmp_path / "results.json").write_text(json.dumps(other))
        with pytest.raises(SystemExit) as exit_info:
            script()
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
            f"error: --workdir {tmp_path} holds {found}; choose another --workdir, or pass --overwrite to replace them")
        assert json.loads((tmp_path / "results.json").read_text()) == other and not (tmp_path / "model2").exists()
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    results = script()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results and [(r["model"], r["val_top1"]) for r in saved["runs"]][0] == ("model1", 12.5)
    assert [r["model"] for r in saved["runs"]] == ["model1", "model2"] and saved["runs"][1]["val_top1"] != 1.0
    assert saved["runs"][1]["architecture"] == "paper4_model2"  # this command's row
    # The data each row was measured on: model1's earlier, model2's this command's (the top level).
    assert saved["runs"][0]["data"] == "x.zip" and "data" not in saved["runs"][1]
    assert saved["data"] == str(fixture_zip)
    assert list(saved["recipe"]) == ["model1", "model2"] and saved["recipe"]["model1"] == recipe["model1"]
    assert saved["recipe"]["model2"]["per_class"] == 2  # this command's (--smoke) recipe
    (tmp_path / "results.json").write_text(json.dumps(dict(earlier, paper="paper5")))
    results = script("--overwrite")  # another paper's results replaced (and model2 trained again)
    assert "--overwrite: " + str(tmp_path / "results.json") + " (the results of paper5) is replaced" in \
        capsys.readouterr().out
    assert [r["model"] for r in json.loads((tmp_path / "results.json").read_text())["runs"]] == ["model2"]


@pytest.mark.parametrize("record", ["results.json", "model2/recipe.json", "model2/progress.json",
                                    "model2/state.json", "model2/run.json"])
def test_a_corrupt_record_is_one_line_naming_the_file_with_status_1(record, fixture_zip, tmp_path, capsys):
    from tiny_keras import reproduce, runs
    from tiny_keras.recipe import Recipe

    paper4 = _script("paper4_cnn_transfer")
    argv = ["--data", str(fixture_zip), "--workdir", str(tmp_path), "--smoke", "--model", "model2", "--verbose", "0",
            "--precision", "float32"]
    recipe = reproduce.smoke_recipe(paper4.RECIPES["model2"]).replace(precision="float32")
    runs.prepare_folder(str(tmp_path / "model2"), Recipe.from_dict(json.loads(recipe.to_json())), overwrite=False)
    (tmp_path / "model2" / "progress.json").write_text('{"runs": []}')  # it trained: kept, and read
    (tmp_path / record).write_text('{"runs": [\n')
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main("paper4", paper4.RECIPES, paper4.__doc__, argv=argv, extra=paper4.extra_flags,
                       configure=paper4.configure)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (f"error: {tmp_path / record}: not valid JSON (Expecting value: line 2 "
                                            "column 1 (char 11))") and "Traceback" not in err, err


def test_a_start_that_failed_on_bad_input_does_not_block_the_corrected_command(fixture_zip, tmp_path, capsys):
    """Bad --data is refused before a run folder is made; a start that fails later (a batch
    beyond memory) leaves a run that never trained, which the corrected command replaces
    (here stopped at once by --time-limit 0), saying so in train.log."""
    from tiny_keras import reproduce

    paper4 = _script("paper4_cnn_transfer")
    (tmp_path / "empty").mkdir()
    workdir = tmp_path / "run"
    argv = ["--workdir", str(workdir), "--model", "model2", "--verbose", "0"]

    def script(*flags):
        with pytest.raises(SystemExit) as exit_info:
            reproduce.main("paper4", paper4.RECIPES, paper4.__doc__, argv=argv + list(flags),
                           extra=paper4.extra_flags, configure=paper4.configure)
        return exit_info.value.code, capsys.readouterr().err.strip().splitlines()[-1]

    code, line = script("--data", str(tmp_path / "empty"))
    assert code == 1 and line.startswith(f"error: --data {tmp_path / 'empty'}: no wnids.txt")
    assert not (workdir / "model2").exists()
    code, line = script("--data", str(fixture_zip), "--batch-size", "100000")
    assert code == 1 and "pass a smaller --batch-size" in line
    assert sorted(os.listdir(workdir / "model2")) == ["recipe.json", "run.json", "stages", "train.log"]
    code, line = script("--data", str(fixture_zip), "--seed", "5", "--time-limit", "0")
    assert code == reproduce.EXIT_TIME_LIMIT, line
    assert json.loads((workdir / "model2" / "recipe.json").read_text())["seed"] == 5
    log = (workdir / "model2" / "train.log").read_text()
    assert (f"{workdir / 'model2'} held a run that never trained (recipe differs in ['seed', 'stages']): replaced by "
            "this one") in log
    assert log.count(" Precision ") == 1  # the failed start's lines went with its folder


@pytest.mark.slow
def test_an_ensemble_is_evaluated_when_its_last_member_is_trained_by_a_later_command(fixture_zip, tmp_path):
    """Paper 3's three VGGs trained by two commands: the second evaluates the ensemble, its
    row naming the first command's models too, and results.json lists every run."""
    from tiny_keras import reproduce

    argv = ["--data", str(fixture_zip), "--workdir", str(tmp_path), "--smoke", "--verbose", "0"]
    first = reproduce.run_paper("paper3", argv + ["--model", "vgg_z", "--model", "vgg_f"])
    assert [r["model"] for r in first["runs"]] == ["vgg_z", "vgg_f"]  # no ensemble: vgg_y is missing
    second = reproduce.run_paper("paper3", argv + ["--model", "vgg_y"])
    assert [(r["model"], r["stage"]) for r in second["runs"]] == [
        ("vgg_z", "train"), ("vgg_f", "train"), ("vgg_y", "train"), ("ensemble of 3 VGGs", "ensemble")]
    assert second["runs"][:2] == first["runs"] and list(second["recipe"]) == ["vgg_z", "vgg_f", "vgg_y"]
    assert second["runs"][-1]["members"] == [os.path.join(name, "model.keras") for name in ("vgg_z", "vgg_f", "vgg_y")]
    assert json.loads((tmp_path / "results.json").read_text()) == second
