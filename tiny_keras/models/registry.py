"""The model registry: ``@register_model`` beside each builder, with its named metadata.

In the manner of timm's ``@register_model`` (``timm/models/_registry.py``): a builder is
registered where it is defined, under ``paperN_<builder name without build_>`` (or
``name=``), with keyword metadata::

    @register_model(paper="paper5", input_shape=(56, 56, 3), size_agnostic=False,
                    description="8-layer Caffe CNN ...", small={"filters": 16, "fc_units": (32, 32)})
    def build_cnn8(num_classes=200, input_shape=(56, 56, 3), ...):
        ...

Registration order is the listing order (``tiny_keras.models`` imports paper1 ... paper5).
"""
import dataclasses
import inspect
import types
from typing import Any, Callable, Mapping, Optional, Tuple

import keras

TASKS = ("classification", "localization")


@dataclasses.dataclass(frozen=True, kw_only=True)
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
    paper_params: Optional[int] = None
    description: str = ""
    offline_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    small_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    task: str = "classification"

    @property
    def default_input_shape(self):
        """The input shape ``build(name)`` uses: the builder's default."""
        return inspect.signature(self.builder).parameters["input_shape"].default

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {TASKS}. Received: task={self.task!r}")
        # Read-only views, so that an entry cannot be changed by its users.
        object.__setattr__(self, "offline_options", types.MappingProxyType(dict(self.offline_options)))
        object.__setattr__(self, "small_options", types.MappingProxyType(dict(self.small_options)))


_REGISTRY = {}


def register_model(*, paper, input_shape, size_agnostic, description, paper_params=None, small=None,
                   offline=None, task="classification", name=None):
    """Registers the decorated builder (returned unchanged) as ``name`` (default
    ``{paper}_{function name without "build_"}``); the keywords are :class:`ModelEntry`'s
    (``small``: ``small_options``, ``offline``: ``offline_options``)."""

    def register(builder):
        entry_name = name or f"{paper}_{builder.__name__.removeprefix('build_')}"
        if entry_name in _REGISTRY:
            raise ValueError(f"A model is already registered as {entry_name!r}")
        _REGISTRY[entry_name] = ModelEntry(
            name=entry_name, paper=paper, builder=builder, input_shape=tuple(input_shape),
            size_agnostic=size_agnostic, paper_params=paper_params, description=description,
            offline_options=offline or {}, small_options=small or {}, task=task)
        return builder

    return register


def entries():
    """Every registered entry, in registration order."""
    return list(_REGISTRY.values())


def lookup(name):
    """The entry registered as ``name``, or None."""
    return _REGISTRY.get(name) if isinstance(name, str) else None
