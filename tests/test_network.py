"""Reservoir networks: connectivity, batching, and agreement with NumPy."""

import numpy as np
import pytest
from brian2 import ms, mV, pA

from hetbrian.errors import ParameterError, SpecError, UnitError
from hetbrian.heterogeneity import Gamma, LogNormal
from hetbrian.models import lif_model, rate_model
from hetbrian.network import (
    BrianNetwork,
    Connectivity,
    ReservoirConfig,
    SimulationSettings,
    batch,
    draw,
    simulate,
)

DT = 0.1 * ms


def rate_config(seed=0, cv=0.5, n=40, gain=1.5, k=2, **kwargs):
    tau = LogNormal(mean=20 * ms, cv=cv, lower=DT) if cv else 20 * ms
    return ReservoirConfig(
        model=rate_model("tanh"),
        n_neurons=n,
        n_inputs=k,
        heterogeneity={"tau": tau},
        connectivity=Connectivity(p=0.2, gain=gain),
        seed=seed,
        **kwargs,
    )


def numpy_rate_network(spec, stimulus, n_steps, dt):
    """Euler integration of tau dv/dt = -v + W tanh(v) + W_in u + b, written anew."""
    n = spec.n_neurons
    weights = np.zeros((n, n))
    np.add.at(weights, (spec.syn_j, spec.syn_i), spec.syn_w)
    tau = spec.parameters["tau"]
    v = np.zeros(n)
    rates = np.empty((n_steps, n))
    for step in range(n_steps):
        rates[step] = np.tanh(v)
        drive = weights @ rates[step] + spec.input_weights @ stimulus[step]
        v = v + dt * (-v + drive + spec.parameters["I_bias"]) / tau
    return rates


def test_connectivity_in_degree_dale_and_balance():
    config = rate_config(n=200)
    inst = draw(config)
    n_in = round(0.2 * 199)
    assert np.all(np.bincount(inst.syn_j, minlength=200) == n_in)
    assert not np.any(inst.syn_i == inst.syn_j)
    pairs = set(zip(inst.syn_i.tolist(), inst.syn_j.tolist(), strict=True))
    assert len(pairs) == inst.syn_i.size  # no multapses
    excitatory = inst.syn_i < 160
    assert np.all(inst.syn_w[excitatory] > 0) and np.all(inst.syn_w[~excitatory] < 0)
    # E/I balance: the mean weight is zero up to sampling
    assert abs(inst.syn_w.mean()) < 0.05 * np.abs(inst.syn_w).mean()
    # the gain sets the bulk of the spectrum
    weights = np.zeros((200, 200))
    np.add.at(weights, (inst.syn_j, inst.syn_i), inst.syn_w)
    radius = np.sort(np.abs(np.linalg.eigvals(weights)))[-10]
    assert 1.2 < radius < 1.6


def test_same_seed_same_connectivity_across_profiles():
    homogeneous = draw(rate_config(cv=0))
    heterogeneous = draw(rate_config(cv=0.8))
    assert np.array_equal(homogeneous.syn_i, heterogeneous.syn_i)
    assert np.array_equal(homogeneous.syn_w, heterogeneous.syn_w)
    assert np.array_equal(homogeneous.input_weights, heterogeneous.input_weights)
    assert np.all(homogeneous.parameters["tau"] == 0.02)
    assert heterogeneous.parameters["tau"].std() > 0.01


def test_no_recurrence_builds_no_synapses():
    spec = batch([rate_config(gain=0)])
    assert spec.syn_i.size == 0
    settings = SimulationSettings(dt=DT, readout_dt=DT)
    net = BrianNetwork(spec, np.zeros((10, 2)), settings)
    assert net.synapses is None
    assert "recurrent" not in [obj.name for obj in net.network.objects]


def test_rate_network_matches_numpy_integration():
    spec = batch([rate_config(seed=4, input_bias=0.1)])
    n_steps = 600
    stimulus = np.random.default_rng(2).standard_normal((n_steps, 2))
    settings = SimulationSettings(dt=DT, readout_dt=DT, features=("rate",))
    features = simulate(spec, stimulus, settings)
    expected = numpy_rate_network(spec, stimulus, n_steps, float(DT))
    assert np.abs(expected).max() > 0.2  # the network is driven, not silent
    np.testing.assert_allclose(features.data["rate"], expected, rtol=1e-6, atol=1e-12)


def test_batched_instances_equal_separate_runs():
    configs = [rate_config(seed=s, cv=cv) for s in range(4) for cv in (0.0, 0.6)]
    stimulus = np.random.default_rng(5).standard_normal((300, 2))
    settings = SimulationSettings(dt=DT, readout_dt=1 * ms)
    together = simulate(batch(configs), stimulus, settings).split()
    assert len(together) == 8
    for config, block in zip(configs, together, strict=True):
        alone = simulate(batch([config]), stimulus, settings)
        np.testing.assert_allclose(
            block["data"]["rate"], alone.data["rate"], rtol=1e-12, atol=1e-15
        )
        assert block["label"]["seed"] == config.seed


def test_spiking_network_fires_and_records_filtered_spikes():
    config = ReservoirConfig(
        model=lif_model(),
        n_neurons=50,
        n_inputs=1,
        heterogeneity={"tau_m": Gamma(mean=20 * ms, cv=0.5, lower=DT)},
        connectivity=Connectivity(p=0.1, gain=1 * mV),
        input_gain=50 * pA,
        input_bias=230 * pA,
        seed=1,
    )
    settings = SimulationSettings(dt=DT, readout_dt=1 * ms, features=("spikes", "v"))
    stimulus = np.random.default_rng(0).standard_normal((5000, 1))
    features = simulate(batch([config]), stimulus, settings)
    rate = features.spike_counts.sum() / 50 / 0.5
    assert 5 < rate < 200
    # filtered spike trains integrate to the spike count (Hz * s)
    total = features.data["spikes"].sum() * 1e-3
    assert total == pytest.approx(features.spike_counts.sum(), rel=0.05)
    # v crosses V_th only by what synapses add between threshold and the next sample
    assert -0.052 < features.data["v"].max() < -0.045


def test_bad_network_input():
    with pytest.raises(UnitError, match="input_gain"):
        ReservoirConfig(model=lif_model(), input_gain=1.0)
    with pytest.raises(ParameterError, match="heterogeneity names 'tau_q'"):
        rate_config(cv=0).__class__(model=rate_model(), heterogeneity={"tau_q": 1 * ms})
    with pytest.raises(ParameterError, match="p=1.5"):
        Connectivity(p=1.5)
    with pytest.raises(SpecError, match="n_inputs"):
        batch([rate_config(k=1), rate_config(k=2)])
    with pytest.raises(ParameterError, match="whole multiple"):
        SimulationSettings(dt=DT, readout_dt=0.25 * ms)
    with pytest.raises(ParameterError, match="feature 'spikes'"):
        BrianNetwork(
            batch([rate_config()]),
            np.zeros((5, 2)),
            SimulationSettings(features=("spikes",)),
        )
    with pytest.raises(ParameterError, match="stimulus has shape"):
        BrianNetwork(batch([rate_config()]), np.zeros((5, 3)), SimulationSettings())
