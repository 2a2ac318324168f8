"""Equation-level neuron models: Brian2 equations with declared per-neuron parameters.

A :class:`NeuronModel` is plain data: the Brian2 equation text, threshold, reset and
refractory period, the per-neuron parameters with their default values, how recurrent
synapses act on the neuron, and which variables can serve as readout features. No Brian2
object is created here; :mod:`hetbrian.network` turns a model into a ``NeuronGroup``.

Conventions every model follows, so that one network builder serves all of them:

- ``I_ext`` is the external drive (stimulus through the input weights). The network
  defines it as ``I_ext = w_in_0*stimulus(t, 0) + ... + I_bias``.
- ``I_rec`` is the recurrent drive when synapses act through a summed variable
  (rate models); spiking models instead name an ``on_pre`` statement.
- The text ``{noise}`` marks where the noise term enters a differential equation.
  The network replaces it by ``+ sigma_noise*sqrt(2/<noise_tau>)*xi`` when noise is on
  and by nothing when it is off, so a noise-free network integrates deterministic
  equations.
  ``sigma_noise`` is the stationary standard deviation that the noise alone would give.
- Every per-neuron parameter is declared ``(constant)``, so that a standalone binary can
  receive new values at run time.

Write your own model by giving these fields; :func:`custom_model` checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import brian2
from brian2 import Quantity, amp, ms, mV, nS, ohm, pA, volt
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions

from hetbrian.errors import ParameterError, UnitError

__all__ = [
    "NeuronModel",
    "rate_model",
    "lif_model",
    "lif_exp_synapse_model",
    "adaptive_lif_model",
    "custom_model",
    "TRANSFER_FUNCTIONS",
]

#: Transfer functions f of the rate model, as Brian2 expressions of ``v``.
TRANSFER_FUNCTIONS = {
    "tanh": "tanh(v)",
    "sigmoid": "1/(1 + exp(-v))",
    "relu": "v*int(v > 0)",
}


@dataclass(frozen=True)
class NeuronModel:
    """A neuron model as Brian2 equation text plus declared per-neuron parameters.

    Parameters
    ----------
    name : str
        Short name, used in object names and build keys.
    equations : str
        Brian2 equations. Must use ``I_ext``; may use ``I_rec`` and ``{noise}``.
    parameters : dict of str to Quantity or float
        Per-neuron parameters and their defaults; each must be declared in
        ``equations`` as ``name : unit (constant)``.
    kind : {"rate", "spiking"}
        Rate models read out a variable; spiking models emit spikes.
    input_unit : Unit
        Unit of ``I_ext`` (input weights and bias carry it).
    weight_unit : Unit
        Unit of a recurrent weight ``w``.
    synapse_summed : str, optional
        Right-hand side of a summed recurrent variable, ``I_rec_post = <this>``
        (rate models), for example ``"w*r_pre"``.
    synapse_on_pre : str, optional
        Statement executed on a presynaptic spike (spiking models).
    threshold, reset : str, optional
        Spiking condition and reset statements.
    refractory : Quantity or str, optional
        Refractory period.
    noise_tau : str
        Name of the time constant that scales the noise term.
    noise_unit : Unit
        Unit of ``sigma_noise``.
    features : dict of str to str
        Readout features: name to the recorded variable. Spiking models add
        ``"spikes"`` (an exponentially filtered spike train) automatically.
    initial : dict of str to str or Quantity
        Initial values of state variables (Brian2 expressions may use parameters).
    method : str
        Brian2 integration method.
    references : str
        Where the default values come from.
    """

    name: str
    equations: str
    parameters: dict
    kind: str
    input_unit: object
    weight_unit: object
    synapse_summed: str | None = None
    synapse_on_pre: str | None = None
    threshold: str | None = None
    reset: str | None = None
    refractory: object = None
    noise_tau: str = "tau"
    noise_unit: object = 1
    features: dict = field(default_factory=dict)
    initial: dict = field(default_factory=dict)
    method: str = "euler"
    references: str = ""

    def __post_init__(self):
        _check_model(self)

    def equation_text(self, noise):
        """Equation text with the noise marker resolved.

        Parameters
        ----------
        noise : bool
            Whether the white-noise term is included.
        """
        term = f"+ sigma_noise*sqrt(2/{self.noise_tau})*xi" if noise else ""
        return self.equations.replace("{noise}", term)

    def parameter_unit(self, name):
        """Brian2 unit of a declared parameter."""
        value = self.parameters[name]
        if isinstance(value, Quantity):
            return brian2.get_unit(get_dimensions(value))
        return 1

    def describe(self):
        """Plain-data summary (what enters a build key)."""
        return {
            "name": self.name,
            "equations": self.equations,
            "parameters": sorted(self.parameters),
            "kind": self.kind,
            "input_unit": str(self.input_unit),
            "weight_unit": str(self.weight_unit),
            "synapse_summed": self.synapse_summed,
            "synapse_on_pre": self.synapse_on_pre,
            "threshold": self.threshold,
            "reset": self.reset,
            "refractory": str(self.refractory),
            "noise_tau": self.noise_tau,
            "features": dict(sorted(self.features.items())),
            "method": self.method,
        }


_DECLARATION = re.compile(
    r"^[ \t]*(\w+)[ \t]*:[ \t]*([^()#\n]+?)[ \t]*\([ \t]*constant[ \t]*\)", re.M
)


def _check_model(model):
    if model.kind not in ("rate", "spiking"):
        raise ParameterError(f"kind={model.kind!r}; expected 'rate' or 'spiking'")
    text = model.equations.replace("{noise}", "")
    try:
        eqs = brian2.Equations(text)
    except Exception as err:  # Brian2 raises several types for bad equation text
        raise ParameterError(f"equations of model {model.name!r}: {err}") from err
    if "I_ext" not in eqs.identifiers and "I_ext" not in eqs.names:
        raise ParameterError(
            f"equations of model {model.name!r} do not use I_ext; the network feeds "
            "the stimulus through I_ext"
        )
    declared = dict(_DECLARATION.findall(text))
    for name, default in model.parameters.items():
        if name not in declared:
            raise ParameterError(
                f"parameter {name!r} of model {model.name!r} is not declared in the "
                f"equations as '{name} : <unit> (constant)'"
            )
        expected = eqs[name].dim
        got = (
            get_dimensions(default) if isinstance(default, Quantity) else DIMENSIONLESS
        )
        if got != expected:
            raise UnitError(
                f"default {name}={default!r} of model {model.name!r} has dimensions "
                f"{got}; the equations declare {expected}"
            )
    if model.kind == "rate" and model.synapse_summed is None:
        raise ParameterError(f"rate model {model.name!r} needs synapse_summed")
    if model.kind == "spiking":
        if model.threshold is None or model.synapse_on_pre is None:
            raise ParameterError(
                f"spiking model {model.name!r} needs threshold and synapse_on_pre"
            )
    for name, variable in model.features.items():
        if variable not in eqs.names:
            raise ParameterError(
                f"feature {name!r} of model {model.name!r} records {variable!r}, "
                "which the equations do not define"
            )


def rate_model(transfer="tanh", tau=20 * ms):
    """Leaky-integrator rate unit.

    ``tau dv/dt = -v + I_rec + I_ext (+ noise)``, rate ``r = f(v)`` with ``f`` one of
    :data:`TRANSFER_FUNCTIONS` (``tanh``; ``sigmoid``, the positive logistic function;
    ``relu``, rectified linear). Dimensionless ``v``, ``r``, inputs and weights.

    Parameters
    ----------
    transfer : {"tanh", "sigmoid", "relu"}
        Transfer function ``f``.
    tau : Quantity
        Default membrane time constant. 20 ms is close to the mean (19.2 ms) and median
        (17.7 ms) membrane time constant of cortical neurons in the Allen Cell Types
        Database (Gouwens et al., Nat. Neurosci. 22:1182, 2019).
    """
    if transfer not in TRANSFER_FUNCTIONS:
        raise ParameterError(
            f"transfer={transfer!r}; expected one of {sorted(TRANSFER_FUNCTIONS)}"
        )
    equations = f"""
    dv/dt = (-v + I_rec + I_ext)/tau {{noise}} : 1
    r = {TRANSFER_FUNCTIONS[transfer]} : 1
    I_rec : 1
    tau : second (constant)
    """
    return NeuronModel(
        name=f"rate_{transfer}",
        equations=equations,
        parameters={"tau": tau},
        kind="rate",
        input_unit=1,
        weight_unit=1,
        synapse_summed="w*r_pre",
        features={"rate": "r", "v": "v"},
        initial={"v": 0},
        method="euler",
        references="tau: Allen Cell Types Database (Gouwens et al. 2019).",
    )


_LIF_REFERENCES = (
    "tau_m 20 ms: Allen Cell Types Database, mean 19.2 ms (Gouwens et al. 2019); "
    "E_L -70 mV, V_th -50 mV, V_reset -65 mV, 2 ms refractory period, R_m 100 Mohm: "
    "typical cortical values (Gerstner et al., Neuronal Dynamics, 2014, ch. 1 and 6)."
)

_LIF_DEFAULTS = {
    "tau_m": 20 * ms,
    "E_L": -70 * mV,
    "V_th": -50 * mV,
    "V_reset": -65 * mV,
    "R_m": 100e6 * ohm,
}


def _lif_parameters(overrides, extra=None):
    parameters = dict(_LIF_DEFAULTS)
    parameters.update(extra or {})
    for name, value in overrides.items():
        if name not in parameters:
            raise ParameterError(
                f"{name}={value!r} is not a parameter of this model; expected one of "
                f"{sorted(parameters)}"
            )
        parameters[name] = value
    return parameters


def lif_model(refractory=2 * ms, **parameters):
    """Current-based leaky integrate-and-fire neuron with delta synapses.

    ``tau_m dv/dt = E_L - v + R_m I_ext (+ noise)``; a spike when ``v > V_th``,
    then ``v = V_reset`` for the refractory period. A presynaptic spike adds ``w``
    (a voltage) to ``v``.

    Parameters
    ----------
    refractory : Quantity
        Absolute refractory period (default 2 ms).
    **parameters : Quantity
        Defaults to override among ``tau_m``, ``E_L``, ``V_th``, ``V_reset``, ``R_m``.
        Defaults: 20 ms, -70 mV, -50 mV, -65 mV, 100 Mohm (sources in ``references``).
    """
    equations = """
    dv/dt = (E_L - v + R_m*I_ext)/tau_m {noise} : volt (unless refractory)
    tau_m : second (constant)
    E_L : volt (constant)
    V_th : volt (constant)
    V_reset : volt (constant)
    R_m : ohm (constant)
    """
    return NeuronModel(
        name="lif",
        equations=equations,
        parameters=_lif_parameters(parameters),
        kind="spiking",
        input_unit=amp,
        weight_unit=volt,
        synapse_on_pre="v_post += w",
        threshold="v > V_th",
        reset="v = V_reset",
        refractory=refractory,
        noise_tau="tau_m",
        noise_unit=volt,
        features={"v": "v"},
        initial={"v": "E_L"},
        method="euler",
        references=_LIF_REFERENCES,
    )


def lif_exp_synapse_model(refractory=2 * ms, **parameters):
    """LIF neuron with an exponentially decaying synaptic current.

    ``tau_m dv/dt = E_L - v + R_m (I_syn + I_ext)``, ``tau_syn dI_syn/dt = -I_syn``;
    a presynaptic spike adds ``w`` (a current) to ``I_syn``. Threshold and reset as in
    :func:`lif_model`.

    Parameters
    ----------
    refractory : Quantity
        Absolute refractory period (default 2 ms).
    **parameters : Quantity
        Defaults to override: those of :func:`lif_model` and ``tau_syn`` (5 ms, the
        decay of AMPA-receptor currents; Destexhe et al., J. Comput. Neurosci. 1:195,
        1994).
    """
    equations = """
    dv/dt = (E_L - v + R_m*(I_syn + I_ext))/tau_m {noise} : volt (unless refractory)
    dI_syn/dt = -I_syn/tau_syn : amp
    tau_m : second (constant)
    tau_syn : second (constant)
    E_L : volt (constant)
    V_th : volt (constant)
    V_reset : volt (constant)
    R_m : ohm (constant)
    """
    return NeuronModel(
        name="lif_exp",
        equations=equations,
        parameters=_lif_parameters(parameters, {"tau_syn": 5 * ms}),
        kind="spiking",
        input_unit=amp,
        weight_unit=amp,
        synapse_on_pre="I_syn_post += w",
        threshold="v > V_th",
        reset="v = V_reset",
        refractory=refractory,
        noise_tau="tau_m",
        noise_unit=volt,
        features={"v": "v", "I_syn": "I_syn"},
        initial={"v": "E_L", "I_syn": 0 * amp},
        method="euler",
        references=_LIF_REFERENCES + " tau_syn: Destexhe et al. 1994.",
    )


def adaptive_lif_model(refractory=2 * ms, **parameters):
    """LIF neuron with a spike-triggered adaptation current.

    ``tau_m dv/dt = E_L - v + R_m (I_ext - w_a)``,
    ``tau_w dw_a/dt = a (v - E_L) - w_a``; after a spike ``v = V_reset`` and
    ``w_a += b``. Delta synapses add ``w`` (a voltage) to ``v``.

    Parameters
    ----------
    refractory : Quantity
        Absolute refractory period (default 2 ms).
    **parameters : Quantity
        Defaults to override: those of :func:`lif_model` and ``a`` (4 nS), ``b``
        (80.5 pA), ``tau_w`` (144 ms), the adaptation values of Brette and Gerstner,
        J. Neurophysiol. 94:3637 (2005).
    """
    equations = """
    dv/dt = (E_L - v + R_m*(I_ext - w_a))/tau_m {noise} : volt (unless refractory)
    dw_a/dt = (a*(v - E_L) - w_a)/tau_w : amp
    tau_m : second (constant)
    tau_w : second (constant)
    a : siemens (constant)
    b : amp (constant)
    E_L : volt (constant)
    V_th : volt (constant)
    V_reset : volt (constant)
    R_m : ohm (constant)
    """
    extra = {"tau_w": 144 * ms, "a": 4 * nS, "b": 80.5 * pA}
    return NeuronModel(
        name="adaptive_lif",
        equations=equations,
        parameters=_lif_parameters(parameters, extra),
        kind="spiking",
        input_unit=amp,
        weight_unit=volt,
        synapse_on_pre="v_post += w",
        threshold="v > V_th",
        reset="v = V_reset; w_a += b",
        refractory=refractory,
        noise_tau="tau_m",
        noise_unit=volt,
        features={"v": "v", "w_a": "w_a"},
        initial={"v": "E_L", "w_a": 0 * amp},
        method="euler",
        references=_LIF_REFERENCES + " a, b, tau_w: Brette and Gerstner 2005.",
    )


def custom_model(name, equations, parameters, kind, **kwargs):
    """A model from your own Brian2 equations.

    Parameters
    ----------
    name : str
        Short name.
    equations : str
        Brian2 equations using ``I_ext`` and, for rate models, ``I_rec``; put
        ``{noise}`` where a noise term may enter.
    parameters : dict of str to Quantity
        Per-neuron parameters, each declared ``(constant)`` in ``equations``.
    kind : {"rate", "spiking"}
    **kwargs
        The other fields of :class:`NeuronModel` (``input_unit``, ``weight_unit``,
        ``synapse_summed`` or ``synapse_on_pre``, ``threshold``, ...).

    Examples
    --------
    >>> from brian2 import ms
    >>> model = custom_model(
    ...     "softplus",
    ...     '''
    ...     dv/dt = (-v + I_rec + I_ext)/tau {noise} : 1
    ...     r = log(1 + exp(v)) : 1
    ...     I_rec : 1
    ...     tau : second (constant)
    ...     ''',
    ...     parameters={"tau": 10 * ms},
    ...     kind="rate",
    ...     input_unit=1,
    ...     weight_unit=1,
    ...     synapse_summed="w*r_pre",
    ...     features={"rate": "r"},
    ... )
    >>> sorted(model.parameters)
    ['tau']
    """
    return NeuronModel(
        name=name, equations=equations, parameters=parameters, kind=kind, **kwargs
    )
