"""Learning-rate schedules as pure functions of the training position.

Every schedule is ``lr = f(step)`` where ``step`` counts optimizer updates from the start
of the stage (0-based) and ``steps_per_epoch`` converts epochs to steps in one place
(:func:`make_schedule`). A resumed run recomputes its learning rate from the step alone,
so an interruption never shifts the schedule. :class:`StageSchedule` is the same function
as a ``keras.optimizers.schedules.LearningRateSchedule``: the optimizer evaluates it from
its own step counter inside the compiled train step, with no round trip to Python per
batch, and a checkpoint (which holds that counter) resumes it exactly.

- :func:`cyclic` — Smith (2017), "Cyclical Learning Rates for Training Neural Networks":
  ``cycle = floor(1 + it / (2 * step_size))``, ``x = |it / step_size - 2 * cycle + 1|``,
  ``lr = base + (max - base) * max(0, 1 - x) * scale``, with ``scale`` 1 (triangular),
  ``1 / 2 ** (cycle - 1)`` (triangular2) or ``gamma ** it`` (exp_range). Paper 1.
- :func:`exponential` — ``lr0 * rate ** (step / decay_steps)``, per step (paper 2:
  rate 0.9, decay_steps = steps per epoch).
- :func:`step_decay` — ``lr0 * factor ** floor(epoch / every)`` (paper 3: halved every
  20 epochs; paper 5: divided by 10 every 10 epochs).
- :func:`cosine` — ``lr0 * (1 + cos(pi * step / decay_steps)) / 2``, to 0 at the end of
  the stage (``decay_steps``: its epochs times its steps; Keras's ``CosineDecay``). Paper
  2's localiser.
- :func:`constant`.
"""
import math

import keras
from keras import ops

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def constant(step, lr):
    return float(lr)


def cyclic(step, base_lr, max_lr, step_size, mode="triangular", gamma=1.0):
    """Cyclic learning rate at iteration ``step`` (Smith 2017, section 3.1)."""
    if mode not in CYCLIC_MODES:
        raise ValueError(f"mode must be one of {CYCLIC_MODES}. Received: {mode=}")
    if step_size <= 0:
        raise ValueError(f"step_size must be positive. Received: {step_size=}")
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1.0 / (2.0 ** (cycle - 1))
    else:
        scale = gamma ** step
    return base_lr + (max_lr - base_lr) * max(0.0, 1.0 - x) * scale


def exponential(step, lr, decay_steps, rate=0.9):
    """``lr * rate ** (step / decay_steps)``: smooth per-step decay (paper 2, section 4)."""
    if decay_steps <= 0:
        raise ValueError(f"decay_steps must be positive. Received: {decay_steps=}")
    return lr * rate ** (step / decay_steps)


def step_decay(step, lr, steps_per_epoch, every_epochs, factor):
    """``lr * factor ** floor(epoch / every_epochs)`` with ``epoch = step // steps_per_epoch``."""
    if every_epochs <= 0:
        raise ValueError(f"every_epochs must be positive. Received: {every_epochs=}")
    epoch = step // steps_per_epoch
    return lr * factor ** (epoch // every_epochs)


def cosine(step, lr, decay_steps):
    """``lr * (1 + cos(pi * step / decay_steps)) / 2``, held at 0 after ``decay_steps``."""
    if decay_steps <= 0:
        raise ValueError(f"decay_steps must be positive. Received: {decay_steps=}")
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, decay_steps) / decay_steps))


NAMES = ("constant", "cosine", "cyclic", "exponential", "step")


def check_spec(spec):
    name = dict(spec).get("name")
    if name not in NAMES:
        raise ValueError(f"unknown schedule; expected one of {', '.join(NAMES)}. Received: {name=}")
    if name == "cyclic":
        if spec.get("mode", "triangular") not in CYCLIC_MODES:
            raise ValueError(f"mode must be one of {CYCLIC_MODES}. Received: mode={spec.get('mode')!r}")
        if spec["step_size"] <= 0:
            raise ValueError(f"step_size must be positive. Received: step_size={spec['step_size']}")
    if name == "step" and spec["every_epochs"] <= 0:
        raise ValueError(f"every_epochs must be positive. Received: every_epochs={spec['every_epochs']}")
    if name in ("exponential", "cosine") and spec.get("decay_steps", 1) <= 0:
        raise ValueError(f"decay_steps must be positive. Received: decay_steps={spec['decay_steps']}")


@keras.saving.register_keras_serializable(package="tiny_keras")
class StageSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A recipe stage's schedule (:func:`make_schedule`'s ``spec``) for a Keras optimizer:
    ``SGD(learning_rate=StageSchedule(spec, lr, steps_per_epoch))``.

    Computes the same function as :func:`make_schedule` with ``keras.ops`` in float32 (to
    within 2e-6 relative), from the optimizer's step (0 for the first update).
    """

    def __init__(self, spec, initial_learning_rate, steps_per_epoch, epochs=None):
        self.spec = dict(spec)
        check_spec(self.spec)
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = epochs

    def __call__(self, step):
        step = ops.cast(step, "float32")
        spec, lr = self.spec, self.initial_learning_rate
        name = spec["name"]
        if name == "constant":
            return ops.cast(lr, "float32") + 0.0 * step
        if name == "exponential":  # rate ** (whole periods) * rate ** (fraction): float32 keeps its digits
            decay_steps = float(spec.get("decay_steps", self.steps_per_epoch))
            periods = ops.floor(step / decay_steps)
            rate = float(spec.get("rate", 0.9))
            return lr * ops.power(rate, periods) * ops.power(rate, (step - periods * decay_steps) / decay_steps)
        if name == "step":
            epoch = ops.floor(step / float(self.steps_per_epoch))
            return lr * ops.power(float(spec["factor"]), ops.floor(epoch / float(spec["every_epochs"])))
        if name == "cosine":
            decay_steps = float(_cosine_steps(spec, self.steps_per_epoch, self.epochs))
            return lr * 0.5 * (1.0 + ops.cos(math.pi * ops.minimum(step, decay_steps) / decay_steps))
        base, top, size = float(spec["base_lr"]), float(spec["max_lr"]), float(spec["step_size"])
        cycle = ops.floor(1.0 + step / (2.0 * size))
        # |step / size - 2 cycle + 1| from the (exact) position within the cycle.
        x = ops.abs((step - (cycle - 1.0) * 2.0 * size) / size - 1.0)
        mode = spec.get("mode", "triangular")
        if mode == "triangular":
            scale = 1.0
        elif mode == "triangular2":
            scale = 1.0 / ops.power(2.0, cycle - 1.0)
        else:  # gamma ** step as exp(step * log(gamma)), log taken in float64: gamma itself would round
            scale = ops.exp(step * math.log(float(spec.get("gamma", 1.0))))
        return base + (top - base) * ops.maximum(0.0, 1.0 - x) * scale

    def get_config(self):
        return {"spec": self.spec, "initial_learning_rate": self.initial_learning_rate,
                "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs}


def _cosine_steps(spec, steps_per_epoch, epochs):
    """A cosine schedule's ``decay_steps``: the spec's, else the stage's steps."""
    if spec.get("decay_steps"):
        return spec["decay_steps"]
    if not epochs:
        raise ValueError("a cosine schedule needs decay_steps, or the stage's epochs to decay over")
    return epochs * steps_per_epoch


def make_schedule(spec, lr, steps_per_epoch, epochs=None):
    """A ``step -> lr`` function from a recipe's schedule dict, or ``None`` for no schedule.

    ``spec`` examples (``lr`` is the optimizer's initial learning rate)::

        {"name": "cyclic", "base_lr": 0.001, "max_lr": 0.1, "step_size": 782, "mode": "triangular"}
        {"name": "exponential", "rate": 0.9}                  # decay_steps = one epoch
        {"name": "step", "every_epochs": 20, "factor": 0.5}
        {"name": "cosine"}                                    # to 0 over the stage's ``epochs``
        {"name": "constant"}
    """
    if not spec:
        return None
    check_spec(spec)
    spec = dict(spec)
    name = spec.pop("name")
    if name == "constant":
        return lambda step: constant(step, lr)
    if name == "cyclic":
        return lambda step: cyclic(step, **spec)
    if name == "exponential":
        spec.setdefault("decay_steps", steps_per_epoch)
        return lambda step: exponential(step, lr, **spec)
    if name == "step":
        return lambda step: step_decay(step, lr, steps_per_epoch, **spec)
    decay_steps = _cosine_steps(spec, steps_per_epoch, epochs)
    return lambda step: cosine(step, lr, decay_steps)
