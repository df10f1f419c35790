"""Evaluation: metrics, ensembles, test-time augmentation, members from paths, tools/evaluate.py."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import FIXTURE_WNIDS, REPO
from tiny_keras import augment, data, evaluate, models, report, train
from tiny_keras.engine import model as engine_model
from tiny_keras.engine import task as engine_task
from tiny_keras.recipe import Recipe, Stage

RNG = np.random.default_rng(0)
MEAN_IMAGE = RNG.uniform(0, 255, (64, 64, 3)).astype(np.float32)


def small_network(name, num_classes=200, seed=0):
    entry = models.get_entry(name)
    keras.utils.set_random_seed(seed)
    shape = (None, None, 3) if entry.size_agnostic else entry.input_shape
    return models.build(name, num_classes=num_classes, input_shape=shape, **entry.offline_options,
                        **entry.small_options)


def mean_image_layer():
    layer = augment.MeanImageSubtraction(mean_image=MEAN_IMAGE, name="mean_image")
    layer.build((None, 64, 64, 3))
    return layer


def standardize_layer():
    return augment.Standardization(featurewise_std_normalization=True, mean=[120.0, 110.0, 100.0],
                                   std=[60.0, 55.0, 50.0], name="standardize")


def crop_model(seed=0, num_classes=200):
    """Paper 5's shape: mean image -> centre crop 56 -> fixed-size 56px network."""
    return models.ImageClassifier(small_network("paper5_cnn8", num_classes, seed), [mean_image_layer()], crop=56)


def images(n=6, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3)).astype(np.uint8)


def keras_member(model, path="in-memory"):
    return evaluate.Member(path, "keras", int(model.outputs[0].shape[-1]), model=model)


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_run(fixture_zip, tmp_path_factory):
    """One quick engine run (paper 5's shape, 2 epochs of 2 steps, a snapshot per epoch)."""
    small = dict(models.get_entry("paper5_cnn8").small_options)
    recipe = Recipe(paper="paper5", model="paper5_cnn8", model_options=small, crop=56,
                    preprocessing={"mean_image": True},
                    stages=[Stage(epochs=2, batch_size=4, steps_per_epoch=2, snapshot_every_epochs=1,
                                  optimizer={"name": "sgd", "learning_rate": 0.01, "momentum": 0.9})])
    workdir = tmp_path_factory.mktemp("evaluate_run") / "run"
    with pytest.MonkeyPatch.context() as mp:  # the autouse cache fixture is per test; this is per module
        mp.setenv("TINY_KERAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        train.train(recipe, workdir, data=fixture_zip, verbose=0, tensorboard=False)
    return workdir


# -- metrics ------------------------------------------------------------------------------------
def test_metrics_per_class_and_confusions_on_known_probabilities():
    classes = data.ClassNames(["n01443537", "n01629819", "n01641577"],
                              {"n01443537": "goldfish", "n01629819": "salamander", "n01641577": "bullfrog"})
    p = np.array([[0.7, 0.2, 0.1],   # 0 -> 0
                  [0.1, 0.3, 0.6],   # 0 -> 2
                  [0.2, 0.5, 0.3],   # 1 -> 1
                  [0.1, 0.2, 0.7],   # 1 -> 2
                  [0.1, 0.3, 0.6],   # 1 -> 2
                  [0.3, 0.3, 0.4]])  # 2 -> 2
    labels = np.array([0, 0, 1, 1, 1, 2])
    m = evaluate.metrics(p, labels)
    assert m["top1"] == pytest.approx(300 / 6) and m["top5"] == 100.0
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.1, 0.5, 0.2, 0.3, 0.4])))
    rows = evaluate.per_class_accuracy(p, labels, classes)
    assert [(r["wnid"], r["name"], r["images"], r["top1"]) for r in rows] == [
        ("n01443537", "goldfish", 2, 50.0), ("n01629819", "salamander", 3, pytest.approx(100 / 3)),
        ("n01641577", "bullfrog", 1, 100.0)]
    best, worst = evaluate.best_and_worst(rows, n=2)
    assert [r["index"] for r in best] == [2, 0] and [r["index"] for r in worst] == [1, 0]
    conf = evaluate.confusions(p, labels, classes)
    assert [(c["true_name"], c["predicted_name"], c["count"]) for c in conf] == [
        ("salamander", "bullfrog", 2), ("goldfish", "bullfrog", 1)]
    assert conf[0]["percent"] == pytest.approx(200 / 3)
    table = report.format_confusions(conf)
    assert "salamander" in table and "->" in table


def test_report_says_every_image_is_right_only_when_it_is():
    classes = data.ClassNames(["n01443537", "n01629819"])
    labels = np.array([0, 1, 1])
    wrong = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])  # one salamander taken for a goldfish
    members = [evaluate.Member("a.keras", "keras", 2)]
    none_asked = evaluate.evaluate(members, None, labels, classes=classes, probabilities=[wrong], top_confusions=0)
    assert none_asked["confusions"] == []
    assert report.format_report(none_asked).splitlines()[-1] == "(none listed)"
    right = evaluate.evaluate(members, None, labels, classes=classes, probabilities=[np.eye(2)[labels]])
    assert right["confusions"] == []
    assert report.format_report(right).splitlines()[-1] == "(none: every image is classified correctly)"
    with pytest.raises(ValueError, match=r"n must be 0 or more confusions. Received: n=-3"):
        evaluate.confusions(wrong, labels, classes, n=-3)


def tied_predictions():
    """Logits full of ties (small integers in float16, the way mixed precision rounds them),
    a row whose top two tie at -0.0 and 0.0, and labels that the tie decides."""
    rng = np.random.default_rng(3)
    logits = rng.integers(0, 4, (1003, 10)).astype(np.float16)
    logits[0] = 0.0
    logits[0, 0] = -0.0
    labels = rng.integers(0, 10, 1003)
    labels[0] = 0
    return logits, labels


def test_training_and_evaluation_break_top_k_ties_alike():
    # Of equal scores the lower class index ranks first in both, and training counts in
    # float64, so a run's val_top1 / val_top5 equal tools/evaluate.py's to the last digit.
    logits, labels = tied_predictions()
    identity = keras.Sequential([keras.Input((10,), dtype="float16"), keras.layers.Identity()])
    identity.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=engine_model.make_metrics())
    dataset = tf.data.Dataset.from_tensor_slices((logits, labels)).batch(64)  # 1003 = 15 x 64 + 43
    from_training = engine_task.evaluate(identity, dataset)
    from_evaluation = evaluate.metrics(evaluate.softmax(logits), labels)
    assert from_training["val_top1"] == from_evaluation["top1"]
    assert from_training["val_top5"] == from_evaluation["top5"]
    row0 = evaluate.softmax(logits[:1])
    assert evaluate.topk_accuracy(row0, labels[:1], 1) == 100.0  # -0.0 == 0.0: index 0 wins the tie


def test_loss_matches_keras_cross_entropy():
    logits = RNG.normal(0, 3, (20, 7)).astype(np.float32)
    labels = RNG.integers(0, 7, 20)
    ours = evaluate.cross_entropy(evaluate.softmax(logits), labels)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert ours == pytest.approx(float(theirs), rel=1e-5)
    with pytest.raises(ValueError, match="no labels"):
        evaluate.evaluate([], images(2), np.array([-1, -1]))


def test_resolve_classes():
    fixture = data.ClassNames(FIXTURE_WNIDS)
    assert evaluate.resolve_classes(3, fixture) is fixture
    assert evaluate.resolve_classes(200, fixture) == data.official_classes()  # the fixture's are the first 3
    with pytest.raises(ValueError, match="official indices"):
        evaluate.resolve_classes(200, data.ClassNames(["n01443537", "n12267677"]))
    with pytest.raises(ValueError, match="7 outputs"):
        evaluate.resolve_classes(7, fixture)


# -- ensembles and TTA ----------------------------------------------------------------------------
def test_ensemble_of_two_models_is_exactly_the_mean_of_their_probabilities():
    x, labels = images(8), np.arange(8) % 3
    a, b = keras_member(crop_model(seed=1), "a"), keras_member(crop_model(seed=2), "b")
    pa, pb = a.predict(x), b.predict(x)
    assert not np.allclose(pa, pb)
    predicted = a.model.predict(np.asarray(x, np.float32), verbose=0)
    np.testing.assert_allclose(pa, evaluate.softmax(predicted), atol=1e-6)  # = model.predict
    result = evaluate.evaluate([a, b], x, labels, ensemble=True)
    mean = (pa + pb) / 2
    np.testing.assert_array_equal(evaluate.ensemble_probabilities([pa, pb]), mean)
    assert result["ensemble"] == {**evaluate.metrics(mean, labels), "members": 2, "weights": None}
    assert [m["path"] for m in result["models"]] == ["a", "b"]
    assert result["models"][0]["top1"] == evaluate.topk_accuracy(pa, labels, 1)
    assert result["per_class_of"] == "ensemble"
    weighted = evaluate.evaluate([a, b], x, labels, ensemble=True, weights=[3, 1])
    assert weighted["ensemble"]["loss"] == pytest.approx(evaluate.cross_entropy(0.75 * pa + 0.25 * pb, labels))
    # One weight per path; a folder's weight is shared by its snapshots.
    assert evaluate.member_weights([0, 1, 1], [2.0, 1.0]) == [2.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="one weight per model path"):
        evaluate.member_weights([0, 1], [1.0])
    for weights in ([1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match=rf"weights must be non-negative numbers, not all zero. Received: "
                                             rf"\[{weights[0]}, {weights[1]}\]"):
            evaluate.member_weights([0, 1], weights)


def test_flip_tta_on_horizontally_symmetric_images_equals_plain_evaluation():
    x = images(5).astype(np.float32)
    symmetric = np.concatenate([x[:, :, :32], x[:, :, :32][:, :, ::-1]], axis=2)
    member = keras_member(crop_model())
    np.testing.assert_allclose(member.predict(symmetric, tta="flip"), member.predict(symmetric), rtol=0, atol=1e-12)
    # And on ordinary images it is the mean over the image and its mirror.
    mirrored = member.predict(x[:, :, ::-1])
    np.testing.assert_allclose(member.predict(x, tta="flip"), (member.predict(x) + mirrored) / 2, atol=1e-12)
    assert not np.allclose(mirrored, member.predict(x))


def _reference_crops10(x, preprocess, network, crop, feed_size=None):
    """Ten views by plain slicing: five crops of the preprocessed image and of its mirror."""
    probs = []
    for img in (x, x[:, :, ::-1]):
        pre = preprocess(img)
        h = pre.shape[1]
        for top, left in [(0, 0), (0, h - crop), (h - crop, 0), (h - crop, h - crop), ((h - crop) // 2,) * 2]:
            view = pre[:, top:top + crop, left:left + crop]
            if feed_size and feed_size != crop:
                view = tf.image.resize(view, (feed_size, feed_size)).numpy()
            probs.append(evaluate.softmax(network(view, training=False)))
    return np.mean(probs, axis=0)


@pytest.mark.parametrize("kind", ["crop_layer", "size_agnostic", "fixed_size"])
def test_crops10_feeds_ten_crops_of_the_preprocessed_images(kind):
    x = images(3).astype(np.float32)
    std = standardize_layer()
    if kind == "crop_layer":  # papers 2 and 5: 56px crops fed straight to the network
        network = small_network("paper5_cnn8", num_classes=10)
        model = models.ImageClassifier(network, [mean_image_layer()], crop=56)
        expected = _reference_crops10(x, lambda v: v - MEAN_IMAGE, network, 56)
    elif kind == "size_agnostic":  # papers 1 and 3: 56px crops at their own size
        network = small_network("paper3_vgg_z", num_classes=10)
        model = models.ImageClassifier(network, [std])
        expected = _reference_crops10(x, lambda v: (v - [120.0, 110.0, 100.0]) / [60.0, 55.0, 50.0], network, 56)
    else:  # paper 4's 64px-only networks: crops resized back to 64
        network = small_network("paper4_model2", num_classes=10)
        model = models.ImageClassifier(network, [mean_image_layer()])
        expected = _reference_crops10(x, lambda v: v - MEAN_IMAGE, network, 56, feed_size=64)
    got = keras_member(model).predict(x, tta="crops10", batch_size=20)  # 2 images per step
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.abs(got - keras_member(model).predict(x)).max() > 1e-4  # not the plain prediction


def test_crops10_on_constant_images_equals_plain_evaluation():
    # Every crop of a constant image (with per-channel standardisation) is the centre crop.
    x = np.broadcast_to(np.array([200, 90, 30], np.float32), (2, 64, 64, 3)).copy()
    model = models.ImageClassifier(small_network("paper2_vgg16"), [standardize_layer()], crop=56)
    member = keras_member(model)
    np.testing.assert_allclose(member.predict(x, tta="crops10"), member.predict(x), atol=1e-6)


# -- members from paths ---------------------------------------------------------------------------
def test_unreadable_model_paths_are_named(tmp_path):
    with pytest.raises(evaluate.ModelLoadError, match="missing.keras: no such file"):
        evaluate.load_members([tmp_path / "missing.keras"])
    (tmp_path / "notes.keras").write_text("not a model")
    with pytest.raises(evaluate.ModelLoadError, match="notes.keras: not a readable Keras model"):
        evaluate.load_members([tmp_path / "notes.keras"])
    model_path = tmp_path / "model.keras"
    crop_model().save(model_path)
    (tmp_path / "corrupt.keras").write_bytes(model_path.read_bytes()[:2000])
    with pytest.raises(evaluate.ModelLoadError, match="corrupt.keras: not a readable Keras model"):
        evaluate.load_members([tmp_path / "corrupt.keras"])
    for name in ("notes.keras", "corrupt.keras"):  # Keras's own message for these says "File not found"
        with pytest.raises(evaluate.ModelLoadError) as error:
            evaluate.load_members([tmp_path / name])
        assert str(error.value) == (f"{tmp_path / name}: not a readable Keras model (not a zip archive: truncated, "
                                    "or not a .keras file)")
    (tmp_path / "empty").mkdir()
    with pytest.raises(evaluate.ModelLoadError, match="empty: a folder with no model"):
        evaluate.load_members([tmp_path / "empty"])
    crop_model(num_classes=3).save(tmp_path / "three.keras")
    with pytest.raises(ValueError, match=r"different numbers of classes: .*model.keras \(200\), .*three.keras \(3"):
        evaluate.load_members([model_path, tmp_path / "three.keras"])


def test_run_and_snapshot_folders_expand_into_members(trained_run):
    run_members, _ = evaluate.load_members([trained_run])
    assert [m.path for m in run_members] == [str(trained_run / "model.keras")]
    snapshots = trained_run / "stages" / "train" / "snapshots"
    members, groups = evaluate.load_members([trained_run / "model.keras", snapshots])
    assert [os.path.basename(m.path) for m in members] == ["model.keras", "snapshot-e001.keras", "snapshot-e002.keras"]
    assert groups == [0, 1, 1] and {m.num_classes for m in members} == {200}
    # The last snapshot is the final model: same predictions.
    x = images(4)
    np.testing.assert_allclose(members[2].predict(x), members[0].predict(x), atol=1e-7)


def test_savedmodel_export_is_a_member(tmp_path):
    from tiny_keras import export

    model = crop_model()
    export.export_savedmodel(model, tmp_path / "sm")
    member = evaluate.load_member(tmp_path / "sm")
    assert member.kind == "savedmodel" and member.signature_name == "logits" and member.num_classes == 200
    x = images(5)
    np.testing.assert_allclose(member.predict(x, tta="flip"), keras_member(model).predict(x, tta="flip"), atol=1e-6)
    with pytest.raises(ValueError, match="crops10 needs the Keras model"):
        member.predict(x, tta="crops10")
    # A SavedModel whose only signature gives logits under another name (Keras's model.export).
    model.export(str(tmp_path / "plain"), verbose=False)
    plain = evaluate.load_member(tmp_path / "plain")
    np.testing.assert_allclose(plain.predict(x), keras_member(model).predict(x), atol=1e-6)


# -- tools/evaluate.py -------------------------------------------------------------------------------
def test_cli_top1_equals_model_evaluate(trained_run, fixture_zip, tmp_path):
    model = keras.models.load_model(trained_run / "model.keras")  # compiled by the engine: top1, top5
    expected = model.evaluate(data.make_dataset(data.load_split(fixture_zip, "val", progress=False), batch_size=4),
                              return_dict=True, verbose=0)
    out_json, out_csv = tmp_path / "results.json", tmp_path / "per_class.csv"
    snapshots = trained_run / "stages" / "train" / "snapshots"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "tools" / "evaluate.py"), str(trained_run / "model.keras"), str(snapshots),
           "--data", str(fixture_zip), "--ensemble", "--json", str(out_json), "--per-class-csv", str(out_csv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out_json.read_text())
    assert result["models"][0]["path"] == str(trained_run / "model.keras") and len(result["models"]) == 3
    assert result["models"][0]["top1"] == pytest.approx(100 * expected["top1"], abs=1e-4)
    assert result["models"][0]["top5"] == pytest.approx(100 * expected["top5"], abs=1e-4)
    assert set(result["ensemble"]) >= {"top1", "top5"} and result["per_class_of"] == "ensemble"
    assert [r["wnid"] for r in result["per_class"]] == sorted(FIXTURE_WNIDS)
    assert "[1/3] " in proc.stdout and "best classes" in proc.stdout and "Most frequent confusions" in proc.stdout
    assert "━" not in proc.stdout and "\b" not in proc.stdout  # stdout is not a terminal: no progress bars
    assert "ensemble of 3" in proc.stdout
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["goldfish", "European fire salamander", "bullfrog"]
    assert set(rows[0]) == {"index", "wnid", "name", "images", "top1", "top5"}
    # An existing output is never replaced without --overwrite (checked before any work).
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "exists; pass --overwrite" in proc.stderr


def test_cli_predict_test_writes_the_submission_format(trained_run, fixture_zip, tmp_path, capsys):
    tool = load_tool("evaluate")
    out = tmp_path / "test.txt"
    assert tool.main([str(trained_run), "--data", str(fixture_zip), "--split", "test", "--predict-test", str(out),
                      "--tta", "crops10"]) == 0
    lines = out.read_text().splitlines()
    split = data.load_split(fixture_zip, "test", progress=False)
    member = evaluate.load_member(trained_run / "model.keras")
    predicted = np.argmax(member.predict(split.images, tta="crops10"), axis=-1)
    assert lines == [f"{f} {data.official_classes().wnid(i)}" for f, i in zip(split.files, predicted)]
    assert [line.split()[0] for line in lines] == ["test_0.JPEG", "test_1.JPEG", "test_2.JPEG"]


@pytest.mark.parametrize("args, message", [
    (["--split", "test"], "test split has no labels"),
    (["--predict-test", "x.txt"], "pass --split test"),
    (["--weights", "1"], "--weights needs --ensemble"),
])
def test_cli_argument_errors(args, message, fixture_zip, capsys):
    tool = load_tool("evaluate")
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["model.keras", "--data", str(fixture_zip)] + args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


WEIGHTS = "--weights must be non-negative numbers, not all zero. Received:"


@pytest.mark.parametrize("args, message", [
    (["--confusions", "0"], "--confusions must be at least 1. Received: 0"),
    (["--confusions", "-3"], "--confusions must be at least 1. Received: -3"),
    (["--ensemble", "--weights", "1", "-1"], f"{WEIGHTS} [1.0, -1.0]"),
    (["--ensemble", "--weights", "0", "0"], f"{WEIGHTS} [0.0, 0.0]"),
    (["--ensemble", "--weights", "1", "nan"], f"{WEIGHTS} [1.0, nan]"),
])
def test_cli_number_errors_are_one_line_before_any_model_loads(args, message, fixture_zip, capsys):
    tool = load_tool("evaluate")
    with pytest.raises(SystemExit) as exit_info:  # model.keras does not exist: nothing is loaded
        tool.main(["model.keras", "model.keras", "--data", str(fixture_zip)] + args)
    assert exit_info.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(f" error: {message}")


def test_cli_outputs_are_checked_before_any_work(tmp_path, fixture_zip, capsys):
    tool = load_tool("evaluate")
    folder, a_file, out_csv = tmp_path / "folder", tmp_path / "afile.txt", tmp_path / "classes.csv"
    folder.mkdir()
    a_file.write_text("kept")
    base = ["model.keras", "--data", str(fixture_zip)]  # model.keras does not exist: nothing is loaded
    for args, message in [
        (["--per-class-csv", str(out_csv), "--json", str(folder), "--overwrite"],
         f"--json: {folder} is a folder; name a file"),
        (["--json", str(a_file / "out.json")],
         f"--json: {a_file} is a file, not a folder: the output cannot be written under it"),
        (["--per-class-csv", str(a_file)], f"--per-class-csv: {a_file} exists; pass --overwrite to replace it"),
        (["--split", "test", "--predict-test", str(folder), "--overwrite"],
         f"--predict-test: {folder} is a folder; name a file"),
        (["--json", str(out_csv), "--per-class-csv", str(out_csv)],
         f"--json and --per-class-csv name the same file {out_csv}; give each its own"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            tool.main(base + args)
        assert exit_info.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(f" error: {message}")
    assert sorted(os.listdir(tmp_path)) == ["afile.txt", "folder"] and a_file.read_text() == "kept"
    assert os.listdir(folder) == []


def test_cli_model_errors(tmp_path, fixture_zip):
    tool = load_tool("evaluate")
    with pytest.raises(SystemExit, match="missing.keras: no such file"):
        tool.main([str(tmp_path / "missing.keras"), "--data", str(fixture_zip)])
    crop_model().save(tmp_path / "a.keras")
    crop_model(num_classes=3).save(tmp_path / "b.keras")
    with pytest.raises(SystemExit, match="different numbers of classes"):
        tool.main([str(tmp_path / "a.keras"), str(tmp_path / "b.keras"), "--data", str(fixture_zip), "--ensemble"])


# -- precise BatchNorm statistics -----------------------------------------------------------------
def bn_classifier(size=8, seed=0, augmenter=None):
    """images -> BN -> 1x1 conv (x2, no bias) -> BN -> frozen BN -> pooling -> dense: a
    network whose BatchNorm statistics have a closed form."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.BatchNormalization(name="bn1")(inputs)
    x = keras.layers.Conv2D(3, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(np.eye(3) * 2.0),
                            name="double")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    frozen = keras.layers.BatchNormalization(name="frozen")
    x = frozen(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(200, name="classifier")(x)
    backbone = keras.Model(inputs, outputs, name="bn_net")
    backbone.get_layer("bn1").gamma.assign([0.5, 2.0, 1.5])
    backbone.get_layer("bn1").beta.assign([1.0, -2.0, 0.25])
    frozen.moving_mean.assign([3.0, 4.0, 5.0])
    frozen.trainable = False
    if augmenter is None:
        augmenter = augment.Compose([augment.RandomFlip(), augment.GaussianNoise(50.0)])  # must not be applied
    return models.ImageClassifier(backbone, augmenter=augmenter, seed=0)


def test_precise_bn_sets_the_mean_of_batch_statistics_and_touches_no_weight():
    model = bn_classifier()
    images = RNG.integers(0, 256, (24, 8, 8, 3)).astype(np.uint8)
    weights = [w.copy() for w in model.backbone.get_weights()]
    trainable = [v.numpy().copy() for v in model.backbone.trainable_variables]
    updated = evaluate.recompute_bn_statistics(model, images, batch_size=8)
    assert [layer.name for layer in updated] == ["bn1", "bn2"]  # the frozen one is left as it is
    # Reference: each batch of 8 normalised by its own statistics, as training mode does.
    eps = 1e-3
    gamma, beta = np.array([0.5, 2.0, 1.5]), np.array([1.0, -2.0, 0.25])
    stats = {"bn1": [], "bn2": []}
    for batch in images.astype(np.float64).reshape(3, 8, 8, 8, 3):
        mean, var = batch.mean(axis=(0, 1, 2)), batch.var(axis=(0, 1, 2))
        stats["bn1"].append((mean, var))
        doubled = 2.0 * ((batch - mean) / np.sqrt(var + eps) * gamma + beta)
        stats["bn2"].append((doubled.mean(axis=(0, 1, 2)), doubled.var(axis=(0, 1, 2))))
    for name, per_batch in stats.items():
        layer = model.backbone.get_layer(name)
        np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean([m for m, _ in per_batch], axis=0), rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), np.mean([v for _, v in per_batch], axis=0),
                                   rtol=1e-5)
        assert layer.momentum == 0.99  # restored
    frozen = model.backbone.get_layer("frozen")
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), [3.0, 4.0, 5.0])
    np.testing.assert_array_equal(frozen.moving_variance.numpy(), [1.0, 1.0, 1.0])
    for before, after in zip(trainable, model.backbone.trainable_variables):
        np.testing.assert_array_equal(before, after.numpy())
    assert any(not np.array_equal(a, b) for a, b in zip(weights, model.backbone.get_weights()))  # statistics moved


def test_precise_bn_on_augmented_images_takes_the_statistics_of_what_training_saw():
    # Every pixel tripled by the training augmentation: the first layer's statistics are
    # those of 3x the images (mean x3, variance x9), where the clean images' are not.
    model = bn_classifier(augmenter=augment.RandomMultiply(3.0, 3.0))
    images = RNG.integers(0, 256, (24, 8, 8, 3)).astype(np.uint8)
    evaluate.recompute_bn_statistics(model, images, batch_size=8, augmented=True)
    batches = images.astype(np.float64).reshape(3, 8, 8, 8, 3)
    layer = model.backbone.get_layer("bn1")
    np.testing.assert_allclose(layer.moving_mean.numpy(),
                               np.mean([3 * b.mean(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               np.mean([9 * b.var(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-5)
    evaluate.recompute_bn_statistics(model, images, batch_size=8)  # clean: the images as they are
    np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0),
                               rtol=1e-5)


def test_precise_bn_images_are_a_seeded_draw_without_replacement():
    images = np.arange(50)
    drawn = evaluate.precise_bn_images(images, 4, 10, seed=3)
    assert len(drawn) == 40 and len(set(drawn.tolist())) == 40
    np.testing.assert_array_equal(drawn, evaluate.precise_bn_images(images, 4, 10, seed=3))
    with pytest.raises(ValueError, match=r"asks for 6 batches of 10 \(60 images\), but the split has 50"):
        evaluate.precise_bn_images(images, 6, 10)
    with pytest.raises(ValueError, match="needs a tiny_keras ImageClassifier"):
        evaluate.recompute_bn_statistics(bn_classifier().backbone, images, 10)


def test_cli_precise_bn_reports_the_model_both_ways(fixture_zip, tmp_path, capsys):
    model = bn_classifier(size=64)
    path = tmp_path / "bn.keras"
    model.save(path)
    tool = load_tool("evaluate")
    out = tmp_path / "precise.json"
    assert tool.main([str(path), "--data", str(fixture_zip), "--precise-bn", "3", "--precise-bn-batch-size", "4",
                      "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "BatchNorm statistics of 2 layer(s) recomputed from 3 batches of 4 clean training images" in printed
    assert "bn.keras (precise BN)" in printed and "bn.keras (as trained)" in printed
    result = json.loads(out.read_text())
    row = result["models"][0]
    assert result["precise_bn"]["batches"] == 3 and set(row["as_trained"]) == {"top1", "top5", "loss"}
    assert row["loss"] != row["as_trained"]["loss"]  # fresh statistics (0 and 1) replaced by the images'
    # The as-trained figure is what the saved model gives without the option.
    plain = tmp_path / "plain.json"
    assert tool.main([str(path), "--data", str(fixture_zip), "--json", str(plain)]) == 0
    assert json.loads(plain.read_text())["models"][0]["loss"] == pytest.approx(row["as_trained"]["loss"], rel=1e-6)
    # The saved file itself is not changed.
    assert keras.models.load_model(path).backbone.get_layer("bn1").moving_mean.numpy().tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(SystemExit, match="asks for 4 batches of 4 \\(16 images\\), but the split has 12"):
        tool.main([str(path), "--data", str(fixture_zip), "--precise-bn", "4", "--precise-bn-batch-size", "4"])
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(path), "--data", str(fixture_zip), "--precise-bn", "0"])
    assert exit_info.value.code == 2 and "--precise-bn must be at least 1 batch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(path), "--data", str(fixture_zip), "--precise-bn-images", "augmented"])
    assert exit_info.value.code == 2 and "--precise-bn-images needs --precise-bn N" in capsys.readouterr().err
    augmented = tmp_path / "augmented.json"
    assert tool.main([str(path), "--data", str(fixture_zip), "--precise-bn", "3", "--precise-bn-batch-size", "4",
                      "--precise-bn-images", "augmented", "--json", str(augmented)]) == 0
    assert "recomputed from 3 batches of 4 augmented training images" in capsys.readouterr().out
    assert json.loads(augmented.read_text())["precise_bn"]["images"].startswith("train split, through the model's")
