"""Quenched against trained time constants: the ``quenched_vs_trained`` protocol.

One protocol file (``[protocol] kind = "quenched_vs_trained"``) names a reservoir, a
stimulus, a task battery, the subset of the battery used for training, and the
conditions to compare. Every condition ends in one network of the same connectivity
and input weights per seed, which is then scored the same way:

- ``homogeneous``, ``lognormal``, ``gamma``, ``measured``: quenched time constants
  drawn once at the protocol's mean and cv (``measured``: the shape of the shipped
  fit to the Allen cell table, moved to that mean and cv), never trained;
- ``cmaes_from_homogeneous``, ``cmaes_from_heterogeneous``: CMA-ES over the per-neuron
  log time constants (:class:`~hetbrian.training.CMAES`), weights fixed;
- ``surrogate_tau_from_homogeneous``, ``surrogate_tau_from_heterogeneous``: BPTT with
  Adam through the differentiable twin
  (:class:`~hetbrian.training.SurrogateGradientTrainer`), time constants and the
  readout trained, input and recurrent weights fixed;
- ``surrogate_all_from_homogeneous``, ``surrogate_all_from_heterogeneous``: the same
  with the input and recurrent weights trained too.

The heterogeneous start is the ``time_constants.start_profile`` family at the same
mean and cv. Both training methods see the same training stimulus: CMA-ES as one
sequence (readout fitted on its first three quarters, scored on the last quarter),
the surrogate trainer cut into ``training.sequences`` equal sequences.

Scoring. The network of each condition is simulated by Brian2 on a held-out
stimulus (``stimulus.test_seed``) that no training step saw. A ridge readout is
fitted per task on the first part of that run and scored on its last
``readout.test_fraction`` (``r2_clipped``, as in :mod:`hetbrian.protocols`), for every
task of the battery. The mean over the tasks used in training is ``score_trained``,
the mean over the remaining tasks ``score_other``. The readout a surrogate trainer
learned is not used for scoring: every condition gets the same freshly fitted ridge
readout, so what is compared is the network.

Cost. ``train_simulations``: batched simulation calls during training (one per
CMA-ES generation; one twin forward pass per mini-batch, plus one for the readout
initialisation); ``train_network_runs``: network instances times sequences
simulated; ``train_seconds``: wall-clock of those simulations and updates;
``n_trained_parameters``: trained network scalars (the readout excluded: every
condition's readout is refitted).

Distribution. The final time constants are compared with the best fit (by AIC) of
the shipped table for ``biology.species`` / ``biology.cell_class`` through
:func:`hetbrian.biology.distribution_distance` (KS statistic, Wasserstein distance in
ms and on a log scale).

Files. Each finished (condition, seed) is written at once to
``OUT/conditions/<condition>-seed<k>.nc`` (temporary name, then ``os.replace``); a
rerun skips finished ones, and CMA-ES searches resume from their per-generation
checkpoints in ``OUT/checkpoints``. The merged dataset ``OUT/<name>.nc`` has dimensions
``condition``, ``seed``, ``task`` and ``neuron``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import platform
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr
from brian2 import ms, second

from hetbrian.engines import get_engine
from hetbrian.errors import HetbrianError, ProtocolError
from hetbrian.heterogeneity import make_profile
from hetbrian.network import SimulationSettings, batch
from hetbrian.protocols import SCHEMA as SWEEP_SCHEMA
from hetbrian.protocols import reservoir_config
from hetbrian.readout import ridge_readout
from hetbrian.tasks import TaskBattery
from hetbrian.units import parse_quantity

__all__ = [
    "CONDITIONS",
    "Comparison",
    "load_comparison",
    "run_comparison",
    "merge_conditions",
    "summary_text",
    "plot_comparison",
    "is_comparison",
]

logger = logging.getLogger(__name__)

KIND = "quenched_vs_trained"


@dataclass(frozen=True)
class Condition:
    """How one condition obtains its time constants (and weights)."""

    method: str  # "quenched", "cmaes" or "surrogate"
    start: str  # a profile family, or "heterogeneous" for time_constants.start_profile
    train_weights: bool = False


#: Every condition a protocol may name, in the order results are reported.
CONDITIONS = {
    "homogeneous": Condition("quenched", "homogeneous"),
    "lognormal": Condition("quenched", "lognormal"),
    "gamma": Condition("quenched", "gamma"),
    "measured": Condition("quenched", "measured"),
    "cmaes_from_homogeneous": Condition("cmaes", "homogeneous"),
    "cmaes_from_heterogeneous": Condition("cmaes", "heterogeneous"),
    "surrogate_tau_from_homogeneous": Condition("surrogate", "homogeneous"),
    "surrogate_tau_from_heterogeneous": Condition("surrogate", "heterogeneous"),
    "surrogate_all_from_homogeneous": Condition("surrogate", "homogeneous", True),
    "surrogate_all_from_heterogeneous": Condition("surrogate", "heterogeneous", True),
}

_PROFILES = ("homogeneous", "lognormal", "gamma", "measured")

# section -> key -> (kind, default); None: required. Kinds as in hetbrian.protocols:
# "int", "float", "str", "bool", "list", "table", ("q", unit), ("qmodel", role),
# ("enum", choices).
SCHEMA = {
    "protocol": {
        "name": ("str", None),
        "kind": (("enum", (KIND,)), None),
        "claim": ("str", ""),
        "description": ("str", ""),
    },
    "model": {
        "type": (("enum", ("rate", "lif")), "rate"),
        "transfer": (("enum", ("tanh", "sigmoid", "relu")), "tanh"),
        "parameters": ("table", {}),
    },
    # the sweep protocols' network section, without noise (the twin has none)
    "network": {k: v for k, v in SWEEP_SCHEMA["network"].items() if k != "noise"},
    "time_constants": {
        "parameter": ("str", ""),
        "mean": (("q", second), 20 * ms),
        "cv": ("float", 0.6),
        "lower": (("q", second), 1 * ms),
        "upper": (("q", second), 200 * ms),
        "start_profile": (("enum", ("lognormal", "gamma", "measured")), "gamma"),
    },
    "biology": {
        "species": ("str", "mixed"),
        "cell_class": ("str", "all"),
    },
    "stimulus": {
        "generators": ("list", None),
        "train_duration": (("q", second), None),
        "test_duration": (("q", second), None),
        "train_seed": ("int", 1),
        "test_seed": ("int", 2),
    },
    "simulation": {
        "dt": (("q", second), 0.5 * ms),
        "readout_dt": (("q", second), 1 * ms),
        "features": ("list", []),
        "spike_filter_tau": (("q", second), 20 * ms),
    },
    "tasks": {
        "memory_delays": ("list", [1, 21]),
        "prediction_horizons": ("list", [1, 6]),
        "power_degrees": ("list", [2, 3]),
        "delayed_power_delays": ("list", [1, 6]),
        "delayed_power_degrees": ("list", [2]),
        "legendre_delays": ("list", [0, 5]),
        "legendre_degrees": ("list", [2, 3]),
        "product_delays": ("list", [0, 3]),
        "narma_orders": ("list", [2, 5]),
    },
    "training": {
        "families": ("list", ["memory"]),
        "delays": ("list", []),
        "sequences": ("int", 8),
    },
    "cmaes": {
        "generations": ("int", 30),
        "popsize": ("int", 16),
        "sigma0": ("float", 0.5),
    },
    "surrogate": {
        "epochs": ("int", 30),
        "batch_size": ("int", 4),
        "learning_rate": ("float", 0.02),
    },
    "readout": {
        "washout": (("q", second), 200 * ms),
        "test_fraction": ("float", 0.25),
    },
    "comparison": {
        "conditions": ("list", list(CONDITIONS)),
        "seeds": ("list", [0]),
    },
    "engine": {"name": (("enum", ("runtime", "cython", "cpp_standalone")), "runtime")},
    "output": {"name": ("str", None)},
}

_RANGE_KEYS = {
    "memory_delays",
    "prediction_horizons",
    "delayed_power_delays",
    "legendre_delays",
    "product_delays",
}

# lists that may be empty: a task family dropped from the grid, features left to the
# model's default, no restriction of the trained delays
_MAY_BE_EMPTY = {"simulation.features", "training.delays"} | {
    f"tasks.{key}" for key in SCHEMA["tasks"]
}


def _fail(path, message):
    raise ProtocolError(f"{path}: {message}")


def _check(path, kind, value, model_type):
    """Validate one value as the sweep protocols do; lists must not be empty."""
    from hetbrian.protocols import _check_value

    value = _check_value(path, kind, value, model_type, parameter_unit=None)
    if kind == "list" and not value and path not in _MAY_BE_EMPTY:
        _fail(path, "empty; expected at least one value")
    return value


@dataclass
class Comparison:
    """A validated ``quenched_vs_trained`` protocol.

    Attributes
    ----------
    config : dict
        Raw TOML values after the ``[quick]`` overrides.
    text : str
        The file's text.
    quick : bool
    settings : dict
        Parsed values by section, with the built objects (``model``, ``stimulus``,
        ``battery``, ``train_battery``, ``simulation``, ``fit``).
    """

    config: dict
    text: str
    quick: bool
    settings: dict

    @property
    def name(self):
        return self.config["output"]["name"]

    @property
    def conditions(self):
        return list(self.settings["comparison"]["conditions"])

    @property
    def seeds(self):
        return list(self.settings["comparison"]["seeds"])

    @property
    def digest(self):
        """Hash of the effective settings (identifies compatible condition files)."""
        text = json.dumps(self.config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_comparison(source):
    """Whether a protocol file (or TOML text) declares ``kind = "quenched_vs_trained"``.

    An unreadable file or invalid TOML gives ``False``: the caller's own loader then
    reports the error.
    """
    if isinstance(source, Comparison):
        return True
    try:
        text = _read(source)[0]
        config = tomllib.loads(text)
    except (ProtocolError, tomllib.TOMLDecodeError, OSError, TypeError):
        return False
    protocol = config.get("protocol", {})
    return isinstance(protocol, dict) and protocol.get("kind") == KIND


def _read(source):
    path = None if "\n" in str(source) else Path(source)
    if path is not None:
        if not path.is_file():
            raise ProtocolError(f"protocol file {str(path)!r} does not exist")
        return path.read_text(), path
    return str(source), None


def _apply_quick(config, overrides):
    if not isinstance(overrides, dict):
        _fail("quick", f"{overrides!r} is not a table")
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        where = f"quick.{dotted!r}"
        if len(parts) != 2 or parts[0] not in SCHEMA or parts[0] == "quick":
            _fail(where, "expected a key path 'section.key' of a protocol setting")
        section, key = parts
        if key not in SCHEMA[section]:
            _fail(where, f"unknown key; expected one of {sorted(SCHEMA[section])}")
        config.setdefault(section, {})[key] = value


def load_comparison(path_or_text, quick=False):
    """Read and validate a ``quenched_vs_trained`` protocol before anything runs.

    Every key is checked: an unknown section or key, a value without its unit or with
    the wrong one, an empty list, an unknown condition, a training subset that selects
    no task or every task, a stimulus too short for the battery: each raises
    :class:`~hetbrian.errors.ProtocolError` naming the key path.

    Parameters
    ----------
    path_or_text : str or Path
        A ``.toml`` file, or TOML text.
    quick : bool
        Apply the file's ``[quick]`` overrides (``"section.key" = value``).

    Returns
    -------
    Comparison
    """
    text, path = _read(path_or_text)
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProtocolError(f"{path or 'protocol'}: not valid TOML: {err}") from err
    for section in config:
        if section not in SCHEMA and section != "quick":
            _fail(section, f"unknown section; expected one of {sorted(SCHEMA)}")
    overrides = config.pop("quick", {})
    if quick:
        _apply_quick(config, overrides)
    else:
        _apply_quick(copy.deepcopy(config), overrides)  # validate the keys anyway
    return Comparison(config, text, bool(quick), _parse(config))


def _parse(config):
    from hetbrian.protocols import (
        MODEL_FACTORIES,
        _battery,
        _stimulus,
        check_known_keys,
    )

    check_known_keys(config, SCHEMA)
    model_type = config.get("model", {}).get("type", "rate")
    if model_type not in ("rate", "lif"):
        _fail("model.type", f"{model_type!r} is not one of ['rate', 'lif']")
    parsed = {}
    for section, keys in SCHEMA.items():
        raw = config.get(section, {})
        out = {}
        for key, (kind, default) in keys.items():
            path = f"{section}.{key}"
            if key in raw:
                out[key] = _check(path, kind, raw[key], model_type)
            elif default is None:
                _fail(path, "missing; this key has no default")
            else:
                out[key] = default
        parsed[section] = out

    # model and its trained parameter
    kwargs = {}
    factory = MODEL_FACTORIES[model_type]
    probe = factory(parsed["model"]["transfer"]) if model_type == "rate" else factory()
    for name, value in parsed["model"]["parameters"].items():
        path = f"model.parameters.{name}"
        if name not in probe.parameters:
            _fail(
                path, f"unknown parameter; expected one of {sorted(probe.parameters)}"
            )
        try:
            kwargs[name] = parse_quantity(value, probe.parameter_unit(name), path)
        except HetbrianError as err:
            raise ProtocolError(str(err)) from err
    if model_type == "rate":
        model = factory(parsed["model"]["transfer"], **kwargs)
    else:
        model = factory(**kwargs)
    tc = parsed["time_constants"]
    tc["parameter"] = tc["parameter"] or model.noise_tau
    if tc["parameter"] not in model.parameters:
        _fail(
            "time_constants.parameter",
            f"{tc['parameter']!r} is not a parameter of model {model_type!r}; "
            f"expected one of {sorted(model.parameters)}",
        )
    if not 0 <= tc["cv"] < 3:
        _fail("time_constants.cv", f"{tc['cv']!r}; expected 0 <= cv < 3")
    if not 0 * ms < tc["lower"] < tc["mean"] < tc["upper"]:
        _fail(
            "time_constants",
            f"lower={tc['lower']!r}, mean={tc['mean']!r}, upper={tc['upper']!r}; "
            "expected 0 < lower < mean < upper",
        )
    parsed["model"]["object"] = model

    # simulation
    sim = parsed["simulation"]
    features = sim["features"] or (["rate"] if model.kind == "rate" else ["spikes"])
    try:
        settings = SimulationSettings(
            dt=sim["dt"],
            readout_dt=sim["readout_dt"],
            features=tuple(features),
            spike_filter_tau=sim["spike_filter_tau"],
        )
        settings.check_model(model)
    except HetbrianError as err:
        raise ProtocolError(f"simulation: {err}") from err
    if tc["lower"] < sim["dt"]:
        _fail(
            "time_constants.lower",
            f"{tc['lower']!r} is below simulation.dt={sim['dt']!r}; Euler "
            "integration of a time constant below dt is unstable",
        )
    sim["object"] = settings

    # stimulus, battery, training subset
    stimulus = _stimulus(parsed["stimulus"]["generators"])
    parsed["stimulus"]["object"] = stimulus
    battery = _battery(parsed["tasks"], stimulus)
    parsed["tasks"]["object"] = battery
    training = parsed["training"]
    for family in training["families"]:
        if family not in {t.family for t in battery}:
            _fail(
                "training.families",
                f"{family!r} is not a family of the battery; expected among "
                f"{sorted({t.family for t in battery})}",
            )
    delays = set(training["delays"])
    chosen = [
        t
        for t in battery
        if t.family in training["families"] and (not delays or t.delay in delays)
    ]
    if not chosen:
        _fail("training.delays", f"{sorted(delays)} selects no task of the families")
    if len(chosen) == len(battery):
        _fail(
            "training.families",
            "the training subset is the whole battery; no task would be left to "
            "measure transfer to tasks not used in training",
        )
    parsed["training"]["object"] = TaskBattery(chosen, battery.component_names)
    if training["sequences"] < 1:
        _fail("training.sequences", f"{training['sequences']!r}; expected >= 1")

    # conditions and seeds
    conditions = parsed["comparison"]["conditions"]
    for name in conditions:
        if name not in CONDITIONS:
            _fail(
                "comparison.conditions",
                f"{name!r} is not a condition; expected among {list(CONDITIONS)}",
            )
    if len(set(conditions)) != len(conditions):
        _fail("comparison.conditions", f"{conditions!r} repeats a condition")
    seeds = parsed["comparison"]["seeds"]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        _fail("comparison.seeds", f"{seeds!r}; expected integers")
    if len(set(seeds)) != len(seeds):
        _fail("comparison.seeds", f"{seeds!r} repeats a seed")
    for section, key in (
        ("cmaes", "generations"),
        ("cmaes", "popsize"),
        ("surrogate", "epochs"),
        ("surrogate", "batch_size"),
    ):
        if parsed[section][key] < (2 if key == "popsize" else 1):
            _fail(f"{section}.{key}", f"{parsed[section][key]!r} is too small")
    for section, key in (("cmaes", "sigma0"), ("surrogate", "learning_rate")):
        if not parsed[section][key] > 0:
            _fail(f"{section}.{key}", f"{parsed[section][key]!r}; expected > 0")
    if not 0 < parsed["readout"]["test_fraction"] < 1:
        _fail("readout.test_fraction", "expected a fraction in (0, 1)")

    _check_lengths(parsed)
    parsed["biology"]["fit"] = _measured_fit(parsed)
    if "measured" in conditions or tc["start_profile"] == "measured":
        try:
            _profile("measured", parsed)
        except HetbrianError as err:
            raise ProtocolError(f"time_constants: measured profile: {err}") from err
    return parsed


def _samples(parsed, key):
    readout_dt = float(parsed["simulation"]["readout_dt"])
    return int(round(float(parsed["stimulus"][key]) / readout_dt))


def _check_lengths(parsed):
    readout_dt = float(parsed["simulation"]["readout_dt"])
    washout = int(round(float(parsed["readout"]["washout"]) / readout_dt))
    battery = parsed["tasks"]["object"]
    n_test = _samples(parsed, "test_duration")
    usable = n_test - 1 - max(washout, battery.back) - battery.ahead
    if usable < 100:
        _fail(
            "stimulus.test_duration",
            f"{parsed['stimulus']['test_duration']!r} leaves {usable} readout samples "
            "after the washout and the battery's delays; expected at least 100",
        )
    train = parsed["training"]["object"]
    length = _samples(parsed, "train_duration") // parsed["training"]["sequences"]
    first = max(washout, train.back + 1)
    if length - first < 50:
        _fail(
            "stimulus.train_duration",
            f"{parsed['stimulus']['train_duration']!r} cut into "
            f"{parsed['training']['sequences']} sequences leaves {length - first} "
            "samples per sequence after the washout; expected at least 50",
        )


def _measured_fit(parsed):
    from hetbrian.biology import _select_fits, fitted_table

    bio = parsed["biology"]
    try:
        return _select_fits(
            fitted_table(), bio["species"], bio["cell_class"], "membrane_tau"
        )[0]
    except HetbrianError as err:
        raise ProtocolError(f"biology: {err}") from err


def _profile(family, parsed):
    tc = parsed["time_constants"]
    mean, cv, lower = tc["mean"], tc["cv"], tc["lower"]
    if family == "homogeneous" or cv == 0:
        return make_profile("homogeneous", mean=mean, lower=lower)
    if family == "measured":
        from hetbrian.biology import measured_profile

        bio = parsed["biology"]
        return measured_profile(
            kind="empirical",
            species=bio["species"],
            cell_class=bio["cell_class"],
            mean=mean,
            cv=cv,
            lower=lower,
        )
    return make_profile(family, mean=mean, cv=cv, lower=lower)


# --------------------------------------------------------------------------- running
def _instance(comparison, family, seed):
    """The reservoir of ``seed`` with time constants of ``family``."""
    from hetbrian.network import draw

    s = comparison.settings
    config = reservoir_config(
        s["model"]["object"],
        s["network"],
        s["stimulus"]["object"].n_components,
        {s["time_constants"]["parameter"]: _profile(family, s)},
        seed,
    )
    return draw(config)


def _simulate(comparison, spec, stimulus):
    s = comparison.settings
    name = s["engine"]["name"]
    settings = s["simulation"]["object"]
    readout_dt = s["simulation"]["readout_dt"]
    return get_engine(name).simulate(spec, stimulus, settings, stimulus_dt=readout_dt)


def _stimuli(comparison):
    """Training stimulus (with the rows the training tasks need ahead) and test one."""
    s = comparison.settings
    generator = s["stimulus"]["object"]
    ahead = s["training"]["object"].ahead
    train = generator.sample(
        _samples(s, "train_duration") + ahead, s["stimulus"]["train_seed"]
    )
    test = generator.sample(_samples(s, "test_duration"), s["stimulus"]["test_seed"])
    return train, test


def _washout(comparison):
    s = comparison.settings
    return int(round(float(s["readout"]["washout"] / s["simulation"]["readout_dt"])))


def _sequences(comparison, train):
    """The training stimulus cut into sequences, with per-sample targets.

    Feature row ``k`` of a run holds the state after the input rows ``0..k-1`` (row 0
    is the initial state), so it is paired with the target of input row ``k - 1``, as
    in :mod:`hetbrian.protocols`. Rows before the training battery's delays are
    filled with zeros and lie inside the trainer's washout.
    """
    s = comparison.settings
    battery = s["training"]["object"]
    count = s["training"]["sequences"]
    length = _samples(s, "train_duration") // count
    stimuli = np.stack([train[i * length : (i + 1) * length] for i in range(count)])
    targets = np.zeros((count, length, len(battery)))
    for i in range(count):
        t = battery.targets(train[i * length : (i + 1) * length + battery.ahead])
        rows = np.arange(t.valid.start, t.valid.stop) + 1
        keep = rows < length
        targets[i, rows[keep]] = t.values[keep]
    washout = max(_washout(comparison), battery.back + 1)
    return stimuli, targets, washout


def _score(comparison, spec, test):
    """Brian2 run of ``spec`` on the test stimulus; ridge scores of every task."""
    s = comparison.settings
    battery = s["tasks"]["object"]
    features = _simulate(comparison, spec, test)
    states = features.matrix()[1:]  # row k pairs with stimulus row k - 1
    targets = battery.targets(test[:-1])
    first = max(_washout(comparison), targets.valid.start)
    stop = targets.valid.stop
    n = stop - first
    n_test = int(n * s["readout"]["test_fraction"])
    n_fit = n - n_test
    split = (0.75 * n_fit / n, 0.25 * n_fit / n, n_test / n)
    x = states[first:stop]
    train = x[: int(round(split[0] * n))]
    scale = train.std(axis=0)
    scale[scale == 0] = 1.0
    y = targets.values[first - targets.valid.start :]
    return ridge_readout(
        (x - train.mean(axis=0)) / scale,
        y,
        tasks=battery,
        split=split,
        selection="validation",
    )


def _train_cmaes(comparison, instance, train, seed, checkpoint):
    from hetbrian.training.cmaes import CMAES, ReservoirObjective

    s = comparison.settings
    tc = s["time_constants"]
    n = _samples(s, "train_duration")
    objective = ReservoirObjective(
        instance,
        train[:n],
        s["training"]["object"],
        s["simulation"]["object"],
        parameter=tc["parameter"],
        stimulus_dt=s["simulation"]["readout_dt"],
        engine=s["engine"]["name"],
        washout=_washout(comparison),
        reference=tc["mean"],
    )
    bounds = (
        math.log(float(tc["lower"] / tc["mean"])),
        math.log(float(tc["upper"] / tc["mean"])),
    )
    search = CMAES(
        objective,
        np.clip(objective.x0(), *bounds),
        s["cmaes"]["sigma0"],
        popsize=s["cmaes"]["popsize"],
        bounds=bounds,
        seed=seed,
        checkpoint=checkpoint,
    )
    result = search.run(s["cmaes"]["generations"])
    trained = objective.decode(result.x_best)
    cost = {
        "train_simulations": len(result.history),
        "train_network_runs": result.evaluations,
        "train_seconds": float(sum(h["seconds"] for h in result.history)),
        "n_trained_parameters": objective.dimension,
    }
    history = [{"step": h["generation"], "loss": h["f_min"]} for h in result.history]
    return batch([trained]), cost, history


def _train_surrogate(comparison, instance, train, seed, train_weights):
    from hetbrian.training.surrogate import SurrogateGradientTrainer

    s = comparison.settings
    tc = s["time_constants"]
    stimuli, targets, washout = _sequences(comparison, train)
    trainer = SurrogateGradientTrainer(
        batch([instance]),
        s["simulation"]["object"],
        (tc["parameter"],),
        input_weights=train_weights,
        recurrent_weights=train_weights,
        n_outputs=targets.shape[-1],
        washout=washout,
        learning_rate=s["surrogate"]["learning_rate"],
        tau_bounds=(tc["lower"], tc["upper"]),
        stimulus_dt=s["simulation"]["readout_dt"],
    )
    t0 = time.perf_counter()
    trainer.initialise_readout(stimuli, targets)
    history = trainer.fit(
        stimuli,
        targets,
        epochs=s["surrogate"]["epochs"],
        batch_size=s["surrogate"]["batch_size"],
        rng=seed,
    )
    seconds = time.perf_counter() - t0
    batches = math.ceil(len(stimuli) / s["surrogate"]["batch_size"])
    cost = {
        "train_simulations": 1 + batches * len(history),
        "train_network_runs": len(stimuli) * (1 + len(history)),
        "train_seconds": seconds,
        "n_trained_parameters": trainer.n_network,
    }
    return (
        trainer.to_spec(),
        cost,
        [{"step": h["epoch"], "loss": h["loss"]} for h in history],
    )


def run_condition(comparison, condition, seed, stimuli=None, checkpoint_dir=None):
    """Train (if the condition trains) and score one condition of one seed.

    Parameters
    ----------
    comparison : Comparison
    condition : str
        A name of :data:`CONDITIONS`.
    seed : int
        Seed of the reservoir (connectivity, input weights, time-constant draws)
        and of the training method.
    stimuli : tuple of ndarray, optional
        ``(train, test)`` stimuli (default: drawn from the protocol).
    checkpoint_dir : Path, optional
        Where CMA-ES keeps its per-generation checkpoint.

    Returns
    -------
    xarray.Dataset
        Variables on ``task`` (``r2``, ``r2_clipped``) and ``neuron`` (``tau``, ms),
        scalars (scores, cost, distances); the training curve in ``attrs``.
    """
    from hetbrian.biology import distribution_distance

    s = comparison.settings
    spec_of = CONDITIONS[condition]
    train, test = _stimuli(comparison) if stimuli is None else stimuli
    start = s["time_constants"]["start_profile"]
    family = start if spec_of.start == "heterogeneous" else spec_of.start
    instance = _instance(comparison, family, seed)
    history = []
    cost = {
        "train_simulations": 0,
        "train_network_runs": 0,
        "train_seconds": 0.0,
        "n_trained_parameters": 0,
    }
    if spec_of.method == "quenched":
        spec = batch([instance])
    elif spec_of.method == "cmaes":
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = Path(checkpoint_dir) / f"{condition}-seed{seed}.pkl"
        spec, cost, history = _train_cmaes(
            comparison, instance, train, seed, checkpoint
        )
    else:
        spec, cost, history = _train_surrogate(
            comparison, instance, train, seed, spec_of.train_weights
        )
    t0 = time.perf_counter()
    scores = _score(comparison, spec, test)
    eval_seconds = time.perf_counter() - t0
    tau = np.asarray(spec.parameters[s["time_constants"]["parameter"]], dtype=float)
    distance = distribution_distance(tau * second, s["biology"]["fit"])
    trained = np.isin(scores["task"].values, list(s["training"]["object"].names))
    r2c = scores["r2_clipped"].values
    ds = xr.Dataset(
        {
            "r2": ("task", scores["r2"].values),
            "r2_clipped": ("task", r2c),
            "tau": ("neuron", tau / 1e-3, {"units": "ms"}),
            "score_trained": float(np.mean(r2c[trained])),
            "score_other": float(np.mean(r2c[~trained])),
            "tau_mean": float(tau.mean() / 1e-3),
            "tau_cv": float(tau.std() / tau.mean()),
            "ks": distance.ks,
            "ks_pvalue": distance.ks_pvalue,
            "wasserstein": float(distance.wasserstein / ms),
            "wasserstein_log": distance.wasserstein_log,
            "eval_seconds": eval_seconds,
            **cost,
        },
        coords={"task": np.asarray(scores["task"].values, dtype=str)},
    )
    ds["trained_task"] = ("task", trained)
    ds.attrs["history_json"] = json.dumps(history)
    logger.info(
        "%s seed %d: trained tasks %.3f, other tasks %.3f, %d parameters, %.1f s",
        condition,
        seed,
        ds["score_trained"].item(),
        ds["score_other"].item(),
        cost["n_trained_parameters"],
        cost["train_seconds"],
    )
    return ds


def _write_atomic(dataset, path):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dataset.to_netcdf(tmp)
    os.replace(tmp, path)


def _condition_file(folder, condition, seed):
    return Path(folder) / f"{condition}-seed{seed}.nc"


def run_comparison(protocol, out=None, quick=False, progress=False):
    """Run every condition and seed of a comparison, resuming from ``out``.

    Parameters
    ----------
    protocol : str or Path or Comparison
        Protocol file, TOML text, or a loaded comparison.
    out : str or Path, optional
        Output folder (default ``results/<name>``).
    quick : bool
        Apply the ``[quick]`` overrides (ignored for a loaded comparison).
    progress : bool
        Show a progress bar (tqdm) over conditions.

    Returns
    -------
    pathlib.Path
        The merged dataset ``OUT/<name>.nc``; ``<name>.png`` and ``<name>.pdf``
        (:func:`plot_comparison`) lie beside it.
    """
    comparison = (
        protocol
        if isinstance(protocol, Comparison)
        else load_comparison(protocol, quick=quick)
    )
    out = Path(out) if out is not None else Path("results") / comparison.name
    folder = out / "conditions"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):
        stale.unlink()  # a temporary file of a killed run: never a finished condition
    for path in folder.glob("*.nc"):
        with xr.open_dataset(path) as ds:
            if ds.attrs.get("protocol_digest") != comparison.digest:
                raise ProtocolError(
                    f"{path} was written by another version of this protocol; use "
                    "another output folder or remove the old results"
                )
    (out / "protocol.toml").write_text(comparison.text)
    todo = [
        (c, s)
        for c in comparison.conditions
        for s in comparison.seeds
        if not _condition_file(folder, c, s).is_file()
    ]
    from tqdm import tqdm

    total = len(comparison.conditions) * len(comparison.seeds)
    bar = tqdm(
        total=total,
        initial=total - len(todo),
        disable=not progress,
        unit="condition",
        desc=comparison.name,
    )
    stimuli = _stimuli(comparison) if todo else None
    for condition, seed in todo:
        ds = run_condition(
            comparison, condition, seed, stimuli, checkpoint_dir=out / "checkpoints"
        )
        ds.attrs.update(
            {"condition": condition, "seed": seed, "protocol_digest": comparison.digest}
        )
        _write_atomic(ds, _condition_file(folder, condition, seed))
        bar.update(1)
    bar.close()
    dataset = merge_conditions(comparison, folder)
    target = out / f"{comparison.name}.nc"
    _write_atomic(dataset, target)
    plot_comparison(dataset, out)
    return target


def merge_conditions(comparison, folder):
    """Merge the condition files: dimensions condition, seed, task and neuron."""
    rows = []
    histories = {}
    for condition in comparison.conditions:
        per_seed = []
        for seed in comparison.seeds:
            path = _condition_file(folder, condition, seed)
            if not path.is_file():
                raise ProtocolError(
                    f"condition {condition} seed {seed}: no file {path}"
                )
            with xr.open_dataset(path) as ds:
                ds = ds.load()
            histories[f"{condition}/seed{seed}"] = json.loads(ds.attrs["history_json"])
            ds.attrs = {}
            per_seed.append(ds)
        rows.append(xr.concat(per_seed, dim="seed"))
    dataset = xr.concat(rows, dim="condition")
    dataset = dataset.assign_coords(
        condition=np.asarray(comparison.conditions, dtype=str),
        seed=np.asarray(comparison.seeds),
    )
    dataset["trained_task"] = dataset["trained_task"].isel(condition=0, seed=0)
    dataset = dataset.set_coords("trained_task")
    dataset["method"] = (
        "condition",
        np.asarray([CONDITIONS[c].method for c in comparison.conditions], dtype=str),
    )
    dataset = dataset.set_coords("method")
    dataset.attrs.update(_provenance(comparison, histories))
    return dataset


def _provenance(comparison, histories):
    import brian2

    import hetbrian

    s = comparison.settings
    fit = s["biology"]["fit"]
    return {
        "protocol_name": comparison.name,
        "protocol_kind": KIND,
        "claim": comparison.config["protocol"].get("claim", ""),
        "protocol_text": comparison.text,
        "protocol_digest": comparison.digest,
        "protocol_sha256": hashlib.sha256(comparison.text.encode()).hexdigest(),
        "quick": int(comparison.quick),
        "hetbrian_version": hetbrian.__version__,
        "brian2_version": brian2.__version__,
        "engine": s["engine"]["name"],
        "trained_parameter": s["time_constants"]["parameter"],
        "training_tasks": " ".join(s["training"]["object"].names),
        "measured_fit": repr(fit),
        "measured_species": s["biology"]["species"],
        "measured_cell_class": s["biology"]["cell_class"],
        "machine": f"{platform.node()} {platform.platform()} "
        f"{os.cpu_count()} cpus python {platform.python_version()}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "history_json": json.dumps(histories),
        "score_definition": "mean over tasks of r2_clipped (test-block R2 of a "
        "ridge readout refitted on a held-out Brian2 run, clipped to [0, 1]); "
        "score_trained over the training tasks, score_other over the rest",
    }


# ---------------------------------------------------------------------------- report
def _mean_sd(values):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "nan"
    if values.size == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def summary_text(dataset):
    """A plain-text table: one row per condition, means (± sd over seeds).

    Columns: score on held-out data of the trained tasks and of the other tasks,
    trained network parameters, training simulations and wall-clock seconds, mean
    and cv of the final time constants, KS and Wasserstein (ms) distance to the
    measured fit.
    """
    columns = [
        "condition",
        "trained tasks",
        "other tasks",
        "params",
        "sims",
        "train s",
        "tau mean ms",
        "tau cv",
        "KS",
        "W ms",
    ]
    rows = []
    for condition in dataset["condition"].values:
        d = dataset.sel(condition=condition)
        rows.append(
            [
                str(condition),
                _mean_sd(d["score_trained"].values),
                _mean_sd(d["score_other"].values),
                f"{int(d['n_trained_parameters'].max())}",
                f"{float(d['train_simulations'].mean()):.0f}",
                f"{float(d['train_seconds'].mean()):.1f}",
                f"{float(d['tau_mean'].mean()):.1f}",
                f"{float(d['tau_cv'].mean()):.2f}",
                f"{float(d['ks'].mean()):.2f}",
                f"{float(d['wasserstein'].mean()):.1f}",
            ]
        )
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    lines = [
        f"{dataset.attrs.get('protocol_name', KIND)}: {dataset.attrs.get('claim', '')}",
        f"seeds {[int(s) for s in dataset['seed'].values]}; trained tasks: "
        f"{dataset.attrs.get('training_tasks', '')}",
        f"measured: {dataset.attrs.get('measured_fit', '')}",
        "",
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
    ]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows
    ]
    method = dataset["method"].values
    for score in ("score_trained", "score_other"):
        means = dataset[score].mean("seed").values
        quenched = [i for i, m in enumerate(method) if m == "quenched"]
        trained = [i for i, m in enumerate(method) if m != "quenched"]
        if quenched and trained:
            bq = max(quenched, key=lambda i: means[i])
            bt = max(trained, key=lambda i: means[i])
            lines.append(
                f"{score}: best quenched {dataset['condition'].values[bq]} "
                f"{means[bq]:.3f}, best trained {dataset['condition'].values[bt]} "
                f"{means[bt]:.3f}"
            )
    return "\n".join(lines)


def plot_comparison(dataset, out):
    """Trained time-constant histograms against the measured fit; scores per condition.

    Writes ``<name>.png`` and ``<name>.pdf`` into ``out``.

    Returns
    -------
    list of pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hetbrian.biology import _select_fits, fitted_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    conditions = [str(c) for c in dataset["condition"].values]
    try:
        fit = _select_fits(
            fitted_table(),
            dataset.attrs.get("measured_species", "mixed"),
            dataset.attrs.get("measured_cell_class", "all"),
            "membrane_tau",
        )[0]
    except HetbrianError:
        fit = None  # no curve: the dataset names a group the table lacks
    n = len(conditions)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols) + 1
    fig = plt.figure(figsize=(3.2 * ncols, 2.4 * nrows), constrained_layout=True)
    grid = fig.add_gridspec(nrows, ncols)
    taus = dataset["tau"].values
    bins = np.geomspace(max(np.nanmin(taus), 0.5), np.nanmax(taus) * 1.05 + 1, 30)
    grid_x = np.geomspace(bins[0], bins[-1], 300)
    for i, condition in enumerate(conditions):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        values = dataset["tau"].sel(condition=condition).values.ravel()
        ax.hist(values, bins=bins, density=True, color="C0", alpha=0.7)
        if fit is not None:
            scale = float(fit.unit / ms)
            pdf = fit.distribution().pdf(grid_x / scale) / scale
            ax.plot(grid_x, pdf, color="k", lw=1, label="measured fit")
        ax.set_xscale("log")
        ks = float(dataset["ks"].sel(condition=condition).mean())
        ax.set_title(f"{condition}\nKS {ks:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
        if i % ncols == 0:
            ax.set_ylabel("density (1/ms)", fontsize=8)
        if i == 0 and fit is not None:
            ax.legend(fontsize=6)
    ax = fig.add_subplot(grid[nrows - 1, :])
    x = np.arange(n)
    for offset, score, label in (
        (-0.2, "score_trained", "trained tasks"),
        (0.2, "score_other", "other tasks"),
    ):
        d = dataset[score]
        mean = d.mean("seed").values
        sd = d.std("seed", ddof=1).values if d.sizes["seed"] > 1 else None
        ax.bar(x + offset, mean, 0.4, yerr=sd, label=label, capsize=2)
    ax.set_xticks(x, conditions, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("held-out score\n(mean r2_clipped)", fontsize=8)
    ax.legend(fontsize=7)
    ax.set_xlabel("condition (time constants in ms above)", fontsize=8)
    name = dataset.attrs.get("protocol_name", KIND)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths
