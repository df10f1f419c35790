"""Augmentation outputs on whichever Keras backend is active, for ``test_backends.py``.

``python tests/backend_cases.py OUT.npz MODELS_DIR`` (with ``KERAS_BACKEND`` set: ``jax`` or
``torch``) writes them; the test computes the same on TensorFlow in its own process and
compares. ``same_parameter_outputs`` are transforms whose parameters are given (no random
draw), so every backend must give the same pixels; ``random_checks`` are properties of the
seeded random draws, which differ between backends (TensorFlow's Philox, JAX's threefry,
PyTorch's SplitMix64 counter hash) but must be seeded and distributed alike;
``registry_checks`` build every registered model; ``classifier_checks`` train an
``ImageClassifier`` that augments in its train step; ``saved_model_predictions`` load the
.keras files the TensorFlow side saved; ``evaluated_probabilities`` run ``tiny_keras.evaluate``
(every test-time augmentation) on the classifier it saved.
"""
import os
import sys
import tempfile

import numpy as np


def smooth_images(n=6, size=64, seed=0):
    """Smooth gradients and waves with a flat block: float32 [n, size, size, 3], 0..255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    images = []
    for i in range(n):
        a, b = rng.uniform(0.5, 3.0, 2)
        img = np.stack([0.5 + 0.4 * np.sin(a * np.pi * xx + i), 0.5 + 0.4 * np.cos(b * np.pi * yy * (1 + xx)),
                        xx * yy], axis=-1)
        r0, c0 = rng.integers(4, size // 2, 2)
        img[r0:r0 + size // 4, c0:c0 + size // 5] = rng.uniform(0, 1, 3)
        images.append(np.round(255 * np.clip(img, 0, 1)))
    return np.array(images, np.float32)


PARAMS = {  # one set per image, as ImageDataGenerator.get_random_transform draws them
    "theta": [0.0, 12.5, -35.0, 90.0, 3.0, -7.0],
    "tx": [0.0, 3.5, -6.0, 0.0, 12.0, -1.25],
    "ty": [0.0, -2.0, 5.5, 0.0, 0.0, 8.0],
    "shear": [0.0, 0.0, 10.0, 0.0, -20.0, 5.0],
    "zx": [1.0, 1.1, 0.85, 1.0, 1.2, 0.9],
    "zy": [1.0, 0.95, 0.85, 1.0, 1.0, 1.15],
    "flip_horizontal": [False, True, False, True, False, True],
    "flip_vertical": [False, False, True, False, True, False],
    "channel_shift_intensity": [0.0, 10.0, -25.0, 5.0, 0.0, 40.0],
}


def same_parameter_outputs():
    """name -> float32 array: transforms with given parameters, the same on every backend."""
    import keras
    from tiny_keras import augment
    from tiny_keras.augment import transforms

    x = smooth_images()
    out = {}
    for fill_mode in ("nearest", "reflect", "wrap", "constant"):
        for order in (0, 1):
            out[f"apply_transform_{fill_mode}_{order}"] = augment.apply_transform(
                x, PARAMS, fill_mode=fill_mode, cval=17.0, interpolation_order=order)
    out["brightness"] = augment.apply_transform(x, {"brightness": [0.8, 0.93, 1.0, 1.07, 1.2, 1.13]})
    top, left = np.array([0, 3, 8, 1, 5, 7]), np.array([8, 0, 2, 6, 4, 1])
    out["crop"] = transforms.crop(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(top),
                                  keras.ops.convert_to_tensor(left), 56, 56)
    out["center_crop"] = augment.center_crop(x, 56)
    out["ten_crop"] = augment.ten_crop(x, 48)
    out["random_crop_at_inference"] = augment.RandomCrop(56)(x, training=False)
    out["resize_bilinear"] = augment.Resize(40)(x)
    out["resize_nearest"] = augment.Resize(48, interpolation="nearest")(x)
    out["rescale"] = augment.Rescale(1 / 255, offset=-0.5)(x)
    mean_image = x.mean(axis=0)
    out["subtract_mean_image"] = augment.SubtractMeanImage(mean_image)(x)
    out["standardize"] = augment.standardize(x, mean=[120.0, 110.0, 90.0], std=[60.0, 55.0, 70.0], rescale=0.5,
                                             samplewise_center=True)
    # Random transforms whose range is one value: the parameter is that value whatever is drawn.
    for name, transform in {
        "contrast": augment.RandomContrast(1.05, 1.05),
        "gamma": augment.RandomGamma(0.93, 0.93),
        "multiply": augment.RandomMultiply(1.1, 1.1, clip=(0.0, 255.0)),
        "noise_free": augment.GaussianNoise(0.0),
    }.items():
        out[name] = transform(x, 5)
    return {name: np.asarray(keras.ops.convert_to_numpy(value), np.float32) for name, value in out.items()}


def random_checks():
    """name -> array: properties of the seeded draws on this backend."""
    import keras
    from tiny_keras import augment, recipes
    from tiny_keras.augment import core

    x = smooth_images()
    checks = {}
    for paper in ("paper1", "paper2", "paper3", "paper4", "paper5"):
        recipe = next(r for r in recipes.get(paper).RECIPES.values() if r.stages[0].augment)
        transform = augment.deserialize(recipe.stages[0].augment)
        first, again, other = (keras.ops.convert_to_numpy(transform(x, seed)) for seed in (3, 3, 4))
        checks[f"{paper}_shape"] = np.array(first.shape)
        checks[f"{paper}_seeded"] = np.array([np.array_equal(first, again), not np.array_equal(first, other),
                                              bool(np.isfinite(first).all())])
    many = np.repeat(x[:1], 2000, axis=0)
    flipped = keras.ops.convert_to_numpy(augment.RandomFlip()(many, 7))
    checks["flip_fraction"] = np.array(np.mean([not np.array_equal(f, x[0]) for f in flipped]))
    checks["uniform"] = keras.ops.convert_to_numpy(core.uniform([100_000], 11, -2.0, 3.0))
    checks["uniform_int"] = keras.ops.convert_to_numpy(core.uniform_int([100_000], 12, 0, 9))
    checks["normal"] = keras.ops.convert_to_numpy(core.normal([100_000], 13))
    bits = (core.random_bits([2, 4], [123456789012, -5]), core.random_bits([8], core.fold_seed(7, 3)))
    checks["bits"] = np.concatenate([keras.ops.convert_to_numpy(b).astype(np.int64).reshape(-1) for b in bits])
    return checks


SAVED_MODELS = ("paper4_model2", "paper5_cnn8")  # saved on TensorFlow, loaded on the other backend
EVALUATED = "classifier.keras"  # an ImageClassifier saved on TensorFlow, evaluated with every TTA mode
EVALUATE_BATCH = 40  # network inputs a step: crops10 runs 4 images a step, so the last step is ragged


def images_for(network):
    """The smooth images, cut to the network's input size."""
    height, width = (s or 64 for s in network.input_shape[1:3])
    return smooth_images()[:, :height, :width]


def registry_checks():
    """name -> array: every registered classifier (small variant) builds and gives logits
    of the right shape; one trains a step (finite loss, weights move)."""
    import keras
    from tiny_keras import models

    checks = {}
    for name in models.names():
        entry = models.get_entry(name)
        network = models.build(name, **{**entry.offline_options, **entry.small_options})
        shape = tuple(s or 64 for s in network.input_shape[1:])
        checks[f"{name}_logits"] = keras.ops.convert_to_numpy(network(np.zeros((2,) + shape, "float32")))
    network = models.build("paper5_cnn5", **models.get_entry("paper5_cnn5").small_options)
    network.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(True))
    before = [w.copy() for w in network.get_weights()]
    x = images_for(network)[:4]
    loss = network.train_on_batch(x / 255.0, np.arange(4))
    checks["train_step"] = np.array([float(loss), sum(float(np.abs(a - b).sum()) for a, b in
                                                      zip(before, network.get_weights()))])
    return checks


def classifier_checks():
    """An ``ImageClassifier`` with a paper-1-like augmenter and random crops: its augmentation
    is the transform's with the layer's seeds, it trains two steps (finite loss, weights and
    seed states move), and a .keras save keeps the seed states and the predictions."""
    import keras
    from tiny_keras import augment, models

    transform = augment.Compose([augment.Augmenter(rotation_range=20, width_shift_range=0.1, horizontal_flip=True),
                                 augment.GaussianNoise(2.0)])
    keras.utils.set_random_seed(0)
    network = models.build("paper5_cnn5", **models.get_entry("paper5_cnn5").small_options)
    model = models.ImageClassifier(network, augmenter=transform, crop=56, seed=3)
    x = smooth_images()
    expected = keras.ops.convert_to_numpy(transform(x, keras.random.SeedGenerator(3).next()))
    first = keras.ops.convert_to_numpy(model.augmenter(x, training=True))
    second = keras.ops.convert_to_numpy(model.augmenter(x, training=True))
    augmented = [float(np.abs(first - expected).max()), float(np.array_equal(first, second))]

    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(True))
    states = [keras.ops.convert_to_numpy(g.state).copy() for g in model._all_seed_generators()]
    weights = [w.copy() for w in model.get_weights()]
    losses = [float(model.train_on_batch(x.astype("uint8"), np.arange(6))) for _ in range(2)]
    states_moved = all(not np.array_equal(keras.ops.convert_to_numpy(g.state), s)
                       for g, s in zip(model._all_seed_generators(), states))
    moved = sum(float(np.abs(a - b).sum()) for a, b in zip(weights, model.get_weights()))
    with tempfile.TemporaryDirectory() as folder:
        model.save(os.path.join(folder, "classifier.keras"))
        loaded = keras.models.load_model(os.path.join(folder, "classifier.keras"))
    states_kept = all(np.array_equal(keras.ops.convert_to_numpy(a.state), keras.ops.convert_to_numpy(b.state))
                      for a, b in zip(model._all_seed_generators(), loaded._all_seed_generators()))
    predictions = [keras.ops.convert_to_numpy(m.predict(x, verbose=0)) for m in (model, loaded)]
    return {"classifier": np.array([*augmented, *losses, moved, float(states_moved), len(states), float(states_kept),
                                    float(np.abs(predictions[0] - predictions[1]).max())])}


def saved_model_predictions(folder):
    """name -> logits of the .keras files in ``folder`` (written by the TensorFlow side)."""
    import importlib

    import keras

    importlib.import_module("tiny_keras")  # registers the package's layers, for loading

    logits = {}
    for name in SAVED_MODELS:
        network = keras.models.load_model(os.path.join(folder, f"{name}.keras"))
        logits[name] = keras.ops.convert_to_numpy(network(images_for(network)))
    return logits


def evaluated_probabilities(folder):
    """tta -> probabilities of ``tiny_keras.evaluate`` on the classifier in ``folder`` (the
    same images on every backend), and how many compiled functions the member holds."""
    from tiny_keras import evaluate

    member = evaluate.load_member(os.path.join(folder, EVALUATED))
    images = smooth_images(n=10, seed=5).astype(np.uint8)
    out = {tta: member.predict(images, tta=tta, batch_size=EVALUATE_BATCH) for tta in evaluate.TTA_MODES}
    out["functions"] = np.array(len(member._functions))
    return out


if __name__ == "__main__":
    import keras

    results = {f"same/{k}": v for k, v in same_parameter_outputs().items()}
    results.update({f"random/{k}": v for k, v in random_checks().items()})
    results.update({f"registry/{k}": v for k, v in registry_checks().items()})
    results.update({f"registry/{k}": v for k, v in classifier_checks().items()})
    results.update({f"saved/{k}": v for k, v in saved_model_predictions(sys.argv[2]).items()})
    results.update({f"evaluate/{k}": v for k, v in evaluated_probabilities(sys.argv[2]).items()})
    results["backend"] = np.array(keras.backend.backend())
    np.savez(sys.argv[1], **results)
