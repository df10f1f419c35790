"""Learning-rate schedules pinned by tables of (step, expected lr)."""
import math

import keras
import numpy as np
import pytest

from tiny_keras import callbacks, schedules

# Paper 1's cyclic schedule: base 0.001, max 0.1, step size 782 iterations.
CLR = dict(base_lr=0.001, max_lr=0.1, step_size=782)


@pytest.mark.parametrize("step, expected", [
    (0, 0.001), (391, 0.0505), (782, 0.1), (1173, 0.0505), (1564, 0.001),
    (1955, 0.0505), (2346, 0.1), (3128, 0.001), (100, 0.001 + 0.099 * 100 / 782),
])
def test_cyclic_triangular_table(step, expected):
    assert schedules.cyclic(step, **CLR, mode="triangular") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("step, expected", [
    (0, 0.001), (782, 0.1), (1564, 0.001), (2346, 0.001 + 0.099 / 2), (3910, 0.001 + 0.099 / 4),
    (3519, 0.001 + 0.099 / 4 * 0.5),
])
def test_cyclic_triangular2_table(step, expected):
    assert schedules.cyclic(step, **CLR, mode="triangular2") == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("step", [0, 391, 782, 1500, 2346, 5000])
def test_cyclic_exp_range_against_formula(step):
    gamma = 0.99994
    cycle = math.floor(1 + step / (2 * 782))
    x = abs(step / 782 - 2 * cycle + 1)
    expected = 0.001 + (0.1 - 0.001) * max(0.0, 1 - x) * gamma ** step
    assert schedules.cyclic(step, **CLR, mode="exp_range", gamma=gamma) == pytest.approx(expected, rel=1e-12)
    assert schedules.cyclic(782, **CLR, mode="exp_range", gamma=gamma) == pytest.approx(0.001 + 0.099 * gamma ** 782)


def test_exponential_per_step_table():
    # paper 2: lr = 0.05 * 0.9 ** (t / T), T = steps per epoch (here 100)
    fn = schedules.make_schedule({"name": "exponential", "rate": 0.9}, 0.05, steps_per_epoch=100)
    table = [(0, 0.05), (50, 0.05 * 0.9 ** 0.5), (100, 0.045), (200, 0.0405), (1000, 0.05 * 0.9 ** 10)]
    for step, expected in table:
        assert fn(step) == pytest.approx(expected, rel=1e-12)


def test_step_decay_tables():
    # paper 3: Adam 1e-3 halved every 20 epochs; paper 5: 1e-3 divided by 10 every 10 epochs.
    halve = schedules.make_schedule({"name": "step", "every_epochs": 20, "factor": 0.5}, 1e-3, steps_per_epoch=10)
    assert [halve(e * 10) for e in (0, 19, 20, 39, 40, 60)] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1.25e-4])
    assert halve(199) == 1e-3 and halve(200) == 5e-4  # changes at the first step of epoch 20
    tenth = schedules.make_schedule({"name": "step", "every_epochs": 10, "factor": 0.1}, 1e-3, steps_per_epoch=7)
    assert [tenth(e * 7) for e in (0, 9, 10, 20, 29)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5, 1e-5])


def test_cosine_table_and_keras_cosine_decay():
    # paper 2's localiser: Adam 1e-3 decayed to 0 over the stage, 100 epochs of 13 steps.
    fn = schedules.make_schedule({"name": "cosine"}, 1e-3, steps_per_epoch=13, epochs=100)
    table = [(0, 1e-3), (325, 1e-3 * (1 + math.sqrt(0.5)) / 2), (650, 5e-4), (975, 1e-3 * (1 - math.sqrt(0.5)) / 2),
             (1300, 0.0), (1400, 0.0)]
    for step, expected in table:
        assert fn(step) == pytest.approx(expected, rel=1e-12, abs=1e-18)
    keras_cosine = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=1300)
    for step in (0, 1, 99, 650, 1299, 1300, 2000):
        assert fn(step) == pytest.approx(float(keras.ops.convert_to_numpy(keras_cosine(step))), rel=1e-5, abs=1e-10)
    with pytest.raises(ValueError, match="needs decay_steps, or the stage's epochs"):
        schedules.make_schedule({"name": "cosine"}, 0.1, 10)
    with pytest.raises(ValueError, match="decay_steps must be positive"):
        schedules.make_schedule({"name": "cosine", "decay_steps": 0}, 0.1, 10)


def test_cosine_over_the_stage_in_graph_and_through_a_saved_config():
    """What a stage's optimizer holds: ``StageSchedule(spec, lr, steps_per_epoch, epochs)``,
    decaying over the stage's steps; its config keeps the epochs, and a config saved
    before schedules had them (no "epochs") still loads."""
    graph = schedules.StageSchedule({"name": "cosine"}, 1e-3, 12, epochs=100)
    reference = schedules.make_schedule({"name": "cosine"}, 1e-3, 12, epochs=100)
    positions = [0, 1, 11, 12, 600, 1199, 1200, 1500]
    got = [float(keras.ops.convert_to_numpy(graph(step))) for step in positions]
    np.testing.assert_allclose(got, [reference(step) for step in positions], rtol=2e-6, atol=2e-6 * 1e-3)  # float32
    assert got[4] == pytest.approx(5e-4, rel=1e-6) and got[-2:] == [0.0, 0.0]
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(graph))
    assert restored.get_config() == {"spec": {"name": "cosine"}, "initial_learning_rate": 1e-3, "steps_per_epoch": 12,
                                     "epochs": 100}
    older = schedules.StageSchedule.from_config({"spec": {"name": "step", "every_epochs": 2, "factor": 0.5},
                                                 "initial_learning_rate": 0.1, "steps_per_epoch": 10})
    assert older.epochs is None and float(keras.ops.convert_to_numpy(older(20))) == pytest.approx(0.05)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        schedules.cyclic(0, **CLR, mode="sine")
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.make_schedule({"name": "linear"}, 0.1, 10)
    assert schedules.make_schedule(None, 0.1, 10) is None


SPECS = [
    ({"name": "cyclic", "base_lr": 0.001, "max_lr": 0.1, "step_size": 782, "mode": "triangular"}, 0.1, 782),
    ({"name": "cyclic", "base_lr": 0.001, "max_lr": 0.1, "step_size": 782, "mode": "triangular2"}, 0.1, 782),
    ({"name": "cyclic", "base_lr": 0.001, "max_lr": 0.1, "step_size": 782, "mode": "exp_range", "gamma": 0.99994},
     0.1, 782),
    ({"name": "exponential", "rate": 0.9}, 0.05, 781),
    ({"name": "step", "every_epochs": 20, "factor": 0.5}, 1e-3, 781),
    ({"name": "step", "every_epochs": 10, "factor": 0.1}, 1e-3, 1000),
    ({"name": "constant"}, 0.01, 100),
    ({"name": "cosine", "decay_steps": 15620}, 1e-3, 781),
]


@pytest.mark.parametrize("spec, lr, steps", SPECS, ids=lambda v: v["name"] if isinstance(v, dict) else "")
def test_in_graph_schedule_matches_the_tables(spec, lr, steps):
    """``StageSchedule`` (keras.ops, float32, what the optimizer evaluates) against the pure
    functions pinned by the tables above, over two cycles / decays and across boundaries."""
    reference = schedules.make_schedule(spec, lr, steps)
    graph = schedules.StageSchedule(spec, lr, steps)
    positions = sorted({0, 1, 390, 391, 781, 782, 783, 1563, 1564, 2345, 3128, 7809, 7810, 15620, 31239, 31240})
    got = [float(keras.ops.convert_to_numpy(graph(step))) for step in positions]
    np.testing.assert_allclose(got, [reference(step) for step in positions], rtol=2e-6)  # float32
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(graph))
    assert restored.get_config() == graph.get_config()


def _fit(epochs, steps=5, initial_epoch=0, model=None, steps_per_execution=1, spec=None):
    """Train a one-weight model with an in-graph schedule; record the rate at every step."""
    spec = spec or {"name": "cyclic", "base_lr": 0.001, "max_lr": 0.1, "step_size": 3}
    if model is None:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(schedules.StageSchedule(spec, 0.1, steps)), loss="mse",
                      steps_per_execution=steps_per_execution)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    x = np.linspace(-1, 1, steps * 2, dtype=np.float32)[:, None]
    model.fit(x, 3 * x + 1, batch_size=2, epochs=epochs, initial_epoch=initial_epoch, verbose=0, shuffle=False,
              callbacks=[Record(), callbacks.LearningRateLogger(model.optimizer._learning_rate)])
    return seen, model


def test_in_graph_schedule_continues_across_a_saved_and_reloaded_model(tmp_path):
    expected = [schedules.cyclic(t, 0.001, 0.1, 3) for t in range(20)]
    whole, _ = _fit(epochs=4)
    np.testing.assert_allclose(whole, expected, rtol=1e-6)
    # Stopped after 2 epochs, saved (the optimizer's step with it), reloaded, resumed.
    first, model = _fit(epochs=2)
    model.save(tmp_path / "checkpoint.keras")
    reloaded = keras.models.load_model(tmp_path / "checkpoint.keras")
    assert isinstance(reloaded.optimizer._learning_rate, schedules.StageSchedule)
    rest, _ = _fit(epochs=4, initial_epoch=2, model=reloaded)
    np.testing.assert_allclose(first + rest, expected, rtol=1e-6)


def test_several_steps_per_execution_follow_the_schedule_step_by_step():
    """With 5 steps per execution the rate still changes at every step: the weights are those
    of one step per execution, which a per-batch Python callback could not give."""
    _, one = _fit(epochs=3, steps=5, steps_per_execution=1)
    _, five = _fit(epochs=3, steps=5, steps_per_execution=5)
    for a, b in zip(one.get_weights(), five.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # ... and the rate logged for each epoch is that of its last step.
    history = one.history.history["learning_rate"] if "learning_rate" in one.history.history else None
    assert history == pytest.approx([schedules.cyclic(t, 0.001, 0.1, 3) for t in (4, 9, 14)], rel=1e-6)
