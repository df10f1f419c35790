"""The package on Keras's JAX and PyTorch backends, against the TensorFlow backend:
augmentation, the registered models, an ImageClassifier that augments as it trains, and
.keras files saved on TensorFlow.

Each other backend runs in a fresh process (``KERAS_BACKEND`` is fixed per process) through
``tests/backend_cases.py``; this process is the TensorFlow side. Every test runs once per
backend (``[jax]``, ``[torch]``).

Tolerance: transforms with the same parameters give the same pixels on every backend to
1e-3 of a grey level (0..255 scale). Measured on JAX: bilinear resampling differs by at
most 7.3e-4 (float32 rounding of the same formula), resizing and gamma by 3e-5, everything
else (crops, flips, nearest resampling, brightness, contrast) not at all, standardisation by 5e-7.
Measured on PyTorch: the same, bilinear resampling 7.3e-4, resizing 3e-5, gamma 1.5e-5,
everything else exactly.
Random draws come from each backend's own generator (TensorFlow's Philox, JAX's threefry,
SplitMix64 as a counter-based generator on PyTorch), so seeded outputs differ between
backends; on each they are reproducible from the seed and distributed alike.
A .keras file saved on TensorFlow predicts the same logits on the other backends to 1e-4
(relative and absolute): measured at most 1.5e-4 apart on logits up to 147 on PyTorch (0.75
of the allowed difference), 1e-4 on JAX (0.3 of it).
"""
import numpy as np
import pytest

import backend_cases
from conftest import REPO, run_python

OTHER_BACKENDS = ("jax", "torch")
pytestmark = pytest.mark.xdist_group("backends")  # one worker runs each backend's case process once

SAME_PARAMETER_ATOL = 1e-3
SAVED_MODEL_TOLERANCE = 1e-4


def _saved_models(folder):
    """The models ``backend_cases.SAVED_MODELS`` (small variants) with trained-looking random
    weights, saved as .keras files on this (TensorFlow) side; their logits on the images."""
    import keras
    from tiny_keras import augment, models

    logits = {}
    for i, name in enumerate(backend_cases.SAVED_MODELS):
        keras.utils.set_random_seed(i)
        network = models.build(name, **models.get_entry(name).small_options)
        network.set_weights([w + np.random.default_rng(i).normal(0, 0.05, w.shape).astype(w.dtype)
                             for w in network.get_weights()])  # BatchNorm statistics away from 0 / 1 too
        network.save(folder / f"{name}.keras")
        logits[name] = keras.ops.convert_to_numpy(network(backend_cases.images_for(network)))
    # Paper 5's shape for evaluate's test-time augmentation: mean image -> crop 56 -> network.
    keras.utils.set_random_seed(7)
    network = models.build("paper5_cnn8", **models.get_entry("paper5_cnn8").small_options)
    mean = augment.MeanImageSubtraction(mean_image=backend_cases.smooth_images(n=1, seed=9)[0], name="mean_image")
    models.ImageClassifier(network, [mean], crop=56).save(folder / backend_cases.EVALUATED)
    return logits


@pytest.fixture(scope="module")
def tf_saved_logits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_on_tf")
    return folder, _saved_models(folder), backend_cases.evaluated_probabilities(folder)


@pytest.fixture(scope="module", params=OTHER_BACKENDS)
def other(request, tmp_path_factory, tf_saved_logits):
    """The cases computed on the backend ``request.param`` in its own process."""
    backend = request.param
    out = tmp_path_factory.mktemp(backend) / "cases.npz"
    done = run_python(REPO / "tests" / "backend_cases.py", out, tf_saved_logits[0], env={"KERAS_BACKEND": backend})
    assert done.returncode == 0, done.stderr[-4000:]
    results = dict(np.load(out))
    assert str(results["backend"]) == backend
    return results


def test_augmentation_matches_tensorflow_on_the_same_parameters(other):
    ours = backend_cases.same_parameter_outputs()
    assert len(ours) == 22
    for name, expected in ours.items():
        got = other[f"same/{name}"]
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=SAME_PARAMETER_ATOL, err_msg=name)


def test_random_augmentation_is_seeded_and_distributed_as_on_tensorflow(other):
    tf_checks = backend_cases.random_checks()
    for paper in ("paper1", "paper2", "paper3", "paper4", "paper5"):
        np.testing.assert_array_equal(other[f"random/{paper}_shape"], tf_checks[f"{paper}_shape"])
        # The same seed gives the same batch, another seed another one, and all finite.
        assert other[f"random/{paper}_seeded"].all() and tf_checks[f"{paper}_seeded"].all(), paper
    for checks in (other, {f"random/{k}": v for k, v in tf_checks.items()}):
        assert abs(float(checks["random/flip_fraction"]) - 0.5) < 0.04
        uniform = checks["random/uniform"]  # U[-2, 3): mean 0.5, std 5 / sqrt(12)
        assert uniform.min() >= -2.0 and uniform.max() < 3.0
        assert abs(uniform.mean() - 0.5) < 0.02 and abs(uniform.std() - 5 / np.sqrt(12)) < 0.02
        counts = np.bincount(checks["random/uniform_int"], minlength=9)
        assert len(counts) == 9 and np.all(np.abs(counts / counts.sum() - 1 / 9) < 0.01)
        normal = checks["random/normal"]
        assert abs(normal.mean()) < 0.02 and abs(normal.std() - 1.0) < 0.02


# PyTorch's random bits spelled out in Python integers (tiny_keras.augment.core): SplitMix64's
# output function at key + (i + 1) * gamma, upper 32 bits, where key mixes the seed's two
# words; fold_seed(seed, i) is (mix(key + gamma), i).
_MASK, _GAMMA = (1 << 64) - 1, 0x9E3779B97F4A7C15


def _mix64(x):
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _splitmix64_key(seed):
    return _mix64(_mix64((seed[0] + _GAMMA) & _MASK) ^ (seed[1] & _MASK))


def _splitmix64_bits(seed, count):
    key = _splitmix64_key(seed)
    return [_mix64((key + (i + 1) * _GAMMA) & _MASK) >> 32 for i in range(count)]


def test_random_bits_are_uint32_and_on_torch_splitmix64(other):
    bits = other["random/bits"]
    assert bits.shape == (16,) and bits.min() >= 0 and bits.max() < 2**32 and len(set(bits)) == 16
    if str(other["backend"]) == "torch":  # int64 products wrap modulo 2**64 there, as SplitMix64 needs
        folded = [_mix64((_splitmix64_key([7, 0]) + _GAMMA) & _MASK), 3]  # fold_seed(7, 3)
        np.testing.assert_array_equal(bits, _splitmix64_bits([123456789012, -5], 8) + _splitmix64_bits(folded, 8))


def test_every_registered_model_builds_and_trains_a_step(other):
    from tiny_keras import models

    for name in models.names():
        logits = other[f"registry/{name}_logits"]
        assert logits.shape == (2, 200) and np.isfinite(logits).all(), name
    loss, moved = other["registry/train_step"]
    assert np.isfinite(loss) and loss > 0 and moved > 0


def test_image_classifier_augments_in_its_train_step_and_keeps_its_seed_states(other):
    (augment_error, repeated, loss1, loss2, moved, states_moved, num_states, states_kept,
     prediction_error) = other["registry/classifier"]
    assert augment_error == 0.0 and not repeated  # the transform with the layer's seeds, a new draw each call
    assert np.isfinite([loss1, loss2]).all() and loss1 > 0 and moved > 0
    assert num_states == 2 and states_moved and states_kept  # the augmenter's and the crop's
    assert prediction_error <= 1e-5  # reloaded from its .keras file


def test_keras_file_saved_on_tensorflow_predicts_the_same(other, tf_saved_logits):
    for name, expected in tf_saved_logits[1].items():
        np.testing.assert_allclose(other[f"saved/{name}"], expected, rtol=SAVED_MODEL_TOLERANCE,
                                   atol=SAVED_MODEL_TOLERANCE, err_msg=name)


def test_evaluate_gives_tensorflows_probabilities_with_every_tta(other, tf_saved_logits):
    """tiny_keras.evaluate on a classifier saved on TensorFlow (mean image, crop 56): the same
    probabilities as on TensorFlow for "none", "flip" and "crops10", through a ragged last
    batch; on JAX through jax.jit (one compiled function per TTA path), on PyTorch eagerly."""
    expected = tf_saved_logits[2]
    for tta in ("none", "flip", "crops10"):
        got = other[f"evaluate/{tta}"]
        assert got.shape == expected[tta].shape == (10, 200), tta
        np.testing.assert_allclose(got, expected[tta], rtol=0, atol=SAVED_MODEL_TOLERANCE, err_msg=tta)
    assert not np.allclose(expected["crops10"], expected["none"], atol=1e-3)  # the views differ
    assert int(other["evaluate/functions"]) == (2 if str(other["backend"]) == "jax" else 0)


# -- the backend facade (this process's backend) ----------------------------------------------------
def test_only_the_facade_asks_keras_for_the_backend():
    """Backend checks go through ``tiny_keras.backend`` (``name()``, ``is_jax()`` ...)."""
    package = REPO / "tiny_keras"
    asking = sorted(str(path.relative_to(REPO)) for path in package.rglob("*.py")
                    if "keras.backend.backend()" in path.read_text())
    assert asking == ["tiny_keras/backend.py"]


def test_cpu_flags_are_the_first_flags_line(tmp_path):
    from tiny_keras import backend

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert backend.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "avx512f", "amx_bf16"}
    assert backend.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_gpu_and_accelerators_are_discovered_once():
    from tiny_keras import backend

    first = backend.gpu_compute_capability()
    hits = backend.gpu_compute_capability.cache_info().hits
    assert backend.gpu_compute_capability() is first
    assert backend.gpu_compute_capability.cache_info().hits == hits + 1
    gpus = [name for name in backend.accelerators() if name.startswith("GPU")]
    if gpus:
        assert isinstance(first, tuple) and len(first) == 2 and first >= (3, 0), first
    else:  # a machine without a GPU, as the suite's CPU machines are
        assert first is None
    hits = backend.accelerators.cache_info().hits
    backend.accelerators()
    assert backend.accelerators.cache_info().hits == hits + 1
