"""Reservoir networks as plain data, batched instances, and their Brian2 form.

Data flow::

    ReservoirConfig --draw()--> NetworkInstance --batch()--> NetworkSpec
        (hyperparameters,        (arrays: parameter       (B instances in one
         profiles, seed)          values, synapses,        block-diagonal network;
                                  input weights)           split() is the inverse)

    NetworkSpec + stimulus + SimulationSettings --build_brian2()--> BrianNetwork

A :class:`NetworkSpec` separates **structure** (model equations, sizes, synapse
indices, what is recorded: whatever a compiled standalone binary depends on) from
**values** (per-neuron parameters, weights, input weights, stimulus): see
:meth:`NetworkSpec.structure_key` and :meth:`NetworkSpec.values`. Engines in
:mod:`hetbrian.engines` compile once per structure and feed the values at run time.

Random streams. Each instance seed spawns independent streams for connectivity, input
weights and each parameter, so that changing a profile leaves the connectivity and the
input weights of that seed unchanged: homogeneous and heterogeneous networks of one
seed differ in their time constants alone. Parameters are drawn by inverse-CDF sampling
from one uniform number per neuron, so neuron *i* keeps its rank across degrees and
families of heterogeneity (common random numbers).

Recurrent weights. Each neuron receives ``C = round(p (N - 1))`` synapses from distinct
other neurons (no autapses). The first ``round(f N)`` neurons are excitatory, the rest
inhibitory (Dale's law: all outgoing weights of a neuron share its sign). Weight
magnitudes are log-normal with coefficient of variation ``weight_spread``, mean 1 for
excitatory and ``f / (1 - f)`` for inhibitory synapses, so that on average excitation
and inhibition balance. All weights are then scaled by ``J / sqrt(C <m²>)``, ``<m²>``
the mean squared magnitude: for a rate network the bulk of the eigenvalues of the
weight matrix then lies in a disc of radius ``J``. ``J = 0`` builds no synapses at all.

Input weights are centred normal with standard deviation ``input_gain / sqrt(K)`` for
``K`` input components.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import zlib
from dataclasses import dataclass, field

import brian2
import numpy as np
from brian2 import Quantity, ms, second
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions

from hetbrian.errors import ParameterError, SpecError, UnitError
from hetbrian.heterogeneity import Profile
from hetbrian.models import NeuronModel

__all__ = [
    "Connectivity",
    "ReservoirConfig",
    "NetworkInstance",
    "NetworkSpec",
    "SimulationSettings",
    "Features",
    "BrianNetwork",
    "draw",
    "batch",
    "build_brian2",
    "network_equations",
    "simulate",
    "quantity_in",
    "value_arrays",
]

#: Object names are fixed so that generated code (and the caches keyed on it) does
#: not change from one build to the next.
GROUP_NAME = "neurons"
SYNAPSES_NAME = "recurrent"
STIMULUS_NAME = "stimulus"
MONITOR_NAME = "features"
SPIKE_COUNTER_NAME = "spike_counter"

_STREAM_CONNECTIVITY = 1
_STREAM_INPUT = 2


def quantity_in(name, value, unit):
    """Check that ``value`` has the dimensions of ``unit``; return it as SI floats.

    Parameters
    ----------
    name : str
        Argument name for the error message.
    value : Quantity or float or array
        The value.
    unit : Unit or 1
        Expected unit (1 for dimensionless). A plain zero is accepted for any unit.
    """
    expected = get_dimensions(unit)
    got = get_dimensions(value) if isinstance(value, Quantity) else DIMENSIONLESS
    if not isinstance(value, Quantity) and np.all(np.asarray(value) == 0):
        return np.asarray(value, dtype=float)  # zero needs no unit
    if got != expected:
        unit_name = "dimensionless" if expected is DIMENSIONLESS else str(unit)
        raise UnitError(f"{name}={value!r} has dimensions {got}; expected {unit_name}")
    return np.asarray(value, dtype=float)


def _unit_text(unit):
    """Unit as Brian2 equation text (``"1"`` when dimensionless)."""
    dims = get_dimensions(unit)
    if dims is DIMENSIONLESS:
        return "1"
    return repr(brian2.get_unit(dims))


def _stream(seed, key):
    """Independent random generator for one purpose of one seed."""
    if isinstance(key, str):
        key = zlib.crc32(key.encode()) + 1000
    return np.random.default_rng([int(seed), int(key)])


@dataclass(frozen=True)
class Connectivity:
    """Recurrent connectivity of one reservoir.

    Parameters
    ----------
    p : float
        Connection probability; every neuron receives ``round(p (N - 1))`` synapses.
    exc_fraction : float
        Fraction ``f`` of excitatory neurons, in (0, 1]; ``f = 1`` means no inhibition.
    weight_spread : float
        Coefficient of variation of weight magnitudes (0: all equal).
    gain : Quantity or float
        Global recurrent gain ``J`` in the model's weight unit; 0 removes recurrence.
    """

    p: float = 0.1
    exc_fraction: float = 0.8
    weight_spread: float = 0.5
    gain: Quantity | float = 1.0

    def __post_init__(self):
        if not 0 <= self.p <= 1:
            raise ParameterError(f"p={self.p!r}; expected a probability in [0, 1]")
        if not 0 < self.exc_fraction <= 1:
            raise ParameterError(
                f"exc_fraction={self.exc_fraction!r}; expected a fraction in (0, 1]"
            )
        if not self.weight_spread >= 0:
            raise ParameterError(
                f"weight_spread={self.weight_spread!r}; expected a number >= 0"
            )


@dataclass(frozen=True)
class ReservoirConfig:
    """Everything that defines one reservoir instance, before random draws.

    Parameters
    ----------
    model : NeuronModel
        The neuron model.
    n_neurons : int
        Number of neurons ``N``.
    n_inputs : int
        Number of input components ``K``.
    heterogeneity : dict of str to Profile or Quantity
        Per-neuron parameters and their profiles (or fixed values); parameters not
        named keep the model's default. Besides the model's parameters, ``I_bias``
        (constant drive, in the input unit) may be named.
    connectivity : Connectivity
        Recurrent synapses.
    input_gain : Quantity or float
        ``J_u``, in the model's input unit.
    input_bias : Quantity or float
        Constant drive added to ``I_ext``, in the model's input unit.
    noise : Quantity or float
        ``sigma_noise``, the stationary std the noise alone would give the state
        variable, in the model's noise unit; 0 integrates without noise.
    seed : int
        Seed of every random draw of the instance.
    label : dict, optional
        Metadata carried along (condition names, sweep values).
    """

    model: NeuronModel
    n_neurons: int = 100
    n_inputs: int = 1
    heterogeneity: dict = field(default_factory=dict)
    connectivity: Connectivity = field(default_factory=Connectivity)
    input_gain: Quantity | float = 1.0
    input_bias: Quantity | float = 0.0
    noise: Quantity | float = 0.0
    seed: int = 0
    label: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.model, NeuronModel):
            raise ParameterError(f"model={self.model!r}; expected a NeuronModel")
        for name in ("n_neurons", "n_inputs"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ParameterError(f"{name}={value!r}; expected a positive integer")
        quantity_in("input_gain", self.input_gain, self.model.input_unit)
        quantity_in("input_bias", self.input_bias, self.model.input_unit)
        quantity_in("noise", self.noise, self.model.noise_unit)
        quantity_in("connectivity.gain", self.connectivity.gain, self.model.weight_unit)
        if float(np.asarray(self.noise)) < 0:
            raise ParameterError(f"noise={self.noise!r}; expected a value >= 0")
        allowed = set(self.model.parameters) | {"I_bias"}
        for name, profile in self.heterogeneity.items():
            if name not in allowed:
                raise ParameterError(
                    f"heterogeneity names {name!r}, which is not a per-neuron "
                    f"parameter of model {self.model.name!r}; expected one of "
                    f"{sorted(allowed)}"
                )
            unit = self._unit_of(name)
            mean = profile.mean if isinstance(profile, Profile) else profile
            quantity_in(f"heterogeneity[{name!r}]", mean, unit)

    def _unit_of(self, name):
        if name == "I_bias":
            return self.model.input_unit
        return self.model.parameter_unit(name)


@dataclass
class NetworkInstance:
    """One drawn reservoir: all values as arrays in SI units.

    Attributes
    ----------
    config : ReservoirConfig
    parameters : dict of str to ndarray
        Per-neuron parameter values (SI floats), including ``I_bias`` and
        ``sigma_noise``.
    input_weights : ndarray, shape (N, K)
        SI floats in the model's input unit.
    syn_i, syn_j : ndarray of int
        Presynaptic and postsynaptic indices.
    syn_w : ndarray
        Weights, SI floats in the model's weight unit.
    """

    config: ReservoirConfig
    parameters: dict
    input_weights: np.ndarray
    syn_i: np.ndarray
    syn_j: np.ndarray
    syn_w: np.ndarray

    @property
    def n_neurons(self):
        return self.config.n_neurons


def _draw_parameter(profile, n, rng):
    if isinstance(profile, Profile):
        return np.asarray(profile.sample(n, rng), dtype=float)
    return np.full(n, float(np.asarray(profile)))


def _draw_synapses(config):
    n = config.n_neurons
    conn = config.connectivity
    gain = float(np.asarray(conn.gain))
    n_in = int(round(conn.p * (n - 1)))
    if gain == 0 or n_in == 0:
        empty = np.zeros(0, dtype=np.int32)
        return empty, empty.copy(), np.zeros(0)
    rng = _stream(config.seed, _STREAM_CONNECTIVITY)
    # n_in distinct presynaptic partners per neuron, excluding itself
    keys = rng.random((n, n - 1))
    partners = np.argpartition(keys, n_in - 1, axis=1)[:, :n_in]
    post = np.repeat(np.arange(n), n_in)
    pre = partners.ravel()
    pre = pre + (pre >= post)  # skip the diagonal: indices 0..n-2 map onto others
    order = np.lexsort((post, pre))
    pre, post = pre[order], post[order]
    f = conn.exc_fraction
    n_exc = int(round(f * n))
    excitatory = pre < n_exc
    spread = conn.weight_spread
    if spread > 0:
        s2 = math.log1p(spread**2)
        magnitude = rng.lognormal(-s2 / 2, math.sqrt(s2), size=pre.size)
    else:
        magnitude = np.ones(pre.size)
    inh_mean = f / (1 - f) if f < 1 else 0.0
    mean = np.where(excitatory, 1.0, inh_mean)
    sign = np.where(excitatory, 1.0, -1.0)
    second_moment = (1 + spread**2) * (f + (1 - f) * inh_mean**2)
    w = gain * sign * mean * magnitude / math.sqrt(n_in * second_moment)
    return pre.astype(np.int32), post.astype(np.int32), w


def draw(config):
    """Draw one reservoir instance from its configuration.

    Parameters
    ----------
    config : ReservoirConfig

    Returns
    -------
    NetworkInstance
    """
    model = config.model
    n = config.n_neurons
    parameters = {}
    for name, default in model.parameters.items():
        profile = config.heterogeneity.get(name, default)
        parameters[name] = _draw_parameter(profile, n, _stream(config.seed, name))
    bias = config.heterogeneity.get("I_bias", config.input_bias)
    parameters["I_bias"] = _draw_parameter(bias, n, _stream(config.seed, "I_bias"))
    parameters["sigma_noise"] = np.full(n, float(np.asarray(config.noise)))
    k = config.n_inputs
    gain = float(np.asarray(config.input_gain))
    rng = _stream(config.seed, _STREAM_INPUT)
    input_weights = rng.standard_normal((n, k)) * gain / math.sqrt(k)
    syn_i, syn_j, syn_w = _draw_synapses(config)
    return NetworkInstance(config, parameters, input_weights, syn_i, syn_j, syn_w)


@dataclass
class NetworkSpec:
    """B reservoir instances of one model as one block-diagonal network.

    Build one with :func:`batch`. Neurons of instance ``b`` occupy indices
    ``offsets[b]:offsets[b + 1]`` of the single neuron group; synapses never cross
    blocks.
    """

    model: NeuronModel
    n_inputs: int
    sizes: tuple
    noise: bool
    parameters: dict
    input_weights: np.ndarray
    syn_i: np.ndarray
    syn_j: np.ndarray
    syn_w: np.ndarray
    labels: list

    @property
    def n_neurons(self):
        """Total number of neurons."""
        return int(sum(self.sizes))

    @property
    def n_instances(self):
        return len(self.sizes)

    @property
    def offsets(self):
        """Start index of each instance, and the total at the end."""
        return np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)

    @property
    def has_synapses(self):
        return self.syn_i.size > 0

    def structure(self):
        """Plain-data description of what a compiled binary depends on."""
        return {
            "model": self.model.describe(),
            "n_inputs": self.n_inputs,
            "sizes": list(self.sizes),
            "noise": self.noise,
            "synapses": hashlib.sha256(
                np.ascontiguousarray(np.stack([self.syn_i, self.syn_j])).tobytes()
            ).hexdigest()
            if self.has_synapses
            else None,
        }

    def structure_key(self, settings=None, n_input_steps=None):
        """Hash of the structure (and of the simulation settings, when given)."""
        payload = {"network": self.structure()}
        if settings is not None:
            payload["settings"] = settings.describe()
        if n_input_steps is not None:
            payload["n_input_steps"] = int(n_input_steps)
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def values(self):
        """Values a standalone binary can receive without recompiling.

        Returns
        -------
        dict
            ``parameters`` (name to SI array), ``input_weights`` (N x K), ``syn_w``.
        """
        return {
            "parameters": self.parameters,
            "input_weights": self.input_weights,
            "syn_w": self.syn_w,
        }

    def split(self, array, axis=-1):
        """Split a neuron axis back into one array per instance."""
        return np.split(np.asarray(array), self.offsets[1:-1], axis=axis)


def batch(instances):
    """Merge instances of one model into a block-diagonal :class:`NetworkSpec`.

    Parameters
    ----------
    instances : list of NetworkInstance or ReservoirConfig
        Configurations are drawn first. All must share the model, the number of
        inputs and whether noise is on.

    Returns
    -------
    NetworkSpec
    """
    instances = [draw(x) if isinstance(x, ReservoirConfig) else x for x in instances]
    if not instances:
        raise SpecError("batch() needs at least one instance; got none")
    first = instances[0].config
    noise = any(np.any(x.parameters["sigma_noise"] > 0) for x in instances)
    for b, inst in enumerate(instances):
        cfg = inst.config
        if cfg.model != first.model:
            raise SpecError(
                f"instance {b} uses model {cfg.model.name!r}; a batch shares one model "
                f"({first.model.name!r})"
            )
        if cfg.n_inputs != first.n_inputs:
            raise SpecError(
                f"instance {b} has n_inputs={cfg.n_inputs}; the batch has "
                f"{first.n_inputs}"
            )
    sizes = tuple(x.n_neurons for x in instances)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    names = instances[0].parameters.keys()
    parameters = {
        name: np.concatenate([x.parameters[name] for x in instances]) for name in names
    }
    return NetworkSpec(
        model=first.model,
        n_inputs=first.n_inputs,
        sizes=sizes,
        noise=bool(noise),
        parameters=parameters,
        input_weights=np.concatenate([x.input_weights for x in instances]),
        syn_i=np.concatenate(
            [x.syn_i + o for x, o in zip(instances, offsets, strict=False)]
        ).astype(np.int32),
        syn_j=np.concatenate(
            [x.syn_j + o for x, o in zip(instances, offsets, strict=False)]
        ).astype(np.int32),
        syn_w=np.concatenate([x.syn_w for x in instances]),
        labels=[dict(x.config.label, seed=x.config.seed) for x in instances],
    )


@dataclass(frozen=True)
class SimulationSettings:
    """How a network is integrated and read out.

    Parameters
    ----------
    dt : Quantity
        Integration step.
    readout_dt : Quantity
        Interval at which features are sampled; a multiple of ``dt``.
    features : tuple of str
        Features to record: names from the model's ``features`` and, for spiking
        models, ``"spikes"`` (spike trains filtered by ``exp(-t / spike_filter_tau)``,
        in Hz).
    spike_filter_tau : Quantity
        Time constant of the spike-train filter.
    """

    dt: Quantity = field(default_factory=lambda: 0.1 * ms)
    readout_dt: Quantity = field(default_factory=lambda: 1 * ms)
    features: tuple = ("rate",)
    spike_filter_tau: Quantity = field(default_factory=lambda: 20 * ms)

    def __post_init__(self):
        for name in ("dt", "readout_dt", "spike_filter_tau"):
            value = quantity_in(name, getattr(self, name), second)
            if not value > 0:
                raise ParameterError(f"{name}={getattr(self, name)!r}; expected > 0")
        ratio = float(self.readout_dt / self.dt)
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ParameterError(
                f"readout_dt={self.readout_dt!r} must be a whole multiple of "
                f"dt={self.dt!r}"
            )
        if isinstance(self.features, str) or not self.features:
            raise ParameterError(
                f"features={self.features!r}; expected a non-empty tuple of names"
            )

    def check_model(self, model):
        """Raise when a requested feature does not exist for ``model``."""
        available = set(model.features) | (
            {"spikes"} if model.kind == "spiking" else set()
        )
        for name in self.features:
            if name not in available:
                raise ParameterError(
                    f"feature {name!r} is not recorded by model {model.name!r}; "
                    f"expected one of {sorted(available)}"
                )

    @property
    def steps_per_sample(self):
        return int(round(float(self.readout_dt / self.dt)))

    def describe(self):
        return {
            "dt": float(self.dt),
            "readout_dt": float(self.readout_dt),
            "features": list(self.features),
        }


@dataclass
class Features:
    """Recorded features of a (batched) simulation.

    Attributes
    ----------
    times : ndarray
        Sample times in seconds.
    data : dict of str to ndarray
        Each of shape (n_samples, n_neurons), SI units (``spikes`` in Hz).
    spike_counts : ndarray or None
        Spikes per neuron over the whole run (spiking models).
    spec : NetworkSpec
    """

    times: np.ndarray
    data: dict
    spike_counts: np.ndarray | None
    spec: NetworkSpec

    def matrix(self, names=None):
        """Features side by side, shape (n_samples, n_neurons * n_features)."""
        names = list(self.data) if names is None else list(names)
        return np.concatenate([self.data[n] for n in names], axis=1)

    def split(self):
        """One :class:`Features`-like dict per instance: ``data`` split by block."""
        out = []
        pieces = {name: self.spec.split(a, axis=1) for name, a in self.data.items()}
        counts = (
            self.spec.split(self.spike_counts)
            if self.spike_counts is not None
            else None
        )
        for b in range(self.spec.n_instances):
            out.append(
                {
                    "times": self.times,
                    "data": {name: pieces[name][b] for name in pieces},
                    "spike_counts": None if counts is None else counts[b],
                    "label": self.spec.labels[b],
                }
            )
        return out


def network_equations(spec, settings):
    """Full Brian2 equations and reset of a spec: the model plus what the network adds.

    The model text with its noise marker resolved, ``I_ext`` from the input weights,
    the stimulus and the bias, and the filtered spike trace when ``"spikes"`` is
    recorded. Both the Brian2 build and the differentiable twin start from here.
    """
    model = spec.model
    k = spec.n_inputs
    unit_text = _unit_text(model.input_unit)
    drive = " + ".join(f"w_in_{c}*{STIMULUS_NAME}(t, {c})" for c in range(k))
    lines = [model.equation_text(spec.noise)]
    lines.append(f"I_ext = {drive} + I_bias : {unit_text}")
    lines += [f"w_in_{c} : {unit_text} (constant)" for c in range(k)]
    lines.append(f"I_bias : {unit_text} (constant)")
    lines.append(f"sigma_noise : {_unit_text(model.noise_unit)} (constant)")
    reset = model.reset
    if "spikes" in settings.features:
        lines.append("dspike_trace/dt = -spike_trace/tau_filter : 1")
        lines.append("tau_filter : second (constant)")
        reset = (reset + "; " if reset else "") + "spike_trace += 1"
    return brian2.Equations("\n".join(lines)), reset


def _recorded_variables(spec, settings):
    variables = []
    for name in settings.features:
        variables.append(
            "spike_trace" if name == "spikes" else spec.model.features[name]
        )
    return variables


def value_arrays(spec, settings):
    """Values of ``spec`` keyed by Brian2 ``"object.variable"`` names.

    These are the values a standalone binary receives at run time (per-neuron
    parameters, input weights, initial values, recurrent weights): exactly the
    arguments ``device.run(run_args=...)`` passes on the binary's command line, and
    what :meth:`BrianNetwork.value_targets` maps onto Brian2 variables.

    Parameters
    ----------
    spec : NetworkSpec
    settings : SimulationSettings

    Returns
    -------
    dict of str to (ndarray, Unit)
        SI values and their unit, keyed for example ``"neurons.tau"``.
    """
    model = spec.model
    out = {}
    for name, values in spec.parameters.items():
        if name == "I_bias":
            unit = model.input_unit
        elif name == "sigma_noise":
            unit = model.noise_unit
        else:
            unit = model.parameter_unit(name)
        out[f"{GROUP_NAME}.{name}"] = (values, unit)
    for c in range(spec.n_inputs):
        out[f"{GROUP_NAME}.w_in_{c}"] = (
            np.ascontiguousarray(spec.input_weights[:, c]),
            model.input_unit,
        )
    if "spikes" in settings.features:
        tau = float(settings.spike_filter_tau)
        out[f"{GROUP_NAME}.tau_filter"] = (np.full(spec.n_neurons, tau), second)
    for var, value in BrianNetwork._initial_values(spec).items():
        out[f"{GROUP_NAME}.{var}"] = value
    if spec.has_synapses:
        out[f"{SYNAPSES_NAME}.w"] = (spec.syn_w, model.weight_unit)
    return out


class BrianNetwork:
    """The Brian2 objects of one :class:`NetworkSpec`, on the active device.

    Parameters
    ----------
    spec : NetworkSpec
    stimulus : ndarray, shape (n_steps, K)
        Input signal, one row per ``stimulus_dt``.
    settings : SimulationSettings
    stimulus_dt : Quantity, optional
        Step of the stimulus (default: ``settings.dt``).
    """

    def __init__(self, spec, stimulus, settings, stimulus_dt=None):
        settings.check_model(spec.model)
        stimulus = np.ascontiguousarray(stimulus, dtype=float)
        if stimulus.ndim != 2 or stimulus.shape[1] != spec.n_inputs:
            raise ParameterError(
                f"stimulus has shape {stimulus.shape}; expected (n_steps, "
                f"{spec.n_inputs})"
            )
        if not np.all(np.isfinite(stimulus)):
            raise ParameterError("stimulus contains NaN or inf")
        stimulus_dt = settings.dt if stimulus_dt is None else stimulus_dt
        quantity_in("stimulus_dt", stimulus_dt, second)
        self.spec = spec
        self.settings = settings
        self.stimulus_dt = stimulus_dt
        self.duration = stimulus.shape[0] * stimulus_dt
        gc.collect()  # release objects of an earlier build that hold the fixed names
        model = spec.model
        eqs, reset = network_equations(spec, settings)
        self.stimulus = brian2.TimedArray(stimulus, dt=stimulus_dt, name=STIMULUS_NAME)
        self.group = brian2.NeuronGroup(
            spec.n_neurons,
            eqs,
            threshold=model.threshold,
            reset=reset,
            refractory=model.refractory if model.refractory is not None else False,
            method=model.method,
            namespace={STIMULUS_NAME: self.stimulus},
            dt=settings.dt,
            name=GROUP_NAME,
        )
        objects = [self.group]
        self.synapses = None
        if spec.has_synapses:
            w_text = _unit_text(model.weight_unit)
            if model.kind == "rate":
                syn_model = (
                    f"w : {w_text} (constant)\nI_rec_post = {model.synapse_summed} : 1 "
                    "(summed)"
                )
                self.synapses = brian2.Synapses(
                    self.group,
                    self.group,
                    model=syn_model,
                    dt=settings.dt,
                    name=SYNAPSES_NAME,
                )
            else:
                self.synapses = brian2.Synapses(
                    self.group,
                    self.group,
                    model=f"w : {w_text} (constant)",
                    on_pre=model.synapse_on_pre,
                    dt=settings.dt,
                    name=SYNAPSES_NAME,
                )
            self.synapses.connect(i=spec.syn_i, j=spec.syn_j)
            objects.append(self.synapses)
        self.monitor = brian2.StateMonitor(
            self.group,
            _recorded_variables(spec, settings),
            record=True,
            dt=settings.readout_dt,
            name=MONITOR_NAME,
        )
        objects.append(self.monitor)
        self.spike_counter = None
        if model.kind == "spiking":
            self.spike_counter = brian2.SpikeMonitor(
                self.group, record=False, name=SPIKE_COUNTER_NAME
            )
            objects.append(self.spike_counter)
        self.set_values(spec)
        self.network = brian2.Network(*objects)

    def value_targets(self, spec=None):
        """Brian2 variables and their values (with units) for ``spec``'s values.

        The mapping suits both direct assignment and ``device.run(run_args=...)``.
        """
        spec = self.spec if spec is None else spec
        if spec.structure() != self.spec.structure():
            raise SpecError("the values come from a spec of another structure")
        owners = {GROUP_NAME: self.group, SYNAPSES_NAME: self.synapses}
        targets = {}
        for key, value in value_arrays(spec, self.settings).items():
            owner, name = key.split(".")
            targets[getattr(owners[owner], name).variable] = value
        return targets

    @staticmethod
    def _initial_values(spec):
        model = spec.model
        out = {}
        for var, value in model.initial.items():
            if isinstance(value, str):
                if value not in spec.parameters:
                    raise SpecError(
                        f"initial value of {var!r} names {value!r}, not a parameter"
                    )
                out[var] = (spec.parameters[value], model.parameter_unit(value))
            else:
                unit = (
                    brian2.get_unit(get_dimensions(value))
                    if isinstance(value, Quantity)
                    else 1
                )
                out[var] = (np.full(spec.n_neurons, float(np.asarray(value))), unit)
        return out

    def set_values(self, spec):
        """Assign a spec's values (same structure) to the Brian2 objects."""
        for variable, (values, unit) in self.value_targets(spec).items():
            owner = variable.owner
            getattr(owner, variable.name)[:] = np.asarray(values, dtype=float) * unit

    def run(self, report=None):
        """Simulate for the stimulus duration."""
        self.network.run(self.duration, report=report, namespace={})

    def features(self):
        """Recorded features, one array (n_samples, n_neurons) per feature."""
        data = {}
        for name, var in zip(
            self.settings.features,
            _recorded_variables(self.spec, self.settings),
            strict=True,
        ):
            values = np.asarray(getattr(self.monitor, var)).T.copy()
            if name == "spikes":
                values /= float(self.settings.spike_filter_tau)
            data[name] = values
        counts = (
            np.asarray(self.spike_counter.count).copy()
            if self.spike_counter is not None
            else None
        )
        return Features(
            times=np.asarray(self.monitor.t).copy(),
            data=data,
            spike_counts=counts,
            spec=self.spec,
        )


def build_brian2(spec, stimulus, settings, stimulus_dt=None):
    """Build the Brian2 objects of ``spec`` on the active device.

    See :class:`BrianNetwork` for the arguments.
    """
    return BrianNetwork(spec, stimulus, settings, stimulus_dt=stimulus_dt)


def simulate(spec, stimulus, settings, stimulus_dt=None, target="numpy"):
    """Build and run ``spec`` with Brian2's runtime device.

    Parameters
    ----------
    spec : NetworkSpec
        Network, possibly batched (see :func:`batch`).
    stimulus : ndarray, shape (n_steps, K)
        Input signal.
    settings : SimulationSettings
    stimulus_dt : Quantity, optional
        Step of the stimulus (default ``settings.dt``).
    target : {"numpy", "cython"}
        Brian2 code-generation target.

    Returns
    -------
    Features
    """
    if target not in ("numpy", "cython"):
        raise ParameterError(f"target={target!r}; expected 'numpy' or 'cython'")
    if brian2.get_device().__class__.__name__ != "RuntimeDevice":
        brian2.set_device("runtime")
    brian2.prefs.codegen.target = target
    net = BrianNetwork(spec, stimulus, settings, stimulus_dt=stimulus_dt)
    net.run()
    return net.features()
