"""Benchmarks of the engines: reruns without recompiling, batching, throughput.

Three benchmarks, each a function ``NAME(quick=False) -> dict`` listed in
:data:`BENCHMARKS` (``hetbrian bench NAME`` runs one; :func:`format_table` lays out
its result):

- :func:`rerun`: 20 parameter draws (new time constants) of one rate network on
  ``cpp_standalone``, run through the cached binary, against a recompilation per
  draw; ``ratio_recompile_over_rerun`` is the per-draw cost of the second over the
  first (goal: at least 20). The recompilation is measured on a few of the draws
  (``setup["draws_recompiled"]``) and every draw costs the same compilation, so the
  per-draw mean stands for all 20. Also measured: a rerun from a new Python process
  (cache hit), and the other way to reuse a cached project from a new process,
  rebuilding the Brian2 objects and calling ``device.build(compile=True, run=False)``
  (``make`` finds nothing to do) and ``device.run(run_args=...)``.
- :func:`batch`: 16 instances of N = 100 in one block-diagonal simulation against 16
  separate simulations (goal: at least 4), on the ``runtime`` and ``cython`` engines
  and, with the compilation excluded, as ``cpp_standalone`` reruns; with the
  compilation included, instances of 16 seeds (16 structures) against one batch.
- :func:`throughput`: neuron-steps per second, N = 1000 LIF neurons, 1 s at 0.1 ms,
  on ``runtime`` (NumPy), ``cython`` and ``cpp_standalone`` (simulation only; the
  compilation is reported apart), and ``cuda_standalone`` where a GPU is visible.

Timings use :func:`time.perf_counter` (``batch``: the best of 3 repeats); builds go
to a temporary cache that is deleted afterwards, so the figures never depend on what
an earlier run left behind.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import brian2
import numpy as np
from brian2 import ms, mV, nA

from hetbrian.bench import format_result
from hetbrian.engines import get_engine, gpu_available
from hetbrian.heterogeneity import LogNormal
from hetbrian.models import lif_model, rate_model
from hetbrian.network import Connectivity, ReservoirConfig, SimulationSettings
from hetbrian.network import batch as batch_instances

__all__ = ["BENCHMARKS", "rerun", "batch", "throughput", "format_table"]

log = logging.getLogger(__name__)

DT = 0.1 * ms


def _rate_config(n, cv=0.5, seed=0):
    tau = LogNormal(mean=20 * ms, cv=cv, lower=DT) if cv else 20 * ms
    return ReservoirConfig(
        model=rate_model("tanh"),
        n_neurons=n,
        n_inputs=1,
        heterogeneity={"tau": tau},
        connectivity=Connectivity(p=0.1, gain=1.2),
        seed=seed,
    )


def _lif_config(n, seed=0):
    return ReservoirConfig(
        model=lif_model(),
        n_neurons=n,
        n_inputs=1,
        heterogeneity={"tau_m": LogNormal(mean=20 * ms, cv=0.5, lower=1 * ms)},
        connectivity=Connectivity(p=0.1, gain=0.5 * mV),
        input_gain=0.3 * nA,
        input_bias=0.21 * nA,
        seed=seed,
    )


def _stimulus(n_steps, seed=0):
    t = np.arange(n_steps)[:, None] * float(DT)
    rng = np.random.default_rng(seed)
    return np.sin(2 * np.pi * 5 * t) + 0.2 * rng.standard_normal((n_steps, 1))


def _environment():
    return {
        "python": platform.python_version(),
        "brian2": brian2.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpu": "visible" if gpu_available() else "none",
        "compiler": shutil.which("g++") or shutil.which("c++") or "none",
    }


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _result(name, setup, seconds, figures, goals, notes):
    return {
        "benchmark": name,
        "setup": setup,
        "seconds": seconds,
        "figures": figures,
        "goals": goals,
        "environment": _environment(),
        "notes": notes,
    }


_REUSE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import numpy as np
    from hetbrian.bench.engines import _rerun_problem
    from hetbrian.engines import get_engine
    spec, stim, settings, draws = _rerun_problem(int(sys.argv[2]), int(sys.argv[3]))
    imported = time.perf_counter()
    compiled = get_engine("cpp_standalone", cache_dir=sys.argv[1]).build(
        spec, stim, settings
    )
    found = time.perf_counter()
    rate = compiled.run(draws[1]).data["rate"]
    done = time.perf_counter()
    np.save(sys.argv[4], rate)
    print(json.dumps({"import": imported - start, "build_lookup": found - imported,
                      "run": done - found, "built": compiled.built}))
    """
)

_BRIAN2_REUSE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import brian2
    import numpy as np
    from hetbrian.bench.engines import _rerun_problem
    from hetbrian.engines import _SEED_CODE
    from hetbrian.network import BrianNetwork
    spec, stim, settings, draws = _rerun_problem(int(sys.argv[2]), int(sys.argv[3]))
    imported = time.perf_counter()
    brian2.set_device("cpp_standalone", build_on_run=False)
    brian2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j2"]
    net = BrianNetwork(spec, stim, settings)
    brian2.device.insert_code("main", _SEED_CODE)  # as the engine's build did
    net.run()
    objects = time.perf_counter()
    brian2.device.build(directory=sys.argv[1], compile=True, run=False)
    built = time.perf_counter()
    run_args = {
        getattr(var.owner, var.name): values * unit
        for var, (values, unit) in net.value_targets(draws[1]).items()
    }
    brian2.device.run(run_args=run_args, results_directory="results_reuse")
    done = time.perf_counter()
    np.save(sys.argv[4], np.asarray(net.monitor.r).T)
    print(json.dumps({"import": imported - start, "objects": objects - imported,
                      "device_build": built - objects, "run": done - built}))
    """
)


def _rerun_problem(n_neurons, n_steps, n_draws=20):
    """The rerun benchmark's network, stimulus, settings and its parameter draws."""
    settings = SimulationSettings(dt=DT, readout_dt=1 * ms, features=("rate",))
    spec = batch_instances([_rate_config(n_neurons, seed=0)])
    draws = [
        batch_instances([_rate_config(n_neurons, cv=cv, seed=0)])
        for cv in np.linspace(0.1, 1.0, n_draws)
    ]
    return spec, np.ascontiguousarray(_stimulus(n_steps)), settings, draws


def _subprocess_json(args):
    done = subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rerun(quick: bool = False) -> dict:
    """Parameter draws through the cached binary against a recompilation per draw.

    Parameters
    ----------
    quick : bool
        Smaller network and one recompiled draw instead of five.

    Returns
    -------
    dict
        ``setup``, ``seconds``, ``figures`` (``ratio_recompile_over_rerun``, goal at
        least 20), ``goals``, ``environment``, ``notes``.
    """
    n_neurons, n_steps, n_recompiled = (50, 1000, 1) if quick else (100, 5000, 5)
    n_draws = 20
    spec, stim, settings, draws = _rerun_problem(n_neurons, n_steps, n_draws)
    with tempfile.TemporaryDirectory(prefix="hetbrian-bench-") as tmp:
        cache = Path(tmp) / "cache"
        engine = get_engine("cpp_standalone", cache_dir=cache)
        first_build, compiled = _timed(lambda: engine.build(spec, stim, settings))
        rerun_seconds, reruns = _timed(lambda: [compiled.run(d) for d in draws])
        per_rerun = rerun_seconds / n_draws

        recompile_times, max_diff = [], 0.0
        for i, (d, r) in enumerate(zip(draws[:n_recompiled], reruns, strict=False)):
            # a project of its own per draw, as without a cache keyed by structure
            fresh_engine = get_engine("cpp_standalone", cache_dir=Path(tmp) / f"d{i}")
            seconds, fresh = _timed(
                lambda d=d, e=fresh_engine: e.build(d, stim, settings).run()
            )
            recompile_times.append(seconds)
            diff = np.max(np.abs(fresh.data["rate"] - r.data["rate"]))
            max_diff = max(max_diff, float(diff))
            shutil.rmtree(Path(tmp) / f"d{i}")
        per_recompile = float(np.mean(recompile_times))

        script = Path(tmp) / "reuse.py"
        script.write_text(_REUSE_SCRIPT)
        new_process = _subprocess_json(
            [script, cache, n_neurons, n_steps, Path(tmp) / "reuse.npy"]
        )
        reuse_diff = float(
            np.max(np.abs(np.load(Path(tmp) / "reuse.npy") - reruns[1].data["rate"]))
        )
        copy = Path(tmp) / "copy"
        shutil.copytree(compiled.directory, copy)  # keeps mtimes: make has no work
        script = Path(tmp) / "brian2_reuse.py"
        script.write_text(_BRIAN2_REUSE_SCRIPT)
        brian2_reuse = _subprocess_json(
            [script, copy, n_neurons, n_steps, Path(tmp) / "brian2.npy"]
        )
        brian2_diff = float(
            np.max(np.abs(np.load(Path(tmp) / "brian2.npy") - reruns[1].data["rate"]))
        )

    brian2_reuse_total = (
        brian2_reuse["objects"] + brian2_reuse["device_build"] + brian2_reuse["run"]
    )
    new_process_total = new_process["build_lookup"] + new_process["run"]
    return _result(
        "rerun",
        setup={
            "engine": "cpp_standalone",
            "model": "rate_tanh",
            "n_neurons": n_neurons,
            "n_steps": n_steps,
            "dt_ms": float(DT / ms),
            "draws": n_draws,
            "draws_recompiled": n_recompiled,
        },
        seconds={
            "first_build": first_build,
            "rerun_per_draw": per_rerun,
            "recompile_per_draw": per_recompile,
            "reruns_all_draws": rerun_seconds,
            "recompile_all_draws_estimated": per_recompile * n_draws,
            "new_process_import": new_process["import"],
            "new_process_cache_lookup": new_process["build_lookup"],
            "new_process_run": new_process["run"],
            "brian2_reuse_objects": brian2_reuse["objects"],
            "brian2_reuse_device_build": brian2_reuse["device_build"],
            "brian2_reuse_device_run": brian2_reuse["run"],
        },
        figures={
            "ratio_recompile_over_rerun": per_recompile / per_rerun,
            "ratio_brian2_reuse_over_cached_run_new_process": brian2_reuse_total
            / new_process_total,
            "max_abs_diff_rerun_vs_recompile": max_diff,
            "max_abs_diff_new_process": reuse_diff,
            "max_abs_diff_brian2_reuse": brian2_diff,
            "new_process_recompiled": float(new_process["built"]),
        },
        goals={"ratio_recompile_over_rerun": ">= 20"},
        notes=[
            f"recompilation measured on {n_recompiled} of {n_draws} draws; each "
            "draw compiles the same project, so the mean stands for every draw",
            "brian2_reuse: a new process rebuilds the Brian2 objects, calls "
            "device.build(compile=True, run=False) on a copy of the cached project "
            "(make has nothing to do) and device.run(run_args=...)",
            "new_process_*: a new process finds the build in the cache (no Brian2 "
            "objects) and starts the binary with the run_args command line",
        ],
    )


def _separate_and_batched(engine_name, configs, stim, settings, cache, repeats):
    """Seconds of builds, of separate runs and of one batched run, and the largest
    difference between the batched features and the separate ones."""
    kwargs = {"cache_dir": cache} if "standalone" in engine_name else {}
    engine = get_engine(engine_name, **kwargs)
    specs = [batch_instances([c]) for c in configs]
    batched_spec = batch_instances(configs)
    single_build, single = _timed(lambda: engine.build(specs[0], stim, settings))
    batched_build, together = _timed(lambda: engine.build(batched_spec, stim, settings))
    single.run(), together.run()  # warm caches (Cython, the OS's file cache)
    separate_seconds, batched_seconds = np.inf, np.inf
    for _ in range(repeats):  # best of a few: the machine's cores are shared
        seconds, separate = _timed(lambda: [single.run(s) for s in specs])
        separate_seconds = min(separate_seconds, seconds)
        seconds, batched = _timed(together.run)
        batched_seconds = min(batched_seconds, seconds)
    diff = max(
        float(np.max(np.abs(part["data"]["rate"] - alone.data["rate"])))
        for part, alone in zip(batched.split(), separate, strict=True)
    )
    return {
        "build_single": single_build,
        "build_batched": batched_build,
        "separate": separate_seconds,
        "batched": batched_seconds,
        "diff": diff,
    }


def batch(quick: bool = False) -> dict:
    """B = 16 instances of N = 100 in one simulation against 16 separate runs.

    The instances share one seed (and so their synapses) and differ in their time
    constants, so that the separate runs reuse one build: ``cpp_standalone`` is
    compared without compilation. Instances of different seeds would need a build
    each when run apart.

    Parameters
    ----------
    quick : bool
        200 ms of stimulus instead of 1 s, and one repeat instead of the best of 3.

    Returns
    -------
    dict
        ``figures`` hold ``ratio_separate_over_batched_<engine>`` (goal at least 4).
    """
    n_instances, n_neurons = 16, 100
    n_steps, repeats = (2000, 1) if quick else (10000, 3)
    settings = SimulationSettings(dt=DT, readout_dt=1 * ms, features=("rate",))
    configs = [
        _rate_config(n_neurons, cv=cv, seed=0)
        for cv in np.linspace(0.0, 1.0, n_instances)
    ]
    stim = np.ascontiguousarray(_stimulus(n_steps))
    seconds, figures = {}, {}
    with tempfile.TemporaryDirectory(prefix="hetbrian-bench-") as tmp:
        for name in ("runtime", "cython", "cpp_standalone"):
            got = _separate_and_batched(
                name, configs, stim, settings, Path(tmp), repeats
            )
            seconds[f"separate_{name}"] = got["separate"]
            seconds[f"batched_{name}"] = got["batched"]
            figures[f"ratio_separate_over_batched_{name}"] = (
                got["separate"] / got["batched"]
            )
            figures[f"max_abs_diff_{name}"] = got["diff"]
    seconds["build_single_cpp_standalone"] = got["build_single"]
    seconds["build_batched_cpp_standalone"] = got["build_batched"]
    # 16 seeds run apart need 16 builds; one build was measured
    figures["ratio_separate_seeds_over_batched_cpp_standalone_with_builds"] = (
        n_instances * got["build_single"] + got["separate"]
    ) / (got["build_batched"] + got["batched"])
    return _result(
        "batch",
        setup={
            "model": "rate_tanh",
            "instances": n_instances,
            "n_neurons": n_neurons,
            "n_steps": n_steps,
            "dt_ms": float(DT / ms),
            "repeats": repeats,
        },
        seconds=seconds,
        figures=figures,
        goals={
            "ratio_separate_over_batched_runtime": ">= 4",
            "ratio_separate_over_batched_cython": ">= 4",
        },
        notes=[
            "cpp_standalone: one build per structure, compilation excluded; the 16 "
            "separate runs are reruns of the single-instance binary",
            "..._with_builds: 16 instances of different seeds have different "
            "synapses and need a build each when run apart; the time of one measured "
            "build stands for each of the 16",
            "max_abs_diff: batched features split per instance against the separate "
            "runs",
        ],
    )


def throughput(quick: bool = False) -> dict:
    """Neuron-steps per second of N = 1000 LIF neurons over 1 s at 0.1 ms.

    Parameters
    ----------
    quick : bool
        100 ms instead of 1 s, and no OpenMP build.

    Returns
    -------
    dict
        ``figures`` hold ``neuron_steps_per_second_<engine>``.
    """
    n_neurons = 1000
    n_steps = 1000 if quick else 10000
    settings = SimulationSettings(dt=DT, readout_dt=1 * ms, features=("spikes",))
    spec = batch_instances([_lif_config(n_neurons)])
    stim = np.ascontiguousarray(_stimulus(n_steps))
    seconds, figures, spikes = {}, {}, {}
    notes = []
    runs = [("runtime", {}), ("cython", {}), ("cpp_standalone", {})]
    if not quick:
        runs.append(("cpp_standalone", {"threads": 2}))
    if gpu_available():
        runs.append(("cuda_standalone", {}))
    else:
        notes.append("cuda_standalone not measured: no GPU is visible on this machine")
    with tempfile.TemporaryDirectory(prefix="hetbrian-bench-") as tmp:
        for name, options in runs:
            label = name + (f"_threads{options['threads']}" if options else "")
            if "standalone" in name:
                options = dict(options, cache_dir=Path(tmp))
            engine = get_engine(name, **options)
            build_seconds, compiled = _timed(
                lambda e=engine: e.build(spec, stim, settings)
            )
            if name == "cython":
                compiled.run()  # the first run compiles and caches the Cython code
            if "standalone" in name:
                seconds[f"build_{label}"] = build_seconds
            run_seconds, features = _timed(compiled.run)
            seconds[f"run_{label}"] = run_seconds
            figures[f"neuron_steps_per_second_{label}"] = (
                n_neurons * n_steps / run_seconds
            )
            spikes[label] = int(features.spike_counts.sum())
    base = figures["neuron_steps_per_second_runtime"]
    for label in spikes:
        if label != "runtime":
            figures[f"speedup_{label}_over_runtime"] = (
                figures[f"neuron_steps_per_second_{label}"] / base
            )
    figures["mean_rate_hz"] = spikes["runtime"] / n_neurons / (n_steps * float(DT))
    notes.append(f"total spikes per engine: {spikes}")
    return _result(
        "throughput",
        setup={
            "model": "lif",
            "n_neurons": n_neurons,
            "synapses": int(spec.syn_i.size),
            "n_steps": n_steps,
            "dt_ms": float(DT / ms),
        },
        seconds=seconds,
        figures=figures,
        goals={},
        notes=notes,
    )


#: Benchmarks by the name ``hetbrian bench NAME`` takes.
BENCHMARKS = {"rerun": rerun, "batch": batch, "throughput": throughput}


def format_table(result: dict) -> str:
    """Lay out the result of one benchmark as a plain-text table (for the CLI)."""
    setup = ", ".join(f"{k}={v}" for k, v in result["setup"].items())
    return format_result(f"{result['benchmark']} benchmark: {setup}", result, width=48)
