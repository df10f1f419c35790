"""paper2's object localiser: the matching loss against hand-computed cases, boxes moving
exactly with the augmented images, the detection metrics, the model (build, a training
step, .keras reload), bad boxes files, and the reproduction script's --smoke."""
import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, real_dataset_path, requires_real_data, run_python, run_script
from killed_runs import Interrupt, KillAt
from tiny_keras import localization as loc
from tiny_keras import models, plots, runs
from tiny_keras.data import DatasetError, TinyImageNet

GT = [0.5, 0.5, 0.4, 0.4]  # (cx, cy, w, h): corners (0.3, 0.3, 0.7, 0.7)
FAR = [0.1, 0.1, 0.1, 0.1]  # no overlap with GT


# -- matching ----------------------------------------------------------------------------------
def test_match_prefers_an_earlier_step_among_overlapping_ones():
    # match returns, per decoder step, the ground-truth row it is matched to (-1: none).
    # Steps 1 and 2 both overlap; step 2 is closer, but step 1 comes first (Fig. 5, 1 vs 2).
    assert loc.match([GT], [FAR, [0.55, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]]).tolist() == [-1, 0, -1]


def test_match_prefers_an_overlapping_step_to_an_earlier_one_that_misses():
    # Step 0 is earlier but does not overlap (IoU < 0.25): step 2 is taken (Fig. 5, 4 vs 3).
    assert loc.match([GT], [FAR, FAR, [0.52, 0.48, 0.38, 0.4]]).tolist() == [-1, -1, 0]


def test_match_by_distance_among_equals_and_several_boxes():
    # Two boxes, neither step overlaps either: rank decides nothing (both steps are used),
    # distance does: each box goes to the step nearest to it.
    a, b = [0.2, 0.2, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2]
    assert loc.match([a, b], [[0.75, 0.85, 0.05, 0.05], [0.25, 0.15, 0.05, 0.05]]).tolist() == [1, 0]
    # Both overlap both steps' boxes equally well: the earlier step gets the box it is nearer to.
    assert loc.match([a, b], [a, b, FAR]).tolist() == [0, 1, -1]


def test_match_with_more_steps_than_boxes_padding_and_more_boxes_than_steps():
    no_box = [0.0, 0.0, 0.0, 0.0]
    assert loc.match([no_box, GT], [FAR, GT, GT, GT, GT]).tolist() == [-1, 1, -1, -1, -1]
    assert loc.match([no_box], [GT, GT]).tolist() == [-1, -1]  # nothing to match
    assert loc.match([FAR, GT, [0.8, 0.8, 0.2, 0.2]], [GT]).tolist() == [1]  # extra boxes left out
    assert loc.match_batch(np.array([[GT], [FAR]]), np.array([[FAR, GT], [FAR, GT]])).tolist() == [[-1, 0], [0, -1]]


def _bce(logit, label):
    p = 1 / (1 + np.exp(-logit))
    return -(label * np.log(p) + (1 - label) * np.log(1 - p))


def test_matching_loss_is_alpha_l1_of_matched_steps_plus_bce_of_every_step():
    steps = np.array([FAR, [0.55, 0.45, 0.4, 0.3], [0.5, 0.5, 0.4, 0.4]])
    logits = np.array([2.0, -1.0, 0.5])
    y_pred = np.concatenate([steps, logits[:, None]], axis=-1)[None].astype(np.float32)
    y_true = np.array([[GT]], np.float32)
    # Step 1 is matched (earliest overlapping): L1 = 0.05 + 0.05 + 0 + 0.1 = 0.2.
    expected = 2.0 * 0.2 + _bce(2.0, 0) + _bce(-1.0, 1) + _bce(0.5, 0)
    got = float(loc.MatchingLoss(alpha=2.0)(y_true, y_pred))
    assert got == pytest.approx(expected, rel=1e-5)
    # A batch is the mean of its images; an image without boxes has only confidence terms.
    y_pred2 = np.concatenate([y_pred, y_pred]).astype(np.float32)
    y_true2 = np.array([[GT], [[0, 0, 0, 0]]], np.float32)
    empty = _bce(2.0, 0) + _bce(-1.0, 0) + _bce(0.5, 0)
    assert float(loc.MatchingLoss(alpha=2.0)(y_true2, y_pred2)) == pytest.approx((expected + empty) / 2, rel=1e-5)


def test_matching_loss_gradient_reaches_the_matched_box_and_every_confidence_inside_tf_function():
    y_pred = tf.Variable(np.concatenate([np.array([FAR, [0.55, 0.45, 0.4, 0.3], GT]), np.zeros((3, 1))], -1)[None],
                         dtype=tf.float32)
    loss = loc.MatchingLoss(alpha=1.0)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            value = loss(tf.constant([[GT]], tf.float32), y_pred)
        return tape.gradient(value, y_pred)

    g = grads().numpy()[0]
    np.testing.assert_allclose(g[1, :4], [1, -1, 0, -1], atol=1e-6)  # sign of (pred - gt), step 1 only
    assert not g[[0, 2], :4].any()
    np.testing.assert_allclose(g[:, 4], [0.5, -0.5, 0.5], atol=1e-6)  # sigmoid(0) - label


# -- boxes and augmentation --------------------------------------------------------------------
def test_pixel_boxes_and_corners():
    np.testing.assert_allclose(loc.pixel_to_corners([[0, 0, 63, 63], [2, 4, 9, 5], [-1, -1, -1, -1]]),
                               [[0, 0, 1, 1], [2 / 64, 4 / 64, 10 / 64, 6 / 64], [0, 0, 0, 0]])
    boxes = np.array([[0, 0, 63, 63], [2, 4, 9, 5], [10, 10, 10, 10]])
    np.testing.assert_array_equal(loc.corners_to_pixels(loc.pixel_to_corners(boxes)), boxes)
    np.testing.assert_allclose(loc.cxcywh_to_corners(loc.corners_to_cxcywh([[0.1, 0.2, 0.5, 0.9]])),
                               [[0.1, 0.2, 0.5, 0.9]], atol=1e-7)


def _painted(boxes, size=64):
    images = np.zeros((len(boxes), size, size, 3), np.uint8)
    for image, (x0, y0, x1, y1) in zip(images, boxes):
        image[y0:y1 + 1, x0:x1 + 1] = (255, 128, 7)
    return images


def _painted_box(image):
    ys, xs = np.nonzero(image[..., 0])
    return (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else None


def test_flip_and_whole_pixel_shifts_move_boxes_exactly_as_computed_by_hand():
    boxes = np.array([[2, 4, 9, 20], [50, 0, 63, 10]])
    images = _painted(boxes)
    flip = tf.constant([True, False])
    shift = tf.constant([[3 / 64, -2 / 64], [5 / 64, 4 / 64]], tf.float32)
    out, corners = loc.transform(images, loc.pixel_to_corners(boxes)[:, None], flip, tf.ones([2]), shift)
    # Image 0: flipped (x -> 63 - x: 54..61), then 3 px right and 2 px up.
    # Image 1: 5 px right (clipped at 63) and 4 px down.
    expected = [(57, 2, 63, 18), (55, 4, 63, 14)]
    assert [tuple(b) for b in loc.corners_to_pixels(corners.numpy()[:, 0]).tolist()] == expected
    assert [_painted_box(image) for image in out.numpy()] == expected
    assert (out.numpy()[1, 4:15, 55:64] == (255, 128, 7)).all()
    assert out.numpy()[1, :4].sum() == 0  # what came from outside the image is black


def _random_boxes(n, seed):
    rng = np.random.default_rng(seed)
    x0, y0 = rng.integers(0, 56, n), rng.integers(0, 56, n)
    x1, y1 = np.minimum(63, x0 + rng.integers(1, 40, n)), np.minimum(63, y0 + rng.integers(1, 40, n))
    return np.stack([x0, y0, x1, y1], 1)


def _check_painted_equals_boxes(out, corners):
    for image, box in zip(np.asarray(out), np.asarray(corners)[:, 0]):
        painted = _painted_box(image)
        if box[2] <= box[0]:
            assert painted is None
            continue
        assert painted == tuple(loc.corners_to_pixels(box).tolist())
        x0, y0, x1, y1 = painted
        assert (image[y0:y1 + 1, x0:x1 + 1, 0] == 255).all()  # the whole box is painted, nothing else
        assert (image[..., 0] > 0).sum() == (x1 - x0 + 1) * (y1 - y0 + 1)


def test_random_flip_shift_scale_moves_boxes_exactly_eagerly_and_inside_tf_data():
    boxes = _random_boxes(64, seed=3)
    images, corners = _painted(boxes), loc.pixel_to_corners(boxes)[:, None]
    augment = loc.BoxAugment(flip=True, shift=0.15, scale=0.2)
    out, moved = augment(images, corners, tf.constant([7, 1]))
    flip, scale, shift = augment.draw(64, tf.constant([7, 1]))
    assert 0 < flip.numpy().sum() < 64 and np.ptp(scale.numpy()) > 0.2 and np.ptp(shift.numpy()) > 0.2
    _check_painted_equals_boxes(out, moved)
    ds = tf.data.Dataset.from_tensors((images, corners)).map(lambda x, c: augment(x, c, tf.constant([7, 1])))
    out_ds, moved_ds = next(iter(ds))
    np.testing.assert_array_equal(out_ds.numpy(), out.numpy())  # the same draws in tf.data
    np.testing.assert_array_equal(moved_ds.numpy(), moved.numpy())


def test_dataset_targets_are_the_augmented_boxes_as_cxcywh():
    boxes = _random_boxes(8, seed=4)
    split = loc.BoxSplit(_painted(boxes), loc.pixel_to_corners(boxes), [f"{i}.JPEG" for i in range(8)])
    images, targets = next(iter(loc.make_dataset(split, 8, seed=1, augment=loc.BoxAugment())))
    assert images.dtype == tf.float32 and targets.shape == (8, 1, 4)
    _check_painted_equals_boxes(images.numpy().astype(np.uint8), loc.cxcywh_to_corners(targets.numpy()))


# -- metrics and baselines ---------------------------------------------------------------------
def test_iou_top_box_corloc_and_ap_by_hand():
    assert loc.iou([0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75]) == pytest.approx(1 / 7)
    assert loc.iou([0, 0, 0.5, 0.5], [0.5, 0, 1, 1]) == 0.0
    truth = np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]],        # top (0.9) exact: IoU 1
                     [[0.5, 0.5, 1, 0.75], [0, 0, 0.1, 0.1]],      # top (0.8) half: IoU 0.5
                     [[0, 0, 0.5, 0.5], [0, 0, 1, 1]]])            # top (0.6) quarter: IoU 0.25
    scores = np.array([[0.9, 0.3], [0.8, 0.7], [0.6, 0.2]])
    np.testing.assert_allclose(loc.top_box_ious(pred, scores, truth), [1, 0.5, 0.25])
    result = loc.evaluate_boxes(pred, scores, truth)
    assert result["mean_iou"] == pytest.approx(1.75 / 3) and result["corloc"] == pytest.approx(2 / 3)
    # Ranked: 0.9 TP, 0.8 TP, 0.7 FP, 0.6 FP, 0.3 FP (its box is taken), 0.2 TP.
    # Precision at recall 1/3, 2/3, 1: 1, 1, 3/6 -> AP = 1/3 + 1/3 + 1/3 * 1/2.
    assert result["ap50"] == pytest.approx(5 / 6)
    assert result["images"] == 3


def test_ap_counts_a_duplicate_as_a_false_positive_and_missing_boxes_as_lost_recall():
    truth = np.array([[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]])  # one image, two boxes
    pred = np.array([[[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]]])  # found one, twice
    # 1 TP at precision 1 (recall 1/2), then a duplicate: AP = 1/2.
    assert loc.average_precision(pred, np.array([[0.9, 0.8]]), truth) == pytest.approx(0.5)


def test_best_constant_box_and_the_full_image():
    truth = loc.pixel_to_corners(np.array([[16, 16, 47, 47]] * 3 + [[0, 0, 63, 63]]))
    box = loc.best_constant_box(truth)
    np.testing.assert_allclose(box, [0.25, 0.25, 0.75, 0.75])  # 3 x IoU 1 + 1 x 0.25 beats the alternatives
    n = len(truth)
    best = loc.evaluate_boxes(*loc.constant_predictions(box, n), truth)
    full = loc.evaluate_boxes(*loc.constant_predictions(loc.FULL_IMAGE, n), truth)
    assert best["mean_iou"] == pytest.approx(3.25 / 4) and best["corloc"] == 0.75
    assert full["mean_iou"] == pytest.approx(1.75 / 4) and full["corloc"] == 0.25


# -- the model ---------------------------------------------------------------------------------
def test_registry_lists_the_localiser_apart_from_the_classifiers():
    assert "paper2_localizer" not in models.names()
    assert models.names("localization") == ["paper2_localizer"]
    assert "paper2_localizer" in models.names(None)
    assert models.get_entry("paper2_localizer").task == "localization"
    with pytest.raises(ValueError, match="Unknown task"):
        models.names("detection")


def test_default_localiser_is_paper2_resnet18_features_and_an_lstm():
    model = models.build("paper2_localizer")
    assert model.count_params() == 12_253_765  # ResNet-18 features (11.18M) + code and decoder
    assert tuple(model.output.shape) == (None, 5, 5)
    encoder = model.get_layer("paper2_resnet18_features")
    assert tuple(encoder.output.shape) == (None, 8, 8, 512)
    assert model.get_layer("decoder_lstm").units == 256


def test_localiser_trains_a_step_and_reloads_with_identical_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    entry = models.get_entry("paper2_localizer")
    model = models.build("paper2_localizer", **entry.small_options)
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    targets = np.array([[GT], [FAR], [[0.5, 0.5, 1, 1]], [[0.3, 0.6, 0.2, 0.5]]], np.float32)
    out = keras.ops.convert_to_numpy(model(images))
    assert out.shape == (4, 3, 5) and (out[..., :4] >= 0).all() and (out[..., :4] <= 1).all()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loc.MatchingLoss(), jit_compile=False)
    before = [w.copy() for w in model.get_weights()]
    first = model.train_on_batch(images, targets)
    second = model.train_on_batch(images, targets)
    assert np.isfinite(first) and second < first
    assert sum(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())) >= len(before) // 2
    model.save(tmp_path / "localizer.keras")
    again = keras.models.load_model(tmp_path / "localizer.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(images)), keras.ops.convert_to_numpy(model(images)))
    assert isinstance(again.loss, loc.MatchingLoss) and again.loss.alpha == 6.4
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()


# Training code `import tiny_keras` must not load: the localiser's task loads it on first use.
TRAINING_MODULES = {"tiny_keras.localization.task", "tiny_keras.callbacks", "tiny_keras.train", "tiny_keras.engine.run",
                    "tiny_keras.provenance", "tiny_keras.runs", "tiny_keras.reproduce", "tiny_keras.data"}

IMPORT_CHECK = """
import json, sys
import keras
import tiny_keras
from tiny_keras import localization
training = sorted(set(sys.argv[2].split(",")) & set(sys.modules))
model = keras.models.load_model(sys.argv[1])
after_load = sorted(set(sys.argv[2].split(",")) & set(sys.modules))
print(json.dumps({"training": training, "after_load": after_load, "loss": type(model.loss).__name__,
                  "alpha": model.loss.alpha, "task": localization.Localization.__module__,
                  "options": localization.OPTIONS["alpha"]}))
"""


def test_import_registers_the_localiser_without_its_training_code(tmp_path):
    """A fresh ``import tiny_keras`` loads no training module, yet loads a saved, compiled
    localiser; the engine's ``Localization`` task is still there (imported on first use)."""
    model = models.build("paper2_localizer", **models.get_entry("paper2_localizer").small_options)
    model.compile(optimizer="adam", loss=loc.MatchingLoss(alpha=3.0), jit_compile=False)
    model.save(tmp_path / "localizer.keras")
    out = run_python("-c", IMPORT_CHECK, tmp_path / "localizer.keras", ",".join(sorted(TRAINING_MODULES)))
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"training": [], "after_load": [], "loss": "MatchingLoss", "alpha": 3.0,
                      "task": "tiny_keras.localization.task", "options": 6.4}


def test_localiser_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_boxes"):
        models.build("paper2_localizer", max_boxes=0, encoder="small")
    with pytest.raises(ValueError, match="fixed height and width"):
        models.build("paper2_localizer", input_shape=(None, None, 3), encoder="small")
    with pytest.raises(ValueError, match="Unknown model"):
        models.build("paper2_localizer", encoder="resnet")


# -- bad boxes files ---------------------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    ("n01443537_1.JPEG\t1\t2\t40", r"n01443537_boxes.txt line 2: expected 5 tab-separated fields"),
    ("n01443537_1.JPEG\t1\t2\t40\tx", r"n01443537_boxes.txt line 2: box coordinates must be integers"),
    ("n01443537_1.JPEG\t1\t2\t64\t50", r"n01443537_boxes.txt line 2: box \(1, 2, 64, 50\) is not inside the 64x64"),
    ("n01443537_1.JPEG\t-3\t2\t40\t50", r"n01443537_boxes.txt line 2: box \(-3, 2, 40, 50\) is not inside"),
    ("n01443537_1.JPEG\t30\t2\t20\t50", r"n01443537_boxes.txt line 2: box \(30, 2, 20, 50\) is not inside"),
])
def test_bad_boxes_line_names_the_file_and_line(fixture_copy, line, message):
    path = fixture_copy / "train" / "n01443537" / "n01443537_boxes.txt"
    lines = path.read_text().splitlines()
    lines[1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        TinyImageNet(fixture_copy).records("train")


def test_val_box_outside_the_image_names_the_file_and_line(fixture_copy):
    path = fixture_copy / "val" / "val_annotations.txt"
    lines = path.read_text().splitlines()
    name, wnid = lines[2].split("\t")[:2]
    lines[2] = f"{name}\t{wnid}\t0\t0\t63\t70"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"val_annotations.txt line 3: box \(0, 0, 63, 70\) is not inside"):
        TinyImageNet(fixture_copy).records("val")


def _load_tool(name, folder="tools"):
    """``folder/name.py`` (a tool or a reproduction script) as a module, to call in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- data and the script -----------------------------------------------------------------------
def test_goldfish_split_is_fixed_disjoint_and_eighty_percent(fixture_zip):
    train, held, name = loc.load_boxes(fixture_zip, progress=False)
    again, held_again, _ = loc.load_boxes(fixture_zip, progress=False)
    assert (len(train), len(held)) == (3, 1) and name == "1 of the 4 n01443537 training images"
    assert train.files == again.files and held.files == held_again.files
    assert not set(train.files) & set(held.files)
    # The fixture writes box (k, k + 1, 40 + k, 50 + k) for image k.
    k = int(held.files[0].split("_")[1].split(".")[0])
    np.testing.assert_allclose(held.corners[0], np.array([k, k + 1, 41 + k, 51 + k]) / 64)


def test_several_classes_are_split_together(fixture_zip):
    train, held, name = loc.load_boxes(fixture_zip, classes=["n01443537", "n01629819"], progress=False)
    assert (len(train), len(held)) == (6, 2) and name == "2 of the 8 n01443537, n01629819 training images"
    assert {f.split("_")[0] for f in train.files + held.files} == {"n01443537", "n01629819"}


def test_localisation_recipes_refuse_what_the_task_does_not_do():
    from tiny_keras.recipe import Recipe, Stage
    from tiny_keras.localization.task import Localization

    with pytest.raises(ValueError, match="paper2_resnet18 is a classification model; the recipe's task is "
                                         "'localization'"):
        Recipe(paper="paper2", model="paper2_resnet18", task="localization", stages=[Stage()]).validate()
    with pytest.raises(ValueError, match="paper2_localizer is a localization model; the recipe's task is "
                                         "'classification'"):
        Recipe(paper="paper2", model="paper2_localizer", stages=[Stage()]).validate()
    with pytest.raises(ValueError, match=r"it does not take \{'crop': 56, 'stages\[0\].image_size': 32\}"):
        Localization(small_recipe().replace(crop=56).with_stage_changes(image_size=32))
    with pytest.raises(ValueError, match=r"task_options of a localisation recipe are .*Received: \['flips'\]"):
        Localization(small_recipe(flips=False))
    with pytest.raises(ValueError, match="data must be the zip, its folder or None"):
        Localization(small_recipe()).load_splits({"train": None, "val": None}, "unused")


@requires_real_data
def test_goldfish_on_the_real_data_is_400_and_100():
    train, held, _ = loc.load_boxes(real_dataset_path(), progress=False)
    assert (len(train), len(held)) == (400, 100)
    assert ((held.corners[:, 2:] > held.corners[:, :2]).all() and (held.corners >= 0).all()
            and (held.corners <= 1).all())


def small_recipe(**changes):
    """The goldfish recipe with a small encoder, for runs of a few steps."""
    from tiny_keras.recipes import paper2_localization

    options = dict(encoder="small", encoder_options={"filters": (8, 8, 16, 16)}, epochs=1, batch_size=8)
    return paper2_localization.recipe(**{**options, **changes})


@pytest.mark.slow
def test_smoke_run_and_boxes_plot(fixture_zip, tmp_path):
    out = run_script("paper2_localization.py", "--data", fixture_zip, "--workdir", tmp_path, "--smoke")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    workdir = tmp_path / "goldfish"
    results = json.loads((workdir / "results.json").read_text())
    assert results["task"] == "localization" and results["classes"] == "n01443537"
    assert results["recipe"]["per_class"] == 2 and results["recipe"]["model_options"]["encoder"] == "small"
    assert [r["method"] for r in results["rows"]] == ["ours", "best constant box", "full image"]
    for row in results["rows"]:
        assert 0 <= row["mean_iou"] <= 1 and row["corloc"] in (0.0, 1.0) and row["images"] == 1
    assert results["rows"][2]["box"] == [0.0, 0.0, 1.0, 1.0]
    assert "ours" in out.stdout and "best constant box" in out.stdout and "CorLoc" in out.stdout
    run = json.loads((workdir / "run.json").read_text())
    assert "paper2_localization.py" in run["sessions"][0]["command"] and run["train_seconds"] > 0
    assert run["sessions"][0]["session"]["jit_compile"] is False  # the matching loss calls scipy
    with open(workdir / "stages" / "train" / "history.csv", newline="") as f:  # as a classification stage's
        history = list(csv.DictReader(f))
    assert [r["epoch"] for r in history] == ["0"]
    assert set(history[0]) == {"epoch", "loss", "learning_rate", "val_loss", "val_mean_iou", "val_corloc"}
    assert 0 <= float(history[0]["val_mean_iou"]) <= 1 and float(history[0]["learning_rate"]) > 0
    assert "val_mean_iou" in (workdir / "train.log").read_text()  # the epoch line
    from tiny_keras import status

    found, row = status.read_status(workdir), results["runs"][0]
    assert found["state"] == "finished" and found["stages"][0]["score"] == "val_mean_iou"
    assert found["stages"][0]["result"] == {k: 100.0 * row[k] for k in ("mean_iou", "corloc", "ap50")}
    assert f"finished: mean IoU {100 * row['mean_iou']:.2f}%, CorLoc {100 * row['corloc']:.2f}%, AP50 " in \
        status.format_status(found)
    from tiny_keras import published

    with pytest.raises(published.PublishError, match="smoke"):
        published.publish(workdir, tmp_path / "results")
    curves = plots.make_plot("curves", workdir)  # the localiser's scores, not a classifier's top-1
    assert [ax.get_ylabel() for ax in curves.axes[:2]] == ["loss (Eq. 1, matched boxes)",
                                                            "held-out mean IoU, CorLoc (%)"]
    assert [line.get_label() for line in curves.axes[1].get_lines()] == ["val mean_iou", "val corloc"]
    png = tmp_path / "boxes.png"
    plot_tool = _load_tool("plot")
    assert plot_tool.BOX_KINDS == plots.BOX_KINDS
    with pytest.raises(plots.PlotError, match="--data"):
        plots.make_plot("boxes", workdir)
    with pytest.raises(plots.PlotError, match="not a localisation run"):
        plots.make_plot("boxes", tmp_path, data=fixture_zip)
    plot_tool.main(["boxes", str(workdir), "--data", str(fixture_zip), "--out", str(png), "--width", "400",
                    "--height", "300", "--samples", "1"])
    from PIL import Image

    image = Image.open(png)
    assert image.size == (400, 300)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert ((pixels[:, 0] < 60) & (pixels[:, 1] > 180) & (pixels[:, 2] < 60)).any() or \
        ((pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)).any()  # a green or red box drawn


@pytest.mark.slow
def test_smoke_all_classes_is_one_localiser_held_out_on_the_official_val_boxes(fixture_zip, tmp_path):
    """``--model all_classes --smoke``, in-process (a second subprocess would double the cost
    of the smoke run above): every class's training images, held out the official val set."""
    from tiny_keras import reproduce

    reproduce.run_paper("paper2_localization", ["--data", str(fixture_zip), "--workdir", str(tmp_path), "--model",
                                                "all_classes", "--smoke", "--verbose", "0"])
    results = json.loads((tmp_path / "all_classes" / "results.json").read_text())
    classes = len(TinyImageNet(fixture_zip).classes)
    assert results["classes"] == "all" and results["held_out"] == "the official val set" and classes > 1
    assert [r["method"] for r in results["rows"]] == ["ours", "best constant box", "full image"]
    assert all(r["images"] == classes for r in results["rows"])  # --smoke: one val image per class
    split = json.loads((tmp_path / "all_classes" / "split.json").read_text())
    assert split["train_files"] == 2 * classes and len(split["held_out_files"]) == classes
    assert all(name.startswith("val_") for name in split["held_out_files"])


def test_command_line_reports_bad_data_in_one_line(tmp_path, capsys):
    """The script's bad inputs are every paper script's (``tiny_keras.reproduce``): one line
    naming --data and exit status 1, the traceback with --debug; a bad flag exits with 2."""
    from tiny_keras import reproduce

    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--data", str(empty), "--workdir", str(tmp_path / "run"), "--smoke"]
    with pytest.raises(SystemExit) as exit_info:
        reproduce.run_paper("paper2_localization", argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --data {empty}") and "\n" not in err
    with pytest.raises(DatasetError):
        reproduce.run_paper("paper2_localization", [*argv, "--overwrite", "--debug"])
    for flags, message in ((["--batch-size", "0"], "--batch-size: expected a whole number of at least 1"),
                           (["--max-boxes", "0"], "--max-boxes: expected a whole number of at least 1. Received: '0'"),
                           (["--strategy", "mirrored"],
                            "error: strategy 'mirrored': the localiser trains on one device")):
        with pytest.raises(SystemExit) as exit_info:
            reproduce.run_paper("paper2_localization", [*argv[:4], *flags])
        assert exit_info.value.code != 0
        assert message in capsys.readouterr().err + str(exit_info.value.code)


def test_another_backend_is_refused_in_one_line_before_anything_is_written(fixture_zip, tmp_path):
    """On JAX the script exits with status 1 and one line naming KERAS_BACKEND (the task's
    own check, ``Localization.check_session``), and leaves no run in the folder."""
    workdir = tmp_path / "run"
    done = run_python(REPO / "reproductions" / "paper2_localization.py", "--data", fixture_zip, "--workdir", workdir,
                      "--smoke", env={"KERAS_BACKEND": "jax"})
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.strip() == ("error: KERAS_BACKEND=jax: the localiser trains on the TensorFlow backend only "
                                   "(its matching loss calls scipy through tf.numpy_function); set "
                                   "KERAS_BACKEND=tensorflow")
    assert not (workdir / "goldfish").exists()


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(fixture_zip, tmp_path):
    """On the engine, the localiser resumes as a classifier does: killed in epoch 2, started
    again, it ends with the weights, history and scores of a run never stopped."""
    from tiny_keras import engine

    recipe = small_recipe(epochs=3).with_stage_changes(steps_per_epoch=2, batch_size=2)
    whole = engine.train(recipe, tmp_path / "whole", data=fixture_zip, verbose=0)
    with pytest.raises(Interrupt):
        engine.train(recipe, tmp_path / "killed", data=fixture_zip, verbose=0, extra_callbacks=[KillAt(epoch=1)])
    assert json.loads((tmp_path / "killed" / "state.json").read_text())["epochs_done"] == 1
    resumed = engine.train(recipe, tmp_path / "killed", data=fixture_zip, verbose=0)
    for a, b in zip(*(keras.models.load_model(tmp_path / run / "model.keras").get_weights()
                      for run in ("whole", "killed"))):
        np.testing.assert_array_equal(a, b)
    assert resumed["rows"] == whole["rows"] and len(resumed["rows"]) == 3
    # Ours are the saved model's boxes on the held-out images, predicted afresh here.
    held, options = loc.held_out_split(tmp_path / "whole", fixture_zip)
    saved = keras.models.load_model(tmp_path / "whole" / "model.keras")
    corners, scores = loc.decode(saved.predict(held.images.astype(np.float32), verbose=0))
    ours = loc.metrics_row("ours", corners, scores, held.corners,
                           (scores >= options["confidence_threshold"]).sum(axis=1).mean())
    assert whole["rows"][0] == ours
    histories = [(tmp_path / run / "stages" / "train" / "history.csv").read_text() for run in ("whole", "killed")]
    assert histories[0] == histories[1] and len(histories[0].splitlines()) == 4
    # Adam's rate decays to 0 over the stage's 6 steps: each epoch logs its last step's.
    with open(tmp_path / "whole" / "stages" / "train" / "history.csv", newline="") as f:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(rates, [1e-3 * (1 + np.cos(np.pi * s / 6)) / 2 for s in (1, 3, 5)], rtol=1e-5)
    # Continued on other images, the run is refused: its held-out set would change.
    shutil.copytree(tmp_path / "killed", tmp_path / "moved")
    (tmp_path / "moved" / "results.json").unlink()
    split = json.loads((tmp_path / "moved" / "split.json").read_text())
    (tmp_path / "moved" / "split.json").write_text(json.dumps(dict(split, held_out_files=["n01443537_0.JPEG"])))
    with pytest.raises(runs.RunFolderError, match="its images differ from those the run in .* was started on"):
        engine.train(recipe, tmp_path / "moved", data=fixture_zip, verbose=0)
    # A run folder of the localiser before it trained on the engine is refused, not resumed:
    # by the engine, and by the script, whose runs went to --workdir itself then.
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text("{}")
    with pytest.raises(runs.RunFolderError, match="written by an older version"):
        engine.train(recipe, old, data=fixture_zip, verbose=0)
    from tiny_keras import reproduce

    with pytest.raises(SystemExit, match=f"--workdir {old} holds a localisation run written by an older version"):
        reproduce.run_paper("paper2_localization", ["--data", str(fixture_zip), "--workdir", str(old), "--smoke"])
    assert sorted(os.listdir(old)) == ["config.json"]  # nothing written


def test_the_default_workdir_is_checked_for_an_older_localisation_run(fixture_zip, tmp_path, monkeypatch):
    # Without --workdir the runs go to runs/paper2_localization: that folder is the one checked.
    from tiny_keras import reproduce

    old = tmp_path / "runs" / "paper2_localization"
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    message = "--workdir runs/paper2_localization holds a localisation run written by an older version"
    with pytest.raises(SystemExit, match=message):
        reproduce.run_paper("paper2_localization", ["--data", str(fixture_zip), "--smoke"])
    assert sorted(os.listdir(old)) == ["config.json"]


def test_a_finished_run_is_published_with_its_record_and_table(fixture_zip, tmp_path):
    from tiny_keras import engine, published

    recipe = small_recipe()
    results = engine.train(recipe, tmp_path / "goldfish", data=fixture_zip, verbose=0)
    target = published.publish(tmp_path / "goldfish", tmp_path / "results", note="One epoch only.")
    assert target == str(tmp_path / "results" / "paper2_localization" / "goldfish")
    assert sorted(os.listdir(target)) == sorted([*published.LOCALIZATION_FILES, "stages", "note.md"])  # no weights
    assert os.listdir(os.path.join(target, "stages", "train")) == ["history.csv"]
    assert published.read_published(tmp_path / "results") == {}  # not a row of the papers table
    table = published.localization_markdown(tmp_path / "results")
    ours = results["rows"][0]
    assert f"| ours | {100 * ours['mean_iou']:.1f} | {100 * ours['corloc']:.1f} | {100 * ours['ap50']:.1f} |" in table
    assert "small encoder, 1 epochs" in table
    command = json.loads((tmp_path / "goldfish" / "run.json").read_text())["sessions"][-1]["command"]
    assert "| full image (0.0, 0.0, 1.0, 1.0) | " in table and f"```bash\n{command}\n```\n\nOne epoch only." in table
    with pytest.raises(published.PublishError, match="exists"):
        published.publish(tmp_path / "goldfish", tmp_path / "results")
    # Run again over it, the run starts over: its record names only the session that trained it.
    engine.train(recipe, tmp_path / "goldfish", data=fixture_zip, verbose=0, overwrite=True)
    sessions = json.loads((tmp_path / "goldfish" / "run.json").read_text())["sessions"]
    assert len(sessions) == 1

