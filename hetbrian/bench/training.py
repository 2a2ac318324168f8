"""Benchmark of the training methods: surrogate-gradient epochs and CMA-ES generations.

Figures (``run()`` returns them; :func:`format_table` lays them out):

- ``surrogate_seconds_per_epoch``: one epoch of
  :class:`~hetbrian.training.SurrogateGradientTrainer` (forward and backward pass of
  the NumPy twin, Adam) on a recurrent LIF network: N = 128 neurons, 500 steps of
  0.5 ms, 16 sequences in batches of 8, ``tau_m`` and ``V_th`` trained
  (``quick``: N = 32, 200 steps, 4 sequences in batches of 2);
  ``surrogate_us_per_neuron_step`` divides it by neurons x steps x sequences;
- ``snntorch_seconds_per_epoch`` and ``ratio_twin_over_snntorch``: the same epoch
  written for snnTorch (below) in float64, as the twin computes, and the twin's time
  over it (above 1: snnTorch is faster); ``..._float32`` the same in float32,
  snnTorch's native precision;
- ``ratio_recompiled_over_run_args``: a CMA-ES generation (8 members of a 50-neuron
  rate reservoir in one batched spec, 1000 steps) with a standalone binary that
  receives the values through ``run_args``, against the same generation with the
  project rebuilt (``cpp_standalone`` with ``rebuild=True``); needs a C++ compiler
  and is skipped with ``quick`` (one compilation takes tens of seconds on two cores).

The snnTorch network is the same network, not a look-alike: the script receives the
drawn spec (``tau_m``, ``V_th``, ``I_bias``, input and recurrent weights), the stimuli
and the targets. Voltages are measured from ``V_reset`` in units of the twin's
surrogate scale (20 mV), so that snnTorch's reset to zero is the reset to ``V_reset``
and ``snntorch.surrogate.fast_sigmoid(slope=100)`` is the twin's default fast sigmoid
(beta = 100 on ``(v - V_th) / 20 mV``). Trained, as in the twin: ``log tau_m`` and
``V_th / 50 mV`` per neuron (clipped to the same ``tau_bounds``), and the readout.
Each forward pass sets ``snntorch.Leaky``'s per-neuron decay
``beta = exp(-dt / tau_m)`` and threshold from them; per step the neuron receives
``(1 - beta)(E_L - V_reset + R_m I_ext) / 20 mV`` plus a fixed recurrent
``torch.nn.Linear`` of the spikes of the step before; the spike trace decays with
``1 - dt / 20 ms`` and is read every ``readout_dt``, standardized, into a linear
readout initialised by the same ridge fit; MSE loss; Adam at the same learning rate;
torch's autograd records the whole unrolled graph and differentiates it. What is not
the same, and cannot be with ``Leaky``: no refractory period (the twin holds ``v``
for 2 ms after a spike), the reset is detached from the graph (snnTorch's design;
the twin differentiates it), the leak is ``1 - exp(-dt / tau_m)`` rather than Euler's
``dt / tau_m``, and the recurrent matrix is dense (the twin sums over its 1664
synapses). The initial firing rates of the two (``..._initial_rate_hz``) show how
close the networks are.

The script runs in a separate interpreter, named by ``run(snntorch_python=...)`` or
the environment variable ``HETBRIAN_SNNTORCH_PYTHON`` (torch has no CPU build for
this package's Python on the development machine; a Python 3.11 virtualenv with
``torch`` and ``snntorch`` serves). Where neither names one, or the interpreter lacks
torch or snntorch, the snnTorch figures are absent and a note says why.

Threads: the twin runs with BLAS limited to ``blas_threads`` (default 1, through
threadpoolctl when installed); the snnTorch script calls ``torch.set_num_threads``
and ``torch.set_num_interop_threads`` with the same number and runs with
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to it. Timings are the best of a few
epochs (``repeats``) with :func:`time.perf_counter`, after a warm-up epoch on one
batch; the Python, torch and snnTorch versions and the thread settings are recorded
beside them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from brian2 import ms, mV, nA

from hetbrian import models, network
from hetbrian.bench import format_result
from hetbrian.errors import ParameterError
from hetbrian.heterogeneity import Gamma
from hetbrian.tasks import TaskBattery
from hetbrian.training import ReservoirObjective, SurrogateGradientTrainer

__all__ = ["run", "format_table", "SNNTORCH_PYTHON_VARIABLE"]

log = logging.getLogger(__name__)

#: Environment variable naming the interpreter that runs the snnTorch side.
SNNTORCH_PYTHON_VARIABLE = "HETBRIAN_SNNTORCH_PYTHON"

_LEARNING_RATE = 1e-2
_LIF = ("tau_m", "E_L", "V_th", "V_reset", "R_m", "I_bias")
_SNNTORCH_TIMEOUT = 600  # seconds; the full run takes about ten on two cores


#: The snnTorch side, run by another interpreter: ``python script npz json``.
_SNNTORCH_SCRIPT = r'''
import json
import platform
import sys
import time

try:
    import numpy as np
    import snntorch
    import torch
    from snntorch import surrogate
except ImportError as exc:
    print(json.dumps({"missing": str(exc)}))
    sys.exit(3)


class Network(torch.nn.Module):
    def __init__(self, d, dtype):
        super().__init__()
        self.dtype = dtype
        scale = float(d["surrogate_scale"])
        v_reset = d["V_reset"]
        beta = np.exp(-float(d["dt"]) / d["tau_m"])

        def tensor(values):
            return torch.tensor(values, dtype=dtype)

        # trained as the twin trains them: log tau_m, and V_th over its magnitude;
        # beta = exp(-dt / tau_m) and the threshold follow from them in features()
        self.log_tau = torch.nn.Parameter(tensor(np.log(d["tau_m"])))
        self.v_th_magnitude = float(d["V_th_magnitude"])
        self.v_th = torch.nn.Parameter(tensor(d["V_th"] / self.v_th_magnitude))
        self.v_reset, self.scale, self.dt = tensor(v_reset), scale, float(d["dt"])
        self.lif = snntorch.Leaky(
            beta=tensor(beta),
            threshold=tensor((d["V_th"] - v_reset) / scale),
            spike_grad=surrogate.fast_sigmoid(slope=float(d["surrogate_beta"])),
            reset_mechanism="zero",
        )
        n = beta.size
        drive = d["E_L"] - v_reset + d["R_m"] * d["I_bias"]
        self.register_buffer("bias", tensor(drive / scale))
        self.register_buffer("w_in", tensor(d["R_m"][:, None] * d["w_in"] / scale))
        self.register_buffer("v0", tensor((d["E_L"] - v_reset) / scale))
        self.recurrent = torch.nn.Linear(n, n, bias=False, dtype=dtype)
        w = np.zeros((n, n))
        np.add.at(w, (d["syn_j"], d["syn_i"]), d["syn_w"] / scale)  # (post, pre)
        with torch.no_grad():
            self.recurrent.weight.copy_(tensor(w))
        self.recurrent.weight.requires_grad_(False)
        self.trace_decay = 1.0 - float(d["dt"]) / float(d["spike_filter_tau"])
        self.trace_norm = 1.0 / float(d["spike_filter_tau"])
        self.every = int(d["readout_every"])
        self.readout = torch.nn.Linear(n, d["y"].shape[-1], dtype=dtype)
        self.register_buffer("mean", torch.zeros(n, dtype=dtype))
        self.register_buffer("std", torch.ones(n, dtype=dtype))

    def features(self, u, count=False):
        batch, steps, _ = u.shape
        beta = torch.exp(-self.dt * torch.exp(-self.log_tau))
        self.lif.beta = beta  # the buffers now carry the graph to log_tau, v_th
        v_th = self.v_th * self.v_th_magnitude
        self.lif.threshold = (v_th - self.v_reset) / self.scale
        drive = (1.0 - beta) * (u @ self.w_in.T + self.bias)
        mem = self.v0.expand(batch, -1)
        spk = torch.zeros_like(mem)
        trace = torch.zeros_like(mem)
        samples, n_spikes = [], 0.0
        for t in range(steps):
            if t % self.every == 0:  # the monitor reads at the start of the step
                samples.append(trace)
            spk, mem = self.lif(drive[:, t] + self.recurrent(spk), mem)
            spk = spk.to(self.dtype)  # snnTorch's fast sigmoid returns float32
            trace = self.trace_decay * trace + spk
            if count:
                n_spikes += float(spk.sum())
        return torch.stack(samples, dim=1) * self.trace_norm, n_spikes

    def forward(self, u):
        f, _ = self.features(u)
        return self.readout((f - self.mean) / self.std)


def initialise_readout(net, u, y, ridge):
    """Standardization and ridge weights from the initial network (as the twin)."""
    with torch.no_grad():
        f, n_spikes = net.features(u, count=True)
        flat = f.reshape(-1, f.shape[-1])
        mean, std = flat.mean(0), flat.std(0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        x = (flat - mean) / std
        t = y.reshape(-1, y.shape[-1])
        xm, tm = x.mean(0), t.mean(0)
        xc = x - xm
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        w = torch.linalg.solve(xc.T @ xc + ridge * x.shape[0] * eye, xc.T @ (t - tm))
        net.mean.copy_(mean)
        net.std.copy_(std)
        net.readout.weight.copy_(w.T)
        net.readout.bias.copy_(tm - xm @ w)
    return n_spikes / (u.shape[0] * u.shape[1] * f.shape[-1])


def epoch(net, optimizer, u, y, batch_size, generator, log_tau_bounds):
    t0 = time.perf_counter()
    order = torch.randperm(len(u), generator=generator)
    losses = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        optimizer.zero_grad()
        loss = torch.mean((net(u[idx]) - y[idx]) ** 2)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            net.log_tau.clamp_(*log_tau_bounds)  # the twin's tau_bounds
        losses.append(float(loss))
    return time.perf_counter() - t0, sum(losses) / len(losses)


def measure(d, dtype, repeats, batch_size):
    torch.manual_seed(0)
    net = Network(d, dtype)
    u = torch.tensor(d["u"], dtype=dtype)
    y = torch.tensor(d["y"], dtype=dtype)
    ridge = float(d["ridge"])
    spikes_per_step = initialise_readout(net, u[:batch_size], y[:batch_size], ridge)
    params = [net.log_tau, net.v_th, *net.readout.parameters()]
    optimizer = torch.optim.Adam(params, lr=float(d["learning_rate"]))
    generator = torch.Generator().manual_seed(0)
    bounds = [float(b) for b in np.log(d["tau_bounds"])]
    args = batch_size, generator, bounds
    epoch(net, optimizer, u[:batch_size], y[:batch_size], *args)
    times, losses = [], []
    for _ in range(repeats):
        seconds, loss = epoch(net, optimizer, u, y, *args)
        times.append(seconds)
        losses.append(loss)
    return {
        "seconds": min(times),
        "all_seconds": times,
        "losses": losses,
        "initial_rate_hz": spikes_per_step / float(d["dt"]),
    }


def main(npz_path, out_path):
    d = dict(np.load(npz_path))
    threads = int(d["threads"])
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    result = {
        "torch": torch.__version__,
        "snntorch": snntorch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    for name in ("float64", "float32"):
        dtype = getattr(torch, name)
        result[name] = measure(d, dtype, int(d["repeats"]), int(d["batch_size"]))
    with open(out_path, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''


def _lif_problem(n, steps, sequences):
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
    rng = np.random.default_rng(0)
    u = rng.standard_normal((sequences, steps, 1))
    y = np.roll(u[:, ::2], 3, axis=1)
    return network.batch([config]), settings, u, y


def _surrogate_epoch(spec, settings, u, y, batch_size, repeats):
    """Best epoch of the twin's trainer after a warm-up epoch on one batch.

    Also returns the trainer and the initial firing rate (Hz) on that batch.
    """
    trainer = SurrogateGradientTrainer(
        spec, settings, ("tau_m", "V_th"), learning_rate=_LEARNING_RATE
    )
    first = trainer.twin.forward(u[:batch_size], trainer.network_values())
    rate = float(first.spikes.mean()) / float(settings.dt)
    trainer.fit(u[:batch_size], y[:batch_size], epochs=1, batch_size=batch_size)
    history = trainer.fit(u, y, epochs=repeats, batch_size=batch_size)
    return min(record["seconds"] for record in history[1:]), trainer, rate


def _snntorch_python(snntorch_python):
    """The interpreter for the snnTorch side, and why there is none."""
    if snntorch_python is None:
        snntorch_python = os.environ.get(SNNTORCH_PYTHON_VARIABLE) or None
    if snntorch_python is None:
        if all(importlib.util.find_spec(m) for m in ("torch", "snntorch")):
            return sys.executable, None
        return None, (
            f"{SNNTORCH_PYTHON_VARIABLE} is unset and this Python "
            f"({platform.python_version()}) lacks torch or snntorch; point it (or "
            "run(snntorch_python=...)) at a Python with both, such as a Python 3.11 "
            "virtualenv with `pip install torch==2.13.0 snntorch` (docs/training.md)"
        )
    path = shutil.which(snntorch_python) or snntorch_python
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return None, f"snntorch_python={snntorch_python!r} is not an executable file"
    return path, None


def _snntorch_epoch(python, trainer, u, y, batch_size, repeats, threads):
    """Run the snnTorch script on the trainer's network; its JSON, or a reason."""
    spec, twin = trainer.twin.spec, trainer.twin
    arrays = {name: np.asarray(spec.parameters[name], dtype=float) for name in _LIF}
    arrays.update(
        w_in=np.asarray(spec.input_weights, dtype=float),
        syn_i=np.asarray(spec.syn_i),
        syn_j=np.asarray(spec.syn_j),
        syn_w=np.asarray(spec.syn_w, dtype=float),
        u=u,
        y=y,
        dt=float(twin.settings.dt),
        readout_every=int(round(float(twin.settings.readout_dt / twin.settings.dt))),
        spike_filter_tau=float(twin.settings.spike_filter_tau),
        surrogate_scale=float(twin.threshold_scale),
        surrogate_beta=float(twin.surrogate.beta),
        V_th_magnitude=float(np.mean(np.abs(spec.parameters["V_th"]))),  # as theta
        tau_bounds=np.asarray(trainer.tau_bounds, dtype=float),
        learning_rate=_LEARNING_RATE,
        ridge=trainer.ridge,
        batch_size=batch_size,
        repeats=repeats,
        threads=threads,
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "snntorch_epoch.py")
        with open(script, "w") as fh:
            fh.write(_SNNTORCH_SCRIPT)
        data = os.path.join(folder, "network.npz")
        np.savez(data, **arrays)
        out = os.path.join(folder, "result.json")
        try:
            proc = subprocess.run(
                [python, script, data, out],
                capture_output=True,
                text=True,
                env=env,
                timeout=_SNNTORCH_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{python} could not run the snnTorch script: {exc}"
        if proc.returncode == 3:
            missing = json.loads(proc.stdout.strip().splitlines()[-1])["missing"]
            return None, f"{python} lacks torch or snntorch ({missing})"
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
            return (
                None,
                f"the snnTorch script failed (exit {proc.returncode}): {tail[0]}",
            )
        with open(out) as fh:
            return json.load(fh), None


def _blas_limit(blas_threads, notes):
    """A context that limits BLAS threads (threadpoolctl), or one that does nothing."""
    if blas_threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it BLAS is not limited
        notes.append("threadpoolctl not installed: BLAS threads not limited")
        return contextlib.nullcontext()
    return threadpool_limits(limits=blas_threads, user_api="blas")


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


def run(quick=False, snntorch_python=None, repeats=None, blas_threads=1):
    """Measure the figures listed in the module docstring.

    Parameters
    ----------
    quick : bool
        Smaller sizes, and no standalone compilation.
    snntorch_python : str, optional
        Interpreter with ``torch`` and ``snntorch`` that runs the snnTorch side
        (default: the variable ``HETBRIAN_SNNTORCH_PYTHON``, else this interpreter
        when it has both). Without one the snnTorch figures are left out, with a
        note saying why.
    repeats : int, optional
        Epochs timed on each side after the warm-up; the best counts (default 3,
        ``quick``: 2).
    blas_threads : int or None
        Threads of the twin's BLAS (threadpoolctl) and of torch (default 1: on a
        shared machine more threads slow down erratically). ``None`` leaves the
        BLAS as it is and gives torch one thread per CPU.

    Returns
    -------
    dict
        ``shape``, ``seconds``, ``figures``, ``environment``, ``notes``.
    """
    if repeats is None:
        repeats = 2 if quick else 3
    if not isinstance(repeats, int) or repeats < 1:
        raise ParameterError(f"repeats={repeats!r}; expected an integer >= 1")
    n, steps, sequences, batch_size = (32, 200, 4, 2) if quick else (128, 500, 16, 8)
    seconds, figures, notes = {}, {}, []
    environment = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "blas_threads_limit": blas_threads,
    }
    spec, settings, u, y = _lif_problem(n, steps, sequences)
    with _blas_limit(blas_threads, notes):
        epoch, trainer, rate = _surrogate_epoch(
            spec, settings, u, y, batch_size, repeats
        )
    seconds["surrogate_epoch"] = epoch
    figures["surrogate_seconds_per_epoch"] = epoch
    figures["surrogate_us_per_neuron_step"] = epoch / (n * steps * sequences) * 1e6
    figures["twin_initial_rate_hz"] = rate
    figures["twin_last_epoch_loss"] = trainer.history[-1]["loss"]
    python, reason = _snntorch_python(snntorch_python)
    if python is not None:
        threads = blas_threads or os.cpu_count() or 1
        snn, reason = _snntorch_epoch(
            python, trainer, u, y, batch_size, repeats, threads
        )
    if reason:
        notes.append(f"snnTorch comparison not measured: {reason}")
    else:
        for dtype, suffix in (("float64", ""), ("float32", "_float32")):
            seconds[f"snntorch_epoch{suffix}"] = snn[dtype]["seconds"]
            figures[f"snntorch_seconds_per_epoch{suffix}"] = snn[dtype]["seconds"]
            figures[f"ratio_twin_over_snntorch{suffix}"] = epoch / snn[dtype]["seconds"]
            figures[f"snntorch_initial_rate_hz{suffix}"] = snn[dtype]["initial_rate_hz"]
            figures[f"snntorch_last_epoch_loss{suffix}"] = snn[dtype]["losses"][-1]
        environment["snntorch_python"] = f"{python} (Python {snn['python']})"
        environment["torch"] = snn["torch"]
        environment["snntorch"] = snn["snntorch"]
        environment["torch_threads"] = (
            f"{snn['torch_threads']} intra-op, {snn['torch_interop_threads']} "
            f"inter-op, OMP_NUM_THREADS=MKL_NUM_THREADS={threads}"
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
            "repeats": repeats,
        },
        "seconds": seconds,
        "figures": figures,
        "environment": environment,
        "notes": notes,
    }


def format_table(result):
    """Lay out the result of :func:`run` as a plain-text table (for the CLI)."""
    title = (
        "training benchmark: LIF twin, {neurons} neurons, {steps} steps, "
        "{sequences} sequences in batches of {batch_size}".format(**result["shape"])
    )
    return format_result(title, result)
