"""Keras callbacks over the package's mechanisms: learning-rate logs, snapshots, best
weights, activation percentiles. (The engine's own, the epoch log, the resume checkpoint
and the time limit, are in ``tiny_keras.engine``.)

Every file written here goes through ``tiny_keras.files`` (a temporary name, then a
rename), so an interrupted run never leaves a half-written checkpoint.
"""
import json
import os

import keras
import numpy as np

from tiny_keras import files, runs


def current_lr(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate of each epoch's last step to the logs (``learning_rate``).

    With ``schedule`` (the optimizer's ``LearningRateSchedule``), the rate is the schedule
    at the optimizer's last step, read once per epoch; without one, the optimizer's rate
    (which ReduceLROnPlateau may have changed)."""

    def __init__(self, schedule=None):
        super().__init__()
        self.schedule = schedule

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.schedule is None:
            logs["learning_rate"] = current_lr(self.model)
        else:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - 1
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.schedule(max(step, 0))))


class Snapshots(keras.callbacks.Callback):
    """Saves ``snapshot-eNNN.keras`` every ``every_epochs`` epochs, or ``snapshot-sNNNNNN.keras``
    every ``every_steps`` steps (paper 5's snapshot ensembles; names: ``runs.snapshot_name``).
    ``resumed``: ``(epoch, steps done)`` where the stage resumed inside an epoch."""

    def __init__(self, folder, every_epochs=None, every_steps=None, steps_per_epoch=None, resumed=None):
        super().__init__()
        if bool(every_epochs) == bool(every_steps):
            raise ValueError(f"give exactly one of every_epochs or every_steps. Received: {every_epochs=}, {every_steps=}")
        self.folder = folder
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self.steps_per_epoch = steps_per_epoch
        self.resumed = resumed
        self._epoch = 0
        self._offset = 0  # the steps of this epoch done before this session
        self.saved = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._offset = runs.steps_before(self.resumed, epoch)

    def _save(self, name):
        path = os.path.join(self.folder, name)
        files.save_model(self.model, path)
        self.saved.append(path)

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps:
            step = self._epoch * self.steps_per_epoch + self._offset + batch + 1
            if step % self.every_steps == 0:
                self._save(runs.snapshot_name(step=step))

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
            self._save(runs.snapshot_name(epoch=epoch + 1))


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model's weights (no optimizer state: a third of a full checkpoint with
    Adam) to ``filepath`` (``*.weights.h5``) whenever ``monitor`` improves, atomically
    (unlike ``keras.callbacks.ModelCheckpoint``, whose interrupted write leaves a broken
    file). ``model.load_weights(filepath)`` puts them back."""

    def __init__(self, filepath, monitor="val_top1", mode="max"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'. Received: {mode=}")
        self.filepath = filepath
        self.monitor = monitor
        self.mode = mode
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = value
            files.save_weights(self.model, self.filepath)


class ActivationPercentiles(keras.callbacks.Callback):
    """Records, after every epoch, percentiles of two outputs on a fixed batch of
    validation images: the backbone's feature maps (the last conv block, the head's input;
    ``ImageClassifier.feature_maps``) and the logits (paper 2, figures 9-10). Cheap: one
    forward pass of a few images per epoch.

    Writes ``path`` (JSON, atomically): ``{"percentiles": [...], "layers": {"last_block":
    "<backbone name> output", "logits": "logits"}, "epochs": [{"epoch": e, "last_block": [...],
    "logits": [...]}, ...]}``; a resumed run appends to the same file.
    """

    PERCENTILES = (0, 7, 16, 31, 50, 69, 84, 93, 100)  # TensorBoard's histogram bands

    def __init__(self, images, path):
        super().__init__()
        self.images = images
        self.path = path
        self._probe = None

    def on_epoch_end(self, epoch, logs=None):
        # The model is an ImageClassifier: its backbone's input for these images, and a probe
        # giving the backbone's feature maps (the input of its head) and the logits.
        if self._probe is None:
            self._probe = (self.model.backbone_probe("feature_maps", "logits"),
                           {"last_block": f"{self.model.backbone.name} output",
                            "logits": self.model.network.layers[-1].name})
        probe, names = self._probe
        x = self.model.prepare(keras.ops.convert_to_tensor(self.images), training=False)
        block, logits = probe(x, training=False)
        record = {"epoch": epoch}
        for key, value in (("last_block", block), ("logits", logits)):
            values = keras.ops.convert_to_numpy(keras.ops.cast(value, "float32")).ravel()
            record[key] = [float(v) for v in np.percentile(values, self.PERCENTILES)]
        data = {"percentiles": list(self.PERCENTILES), "layers": names, "epochs": []}
        if os.path.exists(self.path):
            with open(self.path) as f:
                data = json.load(f)
        data["epochs"] = [e for e in data["epochs"] if e["epoch"] < epoch] + [record]
        files.write_json(data, self.path)
