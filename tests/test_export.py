"""Export: SavedModel signatures (uint8, JPEG bytes, logits), .keras copies, reload checks, tools/export.py."""
import io
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import FIXTURE_WNIDS, REPO
from tiny_keras import augment, data, evaluate, export, models
from tiny_keras.data.decode import decode_jpeg

MEAN_IMAGE = np.random.default_rng(0).uniform(0, 255, (64, 64, 3)).astype(np.float32)


def preprocessing(kind):
    if kind == "mean_image":
        layer = augment.MeanImageSubtraction(mean_image=MEAN_IMAGE, name="mean_image")
        layer.build((None, 64, 64, 3))
        return [layer]
    if kind == "featurewise":
        return [augment.Standardization(featurewise_std_normalization=True, mean=[120.0, 110.0, 100.0],
                                        std=[60.0, 55.0, 50.0], name="standardize")]
    if kind == "rescale":
        return [augment.Standardization(rescale=1 / 255.0, name="standardize")]
    raise ValueError(kind)


# One registry model per paper (small variant), wrapped as the engine wraps it:
# (name, preprocessing, crop, image_size).
PAPER_MODELS = [
    ("paper1_resnet", "featurewise", None, 32),     # progressive resizing: a 32px stage
    ("paper2_vgg16", "featurewise", 56, None),      # 56px-only network behind a centre crop
    ("paper3_vgg_z", "mean_image", None, None),
    ("paper4_model2", "rescale", None, None),       # 64px-only network
    ("paper5_cnn8", "mean_image", 56, None),        # mean image, then the 56px crop
]


def build_model(name, pre, crop=None, image_size=None, num_classes=200, seed=0):
    entry = models.get_entry(name)
    keras.utils.set_random_seed(seed)
    shape = (None, None, 3) if entry.size_agnostic else entry.input_shape
    network = models.build(name, num_classes=num_classes, input_shape=shape, **entry.offline_options,
                           **entry.small_options)
    return models.ImageClassifier(network, preprocessing(pre), crop=crop, image_size=image_size)


def keras_probabilities(model, images):
    return evaluate.softmax(model.predict(np.asarray(images, np.float32), verbose=0))


def test_registry_has_one_export_case_per_paper():
    assert sorted(models.get_entry(name).paper for name, *_ in PAPER_MODELS) == [f"paper{i}" for i in range(1, 6)]


@pytest.mark.parametrize("name, pre, crop, image_size", PAPER_MODELS, ids=[m[0] for m in PAPER_MODELS])
def test_savedmodel_export_reloads_with_the_same_predictions(name, pre, crop, image_size, tmp_path):
    model = build_model(name, pre, crop, image_size)
    report = export.export_savedmodel(model, tmp_path / "export")
    assert report["max_abs_diff"] <= 1e-5 and report["jpeg_max_abs_diff"] <= 1e-5 and report["top5_consistent"]

    loaded = tf.saved_model.load(str(tmp_path / "export"))
    assert {"serving_default", "serving_jpeg", "logits"} <= set(loaded.signatures)
    serving = loaded.signatures["serving_default"]
    assert serving.structured_input_signature[1]["images"].dtype == tf.uint8
    assert serving.structured_input_signature[1]["images"].shape.as_list() == [None, 64, 64, 3]

    images = np.random.default_rng(3).integers(0, 256, (6, 64, 64, 3)).astype(np.uint8)
    out = {k: v.numpy() for k, v in serving(images=tf.constant(images)).items()}
    expected = keras_probabilities(model, images)
    assert np.abs(out["probabilities"] - expected).max() <= 1e-5
    top5 = np.argsort(-out["probabilities"], axis=-1, kind="stable")[:, :5]
    np.testing.assert_array_equal(out["top5_indices"], top5)
    official = data.official_classes()
    assert [[w.decode() for w in row] for row in out["top5_wnids"]] == [[official.wnid(i) for i in row] for row in top5]
    logits = loaded.signatures["logits"](images=tf.constant(images, tf.float32))["logits"].numpy()
    assert np.abs(logits - model.predict(images.astype(np.float32), verbose=0)).max() <= 1e-5

    # JPEG bytes (written by PIL, as the dataset's files are) against our decoder's pixels.
    jpegs = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    pixels = np.stack([decode_jpeg(j).numpy() for j in jpegs])
    from_jpeg = loaded.signatures["serving_jpeg"](jpeg=tf.constant(jpegs))["probabilities"].numpy()
    assert np.abs(from_jpeg - keras_probabilities(model, pixels)).max() <= 1e-5


def test_jpeg_signature_decodes_grayscale_and_rejects_other_sizes(tmp_path):
    model = build_model("paper5_cnn8", "mean_image", crop=56)
    export.export_savedmodel(model, tmp_path / "export")
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    gray = io.BytesIO()
    plane = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    Image.fromarray(plane, mode="L").save(gray, "JPEG")
    pixels = decode_jpeg(gray.getvalue()).numpy()
    assert pixels.shape == (64, 64, 3)
    got = loaded.signatures["serving_jpeg"](jpeg=tf.constant([gray.getvalue()]))["probabilities"].numpy()
    assert np.abs(got - keras_probabilities(model, pixels[None])).max() <= 1e-5
    small = io.BytesIO()
    Image.new("RGB", (32, 32)).save(small, "JPEG")
    with pytest.raises(tf.errors.InvalidArgumentError, match="64x64 JPEG"):
        loaded.signatures["serving_jpeg"](jpeg=tf.constant([small.getvalue()]))


def test_keras_export_is_a_standalone_copy(tmp_path):
    model = build_model("paper3_vgg_z", "mean_image")
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    report = export.export(model, tmp_path / "out", format="keras")
    path = tmp_path / "out" / "model.keras"
    assert report["path"] == str(path) and report["max_abs_diff"] <= 1e-5
    reloaded = keras.models.load_model(path)
    assert getattr(reloaded, "optimizer", None) is None  # the copy is the model only, not compiled
    images = np.random.default_rng(4).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    np.testing.assert_allclose(keras_probabilities(reloaded, images), keras_probabilities(model, images), atol=1e-7)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export.export(model, tmp_path / "out", format="keras")


def test_verify_export_raises_on_a_mismatch(tmp_path):
    model = build_model("paper4_model2", "rescale")
    export.export_savedmodel(model, tmp_path / "export")
    other = build_model("paper4_model2", "rescale", seed=1)
    with pytest.raises(export.ExportMismatchError, match=r"export: the reloaded export does not match .*max_abs_diff="):
        export.verify_export(other, tmp_path / "export")


PORTABLE_CASES = [("paper5_cnn8", "mean_image", 56, None), ("paper1_resnet", "featurewise", None, 32)]


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
@pytest.mark.parametrize("name, pre, crop, image_size", PORTABLE_CASES, ids=[m[0] for m in PORTABLE_CASES])
def test_litert_and_onnx_exports_reload_in_their_runtimes_with_the_same_predictions(fmt, name, pre, crop,
                                                                                      image_size, tmp_path):
    model = build_model(name, pre, crop, image_size)
    report = export.export(model, tmp_path / "export", format=fmt)
    assert report["format"] == fmt and report["max_abs_diff"] <= 1e-5 and report["images"] == 8
    path = tmp_path / "export" / export.PORTABLE_FILES[fmt]
    assert sorted(os.listdir(tmp_path / "export")) == sorted([path.name, "wnids.txt"])
    assert (tmp_path / "export" / "wnids.txt").read_text().splitlines() == list(data.official_classes().wnids)
    # Other images, through the runtime itself: the logits of the Keras model.
    images = np.random.default_rng(5).integers(0, 256, (5, 64, 64, 3)).astype(np.uint8)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: images.astype(np.float32)})[0]
    else:
        interpreter = tf.lite.Interpreter(model_path=str(path))
        feed = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(feed["index"], [5, 64, 64, 3])
        interpreter.allocate_tensors()
        interpreter.set_tensor(feed["index"], images.astype(np.float32))
        interpreter.invoke()
        logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(logits, model.predict(images.astype(np.float32), verbose=0), atol=5e-4)
    # A model with other weights does not pass the check against this file.
    with pytest.raises(export.ExportMismatchError, match="does not match the Keras model"):
        export.verify_export(build_model(name, pre, crop, image_size, seed=1), tmp_path / "export")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        export.export(model, tmp_path / "export", format=fmt)


def test_class_list_must_match_the_model_width(tmp_path):
    model = build_model("paper5_cnn8", "mean_image", crop=56, num_classes=3)
    with pytest.raises(ValueError, match="3 outputs but the class list has 200 wnids"):
        export.export_savedmodel(model, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    export.export_savedmodel(model, tmp_path / "export", classes=data.ClassNames(FIXTURE_WNIDS))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    out = loaded.signatures["serving_default"](images=tf.zeros((2, 64, 64, 3), tf.uint8))
    assert out["top5_indices"].shape == (2, 3)  # top-k of only 3 classes
    assert sorted(w.decode() for w in out["top5_wnids"].numpy()[0]) == sorted(FIXTURE_WNIDS)
    with pytest.raises(FileExistsError):
        export.export_savedmodel(model, tmp_path / "export", classes=FIXTURE_WNIDS)
    export.export_savedmodel(model, tmp_path / "export", classes=FIXTURE_WNIDS, overwrite=True)


def test_cli_exports_and_the_savedmodel_serves_without_tiny_keras(tmp_path):
    model = build_model("paper2_vgg16", "featurewise", crop=56)
    model.save(tmp_path / "model.keras")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "tools" / "export.py"), str(tmp_path / "model.keras"), "--out",
           str(tmp_path / "served")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reloaded and checked on 8 images" in proc.stdout and "(allowed 1e-05)" in proc.stdout

    images = np.random.default_rng(5).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        served = tf.saved_model.load({str(tmp_path / "served")!r})
        out = served.signatures["serving_default"](images=tf.constant(np.load({str(tmp_path / "images.npy")!r})))
        np.save({str(tmp_path / "served.npy")!r}, out["probabilities"].numpy())
        print("TINY_KERAS_IMPORTED", "tiny_keras" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TINY_KERAS_IMPORTED False" in proc.stdout
    served = np.load(tmp_path / "served.npy")
    assert np.abs(served - keras_probabilities(model, images)).max() <= 1e-5

    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "exists; pass --overwrite" in proc.stderr


def test_cli_names_an_unreadable_model(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tools_export", REPO / "tools" / "export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SystemExit, match="broken.keras: not a readable Keras model"):
        tool.main([str(tmp_path / "broken.keras"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="nothing.keras: no such file"):
        tool.main([str(tmp_path / "nothing.keras"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_cli_exports_litert_and_onnx(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tools_export", REPO / "tools" / "export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    build_model("paper4_model2", "rescale").save(tmp_path / "model.keras")
    for fmt, file in (("litert", "model.tflite"), ("onnx", "model.onnx")):
        assert tool.main([str(tmp_path / "model.keras"), "--out", str(tmp_path / fmt), "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert f"-> {tmp_path / fmt} ({fmt}, 200 classes)" in out and "reloaded and checked on 8 images" in out
        assert (tmp_path / fmt / file).is_file()
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(tmp_path / "model.keras"), "--out", str(tmp_path / "onnx"), "--format", "onnx"])
    assert exit_info.value.code == 2 and "exists; pass --overwrite" in capsys.readouterr().err


def load_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tools_export", REPO / "tools" / "export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_cli_refuses_an_out_that_would_replace_the_model_or_its_run(tmp_path, capsys):
    tool = load_tool()
    run = tmp_path / "run"
    run.mkdir()
    build_model("paper4_model2", "rescale").save(run / "model.keras")
    (run / "recipe.json").write_text("{}\n")
    (run / "train.log").write_text("trained\n")
    (tmp_path / "alias").symlink_to(run)
    before = {name: (run / name).read_bytes() for name in os.listdir(run)}
    model = str(run / "model.keras")
    cases = [
        ([str(run), "--out", str(run)], f"{run} is the run folder of the model being exported"),
        ([model, "--out", str(run)], f"{run} is the run folder of the model being exported"),
        ([str(run), "--out", str(tmp_path / "alias")], f"{tmp_path / 'alias'} is the run folder of the model"),
        ([str(run), "--out", str(tmp_path)], f"{tmp_path} holds the model being exported"),
        ([model, "--out", model], f"{model} is the model being exported"),
        ([str(run), "--out", str(run), "--format", "keras"], f"{model} is the model being exported"),
        ([model, "--out", str(tmp_path), "--format", "onnx"], f"{tmp_path} holds the model being exported"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            tool.main(argv + ["--overwrite"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"error: --out: {message}" in err, (argv, err)
        assert [line for line in err.splitlines() if "error" in line.lower()] == [err.splitlines()[-1]]
        assert {name: (run / name).read_bytes() for name in os.listdir(run)} == before
    # The library refuses too, when given the model's path.
    with pytest.raises(ValueError, match="is the run folder of the model being exported"):
        export.export(str(run), run, overwrite=True)
    assert {name: (run / name).read_bytes() for name in os.listdir(run)} == before


def test_cli_checks_out_before_loading_the_model(tmp_path, capsys):
    tool = load_tool()
    (tmp_path / "afile.txt").write_text("keep\n")
    (tmp_path / "folder.keras").mkdir()
    model = str(tmp_path / "nothing.keras")  # never read: --out is checked first
    afile = tmp_path / "afile.txt"
    cases = [
        (["--out", str(afile), "--format", "keras"],
         f"{afile} is a file, not a folder: the output cannot be written under it; expected a folder, "
         "or a file name ending in .keras"),
        (["--out", str(afile / "sub")],
         f"{afile} is a file, not a folder: the output cannot be written under it; expected a folder, "
         "which is what --format savedmodel writes"),
        (["--out", str(afile), "--format", "onnx", "--overwrite"],
         f"{afile} is a file; expected a folder, which is what --format onnx writes"),
        (["--out", str(tmp_path / "folder.keras"), "--format", "keras", "--overwrite"],
         f"{tmp_path / 'folder.keras'} is a folder; name a file"),
        # A file where a folder is written: --overwrite would not help, so it is not offered.
        (["--out", str(afile), "--format", "litert"], f"{afile} is a file; expected a folder, which is what "
         "--format litert writes"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            tool.main([model] + argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.endswith(f"error: --out: {message}\n"), (argv, err)
    assert afile.read_text() == "keep\n" and os.listdir(tmp_path / "folder.keras") == []


def test_mixed_bfloat16_model_exports_to_litert_and_onnx_as_a_float32_copy(tmp_path, capsys):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")  # what --precision auto picks on recent GPUs and AMX CPUs
    try:
        model = build_model("paper4_model2", "rescale")
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.network.layers[1].dtype_policy.name == "mixed_bfloat16"
    float32 = build_model("paper4_model2", "rescale")
    assert export.float32_model(float32) == (float32, None)  # a float32 model is exported as it is
    copy, policy = export.float32_model(model)
    assert policy == "mixed_bfloat16" and copy is not model
    assert {layer.dtype_policy.name for layer in copy.network.layers} == {"float32"}
    assert model.network.layers[1].dtype_policy.name == "mixed_bfloat16"  # the model itself is unchanged
    for copied, weight in zip(copy.network.weights, model.network.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(copied), keras.ops.convert_to_numpy(weight))
    images = np.random.default_rng(6).integers(0, 256, (5, 64, 64, 3)).astype(np.float32)
    source = keras.ops.convert_to_numpy(keras.ops.cast(model(images, training=False), "float32"))
    logits = keras.ops.convert_to_numpy(copy(images, training=False))
    assert 0 < np.abs(logits - source).max() <= 0.05 * np.abs(source).max()  # bfloat16 rounding, nothing more

    model.save(tmp_path / "model.keras")
    tool = load_tool()
    for fmt in ("litert", "onnx"):
        report = export.export(str(tmp_path / "model.keras"), tmp_path / fmt, format=fmt)
        assert report["max_abs_diff"] <= 1e-5 and report["exported_dtype"] == "float32"
        assert report["source_dtype_policy"] == "mixed_bfloat16"
        assert 0 < report["source_probabilities_diff"] <= 1e-3 and report["source_logits_rel_diff"] <= 0.05
        path = tmp_path / fmt / export.PORTABLE_FILES[fmt]
        np.testing.assert_allclose(export._portable_logits(str(path), fmt, images), logits, atol=5e-4)
        assert tool.main([str(tmp_path / "model.keras"), "--out", str(tmp_path / f"{fmt}_cli"), "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert "exported in float32: checked above against a float32 copy of the mixed_bfloat16 model" in out
        assert (tmp_path / f"{fmt}_cli" / path.name).is_file()


def test_cli_calls_a_damaged_keras_file_unreadable_not_missing(tmp_path, capsys):
    tool = load_tool()
    build_model("paper4_model2", "rescale").save(tmp_path / "model.keras")
    whole = (tmp_path / "model.keras").read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.json").write_text("{}\n")
    (run / "model.keras").write_bytes(whole[: len(whole) // 2])  # truncated: an interrupted copy
    (tmp_path / "garbage.keras").write_bytes(b"PK\x03\x04 not a zip")
    for model, named in ((run, run / "model.keras"), (tmp_path / "garbage.keras", tmp_path / "garbage.keras")):
        with pytest.raises(SystemExit) as exit_info:
            tool.main([str(model), "--out", str(tmp_path / "out"), "--format", "onnx"])
        message = str(exit_info.value.code)
        assert message == (f"error: {named}: not a readable Keras model (not a zip archive: truncated, or not a "
                           ".keras file)")
        assert "File not found" not in message
    assert not (tmp_path / "out").exists() and (run / "model.keras").stat().st_size == len(whole) // 2


class _Scale(keras.layers.Layer):
    """A layer whose config lacks its argument: it cannot be rebuilt from its config."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor


def test_mixed_precision_model_without_a_float32_copy_is_refused_before_writing(tmp_path):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((64, 64, 3))
        x = keras.layers.GlobalAveragePooling2D()(_Scale(0.5)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(x), name="scaled")
    finally:
        keras.config.set_dtype_policy(previous)
    with pytest.raises(export.PrecisionError) as info:
        export.export(model, tmp_path / "out", format="onnx", classes=FIXTURE_WNIDS)
    message = str(info.value)
    assert message.startswith("scaled: LiteRT and ONNX exports run in float32, and a float32 copy of this "
                              "mixed_bfloat16 model could not be made (TypeError: ")
    assert message.endswith("export it with --format savedmodel (format='savedmodel') or keras instead")
    assert "\n" not in message and not (tmp_path / "out").exists() and os.listdir(tmp_path) == []
