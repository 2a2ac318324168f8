"""Benchmark of the training methods: surrogate-gradient epochs and CMA-ES generations.

Figures (``run()`` returns them; :func:`format_table` lays them out):

- ``surrogate_seconds_per_epoch``: one epoch of
  :class:`~hetbrian.training.SurrogateGradientTrainer` (forward and backward pass of
  the NumPy twin, Adam) on a recurrent LIF network: N = 128 neurons, 500 steps of
  0.5 ms, 16 sequences in batches of 8, ``tau_m`` and ``V_th`` trained
  (``quick``: N = 32, 200 steps, 4 sequences in batches of 2);
  ``surrogate_us_per_neuron_step`` divides it by neurons x steps x sequences;
- ``ratio_snntorch_over_twin``: snnTorch's time for the same epoch over the twin's,
  measured only where ``torch`` and ``snntorch`` import (a CPU build of torch exists
  here only for Python 3.11, so on this machine the figure is reported as not
  measurable, with the reason);
- ``ratio_recompiled_over_run_args``: a CMA-ES generation (8 members of a 50-neuron
  rate reservoir in one batched spec, 1000 steps) with a standalone binary that
  receives the values through ``run_args``, against the same generation with the
  project rebuilt (``cpp_standalone`` with ``rebuild=True``); needs a C++ compiler
  and is skipped with ``quick`` (one compilation takes tens of seconds on two cores).

Timings are single measurements with :func:`time.perf_counter` after a warm-up epoch
or generation; the Python version and CPU count are recorded beside them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import shutil
import tempfile
import time

import numpy as np
from brian2 import ms, mV, nA

from hetbrian import models, network
from hetbrian.heterogeneity import Gamma
from hetbrian.tasks import TaskBattery
from hetbrian.training import ReservoirObjective, SurrogateGradientTrainer

__all__ = ["run", "format_table"]

log = logging.getLogger(__name__)


def _surrogate_epoch(n, steps, sequences, batch_size):
    config = network.ReservoirConfig(
        models.lif_model(),
        n_neurons=n,
        heterogeneity={"tau_m": Gamma(mean=20 * ms, cv=0.5, lower=2 * ms)},
        connectivity=network.Connectivity(p=0.1, gain=2 * mV),
        input_gain=0.15 * nA,
        input_bias=0.26 * nA,
        seed=0,
    )
    settings = network.SimulationSettings(
        dt=0.5 * ms, readout_dt=1 * ms, features=("spikes",)
    )
    trainer = SurrogateGradientTrainer(
        network.batch([config]), settings, ("tau_m", "V_th"), learning_rate=1e-2
    )
    rng = np.random.default_rng(0)
    u = rng.standard_normal((sequences, steps, 1))
    y = np.roll(u[:, ::2], 3, axis=1)
    trainer.fit(u[:batch_size], y[:batch_size], epochs=1, batch_size=batch_size)
    t0 = time.perf_counter()
    trainer.fit(u, y, epochs=1, batch_size=batch_size)
    return time.perf_counter() - t0


def _snntorch_status():
    missing = [m for m in ("torch", "snntorch") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"not measurable here: {', '.join(missing)} not installed (a CPU wheel of "
            "torch exists on this machine only for Python 3.11; the package needs "
            f"3.12, this is {platform.python_version()})"
        )
    return None


def _cmaes_generation(rebuild, cache_dir):
    config = network.ReservoirConfig(
        models.rate_model(),
        n_neurons=50,
        seed=1,
        connectivity=network.Connectivity(p=0.1, gain=0.9),
    )
    settings = network.SimulationSettings(dt=1 * ms, readout_dt=1 * ms)
    u = np.random.default_rng(0).standard_normal((1000, 1))
    battery = TaskBattery.grid(1, prediction_horizons=(), legendre_delays=())
    objective = ReservoirObjective(
        network.draw(config),
        u,
        battery,
        settings,
        engine="cpp_standalone",
        engine_options={"cache_dir": cache_dir, "rebuild": rebuild},
        washout=50,
    )
    rng = np.random.default_rng(2)
    first = objective.x0() + 0.3 * rng.standard_normal((8, objective.dimension))
    objective(first)  # compiles (or finds) the project
    second = objective.x0() + 0.3 * rng.standard_normal((8, objective.dimension))
    if rebuild:
        objective._compiled = None  # the next generation builds again
    t0 = time.perf_counter()
    objective(second)
    return time.perf_counter() - t0


def run(quick=False):
    """Measure the figures listed in the module docstring.

    Parameters
    ----------
    quick : bool
        Smaller sizes, and no standalone compilation.

    Returns
    -------
    dict
        ``shape``, ``seconds``, ``figures``, ``environment``, ``notes``.
    """
    n, steps, sequences, batch_size = (32, 200, 4, 2) if quick else (128, 500, 16, 8)
    seconds, figures, notes = {}, {}, []
    epoch = _surrogate_epoch(n, steps, sequences, batch_size)
    seconds["surrogate_epoch"] = epoch
    figures["surrogate_seconds_per_epoch"] = epoch
    figures["surrogate_us_per_neuron_step"] = epoch / (n * steps * sequences) * 1e6
    status = _snntorch_status()
    if status:
        notes.append(f"ratio_snntorch_over_twin: {status}")
    else:
        notes.append(
            "ratio_snntorch_over_twin: torch and snntorch import, but the equivalent "
            "snnTorch network is not written yet"
        )
    if quick:
        notes.append("ratio_recompiled_over_run_args: skipped with quick")
    elif shutil.which(os.environ.get("CXX", "g++")) is None:
        notes.append("ratio_recompiled_over_run_args: no C++ compiler found")
    else:
        with tempfile.TemporaryDirectory() as cache:
            reuse = _cmaes_generation(False, cache)
            rebuilt = _cmaes_generation(True, cache)
        seconds["cmaes_generation_run_args"] = reuse
        seconds["cmaes_generation_recompiled"] = rebuilt
        figures["ratio_recompiled_over_run_args"] = rebuilt / reuse
    return {
        "shape": {
            "neurons": n,
            "steps": steps,
            "sequences": sequences,
            "batch_size": batch_size,
        },
        "seconds": seconds,
        "figures": figures,
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        },
        "notes": notes,
    }


def format_table(result):
    """Lay out the result of :func:`run` as a plain-text table (for the CLI)."""
    shape = result["shape"]
    lines = [
        "training benchmark: LIF twin, {neurons} neurons, {steps} steps, "
        "{sequences} sequences in batches of {batch_size}".format(**shape),
        "",
        f"{'timing':<34} {'seconds':>10}",
    ]
    lines += [f"{k:<34} {v:>10.4f}" for k, v in result["seconds"].items()]
    lines += ["", f"{'figure':<34} {'value':>10}"]
    lines += [f"{k:<34} {v:>10.4g}" for k, v in result["figures"].items()]
    lines += [""] + [f"{k}: {v}" for k, v in result["environment"].items()]
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)
