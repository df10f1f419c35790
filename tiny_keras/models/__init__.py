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
in ``paperN.py``, returns a functional ``keras.Model`` whose output is float32
logits (train with ``from_logits=True``), and documents in its docstring each
reconstruction choice with the paper section it comes from. Shared layers and
conventions (weight decay, initialiser names) are in ``blocks.py``.
"""

import dataclasses
import inspect
import types
from typing import Any, Callable, Mapping, Optional, Tuple

import keras

from tiny_keras.models import localizer, paper1, paper2, paper3, paper4, paper5
from tiny_keras.models.classifier import (
    CLASSIFIER_LAYER, HEAD_START_LAYERS, ImageClassifier, feature_maps_model, head_start_layer)

__all__ = ["CLASSIFIER_LAYER", "HEAD_START_LAYERS", "ImageClassifier", "ModelEntry", "build", "count_params",
           "feature_maps_model", "get_entry", "head_start_layer", "list_models", "names", "TASKS"]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: registry name, ``paperN_<model>``.
        paper: ``"paper1"`` ... ``"paper5"``.
        builder: ``build_<name>(num_classes=200, input_shape=..., **options)``.
        input_shape: the input the paper trained on; ``params`` in the listing
            is counted at this size. ``default_input_shape`` is what ``build``
            uses when none is given (``(None, None, 3)`` for paper1).
        size_agnostic: whether the model ends in global pooling and runs at any
            input size (build it with ``input_shape=(None, None, 3)``).
        paper_params: the paper's parameter count, or None; rounded figures
            (paper2's "11.28M") are stored as integers (11_280_000).
        description: one line.
        offline_options: options that make building need no network and no
            files (paper4_model5 defaults to downloading ImageNet weights).
        small_options: options for a reduced variant, used by the tests for
            saving, gradients and shapes; empty if the model is small already.
        task: ``"classification"`` (images to logits) or ``"localization"``
            (images to boxes and confidences, ``paper2_localizer``).
    """

    name: str
    paper: str
    builder: Callable[..., keras.Model]
    input_shape: Tuple[Optional[int], Optional[int], int]
    size_agnostic: bool
    paper_params: Optional[int]
    description: str
    offline_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    small_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    task: str = "classification"

    @property
    def default_input_shape(self):
        """The input shape ``build(name)`` uses: the builder's default."""
        return inspect.signature(self.builder).parameters["input_shape"].default

    def __post_init__(self):
        # Read-only views, so that an entry cannot be changed by its users.
        object.__setattr__(self, "offline_options", types.MappingProxyType(dict(self.offline_options)))
        object.__setattr__(self, "small_options", types.MappingProxyType(dict(self.small_options)))


_P2, _P5 = (56, 56, 3), (56, 56, 3)  # random 56x56 crops (paper2 section 3.1, paper5 section 5.1)
_64 = (64, 64, 3)
_TINY_RESNET = {"filters": (8, 16, 32, 64)}

_ENTRIES = (
    # --- paper1 ---
    ModelEntry(
        "paper1_resnet", "paper1", paper1.build_resnet, _64, True, 11_282_248,
        "ResNet-18 with a 3x3 stem and GAP head; same weights at 32-64 px (progressive resizing)",
        small_options=_TINY_RESNET,
    ),
    # --- paper2 ---
    ModelEntry(
        "paper2_resnet18", "paper2", paper2.build_resnet18, _P2, True, 11_280_000,
        "18-layer ResNet, 7x7 stride-1 stem, no max pool, BN on both shortcut branches (11.28M)",
        small_options=_TINY_RESNET,
    ),
    ModelEntry(
        "paper2_resnet10", "paper2", paper2.build_resnet10, _P2, True, None,
        "10-layer ResNet (n=1) of the depth study, section 4.4",
        small_options=_TINY_RESNET,
    ),
    ModelEntry(
        "paper2_inception_resnet", "paper2", paper2.build_inception_resnet, _P2, True, 8_300_000,
        "Inception-ResNet-v2-lite: stem, 2 A, Reduction-A, 4 B modules, residuals x0.1 (8.3M)",
        small_options={"n": 1},
    ),
    ModelEntry(
        "paper2_vgg16", "paper2", paper2.build_vgg16, _P2, False, 36_700_000,
        "VGG-16 with FC 2048, last max pool removed, BN + PReLU (36.7M)",
        small_options={"filters": (8, 16, 32, 64, 64), "fc_units": 32},
    ),
    ModelEntry(
        "paper2_vgg19", "paper2", paper2.build_vgg19, _P2, False, 40_200_000,
        "VGG-19 with FC 2048, last max pool removed, BN + PReLU (40.2M)",
        small_options={"filters": (8, 16, 32, 64, 64), "fc_units": 32},
    ),
    # --- paper3 (figures lost: our reconstructions) ---
    ModelEntry(
        "paper3_vgg_z", "paper3", paper3.build_vgg_z, _64, True, None,
        "VGG-Z (ours): 4 stages of 2x2+2x2 convs, BN, 1x1 classifier conv + GAP",
        small_options={"filters": (8, 16, 32, 64)},
    ),
    ModelEntry(
        "paper3_vgg_f", "paper3", paper3.build_vgg_f, _64, True, None,
        "VGG-F (ours): 4 stages of 2x1/1x2 factorised convs, BN, 1x1 classifier conv + GAP",
        small_options={"filters": (8, 16, 32, 64)},
    ),
    ModelEntry(
        "paper3_vgg_y", "paper3", paper3.build_vgg_y, _64, True, None,
        "VGG-Y (ours): 5 stages of 1x1+2x2+2x2 convs, BN, 1x1 classifier conv + GAP",
        small_options={"filters": (8, 8, 16, 32, 64)},
    ),
    ModelEntry(
        "paper3_inception_v3_lite", "paper3", paper3.build_inception_v3_lite, _64, True, None,
        "InceptionV3-lite (ours): 2x2/1x2/2x1 filters, 2 A modules, reduction, 2 B modules, GAP",
        small_options={"num_a_modules": 1, "num_b_modules": 1},
    ),
    # --- paper4 (exact Keras summaries) ---
    ModelEntry(
        "paper4_model1", "paper4", paper4.build_model1, _64, False, 13_070_472,
        "conv32-pool-conv64-pool-dense1024-dense200, valid padding, L2",
        small_options={"dense_units": 32},
    ),
    ModelEntry(
        "paper4_model2", "paper4", paper4.build_model2, _64, False, 2_555_656,
        "[conv-pool] x3 (32/64/128)-dense512-dropout0.5-dense200",
        small_options={"dense_units": 32},
    ),
    ModelEntry(
        "paper4_model3", "paper4", paper4.build_model3, _64, False, 140_382_728,
        "6 conv-BN-ReLU (64..512, same) with 3 pools, dense4096-BN, dense1024-BN, dense200",
        small_options={"dense_units": (64, 32)},
    ),
    ModelEntry(
        "paper4_model4", "paper4", paper4.build_model4, _64, False, 8_866_376,
        "[conv-BN-ReLU-pool] x3 (64/128/256), dense512-BN-ReLU-dropout0.5, dense200",
        small_options={"dense_units": 32},
    ),
    ModelEntry(
        "paper4_model5", "paper4", paper4.build_model5, _64, True, 25_890_888,
        "Keras ResNet50 (ImageNet weights, optionally frozen) + GAP + dense1024 + dense200",
        offline_options={"weights": None},
        small_options={"dense_units": 32},
    ),
    # --- paper5 ---
    ModelEntry(
        "paper5_shallow", "paper5", paper5.build_shallow, _P5, False, None,
        "shallow baseline (ours): [conv32-relu-pool] x2, fc200; N(0, 0.01) init",
        small_options={"filters": 8},
    ),
    ModelEntry(
        "paper5_cnn5", "paper5", paper5.build_cnn5, _P5, False, None,
        "5-layer baseline (ours): [[conv32-relu] x2-pool] x2, fc200; N(0, 0.01) init",
        small_options={"filters": 8},
    ),
    ModelEntry(
        "paper5_cnn8", "paper5", paper5.build_cnn8, _P5, False, None,
        "8-layer Caffe CNN: 5 conv128, pools after conv 2/4/5 (stride 2), fc 400-400-200, dropout, L2",
        small_options={"filters": 16, "fc_units": (32, 32)},
    ),
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


# Models of other tasks than classification (not in ``names()`` unless asked for).
_OTHER_TASKS = (
    ModelEntry(
        "paper2_localizer", "paper2", _build_localizer, _64, False, None,
        "object localiser (section 3.5): encoder + LSTM emitting max_boxes (cx, cy, w, h, confidence)",
        small_options={"encoder": "small", "encoder_options": {"filters": (8, 8, 16, 16)}, "code_units": 16,
                       "lstm_units": 16, "max_boxes": 3},
        task="localization",
    ),
)
TASKS = ("classification", "localization")

_REGISTRY = {entry.name: entry for entry in _ENTRIES + _OTHER_TASKS}


def _check_task(task):
    if task is not None and task not in TASKS:
        raise ValueError(f"Unknown task; expected one of {TASKS} or None. Received: {task=}")


def names(task="classification"):
    """Registered model names of ``task`` (None: every task), in paper order."""
    _check_task(task)
    return [name for name, entry in _REGISTRY.items() if task is None or entry.task == task]


def list_models(paper=None, task="classification"):
    """The registry entries (``ModelEntry``) of ``task`` (None: every task), optionally of
    one paper only."""
    _check_task(task)
    if paper is not None and paper not in {entry.paper for entry in _ENTRIES}:
        raise ValueError(f"Unknown paper; expected one of paper1 ... paper5. Received: {paper=}")
    return [entry for entry in _REGISTRY.values()
            if (paper is None or entry.paper == paper) and (task is None or entry.task == task)]


def get_entry(name):
    """The ``ModelEntry`` registered as ``name``."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown model; expected one of {names(None)}. Received: {name=}") from None


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
