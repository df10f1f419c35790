"""One stage of a run: start it (new, or from its resume point, at an epoch's end or inside
an epoch), fit it with the engine's callbacks, and finish it (its model, its row of results)."""
import math
import os
import time

import keras
import numpy as np

from tiny_keras import backend, files, runs
from tiny_keras import callbacks as cbs
from tiny_keras.engine import log, resume, time_limit
from tiny_keras.engine.model import available_memory, check_batch_fits, recompile_resumed, stage_schedule, stage_seed
from tiny_keras.engine.session import describe_speed, stage_steps_per_execution


def run_stage(run, index, model):
    """Train stage ``index`` of ``run`` (an ``engine.run.Run``) from ``model`` (the previous
    stage's, or None) to its end, or to the time limit; return the stage's model."""
    stage = run.recipe.stages[index]
    point = run.position.resume_point(stage.name)
    steps = stage.steps(len(run.train_split))
    inside = runs.resumed_inside(point)
    # Executions fall on epoch ends, snapshot steps and the step a run resumes from.
    per_execution = stage_steps_per_execution(run.session.steps_per_execution,
                                              math.gcd(steps, inside[1]) if inside else steps,
                                              stage.snapshot_every_steps)
    if run.deadline is not None:
        run.deadline.check_stage(run.recipe, index, point, run.position.progress, len(run.train_split), run.timing,
                                 per_execution)
    os.makedirs(runs.stage_folder(run.workdir, stage.name), exist_ok=True)
    model, initial_epoch, start = _start(run, stage, index, model, point, steps, per_execution)
    if backend.gpu_compute_capability() is None:
        check_batch_fits(model, stage, available_memory())
    done_steps = inside[1] if inside else 0

    def train_input(skip_steps):
        # The task's stream, skipped to where a resumed run stopped (a classifier's: shuffled
        # uint8 images, which the model augments on the device with a seed saved in checkpoints).
        return run.task.train_input(run.strategy, run.train_split, stage.batch_size, stage_seed(run.recipe, index),
                                    skip_batches=skip_steps)

    val_ds = run.task.eval_input(run.val_split, stage.batch_size, run.strategy)
    callbacks, best, checkpoint, limit = _callbacks(run, stage, index, steps, per_execution, initial_epoch, point,
                                                    start)
    log.info(f"Stage {index + 1}/{len(run.recipe.stages)} '{stage.name}': {stage.epochs} epochs of {steps} steps, "
             f"batch {stage.batch_size}" + (f", {stage.image_size}px" if stage.image_size else "")
             + f"; {run.recipe.precision}, {describe_speed(run.session.jit_compile, per_execution)}"
             + (f" (resumed in epoch {initial_epoch + 1} after step {done_steps:,})" if done_steps else
                f" (resumed after epoch {initial_epoch})" if initial_epoch else ""))
    history = None
    if initial_epoch < stage.epochs:
        fit = dict(validation_data=val_ds, callbacks=callbacks, verbose=1 if run.session.verbose == 1 else 0,
                   shuffle=False)
        try:
            history = _fit(model, stage, steps, initial_epoch, done_steps, train_input, callbacks, checkpoint, fit)
        except time_limit.StopInsideEpoch as stop:
            for callback in callbacks:  # Keras ends no fit a callback raised in: close logs and writers
                callback.on_train_end()
            log.epoch(f"Stage '{stage.name}': {checkpoint.report()}")
            run.deadline.stop(str(stop), "the run continues from there when started again")
    if limit is not None and limit.stopped_at is not None:
        log.epoch(f"Stage '{stage.name}': {checkpoint.report()}")
        run.deadline.stop(limit.message(stage.name), "the run continues from there when started again")
    _finish(run, stage, model, history, val_ds, best, checkpoint, point, start)
    return model


def _fit(model, stage, steps, initial_epoch, done_steps, train_input, callbacks, checkpoint, fit):
    """``model.fit`` over the stage's epochs left, from ``initial_epoch`` (0-based) and the
    ``done_steps`` of it done; ``train_input(skip_steps)`` gives the stream started there."""
    if not done_steps:
        return model.fit(train_input(initial_epoch * steps), epochs=stage.epochs, initial_epoch=initial_epoch,
                         steps_per_epoch=steps, **fit)
    # Resumed inside an epoch: its steps left (Keras counts an epoch's steps from 0), then
    # the other epochs on a stream started after it, the callbacks' state carried over.
    first = model.fit(train_input(initial_epoch * steps + done_steps), epochs=initial_epoch + 1,
                      initial_epoch=initial_epoch, steps_per_epoch=steps - done_steps, **fit)
    if model.stop_training or initial_epoch + 1 >= stage.epochs:
        return first
    checkpoint.restore = resume.callback_state(callbacks)  # Keras resets them in on_train_begin
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.CSVLogger):
            callback.append = True
    rest = model.fit(train_input((initial_epoch + 1) * steps), epochs=stage.epochs, initial_epoch=initial_epoch + 1,
                     steps_per_epoch=steps, **fit)
    rest.epoch = first.epoch + rest.epoch
    rest.history = {k: first.history.get(k, []) + v for k, v in rest.history.items()}
    return rest


def _start(run, stage, index, model, point, steps, per_execution):
    """``(model, epochs done, start time)``: a new stage's model, compiled; or, where the run
    stopped inside this stage (``point``), its checkpoint's, with its optimizer."""
    if point is None:
        model = run.task.stage_model(stage, index, model, run.train_split)
        run.task.compile(model, stage, steps, run.session, per_execution)
        return model, 0, time.perf_counter()
    model = _load_checkpoint(run.workdir, point, stage.name)
    recompile_resumed(model, stage, run.session, per_execution)
    done = int(point["epochs_done"])
    runs.truncate_history(os.path.join(runs.stage_folder(run.workdir, stage.name), runs.HISTORY), done)
    return model, done, time.perf_counter() - float(point.get("seconds", 0.0))


def _load_checkpoint(workdir, point, stage):
    """The model of the resume point ``point`` (``state.json``); where its file cannot be
    read (damaged outside the engine, which writes it whole), one line saying what to do."""
    path = os.path.join(workdir, point["checkpoint"])
    try:
        return keras.models.load_model(path)
    except Exception as err:  # noqa: BLE001 - any failure means the same thing here
        raise runs.RunFolderError(
            f"{path}: the resume checkpoint cannot be read ({type(err).__name__}: {str(err)[:160]}); remove "
            f"{os.path.join(workdir, runs.STATE)} to train stage '{stage}' again from its first epoch, or pass "
            "--overwrite to start the run again") from None


def _callbacks(run, stage, index, steps, per_execution, initial_epoch, point, start):
    """The stage's callbacks, with its best-weights saver, resume checkpoint and time limit."""
    folder, session = runs.stage_folder(run.workdir, stage.name), run.session
    inside = runs.resumed_inside(point)
    # The schedule lives in the optimizer (compiled into the train step; a checkpoint holds
    # its step); the logger reports the rate of each epoch's last step.
    callbacks = run.task.callbacks(run, folder) + [
                 cbs.LearningRateLogger(stage_schedule(stage, steps)),
                 log.EpochLog(stage.name, stage.epochs, steps * stage.batch_size, steps_per_epoch=steps,
                              progress_seconds=log.PROGRESS_SECONDS, resumed=inside)]
    if stage.reduce_lr_on_plateau:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(**stage.reduce_lr_on_plateau))
    if stage.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(**stage.early_stopping))
    best = cbs.BestCheckpoint(os.path.join(folder, runs.BEST_WEIGHTS), monitor=run.task.monitor, mode="max")
    callbacks.append(best)
    if stage.snapshot_every_epochs or stage.snapshot_every_steps:
        callbacks.append(cbs.Snapshots(os.path.join(folder, runs.SNAPSHOTS), stage.snapshot_every_epochs,
                                       stage.snapshot_every_steps, steps, resumed=inside))
    callbacks += [keras.callbacks.CSVLogger(os.path.join(folder, runs.HISTORY), append=initial_epoch > 0),
                  keras.callbacks.TerminateOnNaN()]
    if session.tensorboard and tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run.workdir, runs.TENSORBOARD, stage.name),
                                                     histogram_freq=session.tensorboard_histograms))
    if session.activation_samples and run.task.records_activations:
        callbacks.append(cbs.ActivationPercentiles(np.asarray(run.val_split.images[:session.activation_samples]),
                                                   os.path.join(folder, runs.ACTIVATIONS)))
    every = None if session.checkpoint_every == "auto" else session.checkpoint_every
    checkpoint = resume.RunCheckpoint(run.workdir, index, stage.name, callbacks=callbacks, start=start,
                                      epochs=stage.epochs, every=every, timed_on=run.timing, steps_per_epoch=steps,
                                      steps_per_execution=per_execution, point=point)
    callbacks.append(checkpoint)
    limit = None
    if run.deadline is not None:
        limit = time_limit.TimeLimit(run.deadline.at, checkpoint, stage.epochs)
        callbacks.append(limit)
    return callbacks + list(run.extra_callbacks), best, checkpoint, limit


def _finish(run, stage, model, history, val_ds, best, checkpoint, point, start):
    """End the stage: its best weights where the recipe keeps them, its scores, its model
    (``stages/<name>/model.keras``) and its row in ``progress.json``."""
    folder = runs.stage_folder(run.workdir, stage.name)
    epochs = history.epoch[-1] + 1 if history is not None and history.epoch else stage.epochs  # early stopping
    if stage.restore_best and os.path.exists(best.filepath):
        model.load_weights(best.filepath)
    last_weights = history is not None and not stage.restore_best and not stage.early_stopping
    # Where the last epoch's validation measured these very weights, its logs are the scores.
    logs = {k: v[-1] for k, v in history.history.items()} if last_weights and epochs == stage.epochs else None
    scores = run.task.scores(model, run, val_ds, logs)
    row = dict(model=run.recipe.model, stage=stage.name, epochs=epochs, image_size=stage.image_size, **scores,
               paper_val_top1=run.recipe.paper_results.get(stage.name), seconds=round(time.perf_counter() - start, 1),
               # An estimate for the next stage where all its epochs were timed as this session's.
               timed_on=None if point is not None and point.get("timed_on") != run.timing else run.timing)
    saved = (files.read_json(os.path.join(run.workdir, runs.STATE), None) or {}).get("checkpoint")
    if last_weights and saved:  # the last epoch's weights, already serialized: copy the file
        files.copy(os.path.join(run.workdir, saved), os.path.join(folder, runs.MODEL))
    else:
        files.save_model(model, os.path.join(folder, runs.MODEL))
    if history is not None:
        log.epoch(f"Stage '{stage.name}': {checkpoint.report()}")
    run.position.progress["runs"].append(row)
    files.write_json(run.position.progress, os.path.join(run.workdir, runs.PROGRESS))
    log.info(f"Stage '{stage.name}': {run.task.summary(row)}")


def tensorboard_available():
    """Whether TensorBoard logs can be written (Keras writes them with tf.summary, on any
    backend); where TensorFlow is missing, says so in the run's log once per stage."""
    try:
        backend.require_tensorflow("TensorBoard logs")
    except backend.TensorFlowRequired:
        log.info("TensorBoard logs are not written: Keras writes them with tf.summary, and TensorFlow is not "
                 "installed (the run's history.csv and train.log hold the same curves)")
        return False
    return True
