"""Protocols: validation, resuming after a kill, executors, summaries and figures."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from hetbrian.errors import ProtocolError
from hetbrian.protocols import expand_cells, load_protocol, plan_jobs, run_protocol
from hetbrian.report import plot_results, summary_table

REPO = Path(__file__).resolve().parents[1]

TINY = """
[protocol]
name = "tiny"
kind = "heterogeneity"

[model]
type = "rate"

[network]
n_neurons = 16
p = 0.25
gain = 0.9

[heterogeneity]
parameter = "tau"
mean = "20 ms"

[stimulus]
generators = [{ type = "ornstein_uhlenbeck", tau = 10.0 }]
duration = "1 s"

[simulation]
dt = "1 ms"
readout_dt = "1 ms"

[tasks]
memory_delays = [1, 11]
prediction_horizons = [1, 3]
power_degrees = [2]
delayed_power_delays = [1, 1]
legendre_delays = [0, 0]
product_delays = [0, 0]
narma_orders = []

[readout]
washout = "50 ms"

[engine]
max_neurons_per_simulation = 32

[sweep]
seeds = [0, 1]

[sweep.axes]
"heterogeneity.family" = ["lognormal", "gamma"]
"heterogeneity.cv" = [0.0, 0.5]

[output]
name = "tiny"
"""


def tiny(**replace):
    text = TINY
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def test_cells_and_jobs():
    protocol = load_protocol(TINY)
    cells = expand_cells(protocol)
    assert len(cells) == 8
    assert len({c.ident for c in cells}) == 8
    jobs = plan_jobs(protocol)
    # 2 networks of 16 neurons per job; the cv = 0 networks of both families are one
    assert sum(len(j) for j in jobs) == 8
    assert all(len(j) >= 2 for j in jobs)
    assert plan_jobs(protocol) == jobs  # deterministic


@pytest.mark.parametrize(
    "old,new,words",
    [
        (
            "n_neurons = 16",
            "n_neurons = 16\nn_neurns = 3",
            "network.n_neurns: unknown key",
        ),
        ('mean = "20 ms"', "mean = 20", "heterogeneity.mean='?20'? has dimensions 1"),
        (
            'mean = "20 ms"',
            'mean = "20 mV"',
            "heterogeneity.mean='20 mV' has dimensions",
        ),
        ('duration = "1 s"', 'duration = "1 parsec"', "unknown unit 'parsec'"),
        (
            '"heterogeneity.cv" = [0.0, 0.5]',
            '"heterogeneity.cv" = []',
            "non-empty list",
        ),
        ("seeds = [0, 1]", "seeds = []", "sweep.seeds"),
        ('"heterogeneity.cv"', '"heterogeneity.cvv"', "heterogeneity.cvv: unknown key"),
        ("[output]", "[outputs]", "outputs: unknown section"),
        ('mean = "20 ms"\n', "", "heterogeneity.mean: missing"),
        ('type = "rate"', 'type = "hodgkin"', "model.type: 'hodgkin' is not one of"),
        ('parameter = "tau"', 'parameter = "tau_m"', "heterogeneity.parameter"),
        ('duration = "1 s"', 'duration = "0.1 s"', "stimulus.duration"),
        ("tau = 10.0", "tau = -1.0", r"stimulus.generators\[0\]"),
        (
            '"heterogeneity.cv" = [0.0, 0.5]',
            '"heterogeneity.cv" = [0.0, 0.9]',
            "cannot be reached",
        ),
    ],
)
def test_validation_names_the_key(old, new, words):
    if "uniform" in words or "cannot be reached" in words:
        new_text = tiny(**{old: new}).replace('"gamma"]', '"uniform"]')
    else:
        new_text = tiny(**{old: new})
    with pytest.raises(ProtocolError, match=words):
        load_protocol(new_text)


def test_unreachable_cells_can_be_skipped(tmp_path):
    text = tiny(
        **{
            '"gamma"]': '"uniform"]',
            '"heterogeneity.cv" = [0.0, 0.5]': '"heterogeneity.cv" = [0.0, 0.7]',
            'mean = "20 ms"': 'mean = "20 ms"\nskip_unreachable = true',
        }
    )
    path = run_protocol(text, out=tmp_path)
    with xr.open_dataset(path) as ds:
        r2 = ds["r2"].load()
    assert np.isnan(r2.sel(profile="uniform", cv=0.7)).all()
    assert np.isfinite(r2.sel(profile="lognormal", cv=0.7)).all()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    path = run_protocol(TINY, out=out)
    with xr.open_dataset(path) as ds:
        return ds.load()


def test_dataset_layout_and_provenance(reference):
    ds = reference
    assert ds["r2"].dims == ("task", "profile", "cv", "seed")
    assert ds.sizes["task"] == 10 + 2 + 1
    assert set(ds["family"].values) == {"memory", "prediction", "power"}
    assert ds.attrs["protocol_text"] == TINY
    assert ds.attrs["engine"] == "runtime"
    assert "hetbrian_version" in ds.attrs and "machine" in ds.attrs
    assert np.isfinite(ds["r2"]).all()
    # every family at cv = 0 is the same homogeneous network
    np.testing.assert_array_equal(
        ds["r2"].sel(profile="lognormal", cv=0.0), ds["r2"].sel(profile="gamma", cv=0.0)
    )
    # memory of the last input is easy for a 16-neuron network, 10 steps back is not
    memory = ds["r2"].where(ds["family"] == "memory", drop=True)
    assert float(memory.isel(task=0).mean()) > float(memory.isel(task=-1).mean())


def test_resume_after_kill_equals_uninterrupted(tmp_path, reference):
    protocol_file = tmp_path / "tiny.toml"
    protocol_file.write_text(TINY)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "hetbrian.cli",
        "run",
        str(protocol_file),
        "--out",
        str(out),
        "--quiet",
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    cells = out / "cells"
    while time.monotonic() < deadline and process.poll() is None:
        if cells.is_dir() and any(cells.glob("cell-*.nc")):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in cells.glob("cell-*.nc"))
    assert 0 < len(finished) < 8, "the run was not interrupted partway"
    assert not (out / "tiny.nc").exists()
    for path in finished:  # what the killed run left is complete, not partial
        with xr.open_dataset(cells / path) as ds:
            assert ds.sizes["task"] == 13
    mtimes = {p: os.stat(cells / p).st_mtime_ns for p in finished}
    path = run_protocol(protocol_file, out=out)
    for p, mtime in mtimes.items():  # finished cells were skipped, not redone
        assert os.stat(cells / p).st_mtime_ns == mtime
    assert len(list(cells.glob("cell-*.nc"))) == 8
    assert not list(cells.glob(".*.tmp"))
    with xr.open_dataset(path) as resumed:
        xr.testing.assert_equal(resumed.load(), reference)


def test_local_processes_equal_serial(tmp_path, reference):
    path = run_protocol(TINY, out=tmp_path, executor="local:2")
    with xr.open_dataset(path) as ds:
        xr.testing.assert_equal(ds.load(), reference)


def test_dask_local_cluster(tmp_path, reference):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        path = run_protocol(
            TINY, out=tmp_path, executor=f"dask:{cluster.scheduler_address}"
        )
    with xr.open_dataset(path) as ds:
        xr.testing.assert_equal(ds.load(), reference)


def test_bad_executor_and_foreign_cells(tmp_path, reference):
    with pytest.raises(ProtocolError, match="local:K"):
        run_protocol(TINY, out=tmp_path, executor="local:zero")
    run_protocol(TINY, out=tmp_path / "a", stop_after=1)
    other = tiny(**{"n_neurons = 16": "n_neurons = 12"})
    with pytest.raises(ProtocolError, match="another version of this protocol"):
        run_protocol(other, out=tmp_path / "a")


def test_summary_and_figures(tmp_path, reference):
    columns, rows, extra = summary_table(reference)
    assert columns[:3] == ["profile", "cv", "score"]
    assert "frac_tasks_het>hom" in columns
    assert len(rows) == 4
    for row in rows:
        assert 0 <= row[2] <= 1
    assert any("highest at cv" in line for line in extra)
    written = plot_results(reference, tmp_path)
    names = {p.name for p in written}
    assert "tiny_score_vs_cv.png" in names and "tiny_task_families.pdf" in names
    assert all(p.stat().st_size > 1000 for p in written)


def test_cli_summary_and_plot(tmp_path, reference):
    results = tmp_path / "tiny.nc"
    reference.to_netcdf(results)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    summary = subprocess.run(
        [sys.executable, "-m", "hetbrian.cli", "summary", str(results)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert "frac_tasks_het>hom" in summary.stdout
    plot = subprocess.run(
        [
            sys.executable,
            "-m",
            "hetbrian.cli",
            "plot",
            str(results),
            "--out",
            str(tmp_path / "fig"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert (tmp_path / "fig" / "tiny_score_vs_profile.png").is_file()
    assert plot.returncode == 0
    bad = subprocess.run(
        [sys.executable, "-m", "hetbrian.cli", "run", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def _synthetic(kind, axes, score):
    """A result dataset whose mean score per cell is score(**coords)."""
    dims = list(axes) + ["seed"]
    shape = [len(v) for v in axes.values()] + [2]
    values = np.zeros([3, *shape])
    for index in np.ndindex(*shape):
        coords = {d: list(axes[d])[i] for d, i in zip(axes, index, strict=False)}
        values[(slice(None), *index)] = score(**coords)
    coords = dict(axes, seed=[0, 1])
    coords["family"] = ("task", ["memory", "memory", "power"])
    ds = xr.Dataset(
        {"r2_clipped": (("task", *dims), values), "r2": (("task", *dims), values)},
        coords=coords,
        attrs={"protocol_kind": kind, "protocol_name": kind},
    )
    return ds


def test_size_finding_names_the_smallest_matching_network():
    sizes = [16, 32, 64, 128]
    ds = _synthetic(
        "size",
        {"n_neurons": sizes, "cv": [0.0, 0.5]},
        lambda n_neurons, cv: np.log2(n_neurons) / 10 + (0.25 if cv else 0.0),
    )
    _, _, extra = summary_table(ds)
    # homogeneous N = 128 scores 0.7; heterogeneous N = 32 scores 0.75, N = 16 0.65
    assert "smallest heterogeneous network (cv = 0.5) matching it: N = 32" in "\n".join(
        extra
    )


def test_recurrence_and_data_efficiency_findings():
    ds = _synthetic(
        "recurrence",
        {"gain": [0.0, 1.0, 2.0], "cv": [0.0, 0.5]},
        lambda gain, cv: 0.5 - (0.2 * abs(gain - 1) if cv == 0 else 0.0),
    )
    text = "\n".join(summary_table(ds)[2])
    assert "cv = 0: score over all recurrent settings 0.3000 to 0.5000" in text
    assert "cv = 0.5: score over all recurrent settings 0.5000 to 0.5000" in text
    ds = _synthetic(
        "data_efficiency",
        {"train_duration": ["0.5 s", "1 s", "2 s"], "cv": [0.0, 0.5]},
        lambda train_duration, cv: float(train_duration.split()[0]) / 4 + cv / 2,
    )
    text = "\n".join(summary_table(ds)[2])
    assert "cv = 0.5 first matches it with 1 s of training" in text
    assert "cv = 0 first matches it with 2 s" in text


@pytest.mark.standalone
def test_compiled_engine_builds_once_and_matches_runtime(
    tmp_path, monkeypatch, reference
):
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("HETBRIAN_CACHE", str(tmp_path / "cache"))
    text = tiny(**{"[engine]": '[engine]\nname = "cpp_standalone"'})
    protocol = load_protocol(text)
    jobs = plan_jobs(protocol)
    # one job per value variant (cv = 0 of both families is one), all seeds in each
    assert len(jobs) == 3
    path = run_protocol(protocol, out=tmp_path / "out")
    builds = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(builds) == 1  # one structure: compiled once, rerun through run_args
    with xr.open_dataset(path) as ds:
        compiled = ds.load()
    np.testing.assert_allclose(
        compiled["r2"].values, reference["r2"].values, rtol=1e-6, atol=1e-9
    )


@pytest.mark.parametrize(
    "path", sorted((REPO / "protocols").glob("*.toml")), ids=lambda p: p.stem
)
def test_shipped_protocols_validate(path):
    from hetbrian.training.comparison import is_comparison, load_comparison

    text = path.read_text()
    for quick in (False, True):
        if is_comparison(text):
            assert load_comparison(text, quick=quick).name
        else:
            protocol = load_protocol(path, quick=quick)
            assert expand_cells(protocol) and plan_jobs(protocol)
