"""Every plot kind draws a real PNG from one quick run on the fixture dataset."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, VAL_PER_CLASS
from tiny_keras import data, plots, runs, train
from tiny_keras.recipe import Recipe, Stage

SIZE = (640, 480)  # small figures: the tests check sizes, not looks
STAGES = (("32px", 32), ("48px", 48))
EPOCHS = 2


@pytest.fixture(scope="module")
def run(fixture_zip, tmp_path_factory):
    """One tiny progressive-resizing run (2 stages of 2 epochs), activations on 4 images."""
    stages = [Stage(name=name, epochs=EPOCHS, batch_size=4, steps_per_epoch=2, image_size=size,
                    optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
                    schedule={"name": "step", "every_epochs": 1, "factor": 0.5}) for name, size in STAGES]
    recipe = Recipe(paper="paper1", model="paper1_resnet", model_options={"filters": (4, 8, 8, 8)},
                    preprocessing={"featurewise_std_normalization": True}, stages=stages)
    workdir = tmp_path_factory.mktemp("plots") / "run"
    with pytest.MonkeyPatch.context() as mp:  # the autouse cache fixture is per test; this is per module
        mp.setenv("TINY_KERAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        train.train(recipe, str(workdir), data=fixture_zip, verbose=0, tensorboard=False, activation_samples=4)
    return workdir


def check_png(path, size=SIZE):
    """The PNG has exactly ``size`` pixels and is not blank."""
    image = Image.open(path)
    assert image.format == "PNG" and image.size == size
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    non_white = (pixels < 245).any(axis=1).mean()
    colours = len(np.unique(pixels, axis=0))
    assert non_white > 0.01 and colours > 8, f"{path}: looks blank ({non_white=:.4f}, {colours=})"
    return pixels


@pytest.mark.parametrize("kind", plots.KINDS)
def test_each_kind_writes_a_png_of_the_requested_size(kind, run, fixture_zip, tmp_path):
    fig = plots.make_plot(kind, run, data=fixture_zip if kind in plots.NEEDS_DATA else None, size=SIZE)
    out = plots.save(fig, tmp_path / f"{kind}.png", size=SIZE)
    check_png(out)


def test_save_writes_exactly_the_requested_pixels(tmp_path):
    fig = plots.new_figure()
    fig.subplots().plot([0, 1], [1, 0])
    for size in ((1200, 800), (333, 777)):
        check_png(plots.save(fig, tmp_path / f"{size[0]}.png", size=size), size)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left
    with pytest.raises(ValueError, match="at least 100"):
        plots.save(fig, tmp_path / "tiny.png", size=(50, 50))


def test_history_joins_stages_with_boundaries(run):
    history = runs.read_history(run)
    assert [b.stage for b in history.boundaries] == [name for name, _ in STAGES]
    assert [b.start for b in history.boundaries] == [0, EPOCHS]
    assert [b.image_size for b in history.boundaries] == [size for _, size in STAGES]
    assert history.epoch.tolist() == list(range(1, 2 * EPOCHS + 1))
    for column in ("loss", "top1", "val_loss", "val_top1", "learning_rate"):
        assert np.isfinite(history.get(column)).all(), column
    # The step schedule halves the rate every epoch and starts again in each stage.
    np.testing.assert_allclose(history.get("learning_rate"), [0.1, 0.05, 0.1, 0.05], rtol=1e-6)


def test_activations_cover_every_epoch_of_every_stage(run):
    acts = runs.read_activations(run)
    assert acts["epoch"].tolist() == list(range(1, 2 * EPOCHS + 1))
    assert acts["percentiles"] == [0, 7, 16, 31, 50, 69, 84, 93, 100]
    assert acts["last_block"].shape == acts["logits"].shape == (2 * EPOCHS, 9)
    assert (np.diff(acts["logits"], axis=1) >= 0).all()  # percentiles increase
    assert (acts["last_block"] >= 0).all()  # after a ReLU
    assert set(acts["layers"]) == {"last_block", "logits"}


def test_filters_are_the_first_conv_kernels(run):
    model = plots.load_model(run)
    layer = plots.first_conv_layer(model)
    kernel = layer.kernel.numpy()
    assert layer.name == "stem_conv" and kernel.shape[2:] == (3, 4)
    grid = plots.filter_grid(kernel)
    kh, kw = kernel.shape[:2]
    assert grid.shape == (2 * (kh + 1) + 1, 2 * (kw + 1) + 1, 3)  # 4 filters: 2 x 2, 1-pixel gaps
    assert grid.min() >= 0 and grid.max() <= 1
    # Each filter is stretched to 0..1 on its own: filter 0's pixels are the kernel's, rescaled.
    f0 = kernel[..., 0]
    np.testing.assert_allclose(grid[1:1 + kh, 1:1 + kw], (f0 - f0.min()) / (f0.max() - f0.min()), atol=1e-6)


def test_tsne_runs_on_fixture_features(run, fixture_zip):
    model = plots.load_model(run)
    val = data.load_split(fixture_zip, "val", progress=False)
    features = plots.penultimate_features(model, val.images)
    # The input of the classifier: the global average pool of the last stage (8 filters).
    assert features.shape == (3 * VAL_PER_CLASS, 8) and np.isfinite(features).all()
    perplexity = plots.tsne_perplexity(len(features))
    assert 0 < perplexity < len(features)  # adapted: sklearn's default 30 would fail on 6 images
    embedding = plots.tsne_embedding(features, seed=0)
    assert embedding.shape == (len(features), 2) and np.isfinite(embedding).all()
    fig = plots.plot_tsne(embedding, val.labels, val.classes, legend=[0, 2], size=SIZE)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["other classes (1)", "goldfish", "bullfrog"]


def test_classes_and_mistakes_on_known_probabilities(fixture_zip):
    val = data.load_split(fixture_zip, "val", progress=False)
    labels = val.labels
    probabilities = np.full((len(labels), 3), 0.1)
    probabilities[np.arange(len(labels)), labels] = 0.8
    wrong = np.flatnonzero(labels == 1)[0]  # one salamander taken for a bullfrog, with 70%
    probabilities[wrong] = [0.1, 0.2, 0.7]
    assert plots.pick_mistakes(probabilities, labels) == [wrong]
    fig = plots.plot_mistakes(val.images, labels, probabilities, val.classes, size=SIZE)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["true: European fire salaman\u2026\npred: bullfrog (70%)"]
    fig = plots.plot_classes(val.images, labels, probabilities, val.classes, k=1, samples=2, size=SIZE)
    names = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert names == ["goldfish\n100% (2)", "European fire sal\u2026\n50% (2)"]  # best, worst


def test_mistakes_without_any_mistake_says_so(fixture_zip, tmp_path):
    val = data.load_split(fixture_zip, "val", progress=False)
    probabilities = np.eye(3)[val.labels]
    fig = plots.plot_mistakes(val.images, val.labels, probabilities, val.classes, size=SIZE)
    assert "no misclassified images among 6" in [t.get_text() for ax in fig.axes for t in ax.texts]
    check_png(plots.save(fig, tmp_path / "none.png", size=SIZE))


def test_curves_of_a_workdir_compare_its_runs(run, tmp_path):
    workdir = tmp_path / "study"
    for name in ("a", "b"):
        shutil.copytree(run, workdir / name, ignore=shutil.ignore_patterns("*.keras"))
    (workdir / "results.json").write_text(json.dumps({"runs": [], "recipe": {"a": {}, "b": {}}}))
    fig = plots.make_plot("curves", workdir, size=SIZE)
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["a", "b"]
    check_png(plots.save(fig, tmp_path / "study.png", size=SIZE))
    with pytest.raises(plots.PlotError, match="reproduction workdir holding the runs a, b"):
        plots.make_plot("activations", workdir)


def test_clear_errors(run, tmp_path):
    # No history: a run folder whose stages have not finished an epoch.
    empty = tmp_path / "empty_run"
    empty.mkdir()
    shutil.copy(run / "recipe.json", empty / "recipe.json")
    with pytest.raises(runs.RunRecordError, match="no training history"):
        runs.read_history(empty)
    with pytest.raises(runs.RunRecordError, match="activation_samples=0"):
        runs.read_activations(empty)
    with pytest.raises(runs.RunRecordError, match="not a run folder"):
        runs.read_history(tmp_path)
    # A model with no conv layer.
    dense = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    dense.save(tmp_path / "dense.keras")
    with pytest.raises(plots.PlotError, match="no Conv2D layer"):
        plots.make_plot("filters", tmp_path / "dense.keras")
    # Kinds that run the model need data.
    for kind in plots.NEEDS_DATA:
        with pytest.raises(plots.PlotError, match="--data"):
            plots.make_plot(kind, run)
    with pytest.raises(plots.PlotError, match="no such file"):
        plots.make_plot("filters", tmp_path / "missing.keras")
    with pytest.raises(plots.PlotError, match="not a wnid"):
        plots._legend_classes(["n99999999"], data.official_classes())
    with pytest.raises(plots.PlotError, match="at least 2 images"):
        plots.tsne_perplexity(1)


def truncated_keras(path):
    """A .keras file cut short: the start of a zip archive."""
    with zipfile.ZipFile(path.with_suffix(".zip"), "w") as archive:
        archive.writestr("config.json", "{}" * 500)
    path.write_bytes(path.with_suffix(".zip").read_bytes()[:200])
    return path


def load_cli():
    spec = importlib.util.spec_from_file_location("plot_cli", REPO / "tools" / "plot.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_a_truncated_keras_file_is_named_as_such(tmp_path):
    truncated_keras(tmp_path / "trunc.keras")
    with pytest.raises(plots.PlotError) as error:
        plots.make_plot("filters", tmp_path / "trunc.keras")
    assert str(error.value) == (f"{tmp_path / 'trunc.keras'}: not a readable Keras model (not a zip archive: "
                                "truncated, or not a .keras file)")


def test_cli_lists_the_library_kinds():
    cli = load_cli()  # the CLI keeps its own copy so that --help needs no TensorFlow
    assert cli.KINDS == plots.KINDS and cli.NEEDS_DATA == plots.NEEDS_DATA


def test_cli_writes_the_png_and_refuses_to_overwrite(run, fixture_zip, tmp_path):
    out = tmp_path / "classes.png"
    command = [sys.executable, str(REPO / "tools" / "plot.py"), "classes", str(run), "--data", str(fixture_zip),
               "--out", str(out), "--width", "700", "--height", "500", "-k", "2", "--samples", "2"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert f"wrote {out} (700x500)" in done.stdout
    check_png(out, (700, 500))
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr
    no_data = subprocess.run(command[:4] + ["--out", str(tmp_path / "x.png")], capture_output=True, text=True,
                             env=env, timeout=300)
    assert no_data.returncode == 2 and "pass --data PATH" in no_data.stderr


def cli_error(cli, args, capsys):
    """The last line tools/plot.py prints for ``args``, which must stop it at parse time."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1].split(" error: ", 1)[1]


def test_cli_checks_out_before_drawing(tmp_path, capsys):
    from matplotlib.backend_bases import FigureCanvasBase

    cli = load_cli()
    a_file, folder = tmp_path / "afile.txt", tmp_path / "figure.png"
    a_file.write_text("kept")
    folder.mkdir()
    formats = ", ".join(sorted(FigureCanvasBase.get_supported_filetypes()))
    assert "png" in formats and "svg" in formats and "pdf" in formats
    curves = ["curves", str(tmp_path / "missing")]  # never read: the flags are wrong first
    out = tmp_path / "c.xyz"
    assert cli_error(cli, curves + ["--out", str(out)], capsys) == (
        f"--out: {out}: matplotlib cannot write .xyz files; name one of {formats}")
    assert cli_error(cli, curves + ["--out", str(a_file / "c.png")], capsys) == (
        f"--out: {a_file} is a file, not a folder: the output cannot be written under it")
    assert cli_error(cli, curves + ["--out", str(folder), "--overwrite"], capsys) == (
        f"--out: {folder} is a folder; name a file")
    assert sorted(os.listdir(tmp_path)) == ["afile.txt", "figure.png"] and a_file.read_text() == "kept"
    assert os.listdir(folder) == []


def test_tsne_flags_are_checked_before_any_feature(fixture_zip, tmp_path, capsys):
    cli = load_cli()
    tsne = ["tsne", str(tmp_path / "missing"), "--data", str(fixture_zip), "--out", str(tmp_path / "t.png")]
    for args, message in [
        (["--seed", "-1"], "--seed must lie in 0..2**32 - 1. Received: -1"),
        (["--seed", str(2**32)], "--seed must lie in 0..2**32 - 1. Received: 4294967296"),
        (["--classes", "0"], "--classes: the legend names 1 class or more. Received: 0"),
        (["--classes", "-2"], "--classes takes a number of classes, or class indices and wnids (n01443537). "
                              "Received: '-2'"),
        (["--classes", "n01443537", "goldfish"], "--classes takes a number of classes, or class indices and wnids "
                                                 "(n01443537). Received: 'goldfish'"),
    ]:
        assert cli_error(cli, tsne + args, capsys) == message
    # What only the dataset can tell comes before the model is read (this one is not readable).
    model = truncated_keras(tmp_path / "trunc.keras")
    with pytest.raises(plots.PlotError, match="^--classes: 'n99999999' is not a wnid of the model's classes$"):
        plots.make_plot("tsne", model, data=fixture_zip, classes=["n99999999"])
    with pytest.raises(plots.PlotError, match=r"^classes \[7\] have no images here \(present: 3 classes\)$"):
        plots.make_plot("tsne", model, data=fixture_zip, classes=["0", "7"])
    with pytest.raises(ValueError, match=r"^the number of legend classes must be positive. Received: classes=0$"):
        plots.make_plot("tsne", model, data=fixture_zip, classes=["0"])
    with pytest.raises(plots.PlotError, match=r"^the t-SNE seed must lie in 0..2\*\*32 - 1. Received: seed=-1$"):
        plots.make_plot("tsne", model, data=fixture_zip, seed=-1)
    with pytest.raises(plots.PlotError, match="not a readable Keras model"):
        plots.make_plot("tsne", model, data=fixture_zip, classes=["n01443537"])
