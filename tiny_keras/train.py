"""The training engine: ``train(recipe, workdir, data)`` runs any paper's recipe.

A run folder (``workdir``) holds the recipe, the run's resume point, each stage's
history, best weights, snapshots and model, the final model and results, a log and the
run's provenance; ``tiny_keras.runs`` names every file and reads them.

An interrupted run (killed at any point) started again with the same recipe and folder
continues from its last checkpointed epoch: same stage, same learning-rate schedule
position, same stream of training batches. A folder holding a different run, or a
finished one, is never overwritten unless ``overwrite=True``.

The model a stage trains is a ``tiny_keras.models.ImageClassifier``:
``augmenter -> preprocessor -> crop -> resize -> backbone``. The stage's augmentation
(training only), the mean image or featurewise statistics (fitted once on the training
images), the random crop (centre crop at evaluation) and the stage's resolution are its
parts, run on the device and saved with it, so evaluation and export need no flags. The
host pipeline only shuffles, gathers and batches uint8 images.
"""
import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import keras
import numpy as np

from tiny_keras import augment as augment_lib
from tiny_keras import backend
from tiny_keras import callbacks as cbs
from tiny_keras import data as data_lib
from tiny_keras import files, models, provenance, runs, schedules
from tiny_keras.backend import tf
from tiny_keras.losses import make_loss
from tiny_keras.metrics import TopKAccuracy
from tiny_keras.recipe import AUTO_STEPS_PER_EXECUTION, Recipe

OPTIMIZER_CLASSES = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
}
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")
TimeLimitReached = cbs.TimeLimitReached  # raised by train(stop_by=...) at its time limit



def resolve_verbose(verbose):
    """Keras's verbosity, with ``"auto"``: progress bars on a terminal, else a line per epoch."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto'. Received: {verbose=}")
    return verbose


def make_metrics():
    """Top-1 and top-5 accuracy, ties ranked as ``tiny_keras.evaluate`` ranks them (``tiny_keras.metrics``)."""
    return [TopKAccuracy(1, name="top1"), TopKAccuracy(5, name="top5")]


def make_optimizer(spec, schedule=None):
    """The Keras optimizer of a stage's ``optimizer`` spec; with ``schedule`` (a Keras
    ``LearningRateSchedule``) as its learning rate, evaluated in the train step."""
    spec = dict(spec)
    name = spec.pop("name")
    if schedule is not None:
        spec["learning_rate"] = schedule
    return OPTIMIZER_CLASSES[name](**spec)


def stage_schedule(stage, steps_per_epoch):
    """The stage's learning-rate schedule as a ``schedules.StageSchedule``, or None."""
    if not stage.schedule:
        return None
    return schedules.StageSchedule(stage.schedule, stage.optimizer["learning_rate"], steps_per_epoch)


def gpu_compute_capability():
    """``(major, minor)`` of the first GPU the Keras backend sees, or None without one."""
    name = backend.name()
    if name == backend.JAX:
        import jax  # the JAX backend's own library

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            return None
        major, _, minor = str(getattr(gpus[0], "compute_capability", "0.0")).partition(".")
        return int(major or 0), int(minor or 0)
    if name == backend.TORCH:
        import torch  # the PyTorch backend's own library

        return tuple(torch.cuda.get_device_capability(0)) if torch.cuda.is_available() else None
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0))


# Backends whose CPU path is measured to gain from bfloat16 on a CPU with bfloat16
# instructions: TensorFlow's oneDNN kernels. Bare model.fit of the papers' main models, 2
# cores: 1.5-3.8x over float32 on an Intel Xeon with AMX-BF16, 1.4-1.8x on an AMD EPYC with
# AVX512-BF16 and no AMX (docs/benchmarks.md). JAX's and PyTorch's CPU paths are not
# measured, so "auto" keeps float32 on them.
BFLOAT16_CPU_BACKENDS = (backend.TENSORFLOW,)
BFLOAT16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}  # /proc/cpuinfo flag: its name


def auto_precision(compute_capability=None, cpu_flags=frozenset(), backend_name=None):
    """``(precision, reason)``: what "auto" precision picks on a machine whose GPU has
    ``compute_capability`` (None: no GPU) and whose CPU has the ``/proc/cpuinfo`` flags
    ``cpu_flags``, on Keras backend ``backend_name`` (default: this process's).

    A GPU of compute capability 8.0 and up computes in bfloat16, an older one in float16.
    A CPU with bfloat16 instructions (AMX-BF16 or AVX512-BF16: :data:`BFLOAT16_CPU_FLAGS`)
    gets bfloat16 where the backend's CPU path is measured to use them
    (:data:`BFLOAT16_CPU_BACKENDS`); any other CPU float32 (bfloat16 is emulated there)."""
    backend_name = backend_name or backend.name()
    if compute_capability is not None:
        capability = ".".join(str(v) for v in compute_capability)
        if tuple(compute_capability) >= (8, 0):
            return "mixed_bfloat16", f"a GPU of compute capability {capability} computes in bfloat16"
        return "mixed_float16", f"a GPU of compute capability {capability} (below 8.0) has no fast bfloat16"
    found = [name for flag, name in BFLOAT16_CPU_FLAGS.items() if flag in cpu_flags]
    if not found:
        return "float32", "a CPU without bfloat16 instructions (no amx_bf16 or avx512_bf16 flag)"
    if backend_name in BFLOAT16_CPU_BACKENDS:
        return "mixed_bfloat16", f"a CPU with {found[0]}, which {backend_name}'s CPU kernels (oneDNN) use"
    return "float32", (f"a CPU with {found[0]}, but bfloat16 on the {backend_name} backend's CPU path is not "
                       "measured (pass --precision mixed_bfloat16 to try it)")


def precision_reason(recipe, saved_precision=None, compute_capability=None, cpu_flags=frozenset()):
    """Why a run trains in the precision ``resolve_performance`` gives ``recipe``: the
    user's or recipe's choice, the precision the run started in (``saved_precision``,
    kept when "auto" continues it), or :func:`auto_precision`'s reason."""
    if recipe.precision != "auto":
        if saved_precision not in (None, "auto") and saved_precision == recipe.precision:
            return f"the precision the run started in ({recipe.precision}; a run keeps it)"
        return "chosen (--precision, or the recipe's)"
    return f"auto: {auto_precision(compute_capability, cpu_flags)[1]}"


def resolve_performance(recipe, compute_capability=None, cpu_flags=frozenset()):
    """``recipe`` with its "auto" precision, XLA and steps per execution made concrete for
    a machine whose GPU has ``compute_capability`` (None: no GPU) and whose CPU has
    ``cpu_flags`` (:func:`auto_precision`). See ``Recipe``."""
    gpu = compute_capability is not None
    precision = recipe.precision
    if precision == "auto":
        precision = auto_precision(compute_capability, cpu_flags)[0]
    jit_compile = recipe.jit_compile
    if jit_compile == "auto":
        # TensorFlow: XLA pays on a GPU, not on a CPU; JAX compiles every step (its eager
        # mode runs op by op); PyTorch's torch.compile is left off (slow to start, fragile).
        jit_compile = not recipe.run_eagerly and (gpu if backend.name() == backend.TENSORFLOW
                                                  else backend.name() == backend.JAX)
    spe = recipe.steps_per_execution
    if spe == "auto":
        spe = AUTO_STEPS_PER_EXECUTION if gpu and not recipe.run_eagerly else 1
    return recipe.replace(precision=precision, jit_compile=jit_compile, steps_per_execution=spe)


class BatchTooLarge(ValueError):
    """A stage's batch whose activations cannot fit in this machine's memory."""


def activation_bytes(model, batch_size):
    """A lower bound of a train step's memory for ``batch_size`` images: every layer's
    output in the backbone and the head (``model.network``; where its shape is known:
    fixed-size networks), kept for the backward pass and matched by its gradient, in float32."""
    elements = 0
    for layer in model.network._flatten_layers(include_self=False, recursive=True):
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # a layer called more than once, or never
            continue
        for tensor in outputs:
            shape = tuple(tensor.shape)[1:]
            if all(isinstance(d, int) for d in shape):
                elements += math.prod(shape)
    return 2 * 4 * batch_size * elements


def available_memory(path="/proc/meminfo"):
    """Bytes of memory available to a new allocation (``MemAvailable``), or None where unknown."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(model, stage, available):
    """Raise :class:`BatchTooLarge` where ``stage``'s batch needs more than ``available``
    bytes by :func:`activation_bytes` (a CPU's memory: a batch beyond it crashes the
    process instead of raising)."""
    needed = activation_bytes(model, stage.batch_size)
    if available is not None and needed > available:
        raise BatchTooLarge(
            f"stage {stage.name!r}: a batch of {stage.batch_size:,} images needs at least {needed / 2**30:,.1f} GiB "
            f"for its activations, and this machine has {available / 2**30:,.1f} GiB available; pass a smaller "
            "--batch-size")


def stage_steps_per_execution(bound, steps_per_epoch, every_steps=None):
    """The steps per execution a stage uses: the largest divisor of its steps per epoch (and
    of its snapshot interval) not above ``bound``, so that epochs and snapshots fall on
    execution boundaries."""
    period = math.gcd(steps_per_epoch, every_steps) if every_steps else steps_per_epoch
    return max(d for d in range(1, min(bound, period) + 1) if period % d == 0)


class OneDevice:
    """The default strategy off TensorFlow: one device, nothing to distribute."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def processes():
    """``(count, index)`` of the processes training together: JAX's processes where
    ``keras.distribution.initialize`` joined several (multi-host ``data_parallel``), else
    ``(1, 0)``. Process 0 is the chief: it alone writes the run folder."""
    if backend.name() != backend.JAX:
        return 1, 0
    import jax  # the JAX backend's own library

    return jax.process_count(), jax.process_index()


class DataParallel:
    """``keras.distribution.DataParallel`` over every device of the processes training
    together (JAX backend: this host's, or with ``keras.distribution.initialize`` every
    host's), with ``tf.distribute``'s ``scope()`` / ``num_replicas_in_sync``: inside
    ``scope()`` the model's variables are replicated and every global batch is split across
    the devices. With several processes each feeds its own shard of each batch
    (``num_processes``, ``process_index``), and Keras assembles the global batch."""

    def __init__(self):
        devices = keras.distribution.list_devices()
        self.num_processes, self.process_index = processes()
        self.distribution = keras.distribution.DataParallel(devices=devices,
                                                            auto_shard_dataset=self.num_processes == 1)
        self.num_replicas_in_sync = len(devices)

    def scope(self):
        return self.distribution.scope()


def make_strategy(name):
    """The device strategy ``name`` (see ``Recipe.strategy``) on this process's backend."""
    on = backend.name()
    if name == "default":
        return tf.distribute.get_strategy() if on == backend.TENSORFLOW else OneDevice()
    if name == "multi_worker":
        raise ValueError("strategy 'multi_worker' is not supported: Keras 3's TensorFlow trainer cannot fit under "
                         "tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras issue 20585; tested in "
                         "tests/test_distributed.py). For several hosts use 'data_parallel' on the JAX backend "
                         "with keras.distribution.initialize")
    if name == "mirrored":
        if on != backend.TENSORFLOW:
            raise ValueError(f"strategy {name!r} is tf.distribute's and needs the TensorFlow backend; this process "
                             f"runs {on}" + ("; on JAX use data_parallel" if on == backend.JAX else ""))
        return tf.distribute.MirroredStrategy()
    if name == "data_parallel":
        if on != backend.JAX:
            raise ValueError(f"strategy 'data_parallel' is keras.distribution's and needs the JAX backend; this "
                             f"process runs {on}" + ("; on TensorFlow use mirrored" if on == backend.TENSORFLOW else ""))
        return DataParallel()
    raise ValueError(f"strategy must be default, mirrored, multi_worker or data_parallel. Received: {name=}")


def set_weight_decay(network, weight_decay):
    """L2 on every conv/dense kernel: ``weight_decay * w`` added to each kernel's gradient."""
    if weight_decay is None:
        return
    regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
    for layer in network._flatten_layers(include_self=False):
        for name in KERNEL_NAMES:
            variable = getattr(layer, name, None) if not isinstance(layer, keras.Model) else None
            if isinstance(variable, keras.Variable) and variable.trainable:
                variable.regularizer = regularizer


# -- the model a stage trains ---------------------------------------------------------------
def fit_preprocessing(recipe, train_images):
    """The preprocessing layers of ``recipe``, fitted on the training images (uint8)."""
    spec = dict(recipe.preprocessing)
    layers = []
    mode = spec.pop("imagenet", None)
    if mode:
        layers.append(augment_lib.ImageNetPreprocessing(mode, name="imagenet_preprocessing"))
    if spec.pop("mean_image", False):
        layer = augment_lib.MeanImageSubtraction(name="mean_image")
        layer.adapt(train_images)
        layers.append(layer)
    if spec:
        layer = augment_lib.Standardization(name="standardize", **spec)
        if layer.featurewise_center or layer.featurewise_std_normalization:
            layer.adapt(train_images)
        layers.append(layer)
    return layers


def build_network(recipe):
    entry = models.get_entry(recipe.model)
    if entry.size_agnostic:
        input_shape = (None, None, 3)
    else:
        input_shape = entry.input_shape
        expected = recipe.crop or 64
        if input_shape[0] != expected or any(s.image_size not in (None, input_shape[0]) for s in recipe.stages):
            raise ValueError(
                f"{recipe.model} takes {input_shape[0]}px inputs only; the recipe feeds it "
                f"{expected}px (crop={recipe.crop}) and stage sizes {[s.image_size for s in recipe.stages]}"
            )
    options = dict(recipe.model_options)
    options.setdefault("num_classes", recipe.num_classes)
    options.setdefault("input_shape", input_shape)
    return models.build(recipe.model, **options)


def stage_seed(recipe, index):
    """The seed of stage ``index``'s training stream and augmentation draws."""
    return recipe.seed * 1000 + index


def stage_model(recipe, stage, index, previous=None, train_images=None):
    """The ``ImageClassifier`` stage ``index`` trains: a new network and preprocessing
    (fitted on ``train_images``) for the first stage, else ``previous``'s, shared."""
    augmenter = augment_lib.deserialize(stage.augment) if stage.augment else None
    seed = stage_seed(recipe, index)
    if previous is not None:
        return previous.with_stage(augmenter, crop=recipe.crop, image_size=stage.image_size, seed=seed)
    return models.ImageClassifier(build_network(recipe), preprocessor=fit_preprocessing(recipe, train_images),
                                  augmenter=augmenter, crop=recipe.crop, image_size=stage.image_size, seed=seed)


def compile_model(model, recipe, stage, steps_per_epoch, steps_per_execution=1):
    set_weight_decay(model.network, stage.weight_decay)  # the backbone's kernels and the head's
    model.compile(
        optimizer=make_optimizer(stage.optimizer, stage_schedule(stage, steps_per_epoch)),
        loss=make_loss(recipe.label_smoothing),
        metrics=make_metrics(),
        jit_compile=bool(recipe.jit_compile),
        steps_per_execution=steps_per_execution,
        run_eagerly=recipe.run_eagerly,
    )


def train_input(strategy, split, batch_size, seed, skip_batches=0):
    """The training stream for ``strategy``: an endless seeded stream of uint8
    ``batch_size`` batches, started ``skip_batches`` in (a resumed run's position).

    On TensorFlow a tf.data dataset, or with several replicas
    ``distribute_datasets_from_function``, each input pipeline (worker) reading its own
    shard of the stream in per-replica batches; the global batch stays ``batch_size``, the
    replicas of a step see distinct images and an epoch every image once. On JAX and
    PyTorch ``tiny_keras.data.BatchLoader``'s stream (numpy, no TensorFlow); under
    ``data_parallel`` Keras splits each global batch across the devices."""
    if batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"batch size {batch_size} does not split over {strategy.num_replicas_in_sync} replicas")
    if not backend.is_tensorflow():
        count, index = getattr(strategy, "num_processes", 1), getattr(strategy, "process_index", 0)
        # Several processes: each reads every count-th image of the stream's order, a
        # batch_size / count share of each global batch (the same images as one process).
        return data_lib.BatchLoader(split, batch_size // count, training=True, seed=seed, skip_batches=skip_batches,
                                    shard=(count, index) if count > 1 else None).stream()
    if strategy.num_replicas_in_sync == 1:
        return without_autotune_thread(data_lib.make_dataset(split, batch_size=batch_size, training=True, seed=seed,
                                                             repeat=True, skip_batches=skip_batches))

    def per_pipeline(context):
        # A step takes one batch per replica: this pipeline's replicas' batches from it.
        replicas_here = strategy.num_replicas_in_sync // context.num_input_pipelines
        return without_autotune_thread(data_lib.make_dataset(
            split, batch_size=context.get_per_replica_batch_size(batch_size), training=True, seed=seed, repeat=True,
            skip_batches=skip_batches * replicas_here, shard=(context.num_input_pipelines, context.input_pipeline_id)))

    return strategy.distribute_datasets_from_function(per_pipeline)


def without_autotune_thread(dataset):
    """``dataset`` without tf.data's autotuning thread (``Options.autotune.enabled = False``).

    Keras deletes the training iterator when ``fit`` returns, and with TensorFlow 2.21 that
    deletion waits for the autotuning thread's current sleep to end (``Model::OptimizeLoop``;
    its period doubles up to 60 s): measured on the real training stream, 4 of 9 stage
    endings took 20-40 s more, none of 8 without the thread. The stream only gathers uint8
    batches from memory (the augmentation runs in the model), and it gives 140,000-360,000
    images/s on 2 CPU cores at batch 32-128 either way: parallel map calls default to the
    cores, and prefetch keeps its own buffer tuning."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def eval_input(split, batch_size, strategy=None):
    """``split`` in order, in ``batch_size`` batches (the last one partial): a tf.data
    dataset on TensorFlow, a ``tiny_keras.data.BatchLoader`` elsewhere; with several
    processes (``strategy.num_processes``) each reads its shard, every count-th image, of a
    split cut to a multiple of the count (so every process has as many batches, of the same
    sizes: at most count - 1 images are left out)."""
    if not backend.is_tensorflow():
        count, index = getattr(strategy, "num_processes", 1), getattr(strategy, "process_index", 0)
        if count > 1:
            n = len(split) - len(split) % count
            split = dataclasses.replace(split, images=split.images[:n], labels=split.labels[:n],
                                        boxes=split.boxes[:n], grayscale=split.grayscale[:n], files=split.files[:n])
            return data_lib.BatchLoader(split, max(1, batch_size // count), training=False, shard=(count, index))
        return data_lib.BatchLoader(split, batch_size, training=False)
    return data_lib.make_dataset(split, batch_size=batch_size, training=False)


def tensorboard_available(log, echo=True):
    """Whether TensorBoard logs can be written (Keras writes them with tf.summary, on any
    backend); where TensorFlow is missing, says so in the run's log once per stage."""
    try:
        backend.require_tensorflow("TensorBoard logs")
    except backend.TensorFlowRequired:
        cbs.log_line(log, "TensorBoard logs are not written: Keras writes them with tf.summary, and TensorFlow "
                          "is not installed (the run's history.csv and train.log hold the same curves)", echo=echo)
        return False
    return True


# -- results --------------------------------------------------------------------------------
def val_scores(logs, prefix=""):
    """``{"val_loss", "val_top1", "val_top5"}`` (accuracies in percent) from Keras logs."""
    return {"val_loss": float(logs[prefix + "loss"]), "val_top1": 100.0 * float(logs[prefix + "top1"]),
            "val_top5": 100.0 * float(logs[prefix + "top5"])}


def evaluate(model, dataset):
    """:func:`val_scores` of ``model`` on ``dataset``."""
    return val_scores(model.evaluate(dataset, return_dict=True, verbose=0))


def format_table(rows):
    """The per-stage results with the paper's figure beside ours."""
    header = f"{'model':<26}{'stage':<12}{'epochs':>7}{'val top-1':>11}{'val top-5':>11}{'paper top-1':>13}{'seconds':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        paper = "-" if r.get("paper_val_top1") is None else f"{r['paper_val_top1']:.2f}"
        top5 = "-" if r.get("val_top5") is None else f"{r['val_top5']:.2f}"
        lines.append(
            f"{r['model']:<26}{r['stage']:<12}{r.get('epochs') or '-':>7}{r['val_top1']:>11.2f}{top5:>11}"
            f"{paper:>13}{r.get('seconds', 0):>10.1f}"
        )
    return "\n".join(lines)


# -- the engine -----------------------------------------------------------------------------
def train(recipe, workdir, data=None, overwrite=False, verbose=1, extra_callbacks=(), stop_by=None):
    """Train ``recipe`` in ``workdir`` on ``data``: the zip, the folder, None for TFDS, or
    ``{"train": DecodedSplit, "val": DecodedSplit}`` already in memory (used as they are:
    the recipe's class and per-class subsets do not apply).

    ``verbose`` as in Keras: 1 progress bars (for a terminal), 2 one line per epoch (for
    logs: stage, epoch, metrics, learning rate, images/s), 0 silent. ``"auto"``: 1 when
    stdout is a terminal, else 2. Whatever it is, the per-epoch lines go to
    ``workdir/train.log``.

    Returns the results dict (also written to ``workdir/results.json``):
    ``{"paper", "model", "runs": [per-stage rows], "recipe"}``. A finished run in the same
    folder returns its saved results without training again.
    ``extra_callbacks`` are added to every stage (after the engine's own).

    ``stop_by`` (a ``time.time()`` timestamp, e.g. a job's end) ends the run at the end of
    the last epoch that finishes before it, judged by the mean of this session's epochs of
    the stage and the longest checkpoint write (before a stage's first epoch in this
    session: the previous session's mean and longest checkpoint write, or for a new stage
    the stage before it's, scaled by images and pixels, where they were timed on this
    machine with these settings (``timed_on``); otherwise the epoch
    starts whenever time is left): that epoch's resume checkpoint is written and
    ``TimeLimitReached`` raised, and the same call continues the run later.

    Several processes training together (multi-host ``data_parallel`` on JAX: each calls
    this with the same arguments) share ``workdir``: the chief (process 0) writes it; every
    other process starts from a copy of it in a temporary folder (the run so far, so a
    killed run resumes on every process) and writes there. ``workdir`` must be on storage
    every process reads, as Keras's multi-worker guide assumes.
    """
    recipe = (recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe)).validate()
    count, index = processes()
    if count > 1 and stop_by is not None:
        raise ValueError(f"a time limit (stop_by) is not supported with {count} processes training together: each "
                         "would judge it by its own clock")
    if index > 0:
        workdir = runs.worker_copy(workdir)
    saved = None if overwrite else runs.saved_recipe(workdir)
    saved_precision = None if saved is None else saved.get("precision", "auto")
    if saved_precision not in (None, "auto") and recipe.precision == "auto":
        # A run keeps the precision it started in (it changes the arithmetic), wherever it
        # continues; XLA and steps per execution are this machine's (runs.SPEED_FIELDS).
        recipe = recipe.replace(precision=saved_precision)
    device = dict(compute_capability=gpu_compute_capability(), cpu_flags=provenance.cpu_flags())
    why = precision_reason(recipe, saved_precision, **device)
    recipe = resolve_performance(recipe, **device)
    if stop_by is not None and recipe.strategy == "multi_worker":
        # Each worker would judge the limit by its own clock: one could stop while another
        # waits for it in the next step's all-reduce.
        raise ValueError("a time limit (stop_by) is not supported with strategy 'multi_worker': its workers "
                         "would each decide when to stop")
    verbose = resolve_verbose(verbose)
    runs.prepare_folder(workdir, recipe, overwrite)
    results_path = os.path.join(workdir, runs.RESULTS)
    finished = files.read_json(results_path, None)
    if finished is not None:
        if verbose:
            print(f"{workdir}: this run is finished; its results:")
            print(format_table(finished["runs"]))
        return finished

    provenance.record_session(workdir, precision={"policy": recipe.precision, "reason": why})
    cbs.log_line(os.path.join(workdir, runs.LOG), f"Precision {recipe.precision}: {why}", echo=verbose == 2)
    if not backend.is_tensorflow():
        backend.tensorflow_if_installed()  # before set_random_seed imports it with its GPUs
    keras.utils.set_random_seed(recipe.seed)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(recipe.precision)
    # The deadline on the engine's clock (perf_counter, which the epoch times are measured on).
    deadline = None if stop_by is None else time.perf_counter() + (stop_by - time.time())
    try:
        return _train(recipe, workdir, data, verbose, extra_callbacks, results_path, deadline)
    finally:  # the global dtype policy is the caller's again
        keras.mixed_precision.set_global_policy(policy)


def _train(recipe, workdir, data, verbose, extra_callbacks, results_path, deadline):
    strategy = make_strategy(recipe.strategy)

    if isinstance(data, dict):  # splits already in memory
        missing = {"train", "val"} - set(data)
        if missing or not all(isinstance(data[k], data_lib.DecodedSplit) for k in ("train", "val")):
            raise ValueError("data as a dict must map 'train' and 'val' to tiny_keras.data.DecodedSplit objects; "
                             f"received keys {sorted(data)}")
        train_split, val_split = data["train"], data["val"]
    else:
        train_split = data_lib.load_split(data, "train", classes=recipe.classes, per_class=recipe.per_class,
                                          progress=verbose == 1)
        val_split = data_lib.load_split(data, "val", classes=recipe.classes, per_class=recipe.val_per_class,
                                        progress=verbose == 1)
    for split in (train_split, val_split):
        if split.labels.max() >= recipe.num_classes:
            raise ValueError(f"{split.split} labels go up to {split.labels.max()}, but {recipe.num_classes=}")

    progress = files.read_json(os.path.join(workdir, runs.PROGRESS), {"runs": []})
    state = files.read_json(os.path.join(workdir, runs.STATE), None)
    done = {r["stage"] for r in progress["runs"]}
    model = None
    with strategy.scope():
        last_done = [i for i, s in enumerate(recipe.stages) if s.name in done]
        if last_done:  # finished stages: continue from the last one's model
            model = keras.models.load_model(
                os.path.join(runs.stage_folder(workdir, recipe.stages[last_done[-1]].name), runs.MODEL))
        for index, stage in enumerate(recipe.stages):
            if stage.name in done:
                continue
            resume = state if state and state.get("stage") == stage.name else None
            if deadline is not None:
                if resume and resume.get("epoch_seconds") and resume.get("timed_on") == timed_on(recipe):
                    # the last session's epoch and checkpoint write, timed as this session runs
                    estimate = resume["epoch_seconds"] + resume.get("write_seconds", 0.0)
                else:
                    estimate = new_stage_epoch_seconds(recipe, index, progress, len(train_split))
                time_left_for_stage(stage, resume, deadline, estimate, workdir, verbose)
            model = _run_stage(recipe, stage, index, model, train_split, val_split, workdir, resume,
                               progress, verbose, extra_callbacks, strategy, deadline)
            state = None
    final = dict(paper=recipe.paper, model=recipe.model, runs=progress["runs"], recipe=json.loads(recipe.to_json()))
    # The final model is the last stage's, already saved: copy the file.
    files.copy(os.path.join(runs.stage_folder(workdir, recipe.stages[-1].name), runs.MODEL),
               os.path.join(workdir, runs.MODEL))
    files.write_json(final, results_path)
    provenance.record_finish(workdir, train_seconds=round(sum(r["seconds"] for r in final["runs"]), 1))
    if os.path.exists(os.path.join(workdir, runs.STATE)):
        os.remove(os.path.join(workdir, runs.STATE))
    runs.remove_checkpoints(workdir)
    cbs.log_line(os.path.join(workdir, runs.LOG), format_table(final["runs"]), echo=bool(verbose))
    return final


def timed_on(recipe):
    """What an epoch's time depends on beyond the recipe (resolved: ``resolve_performance``):
    the machine, the backend, XLA and steps per execution (``"AMD EPYC, 2 cores; tensorflow;
    XLA off, 1 step per execution"``). Epoch times saved by a session are estimates for
    another only where this is the same."""
    settings = _speed_settings(recipe.jit_compile, recipe.steps_per_execution)
    return f"{provenance.this_machine()}; {backend.name()}; {settings}"


def _speed_settings(jit_compile, steps_per_execution):
    return (f"XLA {'on' if jit_compile is True else 'off'}, {steps_per_execution} "
            f"step{'s' if steps_per_execution != 1 else ''} per execution")


def new_stage_epoch_seconds(recipe, index, progress, train_images):
    """What an epoch of stage ``index`` should take before one has ended: the finished stage
    before it's mean epoch (``progress``), scaled by the images and pixels an epoch of each
    trains on (paper 1's 40px stage after its 32px one: x1.56). None for a first stage, and
    where that stage's epochs were not all timed as this session runs (``timed_on``)."""
    if index == 0:
        return None
    before = recipe.stages[index - 1]
    row = next((r for r in progress["runs"] if r["stage"] == before.name), None)
    if not row or not row.get("epochs") or row.get("timed_on") != timed_on(recipe):
        return None

    def work(stage):
        size = stage.image_size or recipe.crop or 64
        return stage.steps(train_images) * stage.batch_size * size * size

    return row["seconds"] / row["epochs"] * work(recipe.stages[index]) / work(before)


def time_left_for_stage(stage, resume, deadline, estimate, workdir, verbose):
    """Raises ``TimeLimitReached`` where ``deadline`` (on ``time.perf_counter``) has passed, or
    where the stage's next epoch, ``estimate`` seconds (None: unknown), would not end before it."""
    done = int(resume["epochs_done"]) if resume else 0
    if done >= stage.epochs:  # only the stage's ending is left
        return
    left = deadline - time.perf_counter()
    if left > 0 and not (estimate and left < estimate):
        return
    message = (f"Stage '{stage.name}': not started, at the time limit ("
               + (f"an epoch takes about {cbs.format_duration(estimate)}, " if estimate else "")
               + f"{cbs.format_duration(max(left, 0.0))} left): epoch {done + 1}/{stage.epochs} is next")
    _stop_at_time_limit(workdir, message, "the run continues when started again", verbose)


def _stop_at_time_limit(workdir, message, continues, verbose):
    """Ends the session at its time limit: ``message`` and how the run ``continues`` to train.log,
    the stop to run.json, and ``TimeLimitReached(message)`` raised."""
    cbs.log_line(os.path.join(workdir, runs.LOG), f"{message}; {continues}", echo=bool(verbose))
    provenance.record_stop(workdir, message)
    raise TimeLimitReached(message)


def _run_stage(recipe, stage, index, model, train_split, val_split, workdir, resume, progress, verbose,
               extra_callbacks, strategy, deadline=None):
    log = os.path.join(workdir, runs.LOG)
    stage_dir = runs.stage_folder(workdir, stage.name)
    os.makedirs(stage_dir, exist_ok=True)
    start = time.perf_counter()
    steps = stage.steps(len(train_split))
    per_execution = stage_steps_per_execution(recipe.steps_per_execution, steps, stage.snapshot_every_steps)
    initial_epoch = 0
    if resume is not None:  # the run was interrupted in this stage: model and optimizer from its checkpoint
        model = keras.models.load_model(os.path.join(workdir, resume["checkpoint"]))
        model.run_eagerly = recipe.run_eagerly
        model.jit_compile = bool(recipe.jit_compile)
        model.steps_per_execution = per_execution
        set_weight_decay(model.network, stage.weight_decay)
        initial_epoch = int(resume["epochs_done"])
        start -= float(resume.get("seconds", 0.0))
        runs.truncate_history(os.path.join(stage_dir, runs.HISTORY), initial_epoch)
    else:
        model = stage_model(recipe, stage, index, model,
                            None if model is not None else np.asarray(train_split.images))
        compile_model(model, recipe, stage, steps, per_execution)
    if gpu_compute_capability() is None:
        check_batch_fits(model, stage, available_memory())

    # The model augments on the device (its augmenter's seed generator is saved with every
    # checkpoint); the host stream is the shuffled uint8 images, skipped to where a
    # resumed run stopped.
    train_ds = train_input(strategy, train_split, stage.batch_size, stage_seed(recipe, index),
                           skip_batches=initial_epoch * steps)
    val_ds = eval_input(val_split, stage.batch_size, strategy)

    # The schedule lives in the optimizer (compiled into the train step; a checkpoint holds
    # its step, so a resumed run continues it); the logger reports the rate of each
    # epoch's last step.
    keras_callbacks = [cbs.LearningRateLogger(stage_schedule(stage, steps))]
    keras_callbacks.append(cbs.EpochLog(log, stage.name, stage.epochs, steps * stage.batch_size, echo=verbose == 2,
                                        steps_per_epoch=steps, progress_seconds=cbs.PROGRESS_SECONDS))
    if stage.reduce_lr_on_plateau:
        keras_callbacks.append(keras.callbacks.ReduceLROnPlateau(**stage.reduce_lr_on_plateau))
    if stage.early_stopping:
        keras_callbacks.append(keras.callbacks.EarlyStopping(**stage.early_stopping))
    best = cbs.BestCheckpoint(os.path.join(stage_dir, runs.BEST_WEIGHTS), monitor="val_top1", mode="max")
    keras_callbacks.append(best)
    if stage.snapshot_every_epochs or stage.snapshot_every_steps:
        keras_callbacks.append(cbs.Snapshots(os.path.join(stage_dir, runs.SNAPSHOTS), stage.snapshot_every_epochs,
                                             stage.snapshot_every_steps, steps))
    keras_callbacks += [
        keras.callbacks.CSVLogger(os.path.join(stage_dir, runs.HISTORY), append=initial_epoch > 0),
        keras.callbacks.TerminateOnNaN(),
    ]
    if recipe.tensorboard and tensorboard_available(log, echo=bool(verbose)):
        keras_callbacks.append(keras.callbacks.TensorBoard(os.path.join(workdir, runs.TENSORBOARD, stage.name),
                                                           histogram_freq=recipe.tensorboard_histograms))
    if recipe.activation_samples:
        keras_callbacks.append(cbs.ActivationPercentiles(np.asarray(val_split.images[:recipe.activation_samples]),
                                                         os.path.join(stage_dir, runs.ACTIVATIONS)))
    timing = timed_on(recipe)  # where this session's epochs are timed: state.json and the stage's row say so
    run_checkpoint = cbs.RunCheckpoint(workdir, index, stage.name, callbacks=keras_callbacks, start=start,
                                       restore=(resume or {}).get("callbacks"), epochs=stage.epochs,
                                       every=None if recipe.checkpoint_every == "auto" else recipe.checkpoint_every,
                                       timed_on=timing)
    keras_callbacks.append(run_checkpoint)
    time_limit = None
    if deadline is not None:
        time_limit = cbs.TimeLimit(deadline, run_checkpoint, stage.epochs)
        keras_callbacks.append(time_limit)
    keras_callbacks += list(extra_callbacks)

    cbs.log_line(log, f"Stage {index + 1}/{len(recipe.stages)} '{stage.name}': {stage.epochs} epochs of {steps} "
                      f"steps, batch {stage.batch_size}" + (f", {stage.image_size}px" if stage.image_size else "")
                      + f"; {recipe.precision}, {_speed_settings(recipe.jit_compile, per_execution)}"
                      + (f" (resumed after epoch {initial_epoch})" if initial_epoch else ""), echo=bool(verbose))
    history = None
    if initial_epoch < stage.epochs:
        history = model.fit(train_ds, epochs=stage.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                            validation_data=val_ds, callbacks=keras_callbacks, verbose=1 if verbose == 1 else 0,
                            shuffle=False)
    if time_limit is not None and time_limit.stopped_after is not None:
        left = time_limit.seconds_left()
        message = (f"Stage '{stage.name}': stopped at the time limit after epoch {time_limit.stopped_after}/"
                   f"{stage.epochs} (an epoch takes about {cbs.format_duration(time_limit.next_epoch_seconds())}, "
                   f"{cbs.format_duration(left)} left), its checkpoint written")
        cbs.log_line(log, f"Stage '{stage.name}': {run_checkpoint.report()}", echo=verbose == 2)
        _stop_at_time_limit(workdir, message, "the run continues from there when started again", verbose)
    epochs = history.epoch[-1] + 1 if history is not None and history.epoch else stage.epochs  # early stopping
    if stage.restore_best and os.path.exists(best.filepath):
        model.load_weights(best.filepath)
    if history is not None and epochs == stage.epochs and not stage.restore_best and not stage.early_stopping:
        # The last epoch's validation already measured these very weights.
        scores = val_scores({k: v[-1] for k, v in history.history.items()}, prefix="val_")
    else:
        scores = evaluate(model, val_ds)
    row = dict(model=recipe.model, stage=stage.name, epochs=epochs, image_size=stage.image_size,
               **scores, paper_val_top1=recipe.paper_results.get(stage.name),
               seconds=round(time.perf_counter() - start, 1),
               # An estimate for the next stage where all its epochs were timed as this session's.
               timed_on=None if resume is not None and resume.get("timed_on") != timing else timing)
    checkpoint = (files.read_json(os.path.join(workdir, runs.STATE), None) or {}).get("checkpoint")
    if history is not None and not stage.restore_best and not stage.early_stopping and checkpoint:
        # The weights are the last epoch's, already serialized: copy the file.
        files.copy(os.path.join(workdir, checkpoint), os.path.join(stage_dir, runs.MODEL))
    else:
        files.save_model(model, os.path.join(stage_dir, runs.MODEL))
    if history is not None:
        cbs.log_line(log, f"Stage '{stage.name}': {run_checkpoint.report()}", echo=verbose == 2)
    progress["runs"].append(row)
    files.write_json(progress, os.path.join(workdir, runs.PROGRESS))
    cbs.log_line(log, f"Stage '{stage.name}': val top-1 {row['val_top1']:.2f}%, top-5 {row['val_top5']:.2f}%",
                 echo=bool(verbose))
    return model
