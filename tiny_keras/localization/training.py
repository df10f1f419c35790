"""The localisation run: the images with their boxes, the input pipeline, the training
and the evaluation of paper2 section 4.8 (``reproductions/paper2_localization.py``).
"""
import dataclasses
import json
import math
import os
import time

import keras
import numpy as np

from tiny_keras.backend import tf
from tiny_keras import backend, callbacks, files, models, provenance, runs
from tiny_keras.localization.boxes import BoxAugment, decode, pixel_to_corners
from tiny_keras.localization.matching import MATCH_IOU, MatchingLoss
from tiny_keras.localization.metrics import baselines, format_table, metrics_row, top_box_ious

GOLDFISH = "n01443537"  # paper2 section 4.8: "Here we use gold fish as an example"


# -- data -------------------------------------------------------------------------------------
@dataclasses.dataclass
class BoxSplit:
    """Images with their ground-truth corner boxes ``[N, 4]`` and file names."""

    images: np.ndarray
    corners: np.ndarray
    files: list

    def __len__(self):
        return len(self.files)


def _subset(split, index):
    return BoxSplit(np.asarray(split.images[index]), pixel_to_corners(split.boxes[index]),
                    [split.files[i] for i in index])


def load_boxes(data, classes=GOLDFISH, train_fraction=0.8, seed=0, per_class=None, val_per_class=None,
               progress=True):
    """The training and held-out images with their boxes.

    ``classes`` a wnid (paper2 section 4.8: one class, ``train_fraction`` of its training
    images to train on, the rest held out, split by a permutation with ``seed``), or
    ``"all"``: every class's training images, held out the official validation set.
    Returns ``(train, held_out, description of the held-out set)``."""
    # tiny_keras.data brings tensorflow_datasets (~0.4 s): loaded only to read images
    from tiny_keras import data as data_lib

    if classes == "all":
        train = data_lib.load_split(data, "train", per_class=per_class, progress=progress)
        val = data_lib.load_split(data, "val", per_class=val_per_class, progress=progress)
        return _subset(train, np.arange(len(train))), _subset(val, np.arange(len(val))), "the official val set"
    split = data_lib.load_split(data, "train", classes=[classes], per_class=per_class, progress=progress)
    if (split.boxes < 0).any():
        raise ValueError(f"{data}: some {classes} training images have no box")
    order = np.random.default_rng(seed).permutation(len(split))
    cut = int(round(train_fraction * len(split)))
    if not 0 < cut < len(split):
        raise ValueError(f"train_fraction {train_fraction} leaves no training or no held-out images of {len(split)}")
    train, held = np.sort(order[:cut]), np.sort(order[cut:])
    return _subset(split, train), _subset(split, held), f"{len(held)} of the {len(split)} {classes} training images"


def make_dataset(split, batch_size, seed=0, augment=None, repeat=True):
    """``(images float32, targets [B, 1, 4] cx cy w h)`` batches. Order: shuffle (reshuffled
    every epoch), repeat, batch, augment the whole batch with a per-batch seed, prefetch."""
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.corners[:, None, :].astype(np.float32)))
    if repeat:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size).enumerate()

    def prepare(step, batch):
        images, corners = batch
        if augment is not None:
            images, corners = augment(images, corners, tf.stack([tf.cast(seed, tf.int64), step]))
        x0, y0, x1, y1 = tf.unstack(corners, axis=-1)
        targets = tf.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)
        return tf.cast(images, tf.float32), targets

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# -- the run ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Config:
    """One localisation run, as data (saved as ``config.json`` in the run folder).

    Every default is paper2 section 4.8's setting or, where it says nothing, TensorBox's
    or ours (the script's docstring says which)."""

    classes: str = GOLDFISH
    train_fraction: float = 0.8
    encoder: str = "paper2_resnet18"
    encoder_options: dict = dataclasses.field(default_factory=dict)
    max_boxes: int = 5
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3  # Adam, cosine decay to 0 over the run
    alpha: float = 6.4
    match_iou: float = MATCH_IOU
    confidence_threshold: float = 0.5  # boxes at or above it are accepted (paper2 section 3.5)
    flip: bool = True
    shift: float = 0.1
    scale: float = 0.1
    seed: int = 0
    steps_per_epoch: int = None  # None: one pass over the training images
    per_class: int = None  # at most this many training images per class (smoke runs)
    val_per_class: int = None
    smoke: bool = False

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        return cls(**values)


def _predict(model, images, batch_size=256):
    return model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)


class HeldOutBoxes(keras.callbacks.Callback):
    """Adds to each epoch's logs the held-out mean IoU and CorLoc of the model's most
    confident box (``val_mean_iou``, ``val_corloc``: Keras's prefix for held-out scores, so
    the ``CSVLogger`` adds no empty ``val_`` columns) and the epoch's seconds (``seconds``);
    with ``echo``, prints them. Put it before the ``CSVLogger``."""

    def __init__(self, held_out, epochs, echo=True):
        super().__init__()
        self.held_out, self.epochs, self.echo = held_out, epochs, echo
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        corners, scores = decode(_predict(self.model, self.held_out.images))
        ious = top_box_ious(corners, scores, self.held_out.corners)
        logs.update(val_mean_iou=float(ious.mean()), val_corloc=float((ious >= 0.5).mean()),
                    seconds=round(time.perf_counter() - self._start, 2))
        if self.echo:
            print(f"epoch {epoch + 1}/{self.epochs}: loss {float(logs['loss']):.4f}, held-out mean IoU "
                  f"{100 * logs['val_mean_iou']:.1f}, CorLoc {100 * logs['val_corloc']:.1f} "
                  f"({logs['seconds']:.0f} s)", flush=True)


def build_model(config):
    return models.build("paper2_localizer", max_boxes=config.max_boxes, encoder=config.encoder,
                        encoder_options=dict(config.encoder_options) or None)


def run(config, workdir, data=None, overwrite=False, verbose=2):
    """Train and evaluate ``config`` in ``workdir``; returns the results dict.

    Writes ``config.json``, ``split.json`` (the held-out files), ``history.csv`` (Keras's
    ``CSVLogger``, as a classification stage's: per epoch from 0, loss, learning rate,
    held-out mean IoU and CorLoc, seconds), ``model.keras``,
    ``results.json`` / ``results.txt`` (ours and the baselines) and ``run.json`` (command,
    commit, machine, wall time). Runs take minutes, so an interrupted one starts again.

    TensorFlow backend only: the matching loss calls scipy through ``tf.numpy_function``
    and the input pipeline is tf.data."""
    if not backend.is_tensorflow():
        raise NotImplementedError(f"the localisation run needs Keras's TensorFlow backend (its matching loss calls "
                                  f"scipy through tf.numpy_function); this process runs {backend.name()}. "
                                  "Set KERAS_BACKEND=tensorflow")
    workdir = os.fspath(workdir)
    if os.path.exists(os.path.join(workdir, runs.RESULTS)) and not overwrite:
        raise FileExistsError(f"{workdir} holds a finished run; choose another workdir or pass --overwrite")
    os.makedirs(workdir, exist_ok=True)
    files.write_json(json.loads(config.to_json()), os.path.join(workdir, runs.CONFIG))
    provenance.record_session(workdir, new_run=True)  # an interrupted run starts again: only this session trains it
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)

    train, held_out, held_name = load_boxes(data, config.classes, config.train_fraction, config.seed,
                                            config.per_class, config.val_per_class, progress=verbose > 0)
    files.write_json({"classes": config.classes, "held_out": held_name, "held_out_files": held_out.files,
                      "train_files": len(train)}, os.path.join(workdir, runs.SPLIT))
    steps = config.steps_per_epoch or math.ceil(len(train) / config.batch_size)
    augment = BoxAugment(config.flip, config.shift, config.scale)
    dataset = make_dataset(train, config.batch_size, config.seed, augment)
    model = build_model(config)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, config.epochs * steps))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=MatchingLoss(config.alpha, config.match_iou),
                  jit_compile=False, run_eagerly=config.smoke)
    if verbose:
        print(f"localiser: {model.count_params():,} parameters ({config.encoder} encoder); {len(train)} training "
              f"images, held out {held_name}; {config.epochs} epochs of {steps} steps")

    train_start = time.perf_counter()
    # The learning rate and the held-out scores join the logs before the CSVLogger writes them.
    epoch_callbacks = [callbacks.LearningRateLogger(schedule),
                       HeldOutBoxes(held_out, config.epochs, echo=bool(verbose)),
                       keras.callbacks.CSVLogger(os.path.join(workdir, runs.HISTORY))]
    model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps, callbacks=epoch_callbacks, verbose=0,
              shuffle=False)  # the dataset is shuffled already
    train_seconds = time.perf_counter() - train_start
    files.save_model(model, os.path.join(workdir, runs.MODEL))

    corners, scores = decode(_predict(model, held_out.images))
    accepted = (scores >= config.confidence_threshold).sum(axis=1).mean()
    rows = [metrics_row("ours", corners, scores, held_out.corners, accepted)] + baselines(train, held_out)
    wall = time.perf_counter() - started
    results = {"paper": "paper2", "task": "localization", "classes": config.classes, "held_out": held_name,
               "rows": rows, "beats_baselines": {k: all(rows[0][k] > r[k] for r in rows[1:])
                                                 for k in ("mean_iou", "corloc")},
               "epochs": config.epochs, "train_seconds": round(train_seconds, 1), "wall_seconds": round(wall, 1),
               "smoke": config.smoke, "data": os.fspath(data) if data else "tfds:tiny_imagenet", "config": json.loads(config.to_json())}
    table = format_table(rows)
    runs.write_results(workdir, results, table)
    provenance.record_finish(workdir, train_seconds=round(train_seconds, 1), wall_seconds=round(wall, 1))
    if verbose:
        print(f"\nheld-out localisation ({held_name}; percent)\n{table}")
    return results


def held_out_split(workdir, data):
    """The held-out images of the run in ``workdir`` (its ``split.json``), with their boxes."""
    config = Config.from_dict(files.read_json(os.path.join(workdir, runs.CONFIG)))
    split = files.read_json(os.path.join(workdir, runs.SPLIT))
    _, held_out, _ = load_boxes(data, config.classes, config.train_fraction, config.seed, config.per_class,
                                config.val_per_class, progress=False)
    if held_out.files != split["held_out_files"]:
        raise ValueError(f"{data}: its held-out images differ from those {workdir} was evaluated on")
    return held_out, config
