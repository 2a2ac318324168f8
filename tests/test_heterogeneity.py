"""Heterogeneity profiles: moments, the lower bound, and bad input."""

import math

import numpy as np
import pytest
import scipy.stats
from brian2 import Hz, ms, mV

from hetbrian.errors import ParameterError, UnitError
from hetbrian.heterogeneity import (
    FAMILIES,
    Empirical,
    Gamma,
    Homogeneous,
    LogNormal,
    TruncatedNormal,
    Uniform,
    describe,
    make_profile,
)

N = 200_000
MEAN = 20 * ms
LOWER = 0.1 * ms

# family, cv, skewness of the distribution (before any effect of the bound)
CASES = [
    ("lognormal", 0.3, 0.3**3 + 3 * 0.3),
    ("lognormal", 0.8, 0.8**3 + 3 * 0.8),
    ("gamma", 0.3, 0.6),
    ("gamma", 0.8, 1.6),
    ("uniform", 0.3, 0.0),
    ("uniform", 0.5, 0.0),
    ("truncated_normal", 0.2, 0.0),
    ("truncated_normal", 0.4, 0.0),
]


@pytest.mark.parametrize("family,cv,skew", CASES)
def test_mean_cv_and_skewness(family, cv, skew):
    profile = make_profile(family, mean=MEAN, cv=cv, lower=LOWER)
    values = profile.sample(N, np.random.default_rng(7))
    stats = describe(values)
    # standard errors at this n are < 0.3 % (mean) and < 1 % (cv); 3 % catches a
    # wrong parametrization (for instance sigma = cv for the lognormal) by far
    assert abs(float(stats["mean"] / MEAN) - 1) < 0.01
    assert abs(stats["cv"] / cv - 1) < 0.03
    assert stats["skewness"] == pytest.approx(skew, abs=0.08 + 0.1 * skew)
    assert profile.skewness == pytest.approx(skew, abs=0.01)
    assert values.dimensions == ms.dimensions


def test_one_cv_is_one_spread_in_every_family():
    stds = []
    for family in ("lognormal", "gamma", "uniform", "truncated_normal"):
        values = make_profile(family, mean=MEAN, cv=0.3).sample(N, 1)
        stds.append(float(np.std(values) / ms))
    assert np.allclose(stds, 6.0, rtol=0.03)


def test_homogeneous_and_cv_zero():
    values = Homogeneous(mean=MEAN).sample(10, 0)
    assert np.all(values == MEAN)
    assert isinstance(make_profile("gamma", mean=MEAN, cv=0), Homogeneous)


def test_lower_bound_resamples_without_a_spike_at_the_bound():
    lower = 5 * ms
    profile = Gamma(mean=MEAN, cv=0.5, lower=lower)
    values = np.asarray(profile.sample(N, 3) / ms)
    assert values.min() > 5.0
    # redrawing, not clipping: no mass piles up just above the bound
    near = np.mean(values < 5.05)
    density = scipy.stats.gamma(a=4, scale=5).pdf(5.05) * 0.05
    assert near < 3 * density
    moments = profile.bounded_moments()
    assert 0 < moments["rejected"] < 0.1
    assert float(np.mean(values)) == pytest.approx(
        float(moments["mean"] / ms), rel=0.01
    )


def test_same_rng_same_ranks_across_families():
    a = LogNormal(mean=MEAN, cv=0.5).sample(100, 11)
    b = Gamma(mean=MEAN, cv=0.2).sample(100, 11)
    assert np.array_equal(np.argsort(a), np.argsort(b))


def test_empirical_hits_mean_and_cv():
    measured = np.random.default_rng(0).lognormal(3.0, 0.6, 400) * ms
    profile = Empirical(values=measured, mean=MEAN, cv=0.35)
    values = profile.sample(N, 2)
    stats = describe(values)
    assert abs(float(stats["mean"] / MEAN) - 1) < 0.01
    assert abs(stats["cv"] / 0.35 - 1) < 0.03
    assert stats["skewness"] > 0.5  # the right skew of the data survives the mapping
    natural = Empirical(values=measured)
    assert natural.exponent == pytest.approx(1.0)
    drawn = np.asarray(natural.sample(1000, 0) / ms)
    distance = np.abs(drawn[:, None] - np.asarray(measured / ms)[None, :]).min(axis=1)
    assert distance.max() < 1e-9  # resampled measured values, nothing in between


def test_families_registry():
    assert set(FAMILIES) == {
        "homogeneous",
        "lognormal",
        "gamma",
        "uniform",
        "truncated_normal",
        "empirical",
    }


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        ({"mean": -20 * ms, "cv": 0.3}, ParameterError, "mean=-20."),
        ({"mean": 20.0, "cv": 0.3}, UnitError, "no physical unit"),
        ({"mean": MEAN, "cv": -0.1}, ParameterError, "cv=-0.1"),
        ({"mean": MEAN, "cv": 0.3, "lower": 2 * mV}, UnitError, "lower="),
        ({"mean": MEAN, "cv": 0.3, "lower": 30 * ms}, ParameterError, "below mean"),
    ],
)
def test_bad_input(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(".", r"\.")):
        LogNormal(**kwargs)


def test_unreachable_cv_names_the_bound():
    with pytest.raises(ParameterError, match="cannot be reached by the gamma family"):
        Gamma(mean=MEAN, cv=2.0, lower=LOWER)
    with pytest.raises(ParameterError, match=r"expected cv < 0\.57"):
        Uniform(mean=MEAN, cv=0.6, lower=LOWER)
    with pytest.raises(ParameterError, match=r"expected cv < 0\.43"):
        TruncatedNormal(mean=MEAN, cv=0.5, lower=LOWER)
    with pytest.raises(ParameterError, match="family='weibull' is unknown"):
        make_profile("weibull", mean=MEAN, cv=0.3)


def test_reachable_at_the_edge():
    largest = (20 - 0.1) / (math.sqrt(3) * 20)
    values = Uniform(mean=MEAN, cv=largest - 1e-3, lower=LOWER).sample(1000, 0)
    assert float(np.min(values / ms)) > 0.1


def test_other_dimensions_and_plain_data():
    rates = Gamma(mean=5 * Hz, cv=0.4).sample(50, 0)
    assert rates.dimensions == Hz.dimensions
    data = LogNormal(mean=MEAN, cv=0.5, lower=LOWER).to_dict()
    assert data["family"] == "lognormal" and data["cv"] == 0.5
