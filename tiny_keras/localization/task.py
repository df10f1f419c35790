"""Paper 2's localiser as an engine task (``Recipe(task="localization")``): the images with
their boxes, the input pipeline that moves boxes with the images, the matching loss, and
the held-out box scores beside the baselines. ``tiny_keras.engine`` trains it as it trains
a classifier: the same run folder, resume and time limit.

The recipe's ``classes``: None, every class's training images, held out the official
validation set; or wnids (paper2 section 4.8: goldfish alone), whose training images are
split by a seeded permutation, ``train_fraction`` to train on and the rest held out. Its
``task_options`` (:data:`OPTIONS`): that fraction, the loss's ``alpha`` and ``match_iou``,
the ``confidence_threshold`` that accepts a box, and the augmentation (``flip``, ``shift``,
``scale``).
"""
import dataclasses
import os

import keras
import numpy as np

from tiny_keras import backend, files, models, runs
from tiny_keras.backend import tf
from tiny_keras.engine.model import make_optimizer, set_weight_decay, stage_schedule
from tiny_keras.engine.session import UnsupportedSession
from tiny_keras.engine.task import Task
from tiny_keras.localization.boxes import BoxAugment, decode, pixel_to_corners
from tiny_keras.localization.matching import MATCH_IOU, MatchingLoss
from tiny_keras.localization.metrics import baselines, format_table, metrics_row, top_box_ious

GOLDFISH = "n01443537"  # paper2 section 4.8: "Here we use gold fish as an example"
# Recipe.task_options of a localisation run, and their defaults (paper2 section 4.8 and TensorBox's)
OPTIONS = dict(train_fraction=0.8, alpha=6.4, match_iou=MATCH_IOU, confidence_threshold=0.5, flip=True, shift=0.1,
               scale=0.1)


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


def load_boxes(data, classes=(GOLDFISH,), train_fraction=0.8, seed=0, per_class=None, val_per_class=None,
               progress=True):
    """The training and held-out images with their boxes: ``(train, held_out, description
    of the held-out set)``. ``classes``: wnids, whose training images are split (see the
    module's docstring), or None: all, held out the official val set."""
    # tiny_keras.data brings tensorflow_datasets (~0.4 s): loaded only to read images
    from tiny_keras import data as data_lib

    if classes is None:
        train = data_lib.load_split(data, "train", per_class=per_class, progress=progress)
        val = data_lib.load_split(data, "val", per_class=val_per_class, progress=progress)
        return _subset(train, np.arange(len(train))), _subset(val, np.arange(len(val))), "the official val set"
    classes = [classes] if isinstance(classes, str) else list(classes)
    split = data_lib.load_split(data, "train", classes=classes, per_class=per_class, progress=progress)
    if (split.boxes < 0).any():
        raise ValueError(f"{data}: some {', '.join(classes)} training images have no box")
    if len(split) < 2:
        raise ValueError(f"{data}: {len(split)} training image of {', '.join(classes)}; a split needs at least 2")
    order = np.random.default_rng(seed).permutation(len(split))
    cut = min(max(int(round(train_fraction * len(split))), 1), len(split) - 1)  # at least one image each side
    train, held = np.sort(order[:cut]), np.sort(order[cut:])
    return (_subset(split, train), _subset(split, held),
            f"{len(held)} of the {len(split)} {', '.join(classes)} training images")


def make_dataset(split, batch_size, seed=0, augment=None, repeat=True, skip_batches=0):
    """``(images float32, targets [B, 1, 4] cx cy w h)`` batches. Order: shuffle (reshuffled
    every epoch), repeat, batch, augment the whole batch with a per-batch seed (the batch's
    index in the stream), skip ``skip_batches`` (a resumed run's position), prefetch."""
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.corners[:, None, :].astype(np.float32)))
    if repeat:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size).enumerate().skip(skip_batches)

    def prepare(step, batch):
        images, corners = batch
        if augment is not None:
            images, corners = augment(images, corners, tf.stack([tf.cast(seed, tf.int64), step]))
        x0, y0, x1, y1 = tf.unstack(corners, axis=-1)
        targets = tf.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)
        return tf.cast(images, tf.float32), targets

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _predict(model, images, batch_size=256):
    return model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)


class HeldOutBoxes(keras.callbacks.Callback):
    """Adds to each epoch's logs the held-out mean IoU and CorLoc of the model's most
    confident box (``val_mean_iou``, ``val_corloc``), and keeps that epoch's decoded boxes
    (``predicted``: corners and scores). Put it before the callbacks that read the logs
    (the epoch line, the best weights, the ``CSVLogger``)."""

    def __init__(self, held_out):
        super().__init__()
        self.held_out = held_out
        self.predicted = None

    def on_epoch_end(self, epoch, logs=None):
        self.predicted = decode(_predict(self.model, self.held_out.images))
        ious = top_box_ious(*self.predicted, self.held_out.corners)
        if logs is not None:
            logs.update(val_mean_iou=float(ious.mean()), val_corloc=float((ious >= 0.5).mean()))


# -- the task ---------------------------------------------------------------------------------
class Localization(Task):
    """Images to boxes (``paper2_localizer``): the engine's task for ``Recipe(task="localization")``."""

    monitor = "val_mean_iou"
    title = "held-out images, percent; the baselines beside ours"
    no_xla = "the localiser's matching loss calls scipy through tf.numpy_function, which XLA cannot compile"

    def __init__(self, recipe):
        unknown = sorted(set(recipe.task_options) - set(OPTIONS))
        if unknown:
            raise ValueError(f"task_options of a localisation recipe are {sorted(OPTIONS)}. Received: {unknown}")
        super().__init__(recipe)
        self.options = {**OPTIONS, **recipe.task_options}
        if not 0 < self.options["train_fraction"] < 1:
            raise ValueError(f"train_fraction must be between 0 and 1. Received: {self.options['train_fraction']}")
        # What a classifier's recipe may set and the localiser's pipeline does not do
        unsupported = {k: getattr(recipe, k) for k in ("crop", "preprocessing", "label_smoothing") if getattr(recipe, k)}
        unsupported.update({f"stages[{i}].{k}": getattr(s, k) for i, s in enumerate(recipe.stages)
                            for k in ("augment", "image_size") if getattr(s, k)})
        if unsupported:
            raise ValueError(f"a localisation recipe sets its augmentation in task_options ({', '.join(OPTIONS)}); "
                             f"it does not take {unsupported}")
        self.held_out = None  # the held-out set's description, once loaded
        self.held_out_boxes = None  # the stage's HeldOutBoxes callback

    def check_session(self, session):
        """Raise ``UnsupportedSession`` where the localiser cannot run under ``session``:
        another backend, several devices."""
        if not backend.is_tensorflow():
            raise UnsupportedSession(f"KERAS_BACKEND={backend.name()}: the localiser trains on the TensorFlow backend "
                                     "only (its matching loss calls scipy through tf.numpy_function); set "
                                     "KERAS_BACKEND=tensorflow")
        if session.strategy != "default":
            raise UnsupportedSession(f"strategy {session.strategy!r}: the localiser trains on one device (its matching "
                                     "loss calls scipy once a batch)")

    def load_splits(self, data, workdir, progress=False):
        """The training and held-out boxes. Their files go to ``workdir/split.json`` when the
        run starts; a run continued on other images is refused."""
        if isinstance(data, dict):
            raise ValueError("the localiser reads its boxes from the dataset: data must be the zip, its folder or "
                             "None (TFDS), not splits in memory")
        r = self.recipe
        train, held, self.held_out = load_boxes(data, r.classes, self.options["train_fraction"], r.seed, r.per_class,
                                                r.val_per_class, progress=progress)
        split = {"classes": describe_classes(r.classes), "held_out": self.held_out, "held_out_files": held.files,
                 "train_files": len(train)}
        path = os.path.join(workdir, runs.SPLIT)
        saved = files.read_json(path, None)
        if saved is not None and saved != split:
            raise runs.RunFolderError(f"{data or 'tfds:tiny_imagenet'}: its images differ from those the run in "
                                      f"{workdir} was started on ({runs.SPLIT}); give it the same --data")
        files.write_json(split, path)
        return train, held

    def train_input(self, strategy, split, batch_size, seed, skip_batches=0):
        augment = BoxAugment(self.options["flip"], self.options["shift"], self.options["scale"])
        return make_dataset(split, batch_size, seed, augment, skip_batches=skip_batches)

    def eval_input(self, split, batch_size, strategy):
        return make_dataset(split, batch_size, repeat=False)

    def stage_model(self, stage, index, previous, train_split):
        return previous if previous is not None else models.build(self.recipe.model, **self.recipe.model_options)

    def compile(self, model, stage, steps, session, steps_per_execution):
        set_weight_decay(model, stage.weight_decay)
        model.compile(optimizer=make_optimizer(stage.optimizer, stage_schedule(stage, steps)),
                      loss=MatchingLoss(self.options["alpha"], self.options["match_iou"]), jit_compile=False,
                      steps_per_execution=steps_per_execution, run_eagerly=session.run_eagerly)

    def callbacks(self, run, folder):
        self.held_out_boxes = HeldOutBoxes(run.val_split)
        return [self.held_out_boxes]

    def scores(self, model, run, val_ds, logs=None):
        """Ours on the held-out images, and the baselines a localiser has to beat. Where the
        last epoch's logs measured these weights, its boxes are ours: predicted once."""
        held = run.val_split
        if logs is not None and self.held_out_boxes is not None and self.held_out_boxes.predicted is not None:
            corners, scores = self.held_out_boxes.predicted
        else:
            corners, scores = decode(_predict(model, held.images))
        accepted = (scores >= self.options["confidence_threshold"]).sum(axis=1).mean()
        ours = metrics_row("ours", corners, scores, held.corners, accepted)
        return {**{k: v for k, v in ours.items() if k != "method"}, "baselines": baselines(run.train_split, held)}

    def summary(self, row):
        rows = _method_rows(row)
        return "held-out " + ", ".join(f"{r['method']}: mean IoU {100 * r['mean_iou']:.1f}, CorLoc "
                                       f"{100 * r['corloc']:.1f}" for r in rows)

    def results(self, run, results):
        """The run's results, with its held-out rows (ours, then the baselines) as published."""
        rows = _method_rows(results["runs"][-1])
        return {**results, "task": "localization", "classes": describe_classes(self.recipe.classes),
                "held_out": self.held_out, "rows": rows,
                "beats_baselines": {k: all(rows[0][k] > r[k] for r in rows[1:]) for k in ("mean_iou", "corloc")},
                "epochs": sum(r["epochs"] for r in results["runs"]),
                "train_seconds": round(sum(r["seconds"] for r in results["runs"]), 1)}

    def format_table(self, rows):
        """Each stage's held-out scores, ours and the baselines'."""
        return "\n\n".join(f"{r['model']} '{r['stage']}' ({r['epochs']} epochs), held out (percent):\n"
                           + format_table(_method_rows(r)) for r in rows)


def _method_rows(row):
    """A stage row's held-out scores as the table's rows: ours, then the baselines."""
    ours = {"method": "ours", **{k: row[k] for k in ("mean_iou", "corloc", "ap50", "images",
                                                     "boxes_accepted_per_image")}}
    return [ours] + list(row["baselines"])


def describe_classes(classes):
    """``"n01443537"``, ``"n01443537,n01629819"``, or ``"all"`` (None)."""
    return "all" if classes is None else ",".join([classes] if isinstance(classes, str) else classes)


def held_out_split(workdir, data):
    """The held-out images of the localisation run in ``workdir`` (its ``split.json``), with
    their boxes, and its task options."""
    from tiny_keras.recipe import Recipe

    saved = runs.saved_recipe(workdir)
    if saved is None:
        raise ValueError(f"{workdir}: no {runs.RECIPE}; a localisation run folder holds one (a folder with "
                         f"{runs.CONFIG} instead was written by an older version: train it again)")
    recipe = Recipe.from_dict(saved)
    split = files.read_json(os.path.join(workdir, runs.SPLIT))
    options = {**OPTIONS, **recipe.task_options}
    _, held_out, _ = load_boxes(data, recipe.classes, options["train_fraction"], recipe.seed, recipe.per_class,
                                recipe.val_per_class, progress=False)
    if held_out.files != split["held_out_files"]:
        raise ValueError(f"{data}: its held-out images differ from those {workdir} was evaluated on")
    return held_out, options
