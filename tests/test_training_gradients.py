"""BPTT through the twin: gradients against finite differences, training, write-back."""

import shutil

import numpy as np
import pytest
from brian2 import ms, mV, nA

from hetbrian import engines, models, network
from hetbrian.errors import DataError, ParameterError
from hetbrian.heterogeneity import Gamma
from hetbrian.training import SurrogateGradientTrainer


def _central_differences(trainer, u, y, indices, smooth, h=1e-5):
    out = []
    for i in indices:
        plus, minus = trainer.theta.copy(), trainer.theta.copy()
        plus[i] += h
        minus[i] -= h
        lp, _ = trainer.loss_and_gradient(u, y, plus, smooth=smooth)
        lm, _ = trainer.loss_and_gradient(u, y, minus, smooth=smooth)
        out.append((lp - lm) / (2 * h))
    return np.array(out)


def _assert_gradient(trainer, u, y, smooth):
    rng = np.random.default_rng(0)
    trainer.loss_and_gradient(u, y)  # initialises the readout (ridge fit)
    # move the readout off its optimum, where d loss / d bias is zero
    trainer.theta[trainer.n_network :] += rng.normal(
        0, 0.1, trainer.theta.size - trainer.n_network
    )
    _, grad = trainer.loss_and_gradient(u, y, smooth=smooth)
    # a few coordinates of every block: parameters, input and recurrent weights,
    # readout
    n = trainer.twin.spec.n_neurons
    starts = list(range(0, trainer.n_network, n)) + [trainer.n_network]
    indices = sorted(
        {int(rng.integers(s, min(s + n, grad.size))) for s in starts for _ in range(2)}
        | {grad.size - 1}
    )
    fd = _central_differences(trainer, u, y, indices, smooth)
    scale = np.maximum(np.abs(fd), np.abs(grad[indices]))
    assert np.all(scale > 0)
    rel = np.abs(fd - grad[indices]) / scale
    assert rel.max() <= 1e-5, (indices, rel)


def _rate_trainer(**kwargs):
    config = network.ReservoirConfig(
        models.rate_model(),
        n_neurons=8,
        heterogeneity={"tau": Gamma(mean=10 * ms, cv=0.5, lower=1 * ms)},
        connectivity=network.Connectivity(p=0.4, gain=1.2),
        input_bias=0.1,
        seed=3,
    )
    settings = network.SimulationSettings(dt=1 * ms, readout_dt=2 * ms)
    return SurrogateGradientTrainer(
        network.batch([config]),
        settings,
        ("tau",),
        input_weights=True,
        recurrent_weights=True,
        **kwargs,
    )


def _memory_task(n_seq, n_rows, delay=2, seed=0):
    u = np.random.default_rng(seed).standard_normal((n_seq, n_rows, 1))
    return u, np.roll(u[:, ::2], delay, axis=1)


def test_rate_gradient_equals_finite_differences():
    trainer = _rate_trainer(washout=3)
    u, y = _memory_task(3, 60)
    _assert_gradient(trainer, u, y, smooth=False)


def test_cross_entropy_gradient_equals_finite_differences():
    trainer = _rate_trainer(loss="cross_entropy", n_outputs=3)
    u, _ = _memory_task(4, 40)
    labels = np.array([0, 2, 1, 2])
    _assert_gradient(trainer, u, labels, smooth=False)


def _lif_spec(seed=4):
    config = network.ReservoirConfig(
        models.lif_model(),
        n_neurons=8,
        heterogeneity={"tau_m": Gamma(mean=20 * ms, cv=0.5, lower=2 * ms)},
        connectivity=network.Connectivity(p=0.4, gain=3 * mV),
        input_gain=0.15 * nA,
        input_bias=0.26 * nA,
        seed=seed,
    )
    return network.batch([config])


def test_lif_surrogate_gradient_equals_finite_differences_of_smooth_twin():
    # smooth=True: the forward pass emits S(c/scale), whose exact derivative is the
    # surrogate the hard forward pass backpropagates; the backward code is the same
    settings = network.SimulationSettings(
        dt=0.5 * ms, readout_dt=1 * ms, features=("spikes", "v")
    )
    trainer = SurrogateGradientTrainer(
        _lif_spec(),
        settings,
        ("tau_m", "V_th"),
        input_weights=True,
        recurrent_weights=True,
    )
    u, y = _memory_task(2, 100)
    assert trainer.twin.forward(u).spikes.sum() > 10
    _assert_gradient(trainer, u, y, smooth=True)


def test_training_lowers_loss_and_brian2_reproduces_the_score():
    trainer = _rate_trainer(washout=3, learning_rate=0.1)
    u, y = _memory_task(8, 80, delay=2)
    trainer.initialise_readout(u, y)
    before = trainer.score(u, y)
    trainer.fit(u, y, epochs=20, batch_size=4, rng=1)
    after = trainer.score(u, y)
    assert after < 0.92 * before  # 0.759 -> 0.674 when written
    taus = trainer.trained_parameters()[0]["tau"]
    assert np.all(taus >= 1e-3) and not np.allclose(
        taus, trainer._base["parameters"]["tau"]
    )
    spec = trainer.to_spec()
    settings = trainer.twin.settings
    brian = np.stack([network.simulate(spec, x, settings).matrix() for x in u[:2]])
    np.testing.assert_allclose(
        trainer.score_features(brian, y[:2]), trainer.score(u[:2], y[:2]), rtol=1e-6
    )


@pytest.mark.standalone
def test_cpp_standalone_run_of_trained_spec_reproduces_the_score(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler")
    trainer = _rate_trainer(washout=3, learning_rate=0.1)
    u, y = _memory_task(4, 80, delay=2)
    trainer.initialise_readout(u, y)
    trainer.fit(u, y, epochs=5, batch_size=2, rng=1)
    spec = trainer.to_spec()
    settings = trainer.twin.settings
    engine = engines.get_engine("cpp_standalone", cache_dir=tmp_path)
    compiled = engine.build(spec, u[0], settings)
    # one binary for both sequences: the second goes in through run_args
    standalone = np.stack([compiled.run(spec, stimulus=x).matrix() for x in u[:2]])
    np.testing.assert_allclose(
        trainer.score_features(standalone, y[:2]),
        trainer.score(u[:2], y[:2]),
        rtol=1e-6,
    )


def test_lif_trained_spec_reproduces_spike_trains_and_score():
    settings = network.SimulationSettings(
        dt=0.5 * ms, readout_dt=1 * ms, features=("spikes", "v")
    )
    trainer = SurrogateGradientTrainer(
        _lif_spec(), settings, ("tau_m", "V_th"), learning_rate=0.05
    )
    u, y = _memory_task(4, 100)
    trainer.fit(u, y, epochs=2, batch_size=2, rng=0)
    assert len(trainer.history) == 2
    spec = trainer.to_spec()
    assert not np.allclose(spec.parameters["V_th"], _lif_spec().parameters["V_th"])
    features = network.simulate(spec, u[0], settings)
    run = trainer.twin.forward(u[0], trainer.network_values())
    np.testing.assert_array_equal(features.spike_counts, run.spikes[0].sum(axis=0))
    np.testing.assert_allclose(
        trainer.score_features(features.matrix()[None], y[:1]),
        trainer.score(u[:1], y[:1]),
        rtol=1e-9,
    )


def test_trainer_checks_its_inputs():
    with pytest.raises(ParameterError, match="parameters names 'tau_m'"):
        SurrogateGradientTrainer(
            _rate_trainer().twin.spec,
            network.SimulationSettings(dt=1 * ms, readout_dt=2 * ms),
            ("tau_m",),
        )
    trainer = _rate_trainer()
    u, y = _memory_task(2, 40)
    with pytest.raises(DataError, match="targets have shape"):
        trainer.loss_and_gradient(u, y[:, :5])
