"""CMA-ES: a known optimum, checkpoints that resume exactly, one run per generation."""

import pickle

import numpy as np
import pytest
from brian2 import ms

from hetbrian import models, network
from hetbrian.errors import ParameterError
from hetbrian.tasks import TaskBattery
from hetbrian.training import CMAES, ReservoirObjective

#: A target time-constant profile (ms) relative to a 10 ms reference.
TARGET = np.log(np.array([3.0, 5.0, 8.0, 13.0, 21.0, 34.0]) / 10.0)


def _profile_error(population):
    return np.sum((population - TARGET) ** 2, axis=1)


def test_cmaes_finds_a_target_time_constant_profile():
    result = CMAES(_profile_error, np.zeros(6), 0.5, seed=1).run(60)
    assert result.f_best < 1e-4
    np.testing.assert_allclose(
        np.exp(result.x_best) * 10, np.exp(TARGET) * 10, rtol=0.02
    )
    assert result.evaluations == len(result.history) * 9  # 4 + floor(3 ln 6)


class _Crash(Exception):
    pass


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_checkpointed_search_resumes_to_the_same_result(tmp_path):
    straight = CMAES(_profile_error, np.zeros(6), 0.5, seed=3).run(16)
    path = tmp_path / "search.pkl"
    calls = []

    def crashing(population):
        calls.append(1)
        if len(calls) == 7:
            raise _Crash
        return _profile_error(population)

    with pytest.raises(_Crash):
        CMAES(crashing, np.zeros(6), 0.5, seed=3, checkpoint=path).run(16)
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    with open(path, "rb") as fh:
        assert len(pickle.load(fh)["history"]) == 6  # the last complete generation
    resumed = CMAES(_profile_error, np.zeros(6), 0.5, seed=3, checkpoint=path)
    assert resumed.generation == 6
    result = resumed.run(16)
    np.testing.assert_array_equal(result.x_best, straight.x_best)
    np.testing.assert_array_equal(result.mean, straight.mean)
    assert _strip(result.history) == _strip(straight.history)


def test_cmaes_checks_arguments():
    with pytest.raises(ParameterError, match="sigma0"):
        CMAES(_profile_error, np.zeros(3), -1.0)
    with pytest.raises(ParameterError, match="x0"):
        CMAES(_profile_error, np.zeros(1), 1.0)


def _objective(**kwargs):
    config = network.ReservoirConfig(
        models.rate_model(),
        n_neurons=6,
        seed=2,
        connectivity=network.Connectivity(p=0.4, gain=0.9),
    )
    settings = network.SimulationSettings(dt=1 * ms, readout_dt=1 * ms)
    u = np.random.default_rng(0).standard_normal((300, 1))
    battery = TaskBattery.grid(
        1,
        memory_delays=range(1, 5),
        prediction_horizons=(),
        power_degrees=(),
        delayed_power_delays=(),
        legendre_delays=(),
        product_delays=(),
        narma_orders=(),
    )
    return ReservoirObjective(network.draw(config), u, battery, settings, **kwargs)


def test_reservoir_objective_runs_one_simulation_per_generation():
    objective = _objective(washout=10, hyperparameters=("input_gain",))
    assert objective.dimension == 7
    search = CMAES(objective, objective.x0(), 0.4, popsize=4, seed=0, bounds=(-3, 3))
    result = search.run(2)
    assert objective.simulations == 2 and result.evaluations == 8
    assert 0 <= result.f_best <= 1
    # the score of the best member, recomputed from its own spec, is the objective
    x = result.x_best
    np.testing.assert_allclose(objective(x[None])[0], result.f_best, rtol=1e-9)
    spec = objective.spec(x)
    np.testing.assert_allclose(
        spec.parameters["tau"], objective.reference * np.exp(x[:6]), rtol=1e-12
    )
    np.testing.assert_allclose(
        spec.input_weights, objective.instance.input_weights * np.exp(x[6])
    )
    held_out = np.random.default_rng(9).standard_normal((300, 1))
    scores = objective.score(x, held_out)
    assert scores.sizes["task"] == 4
    assert float(scores["r2_clipped"][0]) > 0.2  # delay-1 memory is easy
