"""Predictions, top-k accuracy, loss, per-class results, ensembles and test-time augmentation.

An ensemble is the average of its members' class probabilities (softmax of the logits),
optionally weighted; every member sees the same 0..255 images and applies its own
preprocessing, which travels inside each saved model (mean image, featurewise statistics,
crop, resize: see ``tiny_keras.train``), so evaluating needs no preprocessing flags.

Members come from paths (:func:`load_members`; which files a path stands for is
``tiny_keras.runs.member_paths``):

- a ``.keras`` file: one Keras model;
- a run folder (``tiny_keras.train``'s ``workdir``, or one of its ``stages/<name>``
  folders): its ``model.keras``;
- a snapshot folder: every ``*.keras`` file inside, each a member (a snapshot ensemble);
- a SavedModel folder (``saved_model.pb``): loaded with ``tf.saved_model.load``; its
  ``logits`` signature (our exports, ``tiny_keras.export``), else ``probabilities``,
  else ``serving_default``, fed float32 or uint8 images as the signature asks.

Test-time augmentation (``tta``), probabilities averaged over the views:

- ``"none"``: the image as it is.
- ``"flip"``: the image and its horizontal mirror, each through the whole model (the
  mirror is taken of the raw image, as the training pipeline's ``RandomFlip`` does).
- ``"crops10"``: ten crops (4 corners + centre, of the image and of its mirror), the
  test-time augmentation of paper 5 (section 5.1). The crops are taken *after* the
  model's preprocessor and fed to what follows it, so a mean image (fitted at
  64x64) is subtracted at full size exactly as in training. Crop size and what the
  network then receives depend on the model:

  * a model with a crop layer (papers 2 and 5: ``crop=56``): ten crops of that size,
    fed straight to the network (the crop layer would have taken the centre one);
  * no crop layer, size-agnostic network (global pooling: papers 1, 3, ``paper4_model5``):
    ten 56x56 crops at their own size; a resize layer (progressive resizing) still
    resizes them, as it resizes any input;
  * no crop layer, fixed-size network (``paper4_model1..4``, 64px only): the ten 56x56
    crops are resized back to the network's input size (crop-and-resize; a change of
    scale the network never saw in training, so expect less from it);
  * a Keras model that is not a ``tiny_keras.models.ImageClassifier``, with a ``(None, None, 3)``
    input: ten 56x56 crops of the raw images; any other model (a fixed-size plain Keras
    model, a SavedModel member) cannot be cropped after its preprocessing: error.

  ``batch_size`` counts network inputs, so a crops10 step holds ``batch_size // 10`` images.
"""
import collections
import functools
import os
import zipfile

import keras
import numpy as np
from keras import ops

from tiny_keras import augment, runs
from tiny_keras import backend as backend_lib
from tiny_keras.backend import tf
from tiny_keras.models import ImageClassifier
from tiny_keras.runs import ModelLoadError  # what loading a member raises, as evaluate.ModelLoadError too

TTA_MODES = ("none", "flip", "crops10")
TTA_VIEWS = {"none": 1, "flip": 2, "crops10": 10}
CROPS10_SIZE = 56  # paper 5 section 5.1: 56x56 crops of the 64x64 images
LOSS_EPSILON = 1e-12  # probabilities are clipped here before the log, so a 0 gives a finite loss


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk_accuracy(probabilities, labels, k=1):
    """Percentage of rows whose true label is among the ``k`` highest probabilities."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} predictions for {len(labels)} labels")
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return 100.0 * float(np.mean((top == labels[:, None]).any(axis=1)))


def ensemble_probabilities(member_probabilities, weights=None):
    """The (weighted) mean of the members' class probabilities."""
    stacked = np.stack([np.asarray(p, np.float64) for p in member_probabilities])
    shapes = {p.shape for p in stacked}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members disagree on the prediction shape: {sorted(shapes)}")
    if weights is None:
        return stacked.mean(axis=0)
    weights = np.asarray(weights, np.float64)
    if weights.shape != (len(stacked),) or (weights < 0).any() or weights.sum() == 0:
        raise ValueError(f"weights must be {len(stacked)} non-negative numbers, not all zero. Received: {weights=}")
    return np.tensordot(weights / weights.sum(), stacked, axes=1)


def scores(probabilities, labels):
    """``{"top1", "top5"}`` in percent."""
    return {"top1": topk_accuracy(probabilities, labels, 1), "top5": topk_accuracy(probabilities, labels, 5)}


# -- metrics over probabilities ----------------------------------------------------------------
def _check_labels(probabilities, labels):
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} predictions for {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= probabilities.shape[-1]):
        raise ValueError(
            f"labels must lie in 0..{probabilities.shape[-1] - 1} (the model's classes); received "
            f"{labels.min()}..{labels.max()} (-1 marks an unlabelled test image)"
        )
    return probabilities, labels


def cross_entropy(probabilities, labels):
    """Mean cross-entropy ``-log p[label]`` (probabilities clipped at ``LOSS_EPSILON``)."""
    probabilities, labels = _check_labels(probabilities, labels)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(np.mean(-np.log(np.clip(picked.astype(np.float64), LOSS_EPSILON, 1.0))))


def metrics(probabilities, labels):
    """``{"top1", "top5", "loss"}``: accuracies in percent, mean cross-entropy."""
    probabilities, labels = _check_labels(probabilities, labels)
    return {**scores(probabilities, labels), "loss": cross_entropy(probabilities, labels)}


def _name(classes, index):
    return classes.name(index) if classes is not None and index < len(classes) else f"class {index}"


def _wnid(classes, index):
    return classes.wnid(index) if classes is not None and index < len(classes) else ""


def per_class_accuracy(probabilities, labels, classes=None):
    """One row per class present in ``labels``, by class index:
    ``{"index", "wnid", "name", "images", "top1", "top5"}`` (accuracies in percent).
    ``classes`` (a ``ClassNames``) names them."""
    probabilities, labels = _check_labels(probabilities, labels)
    top = np.argsort(-probabilities, axis=-1, kind="stable")[:, :5]
    hit1 = top[:, 0] == labels
    hit5 = (top == labels[:, None]).any(axis=1)
    rows = []
    for index in np.unique(labels):
        mask = labels == index
        rows.append(dict(index=int(index), wnid=_wnid(classes, index), name=_name(classes, index),
                         images=int(mask.sum()), top1=100.0 * float(hit1[mask].mean()),
                         top5=100.0 * float(hit5[mask].mean())))
    return rows


def best_and_worst(per_class, n=5):
    """``(best, worst)``: the ``n`` classes with the highest and the lowest top-1 (ties: lower index first)."""
    best = sorted(per_class, key=lambda r: (-r["top1"], r["index"]))[:n]
    worst = sorted(per_class, key=lambda r: (r["top1"], r["index"]))[:n]
    return best, worst


def confusions(probabilities, labels, classes=None, n=10):
    """The ``n`` most frequent mistakes (true class -> top-1 prediction), most frequent first:
    ``{"true", "true_wnid", "true_name", "predicted", "predicted_wnid", "predicted_name",
    "count", "percent"}`` (``percent``: of the true class's images)."""
    if n < 0:
        raise ValueError(f"n must be 0 or more confusions. Received: {n=}")
    probabilities, labels = _check_labels(probabilities, labels)
    predicted = np.argmax(probabilities, axis=-1)
    wrong = predicted != labels
    counts = collections.Counter(zip(labels[wrong].tolist(), predicted[wrong].tolist()))
    per_class = collections.Counter(labels.tolist())
    pairs = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [dict(true=t, true_wnid=_wnid(classes, t), true_name=_name(classes, t), predicted=p,
                 predicted_wnid=_wnid(classes, p), predicted_name=_name(classes, p), count=c,
                 percent=100.0 * c / per_class[t]) for (t, p), c in pairs]


def resolve_classes(num_classes, dataset_classes=None):
    """The ``ClassNames`` of a model with ``num_classes`` outputs, for data with ``dataset_classes``.

    The dataset's own class list when its length is the model's width; else, for a
    200-wide model, the official classes (``tiny_keras.data.official_classes()``), provided
    every dataset class has the same index there (so the labels mean the same classes).
    Anything else is an error: there is no way to name the model's outputs.
    """
    # tiny_keras.data brings tensorflow_datasets (~0.4 s): loaded only to name a model's classes
    from tiny_keras.data import official_classes

    if dataset_classes is not None and len(dataset_classes) == num_classes:
        return dataset_classes
    official = official_classes()
    if num_classes == len(official):
        if dataset_classes is not None:
            moved = [w for i, w in enumerate(dataset_classes.wnids) if w not in official or official.index(w) != i]
            if moved:
                raise ValueError(
                    f"the model has {num_classes} outputs (the official classes) but the dataset's "
                    f"{len(dataset_classes)} classes do not keep their official indices ({moved[:3]} ...); "
                    "its labels would name other classes than the model's outputs"
                )
        return official
    have = "no class list" if dataset_classes is None else f"a class list of {len(dataset_classes)}"
    raise ValueError(f"the model has {num_classes} outputs but there is {have}; pass a class list "
                     f"of exactly {num_classes} wnids")


# -- precise BatchNorm statistics ------------------------------------------------------------------
def batch_norm_layers(model):
    """The model's ``BatchNormalization`` layers that training updates (trainable ones),
    nested models included, in order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def precise_bn_images(images, batches, batch_size, seed=0):
    """``batches * batch_size`` images drawn from ``images`` without replacement (seeded)."""
    wanted = batches * batch_size
    if batches < 1 or batch_size < 1:
        raise ValueError(f"precise BN needs at least one batch of one image. Received: {batches=}, {batch_size=}")
    if wanted > len(images):
        raise ValueError(f"precise BN asks for {batches} batches of {batch_size} ({wanted:,} images), but the "
                         f"split has {len(images):,}")
    index = np.sort(np.random.default_rng(seed).choice(len(images), wanted, replace=False))
    return np.random.default_rng(seed + 1).permutation(images[index])


def recompute_bn_statistics(model, images, batch_size=128, augmented=False):
    """Replace the moving mean and variance of every trainable ``BatchNormalization`` layer
    of ``model`` (a ``tiny_keras.models.ImageClassifier``) by the statistics of ``images``
    (0..255), in the manner of pycls/fvcore's PreciseBN; return the layers updated.

    The images get the model's inference preprocessing (no augmentation; the centre crop),
    or with ``augmented`` its training augmentation and random crop. They pass through the
    network (backbone and head) in training mode, batch by batch, as training passes them:
    each layer normalises by its batch's statistics and records them. A layer's new moving
    mean is the mean of its batches' means, its moving variance the mean of their (biased,
    as Keras computes them) variances: every batch counts the same, where training's
    exponential average lets the last few hundred batches count most. No weight changes;
    frozen (non-trainable) layers keep their statistics; a partial last batch is left out.

    Where training resampled its images (rotation, zoom), statistics of clean images are
    what the sharp validation images need (paper 4's model 4: see
    ``tiny_keras.recipes.paper4``). With ``augmented`` the statistics are of the images
    training saw and only the averaging changes: that part of a gap is the moving average
    lagging behind the weights, the rest is the augmentation's shift."""
    classifier = _classifier(model)
    if classifier is None:
        raise ValueError(f"precise BN needs a tiny_keras ImageClassifier (its augmentation kept apart); "
                         f"received {type(model).__name__}")
    layers = batch_norm_layers(classifier.network)  # the backbone's and the head's
    if not layers:
        return []
    weights = {id(v): ops.convert_to_numpy(v) for v in classifier.network.trainable_variables}
    momenta = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(images) - batch_size + 1, batch_size)):
            for layer in layers:  # the cumulative mean: the k-th batch weighs 1 / (k + 1)
                layer.momentum = k / (k + 1.0)
            x = classifier.prepare(np.asarray(images[start:start + batch_size], np.float32), training=augmented)
            classifier.network(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for v in classifier.network.trainable_variables:  # training mode must not have changed a weight
        if not np.array_equal(ops.convert_to_numpy(v), weights[id(v)]):
            raise RuntimeError(f"precise BN changed the weight {v.path}")
    return layers


# -- members: models loaded from paths ---------------------------------------------------------
def _classifier(model):
    """``model`` if it is a ``tiny_keras.models.ImageClassifier`` (its parts are attributes), else None."""
    return model if isinstance(model, ImageClassifier) else None


def _views_for_crops10(images, classifier):
    """``[B * 10, h, w, 3]`` inputs for the classifier's backbone (see the module docstring)."""
    mirrored = ops.flip(images, axis=2)
    if classifier is None:  # a plain size-agnostic model: crops of the raw images
        views = augment.ten_crop(images, CROPS10_SIZE)
        return ops.reshape(views, (-1, CROPS10_SIZE, CROPS10_SIZE, images.shape[-1]))
    size = (classifier.crop_size,) * 2 if classifier.crop_size else (CROPS10_SIZE, CROPS10_SIZE)
    both = []
    for x in (images, mirrored):
        x = ops.cast(x, "float32")
        if classifier.preprocessor is not None:
            x = classifier.preprocessor(x, training=False)
        both.append(augment.five_crop(ops.cast(x, "float32"), size))
    views = ops.reshape(ops.concatenate(both, axis=1), (-1, size[0], size[1], images.shape[-1]))
    if classifier.resize is not None:
        views = classifier.resize(views, training=False)
    else:
        wanted = tuple(classifier.backbone.input_shape[1:3])
        if None not in wanted and wanted != size:
            views = ops.image.resize(views, wanted, interpolation="bilinear", antialias=False)
    return views


def _jax_jit(model, fn):
    """``fn(images)`` as one XLA program on JAX: the model's variables enter as arguments
    (a ``keras.StatelessScope`` maps them), so each call reads the model's current weights."""
    import jax

    variables = list(model.variables)

    def pure(values, images):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(images)

    compiled = jax.jit(pure)
    return lambda images: compiled([v.value for v in variables], images)


class Member:
    """One model to evaluate: ``path``, ``kind`` ("keras" or "savedmodel"), ``num_classes``
    and :meth:`predict`. Use :func:`load_members` to make them from paths."""

    def __init__(self, path, kind, num_classes, model=None, signature=None, signature_name=None, loaded=None):
        self.path = str(path)
        self.kind = kind
        self.num_classes = num_classes
        self.model = model
        self.signature = signature
        self.signature_name = signature_name
        self._loaded = loaded  # the loaded SavedModel: keeps the signature's variables alive
        self._functions = {}
        self._output = None  # for a SavedModel signature: (output key, "logits" | "probabilities")
        self.classifier = _classifier(model) if kind == "keras" else None

    def __repr__(self):
        return f"Member({self.path!r}, kind={self.kind!r}, num_classes={self.num_classes})"

    def check_tta(self, tta):
        """Raise ValueError if this member cannot run test-time augmentation ``tta``."""
        if tta not in TTA_MODES:
            raise ValueError(f"tta must be one of {TTA_MODES}. Received: {tta=}")
        if tta != "crops10":
            return
        if self.kind != "keras":
            raise ValueError(f"{self.path}: crops10 needs the Keras model (the crops are taken after its "
                             "preprocessing); a SavedModel cannot be split. Use the .keras file, or tta='flip'")
        if self.classifier is None and tuple(self.model.input_shape[1:3]) != (None, None):
            raise ValueError(f"{self.path}: crops10 needs a tiny_keras ImageClassifier or a "
                             f"size-agnostic one; this one takes {self.model.input_shape[1:3]} inputs only")

    # -- one batch ---------------------------------------------------------------------------
    def _logits_or_probabilities(self, images):
        """``(array, is_probabilities)`` for a float32 batch of 0..255 images."""
        if self.kind == "keras":
            run = self._function("plain", images.shape, lambda x: self.model(x, training=False))
            return ops.convert_to_numpy(run(images)), False
        name, spec = self._input_spec()
        outputs = self.signature(**{name: tf.cast(images, spec.dtype)})
        if self._output is None:
            self._output = _pick_output(outputs, self.path)
        key, kind = self._output
        values = outputs[key].numpy()
        if kind is None:  # one unnamed output: logits unless every row is a distribution
            kind = "probabilities" if (values >= 0).all() and np.allclose(values.sum(-1), 1, atol=1e-3) else "logits"
            self._output = (key, kind)
        return values, kind == "probabilities"

    def _function(self, name, shape, fn):
        """``fn`` compiled: a tf.function on TensorFlow (once per image size, any batch size);
        ``jax.jit`` on JAX (once per batch shape); on PyTorch ``fn`` as it is (eager)."""
        key = (name, tuple(shape[1:]))
        if backend_lib.name() == backend_lib.JAX:
            if name not in self._functions:
                self._functions[name] = _jax_jit(self.model, fn)
            return self._functions[name]
        if not backend_lib.is_tensorflow():
            return fn
        if key not in self._functions:
            spec = tf.TensorSpec((None,) + tuple(shape[1:]), tf.float32)
            # TensorFlow counts traces per code object: wrapped in a partial, each member's
            # function counts on its own, so an ensemble of many members does not warn of
            # "excessive retracing" (each traces once per image size).
            self._functions[key] = tf.function(functools.partial(fn), input_signature=[spec])
        return self._functions[key]

    def _input_spec(self):
        """``(argument name, TensorSpec)`` of the signature's one input."""
        return next(iter(self.signature.structured_input_signature[1].items()))

    def _probabilities(self, images):
        values, is_probabilities = self._logits_or_probabilities(images)
        return np.asarray(values, np.float64) if is_probabilities else softmax(values)

    def _crops10(self, images):
        classifier = self.classifier

        def run(x):
            views = _views_for_crops10(x, classifier)
            if classifier is None:
                return self.model(views, training=False)
            return classifier.network(views, training=False)

        logits = ops.convert_to_numpy(self._function("crops10", images.shape, run)(images))
        return softmax(logits).reshape(len(images), 10, -1).mean(axis=1)

    def predict_batch(self, images, tta="none"):
        """Probabilities (float64) of one batch of 0..255 images ``[B, H, W, 3]``."""
        images = np.asarray(images, np.float32)
        if tta == "none":
            return self._probabilities(images)
        if tta == "flip":
            return (self._probabilities(images) + self._probabilities(images[:, :, ::-1].copy())) / 2.0
        self.check_tta(tta)
        return self._crops10(images)

    def predict(self, images, tta="none", batch_size=256, progress=False):
        """Probabilities ``[N, num_classes]`` (float64) on 0..255 images, averaged over the TTA views.

        ``batch_size`` counts network inputs (a crops10 step holds ``batch_size // 10`` images);
        ``progress`` shows a progress bar over batches."""
        self.check_tta(tta)
        images = np.asarray(images)
        step = max(1, batch_size // TTA_VIEWS[tta]) if tta == "crops10" else batch_size
        batches = range(0, len(images), step)
        bar = keras.utils.Progbar(len(batches), unit_name="batch") if progress else None
        out = []
        for i, start in enumerate(batches):
            out.append(self.predict_batch(images[start:start + step], tta))
            if bar is not None:
                bar.update(i + 1)
        if not out:
            return np.zeros((0, self.num_classes or 0))
        probabilities = np.concatenate(out)
        if self.num_classes is None:
            self.num_classes = probabilities.shape[-1]
        return probabilities


def _pick_output(outputs, path):
    keys = list(outputs)
    for key in keys:
        if "logit" in key.lower():
            return key, "logits"
    for key in keys:
        if "prob" in key.lower():
            return key, "probabilities"
    if len(keys) == 1:
        return keys[0], None
    raise ModelLoadError(f"{path}: cannot tell which of the SavedModel outputs {keys} holds logits or "
                         "probabilities (name one 'logits' or 'probabilities')")


SAVEDMODEL_SIGNATURES = ("logits", "probabilities", "serving_default")


def _load_savedmodel(path):
    backend_lib.require_tensorflow(f"{path}: a SavedModel member")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as err:  # noqa: BLE001 - any failure means the same thing here
        raise ModelLoadError(f"{path}: not a readable SavedModel ({type(err).__name__}: {str(err)[:200]})") from err
    signatures = dict(loaded.signatures)
    for name in SAVEDMODEL_SIGNATURES:
        fn = signatures.get(name)
        if fn is None:
            continue
        inputs = list(fn.structured_input_signature[1].values())
        if len(inputs) != 1 or not (inputs[0].dtype.is_floating or inputs[0].dtype.is_integer):
            continue  # e.g. a JPEG-bytes signature
        width = None
        for spec in fn.structured_outputs.values():
            width = spec.shape[-1] if spec.shape.rank == 2 and spec.dtype.is_floating else width
        return Member(path, "savedmodel", width, signature=fn, signature_name=name, loaded=loaded)
    raise ModelLoadError(f"{path}: the SavedModel has no signature taking an image batch among "
                         f"{SAVEDMODEL_SIGNATURES} (it has {sorted(signatures)})")


def load_keras_model(path):
    """``keras.models.load_model(path, compile=False)``; what goes wrong as a
    :class:`ModelLoadError` naming ``path``."""
    path = os.fspath(path)
    # Keras calls a .keras file that is not a zip archive (truncated, or not a model) "File not found".
    if path.endswith(".keras") and os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a readable Keras model (not a zip archive: truncated, or not a .keras "
                             "file)")
    # The package's layers are registered: importing this module ran tiny_keras/__init__.
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"{path}: not a readable Keras model ({type(err).__name__}: {str(err)[:200]})") from err


def _load_keras(path):
    model = load_keras_model(path)
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ModelLoadError(f"{path}: expected a model with one [batch, classes] output; it has "
                             f"{[tuple(o.shape) for o in model.outputs]}")
    return Member(path, "keras", int(model.outputs[0].shape[-1]), model=model)


def load_member(path):
    """One :class:`Member` from a ``.keras`` file or a SavedModel folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_savedmodel(path)
    return _load_keras(path)


def load_members(paths, same_classes=True):
    """Members from paths (files, run, snapshot and SavedModel folders), in order.

    Returns ``(members, groups)``: ``groups[i]`` is the index of the path each member came
    from. With ``same_classes`` every member must have the same number of classes."""
    members, groups = [], []
    for i, path in enumerate(paths):
        for file in runs.member_paths(path):
            members.append(load_member(file))
            groups.append(i)
    if same_classes:
        check_same_classes(members)
    return members, groups


def check_same_classes(members):
    widths = {m.num_classes for m in members if m.num_classes is not None}
    if len(widths) > 1:
        listing = ", ".join(f"{m.path} ({m.num_classes})" for m in members)
        raise ValueError(f"ensemble members have different numbers of classes: {listing}")


def member_weights(groups, weights):
    """Per-member weights from one weight per path: a folder's weight is shared equally by
    its snapshots. None stays None (every member counts once)."""
    if weights is None:
        return None
    n_paths = max(groups) + 1 if groups else 0
    if len(weights) != n_paths:
        raise ValueError(f"give one weight per model path: {n_paths} paths, {len(weights)} weights")
    if not all(np.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"weights must be non-negative numbers, not all zero. Received: {list(weights)}")
    sizes = collections.Counter(groups)
    return [float(weights[g]) / sizes[g] for g in groups]


def predict_members(members, images, tta="none", batch_size=256, progress=False, verbose=None):
    """Each member's probabilities ``[N, classes]`` (a list, in order). ``progress`` shows a
    progress bar per member; ``verbose`` (default: as ``progress``) a line naming each."""
    for m in members:
        m.check_tta(tta)
    out = []
    for i, member in enumerate(members):
        if progress if verbose is None else verbose:
            print(f"[{i + 1}/{len(members)}] {member.path} (tta={tta})")
        out.append(member.predict(images, tta=tta, batch_size=batch_size, progress=progress))
    check_same_classes(members)
    return out


def evaluate(members, images, labels, *, ensemble=False, weights=None, tta="none", classes=None,
             batch_size=256, progress=False, top_confusions=10, probabilities=None):
    """Evaluate members (and their ensemble) on labelled images.

    ``weights``: one per member (see :func:`member_weights`), only with ``ensemble``.
    ``classes``: a ``ClassNames`` for the model's outputs (names in the per-class rows).
    ``probabilities``: the members' predictions if already computed.
    Returns ``{"tta", "images", "models": [{"path", "top1", "top5", "loss"}], "ensemble":
    {"top1", "top5", "loss", "members", "weights"} or None, "per_class": [...],
    "per_class_of": path or "ensemble", "confusions": [...]}``; the per-class rows and
    confusions describe the ensemble, or without one the first model.
    """
    labels = np.asarray(labels)
    if len(labels) and labels.min() < 0:
        raise ValueError("these images have no labels (a test split): accuracy cannot be measured")
    if weights is not None and not ensemble:
        raise ValueError("weights are for an ensemble: pass ensemble=True")
    if probabilities is None:
        probabilities = predict_members(members, images, tta=tta, batch_size=batch_size, progress=progress)
    result = {"tta": tta, "images": int(len(labels)), "models": [], "ensemble": None}
    for member, p in zip(members, probabilities):
        result["models"].append({"path": member.path, **metrics(p, labels)})
    main, main_name = probabilities[0], members[0].path
    if ensemble:
        main, main_name = ensemble_probabilities(probabilities, weights), "ensemble"
        result["ensemble"] = {**metrics(main, labels), "members": len(members),
                              "weights": None if weights is None else [float(w) for w in weights]}
    result["per_class_of"] = main_name
    result["per_class"] = per_class_accuracy(main, labels, classes)
    result["confusions"] = confusions(main, labels, classes, n=top_confusions)
    return result
