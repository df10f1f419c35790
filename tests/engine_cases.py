"""The training engine on a Keras backend other than TensorFlow, in a fresh process.

``KERAS_BACKEND=jax python tests/engine_cases.py DATA OUT [STRATEGY]`` trains a tiny
recipe on DATA (the fixture zip) in OUT/whole, trains it again killed in epoch 2 and
resumed in OUT/killed, and again stopped by its time limit inside epoch 2 (after its
first step) and resumed in OUT/stopped, and writes OUT/cases.json with what the test on
the TensorFlow side checks (``tests/test_engine_backends.py``): the backend, the resumed
runs' largest weight and history differences from the uninterrupted one, the run's val
top-1 beside ``tiny_keras.evaluate``'s
on the saved model, and OUT/logits.npy, the saved model's logits on the val images, which
the TensorFlow side compares with its own reading of OUT/whole/model.keras, and
OUT/weights.npz, the trained network's weights. STRATEGY is the recipe's (default
"default"); with another ("data_parallel" on several JAX devices) OUT/cases.json holds
:func:`compare_strategies`' findings instead.

The process runs with TensorFlow (and TFDS) made unimportable, so everything it does
proves to need neither.
"""
import csv
import json
import pathlib
import sys
import time

sys.modules["tensorflow"] = None  # import tensorflow now raises ImportError
sys.modules["tensorflow_datasets"] = None

import keras  # noqa: E402
import numpy as np  # noqa: E402

from killed_runs import Interrupt, KillAt  # noqa: E402
from tiny_keras import augment, data, evaluate, runs, train  # noqa: E402
from tiny_keras.engine import Session, time_limit  # noqa: E402
from tiny_keras.recipe import Recipe, Stage  # noqa: E402


def session(strategy="default"):
    """Checkpoints after every epoch (the kill test stops at one), no TensorBoard."""
    return Session(tensorboard=False, checkpoint_every=1, strategy=strategy, verbose=0)


def tiny_recipe(random=True):
    """Three epochs of two steps; with ``random``, augmentation (flips, noise) and dropout."""
    stage = Stage(epochs=3, batch_size=4, steps_per_epoch=2, image_size=32,
                  optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
                  schedule={"name": "step", "every_epochs": 1, "factor": 0.5},
                  augment=augment.serialize(augment.Compose([augment.RandomFlip(), augment.GaussianNoise(5.0)]))
                  if random else None)
    options = {"filters": (4, 8, 8, 8), "dropout": 0.5 if random else 0.0}
    return Recipe(paper="paper1", model="paper1_resnet", model_options=options,
                  preprocessing={"featurewise_std_normalization": True}, stages=[stage])


def backbone_weights(folder):
    return keras.models.load_model(folder / runs.MODEL).network.get_weights()


def history(folder):
    with open(folder / runs.STAGES / "train" / runs.HISTORY) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def stop_inside_epoch_2(recipe, data_path, folder):
    """Trains ``recipe`` in ``folder`` with a time limit that stops it inside epoch 2, after
    its first step (where the limit's rule is told that no more fits), then to its end;
    returns where it stopped, ``(epochs done, steps done)``."""
    fits = time_limit.TimeLimit._fits
    time_limit.TimeLimit._fits = lambda self, done: not (self.run_checkpoint.epoch == 1 and done == 1)
    try:
        train.train(recipe, folder, data=data_path, session=session(), stop_by=time.time() + 3600)
        raise AssertionError("the run was not stopped")
    except train.TimeLimitReached:
        pass
    finally:
        time_limit.TimeLimit._fits = fits
    state = json.loads((folder / runs.STATE).read_text())
    train.train(recipe, folder, data=data_path, session=session())
    return [state["epochs_done"], state.get("steps_done", 0)]


def compare_strategies(data_path, out, strategy):
    """The recipe without random draws on one device and under ``strategy``: the largest
    weight difference; and the whole recipe under ``strategy``: its val top-1."""
    for name, where in (("one_device", "default"), ("split", strategy)):
        train.train(tiny_recipe(random=False), out / name, data=data_path, session=session(where))
    results = train.train(tiny_recipe(), out / "random", data=data_path, session=session(strategy))
    return {"backend": keras.backend.backend(), "devices": len(keras.distribution.list_devices()),
            "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in
                                   zip(backbone_weights(out / "one_device"), backbone_weights(out / "split"))),
            "random_val_top1": results["runs"][-1]["val_top1"]}


def main(data_path, out, strategy="default"):
    out = pathlib.Path(out)
    if strategy != "default":
        cases = compare_strategies(data_path, out, strategy)
        (out / "cases.json").write_text(json.dumps(cases, indent=1))
        print(json.dumps(cases))
        return
    recipe = tiny_recipe()
    results = train.train(recipe, out / "whole", data=data_path, session=session())
    whole = keras.models.load_model(out / "whole" / runs.MODEL)
    try:
        train.train(recipe, out / "killed", data=data_path, session=session(), extra_callbacks=[KillAt(epoch=2)])
        raise AssertionError("the run was not killed")
    except Interrupt:
        pass
    train.train(recipe, out / "killed", data=data_path, session=session())
    resumed = keras.models.load_model(out / "killed" / runs.MODEL)
    weight_diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0
                      for a, b in zip(whole.network.get_weights(), resumed.network.get_weights()))
    stopped_at = stop_inside_epoch_2(recipe, data_path, out / "stopped")
    stopped = keras.models.load_model(out / "stopped" / runs.MODEL)
    stopped_diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0
                       for a, b in zip(whole.network.get_weights(), stopped.network.get_weights()))
    whole_history, stopped_history = history(out / "whole"), history(out / "stopped")
    history_diff = (max(abs(a[k] - b[k]) / max(abs(a[k]), 1.0) for a, b in zip(whole_history, stopped_history)
                        for k in a) if len(whole_history) == len(stopped_history) else float("inf"))

    val = data.load_split(data_path, "val")
    member = evaluate.load_member(out / "whole" / runs.MODEL)
    probabilities = member.predict(val.images, batch_size=4)
    evaluate_top1 = 100.0 * float(np.mean(np.argmax(probabilities, axis=-1) == val.labels))
    logits = keras.ops.convert_to_numpy(whole.predict(val.images.astype(np.float32), verbose=0))
    np.save(out / "logits.npy", logits)
    np.savez(out / "weights.npz", *whole.network.get_weights())
    run_info = json.loads((out / "whole" / runs.RUN_INFO).read_text())
    cases = {
        "backend": keras.backend.backend(),
        "recorded_backend": run_info["sessions"][0]["environment"]["backend"],
        "resumed_max_weight_diff": weight_diff,
        "stopped_at": stopped_at,
        "stopped_max_weight_diff": stopped_diff,
        "stopped_max_history_diff": history_diff,
        "run_val_top1": results["runs"][-1]["val_top1"],
        "evaluate_val_top1": evaluate_top1,
        "tensorflow_blocked": sys.modules.get("tensorflow", "") is None,
        "devices": len(keras.distribution.list_devices()) if keras.backend.backend() == "jax" else 1,
    }
    (out / "cases.json").write_text(json.dumps(cases, indent=1))
    print(json.dumps(cases))


if __name__ == "__main__":
    main(*sys.argv[1:])
