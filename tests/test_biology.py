"""Tests of hetbrian.biology: loading, fits, profiles, joint draws, distances, plots."""

import doctest
import io
import json
import logging
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from brian2 import ms, mV, second

from hetbrian import biology
from hetbrian.errors import DataError, ParameterError, UnitError
from hetbrian.heterogeneity import Empirical, LogNormal, describe

REPO = Path(__file__).resolve().parents[1]
ALLEN_DIR = Path(
    os.environ.get(
        "HETBRIAN_ALLEN_DATA", REPO.parent / "shared" / "data" / "allen_cell_types"
    )
)
needs_allen = pytest.mark.skipif(
    not (ALLEN_DIR / "mouse_cell_metrics.csv").is_file(),
    reason=f"Allen reference tables not found in {ALLEN_DIR} "
    "(set HETBRIAN_ALLEN_DATA to their folder)",
)

#: Generating distributions for the synthetic tests, all with mean near 20 ms.
GENERATORS = {
    "lognormal": scipy.stats.lognorm(0.47, scale=18),
    "gamma": scipy.stats.gamma(4.0, scale=5.0),
    "weibull": scipy.stats.weibull_min(2.2, scale=22.0),
    "inverse_gaussian": scipy.stats.invgauss(0.25, scale=80.0),
    "normal": scipy.stats.norm(40.0, 8.0),
}


def write_csv(path, text):
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


# -- fits on synthetic samples -----------------------------------------------------
#: Generating parameters (shape, loc, scale) of GENERATORS, as the fit reports them.
TRUE_PARAMETERS = {
    "lognormal": (0.47, 0.0, 18.0),
    "gamma": (4.0, 0.0, 5.0),
    "weibull": (2.2, 0.0, 22.0),
    "inverse_gaussian": (0.25, 0.0, 80.0),
    "normal": (None, 40.0, 8.0),
}


@pytest.mark.parametrize("family", list(GENERATORS))
def test_fit_recovers_generating_parameters(family):
    dist = GENERATORS[family]
    x = dist.rvs(20_000, random_state=3) * ms
    fit = biology.fit_distribution(x, family)
    shape, loc, scale = TRUE_PARAMETERS[family]
    if shape is None:
        assert fit.shape is None
    else:
        assert fit.shape == pytest.approx(shape, rel=0.04)
    assert fit.loc == pytest.approx(loc, rel=0.01)
    assert fit.scale == pytest.approx(scale, rel=0.04)
    assert float(fit.mean / ms) == pytest.approx(dist.mean(), rel=0.02)
    assert fit.cv == pytest.approx(dist.std() / dist.mean(), rel=0.04)
    assert fit.unit is ms and fit.n == 20_000
    assert fit.aic == pytest.approx(4 - 2 * fit.log_likelihood)


def test_weibull_mle_matches_scipy():
    x = GENERATORS["weibull"].rvs(500, random_state=1)
    c, _, lam = biology._weibull_mle(x)
    c_ref, _, lam_ref = scipy.stats.weibull_min.fit(x, floc=0)
    assert c == pytest.approx(c_ref, rel=1e-4)
    assert lam == pytest.approx(lam_ref, rel=1e-4)


@pytest.mark.parametrize("family", list(GENERATORS))
def test_ranking_picks_generating_family(family):
    x = GENERATORS[family].rvs(20_000, random_state=11) * ms
    ranked = biology.fit_families(x)
    assert ranked[0].family == family
    assert [f.aic_rank for f in ranked] == [1, 2, 3, 4, 5]
    assert ranked[0].delta_aic == 0 and ranked[1].delta_aic > 2
    assert sum(f.aic_weight for f in ranked) == pytest.approx(1)
    assert sorted(f.ks_rank for f in ranked) == [1, 2, 3, 4, 5]


def test_bootstrap_interval_covers_truth_and_shrinks():
    dist = GENERATORS["gamma"]
    small = biology.fit_distribution(
        dist.rvs(400, random_state=5) * ms, "gamma", n_boot=300, rng=0
    )
    large = biology.fit_distribution(
        dist.rvs(1600, random_state=6) * ms, "gamma", n_boot=300, rng=0
    )
    for fit in (small, large):
        lo, hi = fit.ci["mean"]
        assert lo < 20.0 < hi
        lo, hi = fit.ci["shape"]
        assert lo < fit.shape < hi
        assert set(fit.ci) == {"shape", "scale", "mean", "cv"}
    width = {k: np.diff(f.ci["mean"])[0] for k, f in (("s", small), ("l", large))}
    # four times the cells: about half the width
    assert 0.35 < width["l"] / width["s"] < 0.7


def test_fit_rejects_bad_samples():
    with pytest.raises(UnitError, match="no physical unit"):
        biology.fit_distribution(np.array([1.0, 2.0, 3.0]), "gamma")
    with pytest.raises(DataError, match="non-finite"):
        biology.fit_distribution(np.array([10.0, np.nan, 12.0, 14.0]) * ms, "gamma")
    with pytest.raises(DataError, match="positive values"):
        biology.fit_distribution(np.array([10.0, -1.0, 12.0, 14.0]) * ms, "lognormal")
    with pytest.raises(ParameterError, match="family='beta'"):
        biology.fit_distribution(np.array([10.0, 11.0, 12.0]) * ms, "beta")
    # a symmetric family accepts values of either sign
    fit = biology.fit_distribution(
        np.array([-70.0, -65.0, -60.0, -72.0]) * mV, "normal"
    )
    assert fit.unit is mV and float(fit.mean / mV) == pytest.approx(-66.75)


# -- loading tables --------------------------------------------------------------------
GOOD_TABLE = """
dendrite_type,rheobase,input_resistance,tau
spiny,100,150,20.5
aspiny,200,120,8.0
spiny,90,180,25.0
aspiny,250,100,6.5
"""


def test_load_table_maps_columns_and_units(tmp_path):
    table = biology.load_cell_table(write_csv(tmp_path / "t.csv", GOOD_TABLE), "mouse")
    assert len(table) == 4 and table.classes == ["aspiny", "spiny"]
    assert table.species_names == ["mouse"]
    tau = table.values("membrane_tau", cell_class="spiny")
    assert np.allclose(tau / ms, [20.5, 25.0])
    assert np.allclose(
        table.values("rheobase") / biology.FEATURES["rheobase"].unit,
        [100, 200, 90, 250],
    )
    with pytest.raises(ParameterError, match="cell_class='pyramidal'"):
        table.values(cell_class="pyramidal")
    with pytest.raises(DataError, match="resting_potential"):
        table.values("resting_potential")


def test_missing_tau_column_raises(tmp_path):
    path = write_csv(tmp_path / "t.csv", "dendrite_type,vrest\nspiny,-70\naspiny,-65")
    with pytest.raises(DataError, match="no membrane time constant column.*'tau'"):
        biology.load_cell_table(path)


def test_non_numeric_value_raises_or_is_logged(tmp_path, caplog):
    text = GOOD_TABLE.replace("25.0", "25 ms")
    path = write_csv(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match=r"column 'tau'.*line 4: '25 ms'"):
        biology.load_cell_table(path)
    with caplog.at_level(logging.WARNING, logger="hetbrian.biology"):
        table = biology.load_cell_table(path, strict=False)
    assert len(table) == 3
    assert "dropped 1 of 4 rows" in caplog.text and "1 non-numeric" in caplog.text


def test_negative_and_missing_tau_are_dropped_and_logged(tmp_path, caplog):
    rows = ["dendrite_type,tau,vrest"] + [f"spiny,{20 + i},-70" for i in range(20)]
    rows[3] = "spiny,-5.0,-70"
    rows[5] = "aspiny,0,-70"
    rows[7] = "spiny,,-70"
    rows[9] = "spiny,18,+80"  # resting potential out of range: missing, row kept
    path = write_csv(tmp_path / "t.csv", "\n".join(rows))
    with caplog.at_level(logging.WARNING, logger="hetbrian.biology"):
        table = biology.load_cell_table(path)
    assert len(table) == 17
    assert "dropped 3 of 20 rows" in caplog.text
    assert "1 missing" in caplog.text and "2 outside (0, 1000) ms" in caplog.text
    assert "resting_potential set to missing (1 outside" in caplog.text
    assert float(table.values().min() / ms) > 0
    assert table.values("resting_potential").size == 16
    # the fit sees only the valid rows: it equals the fit of those rows alone
    fit = biology.fit_distribution(table.values(), "lognormal")
    clean = np.array([20 + i for i in range(20) if i not in (2, 4, 6, 8)] + [18.0])
    ref = biology.fit_distribution(clean * ms, "lognormal")
    assert fit.scale == pytest.approx(ref.scale) and fit.n == ref.n == 17


def test_unit_of_a_column_is_checked(tmp_path):
    text = "tau\n0.020\n0.015\n0.031\n"  # seconds, not ms
    path = write_csv(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match="median 0.02 ms.*another unit"):
        biology.load_cell_table(path)
    table = biology.load_cell_table(path, units={"membrane_tau": second})
    assert np.allclose(table.values() / ms, [20.0, 15.0, 31.0])
    with pytest.raises(UnitError, match="units\\['membrane_tau'\\]"):
        biology.load_cell_table(path, units={"membrane_tau": mV})


def test_malformed_layout_raises(tmp_path):
    with pytest.raises(DataError, match="line 3 has 1 fields"):
        biology.load_cell_table(write_csv(tmp_path / "a.csv", "tau,vrest\n20,-70\n21"))
    with pytest.raises(DataError, match="no rows"):
        biology.load_cell_table(write_csv(tmp_path / "b.csv", "tau,vrest"))
    with pytest.raises(DataError, match="no row with a valid"):
        biology.load_cell_table(write_csv(tmp_path / "c.csv", "tau\n-1\n-2\n-3"))
    with pytest.raises(DataError, match="is not a file"):
        biology.load_cell_table(tmp_path / "absent.csv")


# -- the shared Allen tables -------------------------------------------------------
@needs_allen
@pytest.mark.parametrize(
    "name, species",
    [
        ("mouse_cell_metrics.csv", "mouse"),
        ("human_cell_metrics.csv", "human"),
        ("ephys_features.csv", "mixed"),
    ],
)
def test_allen_tau_is_right_skewed_and_not_normal(name, species):
    table = biology.load_cell_table(ALLEN_DIR / name, species=species)
    tau = table.values()
    stats = describe(tau)
    assert stats["skewness"] > 0.5
    assert stats["mean"] > np.median(tau)
    ranked = {f.family: f for f in biology.fit_families(tau)}
    skewed = min(ranked["lognormal"].aic, ranked["gamma"].aic)
    assert skewed < ranked["normal"].aic - 10
    assert ranked["normal"].aic_rank == 5


@needs_allen
def test_allen_spiny_mouse_cells():
    table = biology.load_cell_table(ALLEN_DIR / "mouse_cell_metrics.csv", "mouse")
    tau = table.values(cell_class="spiny", species="mouse")
    ranked = {f.family: f for f in biology.fit_families(tau)}
    assert min(ranked["lognormal"].aic, ranked["gamma"].aic) < ranked["normal"].aic
    assert scipy.stats.skew(np.asarray(tau)) > 0


@needs_allen
def test_shipped_table_is_reproduced_from_the_allen_tables():
    shipped = {
        (f.species, f.cell_class, f.family): f
        for f in biology.read_fit_table(REPO / "data" / "allen_tau_fits.csv")
    }
    table = biology.load_cell_table(ALLEN_DIR / "mouse_cell_metrics.csv", "mouse")
    refit = biology.fit_cell_classes(table, n_boot=0)
    assert {k for k in shipped if k[0] == "mouse"} == {
        (*key, f.family) for key, group in refit.items() for f in group
    }
    for key, group in refit.items():
        for f in group:
            ref = shipped[(*key, f.family)]
            assert f.aic_rank == ref.aic_rank
            assert f.cv == pytest.approx(ref.cv, rel=1e-4)
            assert float(f.mean / ms) == pytest.approx(float(ref.mean / ms), rel=1e-4)
    package_copy = (REPO / "hetbrian" / "data" / "allen_tau_fits.csv").read_bytes()
    assert package_copy == (REPO / "data" / "allen_tau_fits.csv").read_bytes()


@needs_allen
def test_joint_draws_keep_measured_rank_correlation():
    table = biology.load_cell_table(ALLEN_DIR / "ephys_features.csv", "mixed")
    joint = biology.fit_joint(table)
    assert joint.features == (
        "membrane_tau",
        "resting_potential",
        "threshold_potential",
    )
    draws = joint.sample(20_000, np.random.default_rng(2))
    data = np.column_stack([table.features[k] for k in joint.features])
    measured = scipy.stats.spearmanr(data).statistic
    sampled = scipy.stats.spearmanr(
        np.column_stack([draws[k] for k in draws])
    ).statistic
    assert np.abs(sampled - measured).max() < 0.03
    assert np.abs(measured[np.triu_indices(3, 1)]).max() > 0.1  # something to keep
    ks = scipy.stats.ks_2samp(np.asarray(draws["membrane_tau"] / ms), data[:, 0])
    assert ks.statistic < 0.03


# -- joint sampling on synthetic cells -----------------------------------------------
def synthetic_table(rho=0.6, n=3000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], n)
    tau = 18 * np.exp(0.45 * z[:, 0])
    vrest = -70 + 4 * z[:, 1]
    features = {"membrane_tau": tau, "resting_potential": vrest}
    return biology.CellTable(
        features=features,
        cell_class=np.array(["spiny"] * n),
        species=np.array(["mouse"] * n),
        source="synthetic",
    )


@pytest.mark.parametrize("marginals", ["empirical", "fitted"])
def test_joint_copula_keeps_correlation_and_marginals(marginals):
    table = synthetic_table()
    joint = biology.fit_joint(
        table, ("membrane_tau", "resting_potential"), marginals=marginals
    )
    expected = 6 / np.pi * np.arcsin(0.6 / 2)
    assert joint.rank_correlation()[0, 1] == pytest.approx(expected, abs=0.03)
    draws = joint.sample(20_000, 4)
    assert draws["resting_potential"].has_same_dimensions(mV)
    rho = scipy.stats.spearmanr(draws["membrane_tau"], draws["resting_potential"])
    assert rho.statistic == pytest.approx(expected, abs=0.03)
    tau = np.asarray(draws["membrane_tau"] / ms)
    assert scipy.stats.ks_2samp(tau, table.features["membrane_tau"]).statistic < 0.03
    if marginals == "fitted":
        assert joint.marginals[0].family != "normal"  # positive, right-skewed
        assert joint.marginals[1].family == "normal"


def test_joint_rejects_bad_requests(tmp_path, caplog):
    table = synthetic_table(n=30)
    with pytest.raises(ParameterError, match="at least two different"):
        biology.fit_joint(table, ("membrane_tau",))
    with pytest.raises(DataError, match="'threshold_potential' is not in the table"):
        biology.fit_joint(table, ("membrane_tau", "threshold_potential"))
    table.features["resting_potential"][:5] = np.nan
    with caplog.at_level(logging.WARNING, logger="hetbrian.biology"):
        joint = biology.fit_joint(table, ("membrane_tau", "resting_potential"))
    assert joint.n == 25 and "5 of 30 cells" in caplog.text


# -- profiles from the shipped table ---------------------------------------------
def test_shipped_table_reads_and_holds_spiny_mouse():
    fits = biology.fitted_table()
    spiny = [f for f in fits if (f.species, f.cell_class) == ("mouse", "spiny")]
    assert sorted(f.family for f in spiny) == sorted(biology.FIT_FAMILIES)
    assert all(f.feature == "membrane_tau" and f.unit is ms for f in spiny)
    assert min(spiny, key=lambda f: f.aic).aic_rank == 1
    for f in spiny:
        lo, hi = f.ci["mean"]
        assert lo < float(f.mean / ms) < hi


def test_measured_lognormal_profile_has_fitted_or_target_moments():
    fit = next(
        f
        for f in biology.fitted_table()
        if (f.species, f.cell_class, f.family) == ("mouse", "spiny", "lognormal")
    )
    profile = biology.measured_profile("lognormal", cell_class="spiny", species="mouse")
    assert isinstance(profile, LogNormal)
    assert float(profile.mean / ms) == pytest.approx(float(fit.mean / ms))
    assert profile.cv == pytest.approx(fit.cv)
    target = biology.measured_profile(mean=20 * ms, cv=0.8, lower=1 * ms)
    values = target.sample(40_000, np.random.default_rng(0))
    stats = describe(values)
    assert float(stats["mean"] / ms) == pytest.approx(20, rel=0.03)
    assert stats["cv"] == pytest.approx(0.8, rel=0.06)
    assert float(values.min() / ms) > 1
    with pytest.raises(UnitError):
        biology.measured_profile(mean=20.0, cv=0.5)


@pytest.mark.parametrize("cv", [None, 0.3, 1.0])
def test_measured_empirical_profile_resamples_fitted_model(cv):
    profile = biology.measured_profile(
        "empirical", cell_class="all", species="mouse", mean=20 * ms, cv=cv
    )
    assert isinstance(profile, Empirical)
    group = biology.fitted_table()
    best = min(
        (f for f in group if (f.species, f.cell_class) == ("mouse", "all")),
        key=lambda f: f.aic,
    )
    values = profile.sample(50_000, np.random.default_rng(1))
    stats = describe(values)
    assert float(stats["mean"] / ms) == pytest.approx(20, rel=0.02)
    # default cv: that of the fitted model's quantiles, close to the fit's own cv
    expected_cv = best.cv if cv is None else cv
    assert stats["cv"] == pytest.approx(expected_cv, rel=0.05)
    assert stats["skewness"] > 0.5


def test_measured_profile_rejects_unknown_groups():
    with pytest.raises(ParameterError, match="no fit for species='rat'"):
        biology.measured_profile(species="rat")
    with pytest.raises(ParameterError, match="kind='uniform'"):
        biology.measured_profile(kind="uniform")
    with pytest.raises(ParameterError, match="family='beta'"):
        biology.measured_profile(kind="empirical", family="beta")


def test_fit_table_round_trip(tmp_path):
    x = GENERATORS["lognormal"].rvs(300, random_state=2) * ms
    fits = biology.fit_families(x, n_boot=20, rng=1, species="mouse", cell_class="x")
    path = biology.write_fit_table(tmp_path / "fits.csv", fits)
    back = biology.read_fit_table(path)
    assert [f.family for f in back] == [f.family for f in fits]
    for a, b in zip(fits, back, strict=True):
        assert b.cv == pytest.approx(a.cv, rel=1e-5)
        assert b.aic == pytest.approx(a.aic, rel=1e-5)
        assert b.ci["mean"] == pytest.approx(a.ci["mean"], rel=1e-5)
        assert (b.shape is None) == (a.shape is None)
    profile = biology.measured_profile(
        "gamma", cell_class="x", species="mouse", fits=back
    )
    assert profile.family == "gamma"
    bad = path.read_text().replace("lognormal,1,", "lognormal,one,", 1)
    (tmp_path / "bad.csv").write_text(bad)
    with pytest.raises(DataError, match="line 2"):
        biology.read_fit_table(tmp_path / "bad.csv")


def test_empirical_profile_of_a_loaded_table(tmp_path):
    table = biology.load_cell_table(write_csv(tmp_path / "t.csv", GOOD_TABLE))
    profile = biology.empirical_profile(table, cell_class="aspiny")
    assert np.allclose(np.sort(profile.mapped_values() / 1e-3), [6.5, 8.0])


# -- distances and the figure ------------------------------------------------------
def test_distance_between_samples():
    rng = np.random.default_rng(0)
    measured = 18 * np.exp(0.45 * rng.standard_normal(4000)) * ms
    scaled = measured * 1.1
    d = biology.distribution_distance(scaled, measured)
    # a common factor is a shift of log values: W1(log) is its logarithm
    assert d.wasserstein_log == pytest.approx(math.log(1.1), rel=1e-9)
    assert float(d.wasserstein / ms) == pytest.approx(
        0.1 * float(np.mean(measured / ms)), rel=1e-9
    )
    # KS does not depend on the scale (any increasing map of both samples)
    ref = scipy.stats.ks_2samp(np.log(np.asarray(scaled)), np.log(np.asarray(measured)))
    assert d.ks == pytest.approx(ref.statistic)
    same = biology.distribution_distance(measured[:2000], measured[2000:])
    assert same.ks < 0.05 < d.ks
    with pytest.raises(UnitError):
        biology.distribution_distance(measured, np.asarray(measured / ms) * mV)


def test_distance_to_a_fit_and_negative_values(caplog):
    fit = biology.fit_distribution(
        GENERATORS["lognormal"].rvs(5000, random_state=1) * ms, "lognormal"
    )
    model = LogNormal(mean=fit.mean, cv=fit.cv).sample(5000, 3)
    near = biology.distribution_distance(model, fit)
    far = biology.distribution_distance(model * 1.5, fit)
    assert near.ks < 0.03 < far.ks
    assert near.wasserstein_log < 0.03
    assert far.wasserstein_log == pytest.approx(math.log(1.5), abs=0.03)
    with caplog.at_level(logging.WARNING, logger="hetbrian.biology"):
        d = biology.distribution_distance(np.array([-1.0, 1, 2]) * mV, [1, 2, 3] * mV)
    assert math.isnan(d.wasserstein_log) and "undefined" in caplog.text


def test_plot_distributions_draws_histograms_and_ecdfs(tmp_path):
    x = GENERATORS["gamma"].rvs(500, random_state=0) * ms
    fit = biology.fit_distribution(x, "gamma")
    fig = biology.plot_distributions(
        x, {"a": x * 1.2, "b": x * 0.8}, fits=(fit,), title="tau"
    )
    hist, ecdf = fig.axes
    assert len(ecdf.get_lines()) == 4  # measured, two models, one fit
    assert hist.get_xscale() == "log" and hist.get_legend() is not None
    path = tmp_path / "fig.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000
    with pytest.raises(DataError, match="log_scale"):
        biology.plot_distributions([-1.0, 1.0] * mV, [1.0, 2.0] * mV)


# -- the Allen Brain Map API ---------------------------------------------------------
class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_pages_caches_and_loads(tmp_path, monkeypatch):
    cells = [
        {
            "specimen__id": i,
            "donor__species": "Mus musculus",
            "tag__dendrite_type": "spiny" if i % 2 else "aspiny",
            "ef__tau": 10.0 + i,
            "ef__vrest": -70.0 + i / 10,
            "ef__threshold_v_long_square": -40.0,
            "ef__ri": 150.0,
            "ef__threshold_i_long_square": 90.0 if i else None,
            "ef__avg_isi": 100.0,
        }
        for i in range(5)
    ]
    urls = []

    def fake_urlopen(url, timeout):
        urls.append(url)
        start = int(url.split("start_row%24eq")[1].split("%5D")[0])
        page = cells[start : start + 2]
        body = {"success": True, "msg": page, "total_rows": len(cells)}
        return FakeResponse(json.dumps(body).encode())

    monkeypatch.setattr(biology.urllib.request, "urlopen", fake_urlopen)
    path = biology.download_allen_cell_types("mouse", cache_dir=tmp_path, page_size=2)
    assert len(urls) == 3 and "Mus+musculus" in urls[0]
    assert path == tmp_path / "allen_cell_types_mouse.csv"
    assert not list(tmp_path.glob("*.part"))
    table = biology.load_cell_table(path)
    assert len(table) == 5 and table.species_names == ["mouse"]
    assert table.classes == ["aspiny", "spiny"]
    assert np.allclose(table.values() / ms, [10, 11, 12, 13, 14])
    assert table.values("rheobase").size == 4

    def no_network(url, timeout):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(biology.urllib.request, "urlopen", no_network)
    again = biology.load_allen_cell_types("mouse", cache_dir=tmp_path)
    assert len(again) == 5


def test_download_failures_are_data_errors(tmp_path, monkeypatch):
    def refused(url, timeout):
        body = {"success": False, "msg": "bad criteria"}
        return FakeResponse(json.dumps(body).encode())

    monkeypatch.setattr(biology.urllib.request, "urlopen", refused)
    with pytest.raises(DataError, match="refused the query: 'bad criteria'"):
        biology.download_allen_cell_types("human", cache_dir=tmp_path)

    def offline(url, timeout):
        raise biology.urllib.error.URLError("no route to host")

    monkeypatch.setattr(biology.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not download.*load_cell_table"):
        biology.download_allen_cell_types("human", cache_dir=tmp_path)
    with pytest.raises(ParameterError, match="species='rat'"):
        biology.download_allen_cell_types("rat", cache_dir=tmp_path)


def allen_api_reachable():
    try:
        socket.create_connection(("api.brain-map.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.network
def test_download_from_allen_api(tmp_path):
    if not allen_api_reachable():
        pytest.skip("api.brain-map.org is unreachable (no network access)")
    table = biology.load_allen_cell_types("mouse", cache_dir=tmp_path)
    assert len(table) > 500
    assert {"spiny", "aspiny"} <= set(table.classes)
    tau = table.values()
    assert 10 < float(np.median(tau / ms)) < 30


def test_module_examples_run():
    result = doctest.testmod(biology, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
