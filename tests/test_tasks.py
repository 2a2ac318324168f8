"""Task battery: counts, labels, target formulas, valid range and bad input."""

import numpy as np
import pytest

from hetbrian.errors import DataError, ParameterError
from hetbrian.stimuli import OrnsteinUhlenbeck, Stimulus, subsample
from hetbrian.tasks import Task, TaskBattery, narma

NONE = dict(
    memory_delays=(),
    prediction_horizons=(),
    power_degrees=(),
    delayed_power_delays=(),
    legendre_delays=(),
    product_delays=(),
    narma_orders=(),
)


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).standard_normal((600, 2))


def test_default_grid_counts_and_labels():
    one = TaskBattery.grid(["x"])
    assert len(one) == 313
    families = {f: sum(t.family == f for t in one) for f in set(t.family for t in one)}
    assert families == {
        "memory": 40,
        "prediction": 20,
        "power": 4,
        "delayed_power": 80,
        "legendre": 120,
        "product": 45,
        "narma": 4,
    }
    three = TaskBattery.grid(["x", "y", "z"])
    assert len(three) == 3 * 313 + 3 * 100
    assert len(set(three.names)) == len(three)
    coords = three.coords()
    assert set(coords) == {
        "task",
        "family",
        "component",
        "delay",
        "degree",
        "component_b",
        "delay_b",
        "order",
    }
    i = three.names.index("prediction:y:h7")
    assert coords["delay"][1][i] == -7 and coords["component"][1][i] == "y"
    j = three.names.index("product:x:d2*z:d5")
    assert coords["component_b"][1][j] == "z" and coords["delay_b"][1][j] == 5
    assert coords["degree"][1][three.names.index("legendre:z:d4:p3")] == 3
    assert TaskBattery.grid(2).component_names == ("0", "1")


def test_targets_follow_their_formulas(inputs):
    u = inputs
    tasks = [
        Task("memory", 0, delay=3),
        Task("prediction", 1, delay=-4),
        Task("power", 0, degree=3),
        Task("delayed_power", 1, delay=2, degree=2),
        Task("legendre", 0, delay=1, degree=2),
        Task("product", 0, delay=0, degree=2, component_b=1, delay_b=5),
        Task("narma", 1, order=10),
    ]
    battery = TaskBattery(tasks, ["a", "b"])
    y, valid = battery.targets(u)
    assert valid == slice(10, 600 - 4)
    t = np.arange(valid.start, valid.stop)
    np.testing.assert_array_equal(y[:, 0], u[t - 3, 0])
    np.testing.assert_array_equal(y[:, 1], u[t + 4, 1])
    np.testing.assert_allclose(y[:, 2], u[t, 0] ** 3)
    np.testing.assert_allclose(y[:, 3], u[t - 2, 1] ** 2)
    v = 2 * (u[:, 0] - u[:, 0].min()) / np.ptp(u[:, 0]) - 1
    np.testing.assert_allclose(y[:, 4], 1.5 * v[t - 1] ** 2 - 0.5)
    np.testing.assert_allclose(y[:, 5], u[t, 0] * u[t - 5, 1])
    w = 0.5 * (u[:, 1] - u[:, 1].min()) / np.ptp(u[:, 1])
    np.testing.assert_allclose(y[:, 6], narma(w, 10)[t])


def test_narma10_against_textbook_loop():
    w = np.random.default_rng(1).uniform(0, 0.5, 400)
    y = np.zeros(400)
    for t in range(9, 399):
        y[t + 1] = (
            0.3 * y[t]
            + 0.05 * y[t] * y[t - 9 : t + 1].sum()
            + 1.5 * w[t - 9] * w[t]
            + 0.1
        )
    np.testing.assert_allclose(narma(w, 10, bounded=False), y, rtol=1e-12)
    bounded = narma(w, 10)
    assert 0.01 < np.abs(bounded - y)[20:].max() < 0.3 * y[20:].max()
    high = narma(w, 30)
    assert np.all(np.abs(high) < 1) and high[100:].std() > 0.01


def test_narma_on_a_chaotic_flow_stays_bounded():
    from hetbrian.stimuli import Lorenz

    u = Lorenz(steps_per_unit=20.0).sample(600, rng=0)[:, :1]
    w = 0.5 * (u[:, 0] - u[:, 0].min()) / np.ptp(u[:, 0])
    with pytest.raises(DataError, match="diverged"):
        narma(w, 10, bounded=False)
    y, _ = TaskBattery([Task("narma", 0, order=10)], ["x"]).targets(u)
    assert np.all(np.abs(y) < 1)


def test_delays_count_readout_samples():
    stride = 5
    dense = Stimulus(OrnsteinUhlenbeck(20.0)).sample(2000, rng=3)
    u = subsample(dense, stride)
    battery = TaskBattery([Task("memory", 0, delay=2)], ["ou.0"])
    y, valid = battery.targets(u)
    k = np.arange(valid.start, valid.stop)
    np.testing.assert_array_equal(y[:, 0], dense[(k - 2) * stride, 0])


def test_select():
    battery = TaskBattery.grid(["x", "y"])
    mem = battery.select(family="memory", component="y")
    assert len(mem) == 40 and all(t.component == 1 for t in mem)
    assert battery.select(family="narma", order=10).names == (
        "narma10:x",
        "narma10:y",
    )
    with pytest.raises(ParameterError, match="no label"):
        battery.select(colour="red")
    with pytest.raises(ParameterError, match="at least one task"):
        battery.select(family="memory", delay=999)


def test_too_short_and_malformed_inputs_raise():
    battery = TaskBattery.grid(["x"])  # needs 40 past and 20 future samples
    with pytest.raises(DataError, match="too short"):
        battery.targets(np.zeros((60, 1)))
    battery.targets(np.random.default_rng(0).standard_normal((61, 1)))
    with pytest.raises(DataError, match="expected"):
        battery.targets(np.zeros((500, 2)))
    bad = np.random.default_rng(0).standard_normal((500, 1))
    bad[7] = np.nan
    with pytest.raises(DataError, match="NaN"):
        battery.targets(bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TaskBattery([], ["x"]),
        lambda: TaskBattery.grid(["x"], **NONE),
        lambda: TaskBattery([Task("memory", 1, delay=1)], ["x"]),
        lambda: TaskBattery([Task("memory", 0, delay=1)] * 2, ["x"]),
        lambda: TaskBattery([Task("memory", 0, delay=1)], ["x", "x"]),
        lambda: Task("memory", 0, delay=0),
        lambda: Task("prediction", 0, delay=2),
        lambda: Task("power", 0, degree=1),
        lambda: Task("product", 0, delay=1, degree=2, component_b=0, delay_b=1),
        lambda: Task("memory", 0, delay=1, component_b=1),
        lambda: Task("narma", 0, order=0),
        lambda: Task("spectral", 0),
        lambda: Task("memory", 0, delay=1.5),
    ],
)
def test_bad_tasks_raise(make):
    with pytest.raises(ParameterError):
        make()
