"""Ridge readout: exactness, model selection, delay-line memory, features, errors."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg

import hetbrian.readout as readout_module
from hetbrian.errors import DataError, ParameterError, UnitError
from hetbrian.readout import (
    RidgeReadout,
    filtered_spike_trains,
    memory_capacity,
    ridge_readout,
    state_features,
)
from hetbrian.tasks import Task, TaskBattery


def _problem(n=300, p=12, t=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)) @ rng.standard_normal((p, p)) + 2.0
    y = x @ rng.standard_normal((p, t)) + 3.0 * rng.standard_normal((n, t)) - 1.0
    return x, y


def _brute_loo(x, y, alpha):
    """Leave-one-out mean squared error by refitting without each row."""
    n = x.shape[0]
    errors = np.empty((n, y.shape[1]))
    for i in range(n):
        keep = np.arange(n) != i
        xm, ym = x[keep].mean(axis=0), y[keep].mean(axis=0)
        xc, yc = x[keep] - xm, y[keep] - ym
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
        errors[i] = y[i] - (ym + (x[i] - xm) @ w)
    return (errors**2).mean(axis=0)


def _shift_register(u, length):
    """Features u(t), u(t-1), ..., u(t-length): an exact delay line."""
    n = u.size - length
    return np.stack([u[length - k : length - k + n] for k in range(length + 1)], 1)


def test_zero_regularization_equals_lstsq_on_augmented_system():
    x, y = _problem()
    fit = RidgeReadout(alphas=[0.0]).fit(x, y)
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    np.testing.assert_allclose(fit.weights, coef[:-1], rtol=1e-8, atol=0)
    np.testing.assert_allclose(fit.intercept, coef[-1], rtol=1e-8, atol=0)
    np.testing.assert_allclose(fit.predict(x), np.c_[x, np.ones(len(x))] @ coef)


def test_fixed_alpha_equals_normal_equations():
    x, y = _problem()
    alpha = 37.0
    fit = RidgeReadout(alphas=[alpha]).fit(x, y)
    xc, yc = x - x.mean(0), y - y.mean(0)
    w = scipy.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    np.testing.assert_allclose(fit.weights, w, rtol=1e-9)
    rss = ((yc - xc @ w) ** 2).sum(0)
    np.testing.assert_allclose(fit.train_r2, 1 - rss / (yc**2).sum(0), rtol=1e-10)


def test_gcv_equals_brute_force_loo_when_leverages_are_equal():
    # columns of a Hadamard matrix (without the constant one): every row has the
    # same leverage for every alpha, where GCV and leave-one-out coincide exactly
    n = 64
    x = scipy.linalg.hadamard(n)[:, 1:9].astype(float) * 0.7
    rng = np.random.default_rng(3)
    y = x @ rng.standard_normal((8, 3)) * [1.0, 0.3, 0.05] + rng.standard_normal((n, 3))
    alphas = np.logspace(-2, 4, 13)
    fit = RidgeReadout(alphas=alphas, selection="gcv").fit(x, y)
    brute = np.array([_brute_loo(x, y, a) for a in alphas])
    np.testing.assert_allclose(fit.criterion, brute, rtol=1e-9)
    np.testing.assert_array_equal(fit.alpha, alphas[np.argmin(brute, axis=0)])
    assert len(set(fit.alpha)) > 1  # the tasks do choose different strengths


def test_loo_equals_brute_force_and_gcv_is_close_on_random_design():
    x, y = _problem(n=60, p=6, t=3, seed=5)
    alphas = np.logspace(-1, 5, 13)
    brute = np.array([_brute_loo(x, y, a) for a in alphas])
    loo = RidgeReadout(alphas=alphas, selection="loo").fit(x, y)
    np.testing.assert_allclose(loo.criterion, brute, rtol=1e-9)
    np.testing.assert_array_equal(loo.alpha, alphas[np.argmin(brute, axis=0)])
    gcv = RidgeReadout(alphas=alphas, selection="gcv").fit(x, y)
    np.testing.assert_allclose(gcv.criterion, brute, rtol=0.15)


def test_validation_selection_matches_direct_prediction_error():
    x, y = _problem(n=400, seed=2)
    xv, yv = _problem(n=100, seed=2)[0], _problem(n=100, seed=9)[1]
    alphas = np.logspace(-2, 5, 8)
    fit = RidgeReadout(alphas=alphas, selection="validation").fit(
        x, y, validation=(xv, yv)
    )
    for i, a in enumerate(alphas):
        single = RidgeReadout(alphas=[a]).fit(x, y)
        mse = ((yv - single.predict(xv)) ** 2).mean(axis=0)
        np.testing.assert_allclose(fit.criterion[i], mse, rtol=1e-8)
    assert np.all(fit.criterion[np.searchsorted(alphas, fit.alpha), range(4)] > 0)


def test_matches_scikit_learn_ridgecv_per_target():
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = _problem(n=200, p=15, t=6, seed=1)
    y[:, 3:] += 20 * np.random.default_rng(0).standard_normal((200, 3))
    alphas = np.logspace(-2, 4, 10)
    ours = RidgeReadout(alphas=alphas, selection="loo").fit(x, y)
    ref = sklearn.RidgeCV(alphas=alphas, alpha_per_target=True).fit(x, y)
    np.testing.assert_array_equal(ours.alpha, ref.alpha_)
    np.testing.assert_allclose(ours.weights, ref.coef_.T, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.intercept, ref.intercept_, rtol=1e-8)


def test_shift_register_remembers_exactly_its_length():
    length = 10
    u = np.random.default_rng(4).standard_normal(2000 + length)
    x = _shift_register(u, length)
    battery = TaskBattery([Task("memory", 0, delay=d) for d in range(1, 16)], ["u"])
    scores = ridge_readout(x, battery.targets(u[length:]), tasks=battery, washout=5)
    r2 = scores["r2"].values
    assert np.all(r2[:length] > 0.9999)
    assert np.all(np.abs(r2[length:]) < 0.02)
    mc = memory_capacity(x, u[length:], max_delay=15)
    assert mc.total == pytest.approx(length, abs=0.05)
    assert np.all(mc.per_delay[length:] < 0.02)


def test_dataset_layout():
    u = np.random.default_rng(1).standard_normal(800)
    x = _shift_register(u, 5)
    battery = TaskBattery.grid(["u"], memory_delays=range(1, 4), power_degrees=(2,))
    for selection in ("gcv", "loo", "validation"):
        ds = ridge_readout(
            x, battery.targets(u[5:]), tasks=battery, selection=selection
        )
        assert ds.sizes["task"] == len(battery)
        assert list(ds["task"].values) == list(battery.names)
        for var in ("r2", "r2_clipped", "nrmse", "correlation", "alpha", "train_r2"):
            assert ds[var].dims == ("task",) and "units" in ds[var].attrs
        assert ds["family"].values[0] == "memory"
        assert ds.attrs["selection"] == selection
        assert (
            ds.attrs["n_train"] + ds.attrs["n_validation"] + ds.attrs["n_test"]
            == len(u) - 5 - battery.back - battery.ahead
        )
        assert np.all((ds["r2_clipped"] >= 0) & (ds["r2_clipped"] <= 1))
        np.testing.assert_allclose(
            ds["nrmse"] ** 2, 1 - ds["r2"], rtol=1e-10, atol=1e-12
        )  # the documented identity
        flagged = ds["negative_r2"].values
        assert np.all(ds["r2"].values[flagged] < 0)
        assert np.all(ds["r2_clipped"].values[flagged] == 0)


def test_constant_target_is_flagged_not_fatal():
    x, y = _problem(n=200, t=2)
    y[:, 1] = 4.0
    ds = ridge_readout(x, y)
    assert bool(ds["constant_target"][1]) and np.isnan(ds["r2"][1])
    assert float(ds["r2_clipped"][1]) == 0.0 and not bool(ds["constant_target"][0])


@pytest.fixture
def no_fitting(monkeypatch):
    """Make any factorization fail the test: errors must come before fitting."""

    def forbidden(*args, **kwargs):
        raise AssertionError("fitting started before the input was checked")

    monkeypatch.setattr(readout_module, "_thin_svd", forbidden)


def _bad(case):
    x, y = _problem(n=100, t=3)
    if case == "nan features":
        x[5, 2] = np.nan
    elif case == "inf targets":
        y[7, 1] = np.inf
    elif case == "lengths":
        y = y[:-1]
    elif case == "1-d features":
        x = x[:, 0, None][:, :, None]
    return x, y


@pytest.mark.parametrize(
    "case, kwargs, error, match",
    [
        ("nan features", {}, DataError, "NaN"),
        ("inf targets", {}, DataError, "NaN or inf"),
        ("lengths", {}, DataError, "do not match"),
        ("1-d features", {}, DataError, "shape"),
        ("ok", {"washout": 100}, DataError, "washout"),
        ("ok", {"washout": -1}, ParameterError, "washout"),
        ("ok", {"split": (0.5, 0.5)}, ParameterError, "split"),
        ("ok", {"split": (0.7, 0.2, 0.2)}, ParameterError, "add up"),
        ("ok", {"split": (0.5, 0.25, 0.25)}, ParameterError, "validation"),
        ("ok", {"split": (0.99, 0.0, 0.01)}, DataError, "test"),
        ("ok", {"alphas": [-1.0]}, ParameterError, "alphas"),
        ("ok", {"alphas": []}, ParameterError, "alphas"),
        ("ok", {"selection": "aic"}, ParameterError, "selection"),
        ("ok", {"tasks": ["a", "b"]}, DataError, "names"),
        ("ok", {"valid": slice(0, 50)}, DataError, "do not match"),
    ],
)
def test_bad_input_raises_before_fitting(no_fitting, case, kwargs, error, match):
    x, y = _bad(case)
    with pytest.raises(error, match=match):
        ridge_readout(x, y, **kwargs)


def test_bad_fit_input_raises_before_fitting(no_fitting):
    x, y = _problem(n=100)
    with pytest.raises(ParameterError, match="validation"):
        RidgeReadout(selection="validation").fit(x, y)
    with pytest.raises(ParameterError, match="validation"):
        RidgeReadout().fit(x, y, validation=(x, y))
    with pytest.raises(DataError, match="validation shapes"):
        RidgeReadout(selection="validation").fit(x, y, validation=(x[:, :3], y))
    with pytest.raises(DataError, match="at least 3"):
        RidgeReadout().fit(x[:2], y[:2])
    with pytest.raises(DataError, match="too short"):
        battery = TaskBattery.grid(["u"])
        ridge_readout(x, battery.targets(x[:50, :1]), tasks=battery)
    with pytest.raises(ParameterError, match="at least one task"):
        TaskBattery([], ["u"])


def test_filtered_spike_trains_match_direct_sum():
    rng = np.random.default_rng(6)
    n_neurons, n_samples, interval, tau = 7, 300, 1e-3, 20e-3
    times = np.sort(rng.uniform(-0.01, 0.35, 400))
    indices = rng.integers(0, n_neurons, 400)
    r = filtered_spike_trains(
        indices,
        times,
        n_neurons,
        tau=tau,
        sample_interval=interval,
        n_samples=n_samples,
    )
    t = np.arange(n_samples) * interval
    direct = np.zeros((n_samples, n_neurons))
    for i, s in zip(indices, times, strict=True):
        after = t >= s
        direct[after, i] += np.exp(-(t[after] - s) / tau)
    np.testing.assert_allclose(r, direct, rtol=1e-10, atol=1e-12)


def test_spike_at_sample_time_counts_and_units():
    r = filtered_spike_trains(
        [0, 1], [0.3, 0.0030000001], 2, tau=0.01, sample_interval=1e-3, n_samples=5
    )
    assert r[3, 0] == 0.0 and r[3, 1] == 0.0  # 0.3 s is beyond the last sample
    r = filtered_spike_trains(
        [0], [0.1 + 0.2], 1, tau=0.01, sample_interval=0.1, n_samples=4
    )
    assert r[3, 0] == pytest.approx(1.0)  # 0.30000000000000004 counts at t = 0.3
    brian2 = pytest.importorskip("brian2")
    ms = brian2.ms
    q = filtered_spike_trains(
        [0], [3 * ms], 1, tau=10 * ms, sample_interval=1 * ms, n_samples=6
    )
    np.testing.assert_allclose(q[3:, 0], np.exp(-np.arange(3) / 10))
    with pytest.raises(UnitError):
        filtered_spike_trains([0], [3], 1, tau=10 * brian2.mV, sample_interval=1e-3,
                              n_samples=6)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"spike_indices": [0, 9]}, DataError),
        ({"spike_indices": [0]}, DataError),
        ({"spike_times": [0.0, np.nan]}, DataError),
        ({"tau": 0.0}, ParameterError),
        ({"sample_interval": -1e-3}, ParameterError),
        ({"n_samples": 0}, ParameterError),
    ],
)
def test_filtered_spike_trains_bad_input(kwargs, error):
    args = {
        "spike_indices": [0, 1],
        "spike_times": [0.0, 0.001],
        "n_neurons": 2,
        "tau": 0.01,
        "sample_interval": 1e-3,
        "n_samples": 10,
    }
    args.update(kwargs)
    with pytest.raises(error):
        filtered_spike_trains(
            args.pop("spike_indices"), args.pop("spike_times"), args.pop("n_neurons"),
            **args,
        )  # fmt: skip


def test_state_features_transposes_and_strides():
    states = np.arange(2 * 12, dtype=float).reshape(2, 12)
    f = state_features(states, stride=4, offset=1)
    np.testing.assert_array_equal(f, states[:, 1::4].T)
    assert f.flags.c_contiguous
    with pytest.raises(DataError):
        state_features(np.zeros(5))


def test_stimuli_tasks_and_readout_do_not_import_brian2():
    code = (
        "import sys, hetbrian.stimuli, hetbrian.tasks, hetbrian.readout, "
        "hetbrian.bench.readout; print('brian2' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_benchmark_quick_run_reports_its_figures():
    pytest.importorskip("sklearn")
    from hetbrian.bench.readout import format_table, run

    result = run(quick=True)
    figures = result["figures"]
    assert figures["ratio_one_by_one_over_all"] > 5
    assert figures["max_coef_diff_loo"] < 1e-8
    assert figures["alpha_agreement_loo"] == 1.0
    assert "ratio_all_over_one" in format_table(result)
