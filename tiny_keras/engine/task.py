"""What a run's model learns, as the engine sees it: its splits, model, loss, inputs and
scores. The engine trains any task the same way (stages, checkpoints, resume, the time
limit); a task differs only by the methods of :class:`Task`.

:class:`Classification` is the papers' classifiers; ``tiny_keras.localization.task``'s
``Localization`` is paper 2's localiser. :func:`get` gives a recipe's (``Recipe.task``).
"""
import importlib

import numpy as np

from tiny_keras.engine import inputs, log, model as model_lib

# Recipe.task -> the class that trains it ("module:Class"), imported when a run needs it
TASK_CLASSES = {"classification": f"{__name__}:Classification",
                "localization": "tiny_keras.localization.task:Localization"}


def get(recipe):
    """A new task object for ``recipe`` (it may keep what it reads of the data)."""
    module, name = TASK_CLASSES[recipe.task].split(":")
    return getattr(importlib.import_module(module), name)(recipe)


class Task:
    """What the engine asks of a task. A new task subclasses it and is named in
    :data:`TASK_CLASSES`; the methods without a default are the ones it must give."""

    monitor = None  # the held-out score a stage's best weights are chosen by (higher is better)
    title = None  # what the results table holds
    no_xla = None  # why the task cannot run under XLA, where it cannot
    records_activations = False  # whether ``Session.activation_samples`` applies

    def __init__(self, recipe):
        self.recipe = recipe

    def check_session(self, session):
        """Raise ``session.UnsupportedSession`` where the task cannot run under ``session``."""

    def load_splits(self, data, workdir, progress=False):
        """``(train, val)``: what the stages train on and are scored on."""
        raise NotImplementedError

    def train_input(self, strategy, split, batch_size, seed, skip_batches=0):
        """The endless, seeded training stream, started ``skip_batches`` in."""
        raise NotImplementedError

    def eval_input(self, split, batch_size, strategy):
        """``split`` in order, for Keras's validation in ``fit``."""
        raise NotImplementedError

    def stage_model(self, stage, index, previous, train_split):
        """Stage ``index``'s model: a new one for the first stage, else from ``previous``."""
        raise NotImplementedError

    def compile(self, model, stage, steps, session, steps_per_execution):
        """Compile ``model`` for ``stage``: its optimizer and schedule, the task's loss."""
        raise NotImplementedError

    def callbacks(self, run, folder):
        """Callbacks of every stage that come first, before those that read an epoch's logs."""
        return []

    def scores(self, model, run, val_ds, logs=None):
        """A stage's row of scores; ``logs``: the last epoch's, where they measured these weights."""
        raise NotImplementedError

    def summary(self, row):
        """A stage's scores in one line."""
        raise NotImplementedError

    def results(self, run, results):
        """The run's results dict, with what the task adds."""
        return results

    def format_table(self, rows):
        """The stages' rows as a table."""
        raise NotImplementedError


class Classification(Task):
    """Images to class logits: ``models.ImageClassifier``, cross-entropy, top-1 and top-5."""

    monitor = "val_top1"
    title = "val accuracy, percent; the paper's figure beside ours"
    records_activations = True  # an ImageClassifier's feature maps and logits

    def load_splits(self, data, workdir, progress=False):
        return inputs.load_splits(self.recipe, data, progress=progress)

    def train_input(self, strategy, split, batch_size, seed, skip_batches=0):
        return inputs.train_input(strategy, split, batch_size, seed, skip_batches)

    def eval_input(self, split, batch_size, strategy):
        return inputs.eval_input(split, batch_size, strategy)

    def stage_model(self, stage, index, previous, train_split):
        images = None if previous is not None else np.asarray(train_split.images)  # to fit the preprocessing
        return model_lib.stage_model(self.recipe, stage, index, previous, images)

    def compile(self, model, stage, steps, session, steps_per_execution):
        model_lib.compile_model(model, self.recipe, stage, steps, session, steps_per_execution)

    def scores(self, model, run, val_ds, logs=None):
        if logs is not None:
            return val_scores(logs, prefix="val_")
        return evaluate(model, val_ds)

    def summary(self, row):
        return f"val top-1 {row['val_top1']:.2f}%, top-5 {row['val_top5']:.2f}%"

    def format_table(self, rows):
        return log.format_table(rows)


def val_scores(logs, prefix=""):
    """``{"val_loss", "val_top1", "val_top5"}`` (accuracies in percent) from Keras logs."""
    return {"val_loss": float(logs[prefix + "loss"]), "val_top1": 100.0 * float(logs[prefix + "top1"]),
            "val_top5": 100.0 * float(logs[prefix + "top5"])}


def evaluate(model, dataset):
    """:func:`val_scores` of ``model`` on ``dataset``."""
    return val_scores(model.evaluate(dataset, return_dict=True, verbose=0))
