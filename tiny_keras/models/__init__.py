"""Model builders for the five papers, registered by name.

    >>> from tiny_keras import models
    >>> [entry.name for entry in models.list_models("paper2")]  # doctest: +SKIP
    ['paper2_resnet18', 'paper2_resnet10', 'paper2_inception_resnet', 'paper2_vgg16', 'paper2_vgg19']
    >>> model = models.build("paper2_resnet18", num_classes=200)  # doctest: +SKIP

``python -m tiny_keras.models`` prints every model with its parameter count
next to the paper's (``--json`` for a machine-readable list).

The registry also holds paper2's object localiser, ``paper2_localizer``
(``localizer.build_localizer``: images to boxes and confidences, not logits).
``names()`` and ``list_models()`` list the classifiers; pass ``task="localization"``
(or ``task=None`` for all) to list it; ``build`` and ``get_entry`` take any name.

Every builder is ``build_<name>(num_classes=200, input_shape=..., **options)``
in ``paperN.py``, registered there with ``@register_model`` and its metadata
(``registry.py``). It builds a backbone (images to the last feature maps) and
describes its head as a ``Head``; it returns an ``ImageClassifier`` (``classifier.py``),
which builds the head and whose output is float32 logits (train with
``from_logits=True``). Each documents in its docstring each reconstruction choice
with the paper section it comes from. Shared layers and conventions (weight decay,
initialiser names) are in ``blocks.py``.
"""

import keras

from tiny_keras.models import localizer
from tiny_keras.models.classifier import Head, Hidden, ImageClassifier, split_network
from tiny_keras.models.registry import TASKS, ModelEntry, register_model
from tiny_keras.models import registry as _registry
from tiny_keras.models import paper1, paper2, paper3, paper4, paper5

PAPER_MODULES = (paper1, paper2, paper3, paper4, paper5)  # importing them registers their models

__all__ = ["Head", "Hidden", "ImageClassifier", "ModelEntry", "build", "count_params", "get_entry", "list_models",
           "names", "register_model", "split_network", "TASKS"]


@register_model(
    paper="paper2", input_shape=(64, 64, 3), size_agnostic=False, task="localization", name="paper2_localizer",
    description="object localiser (section 3.5): encoder + LSTM emitting max_boxes (cx, cy, w, h, confidence)",
    small={"encoder": "small", "encoder_options": {"filters": (8, 8, 16, 16)}, "code_units": 16,
           "lstm_units": 16, "max_boxes": 3},
)
def _build_localizer(encoder="paper2_resnet18", encoder_options=None, input_shape=(64, 64, 3), **options):
    """``localizer.build_localizer`` with its encoder given by name: ``"small"`` or a
    registered classifier, built here (with its offline options and ``encoder_options``)."""
    if encoder != "small":
        entry = get_entry(encoder)
        if entry.task != "classification":
            raise ValueError(f"The localiser's encoder must be a classifier or 'small'. Received: {encoder=}")
        encoder = build(encoder, input_shape=input_shape, **{**entry.offline_options, **(encoder_options or {})})
        encoder_options = None
    return localizer.build_localizer(encoder=encoder, encoder_options=encoder_options, input_shape=input_shape,
                                     **options)


def _check_task(task):
    if task is not None and task not in TASKS:
        raise ValueError(f"Unknown task; expected one of {TASKS} or None. Received: {task=}")


def names(task="classification"):
    """Registered model names of ``task`` (None: every task), in paper order."""
    _check_task(task)
    return [entry.name for entry in _registry.entries() if task is None or entry.task == task]


def list_models(paper=None, task="classification"):
    """The registry entries (``ModelEntry``) of ``task`` (None: every task), optionally of
    one paper only."""
    _check_task(task)
    if paper is not None and paper not in {entry.paper for entry in _registry.entries()}:
        raise ValueError(f"Unknown paper; expected one of paper1 ... paper5. Received: {paper=}")
    return [entry for entry in _registry.entries()
            if (paper is None or entry.paper == paper) and (task is None or entry.task == task)]


def get_entry(name):
    """The ``ModelEntry`` registered as ``name``."""
    entry = _registry.lookup(name)
    if entry is None:
        raise ValueError(f"Unknown model; expected one of {names(None)}. Received: {name=}")
    return entry


def build(name, **options):
    """Builds the model registered as ``name``; ``options`` go to its builder.

    Example: ``build("paper5_cnn8", num_classes=10, pool_strides=1)``.
    """
    entry = get_entry(name)
    try:
        return entry.builder(**options)
    except TypeError as err:
        message = str(err)
        if "unexpected keyword argument" not in message and "multiple values" not in message:
            raise
        raise ValueError(
            f"Unknown or fixed option for {name!r} ({message}); see the docstring of "
            f"{entry.builder.__module__}.{entry.builder.__name__}. Received: {options=}"
        ) from None


def count_params(name, **options):
    """Parameters of ``name`` at the paper's input size (Keras ``count_params``:
    trainable and non-trainable weights, as the papers' Keras summaries count)."""
    entry = get_entry(name)
    kwargs = {"input_shape": entry.input_shape, **entry.offline_options, **options}
    model = build(name, **kwargs)
    count = model.count_params()
    del model
    keras.backend.clear_session()
    return count


def forward_flops(model):
    """Floating-point operations of one forward pass of one image through ``model``: two per
    multiply-add of its convolutions and dense layers (nested models included), the usual
    count (BN, activations and pooling are a few percent more and left out). Needs the
    layers' output shapes, so the model must be built at a fixed input size."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            if height is None or width is None:
                raise ValueError(f"{model.name}: forward_flops needs a fixed input size; {layer.name} has none")
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            total += 2 * height * width * kernel_h * kernel_w * channels_in * channels_out
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(total)
