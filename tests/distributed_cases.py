"""One process of a multi-host JAX training, for tests/test_distributed.py.

    python tests/distributed_cases.py DATA OUT single
    python tests/distributed_cases.py DATA OUT worker COORDINATOR INDEX

``single``: one process trains the recipe below (global batch 4) in OUT/single.
``worker``: process INDEX of 2 joins COORDINATOR (``keras.distribution.initialize``) and,
with ``data_parallel`` over both processes' CPU devices (each feeding half of each global
batch of 4), trains it in OUT/pair, then again in OUT/killed, stopped by an exception in
the second epoch on both processes (a killed pair) and started again (it resumes from the
chief's checkpoint). Each run's final weights go to OUT/<run>-<INDEX>.npz.
"""
import dataclasses
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

data, out, mode = sys.argv[1:4]
if mode == "worker":
    import jax
    import keras

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(job_addresses=sys.argv[4], num_processes=2, process_id=int(sys.argv[5]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from killed_runs import Interrupt, KillAt  # noqa: E402
from tiny_keras import train  # noqa: E402
from tiny_keras.engine import Session  # noqa: E402
from tiny_keras.engine.strategy import processes  # noqa: E402
from tiny_keras.recipe import Recipe, Stage  # noqa: E402

# No augmentation and no dropout: with the same global batches, one process and two give
# the same weights up to the order of float sums (and BatchNorm sees the global batch).
RECIPE = Recipe(paper="paper1", model="paper1_resnet", model_options={"filters": (4, 8, 8, 8)},
                preprocessing={"featurewise_std_normalization": True}, precision="float32",
                stages=[Stage(epochs=3, batch_size=4, steps_per_epoch=2, image_size=32,
                              optimizer={"name": "sgd", "learning_rate": 0.01, "momentum": 0.9})])
SESSION = Session(tensorboard=False, activation_samples=0, checkpoint_every=1, jit_compile=True, verbose=0)


class FinalWeights(keras.callbacks.Callback):
    """Writes this process's weights as training ends (the last stage's end wins)."""

    def __init__(self, name):
        super().__init__()
        self.path = os.path.join(out, f"{name}-{processes()[1]}.npz")

    def on_train_end(self, logs=None):
        np.savez(self.path, *[np.asarray(w) for w in self.model.network.get_weights()])


def run(name, session, callbacks=()):
    train.train(RECIPE, os.path.join(out, name), data=data, session=session,
                extra_callbacks=[FinalWeights(name)] + list(callbacks))


if mode == "single":
    run("single", SESSION)
else:
    pair = dataclasses.replace(SESSION, strategy="data_parallel")
    run("pair", pair)
    try:
        run("killed", pair, [KillAt(epoch=1)])
    except Interrupt:
        pass
    else:
        raise SystemExit("the killed run was not stopped")
    run("killed", pair)
print(f"{mode} done", flush=True)
