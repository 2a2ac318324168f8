"""The quenched_vs_trained protocol: validation, a tiny run, resume, the dataset."""

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hetbrian.errors import ProtocolError
from hetbrian.protocols import run_protocol
from hetbrian.training.comparison import (
    is_comparison,
    load_comparison,
    run_comparison,
    summary_text,
)

ROOT = Path(__file__).resolve().parent.parent

TINY = """
[protocol]
name = "tiny_qvt"
kind = "quenched_vs_trained"

[network]
n_neurons = 12
gain = 0.9
input_gain = 0.5

[time_constants]
mean = "20 ms"
cv = 0.6

[stimulus]
generators = [{ type = "ornstein_uhlenbeck", tau = 5.0 }]
train_duration = "600 ms"
test_duration = "500 ms"

[simulation]
dt = "1 ms"
readout_dt = "1 ms"

[tasks]
memory_delays = [1, 6]
prediction_horizons = [1, 3]
power_degrees = [2]
delayed_power_delays = [1, 2]
delayed_power_degrees = [2]
legendre_delays = [0, 1]
legendre_degrees = [2]
product_delays = [0, 2]
narma_orders = [2]

[training]
families = ["memory"]
delays = [2, 4]
sequences = 2

[cmaes]
generations = 2
popsize = 4

[surrogate]
epochs = 2
batch_size = 2

[readout]
washout = "50 ms"

[comparison]
conditions = ["homogeneous", "gamma", "cmaes_from_homogeneous",
              "surrogate_tau_from_heterogeneous", "surrogate_all_from_heterogeneous"]
seeds = [0, 1]

[output]
name = "tiny_qvt"
"""


def _edit(old, new):
    assert old in TINY
    return TINY.replace(old, new)


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("n_neurons = 12", "n_neurons = 12\nneurons = 3", "network.neurons"),
        ('mean = "20 ms"', "mean = 20", "time_constants.mean"),
        ('mean = "20 ms"', 'mean = "20 mV"', "time_constants.mean"),
        ("seeds = [0, 1]", "seeds = []", "comparison.seeds"),
        ('families = ["memory"]', "families = []", "training.families"),
        ('families = ["memory"]', 'families = ["narma", "x"]', "training.families"),
        ("delays = [2, 4]", "delays = [99]", "training.delays"),
        ('conditions = ["homogeneous",', 'conditions = ["bogus",', "comparison."),
        ('train_duration = "600 ms"', 'train_duration = "60 ms"', "train_duration"),
        ('test_duration = "500 ms"', 'test_duration = "100 ms"', "test_duration"),
        ("[cmaes]", "[cmaes]\nsigma0 = -1.0", "cmaes.sigma0"),
        ("[output]", '[quick]\n"network.size" = 3\n[output]', "quick.'network.size'"),
        ("[output]", "[surprise]\n[output]", "surprise"),
    ],
)
def test_invalid_protocols_name_the_key_path(old, new, path):
    with pytest.raises(ProtocolError, match=path.replace(".", r"\.")):
        load_comparison(_edit(old, new))


def test_shipped_protocol_validates_in_both_sizes():
    path = ROOT / "protocols" / "quenched_vs_trained.toml"
    assert is_comparison(path) and not is_comparison(TINY.replace("quenched_vs", "x"))
    full, quick = load_comparison(path), load_comparison(path, quick=True)
    assert (
        full.settings["network"]["n_neurons"] > quick.settings["network"]["n_neurons"]
    )
    assert len(full.conditions) == 10 and len(full.seeds) > len(quick.seeds)
    n_train = len(full.settings["training"]["object"])
    assert 0 < n_train < len(full.settings["tasks"]["object"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qvt")
    path = run_protocol(TINY, out=out)  # dispatches on kind
    with xr.open_dataset(path) as ds:
        return out, path, ds.load()


def test_tiny_comparison_dataset(tiny_run):
    out, path, ds = tiny_run
    assert ds.attrs["protocol_kind"] == "quenched_vs_trained"
    assert ds.attrs["protocol_text"].strip() == TINY.strip()
    assert len(ds.attrs["protocol_sha256"]) == 64
    assert dict(ds.sizes) == {"condition": 5, "seed": 2, "task": 12, "neuron": 12}
    for name in (
        "r2_clipped",
        "score_trained",
        "score_other",
        "train_simulations",
        "train_seconds",
        "n_trained_parameters",
        "ks",
        "wasserstein",
        "tau",
    ):
        assert name in ds, name
    assert int(ds["trained_task"].sum()) == 2
    assert np.all(np.isfinite(ds["score_trained"])) and np.all(ds["r2_clipped"] <= 1)
    # 12 time constants; all: + 12 input weights + 12 synapses (one per neuron)
    cost = ds["n_trained_parameters"].sel(seed=0).values
    assert list(cost) == [0, 0, 12, 12, 36]
    cmaes = ds.sel(condition="cmaes_from_homogeneous", seed=0)
    assert int(cmaes["train_simulations"]) == 2  # one per generation
    assert int(cmaes["train_network_runs"]) == 8  # 2 generations of 4
    tau = ds["tau"].sel(seed=0)
    assert np.ptp(tau.sel(condition="homogeneous").values) == 0
    assert (
        np.ptp(tau.sel(condition="cmaes_from_homogeneous").values) > 0
    )  # the search moved
    # quenched conditions of one seed share connectivity: only tau differs
    assert float(ds["ks"].sel(condition="homogeneous").min()) > float(
        ds["ks"].sel(condition="gamma").max()
    )
    assert (out / "tiny_qvt.png").is_file() and (out / "tiny_qvt.pdf").is_file()
    assert "surrogate_all_from_heterogeneous" in summary_text(ds)


def test_resume_skips_finished_conditions_and_gives_the_same_dataset(tiny_run):
    out, path, ds = tiny_run
    folder = out / "conditions"
    kept = folder / "gamma-seed1.nc"
    removed = folder / "surrogate_tau_from_heterogeneous-seed0.nc"
    before = kept.stat().st_mtime_ns
    removed.unlink()
    (folder / ".crashed.nc.123.tmp").write_text("partial")
    os.utime(kept, ns=(before, before))
    path2 = run_comparison(TINY, out=out)
    assert kept.stat().st_mtime_ns == before  # not recomputed
    assert removed.is_file() and not list(folder.glob(".*.tmp"))
    with xr.open_dataset(path2) as again:
        again = again.load()
    for name in ("r2_clipped", "score_trained", "score_other", "tau", "ks"):
        np.testing.assert_allclose(again[name].values, ds[name].values, rtol=1e-9)


def test_resume_refuses_files_of_another_protocol(tiny_run, tmp_path):
    out, _, _ = tiny_run
    other = _edit("epochs = 2", "epochs = 3")
    with pytest.raises(ProtocolError, match="another version"):
        run_comparison(other, out=out)
