"""Export a trained model for serving, and check the export against the Keras model.

A SavedModel export (:func:`export_savedmodel`, written by ``keras.export.ExportArchive``)
holds the whole Keras model, preprocessing included, behind three signatures;
``tf.saved_model.load`` alone runs it (no Keras, no ``tiny_keras``):

- ``serving_default``: ``images`` uint8 ``[None, 64, 64, 3]`` ->
  ``probabilities`` float32 ``[None, C]``, ``top5_indices`` int32 ``[None, 5]`` (highest
  first; ties: lower index first) and ``top5_wnids`` string ``[None, 5]``;
- ``serving_jpeg``: ``jpeg`` string ``[None]`` (encoded 64x64 JPEG files) -> the same
  outputs; decoded as the package decodes its data (``tf.io.decode_jpeg(channels=3,
  dct_method="INTEGER_ACCURATE")``, grayscale repeated to 3 channels);
- ``logits``: ``images`` float32 ``[None, 64, 64, 3]`` (0..255) -> ``logits`` float32
  ``[None, C]``: what ``tiny_keras.evaluate`` uses when the export is an ensemble member.

The wnids are a constant string tensor gathered by the top-5 indices; they come from the
class list (``classes``: a ``ClassNames`` or a list of wnids; default the official 200
classes), whose length must equal the model's output width.

The SavedModel export runs on Keras's TensorFlow backend (its serving functions are
TensorFlow code); a model trained on JAX or PyTorch is exported there from its ``.keras``
file, which loads on TensorFlow with the same predictions.

A ``.keras`` export (:func:`export_keras`, any backend) is a copy of the model without optimizer state
or training configuration; it loads with ``import tiny_keras; keras.models.load_model``.

LiteRT and ONNX exports (:func:`export_portable`) go through Keras's own
``model.export(format="litert" | "onnx")``: a folder holding ``model.tflite`` or
``model.onnx`` and ``wnids.txt`` (the class of each output, one per line). The file takes
float32 ``[N, 64, 64, 3]`` images (0..255; the preprocessing is inside) and returns logits
``[N, C]``. It is reloaded with LiteRT's interpreter (``ai_edge_litert``, else
``tf.lite.Interpreter``) or ``onnxruntime`` and checked like the others. LiteRT needs the
TensorFlow backend here; ONNX needs ``pip install "tiny_keras[onnx]"`` (tf2onnx, onnx,
onnxruntime). A mixed-precision model (e.g. ``mixed_bfloat16``) is exported as a float32
copy (:func:`float32_model`), which the check compares with the export; the copy's own
distance from the model is reported (:func:`precision_report`).

Every export is written to a temporary folder, reloaded and checked by
:func:`verify_export` (probabilities within ``1e-5`` of the Keras model's, on uint8 images
and, for a SavedModel, on JPEG bytes decoded by our decoder), and only then moved to its
place; an existing destination is replaced only with ``overwrite=True``.
"""
import importlib.util
import os
import tempfile

import keras
import numpy as np

from tiny_keras import backend
from tiny_keras import evaluate as evaluate_lib
from tiny_keras import files, runs
from tiny_keras.backend import tf
from tiny_keras.data import ClassNames, official_classes
from tiny_keras.data.decode import decode_jpeg

IMAGE_SIZE = 64
TOP_K = 5
TOLERANCE = 1e-5  # max abs difference allowed between the export's probabilities and Keras's
FORMATS = ("savedmodel", "keras", "litert", "onnx")
PORTABLE_FILES = {"litert": "model.tflite", "onnx": "model.onnx"}
WNIDS_FILE = "wnids.txt"


class ExportMismatchError(ValueError):
    """The reloaded export does not predict what the Keras model predicts."""


def class_wnids(num_classes, classes=None):
    """The wnids naming a model's ``num_classes`` outputs (see the module docstring)."""
    if classes is None:
        classes = official_classes()
    wnids = list(classes.wnids) if isinstance(classes, ClassNames) else [str(w) for w in classes]
    if len(wnids) != num_classes:
        raise ValueError(f"the model has {num_classes} outputs but the class list has {len(wnids)} wnids; "
                         f"pass the {num_classes} classes the model was trained on (classes=...)")
    return wnids


def load_keras_model(source):
    """A Keras model from a model, a ``.keras`` file or a run folder (its ``model.keras``)."""
    if isinstance(source, keras.Model):
        return source
    paths = runs.member_paths(source)
    if len(paths) != 1 or os.path.isdir(paths[0]):
        raise runs.ModelLoadError(
            f"{source}: expected one Keras model (a .keras file or a run folder); found "
            + ("a SavedModel folder" if paths and os.path.isdir(paths[0]) else f"{len(paths)} model files"))
    return evaluate_lib.load_member(paths[0]).model


LOW_PRECISION = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")
PRECISION_TOLERANCE = 0.05  # the float32 copy's logits against the mixed-precision model's, relative to their range


class PrecisionError(ValueError):
    """A mixed-precision model that cannot be exported in float32 to LiteRT or ONNX."""


def _float32_config(config, found):
    """``config`` (a serialized Keras object) with every low-precision dtype made float32;
    the policies replaced are added to ``found``."""
    if isinstance(config, list):
        return [_float32_config(item, found) for item in config]
    if not isinstance(config, dict):
        return config
    config = {key: _float32_config(value, found) for key, value in config.items()}
    if config.get("dtype") in LOW_PRECISION:  # a policy by name; a KerasTensor's or an InputLayer's dtype
        found.add(config["dtype"])
        config["dtype"] = "float32"
    policy = config.get("config")
    if str(config.get("class_name", "")).endswith("DTypePolicy") and isinstance(policy, dict):
        if policy.get("name") in LOW_PRECISION:
            found.add(policy["name"])
            config["config"] = {**policy, "name": "float32"}
    return config


def float32_model(model):
    """``(copy, policy)``: a float32 copy of a mixed-precision ``model`` (rebuilt from its
    config with every layer's dtype policy float32, its weights copied) and the policy it
    replaced (e.g. ``"mixed_bfloat16"``); ``(model, None)`` for a float32 model.

    LiteRT and ONNX exports are made from the copy: their converters and runtimes do not
    run the bfloat16 graph (onnxruntime rejects ``tensor(bfloat16)``; LiteRT needs Flex ops)."""
    found = {layer.dtype_policy.name for layer in model._flatten_layers()} & set(LOW_PRECISION)
    if not found:
        return model, None
    policy = sorted(found, key=LOW_PRECISION.index)[0]
    try:
        copy = keras.saving.deserialize_keras_object(_float32_config(keras.saving.serialize_keras_object(model),
                                                                     found))
        if not copy.built:
            copy.build_from_config(model.get_build_config())
        with tempfile.TemporaryDirectory() as folder:  # matched layer by layer, as a .keras file's are
            model.save_weights(os.path.join(folder, "model.weights.h5"))
            copy.load_weights(os.path.join(folder, "model.weights.h5"))
    except Exception as err:  # noqa: BLE001 - any failure means the same thing here
        raise PrecisionError(
            f"{model.name}: LiteRT and ONNX exports run in float32, and a float32 copy of this {policy} model "
            f"could not be made ({type(err).__name__}: {str(err)[:200]}); export it with --format savedmodel "
            "(format='savedmodel') or keras instead") from None
    return copy, policy


def precision_report(model, copy, policy, images=None):
    """How far the float32 ``copy`` predicts from the mixed-precision ``model``: ``{"exported_dtype",
    "source_dtype_policy", "source_probabilities_diff", "source_logits_rel_diff"}``. Raises
    :class:`PrecisionError` if the logits differ by more than ``PRECISION_TOLERANCE`` of their range
    (far more than bfloat16 rounding gives: the copy would not be the model)."""
    images = np.asarray(check_images() if images is None else images, np.float32)
    source = np.concatenate([keras.ops.convert_to_numpy(keras.ops.cast(model(images[i:i + 64], training=False),
                                                                        "float32")) for i in range(0, len(images), 64)])
    copied = np.concatenate([keras.ops.convert_to_numpy(copy(images[i:i + 64], training=False))
                             for i in range(0, len(images), 64)])
    scale = float(np.max(np.abs(source))) or 1.0
    report = {"exported_dtype": "float32", "source_dtype_policy": policy,
              "source_probabilities_diff": _max_diff(evaluate_lib.softmax(copied), evaluate_lib.softmax(source)),
              "source_logits_rel_diff": _max_diff(copied, source) / scale}
    if not report["source_logits_rel_diff"] <= PRECISION_TOLERANCE:
        raise PrecisionError(
            f"{model.name}: the float32 copy of this {policy} model predicts logits up to "
            f"{report['source_logits_rel_diff']:.3g} of their range away from the model's (allowed "
            f"{PRECISION_TOLERANCE:g}); export it with --format savedmodel (format='savedmodel') or keras instead")
    return report


def _serving_archive(model, wnids):
    """A ``keras.export.ExportArchive`` of ``model`` with the three signatures."""
    k = min(TOP_K, len(wnids))
    lookup = tf.constant(wnids, tf.string)
    image_shape = [None, IMAGE_SIZE, IMAGE_SIZE, 3]

    def outputs(images):
        logits = tf.cast(model(tf.cast(images, tf.float32), training=False), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        top = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "top5_indices": top.indices,
                "top5_wnids": tf.gather(lookup, top.indices)}

    def decode(contents):
        image = decode_jpeg(contents)
        shape = tf.shape(image)
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(shape[:2], [IMAGE_SIZE, IMAGE_SIZE])),
            [f"serving_jpeg takes {IMAGE_SIZE}x{IMAGE_SIZE} JPEG images; received one of shape", shape])
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        return tf.reshape(image, [IMAGE_SIZE, IMAGE_SIZE, 3])

    def serve_jpeg(jpeg):
        images = tf.map_fn(decode, jpeg, fn_output_signature=tf.TensorSpec(image_shape[1:], tf.uint8))
        return outputs(images)

    def logits(images):
        return {"logits": tf.cast(model(images, training=False), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)  # its variables are saved with the archive
    archive.add_endpoint("serving_default", outputs,
                         input_signature=[tf.TensorSpec(image_shape, tf.uint8, name="images")])
    archive.add_endpoint("serving_jpeg", serve_jpeg, input_signature=[tf.TensorSpec([None], tf.string, name="jpeg")])
    archive.add_endpoint("logits", logits, input_signature=[tf.TensorSpec(image_shape, tf.float32, name="images")])
    return archive


def check_images(n=8, seed=0):
    """Images for the export check: ``n`` seeded uint8 ``[n, 64, 64, 3]`` images, smooth
    gradients plus noise (so they also survive JPEG coding as distinct images)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, IMAGE_SIZE)
    base = (ramp[None, :, None, None] * rng.uniform(0, 1, (n, 1, 1, 3))
            + ramp[None, None, :, None] * rng.uniform(0, 1, (n, 1, 1, 3))) / 2
    return np.clip(base + rng.normal(0, 20, (n, IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255).astype(np.uint8)


def _keras_probabilities(model, images):
    """The Keras model's probabilities, computed eagerly (no tracing) in batches of 64."""
    images = np.asarray(images, np.float32)
    logits = [keras.ops.convert_to_numpy(model(images[i:i + 64], training=False)) for i in range(0, len(images), 64)]
    return evaluate_lib.softmax(np.concatenate(logits))


def _max_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def verify_export(model, path, images=None, tolerance=TOLERANCE, classes=None):
    """Reload the export at ``path`` and compare its predictions with ``model``'s.

    For a SavedModel (loaded with ``tf.saved_model.load``): ``serving_default`` on uint8
    ``images``, ``logits`` (through a softmax) on the same images as float32, and
    ``serving_jpeg`` on the images JPEG-encoded, against the Keras model on the pixels our
    decoder gives for those bytes; the top-5 indices must be the top-5 of the returned
    probabilities and the wnids those of the class list. For a ``.keras`` file: the
    reloaded model's probabilities. Raises :class:`ExportMismatchError` if any max abs
    difference exceeds ``tolerance``. Returns ``{"path", "images", "max_abs_diff", ...}``.
    """
    path = os.fspath(path)
    images = check_images() if images is None else np.asarray(images, np.uint8)
    expected = _keras_probabilities(model, images)
    report = {"path": path, "images": int(len(images))}
    portable = {os.path.join(path, name): fmt for fmt, name in PORTABLE_FILES.items()}
    found = [p for p in portable if os.path.isfile(p)]
    if found:
        logits = _portable_logits(found[0], portable[found[0]], images)
        report["max_abs_diff"] = _max_diff(evaluate_lib.softmax(logits), expected)
        _raise_if_over(report, tolerance)
        return report
    if os.path.isfile(path):
        reloaded = evaluate_lib.load_member(path).model
        report["max_abs_diff"] = _max_diff(_keras_probabilities(reloaded, images), expected)
        _raise_if_over(report, tolerance)
        return report

    loaded = tf.saved_model.load(path)
    missing = [s for s in ("serving_default", "serving_jpeg", "logits") if s not in loaded.signatures]
    if missing:
        raise ExportMismatchError(f"{path}: the SavedModel lacks the signatures {missing}")
    served = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=tf.constant(images)).items()}
    report["max_abs_diff"] = _max_diff(served["probabilities"], expected)
    logits = loaded.signatures["logits"](images=tf.constant(images, tf.float32))["logits"].numpy()
    report["logits_signature_max_abs_diff"] = _max_diff(evaluate_lib.softmax(logits), expected)

    wnids = class_wnids(expected.shape[-1], classes)
    k = min(TOP_K, expected.shape[-1])
    own_top = np.argsort(-served["probabilities"], axis=-1, kind="stable")[:, :k]
    report["top5_consistent"] = bool(
        np.array_equal(served["top5_indices"], own_top)
        and all(w.decode() == wnids[i] for row_w, row_i in zip(served["top5_wnids"], served["top5_indices"])
                for w, i in zip(row_w, row_i)))

    jpegs = [tf.io.encode_jpeg(tf.constant(image), quality=95).numpy() for image in images]
    decoded = np.stack([decode_jpeg(j).numpy() for j in jpegs])
    from_jpeg = loaded.signatures["serving_jpeg"](jpeg=tf.constant(jpegs))["probabilities"].numpy()
    report["jpeg_max_abs_diff"] = _max_diff(from_jpeg, _keras_probabilities(model, decoded))
    _raise_if_over(report, tolerance)
    return report


def _litert_interpreter(path):
    try:  # LiteRT's own package, where installed; TensorFlow's copy otherwise
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            return tf.lite.Interpreter(model_path=path)
    return Interpreter(model_path=path)


def _portable_logits(path, format, images):
    """The logits a LiteRT or ONNX file gives for uint8 ``images``, run by its own runtime."""
    images = np.asarray(images, np.float32)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images})[0]
    interpreter = _litert_interpreter(path)
    feed = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(feed["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(feed["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _raise_if_over(report, tolerance):
    keys = [k for k in report if k.endswith("max_abs_diff")]
    bad = {k: report[k] for k in keys if not report[k] <= tolerance}
    if bad or report.get("top5_consistent") is False:
        detail = ", ".join(f"{k}={v:.3g}" for k, v in bad.items()) or "top-5 indices/wnids inconsistent"
        raise ExportMismatchError(
            f"{report['path']}: the reloaded export does not match the Keras model ({detail}; "
            f"allowed max abs difference {tolerance:g})")


def source_problem(source, out):
    """Why writing an export to ``out`` would destroy the model it exports (``source``, a
    path), as the end of one line, or None: ``out`` is the model, holds it, or is the run
    folder it belongs to (real paths compared)."""
    source, out = os.fspath(source), os.fspath(out)
    real_out = os.path.realpath(out)
    try:
        models = runs.member_paths(source)
    except (ValueError, OSError):
        models = []
    for path in [source, *models]:
        real = os.path.realpath(path)
        run = _run_folder(real)
        if run == real_out:
            return f"{out} is the run folder of the model being exported ({path}); name a path outside it"
        if real == real_out:
            return f"{out} is the model being exported ({path}); name another path"
        if real.startswith(os.path.join(real_out, "")):
            return f"{out} holds the model being exported ({path}); name a path outside it"
    return None


def _run_folder(path):
    """The run folder (a folder holding ``recipe.json``) that ``path`` is in, or None."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    while True:
        if runs.is_run_folder(folder):
            return folder
        folder, child = os.path.dirname(folder), folder
        if folder == child:
            return None


def _check_destination(out, overwrite, source=None):
    if isinstance(source, (str, os.PathLike)):
        problem = source_problem(source, out)
        if problem:
            raise ValueError(problem)
    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")


def export_savedmodel(model, out, classes=None, overwrite=False, verify=True, images=None):
    """Export ``model`` (a Keras model, ``.keras`` file or run folder) as a SavedModel folder
    ``out`` (see the module docstring). Returns the :func:`verify_export` report (or
    ``{"path"}`` with ``verify=False``). TensorFlow backend only."""
    if not backend.is_tensorflow():
        raise backend.TensorFlowRequired(
            f"SavedModel export runs on Keras's TensorFlow backend (its serving functions are TensorFlow code); "
            f"this process runs {backend.name()}. Export the .keras file instead (format='keras'), or run "
            "the export with KERAS_BACKEND=tensorflow: .keras files load there with the same predictions")
    out = os.fspath(out)
    _check_destination(out, overwrite, source=model)
    model = load_keras_model(model)
    wnids = class_wnids(int(model.outputs[0].shape[-1]), classes)
    archive = _serving_archive(model, wnids)
    with files.atomic_path(out, overwrite=overwrite) as tmp:  # a folder, moved into place once verified
        archive.write_out(tmp, verbose=False)
        report = verify_export(model, tmp, images=images, classes=wnids) if verify else {}
    return {**report, "path": out, "format": "savedmodel", "classes": len(wnids)}


def export_keras(model, out, overwrite=False, verify=True, images=None):
    """Save ``model`` as a standalone ``.keras`` file ``out`` (no optimizer state)."""
    out = os.fspath(out)
    if not out.endswith(".keras"):
        raise ValueError(f"a Keras export's file name must end in .keras. Received: {out=}")
    _check_destination(out, overwrite, source=model)
    model = load_keras_model(model)
    with files.atomic_path(out, suffix=".keras", overwrite=overwrite) as tmp:
        model.save(tmp)
        if getattr(model, "optimizer", None) is not None or getattr(model, "compiled", False):
            # Keras 3 saves the optimizer and compile arguments with a compiled model: reload
            # without them and save again, so the copy is only the model.
            keras.models.load_model(tmp, compile=False).save(tmp)
        report = verify_export(model, tmp, images=images) if verify else {}
    return {**report, "path": out, "format": "keras", "classes": int(model.outputs[0].shape[-1])}


def export_portable(model, out, format, classes=None, overwrite=False, verify=True, images=None):
    """Export ``model`` through Keras's ``model.export`` as LiteRT (``format="litert"``) or
    ONNX (``"onnx"``) into the folder ``out``, with ``wnids.txt`` (see the module docstring)."""
    if format not in PORTABLE_FILES:
        raise ValueError(f"format must be one of {tuple(PORTABLE_FILES)}. Received: {format=}")
    if format == "litert" and not backend.is_tensorflow():
        raise backend.TensorFlowRequired(
            f"LiteRT export runs on Keras's TensorFlow backend here; this process runs {backend.name()}. Run it "
            "with KERAS_BACKEND=tensorflow: .keras files load there with the same predictions")
    if format == "onnx":
        missing = [name for name in ("tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install \"tiny_keras[onnx]\"")
    out = os.fspath(out)
    _check_destination(out, overwrite, source=model)
    model = load_keras_model(model)
    wnids = class_wnids(int(model.outputs[0].shape[-1]), classes)
    exported, policy = float32_model(model)  # before anything is written
    precision = precision_report(model, exported, policy, images) if policy else {}
    spec = [keras.InputSpec(shape=(None, IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32")]
    with files.atomic_path(out, overwrite=overwrite) as tmp:
        os.makedirs(tmp, exist_ok=True)
        exported.export(os.path.join(tmp, PORTABLE_FILES[format]), format=format, input_signature=spec,
                        verbose=False)
        files.write_text("".join(w + "\n" for w in wnids), os.path.join(tmp, WNIDS_FILE))
        report = verify_export(exported, tmp, images=images) if verify else {}
    return {**report, **precision, "path": out, "format": format, "classes": len(wnids)}


def export(model, out, format="savedmodel", classes=None, overwrite=False, verify=True, images=None):
    """Export as ``format`` ("savedmodel", "keras", "litert" or "onnx"). For "keras", a
    folder ``out`` (not ending in ``.keras``) receives ``out/model.keras``."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}. Received: {format=}")
    if format == "savedmodel":
        return export_savedmodel(model, out, classes=classes, overwrite=overwrite, verify=verify, images=images)
    if format in PORTABLE_FILES:
        return export_portable(model, out, format, classes=classes, overwrite=overwrite, verify=verify,
                               images=images)
    out = os.fspath(out)
    if not out.endswith(".keras"):
        out = os.path.join(out, runs.MODEL)
    return export_keras(model, out, overwrite=overwrite, verify=verify, images=images)
