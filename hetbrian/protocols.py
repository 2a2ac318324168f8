"""Declarative experiments: protocol files, sweeps, resumable runs and executors.

A protocol file (TOML) declares the model, network, heterogeneity profile, stimulus,
task battery, readout, sweep axes, seeds, engine and output. :func:`load_protocol`
validates it completely before any simulation: an unknown key, a value without a unit
or with the wrong one, an empty sweep, each raises
:class:`~hetbrian.errors.ProtocolError` naming the key path.

A **cell** is one point of the sweep (one value per axis) and one seed. Cells are
packed into **jobs**: every cell of a job shares the model, stimulus and simulation
settings, so the job is one batched simulation (:func:`hetbrian.network.batch`).
Cells that differ only in readout settings share one simulated network. Job
membership depends on the protocol alone, never on which cells are already done, so
a resumed run simulates exactly the batches an uninterrupted run would and gives the
same numbers.

Each finished cell is written at once to ``OUT/cells/<id>.nc`` (written to a
temporary name, then renamed, so a killed run leaves complete files or none); a rerun
skips finished cells; at the end all cells are merged into ``OUT/<name>.nc``, an
``xarray.Dataset`` with dimensions ``task``, the sweep axes and ``seed``, with
provenance in its attributes.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import logging
import os
import platform
import tomllib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr
from brian2 import amp, get_unit, ms, second, volt
from brian2.units.fundamentalunits import get_dimensions

import hetbrian
from hetbrian import engines
from hetbrian import stimuli as stimuli_module
from hetbrian.analysis import participation_ratio, target_alignment
from hetbrian.errors import HetbrianError, ProtocolError
from hetbrian.heterogeneity import make_profile
from hetbrian.models import (
    adaptive_lif_model,
    lif_exp_synapse_model,
    lif_model,
    rate_model,
)
from hetbrian.network import Connectivity, ReservoirConfig, SimulationSettings, batch
from hetbrian.readout import ridge_readout
from hetbrian.tasks import TaskBattery
from hetbrian.units import parse_quantity

__all__ = [
    "Protocol",
    "load_protocol",
    "run_protocol",
    "expand_cells",
    "plan_jobs",
    "run_job",
    "merge_cells",
    "PROTOCOL_KINDS",
]

logger = logging.getLogger(__name__)

#: Protocol kinds: each has its summary table and figures (:mod:`hetbrian.report`).
PROTOCOL_KINDS = (
    "heterogeneity",
    "size",
    "data_efficiency",
    "recurrence",
    "mechanisms",
)

MODEL_FACTORIES = {
    "rate": rate_model,
    "lif": lif_model,
    "lif_exp": lif_exp_synapse_model,
    "adaptive_lif": adaptive_lif_model,
}

_TIME = second

#: Default of a key that a protocol must give.
REQUIRED = object()

# Schema: section -> key -> (kind, default); a default of None means "absent". Kinds:
# "int", "float", "str", "bool", "list", "table", ("q", unit) a quantity in that unit,
# ("qmodel", role) a quantity whose unit the model decides (input, weight, noise),
# ("qparam",) a quantity in the unit of the heterogeneous parameter, ("enum", choices).
SCHEMA = {
    "protocol": {
        "name": ("str", REQUIRED),
        "kind": (("enum", PROTOCOL_KINDS), REQUIRED),
        "claim": ("str", ""),
        "description": ("str", ""),
    },
    "model": {
        "type": (("enum", tuple(MODEL_FACTORIES)), "rate"),
        "transfer": (("enum", ("tanh", "sigmoid", "relu")), "tanh"),
        "parameters": ("table", {}),
    },
    "network": {
        "n_neurons": ("int", 100),
        "p": ("float", 0.1),
        "exc_fraction": ("float", 0.8),
        "weight_spread": ("float", 0.5),
        "gain": (("qmodel", "weight"), 1.0),
        "input_gain": (("qmodel", "input"), 1.0),
        "input_bias": (("qmodel", "input"), 0.0),
        "noise": (("qmodel", "noise"), 0.0),
    },
    "heterogeneity": {
        "parameter": ("str", REQUIRED),
        "family": (
            (
                "enum",
                (
                    "lognormal",
                    "gamma",
                    "uniform",
                    "truncated_normal",
                    "homogeneous",
                    "measured",
                ),
            ),
            "lognormal",
        ),
        "cv": ("float", 0.0),
        "mean": (("qparam",), REQUIRED),
        "lower": (("qparam",), None),
        "skip_unreachable": ("bool", False),
    },
    "stimulus": {
        "generators": ("list", REQUIRED),
        "duration": (("q", second), REQUIRED),
        "seed": ("int", 0),
    },
    "simulation": {
        "dt": (("q", second), 0.1 * ms),
        "readout_dt": (("q", second), 1 * ms),
        "features": ("list", None),
        "spike_filter_tau": (("q", second), 20 * ms),
    },
    "tasks": {
        "memory_delays": ("list", [1, 41]),
        "prediction_horizons": ("list", [1, 21]),
        "power_degrees": ("list", [2, 3, 4, 5]),
        "delayed_power_delays": ("list", [1, 41]),
        "delayed_power_degrees": ("list", [2, 3]),
        "legendre_delays": ("list", [0, 30]),
        "legendre_degrees": ("list", [2, 3, 4, 5]),
        "product_delays": ("list", [0, 10]),
        "narma_orders": ("list", [2, 5, 10, 20]),
    },
    "readout": {
        "washout": (("q", second), 200 * ms),
        "train_duration": (("q", second), None),
        "test_fraction": ("float", 0.25),
        "selection": (("enum", ("gcv", "loo", "validation")), "validation"),
    },
    "sweep": {
        "seeds": ("list", [0]),
        "axes": ("table", {}),
    },
    "engine": {
        "name": ("str", "runtime"),
        "max_neurons_per_simulation": ("int", 8192),
    },
    "output": {"name": ("str", REQUIRED)},
    "quick": ("table", {}),
}

# Grid keys whose values are written [start, stop) ranges.
_RANGE_KEYS = {
    "memory_delays",
    "prediction_horizons",
    "delayed_power_delays",
    "legendre_delays",
    "product_delays",
}

_GENERATORS = {
    "sinusoids": "Sinusoids",
    "multi_sine": "MultiSine",
    "band_limited_noise": "BandLimitedNoise",
    "ornstein_uhlenbeck": "OrnsteinUhlenbeck",
    "mackey_glass": "MackeyGlass",
    "lorenz": "Lorenz",
    "rossler": "Rossler",
    "henon": "Henon",
    "logistic": "Logistic",
    "narma_input": "NarmaInput",
}


#: Dataset names of axes whose last key part would collide with task coordinates.
AXIS_NAMES = {"heterogeneity.family": "profile"}


def axis_name(path):
    """Dataset dimension of a sweep axis: the last part of its key path."""
    return AXIS_NAMES.get(path, path.split(".")[-1])


def _fail(path, message):
    raise ProtocolError(f"{path}: {message}")


def _model_units(model_type):
    if model_type == "rate":
        return {"input": 1, "weight": 1, "noise": 1}
    weight = amp if model_type == "lif_exp" else volt
    return {"input": amp, "weight": weight, "noise": volt}


def _check_value(path, kind, value, model_type, parameter_unit):
    """Validate one value; return it in its parsed form."""
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, f"{value!r} is not an integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(path, f"{value!r} is not a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str) or not value:
            _fail(path, f"{value!r} is not a non-empty string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            _fail(path, f"{value!r} is not true or false")
        return value
    if kind == "list":
        if not isinstance(value, list):
            _fail(path, f"{value!r} is not a list")
        return value
    if kind == "table":
        if not isinstance(value, dict):
            _fail(path, f"{value!r} is not a table")
        return value
    if kind[0] == "enum":
        if value not in kind[1]:
            _fail(path, f"{value!r} is not one of {list(kind[1])}")
        return value
    try:
        if kind[0] == "q":
            return parse_quantity(value, kind[1], path)
        if kind[0] == "qmodel":
            return parse_quantity(value, _model_units(model_type)[kind[1]], path)
        if kind[0] == "qparam":
            return parse_quantity(value, parameter_unit, path)
    except HetbrianError as err:
        raise ProtocolError(str(err)) from err
    raise AssertionError(kind)  # pragma: no cover


def _get(config, dotted):
    section, key = dotted.split(".", 1)
    return config[section][key]


def _set(config, dotted, value):
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in SCHEMA or parts[0] in ("sweep", "quick"):
        _fail(dotted, "expected a key path 'section.key' of a protocol setting")
    section, key = parts
    if key not in SCHEMA[section]:
        _fail(dotted, f"unknown key; expected one of {sorted(SCHEMA[section])}")
    config.setdefault(section, {})[key] = value


@dataclass
class Protocol:
    """A validated protocol.

    Attributes
    ----------
    config : dict
        Raw settings (TOML values), after ``--quick`` overrides.
    text : str
        The file's text.
    quick : bool
        Whether the ``[quick]`` overrides were applied.
    axes : dict of str to list
        Sweep axes (dotted key path to values).
    seeds : list of int
    """

    config: dict
    text: str
    quick: bool
    axes: dict
    seeds: list
    source: str = ""

    @property
    def name(self):
        return self.config["output"]["name"]

    @property
    def kind(self):
        return self.config["protocol"]["kind"]

    @property
    def axis_names(self):
        """Dataset dimension name of each axis (the last part of its key path)."""
        return [axis_name(path) for path in self.axes]

    @property
    def digest(self):
        """Hash of the effective settings (identifies compatible cell files)."""
        text = json.dumps(self.config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def settings(self, overrides=None):
        """The parsed settings with one cell's axis values applied (memoized)."""
        key = json.dumps(overrides or {}, sort_keys=True, default=str)
        cache = self.__dict__.setdefault("_settings_cache", {})
        if key not in cache:
            config = copy.deepcopy(self.config)
            for path, value in (overrides or {}).items():
                _set(config, path, value)
            cache[key] = _parse_sections(config)
        return cache[key]


def check_known_keys(config, schema):
    """Raise a ProtocolError naming the first section or key ``schema`` lacks."""
    for section, keys in schema.items():
        raw = config.get(section, {})
        if not isinstance(raw, dict):
            _fail(section, f"{raw!r} is not a table")
        for key in raw:
            if key not in keys:
                _fail(
                    f"{section}.{key}", f"unknown key; expected one of {sorted(keys)}"
                )


def _parse_sections(config):
    """Validate every section and key; return parsed values by section."""
    parsed = {}
    check_known_keys(config, {k: v for k, v in SCHEMA.items() if k != "quick"})
    model_type = config.get("model", {}).get("type", "rate")
    if model_type not in MODEL_FACTORIES:
        _fail("model.type", f"{model_type!r} is not one of {list(MODEL_FACTORIES)}")
    model_kwargs = {}
    raw_params = config.get("model", {}).get("parameters", {})
    if model_type == "rate":
        model = rate_model(config.get("model", {}).get("transfer", "tanh"))
    else:
        model = MODEL_FACTORIES[model_type]()
    for name, value in raw_params.items():
        path = f"model.parameters.{name}"
        if name not in model.parameters:
            _fail(
                path, f"unknown parameter; expected one of {sorted(model.parameters)}"
            )
        unit = model.parameter_unit(name)
        try:
            model_kwargs[name] = parse_quantity(value, unit, path)
        except HetbrianError as err:
            raise ProtocolError(str(err)) from err
    parameter = config.get("heterogeneity", {}).get("parameter")
    if parameter is None:
        _fail("heterogeneity.parameter", "missing; name the heterogeneous parameter")
    if parameter not in model.parameters:
        _fail(
            "heterogeneity.parameter",
            f"{parameter!r} is not a parameter of model {model_type!r}; expected one "
            f"of {sorted(model.parameters)}",
        )
    parameter_unit = model.parameter_unit(parameter)
    for section, keys in SCHEMA.items():
        if section == "quick":
            continue
        raw = config.get(section, {})
        out = {}
        for key, (kind, default) in keys.items():
            path = f"{section}.{key}"
            if key in raw:
                out[key] = _check_value(
                    path, kind, raw[key], model_type, parameter_unit
                )
            elif default is REQUIRED:
                _fail(path, "missing; this key has no default")
            else:
                out[key] = default
        parsed[section] = out
    if model_type != "rate":
        model = MODEL_FACTORIES[model_type](**model_kwargs)
    elif model_kwargs:
        model = rate_model(parsed["model"]["transfer"], **model_kwargs)
    parsed["model"]["object"] = model
    if parsed["heterogeneity"]["lower"] is None:
        parsed["heterogeneity"]["lower"] = parsed["simulation"]["dt"]
    features = parsed["simulation"]["features"]
    if features is None:
        features = ["rate"] if model.kind == "rate" else ["spikes"]
    parsed["simulation"]["features"] = features
    try:
        parsed["simulation"]["object"] = SimulationSettings(
            dt=parsed["simulation"]["dt"],
            readout_dt=parsed["simulation"]["readout_dt"],
            features=tuple(features),
            spike_filter_tau=parsed["simulation"]["spike_filter_tau"],
        )
        parsed["simulation"]["object"].check_model(model)
    except HetbrianError as err:
        raise ProtocolError(f"simulation: {err}") from err
    parsed["stimulus"]["object"] = _stimulus(parsed["stimulus"]["generators"])
    parsed["tasks"]["object"] = _battery(parsed["tasks"], parsed["stimulus"]["object"])
    _check_lengths(parsed)
    return parsed


def _stimulus(generators):
    if not generators:
        _fail("stimulus.generators", "empty; expected at least one generator table")
    members = []
    for index, table in enumerate(generators):
        path = f"stimulus.generators[{index}]"
        if not isinstance(table, dict) or "type" not in table:
            _fail(path, "expected a table with a 'type' key")
        kind = table["type"]
        if kind not in _GENERATORS:
            _fail(f"{path}.type", f"{kind!r} is not one of {sorted(_GENERATORS)}")
        kwargs = {k: v for k, v in table.items() if k != "type"}
        cls = getattr(stimuli_module, _GENERATORS[kind])
        try:
            members.append(cls(**kwargs))
        except TypeError as err:
            _fail(path, f"{err}")
        except HetbrianError as err:
            _fail(path, f"{err}")
    return stimuli_module.Stimulus(members)


def _battery(tasks, stimulus):
    kwargs = {}
    for key, value in tasks.items():
        if key in _RANGE_KEYS:
            if len(value) != 2 or not all(isinstance(v, int) for v in value):
                _fail(f"tasks.{key}", f"{value!r}; expected [start, stop] integers")
            kwargs[key] = range(value[0], value[1])
        else:
            kwargs[key] = tuple(value)
    try:
        battery = TaskBattery.grid(list(stimulus.component_names), **kwargs)
    except HetbrianError as err:
        raise ProtocolError(f"tasks: {err}") from err
    return battery


def _check_lengths(parsed):
    sim = parsed["simulation"]
    readout_dt = float(sim["readout_dt"])
    n_samples = int(round(float(parsed["stimulus"]["duration"]) / readout_dt))
    battery = parsed["tasks"]["object"]
    washout = int(round(float(parsed["readout"]["washout"]) / readout_dt))
    usable = n_samples - 1 - max(washout, battery.back) - battery.ahead
    if usable < 50:
        _fail(
            "stimulus.duration",
            f"{parsed['stimulus']['duration']!r} gives {n_samples} readout samples; "
            f"after the washout and the delays of the battery {usable} remain, "
            "expected at least 50",
        )
    train = parsed["readout"]["train_duration"]
    if train is not None:
        test = int(usable * parsed["readout"]["test_fraction"])
        need = int(round(float(train) / readout_dt))
        if need + test > usable:
            _fail(
                "readout.train_duration",
                f"{train!r} needs {need} samples, but only {usable - test} precede "
                "the test block; lengthen stimulus.duration",
            )


def load_protocol(source, quick=False):
    """Read and validate a protocol file (or TOML text).

    Parameters
    ----------
    source : str or Path
        Path of a ``.toml`` file, or TOML text.
    quick : bool
        Apply the file's ``[quick]`` overrides (smaller sizes, fewer seeds).

    Returns
    -------
    Protocol
    """
    path = None if "\n" in str(source) else Path(source)
    if path is not None:
        if not path.is_file():
            raise ProtocolError(f"protocol file {str(path)!r} does not exist")
        text = path.read_text()
    else:
        text = str(source)
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProtocolError(f"{path or 'protocol'}: not valid TOML: {err}") from err
    for section in config:
        if section not in SCHEMA:
            _fail(section, f"unknown section; expected one of {sorted(SCHEMA)}")
    overrides = config.pop("quick", {})
    if quick:
        for dotted, value in overrides.items():
            if dotted == "sweep.seeds":
                config.setdefault("sweep", {})["seeds"] = value
            elif dotted.startswith("sweep.axes."):
                config.setdefault("sweep", {}).setdefault("axes", {})[
                    dotted[len("sweep.axes.") :]
                ] = value
            else:
                _set(config, dotted, value)
    sweep = config.get("sweep", {})
    seeds = sweep.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        _fail("sweep.seeds", f"{seeds!r}; expected a non-empty list of integers")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        _fail("sweep.seeds", f"{seeds!r}; expected integers")
    if len(set(seeds)) != len(seeds):
        _fail("sweep.seeds", f"{seeds!r} repeats a seed")
    axes = sweep.get("axes", {})
    if not isinstance(axes, dict):
        _fail("sweep.axes", "expected a table of 'section.key' = [values]")
    names = set()
    for dotted, values in axes.items():
        where = f"sweep.axes.{dotted!r}"
        if not isinstance(values, list) or not values:
            _fail(where, f"{values!r}; expected a non-empty list of values")
        if len(set(map(str, values))) != len(values):
            _fail(where, f"{values!r} repeats a value")
        probe = copy.deepcopy(config)
        _set(probe, dotted, values[0])
        name = axis_name(dotted)
        if name in names or name in (
            "seed",
            "task",
            "family",
            "component",
            "delay",
            "degree",
            "component_b",
            "delay_b",
            "order",
        ):
            _fail(where, f"axis name {name!r} is used twice or reserved")
        names.add(name)
    protocol = Protocol(
        config=config, text=text, quick=quick, axes=axes, seeds=seeds, source=str(path)
    )
    # Validate every cell before anything runs: units, reachable profiles, lengths.
    for cell in expand_cells(protocol):
        try:
            _cell_config(protocol, cell)
        except ProtocolError:
            raise
        except HetbrianError as err:
            if not protocol.settings()["heterogeneity"]["skip_unreachable"]:
                raise ProtocolError(
                    f"cell {cell.coords}: {err} (set heterogeneity.skip_unreachable "
                    "= true to record such cells as missing)"
                ) from err
    return protocol


@dataclass(frozen=True)
class Cell:
    """One point of a sweep and one seed."""

    values: tuple  # ((dotted path, value), ...)
    seed: int

    @property
    def coords(self):
        out = {axis_name(path): value for path, value in self.values}
        out["seed"] = self.seed
        return out

    @property
    def ident(self):
        text = json.dumps([list(self.values), self.seed], default=str)
        return "cell-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def expand_cells(protocol):
    """Every cell of the sweep, in a fixed order (axes in file order, then seeds)."""
    paths = list(protocol.axes)
    grids = [protocol.axes[p] for p in paths]
    cells = []
    for combo in itertools.product(*grids):
        for seed in protocol.seeds:
            cells.append(Cell(tuple(zip(paths, combo, strict=True)), seed))
    return cells


def _profile(settings):
    het = settings["heterogeneity"]
    family = het["family"]
    mean, lower = het["mean"], het["lower"]
    return _cached_profile(
        family,
        float(mean),
        get_dimensions(mean),
        0.0 if family == "homogeneous" else float(het["cv"]),
        float(lower),
    )


@functools.lru_cache(maxsize=1024)
def _cached_profile(family, mean_si, dimensions, cv, lower_si):
    """Profiles are immutable and costly to check (bounded moments): build each once."""
    unit = get_unit(dimensions)
    mean, lower = mean_si * unit, lower_si * unit
    if family == "measured":
        from hetbrian.biology import measured_profile

        if cv == 0:
            return make_profile("homogeneous", mean=mean, lower=lower)
        # the shape of the membrane time constants of all 2333 cells of the Allen
        # table (fitted model, see hetbrian.biology), moved to the protocol's mean/cv
        return measured_profile(
            kind="empirical",
            species="mixed",
            cell_class="all",
            mean=mean,
            cv=cv,
            lower=lower,
        )
    return make_profile(family, mean=mean, cv=cv, lower=lower)


def _cell_config(protocol, cell):
    """Settings and reservoir configuration of one cell."""
    settings = protocol.settings(dict(cell.values))
    net = settings["network"]
    model = settings["model"]["object"]
    parameter = settings["heterogeneity"]["parameter"]
    profile = _profile(settings)
    config = reservoir_config(
        model,
        net,
        settings["stimulus"]["object"].n_components,
        {parameter: profile},
        cell.seed,
        label={"cell": cell.ident},
    )
    return settings, config


def reservoir_config(model, network, n_inputs, heterogeneity, seed, label=None):
    """A :class:`~hetbrian.network.ReservoirConfig` from a parsed ``[network]`` table.

    Parameters
    ----------
    model : NeuronModel
    network : dict
        Parsed ``[network]`` values (``noise`` may be absent: no noise).
    n_inputs : int
        Number of stimulus components.
    heterogeneity : dict
        Parameter name to profile.
    seed : int
    label : dict, optional
    """
    return ReservoirConfig(
        model=model,
        n_neurons=network["n_neurons"],
        n_inputs=n_inputs,
        heterogeneity=heterogeneity,
        connectivity=Connectivity(
            p=network["p"],
            exc_fraction=network["exc_fraction"],
            weight_spread=network["weight_spread"],
            gain=network["gain"],
        ),
        input_gain=network["input_gain"],
        input_bias=network["input_bias"],
        noise=network.get("noise", 0.0),
        seed=seed,
        label=label or {},
    )


def _network_key(protocol, cell):
    """Cells with one network key share one simulated network.

    The key holds what the drawn network depends on: the network settings, the
    resolved profile (so that ``cv = 0`` of every family is one homogeneous network)
    and the seed; readout settings are left out.
    """
    try:
        settings, config = _cell_config(protocol, cell)
    except HetbrianError:
        return ("unreachable", cell.ident)
    profile = config.heterogeneity[settings["heterogeneity"]["parameter"]]
    described = profile.to_dict() if hasattr(profile, "to_dict") else str(profile)
    return json.dumps(
        [
            settings["network"],
            described,
            settings["model"]["object"].describe(),
            cell.seed,
        ],
        sort_keys=True,
        default=str,
    )


def _job_key(settings):
    """Cells with one job key can be batched into one simulation."""
    return json.dumps(
        {
            "model": settings["model"]["object"].describe(),
            "simulation": settings["simulation"]["object"].describe(),
            "stimulus": repr(settings["stimulus"]["object"]),
            "duration": float(settings["stimulus"]["duration"]),
            "noise": float(np.asarray(settings["network"]["noise"])) > 0,
        },
        sort_keys=True,
        default=str,
    )


#: Engines that compile: jobs are planned so that their structures repeat.
_COMPILED_ENGINES = ("cpp_standalone", "cuda_standalone")


def _variant_key(protocol, cell):
    """What a cell's network has besides its structure (sizes, synapse indices).

    Networks of one seed, size and connection probability share their synapse
    indices; with the recurrent gain either zero or not, they differ only in values
    (the profile's draws, weights, input weights) that a compiled binary receives at
    run time.
    """
    try:
        settings, config = _cell_config(protocol, cell)
    except HetbrianError:
        return "unreachable"
    net = dict(settings["network"])
    del net["n_neurons"], net["p"]
    profile = config.heterogeneity[settings["heterogeneity"]["parameter"]]
    described = profile.to_dict() if hasattr(profile, "to_dict") else str(profile)
    return json.dumps([net, described], sort_keys=True, default=str)


def plan_jobs(protocol):
    """Pack the cells into jobs, deterministically from the protocol alone.

    On the runtime engines a job takes as many cells as fit into
    ``max_neurons_per_simulation`` neurons: every time step has a fixed cost, so fewer
    and larger simulations are faster. On the compiled engines a job takes the cells
    of one value variant (:func:`_variant_key`) over all seeds, sizes and connection
    probabilities: every such job has the same structure, so one binary is compiled
    and rerun through ``run_args`` for all of them.

    Returns
    -------
    list of list of Cell
        Each inner list is simulated as one batched network.
    """
    base = protocol.settings()
    limit = base["engine"]["max_neurons_per_simulation"]
    compiled = base["engine"]["name"] in _COMPILED_ENGINES
    groups = {}
    for cell in expand_cells(protocol):
        settings = protocol.settings(dict(cell.values))
        key = _job_key(settings)
        if compiled:
            key = (key, _variant_key(protocol, cell))
        groups.setdefault(key, []).append((cell, settings["network"]["n_neurons"]))
    jobs = []
    for members in groups.values():
        current, networks, neurons = [], {}, 0
        for cell, n in members:
            key = _network_key(protocol, cell)
            extra = 0 if key in networks else n
            if current and neurons + extra > limit:
                jobs.append(current)
                current, networks, neurons = [], {}, 0
                extra = n
            networks.setdefault(key, True)
            current.append(cell)
            neurons += extra
        if current:
            jobs.append(current)
    return jobs


def _simulate(settings, spec, stimulus):
    engine_name = settings["engine"]["name"]
    sim = settings["simulation"]["object"]
    readout_dt = settings["simulation"]["readout_dt"]
    engine = engines.get_engine(engine_name)
    return engine.simulate(spec, stimulus, sim, stimulus_dt=readout_dt)


#: Protocols already validated in this process, by (text, quick): a worker runs many
#: jobs of one protocol and validates it once.
_LOADED = {}


def _loaded(protocol_text, quick):
    key = (protocol_text, bool(quick))
    if key not in _LOADED:
        _LOADED.clear()  # one protocol at a time is what a worker serves
        _LOADED[key] = load_protocol(protocol_text, quick=quick)
    return _LOADED[key]


def run_job(protocol_text, quick, cells):
    """Simulate one job and score each of its cells.

    Parameters
    ----------
    protocol_text : str
        The protocol (workers receive it as data and validate it again).
    quick : bool
        Whether ``--quick`` applies.
    cells : list of Cell

    Returns
    -------
    list of (Cell, xarray.Dataset or None)
        ``None`` for a cell whose profile cannot be built (skipped as unreachable).
    """
    protocol = _loaded(protocol_text, quick)
    base = protocol.settings(dict(cells[0].values))
    readout_dt = float(base["simulation"]["readout_dt"])
    n_samples = int(round(float(base["stimulus"]["duration"]) / readout_dt))
    stimulus = base["stimulus"]["object"].sample(n_samples, base["stimulus"]["seed"])
    # The input a readout sample k has seen last is the value held during the interval
    # before it: pair feature row k with stimulus row k - 1.
    battery = base["tasks"]["object"]
    targets = battery.targets(stimulus[:-1])
    configs, index, results = [], {}, []
    for cell in cells:
        key = _network_key(protocol, cell)
        if key in index:
            continue
        try:
            _, config = _cell_config(protocol, cell)
        except HetbrianError as err:
            logger.info("cell %s skipped: %s", cell.coords, err)
            index[key] = None
            continue
        index[key] = len(configs)
        configs.append(config)
    blocks = []
    if configs:
        spec = batch(configs)
        features = _simulate(base, spec, stimulus)
        blocks = features.split()
    for cell in cells:
        position = index[_network_key(protocol, cell)]
        if position is None:
            results.append((cell, None))
            continue
        settings = protocol.settings(dict(cell.values))
        results.append(
            (cell, _score_cell(settings, blocks[position], targets, battery))
        )
    return results


def _score_cell(settings, block, targets, battery):
    """Readout scores of one cell, with state dimensionality and target alignment.

    Feature columns are standardized with the mean and std of the training block
    (a column constant there is left unscaled), so that features of different units
    (filtered spikes in Hz, membrane potentials in volts) are regularized alike. The
    participation ratio and target alignment are computed on the first feature alone
    (rates, or filtered spike trains), unscaled, over the rows the readout uses.
    """
    names = list(block["data"])
    # feature row k pairs with stimulus row k - 1 (see run_job)
    states = np.concatenate([block["data"][n] for n in names], axis=1)[1:]
    primary = block["data"][names[0]][1:]
    readout_dt = float(settings["simulation"]["readout_dt"])
    washout = int(round(float(settings["readout"]["washout"]) / readout_dt))
    first = max(washout, targets.valid.start)
    stop = targets.valid.stop
    n_test = int((stop - first) * settings["readout"]["test_fraction"])
    train_duration = settings["readout"]["train_duration"]
    if train_duration is not None:
        n_train = int(round(float(train_duration) / readout_dt))
        first = stop - n_test - n_train
    n = stop - first
    n_fit = n - n_test
    split = (n_fit / n, 0.0, n_test / n)
    if settings["readout"]["selection"] == "validation":
        split = (0.75 * n_fit / n, 0.25 * n_fit / n, n_test / n)
    rows = slice(first, stop)
    y = targets.values[first - targets.valid.start : stop - targets.valid.start]
    x = states[rows]
    train = x[: int(round(split[0] * n))]
    scale = train.std(axis=0)
    scale[scale == 0] = 1.0
    scores = ridge_readout(
        (x - train.mean(axis=0)) / scale,
        y,
        tasks=battery,
        split=split,
        selection=settings["readout"]["selection"],
    )
    state = primary[rows]
    if np.all(np.std(state, axis=0) == 0):
        pr = 0.0
        alignment = np.full(y.shape[1], np.nan)
    else:
        pr = participation_ratio(state)
        alignment = target_alignment(state, y)
    scores["alignment"] = ("task", alignment)
    scores["participation_ratio"] = pr
    counts = block["spike_counts"]
    if counts is not None:
        duration = float(settings["stimulus"]["duration"])
        scores["firing_rate"] = float(np.mean(counts) / duration)
    scores["state_std"] = float(np.mean(np.std(state, axis=0)))
    return scores


def _write_atomic(dataset, path):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dataset.to_netcdf(tmp)
    os.replace(tmp, path)


def _executor(spec):
    if spec in (None, "serial"):
        return "serial", None
    kind, _, arg = spec.partition(":")
    if kind == "local":
        if not arg.isdigit() or int(arg) < 1:
            raise ProtocolError(f"--executor {spec!r}; expected local:K with K >= 1")
        return "local", int(arg)
    if kind == "dask":
        if not arg:
            raise ProtocolError(f"--executor {spec!r}; expected dask:ADDRESS")
        return "dask", arg
    raise ProtocolError(
        f"--executor {spec!r}; expected 'serial', 'local:K' or 'dask:ADDRESS'"
    )


def _cell_file(protocol, cell, result):
    ds = result if result is not None else xr.Dataset()
    ds = ds.copy()
    ds.attrs = dict(ds.attrs)
    ds.attrs.update(
        {
            "cell": cell.ident,
            "coords_json": json.dumps(cell.coords, default=str),
            "protocol_digest": protocol.digest,
            "missing": int(result is None),
        }
    )
    for key, value in list(ds.attrs.items()):
        if isinstance(value, list | tuple):
            ds.attrs[key] = np.asarray(value)
    return ds


def run_protocol(
    source, out=None, quick=False, executor=None, progress=False, stop_after=None
):
    """Run a protocol, resuming from the cells already in ``out``.

    Parameters
    ----------
    source : str or Path or Protocol
        Protocol file, TOML text, or a loaded protocol.
    out : str or Path, optional
        Output folder (default ``results/<name>``).
    quick : bool
        Apply the protocol's ``[quick]`` overrides.
    executor : str, optional
        ``"serial"`` (default), ``"local:K"`` or ``"dask:ADDRESS"``.
    progress : bool
        Show a progress bar (tqdm) over cells.
    stop_after : int, optional
        Stop after this many jobs (for tests of resuming).

    Returns
    -------
    pathlib.Path
        The merged dataset's path (``None`` when stopped early).
    """
    if not isinstance(source, Protocol):
        from hetbrian.training.comparison import is_comparison, run_comparison

        if is_comparison(source):
            # kind = "quenched_vs_trained": its own schema and runner (serial only;
            # executor and stop_after do not apply to it)
            if executor not in (None, "serial") or stop_after is not None:
                logger.warning("quenched_vs_trained runs serially; executor ignored")
            return run_comparison(source, out=out, quick=quick, progress=progress)
    protocol = source if isinstance(source, Protocol) else load_protocol(source, quick)
    _LOADED[(protocol.text, protocol.quick)] = protocol
    kind, arg = _executor(executor)
    out = Path(out) if out is not None else Path("results") / protocol.name
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    for stale in cells_dir.glob(".*.tmp"):
        stale.unlink()  # a temporary file of a killed run: never a finished cell
    (out / "protocol.toml").write_text(protocol.text)
    done = set()
    for path in cells_dir.glob("cell-*.nc"):
        with xr.open_dataset(path) as ds:
            if ds.attrs.get("protocol_digest") != protocol.digest:
                raise ProtocolError(
                    f"{path} was written by another version of this protocol; use "
                    "another --out folder or remove the old results"
                )
        done.add(path.stem)
    planned = plan_jobs(protocol)
    total = sum(len(job) for job in planned)
    idents = {cell.ident for job in planned for cell in job}
    jobs = [job for job in planned if any(c.ident not in done for c in job)]
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=len(done & idents),
        disable=not progress,
        unit="cell",
        desc=protocol.name,
    )

    def store(results):
        for cell, result in results:
            if cell.ident in done:
                continue
            _write_atomic(
                _cell_file(protocol, cell, result), cells_dir / f"{cell.ident}.nc"
            )
            done.add(cell.ident)
            bar.update(1)

    if stop_after is not None:
        jobs = jobs[:stop_after]
    payloads = [(protocol.text, protocol.quick, job) for job in jobs]
    if kind == "serial":
        for payload in payloads:
            store(run_job(*payload))
    elif kind == "local":
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=arg, mp_context=context) as pool:
            futures = [pool.submit(run_job, *payload) for payload in payloads]
            for future in as_completed(futures):
                store(future.result())
    else:
        from distributed import Client
        from distributed import as_completed as dask_completed

        with Client(arg) as client:
            futures = [client.submit(run_job, *p, pure=False) for p in payloads]
            for future in dask_completed(futures):
                store(future.result())
    bar.close()
    if stop_after is not None and len(done) < total:
        return None
    dataset = merge_cells(protocol, cells_dir)
    target = out / f"{protocol.name}.nc"
    _write_atomic(dataset, target)
    return target


def merge_cells(protocol, cells_dir):
    """Merge the cell files of a protocol into one dataset.

    Dimensions: ``task``, one per sweep axis (named by the last part of its key path)
    and ``seed``. Cells recorded as missing (unreachable profiles) hold NaN.
    """
    cells = expand_cells(protocol)
    dims = protocol.axis_names + ["seed"]
    coords = {
        name: list(protocol.axes[path])
        for name, path in zip(protocol.axis_names, protocol.axes, strict=True)
    }
    coords["seed"] = list(protocol.seeds)
    shape = [len(coords[d]) for d in dims]
    arrays, task_coords, attrs, n_tasks = {}, None, {}, None
    missing = []
    for cell in cells:
        path = Path(cells_dir) / f"{cell.ident}.nc"
        if not path.is_file():
            raise ProtocolError(f"cell {cell.coords} has no result file {path}")
        with xr.open_dataset(path) as ds:
            ds = ds.load()
        position = tuple(coords[d].index(cell.coords[d]) for d in dims)
        if ds.attrs.get("missing"):
            missing.append(cell.coords)
            continue
        if task_coords is None:
            n_tasks = ds.sizes["task"]
            task_coords = {
                k: v.values for k, v in ds.coords.items() if v.dims == ("task",)
            }
            attrs = {
                k: v
                for k, v in ds.attrs.items()
                if k not in ("cell", "coords_json", "protocol_digest", "missing")
            }
        for name, var in ds.data_vars.items():
            if name not in arrays:
                full = (n_tasks, *shape) if var.dims == ("task",) else tuple(shape)
                dtype = float if var.dtype.kind in "fiub" else var.dtype
                arrays[name] = (var.dims, np.full(full, np.nan, dtype=dtype))
            target = arrays[name][1]
            if var.dims == ("task",):
                target[(slice(None), *position)] = var.values
            else:
                target[position] = var.values
    if task_coords is None:
        raise ProtocolError("no cell of the protocol could be run")
    data_vars = {}
    for name, (vdims, values) in arrays.items():
        full_dims = ("task", *dims) if vdims == ("task",) else tuple(dims)
        data_vars[name] = (full_dims, values)
    all_coords = dict(coords)
    for name, values in task_coords.items():
        all_coords[name] = ("task", values)
    for name in dims:
        values = all_coords[name]
        numbers = [type(v) in (int, float) for v in values]
        if all(numbers) and all(isinstance(v, int) for v in values):
            all_coords[name] = np.asarray(values, dtype=np.int64)
        elif all(numbers):
            all_coords[name] = np.asarray(values, dtype=float)
        else:  # quantities written as text ("1 s"), family names
            all_coords[name] = np.asarray([str(v) for v in values], dtype=str)
    dataset = xr.Dataset(data_vars, coords=all_coords)
    dataset.attrs.update(attrs)
    dataset.attrs.update(_provenance(protocol, missing))
    return dataset


def _provenance(protocol, missing):
    import brian2

    settings = protocol.settings()
    return {
        "protocol_name": protocol.name,
        "protocol_kind": protocol.kind,
        "claim": protocol.config["protocol"].get("claim", ""),
        "protocol_text": protocol.text,
        "protocol_digest": protocol.digest,
        "quick": int(protocol.quick),
        "axes_json": json.dumps(
            dict(zip(protocol.axis_names, protocol.axes, strict=True))
        ),
        "hetbrian_version": hetbrian.__version__,
        "brian2_version": brian2.__version__,
        "engine": settings["engine"]["name"],
        "seeds": np.asarray(protocol.seeds),
        "stimulus_seed": settings["stimulus"]["seed"],
        "machine": f"{platform.node()} {platform.platform()} "
        f"{os.cpu_count()} cpus python {platform.python_version()}",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "missing_cells_json": json.dumps(missing, default=str),
        "heterogeneous_parameter": settings["heterogeneity"]["parameter"],
        "mean_score_definition": "mean over tasks of r2_clipped (R2 on the test "
        "block, clipped to [0, 1])",
    }
