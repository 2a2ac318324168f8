"""Stimulus generators: statistics, time scale, boundedness, seeding and bad input."""

import math

import numpy as np
import pytest

from hetbrian.errors import DataError, ParameterError, UnitError
from hetbrian.stimuli import (
    BandLimitedNoise,
    Henon,
    Logistic,
    Lorenz,
    MackeyGlass,
    MultiSine,
    NarmaInput,
    OrnsteinUhlenbeck,
    Rossler,
    Sinusoids,
    Stimulus,
    readout_stride,
    subsample,
)

GENERATORS = [
    Sinusoids([40.0, 97.0]),
    MultiSine([40.0, 97.0, 231.0]),
    BandLimitedNoise(shortest_period=10.0),
    OrnsteinUhlenbeck(tau=15.0, n_components=2),
    MackeyGlass(steps_per_unit=1.0),
    Lorenz(steps_per_unit=20.0),
    Rossler(steps_per_unit=5.0),
    Henon(steps_per_iterate=2),
    Logistic(),
    NarmaInput(steps_per_iterate=3),
]


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: type(g).__name__)
def test_standardized_seeded_and_shaped(generator):
    u = generator.sample(3000, rng=7)
    assert u.shape == (3000, generator.n_components)
    assert u.flags.c_contiguous and u.dtype == np.float64
    np.testing.assert_allclose(u.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(u.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(u, generator.sample(3000, np.random.default_rng(7)))
    if not (isinstance(generator, Sinusoids) and not generator.random_phase):
        assert not np.allclose(u, generator.sample(3000, rng=8))


def test_sinusoid_period_and_phase():
    u = Sinusoids([50.0], random_phase=False).sample(5000, rng=0)[:, 0]
    spectrum = np.abs(np.fft.rfft(u))
    assert np.argmax(spectrum) == 5000 // 50
    assert u[0] == pytest.approx(u[50], abs=1e-12)  # phase 0, exact period


def test_ou_autocorrelation_matches_exp_decay():
    u = OrnsteinUhlenbeck(tau=10.0).sample(40_000, rng=3)[:, 0]
    for lag in (5, 10, 20):
        rho = np.corrcoef(u[:-lag], u[lag:])[0, 1]
        assert rho == pytest.approx(math.exp(-lag / 10.0), abs=0.04)


def test_band_limited_noise_has_no_power_outside_band():
    u = BandLimitedNoise(shortest_period=8.0, longest_period=100.0).sample(4096, 0)
    f = np.fft.rfftfreq(4096)
    power = np.abs(np.fft.rfft(u[:, 0])) ** 2
    inside = (f >= 1 / 100) & (f <= 1 / 8)
    assert power[~inside].sum() < 1e-20 * power[inside].sum()


def test_independent_components_are_uncorrelated():
    u = OrnsteinUhlenbeck(tau=2.0, n_components=3).sample(20_000, rng=1)
    c = np.corrcoef(u.T)
    assert np.abs(c[np.triu_indices(3, 1)]).max() < 0.05


@pytest.mark.parametrize(
    "generator, low, high",
    [
        (Lorenz(steps_per_unit=20.0), np.array([-25, -35, 0]), np.array([25, 35, 55])),
        (Rossler(steps_per_unit=5.0), np.array([-15, -15, 0]), np.array([15, 15, 30])),
        (MackeyGlass(steps_per_unit=1.0), np.array([0.1]), np.array([1.6])),
        (Henon(), np.array([-1.5, -0.5]), np.array([1.5, 0.5])),
        (Logistic(), np.array([0.0]), np.array([1.0])),
    ],
    ids=["lorenz", "rossler", "mackey_glass", "henon", "logistic"],
)
def test_chaotic_generators_stay_on_their_attractor(generator, low, high):
    raw = generator._raw(4000, np.random.default_rng(2))
    assert np.all(np.isfinite(raw))
    assert np.all(raw >= low) and np.all(raw <= high)
    assert np.all(raw.std(axis=0) > 0.05 * (high - low))  # not collapsed on a point


def test_flow_time_scale_counts_steps():
    # 4 time units: short enough that chaos does not amplify round-off past 1e-5
    fine = Lorenz(steps_per_unit=40.0)._raw(161, np.random.default_rng(5))
    coarse = Lorenz(steps_per_unit=20.0)._raw(81, np.random.default_rng(5))
    np.testing.assert_allclose(fine[::2], coarse, atol=1e-5)
    assert np.abs(np.diff(coarse, axis=0)).max() > 0.1  # it does move


def test_map_sample_and_hold():
    u = Henon(steps_per_iterate=4).sample(403, rng=0)
    blocks = u[:400].reshape(100, 4, 2)
    assert np.all(blocks == blocks[:, :1])
    assert np.all(u[400:] == u[400])
    assert not np.allclose(blocks[0, 0], blocks[1, 0])


def test_mackey_glass_scheme_is_second_order():
    def run(max_step):
        mg = MackeyGlass(1.0, transient=0.0, max_step=max_step)
        return mg._raw(100, np.random.default_rng(9))

    reference = run(0.0125)
    errors = [np.abs(run(h) - reference).max() for h in (1.0, 0.5, 0.25)]
    assert errors[2] < 2e-4
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 3.0 < coarse / fine < 5.0


def test_stimulus_stack_concatenates_members_with_spawned_rngs():
    members = [OrnsteinUhlenbeck(5.0), OrnsteinUhlenbeck(9.0), Henon()]
    stim = Stimulus(members)
    assert stim.component_names == ("ou.0", "ou#2.0", "henon.x", "henon.y")
    u = stim.sample(500, rng=11)
    children = np.random.default_rng(11).spawn(3)
    expected = np.concatenate(
        [g.sample(500, r) for g, r in zip(members, children, strict=True)], axis=1
    )
    np.testing.assert_array_equal(u, expected)
    first = Stimulus(members[:1]).sample(500, rng=11)
    np.testing.assert_array_equal(u[:, :1], first)  # appending keeps earlier draws


def test_dense_and_readout_sampling():
    stim = Stimulus(OrnsteinUhlenbeck(5.0))
    values = stim.dense(duration=0.2, dt=1e-4, rng=0)
    assert values.shape == (2000, 1) and values.flags.c_contiguous
    assert readout_stride(1e-3, 1e-4) == 10
    np.testing.assert_array_equal(subsample(values, 10), values[::10])
    with pytest.raises(ParameterError, match="whole multiple"):
        readout_stride(1.5e-4, 1e-4)
    with pytest.raises(ParameterError, match="whole number"):
        stim.dense(duration=0.20005, dt=1e-4, rng=0)


def test_dense_accepts_brian2_times():
    brian2 = pytest.importorskip("brian2")
    ms = brian2.ms
    stim = Stimulus(OrnsteinUhlenbeck(5.0))
    assert stim.dense(50 * ms, 0.1 * ms, rng=0).shape == (500, 1)
    assert readout_stride(1 * ms, 0.1 * ms) == 10
    with pytest.raises(UnitError):
        stim.dense(50 * brian2.mV, 0.1 * ms, rng=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Sinusoids([1.0]),
        lambda: Sinusoids([]),
        lambda: OrnsteinUhlenbeck(tau=0.0),
        lambda: OrnsteinUhlenbeck(tau=3.0, n_components=0),
        lambda: Lorenz(steps_per_unit=-1.0),
        lambda: Lorenz(steps_per_unit=10.0, components=("w",)),
        lambda: Henon(steps_per_iterate=1.5),
        lambda: Logistic(r=4.5),
        lambda: NarmaInput(low=1.0, high=0.0),
        lambda: BandLimitedNoise(shortest_period=10.0, longest_period=5.0),
        lambda: Stimulus([]),
        lambda: Stimulus([object()]),
    ],
)
def test_bad_parameters_raise(make):
    with pytest.raises(ParameterError):
        make()


def test_bad_sampling_raises():
    g = OrnsteinUhlenbeck(3.0)
    with pytest.raises(ParameterError, match="rng"):
        g.sample(100, rng=None)
    with pytest.raises(ParameterError, match="n_steps"):
        g.sample(1, rng=0)
    with pytest.raises(DataError, match="too short"):
        BandLimitedNoise(shortest_period=20.0, longest_period=30.0).sample(16, 0)
    with pytest.raises(DataError, match="constant"):
        Logistic(r=0.5).sample(100, rng=0)  # collapses onto the fixed point 0
