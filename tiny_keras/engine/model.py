"""The model a stage trains, and how it is compiled.

A stage trains a ``tiny_keras.models.ImageClassifier``: ``augmenter -> preprocessor ->
crop -> resize -> network``, all on the device and saved with it, so evaluation and export
need no flags. A later stage shares the earlier one's network and preprocessing.
"""
import math

import keras

from tiny_keras import augment as augment_lib
from tiny_keras import models, schedules
from tiny_keras.losses import make_loss
from tiny_keras.metrics import TopKAccuracy

OPTIMIZER_CLASSES = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
}
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


def make_metrics():
    """Top-1 and top-5 accuracy, ties ranked as ``tiny_keras.evaluate`` ranks them (``tiny_keras.metrics``)."""
    return [TopKAccuracy(1, name="top1"), TopKAccuracy(5, name="top5")]


def make_optimizer(spec, schedule=None):
    """The Keras optimizer of a stage's ``optimizer`` spec; with ``schedule`` (a Keras
    ``LearningRateSchedule``) as its learning rate, evaluated in the train step."""
    spec = dict(spec)
    name = spec.pop("name")
    if schedule is not None:
        spec["learning_rate"] = schedule
    return OPTIMIZER_CLASSES[name](**spec)


def stage_schedule(stage, steps_per_epoch):
    """The stage's learning-rate schedule as a ``schedules.StageSchedule``, or None."""
    if not stage.schedule:
        return None
    return schedules.StageSchedule(stage.schedule, stage.optimizer["learning_rate"], steps_per_epoch, stage.epochs)


def stage_seed(recipe, index):
    """The seed of stage ``index``'s training stream and augmentation draws."""
    return recipe.seed * 1000 + index


def build_network(recipe):
    """The recipe's network (``models.build``), checked against the sizes the recipe feeds it."""
    entry = models.get_entry(recipe.model)
    if entry.size_agnostic:
        input_shape = (None, None, 3)
    else:
        input_shape = entry.input_shape
        expected = recipe.crop or 64
        if input_shape[0] != expected or any(s.image_size not in (None, input_shape[0]) for s in recipe.stages):
            raise ValueError(
                f"{recipe.model} takes {input_shape[0]}px inputs only; the recipe feeds it "
                f"{expected}px (crop={recipe.crop}) and stage sizes {[s.image_size for s in recipe.stages]}"
            )
    options = dict(recipe.model_options)
    options.setdefault("num_classes", recipe.num_classes)
    options.setdefault("input_shape", input_shape)
    return models.build(recipe.model, **options)


def fit_preprocessing(recipe, train_images):
    """The preprocessing layers of ``recipe``, fitted on the training images (uint8)."""
    spec = dict(recipe.preprocessing)
    layers = []
    mode = spec.pop("imagenet", None)
    if mode:
        layers.append(augment_lib.ImageNetPreprocessing(mode, name="imagenet_preprocessing"))
    if spec.pop("mean_image", False):
        layer = augment_lib.MeanImageSubtraction(name="mean_image")
        layer.adapt(train_images)
        layers.append(layer)
    if spec:
        layer = augment_lib.Standardization(name="standardize", **spec)
        if layer.featurewise_center or layer.featurewise_std_normalization:
            layer.adapt(train_images)
        layers.append(layer)
    return layers


def stage_model(recipe, stage, index, previous=None, train_images=None):
    """The ``ImageClassifier`` stage ``index`` trains: a new network and preprocessing
    (fitted on ``train_images``) for the first stage, else ``previous``'s, shared."""
    augmenter = augment_lib.deserialize(stage.augment) if stage.augment else None
    seed = stage_seed(recipe, index)
    if previous is not None:
        return previous.with_stage(augmenter, crop=recipe.crop, image_size=stage.image_size, seed=seed)
    return models.ImageClassifier(build_network(recipe), preprocessor=fit_preprocessing(recipe, train_images),
                                  augmenter=augmenter, crop=recipe.crop, image_size=stage.image_size, seed=seed)


def compile_model(model, recipe, stage, steps_per_epoch, session, steps_per_execution=1):
    """Compile ``model`` for ``stage``: its optimizer and schedule, weight decay, the
    recipe's loss, top-1/top-5, and the ``session``'s XLA and eager settings."""
    set_weight_decay(model.network, stage.weight_decay)  # the backbone's kernels and the head's
    model.compile(
        optimizer=make_optimizer(stage.optimizer, stage_schedule(stage, steps_per_epoch)),
        loss=make_loss(recipe.label_smoothing),
        metrics=make_metrics(),
        jit_compile=bool(session.jit_compile),
        steps_per_execution=steps_per_execution,
        run_eagerly=session.run_eagerly,
    )


def recompile_resumed(model, stage, session, steps_per_execution):
    """A model loaded from a run checkpoint (compiled as saved), set to run as this session
    does: its XLA, eager mode and steps per execution, and the stage's weight decay."""
    model.run_eagerly = session.run_eagerly
    model.jit_compile = bool(session.jit_compile)
    model.steps_per_execution = steps_per_execution
    set_weight_decay(getattr(model, "network", model), stage.weight_decay)
    return model


def set_weight_decay(network, weight_decay):
    """L2 on every conv/dense kernel: ``weight_decay * w`` added to each kernel's gradient."""
    if weight_decay is None:
        return
    regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
    for layer in network._flatten_layers(include_self=False):
        for name in KERNEL_NAMES:
            variable = getattr(layer, name, None) if not isinstance(layer, keras.Model) else None
            if isinstance(variable, keras.Variable) and variable.trainable:
                variable.regularizer = regularizer


class BatchTooLarge(ValueError):
    """A stage's batch whose activations cannot fit in this machine's memory."""


def activation_bytes(model, batch_size):
    """A lower bound of a train step's memory for ``batch_size`` images: every layer's
    output in the backbone and the head (``model.network``, else the model; where its shape is known:
    fixed-size networks), kept for the backward pass and matched by its gradient, in float32."""
    elements = 0
    for layer in getattr(model, "network", model)._flatten_layers(include_self=False, recursive=True):
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # a layer called more than once, or never
            continue
        for tensor in outputs:
            shape = tuple(tensor.shape)[1:]
            if all(isinstance(d, int) for d in shape):
                elements += math.prod(shape)
    return 2 * 4 * batch_size * elements


def available_memory(path="/proc/meminfo"):
    """Bytes of memory available to a new allocation (``MemAvailable``), or None where unknown."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(model, stage, available):
    """Raise :class:`BatchTooLarge` where ``stage``'s batch needs more than ``available``
    bytes by :func:`activation_bytes` (a CPU's memory: a batch beyond it crashes the
    process instead of raising)."""
    needed = activation_bytes(model, stage.batch_size)
    if available is not None and needed > available:
        raise BatchTooLarge(
            f"stage {stage.name!r}: a batch of {stage.batch_size:,} images needs at least {needed / 2**30:,.1f} GiB "
            f"for its activations, and this machine has {available / 2**30:,.1f} GiB available; pass a smaller "
            "--batch-size")
