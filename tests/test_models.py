"""Tests for ``tiny_keras.models``: parameter counts against the papers, and for
every registered model (built small where the registry allows): output shapes,
finite outputs, gradients to every weight, ``.keras`` save / reload, mixed
precision. Runs in about two minutes on 2 CPU cores.
"""

import json
import os

import h5py
import numpy as np
import pytest
import tensorflow as tf

import keras
from keras import layers

from tiny_keras import models
from tiny_keras.models import __main__ as models_cli
from tiny_keras.models import blocks, paper4

NAMES = models.names()
NUM_CLASSES = 10
BATCH = 2

# Our parameter counts (Keras count_params, 200 classes, the paper's input
# size), pinned so that any change to an architecture is seen. Where the
# paper gives a figure it is in the registry (``paper_params``).
EXPECTED_PARAMS = {
    "paper1_resnet": 11_282_248,
    "paper2_resnet18": 11_288_712,
    "paper2_resnet10": 5_014_152,
    "paper2_inception_resnet": 8_728_360,
    "paper2_vgg16": 36_133_384,
    "paper2_vgg19": 41_448_200,
    "paper3_vgg_z": 2_193_736,
    "paper3_vgg_f": 2_555_208,
    "paper3_vgg_y": 3_085_128,
    "paper3_inception_v3_lite": 2_619_672,
    "paper4_model1": 13_070_472,
    "paper4_model2": 2_555_656,
    "paper4_model3": 140_382_728,
    "paper4_model4": 8_866_376,
    "paper4_model5": 25_890_888,
    "paper5_shallow": 1_264_744,
    "paper5_cnn5": 1_283_240,
    "paper5_cnn8": 3_343_720,
}

# How close to the paper's figure each count must be (the issue's tolerances).
PAPER_TOLERANCE = {
    "paper1_resnet": 0.01,
    "paper2_resnet18": 0.03,
    "paper2_inception_resnet": 0.03,
    "paper2_vgg16": 0.03,
    "paper2_vgg19": 0.03,
    "paper4_model1": 0.0,
    "paper4_model2": 0.0,
    "paper4_model3": 0.0,
    "paper4_model4": 0.0,
    "paper4_model5": 0.0,
}

# Known gaps, explained in the builders' docstrings: the paper's own figures
# cannot be met by the architecture its text describes.
KNOWN_PARAM_GAPS = {
    "paper2_inception_resnet": "8,728,360 is +5.2% over 8.3M: fixed by the 1152-deep B modules "
    "the paper describes; see paper2.build_inception_resnet",
    "paper2_vgg19": "41,448,200 is +3.1% over 40.2M: VGG-19 minus VGG-16 is 5.31M for any head, "
    "the paper's Table 1 says 3.5M; see paper2.build_vgg",
}


def _images(size, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(BATCH, size, size, channels)).astype("float32")


def _paper_sizes(entry):
    """The input sizes a model is tested at: the paper's, and 32 / 48 if size-agnostic."""
    size = entry.input_shape[0]
    return sorted({size, 32, 48}) if entry.size_agnostic else [size]


def _build_small(name, **extra):
    entry = models.get_entry(name)
    input_shape = (None, None, 3) if entry.size_agnostic else entry.input_shape
    options = {**entry.offline_options, **entry.small_options, **extra}
    return models.build(name, num_classes=NUM_CLASSES, input_shape=input_shape, **options)


# --- the registry ---------------------------------------------------------------


def test_registry_lists_every_paper_with_stable_names():
    assert len(NAMES) == len(set(NAMES)) == len(EXPECTED_PARAMS)
    assert set(NAMES) == set(EXPECTED_PARAMS)
    for entry in models.list_models():
        assert entry.name.startswith(entry.paper + "_")
        assert entry.description and "\n" not in entry.description
        assert len(entry.input_shape) == 3
        assert entry.builder.__doc__, entry.name
        expected_default = (None, None, 3) if entry.paper == "paper1" else entry.input_shape
        assert entry.default_input_shape == expected_default, entry.name
    assert {entry.paper for entry in models.list_models()} == {f"paper{i}" for i in range(1, 6)}
    assert [e.name for e in models.list_models("paper4")] == [f"paper4_model{i}" for i in range(1, 6)]


def test_registry_errors_are_clear():
    with pytest.raises(ValueError, match="Unknown model.*Received: name='resnet'"):
        models.build("resnet")
    with pytest.raises(ValueError, match="Unknown or fixed option for 'paper5_cnn8'.*no_such_option"):
        models.build("paper5_cnn8", no_such_option=1)
    with pytest.raises(ValueError, match="Unknown paper"):
        models.list_models("paper9")
    with pytest.raises(TypeError):  # entries are read-only
        models.get_entry("paper4_model5").small_options["dense_units"] = 1


def test_cli_json_lists_params_next_to_the_paper(capsys):
    assert models_cli.main(["--json", "--paper", "paper5"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == ["paper5_shallow", "paper5_cnn5", "paper5_cnn8"]
    for row in rows:
        assert {"name", "paper", "params", "paper_params"} <= set(row)
        assert row["params"] == EXPECTED_PARAMS[row["name"]]
        assert row["paper_params"] is None


def test_cli_table(capsys):
    assert models_cli.main(["--paper", "paper5"]) == 0
    out = capsys.readouterr().out
    assert "paper5_cnn8" in out and "3,343,720" in out


# --- parameter counts ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_param_count_at_paper_input_size(name):
    entry = models.get_entry(name)
    params = models.count_params(name)
    assert params == EXPECTED_PARAMS[name]
    if entry.paper_params is None:
        return
    relative = abs(params - entry.paper_params) / entry.paper_params
    tolerance = PAPER_TOLERANCE[name]
    if name in KNOWN_PARAM_GAPS:
        assert tolerance < relative < 0.06, KNOWN_PARAM_GAPS[name]
    else:
        assert relative <= tolerance, (params, entry.paper_params)


@pytest.mark.parametrize("name", sorted(KNOWN_PARAM_GAPS))
@pytest.mark.xfail(strict=True, reason="the paper's figure is unreachable; see KNOWN_PARAM_GAPS")
def test_param_count_within_issue_tolerance_known_gaps(name):
    entry = models.get_entry(name)
    relative = abs(models.count_params(name) - entry.paper_params) / entry.paper_params
    assert relative <= PAPER_TOLERANCE[name]


def test_every_paper_figure_has_a_tolerance():
    with_figure = {e.name for e in models.list_models() if e.paper_params is not None}
    assert with_figure == set(PAPER_TOLERANCE)


@pytest.mark.parametrize("size", [32, 40, 48, 54, 64])
def test_paper1_count_is_the_same_at_every_resizing_stage(size):
    assert models.count_params("paper1_resnet", input_shape=(size, size, 3)) == 11_282_248


def test_paper1_weights_move_between_input_sizes(tmp_path):
    small = models.get_entry("paper1_resnet").small_options
    model32 = models.build("paper1_resnet", num_classes=NUM_CLASSES, input_shape=(32, 32, 3), **small)
    path = str(tmp_path / "stage32.weights.h5")
    model32.save_weights(path)
    model64 = models.build("paper1_resnet", num_classes=NUM_CLASSES, input_shape=(64, 64, 3), dropout=0.5, **small)
    model64.load_weights(path)
    for a, b in zip(model32.get_weights(), model64.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert models.build("paper1_resnet").input_shape == (None, None, None, 3)


# Layer-by-layer figures from paper4's Keras summaries (Figs. 5-8).
PAPER4_SUMMARY = {
    "paper4_model1": [
        ("conv1", (None, 62, 62, 32), 896),
        ("conv2", (None, 29, 29, 64), 18_496),
        ("flatten", (None, 12_544), 0),
        ("fc1", (None, 1024), 12_846_080),
        ("classifier", (None, 200), 205_000),
    ],
    "paper4_model2": [
        ("conv3", (None, 12, 12, 128), 73_856),
        ("flatten", (None, 4608), 0),
        ("fc1", (None, 512), 2_359_808),
        ("classifier", (None, 200), 102_600),
    ],
    "paper4_model3": [
        ("block1_conv1_conv", (None, 64, 64, 64), 1_792),
        ("block3_conv2_conv", (None, 16, 16, 512), 1_180_160),
        ("block3_conv2_bn", (None, 16, 16, 512), 2_048),
        ("flatten", (None, 32_768), 0),
        ("fc1_dense", (None, 4096), 134_221_824),
        ("fc1_bn", (None, 4096), 16_384),
        ("fc2_dense", (None, 1024), 4_195_328),
        ("classifier", (None, 200), 205_000),
    ],
    "paper4_model4": [
        ("block3_conv1_conv", (None, 16, 16, 256), 295_168),
        ("flatten", (None, 16_384), 0),
        ("fc1_dense", (None, 512), 8_389_120),
        ("fc1_bn", (None, 512), 2_048),
        ("classifier", (None, 200), 102_600),
    ],
}


@pytest.mark.parametrize("name", sorted(PAPER4_SUMMARY))
def test_paper4_layers_match_the_keras_summaries(name):
    model = models.build(name)
    for layer_name, output_shape, params in PAPER4_SUMMARY[name]:
        layer = model.get_layer(layer_name)
        assert tuple(layer.output.shape) == output_shape, layer_name
        assert layer.count_params() == params, layer_name


# --- every registered model, built small ----------------------------------------


@pytest.fixture(scope="module", params=NAMES)
def small_model(request):
    model = _build_small(request.param)
    yield request.param, model
    del model
    keras.backend.clear_session()


def test_output_shape_and_finite(small_model):
    name, model = small_model
    entry = models.get_entry(name)
    for size in _paper_sizes(entry):
        for training in (False, True):
            logits = model(_images(size), training=training)
            assert tuple(logits.shape) == (BATCH, NUM_CLASSES), (name, size)
            assert logits.dtype == "float32"
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits))), (name, size, training)


@pytest.mark.parametrize("name", [n for n in NAMES if not models.get_entry(n).size_agnostic])
def test_flatten_models_need_a_fixed_size(name):
    entry = models.get_entry(name)
    with pytest.raises(ValueError, match="fixed height and width"):
        models.build(name, input_shape=(None, None, 3), **entry.offline_options, **entry.small_options)


def test_gradient_reaches_every_trainable_weight(small_model):
    name, model = small_model
    entry = models.get_entry(name)
    images = _images(entry.input_shape[0], seed=1)
    labels = np.arange(BATCH) % NUM_CLASSES
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        # Inference mode: with a batch of 2, BN batch statistics over 1x1 maps
        # would make some gradients vanish for reasons unrelated to wiring.
        loss = loss_fn(labels, model(images, training=False))
    grads = tape.gradient(loss, model.trainable_weights)
    assert model.trainable_weights
    for weight, grad in zip(model.trainable_weights, grads):
        assert grad is not None, (name, weight.path)
        assert np.any(keras.ops.convert_to_numpy(grad) != 0), (name, weight.path)


def test_keras_save_and_reload_gives_identical_outputs(small_model, tmp_path):
    name, model = small_model
    entry = models.get_entry(name)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    images = _images(entry.input_shape[0], seed=2)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(images, training=False)),
        keras.ops.convert_to_numpy(reloaded(images, training=False)),
    )
    assert reloaded.count_params() == model.count_params()


def test_get_config_round_trip(small_model):
    name, model = small_model
    clone = type(model).from_config(model.get_config())  # an ImageClassifier
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    assert clone.count_params() == model.count_params()


@pytest.fixture
def mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision_gives_float32_logits(name, mixed_precision):
    entry = models.get_entry(name)
    model = _build_small(name)
    logits = model(_images(entry.input_shape[0]), training=True)
    assert logits.dtype == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


# --- argument checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("paper1_resnet", {"num_classes": 0}, "num_classes"),
        ("paper1_resnet", {"input_shape": (64, 64)}, "input_shape"),
        ("paper2_resnet18", {"filters": (16, 0)}, "filters"),
        ("paper2_resnet18", {"kernel_initializer": "no_such_init"}, "kernel_initializer"),
        ("paper2_vgg16", {"input_shape": (None, None, 3)}, "fixed height and width"),
        ("paper2_inception_resnet", {"dropout": 1.5}, "dropout"),
        ("paper3_vgg_z", {"variant": "q"}, "fixed option|variant"),
        ("paper4_model3", {"dense_units": (64,)}, "dense_units"),
        ("paper4_model5", {"weights": "/no/such/file.h5"}, "weights"),
        ("paper4_model5", {"input_shape": (16, 16, 3), "weights": None}, "input_shape"),
        ("paper5_cnn8", {"pool_strides": 3}, "pool_strides"),
        ("paper5_cnn8", {"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_arguments_raise_value_error(name, options, message):
    with pytest.raises(ValueError, match=message):
        models.build(name, **options)


# --- paper-specific behaviour ------------------------------------------------------


def test_initializers_give_each_layer_its_own_values():
    # An unseeded Keras 3 initializer instance repeats its values on every call;
    # blocks.make_initializer must hand each layer a fresh one.
    model = models.build("paper5_cnn8", filters=8, fc_units=(8, 8))
    a, b = (model.get_layer(f"conv{i}_conv").kernel.numpy() for i in (2, 3))
    assert a.shape == b.shape and not np.allclose(a, b)
    shared = keras.initializers.GlorotUniform()
    a, b = (blocks.make_initializer(shared)((64, 64)) for _ in range(2))
    assert not np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_paper5_initialisation_and_zero_biases():
    shallow = models.build("paper5_shallow")  # N(0, 0.01)
    kernel = shallow.get_layer("classifier").kernel.numpy()  # 6272 x 200 values
    assert abs(kernel.std() - 0.01) < 0.0005 and abs(kernel.mean()) < 0.0005
    cnn8 = models.build("paper5_cnn8", fc_units=(8, 8))  # Xavier: U(+-sqrt(6 / (fan_in + fan_out)))
    kernel = cnn8.get_layer("conv2_conv").kernel.numpy()
    limit = np.sqrt(6.0 / (9 * 128 + 9 * 128))
    assert np.abs(kernel).max() <= limit * (1 + 1e-6)  # float32 rounding at the bound
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.02 * limit
    for model in (shallow, cnn8):
        for layer in model.network.layers:
            if getattr(layer, "bias", None) is not None:
                assert not np.any(layer.bias.numpy()), layer.name
    gaussian8 = models.build("paper5_cnn8", fc_units=(8, 8), kernel_initializer="gaussian_0.01")
    assert abs(gaussian8.get_layer("conv2_conv").kernel.numpy().std() - 0.01) < 0.001


def test_paper5_pool_strides():
    # Stride 2 (default): 56 -> 28 -> 14 -> 7. Stride 1, Caffe-style valid
    # pooling: 56 -> 55 -> 54 -> 53, whose first FC has 143.8M weights.
    default = models.build("paper5_cnn8", fc_units=(4, 4))
    assert tuple(default.get_layer("flatten").output.shape) == (None, 7 * 7 * 128)
    stride1 = models.build("paper5_cnn8", fc_units=(4, 4), pool_strides=1)
    assert tuple(stride1.get_layer("pool3").output.shape) == (None, 53, 53, 128)
    assert stride1.get_layer("flatten").output.shape[-1] * 400 == 143_820_800
    assert EXPECTED_PARAMS["paper5_cnn8"] == models.count_params("paper5_cnn8")


def test_paper5_weight_decay_is_caffe_lambda():
    model = models.build("paper5_cnn8", fc_units=(8, 8), weight_decay=5e-4)
    assert model.get_layer("conv1_conv").kernel_regularizer.l2 == pytest.approx(2.5e-4)
    kernel = model.get_layer("fc1_dense").kernel.numpy()
    assert len(model.losses) == 8  # five convs and three dense layers
    expected = 2.5e-4 * np.sum(kernel**2)
    assert any(float(loss) == pytest.approx(expected, rel=1e-5) for loss in model.losses)
    assert not models.build("paper5_shallow").losses  # no decay by default


@pytest.mark.parametrize("initializer, expected_std", [("xavier", "glorot"), ("variance_scaling", "he")])
def test_paper2_initialisation_study(initializer, expected_std):
    model = models.build("paper2_resnet18", filters=(64, 8, 8, 8), kernel_initializer=initializer)
    kernel = model.get_layer("stem_conv").kernel.numpy()  # 7 x 7 x 3 x 64
    fan_in, fan_out = 7 * 7 * 3, 7 * 7 * 64
    std = np.sqrt(2.0 / (fan_in + fan_out)) if expected_std == "glorot" else np.sqrt(2.0 / fan_in)
    assert abs(kernel.std() - std) < 0.05 * std


def test_paper2_resnet_depths_and_shortcuts():
    for name, depth in (("paper2_resnet18", 18), ("paper2_resnet10", 10)):
        model = models.build(name, filters=(16, 32, 64, 128))
        convs = [l for l in model.network.layers if isinstance(l, layers.Conv2D)]
        projections = [l for l in convs if l.name.endswith("_0_conv")]
        dense = [l for l in model.network.layers if isinstance(l, layers.Dense)]
        assert len(convs) - len(projections) + len(dense) == depth
        # Stages 2-4 down-sample, each with a 1x1 stride-2 projection; stage 1 keeps 56x56.
        assert [p.name for p in projections] == [f"stage{i}_block1_0_conv" for i in (2, 3, 4)]
        for conv in projections:
            assert conv.kernel_size == (1, 1) and conv.strides == (2, 2)
            assert isinstance(model.get_layer(conv.name.replace("_conv", "_bn")), layers.BatchNormalization)
        assert tuple(model.get_layer("stage1_block1_out").output.shape) == (None, 56, 56, 16)
        assert tuple(model.get_layer("avg_pool").input.shape) == (None, 7, 7, 128)
    # The other reading of "down-sampling ... at the first layer of each building block".
    literal = models.build("paper2_resnet18", filters=(16, 32, 64, 128), downsample_first_stage=True)
    assert tuple(literal.get_layer("avg_pool").input.shape) == (None, 4, 4, 128)
    assert literal.count_params() - models.build("paper2_resnet18", filters=(16, 32, 64, 128)).count_params() == (
        16 * 16 + 4 * 16)  # stage 1's projection: a 1x1 conv 16 -> 16 and its BN
    assert models.build("paper2_resnet18").get_layer("stem_conv").kernel_regularizer.l2 == pytest.approx(1e-4)


def test_paper2_inception_resnet_structure():
    model = models.build("paper2_inception_resnet", n=2)
    scaled = [l for l in model.network.layers if isinstance(l, blocks.ScaledResidual)]
    assert len(scaled) == 2 + 4 and all(l.scale == 0.1 for l in scaled)
    for layer in model.network.layers:  # BN after every conv
        if isinstance(layer, layers.Conv2D):
            assert isinstance(model.get_layer(layer.name[: -len("_conv")] + "_bn"), layers.BatchNormalization)
    kernel_sizes = {l.kernel_size for l in model.network.layers if isinstance(l, layers.Conv2D)}
    assert {(1, 7), (7, 1)} <= kernel_sizes
    assert tuple(model.get_layer("block_a2_out").output.shape) == (None, 14, 14, 384)
    assert tuple(model.get_layer("block_b4_out").output.shape) == (None, 7, 7, 1152)
    assert model.get_layer("classifier_dropout").rate == 0.5


def test_paper2_vgg_structure():
    for name, num_convs in (("paper2_vgg16", 13), ("paper2_vgg19", 16)):
        model = models.build(name, **models.get_entry(name).small_options)
        convs = [l for l in model.network.layers if isinstance(l, layers.Conv2D)]
        assert len(convs) == num_convs and all(not c.use_bias for c in convs)
        assert len([l for l in model.network.layers if isinstance(l, layers.Dense)]) == 3
        assert len([l for l in model.network.layers if isinstance(l, layers.MaxPooling2D)]) == 4
        prelus = [l for l in model.network.layers if isinstance(l, layers.PReLU)]
        assert len(prelus) == num_convs + 2
        assert tuple(model.get_layer("flatten").input.shape)[1:3] == (4, 4)
        assert len([l for l in model.network.layers if isinstance(l, layers.Dropout)]) == 2
        assert model.get_layer("fc1_dense").kernel_regularizer is not None
        assert convs[0].kernel_regularizer is None


def test_scaled_residual_layer():
    layer = blocks.ScaledResidual(0.1)
    out = layer([np.ones((1, 2), "float32"), np.full((1, 2), 10.0, "float32")])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), [[2.0, 2.0]])
    assert blocks.ScaledResidual.from_config(layer.get_config()).scale == 0.1


# --- paper4 model5: weights and freezing -----------------------------------------


def _randomised_backbone():
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    rng = np.random.default_rng(0)
    backbone.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in backbone.get_weights()])
    return backbone


@pytest.mark.parametrize("file_format", ["weights.h5", "legacy.h5"])
def test_paper4_model5_loads_a_local_weights_file(tmp_path, file_format):
    backbone = _randomised_backbone()
    if file_format == "weights.h5":
        path = str(tmp_path / "resnet50_notop.weights.h5")
        backbone.save_weights(path)
    else:
        # The format of the Keras applications download
        # (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5).
        from keras.src.legacy.saving import legacy_h5_format

        path = str(tmp_path / paper4.IMAGENET_WEIGHTS_FILE)
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
    model = models.build("paper4_model5", num_classes=NUM_CLASSES, weights=path, dense_units=16)
    loaded = model.get_layer("resnet50").get_weights()
    expected = backbone.get_weights()
    assert len(loaded) == len(expected) == 318  # 53 convs x 2, 53 BN x 4
    for a, b in zip(loaded, expected):
        np.testing.assert_array_equal(a, b)


def test_paper4_model5_freeze_backbone():
    free = models.build("paper4_model5", weights=None)
    frozen = models.build("paper4_model5", weights=None, freeze_backbone=True)
    assert len(free.trainable_weights) == 212 + 4  # ResNet50's 212, two dense layers' 4
    assert len(frozen.trainable_weights) == 4
    assert sum(int(np.prod(w.shape)) for w in frozen.trainable_weights) == 2_098_176 + 205_000
    assert frozen.count_params() == free.count_params() == 25_890_888
    assert not frozen.get_layer("resnet50").trainable


# --- oneDNN's 1x1 strided filter gradient (AVX-512 CPUs) ---------------------------


def _convolutions(model):
    """``(layer, input channels, kernel size, strides)`` of every Conv2D in ``model``, nested ones included."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.Conv2D):
            yield layer, layer.kernel.shape[-2], tuple(layer.kernel_size), tuple(layer.strides)


@pytest.mark.parametrize("name", NAMES)
def test_no_model_has_a_narrow_strided_pointwise_convolution(name):
    """No builder makes the convolution whose filter gradient crashes oneDNN on AVX-512
    CPUs (a 1x1 kernel, stride > 1, fewer than 16 input channels), at the small widths
    the tests use (projections from 4 and 8 channels) and at the papers' widths. This
    fails on every machine if ``blocks.apply_conv``'s protection is removed."""
    model = _build_small(name)
    checked = 0
    for layer, channels, kernel, strides in _convolutions(model):
        checked += 1
        # Written out, not blocks.needs_strided_pointwise_workaround: the test must not trust the code it checks.
        assert not (kernel == (1, 1) and max(strides) > 1 and channels < 16), (
            f"{name}: {layer.name} is a {kernel} stride-{strides} convolution on {channels} channels")
    assert checked


def test_the_narrow_projection_is_built_as_subsampling_then_a_stride_1_convolution():
    model = models.build("paper2_resnet18", num_classes=NUM_CLASSES, filters=(4, 8, 8, 8))
    narrow = model.get_layer("stage2_block1_0_conv")  # from 4 channels, stride 2
    assert tuple(narrow.strides) == (1, 1) and narrow.kernel.shape == (1, 1, 4, 8)
    assert isinstance(model.get_layer("stage2_block1_0_conv_subsample"), layers.MaxPooling2D)
    # At the paper's widths the projections stay strided convolutions: nothing changes there.
    full = models.build("paper2_resnet18", num_classes=NUM_CLASSES)
    assert tuple(full.get_layer("stage2_block1_0_conv").strides) == (2, 2)
    assert not [layer for layer in full.layers if layer.name.endswith("_subsample")]


@pytest.mark.parametrize("size, padding", [(56, "same"), (57, "same"), (57, "valid")])
def test_the_subsampled_pointwise_convolution_computes_the_strided_one(size, padding):
    """Same output shape and values as ``x[:, ::2, ::2, :] @ kernel + bias`` (numpy),
    which is what a 1x1 stride-2 convolution computes, odd sizes included."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, size, size, 8)).astype("float32")
    inputs = keras.Input((size, size, 8))
    model = keras.Model(inputs, blocks.apply_conv(inputs, 5, 1, strides=2, padding=padding, name="proj"))
    kernel, bias = model.get_layer("proj").get_weights()
    expected = x[:, ::2, ::2, :] @ kernel[0, 0] + bias
    got = keras.ops.convert_to_numpy(model(x))
    assert got.shape == expected.shape == (2, (size + 1) // 2, (size + 1) // 2, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Keras's own strided convolution agrees (its forward pass does not reach the crashing kernel).
    reference = layers.Conv2D(5, 1, strides=2, padding=padding)
    reference.build(x.shape)
    reference.set_weights([kernel, bias])
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(reference(x)), rtol=1e-5, atol=1e-5)


NARROW_PROJECTION_TRAINING = """
import numpy as np, tensorflow as tf
from tiny_keras import models
model = models.build("paper2_resnet18", num_classes=10, input_shape=(56, 56, 3), filters=(4, 8, 8, 8))
x = tf.random.normal([4, 56, 56, 3]); y = tf.constant([0, 1, 2, 3])
loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
for _ in range(30):  # the overflow corrupts the heap; repeating makes the crash certain
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
assert all(np.isfinite(g.numpy()).all() for g in grads)
print("ok")
"""


def test_a_narrow_resnet_trains_in_a_fresh_process():
    """The pattern that crashes oneDNN on AVX-512 CPUs: training a ResNet whose projection
    shortcuts start from 4 and 8 channels, eagerly, with oneDNN on (TensorFlow's default).
    Run in its own process so that a crash is reported here instead of killing the test
    worker. With the protection removed this dies of a segmentation fault or an abort
    ("double free or corruption") on an AVX-512 CPU (seen on AMD EPYC, TF 2.19-2.21); on
    CPUs without AVX-512 it passes either way, and the structural test above still fails."""
    from conftest import run_python

    env_note = "TF_ENABLE_ONEDNN_OPTS is set to 0 here, so oneDNN is off"
    assert __import__("os").environ.get("TF_ENABLE_ONEDNN_OPTS") != "0", env_note
    result = run_python("-c", NARROW_PROJECTION_TRAINING, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (
        f"exit status {result.returncode}\n{result.stderr[-3000:]}")


def test_forward_flops_counts_multiply_adds_twice():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)      # 8 * 8 * 3 * 3 * 3 * 4 = 6,912 multiply-adds
    x = layers.Conv2D(5, 1, strides=2)(x)                 # 4 * 4 * 4 * 5 = 320
    x = layers.Flatten()(layers.MaxPooling2D(2)(x))       # 2 * 2 * 5 = 20 features
    outputs = layers.Dense(7)(x)                          # 20 * 7 = 140
    assert models.forward_flops(keras.Model(inputs, outputs)) == 2 * (6_912 + 320 + 140)
    # Keras's ResNet-50 (v1: stride 2 in the blocks' first 1x1 conv) at 224x224: the 3.86 GMACs
    # published for v1 (torchvision's v1.5, stride in the 3x3 conv, is the 4.1 GMACs often quoted).
    resnet = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(224, 224, 3))
    assert 7.68e9 < models.forward_flops(resnet) < 7.76e9


# -- ImageClassifier: the model a run trains -------------------------------------------------------
def test_every_network_is_a_backbone_and_the_head_the_classifier_owns(small_model):
    """The head's parts are attributes; the feature maps and penultimate features are
    tensors of the network's graph, found without any layer name."""
    name, model = small_model
    assert isinstance(model, models.ImageClassifier) and isinstance(model.head, models.Head)
    assert model.feature_maps is model.backbone.outputs[0] and len(model.feature_maps.shape) == 4
    assert model.network.layers[-1] is model.logits_layer and model.logits_layer.name == "logits"
    assert model.penultimate is model.classifier.input  # the classifier layer's input, by definition
    if model.head.conv_classifier:  # paper 3's VGG: class maps from the feature maps, then pooled
        assert name.startswith("paper3_vgg") and model.penultimate is model.feature_maps
        assert isinstance(model.classifier, layers.Conv2D) and model.classifier.kernel_size == (1, 1)
        assert model.pooler.input is model.classifier.output
    else:
        assert isinstance(model.classifier, layers.Dense) and model.pooler.input is model.feature_maps
        assert len(model.pooler.output.shape) == 2 and len(model.penultimate.shape) == 2
    pooling = layers.GlobalAveragePooling2D if model.head.pooling == "avg" else layers.Flatten
    assert isinstance(model.pooler, pooling)
    assert [l.units for l in model.hidden if isinstance(l, layers.Dense)] == [h.units for h in model.head.hidden]
    maps, penultimate, logits = model.backbone_probe("feature_maps", "penultimate", "logits").outputs
    assert maps.shape[-1] == model.backbone.output.shape[-1] and logits.shape[-1] == NUM_CLASSES
    assert penultimate.shape[-1] == (model.classifier.kernel.shape[-2])
    # The backbone's layers and the head's, in one graph: nothing else in the network.
    head = [model.pooler, *model.hidden, model.output_dropout, model.classifier, model.logits_layer]
    assert {id(l) for l in model.network.layers} == (
        {id(l) for l in model.backbone.layers} | {id(l) for l in head if l is not None})


def _old_structure_network(model):
    """The single functional network (images to logits) registered builders returned before
    the backbone and the head were split: the same layers in one graph, new weights."""
    return keras.Model.from_config(model.network.get_config())


@pytest.mark.parametrize("name", NAMES)
def test_split_model_predicts_as_the_single_network_with_its_weights(name):
    """Same arithmetic: the old single network and the split model, weights copied by order,
    give the same logits; and a single network splits back into the same head."""
    entry = models.get_entry(name)
    keras.utils.set_random_seed(0)
    model = _build_small(name)
    old = _old_structure_network(model)
    assert not isinstance(old, models.ImageClassifier)
    rng = np.random.default_rng(1)
    old.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) if w.dtype.kind == "f" else w
                     for w in old.get_weights()])
    assert [v.shape for v in old.weights] == [v.shape for v in model.weights]
    model.set_weights(old.get_weights())
    images = _images(entry.input_shape[0], seed=3)
    expected = keras.ops.convert_to_numpy(old(images, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images, training=False)), expected, atol=1e-6)
    split = models.ImageClassifier(old)  # the route of files saved before the split
    np.testing.assert_allclose(keras.ops.convert_to_numpy(split.network(images, training=False)), expected, atol=1e-6)
    for field in ("num_classes", "pooling", "hidden", "dropout", "conv_classifier", "float32_logits"):
        assert getattr(split.head, field) == getattr(model.head, field), (name, field)
    assert split.head.weight_decay == pytest.approx(model.head.weight_decay)
    assert [layer.name for layer in split.backbone.layers] == [layer.name for layer in model.backbone.layers]


DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def test_model_saved_before_the_split_loads_and_predicts_identically(tmp_path):
    """A .keras file whose ImageClassifier config holds the whole network as its backbone (a
    paper5_cnn8 with 4 filters and FC 8-8-5, mean image, augmentation, 56px crop) loads as a
    backbone and a head, with the predictions it made when saved and its seed states."""
    model = keras.models.load_model(os.path.join(DATA, "legacy_paper5_cnn8.keras"))
    assert isinstance(model, models.ImageClassifier) and model.name == "paper5_cnn8_classifier"
    assert model.head == models.Head(
        num_classes=5, pooling="flatten", hidden=(models.Hidden(8, dropout=0.5),) * 2,
        kernel_initializer=model.head.kernel_initializer, weight_decay=5e-4, dtype="float32")
    assert tuple(model.feature_maps.shape) == (None, 7, 7, 4)
    assert (model.crop_size, model.seed, model.preprocessor.layers[0].name) == (56, 0, "mean_image")
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    expected = np.load(os.path.join(DATA, "legacy_paper5_cnn8_predictions.npy"))
    got = model.predict(images, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # The seed generators' states, as the old model held them when it was saved.
    states = [(layer.name, generator.state.numpy().tolist())
              for layer in model._flatten_layers(include_self=False, recursive=True)
              for generator in layer._seed_generators]
    assert states == [("fc2_dropout", [434794719, 0]), ("fc1_dropout", [548977049, 0]), ("augmenter", [0, 0]),
                      ("crop", [1048576, 0])]
    model.save(tmp_path / "again.keras")  # saved again: the new config, the same weights layout
    again = keras.models.load_model(tmp_path / "again.keras")
    assert again.get_config()["head"] == model.head.get_config()
    np.testing.assert_array_equal(again.predict(images, verbose=0), got)


def _paper5_classifier(seed=0, name="paper5_cnn8"):
    from tiny_keras import augment

    keras.utils.set_random_seed(seed)
    network = models.build(name, num_classes=NUM_CLASSES, input_shape=(56, 56, 3), **models.get_entry(name).small_options)
    mean = np.random.default_rng(seed).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    chain = augment.Compose([augment.RandomFlip(), augment.RandomApply(augment.RandomTint(20.0)),
                             augment.GaussianNoise(1.0)])
    model = models.ImageClassifier(network, preprocessor=[augment.MeanImageSubtraction(mean, name="mean_image")],
                                   augmenter=chain, crop=56, seed=seed)
    return model, network, mean


def test_classifier_inference_is_the_centre_crop_of_the_preprocessed_image_and_training_augments():
    model, network, mean = _paper5_classifier()
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    expected = network((images.astype(np.float32) - mean)[:, 4:60, 4:60, :], training=False)
    got = model.predict(images, verbose=0)  # uint8 in: the model casts
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(expected), atol=1e-5)
    np.testing.assert_array_equal(got, model.predict(images, verbose=0))  # deterministic
    np.testing.assert_array_equal(got, model.predict(images.astype(np.float32), verbose=0))
    a, b = (keras.ops.convert_to_numpy(model.prepare(images, training=True)) for _ in range(2))
    assert a.shape == (4, 56, 56, 3) and not np.array_equal(a, b)  # fresh draws at every step


def test_classifier_with_augmentation_saves_and_reloads(tmp_path):
    model, _, _ = _paper5_classifier(name="paper5_shallow")  # no dropout: its seed state is Keras's own
    model.compile(optimizer=keras.optimizers.SGD(1e-6), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(2).integers(0, 256, (8, 64, 64, 3)).astype(np.uint8)
    labels = np.arange(8) % NUM_CLASSES
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(again, models.ImageClassifier)
    assert (again.crop_size, again.image_size, again.seed) == (56, None, 0)
    assert type(again.augmenter.transform).__name__ == "Compose"
    np.testing.assert_array_equal(again.predict(images, verbose=0), model.predict(images, verbose=0))
    # The augmentation stream continues where it stood (its seed state is saved): the same
    # next training step, so a run resumed from this file trains exactly as it would have.
    for m in (model, again):
        m.fit(images, labels, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for w1, w2 in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(w1, w2)


def test_head_keeps_its_dtype_policy_through_save_and_load(tmp_path):
    """A mixed-precision model's head is rebuilt from its config with its own policy, not
    the policy in force when the file is loaded."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = _build_small("paper5_cnn8")
    finally:
        keras.config.set_dtype_policy("float32")
    model.save(tmp_path / "bf16.keras")
    again = keras.models.load_model(tmp_path / "bf16.keras")
    assert [l.dtype_policy.name for l in again.hidden] == [l.dtype_policy.name for l in model.hidden]
    assert again.classifier.dtype_policy.name == "mixed_bfloat16"
    assert again.logits_layer.dtype_policy.name == "float32"
    images = _images(56, seed=4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(images)), keras.ops.convert_to_numpy(model(images)))


def test_classifier_rejects_bad_crop_and_size():
    network = models.build("paper5_shallow", num_classes=NUM_CLASSES, input_shape=(56, 56, 3))
    with pytest.raises(ValueError, match="crop must be a positive int"):
        models.ImageClassifier(network, crop=0)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        models.ImageClassifier(network, image_size="64")
    with pytest.raises(ValueError, match="outputs must be among"):
        models.ImageClassifier(network).backbone_probe("pooled")
    with pytest.raises(ValueError, match="brings its own head"):
        models.ImageClassifier(network, head=network.head)
    with pytest.raises(ValueError, match="Head pooling must be one of"):
        models.Head(10, pooling="max")
