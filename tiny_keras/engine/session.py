"""How this process runs a recipe: the :class:`Session`.

A ``Recipe`` says what a run computes; a ``Session`` how one process computes it here. No
session setting changes the arithmetic, so a run continues under any session (a GPU's
after a CPU's). Each session's settings go to the run's ``run.json``.
"""
import dataclasses
import math
import sys
from typing import Any, Optional

from tiny_keras import backend

STRATEGIES = ("default", "mirrored", "multi_worker", "data_parallel")
AUTO_STEPS_PER_EXECUTION = 32  # the most train steps per host call "auto" picks on a GPU


class UnsupportedSession(ValueError):
    """A session the recipe's task cannot run under (``Task.check_session``): its backend,
    its strategy. The command line prints it as one line."""


@dataclasses.dataclass
class Session:
    """How a run trains in this process. "auto" values are made concrete by :meth:`resolve`.

    Attributes:
      jit_compile: XLA for the train step: True, False or "auto" (TensorFlow: on a GPU;
        JAX: always, its eager mode runs op by op; PyTorch: never).
      steps_per_execution: train steps per host call, an int or "auto" (32 on a GPU, 1 on
        a CPU); each stage takes the largest divisor of its steps per epoch up to it.
      strategy: "default", "mirrored" (``tf.distribute``), "data_parallel"
        (``keras.distribution``, JAX, one host or several); "multi_worker" is refused.
      run_eagerly: Keras's compile option (debugging; ``--smoke``).
      checkpoint_every: the resume checkpoint every N epochs, or "auto" (every epoch while
        one costs at most 5% of an epoch).
      tensorboard, tensorboard_histograms: TensorBoard logs; histograms every N epochs.
      activation_samples: feature-map and logit percentiles on this many validation
        images after every epoch (0: off).
      verbose: 1 progress bars, 2 a line per epoch, 0 quiet, "auto" (1 on a terminal).
      stop_by: a ``time.time()`` deadline (``engine.time_limit``), or None.
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
            # TensorFlow: XLA pays on a GPU, not on a CPU (docs/benchmarks.md); JAX compiles every step; PyTorch's
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
