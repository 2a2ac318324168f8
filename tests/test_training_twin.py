"""The differentiable twin against Brian2: same equations, same numbers."""

import brian2
import numpy as np
import pytest
from brian2 import ms, mV, nA

from hetbrian import models, network
from hetbrian.errors import ParameterError, SpecError
from hetbrian.heterogeneity import Gamma
from hetbrian.training import DifferentiableTwin, Surrogate


def _rate_spec(transfer="tanh", n=8, instances=2):
    model = models.rate_model(transfer)
    configs = [
        network.ReservoirConfig(
            model,
            n_neurons=n,
            n_inputs=2,
            heterogeneity={"tau": Gamma(mean=10 * ms, cv=0.5, lower=1 * ms)},
            connectivity=network.Connectivity(p=0.4, gain=1.3),
            input_bias=0.2,
            seed=seed,
        )
        for seed in range(instances)
    ]
    return network.batch(configs)


@pytest.mark.parametrize("transfer", ["tanh", "sigmoid"])
def test_rate_forward_equals_brian2(transfer):
    spec = _rate_spec(transfer)
    settings = network.SimulationSettings(
        dt=0.5 * ms, readout_dt=1 * ms, features=("rate", "v")
    )
    u = np.random.default_rng(1).standard_normal((120, 2))
    twin = DifferentiableTwin(spec, settings, stimulus_dt=1 * ms)
    run = twin.forward(u)
    brian = network.simulate(spec, u, settings, stimulus_dt=1 * ms).matrix()
    assert run.features.shape == (1, *brian.shape)
    assert np.abs(brian).max() > 0.1  # the network is driven
    np.testing.assert_allclose(run.features[0], brian, rtol=1e-6, atol=1e-12)
    # the twin was derived from Brian2's own update code
    assert "stimulus(t, 0)" in twin.update_code
    assert twin.parameter_names == ["I_bias", "tau", "w_in_0", "w_in_1"]


def _spike_config(kind):
    if kind == "lif":
        model = models.lif_model()
        gain = 4 * mV
    elif kind == "lif_exp":
        model = models.lif_exp_synapse_model()
        gain = 0.3 * nA
    else:
        model = models.adaptive_lif_model()
        gain = 4 * mV
    config = network.ReservoirConfig(
        model,
        n_neurons=12,
        n_inputs=1,
        heterogeneity={"tau_m": Gamma(mean=20 * ms, cv=0.5, lower=2 * ms)},
        connectivity=network.Connectivity(p=0.3, gain=gain),
        input_gain=0.15 * nA,
        input_bias=0.3 * nA,
        seed=4,
    )
    return network.batch([config])


@pytest.mark.parametrize("kind", ["lif", "lif_exp", "adaptive_lif"])
def test_spiking_forward_gives_brian2_spike_trains(kind):
    spec = _spike_config(kind)
    settings = network.SimulationSettings(
        dt=0.1 * ms, readout_dt=0.1 * ms, features=("spikes", "v")
    )
    u = np.random.default_rng(2).standard_normal((500, 1))
    run = DifferentiableTwin(spec, settings).forward(u)
    net = network.build_brian2(spec, u, settings)
    monitor = brian2.SpikeMonitor(net.group)
    net.network.add(monitor)
    net.run()
    b_i = np.asarray(monitor.i)
    b_t = np.round(np.asarray(monitor.t) / 1e-4).astype(int)
    order = np.lexsort((b_t, b_i))
    t_i, t_t = np.nonzero(run.spikes[0].T)
    assert len(b_i) >= 15  # enough spikes, and some inside refractory windows
    np.testing.assert_array_equal(t_i, b_i[order])
    np.testing.assert_array_equal(t_t, b_t[order])
    np.testing.assert_allclose(run.features[0], net.features().matrix(), atol=1e-9)


def test_twin_rejects_what_it_cannot_follow():
    config = network.ReservoirConfig(models.rate_model(), n_neurons=4, noise=0.1)
    settings = network.SimulationSettings(dt=1 * ms, readout_dt=1 * ms)
    with pytest.raises(SpecError, match="noise"):
        DifferentiableTwin(network.batch([config]), settings)
    with pytest.raises(ParameterError, match="kind"):
        Surrogate(kind="step")
    spec = _rate_spec(instances=1)
    with pytest.raises(ParameterError, match="stimulus_dt"):
        DifferentiableTwin(spec, settings, stimulus_dt=1.5 * ms)
    with pytest.raises(ParameterError, match="stimulus has shape"):
        DifferentiableTwin(spec, settings).forward(np.zeros((10, 3)))


def test_write_back_changes_only_the_named_values():
    spec = _rate_spec(instances=1)
    settings = network.SimulationSettings(dt=1 * ms, readout_dt=1 * ms)
    twin = DifferentiableTwin(spec, settings)
    tau = np.linspace(5e-3, 30e-3, spec.n_neurons)
    w0 = np.arange(spec.n_neurons, dtype=float)
    new = twin.write_back({"tau": tau, "w_in_0": w0})
    np.testing.assert_array_equal(new.parameters["tau"], tau)
    np.testing.assert_array_equal(new.input_weights[:, 0], w0)
    np.testing.assert_array_equal(new.input_weights[:, 1], spec.input_weights[:, 1])
    assert new.structure() == spec.structure()
    with pytest.raises(ParameterError, match="shape"):
        twin.write_back({"tau": tau[:3]})


def test_network_without_synapses_keeps_the_summed_variable_at_zero():
    config = network.ReservoirConfig(
        models.rate_model(), n_neurons=5, connectivity=network.Connectivity(gain=0)
    )
    spec = network.batch([config])
    assert not spec.has_synapses
    settings = network.SimulationSettings(dt=1 * ms, readout_dt=1 * ms)
    u = np.random.default_rng(3).standard_normal((50, 1))
    run = DifferentiableTwin(spec, settings).forward(u)
    brian = network.simulate(spec, u, settings).matrix()
    np.testing.assert_allclose(run.features[0], brian, rtol=1e-6, atol=1e-12)
