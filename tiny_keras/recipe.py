"""A paper's training recipe, written as data.

A :class:`Recipe` names the model, the preprocessing that travels with it, and a chain
of :class:`Stage` objects, each with its own epochs, batch size, optimizer, schedule,
augmentation and callbacks. One stage is an ordinary training run; several stages are
progressive resizing (paper 1) or train-then-fine-tune (paper 5), each stage starting
from the previous stage's weights. ``tiny_keras.engine.train`` runs any recipe; the
reproduction scripts differ only by the recipes they write.

Recipes round-trip through JSON (``to_json`` / ``from_json``) and are saved in the run
folder, so a run can always be told apart from another and resumed.

Units, once: ``epochs`` and ``every_epochs`` count epochs, ``step_size`` and
``every_steps`` count optimizer steps (batches), learning rates are absolute,
``weight_decay`` is the papers' weight decay (each kernel's gradient gets
``weight_decay * w``: the loss term ``weight_decay / 2 * sum(w ** 2)``, which is
``keras.regularizers.L2(weight_decay / 2)``).
"""
import copy
import dataclasses
import json
from typing import Optional

from tiny_keras import models

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SEED_MAX = 2**32 - 1  # keras.utils.set_random_seed's range
# Fields of recipes written before ``engine.Session`` held them: read and dropped.
SESSION_FIELDS = ("jit_compile", "steps_per_execution", "checkpoint_every", "strategy", "run_eagerly", "tensorboard",
                  "tensorboard_histograms", "activation_samples")


@dataclasses.dataclass
class Stage:
    """One training stage.

    Attributes:
      name: the stage's name in results ("32px", "clr", "fine_tune", ...).
      epochs: epochs to train.
      batch_size: the global batch size (split across replicas by a strategy).
      image_size: the model's input resolution for this stage; images are resized to it
        inside the model, after augmentation (progressive resizing). None: no resize.
      optimizer: ``{"name": "sgd"|"adam"|"rmsprop"|"adagrad", "learning_rate": ..., ...}``;
        other keys go to the Keras optimizer (``momentum``, ``nesterov``, ``rho``,
        ``epsilon``, ``beta_1`` ...).
      schedule: a learning-rate schedule (``tiny_keras.schedules.make_schedule``; in training
        a ``schedules.StageSchedule`` in the optimizer), or None.
      weight_decay: L2 on every conv and dense kernel (see the module docstring); None
        keeps the model builder's own regularizers.
      augment: a serialized ``tiny_keras.augment`` transform (``augment.serialize``)
        applied to training batches in the input pipeline, or None.
      reduce_lr_on_plateau, early_stopping: keyword arguments of the Keras callbacks, or None.
      restore_best: end the stage with the weights of its best validation epoch.
      snapshot_every_epochs, snapshot_every_steps: save snapshots for snapshot ensembles.
      steps_per_epoch: limit each epoch to this many batches (quick runs); None: the whole set.
    """

    name: str = "train"
    epochs: int = 1
    batch_size: int = 128
    image_size: Optional[int] = None
    optimizer: dict = dataclasses.field(default_factory=lambda: {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9})
    schedule: Optional[dict] = None
    weight_decay: Optional[float] = None
    augment: Optional[dict] = None
    reduce_lr_on_plateau: Optional[dict] = None
    early_stopping: Optional[dict] = None
    restore_best: bool = False
    snapshot_every_epochs: Optional[int] = None
    snapshot_every_steps: Optional[int] = None
    steps_per_epoch: Optional[int] = None

    def steps(self, train_images):
        """The training steps of one epoch over ``train_images`` images."""
        return self.steps_per_epoch or max(1, train_images // self.batch_size)

    def validate(self):
        if self.epochs < 1:
            raise ValueError(f"stage {self.name!r}: epochs must be at least 1. Received: {self.epochs=}")
        if self.batch_size < 1:
            raise ValueError(f"stage {self.name!r}: batch_size must be positive. Received: {self.batch_size=}")
        name = self.optimizer.get("name")
        if name not in OPTIMIZERS:
            raise ValueError(f"stage {self.name!r}: optimizer name must be one of {OPTIMIZERS}. Received: {name=}")
        if "learning_rate" not in self.optimizer:
            raise ValueError(f"stage {self.name!r}: the optimizer needs a learning_rate. Received: {self.optimizer=}")
        lr = self.optimizer["learning_rate"]
        if isinstance(lr, (int, float)) and not lr > 0:
            raise ValueError(f"stage {self.name!r}: the learning rate must be above 0. Received: {lr}")
        if self.schedule and self.reduce_lr_on_plateau:
            raise ValueError(
                f"stage {self.name!r}: a schedule and ReduceLROnPlateau would both set the learning rate; "
                "choose one."
            )


@dataclasses.dataclass
class Recipe:
    """What a training run computes: model, preprocessing, stages, seed and precision.

    Attributes:
      paper: "paper1" ... "paper5".
      model: a registry name (``tiny_keras.models.names()``).
      stages: the training stages, run in order.
      model_options: keyword arguments of the model builder.
      num_classes: the classifier's width (200 for Tiny ImageNet).
      crop: random crops of this size in training, the centre crop at evaluation (papers
        2 and 5: 56), done inside the model so evaluation needs no flags. None: no crop.
      preprocessing: what the model does to its 0..255 input before the network, fitted
        on the training images and saved with the model: ``{"rescale": 1/255,
        "featurewise_center": True, "featurewise_std_normalization": True}`` (paper 1),
        ``{"mean_image": True}`` (papers 3 and 5), ``{"imagenet": "caffe"}`` (the input
        convention of Keras's ImageNet weights, paper 4's ResNet50).
      label_smoothing: for the cross-entropy loss.
      seed: seeds weights, shuffling and augmentation.
      classes, per_class, val_per_class: data subsets for quick runs.
      precision: "float32", "mixed_float16", "mixed_bfloat16" or "auto": settled once, when
        the run first starts, for the machine it starts on (``engine.precision``), and kept
        wherever the run continues.
      paper_results: the paper's val top-1 (percent) per stage name, printed beside ours.
      task: what the model learns: "classification" (images to class logits) or
        "localization" (images to boxes; ``tiny_keras.localization.task``).
      task_options: the task's own settings (the localiser's loss and held-out split).
    """

    paper: str
    model: str
    stages: list
    model_options: dict = dataclasses.field(default_factory=dict)
    num_classes: int = 200
    crop: Optional[int] = None
    preprocessing: dict = dataclasses.field(default_factory=dict)
    label_smoothing: float = 0.0
    seed: int = 0
    classes: Optional[list] = None
    per_class: Optional[int] = None
    val_per_class: Optional[int] = None
    precision: str = "auto"
    paper_results: dict = dataclasses.field(default_factory=dict)
    task: str = "classification"
    task_options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.stages = [s if isinstance(s, Stage) else Stage(**s) for s in self.stages]

    def validate(self):
        entry = models.get_entry(self.model)
        if not self.stages:
            raise ValueError(f"recipe for {self.model}: no stages")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"recipe for {self.model}: stage names must be unique. Received: {names=}")
        for stage in self.stages:
            stage.validate()
        if self.task not in models.TASKS:
            raise ValueError(f"task must be one of {models.TASKS}. Received: {self.task=}")
        if entry.task != self.task:
            raise ValueError(f"{self.model} is a {entry.task} model; the recipe's task is {self.task!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be a whole number from 0 to 2**32 - 1. Received: {self.seed=}")
        if self.precision not in PRECISIONS + ("auto",):
            raise ValueError(f"precision must be one of {PRECISIONS + ('auto',)}. Received: {self.precision=}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d):
        d = copy.deepcopy(d)
        if "mixed_precision" in d:  # recipes written before ``precision``
            d.setdefault("precision", "mixed_float16" if d.pop("mixed_precision") else "float32")
        for field in SESSION_FIELDS:  # recipes written before the session was apart: how a session ran it
            d.pop(field, None)
        return cls(**d)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def replace(self, **changes):
        return dataclasses.replace(copy.deepcopy(self), **changes)

    def with_stage_changes(self, **changes):
        """A copy with ``changes`` applied to every stage (``epochs=3``, ``batch_size=64``)."""
        recipe = copy.deepcopy(self)
        recipe.stages = [dataclasses.replace(s, **changes) for s in recipe.stages]
        return recipe


@dataclasses.dataclass
class Ensemble:
    """An ensemble reported by a paper: the average of its members' probabilities.

    ``members`` are run names; their final models, or with ``snapshots`` the snapshots
    taken during their training instead (paper 5's snapshot ensemble).
    """

    name: str
    members: list
    snapshots: bool = False
    paper_val_top1: float = None
