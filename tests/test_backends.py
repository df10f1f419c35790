"""The package on Keras's JAX backend, against the TensorFlow backend: augmentation, the
registered models, and .keras files saved on TensorFlow.

The JAX side runs in a fresh process (``KERAS_BACKEND`` is fixed per process) through
``tests/backend_cases.py``; this process is the TensorFlow side.

Tolerance: transforms with the same parameters give the same pixels on both backends to
1e-3 of a grey level (0..255 scale). Measured: bilinear resampling differs by at most
7.3e-4 (float32 rounding of the same formula), resizing and gamma by 3e-5, everything else
(crops, flips, nearest resampling, brightness, contrast, standardisation) not at all.
Random draws come from each backend's own generator (TensorFlow's Philox, JAX's threefry),
so seeded outputs differ between backends; on each they are reproducible from the seed and
distributed alike.
"""
import numpy as np
import pytest

import backend_cases
from conftest import REPO, run_python

SAME_PARAMETER_ATOL = 1e-3


def _saved_models(folder):
    """The models ``backend_cases.SAVED_MODELS`` (small variants) with trained-looking random
    weights, saved as .keras files on this (TensorFlow) side; their logits on the images."""
    import keras
    from tiny_keras import models

    logits = {}
    for i, name in enumerate(backend_cases.SAVED_MODELS):
        keras.utils.set_random_seed(i)
        network = models.build(name, **models.get_entry(name).small_options)
        network.set_weights([w + np.random.default_rng(i).normal(0, 0.05, w.shape).astype(w.dtype)
                             for w in network.get_weights()])  # BatchNorm statistics away from 0 / 1 too
        network.save(folder / f"{name}.keras")
        logits[name] = keras.ops.convert_to_numpy(network(backend_cases.images_for(network)))
    return logits


@pytest.fixture(scope="module")
def tf_saved_logits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_on_tf")
    return folder, _saved_models(folder)


@pytest.fixture(scope="module")
def jax_outputs(tmp_path_factory, tf_saved_logits):
    out = tmp_path_factory.mktemp("jax") / "cases.npz"
    done = run_python(REPO / "tests" / "backend_cases.py", out, tf_saved_logits[0], env={"KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-4000:]
    results = dict(np.load(out))
    assert str(results["backend"]) == "jax"
    return results


def test_augmentation_on_jax_matches_tensorflow_on_the_same_parameters(jax_outputs):
    ours = backend_cases.same_parameter_outputs()
    assert len(ours) == 22
    for name, expected in ours.items():
        got = jax_outputs[f"same/{name}"]
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=0, atol=SAME_PARAMETER_ATOL, err_msg=name)


def test_random_augmentation_on_jax_is_seeded_and_distributed_as_on_tensorflow(jax_outputs):
    tf_checks = backend_cases.random_checks()
    for paper in ("paper1", "paper2", "paper3", "paper4", "paper5"):
        np.testing.assert_array_equal(jax_outputs[f"random/{paper}_shape"], tf_checks[f"{paper}_shape"])
        # The same seed gives the same batch, another seed another one, and all finite.
        assert jax_outputs[f"random/{paper}_seeded"].all() and tf_checks[f"{paper}_seeded"].all(), paper
    for checks in (jax_outputs, {f"random/{k}": v for k, v in tf_checks.items()}):
        assert abs(float(checks["random/flip_fraction"]) - 0.5) < 0.04
        uniform = checks["random/uniform"]  # U[-2, 3): mean 0.5, std 5 / sqrt(12)
        assert uniform.min() >= -2.0 and uniform.max() < 3.0
        assert abs(uniform.mean() - 0.5) < 0.02 and abs(uniform.std() - 5 / np.sqrt(12)) < 0.02
        counts = np.bincount(checks["random/uniform_int"], minlength=9)
        assert len(counts) == 9 and np.all(np.abs(counts / counts.sum() - 1 / 9) < 0.01)
        normal = checks["random/normal"]
        assert abs(normal.mean()) < 0.02 and abs(normal.std() - 1.0) < 0.02


def test_every_registered_model_builds_and_trains_a_step_on_jax(jax_outputs):
    from tiny_keras import models

    for name in models.names():
        logits = jax_outputs[f"registry/{name}_logits"]
        assert logits.shape == (2, 200) and np.isfinite(logits).all(), name
    loss, moved = jax_outputs["registry/train_step"]
    assert np.isfinite(loss) and loss > 0 and moved > 0


def test_keras_file_saved_on_tensorflow_predicts_the_same_on_jax(jax_outputs, tf_saved_logits):
    for name, expected in tf_saved_logits[1].items():
        np.testing.assert_allclose(jax_outputs[f"saved/{name}"], expected, rtol=1e-4, atol=1e-4, err_msg=name)
