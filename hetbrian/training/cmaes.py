"""CMA-ES over per-neuron log time constants, one batched simulation per generation.

Search space. For a reservoir of ``N`` neurons the search vector is
``x = (log(tau_1 / tau_ref), ..., log(tau_N / tau_ref), h_1, ...)``: log time constants
relative to a reference (the initial mean), optionally followed by log-factors of
global hyperparameters (``"input_gain"`` scales every input weight by ``exp(h)``,
``"recurrent_gain"`` every recurrent weight). CMA-ES (Hansen and Ostermeier 2001,
through the ``cma`` package) samples each generation
``x_k = m + sigma B D z_k``, ``z_k ~ N(0, I)``, ``k = 1..lambda``, ranks the
population by the objective and updates the mean ``m``, the step size ``sigma`` and the
covariance ``C = B D^2 B^T``.

One generation is one simulation. :class:`ReservoirObjective` turns the ``lambda``
members into ``lambda`` instances of one structure (same connectivity and input
weights, other time constants), merges them with :func:`hetbrian.network.batch` into
one block-diagonal spec, and runs it once through an engine of
:mod:`hetbrian.engines`: with ``cpp_standalone`` the binary is compiled for the first
generation and every later one only receives new values through ``run_args``.

Objective. Each member's features are read out by
:func:`hetbrian.readout.ridge_readout` on a training battery; the objective is
``1 - mean(r2_clipped)`` over the tasks, scored on the last quarter of the training
stimulus (the validation block: the readout is fitted on the first three quarters).
The final score of the best member is computed on a held-out stimulus that the search
never saw (:meth:`ReservoirObjective.score`).

Checkpoints. After every generation :class:`CMAES` pickles the ``cma`` strategy (with
its own random generator inside: the search reads no global random state) and the
history to a temporary file and renames it over the checkpoint (``os.replace``,
atomic), so a crash leaves the previous generation's checkpoint intact and a resumed
search repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
import time
from pathlib import Path

import cma
import numpy as np
from brian2 import second

from hetbrian.errors import DataError, ParameterError, SpecError
from hetbrian.network import NetworkInstance, SimulationSettings, batch, quantity_in
from hetbrian.readout import ridge_readout
from hetbrian.stimuli import readout_stride, subsample
from hetbrian.tasks import TaskBattery

__all__ = ["CMAES", "CMAResult", "ReservoirObjective", "HYPERPARAMETERS"]

log = logging.getLogger(__name__)

#: Global hyperparameters the search may scale (log-factors).
HYPERPARAMETERS = ("input_gain", "recurrent_gain")

_CHECKPOINT_FORMAT = 1


class _Randn:
    """Picklable normal sampler for ``cma`` (its ``randn`` option), own generator."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape):
        return self.rng.standard_normal(shape)


@dataclasses.dataclass
class CMAResult:
    """Outcome of :meth:`CMAES.run`.

    Attributes
    ----------
    x_best : ndarray
        Best search vector seen.
    f_best : float
        Its objective value.
    mean : ndarray
        Final distribution mean.
    history : list of dict
        Per generation: ``generation``, ``f_min``, ``f_median``, ``sigma``,
        ``seconds`` (objective time).
    evaluations : int
        Objective evaluations (population members) in all.
    """

    x_best: np.ndarray
    f_best: float
    mean: np.ndarray
    history: list
    evaluations: int


class CMAES:
    """CMA-ES that evaluates a whole population in one call and checkpoints.

    Parameters
    ----------
    objective : callable
        ``objective(population) -> losses``: ``population`` of shape
        (lambda, dimension), losses of shape (lambda,), lower is better. Called once
        per generation.
    x0 : array_like
        Initial mean.
    sigma0 : float
        Initial step size (in the units of ``x``; for log time constants 0.5 is a
        factor of about 1.6).
    popsize : int, optional
        ``lambda`` (default ``cma``'s ``4 + 3 ln(dimension)``).
    bounds : tuple of float, optional
        Lower and upper bound of every coordinate.
    seed : int
        Seed of the strategy's own normal sampler.
    checkpoint : str or Path, optional
        File written after every generation; resumed from when it exists.
    options : dict, optional
        Further ``cma`` options (``tolfun``, ``CMA_diagonal``, ...).
    """

    def __init__(
        self,
        objective,
        x0,
        sigma0,
        *,
        popsize=None,
        bounds=None,
        seed=0,
        checkpoint=None,
        options=None,
    ):
        if not callable(objective):
            raise ParameterError(f"objective={objective!r}; expected a callable")
        x0 = np.asarray(x0, dtype=float)
        if x0.ndim != 1 or x0.size < 2 or not np.all(np.isfinite(x0)):
            raise ParameterError(
                f"x0 has shape {x0.shape}; expected a finite vector of length >= 2"
            )
        if not (np.isfinite(sigma0) and sigma0 > 0):
            raise ParameterError(f"sigma0={sigma0!r}; expected a number > 0")
        self.objective = objective
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        opts = {"randn": _Randn(seed), "verbose": -9, "seed": seed}
        if popsize is not None:
            if not isinstance(popsize, int) or popsize < 2:
                raise ParameterError(f"popsize={popsize!r}; expected an integer >= 2")
            opts["popsize"] = popsize
        if bounds is not None:
            low, high = (float(b) for b in bounds)
            if not low < high:
                raise ParameterError(f"bounds={bounds!r}; expected low < high")
            opts["bounds"] = [low, high]
        opts.update(options or {})
        self.history = []
        self.evaluations = 0
        if self.checkpoint is not None and self.checkpoint.exists():
            self._load()
            log.info(
                "resumed CMA-ES from %s at generation %d",
                self.checkpoint,
                len(self.history),
            )
        else:
            self.es = cma.CMAEvolutionStrategy(x0, float(sigma0), opts)

    def _load(self):
        with open(self.checkpoint, "rb") as fh:
            state = pickle.load(fh)
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise DataError(
                f"checkpoint {self.checkpoint} has format {state.get('format')!r}; "
                f"expected {_CHECKPOINT_FORMAT}"
            )
        self.es = state["es"]
        self.history = state["history"]
        self.evaluations = state["evaluations"]

    def _save(self):
        state = {
            "format": _CHECKPOINT_FORMAT,
            "es": self.es,
            "history": self.history,
            "evaluations": self.evaluations,
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=self.checkpoint.parent, prefix=self.checkpoint.name, suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.checkpoint)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @property
    def generation(self):
        """Generations completed so far (resumed ones included)."""
        return len(self.history)

    def run(self, generations):
        """Run until ``generations`` generations are complete (counting resumed ones).

        Returns
        -------
        CMAResult
        """
        if not isinstance(generations, int) or generations < 0:
            raise ParameterError(f"generations={generations!r}; expected an int >= 0")
        while self.generation < generations and not self.es.stop():
            population = np.asarray(self.es.ask())
            t0 = time.perf_counter()
            losses = np.asarray(self.objective(population), dtype=float)
            seconds = time.perf_counter() - t0
            if losses.shape != (len(population),):
                raise DataError(
                    f"objective returned shape {losses.shape}; expected "
                    f"({len(population)},)"
                )
            losses = np.where(np.isfinite(losses), losses, np.inf)
            self.es.tell(list(population), list(losses))
            self.evaluations += len(population)
            record = {
                "generation": self.generation,
                "f_min": float(losses.min()),
                "f_median": float(np.median(losses)),
                "sigma": float(self.es.sigma),
                "seconds": seconds,
            }
            self.history.append(record)
            log.info(
                "generation %d: best %.5g, median %.5g, sigma %.3g",
                record["generation"],
                record["f_min"],
                record["f_median"],
                record["sigma"],
            )
            if self.checkpoint is not None:
                self._save()
        result = self.es.result
        return CMAResult(
            x_best=np.asarray(result.xbest, dtype=float),
            f_best=float(result.fbest),
            mean=np.asarray(self.es.mean, dtype=float),
            history=list(self.history),
            evaluations=self.evaluations,
        )


class ReservoirObjective:
    """Readout score of reservoirs whose time constants are a CMA-ES population.

    Parameters
    ----------
    instance : NetworkInstance
        The reservoir (from :func:`hetbrian.network.draw`); its connectivity and
        input weights are kept, its time constants searched.
    stimulus : ndarray, shape (n_rows, K)
        Training stimulus (one row per ``stimulus_dt``).
    battery : TaskBattery
        Tasks of the objective; their targets are computed from ``stimulus`` at the
        readout times.
    settings : SimulationSettings
    parameter : str
        The time constant searched (default: the model's ``noise_tau``, ``tau`` or
        ``tau_m``).
    hyperparameters : sequence of str
        Global log-factors appended to the search vector, from
        :data:`HYPERPARAMETERS`.
    reference : Quantity, optional
        ``tau_ref`` (default: the mean of the instance's values).
    stimulus_dt : Quantity, optional
        Default ``settings.dt``.
    engine : str
        Engine of :mod:`hetbrian.engines` (``"runtime"``, ``"cython"``,
        ``"cpp_standalone"``); built once, reused by every generation.
    washout : int
        Readout samples discarded at the start.
    engine_options : dict, optional
        Passed to :func:`hetbrian.engines.get_engine`.
    """

    def __init__(
        self,
        instance,
        stimulus,
        battery,
        settings,
        *,
        parameter=None,
        hyperparameters=(),
        reference=None,
        stimulus_dt=None,
        engine="runtime",
        washout=0,
        engine_options=None,
    ):
        if not isinstance(instance, NetworkInstance):
            raise ParameterError(f"instance={instance!r}; expected a NetworkInstance")
        if not isinstance(battery, TaskBattery):
            raise ParameterError(f"battery={battery!r}; expected a TaskBattery")
        if not isinstance(settings, SimulationSettings):
            raise ParameterError(f"settings={settings!r}; expected SimulationSettings")
        model = instance.config.model
        parameter = model.noise_tau if parameter is None else parameter
        if parameter not in model.parameters:
            raise ParameterError(
                f"parameter={parameter!r}; expected one of {sorted(model.parameters)}"
            )
        for h in hyperparameters:
            if h not in HYPERPARAMETERS:
                raise ParameterError(
                    f"hyperparameters names {h!r}; expected among {HYPERPARAMETERS}"
                )
        if "recurrent_gain" in hyperparameters and instance.syn_w.size == 0:
            raise SpecError("recurrent_gain: the instance has no recurrent synapses")
        self.instance = instance
        self.parameter = parameter
        self.hyperparameters = tuple(hyperparameters)
        self.settings = settings
        self.battery = battery
        self.washout = int(washout)
        self.stimulus_dt = settings.dt if stimulus_dt is None else stimulus_dt
        quantity_in("stimulus_dt", self.stimulus_dt, second)
        self.stimulus = np.ascontiguousarray(stimulus, dtype=float)
        values = instance.parameters[parameter]
        self.reference = (
            float(np.mean(values))
            if reference is None
            else float(quantity_in("reference", reference, second))
        )
        self.engine_name = engine
        self.engine_options = dict(engine_options or {})
        self._compiled = None
        self.simulations = 0
        self.simulated_seconds = 0.0

    @property
    def dimension(self):
        """Length of the search vector."""
        return self.instance.n_neurons + len(self.hyperparameters)

    def x0(self):
        """Search vector of the instance as drawn (hyperparameter factors 0)."""
        tau = self.instance.parameters[self.parameter]
        return np.concatenate(
            [np.log(tau / self.reference), np.zeros(len(self.hyperparameters))]
        )

    def decode(self, x):
        """The instance with the values of search vector ``x``."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dimension,):
            raise ParameterError(f"x has shape {x.shape}; expected ({self.dimension},)")
        n = self.instance.n_neurons
        params = dict(self.instance.parameters)
        params[self.parameter] = self.reference * np.exp(x[:n])
        w_in, syn_w = self.instance.input_weights, self.instance.syn_w
        for h, factor in zip(self.hyperparameters, np.exp(x[n:]), strict=True):
            if h == "input_gain":
                w_in = w_in * factor
            else:
                syn_w = syn_w * factor
        return dataclasses.replace(
            self.instance, parameters=params, input_weights=w_in, syn_w=syn_w
        )

    def _simulate(self, spec, stimulus):
        """Run ``spec``: the one place that chooses how (engine, build reuse)."""
        from hetbrian.engines import get_engine

        t0 = time.perf_counter()
        key = spec.structure_key(self.settings, stimulus.shape[0])
        if self._compiled is None or self._compiled[0] != key:
            engine = get_engine(self.engine_name, **self.engine_options)
            self._compiled = (
                key,
                engine.build(spec, stimulus, self.settings, self.stimulus_dt),
            )
        features = self._compiled[1].run(spec, stimulus=stimulus)
        self.simulations += 1
        self.simulated_seconds += time.perf_counter() - t0
        return features

    def _targets(self, stimulus):
        stride = readout_stride(self.settings.readout_dt, self.stimulus_dt)
        return self.battery.targets(subsample(stimulus, stride))

    def evaluate(self, population, stimulus=None):
        """Readout scores of every member, from one batched simulation.

        Returns
        -------
        list of xarray.Dataset
            One :func:`~hetbrian.readout.ridge_readout` result per member.
        """
        population = np.atleast_2d(np.asarray(population, dtype=float))
        stimulus = self.stimulus if stimulus is None else np.asarray(stimulus, float)
        spec = batch([self.decode(x) for x in population])
        features = self._simulate(spec, stimulus)
        targets = self._targets(stimulus)
        names = list(self.settings.features)
        scores = []
        for part in features.split():
            matrix = np.concatenate([part["data"][k] for k in names], axis=1)
            n = min(matrix.shape[0], targets.valid.stop)
            if n < targets.valid.stop:
                raise DataError(
                    f"the run gave {matrix.shape[0]} readout samples; the targets "
                    f"need {targets.valid.stop}"
                )
            scores.append(
                ridge_readout(
                    matrix[: targets.valid.stop],
                    targets,
                    tasks=self.battery,
                    washout=self.washout,
                )
            )
        return scores

    def __call__(self, population):
        """``1 - mean r2_clipped`` over the battery, per member (lower is better)."""
        scores = self.evaluate(population)
        return np.array([1.0 - float(s["r2_clipped"].mean()) for s in scores])

    def score(self, x, stimulus):
        """Held-out readout scores of one search vector on another stimulus."""
        return self.evaluate(np.asarray(x)[None], stimulus=stimulus)[0]

    def spec(self, x):
        """A one-instance spec with the values of ``x`` (for any engine)."""
        return batch([self.decode(x)])
