"""How this process runs a recipe: the :class:`Session`.

A ``Recipe`` says what a run computes; a ``Session`` says how one process computes it on
the machine it finds: XLA, steps per execution, the device strategy, eager mode,
TensorBoard, the checkpoint cadence, verbosity and the time limit. None of it changes
the arithmetic, so a run started by one session continues in another with other
settings (a GPU's after a CPU's). Each session's settings go to the run's ``run.json``.
"""
import dataclasses
import math
import sys
from typing import Any, Optional

from tiny_keras import backend

STRATEGIES = ("default", "mirrored", "multi_worker", "data_parallel")
AUTO_STEPS_PER_EXECUTION = 32  # the most train steps per host call "auto" picks on a GPU


@dataclasses.dataclass
class Session:
    """How a run trains in this process.

    Attributes:
      jit_compile: compile the train step with XLA: True, False or "auto" (on with a GPU,
        off on a CPU; on for JAX, whose eager mode runs op by op).
      steps_per_execution: train steps per call from the host: an int, or "auto"
        (``AUTO_STEPS_PER_EXECUTION`` on a GPU, 1 on a CPU). Each stage takes the largest
        divisor of its steps per epoch (and snapshot interval) up to it.
      strategy: "default" (one device), "mirrored" (``tf.distribute``, TensorFlow),
        "data_parallel" (``keras.distribution.DataParallel``, JAX: the local devices, or
        every host's after ``keras.distribution.initialize``). "multi_worker" is refused
        with its reason (``engine.strategy.make_strategy``).
      run_eagerly: Keras's compile option (debugging, and ``--smoke``, where tracing costs
        more than two steps).
      checkpoint_every: the resume checkpoint every N epochs, or "auto": every epoch while
        one costs at most 5% of an epoch, else every k epochs (``engine.resume``).
      tensorboard: write TensorBoard logs; ``tensorboard_histograms`` N > 0 also writes
        weight and activation histograms every N epochs.
      activation_samples: record percentiles of the feature maps and logits on this many
        fixed validation images after every epoch (0: off).
      verbose: 1 progress bars, 2 a line per epoch, 0 quiet, "auto" (1 on a terminal,
        else 2). ``train.log`` gets every line whatever it is.
      stop_by: a ``time.time()`` timestamp: end at the last checkpointed epoch that
        finishes before it (``engine.time_limit``); None: no limit.
    """

    jit_compile: Any = "auto"
    steps_per_execution: Any = "auto"
    strategy: str = "default"
    run_eagerly: bool = False
    checkpoint_every: Any = "auto"
    tensorboard: bool = True
    tensorboard_histograms: int = 0
    activation_samples: int = 32
    verbose: Any = "auto"
    stop_by: Optional[float] = None

    def validate(self):
        if self.jit_compile not in (True, False, "auto"):
            raise ValueError(f"jit_compile must be True, False or 'auto'. Received: {self.jit_compile=}")
        for field in ("steps_per_execution", "checkpoint_every"):
            value = getattr(self, field)
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{field} must be a positive int or 'auto'. Received: {field}={value!r}")
        if self.run_eagerly and self.jit_compile is True:
            raise ValueError("run_eagerly and jit_compile exclude each other; choose one")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}. Received: {self.strategy=}")
        if self.verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"verbose must be 0, 1, 2 or 'auto'. Received: verbose={self.verbose!r}")
        if self.stop_by is not None and self.strategy == "multi_worker":
            # Each worker would judge the limit by its own clock.
            raise ValueError("a time limit (stop_by) is not supported with strategy 'multi_worker': its workers "
                             "would each decide when to stop")
        return self

    def resolve(self, compute_capability=None):
        """A copy with the "auto" values made concrete on a machine whose GPU has
        ``compute_capability`` (None: no GPU)."""
        gpu = compute_capability is not None
        jit_compile = self.jit_compile
        if jit_compile == "auto":
            # TensorFlow: XLA pays on a GPU, not on a CPU; JAX compiles every step; PyTorch's
            # torch.compile is left off (slow to start, fragile).
            jit_compile = not self.run_eagerly and (gpu if backend.is_tensorflow() else backend.is_jax())
        spe = self.steps_per_execution
        if spe == "auto":
            spe = AUTO_STEPS_PER_EXECUTION if gpu and not self.run_eagerly else 1
        verbose = self.verbose
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        return dataclasses.replace(self, jit_compile=jit_compile, steps_per_execution=spe, verbose=verbose)

    def record(self):
        """What ``run.json`` keeps of this session (its settings, not its deadline)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("verbose", "stop_by")}


def describe_speed(jit_compile, steps_per_execution):
    """``"XLA off, 1 step per execution"``."""
    return (f"XLA {'on' if jit_compile is True else 'off'}, {steps_per_execution} "
            f"step{'s' if steps_per_execution != 1 else ''} per execution")


def stage_steps_per_execution(bound, steps_per_epoch, every_steps=None):
    """The steps per execution a stage uses: the largest divisor of its steps per epoch (and
    of its snapshot interval) not above ``bound``, so that epochs and snapshots fall on
    execution boundaries."""
    period = math.gcd(steps_per_epoch, every_steps) if every_steps else steps_per_epoch
    return max(d for d in range(1, min(bound, period) + 1) if period % d == 0)
