"""A differentiable twin of a Brian2 network, generated from its own equations.

The twin is not a second model written by hand. From a
:class:`~hetbrian.network.NetworkSpec` it takes the exact equations the Brian2
network is built from (:func:`hetbrian.network.network_equations`: the model's text,
``I_ext``, the input weights, the spike-train filter), lets Brian2 write the update
(:meth:`brian2.stateupdaters.base.StateUpdateMethod.apply_stateupdater`, after
:func:`brian2.equations.refractory.add_refractoriness`), turns the update statements,
the threshold, the reset and the synaptic statements into sympy expressions with
Brian2's ``str_to_sympy``, differentiates them with :func:`sympy.diff` and lambdifies
values and derivatives to NumPy (one call per stage and step, common subexpressions
shared).

One time step ``n`` (time ``t_n = n dt``) follows Brian2's schedule:

1. ``start``: the :class:`~brian2.StateMonitor` records the state ``X_n`` when
   ``n`` is a multiple of ``readout_dt / dt``;
2. ``groups``: summed variables first, ``I_rec[j] = sum_{s: post(s)=j} g(w_s,
   X_n[pre(s)])`` (order ``-1``), then the refractory flag
   ``nr_n = (n - n_last) >= round(refractory / dt)``, then the state update
   ``X' = F(X_n, P, I_rec, u_n, nr_n, t_n)`` (the Euler step; equations marked
   ``(unless refractory)`` carry the factor ``int(not_refractory)``);
3. ``thresholds``: ``z = H(c(X', P)) nr_n`` with ``c = lhs - rhs`` of the condition;
4. ``synapses``: ``X'[var][:, post(s)] += z[:, pre(s)] g(w_s)`` (``on_pre``, no delay);
5. ``resets``: each reset statement in turn, as ``x <- x (1 - z) + z R(X, P)`` for
   ``x = R`` and ``x <- x + z R(X, P)`` for ``x += R``.

The stimulus enters through ``stimulus(t, c)``, read as Brian2's ``TimedArray`` reads
it: row ``floor(t_n / stimulus_dt)``, the last row beyond the end.

Surrogate gradient. The forward pass uses the Heaviside step ``H``; the backward pass
replaces ``dH/dc`` by the derivative of a smooth step of ``x = c / scale``
(:class:`Surrogate`; by default the fast sigmoid ``1 / (beta |x| + 1)^2``). With
``smooth=True`` the forward pass uses that smooth step itself, ``z = S(x)``, whose
exact derivative the backward pass then computes: this is what the gradient checks
compare with finite differences. The reset is differentiable in ``z`` and in the reset
value. The refractory flag ``nr`` is a function of past spike times; no gradient flows
through it (as through spike timing in every surrogate-gradient method).

Shortcomings, stated where they live: noise (``xi``) is not part of the twin (a noisy
spec raises :class:`~hetbrian.errors.SpecError`: train noise-free, then switch noise on
for the Brian2 run); refractory periods must be a fixed time, not a condition;
synaptic delays are not modelled (the networks here have none); integration methods
must evaluate the stimulus at ``t`` only (``euler``, the models' default, does).
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import sympy
from brian2 import Quantity, second
from brian2.equations.refractory import add_refractoriness
from brian2.parsing.sympytools import str_to_sympy
from brian2.stateupdaters.base import StateUpdateMethod

from hetbrian.errors import ParameterError, SpecError
from hetbrian.network import (
    GROUP_NAME,
    STIMULUS_NAME,
    NetworkSpec,
    SimulationSettings,
    network_equations,
    quantity_in,
    value_arrays,
)

__all__ = ["Surrogate", "DifferentiableTwin", "TwinRun", "SURROGATES"]

log = logging.getLogger(__name__)

#: Surrogate derivatives of the spike threshold, by name.
SURROGATES = ("fast_sigmoid", "sigmoid")

_NR = "not_refractory"


@dataclasses.dataclass(frozen=True)
class Surrogate:
    r"""Smooth stand-in for the derivative of the spike threshold.

    With ``x = c / scale``, ``c`` the signed distance to threshold (``v - V_th``):

    - ``"fast_sigmoid"``: :math:`S'(x) = 1 / (\beta |x| + 1)^2`, smooth step
      :math:`S(x) = 1/2 + x / (\beta |x| + 1)` (Zenke and Ganguli 2018; the
      surrogate of Perez-Nieves et al. 2021 with :math:`\beta = 100`);
    - ``"sigmoid"``: :math:`S(x) = \sigma(\beta x)`,
      :math:`S'(x) = \beta \sigma(\beta x)(1 - \sigma(\beta x))`.

    Parameters
    ----------
    kind : {"fast_sigmoid", "sigmoid"}
        Shape of the surrogate.
    beta : float
        Steepness, per unit of ``x``.
    scale : Quantity, optional
        Unit of distance to threshold (same dimensions as the thresholded variable).
        Default: the mean distance to threshold of the initial state (20 mV for the
        LIF defaults, ``E_L = -70 mV``, ``V_th = -50 mV``).
    """

    kind: str = "fast_sigmoid"
    beta: float = 100.0
    scale: Quantity | None = None

    def __post_init__(self):
        if self.kind not in SURROGATES:
            raise ParameterError(f"kind={self.kind!r}; expected one of {SURROGATES}")
        if not (np.isfinite(self.beta) and self.beta > 0):
            raise ParameterError(f"beta={self.beta!r}; expected a number > 0")

    def smooth(self, x):
        """Smooth step ``S(x)`` whose derivative is :meth:`derivative`."""
        if self.kind == "fast_sigmoid":
            return 0.5 + x / (self.beta * np.abs(x) + 1.0)
        return 0.5 * (1.0 + np.tanh(0.5 * self.beta * x))

    def derivative(self, x):
        """Surrogate derivative ``S'(x)``."""
        if self.kind == "fast_sigmoid":
            return 1.0 / (self.beta * np.abs(x) + 1.0) ** 2
        s = 0.5 * (1.0 + np.tanh(0.5 * self.beta * x))
        return self.beta * s * (1.0 - s)


# ----------------------------------------------------------------- sympy machinery
def _sympy(code, replacements):
    """``str_to_sympy`` of Brian2 code, symbols renamed through ``replacements``."""
    expr = str_to_sympy(code)
    return expr.xreplace(replacements) if replacements else expr


def _int_to_piecewise(expr):
    """Brian2's ``int(x)`` (sympy ``int_``) as a piecewise 0/1 that sympy can diff."""

    def convert(e):
        if isinstance(e, sympy.Function) and e.func.__name__ == "int_":
            (arg,) = e.args
            if isinstance(arg, sympy.Symbol):
                return arg  # not_refractory: already a 0/1 float in the twin
            return sympy.Piecewise((1, arg), (0, True))
        return None

    return expr.replace(lambda e: convert(e) is not None, convert)


class _Kernel:
    """Values and first derivatives of a list of expressions, lambdified together."""

    def __init__(self, exprs, args, wrt):
        self.args = [sympy.Symbol(a, real=True) for a in args]
        self.wrt = list(wrt)
        by_name = {s.name: s for e in exprs for s in e.free_symbols}
        canon = {
            by_name[a]: s for a, s in zip(args, self.args, strict=True) if a in by_name
        }
        self.exprs = [sympy.sympify(e).xreplace(canon) for e in exprs]
        self.derivs = {}
        flat = list(self.exprs)
        index = []
        for i, e in enumerate(self.exprs):
            for name in self.wrt:
                d = sympy.diff(e, sympy.Symbol(name, real=True))
                if d != 0:
                    index.append((i, name))
                    flat.append(d)
        self.index = index
        self._fn = sympy.lambdify(self.args, flat, modules="numpy", cse=True)

    def __call__(self, values):
        """Values, and ``{(i, name): d expr_i / d name}`` for nonzero derivatives."""
        out = self._fn(*[values[s.name] for s in self.args])
        n = len(self.exprs)
        return list(out[:n]), dict(zip(self.index, out[n:], strict=True))


def _parse_statements(text, allowed_ops=("=", "+=", "-=")):
    """Brian2 statements ``var op expr`` separated by ``;`` or new lines."""
    out = []
    for raw in re.split(r"[;\n]", text or ""):
        line = raw.split("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(\w+)\s*(\+=|-=|\*=|/=|=)\s*(.+)", line)
        if m is None or m.group(2) not in allowed_ops:
            raise SpecError(
                f"statement {line!r}: the twin understands 'x = expr', 'x += expr' "
                "and 'x -= expr'"
            )
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


@dataclasses.dataclass
class TwinRun:
    """Result of :meth:`DifferentiableTwin.forward`, with what the backward pass needs.

    Attributes
    ----------
    features : ndarray, shape (B, n_samples, n_features * N)
        Recorded features, side by side in the order of ``settings.features``, as
        :meth:`hetbrian.network.Features.matrix` lays them out.
    times : ndarray
        Sample times in seconds.
    spikes : ndarray of bool, shape (B, n_steps, N), or None
        Hard threshold crossings (spiking models).
    """

    features: np.ndarray
    times: np.ndarray
    spikes: np.ndarray | None
    cache: list
    values: dict
    smooth: bool


class DifferentiableTwin:
    """NumPy forward and backward pass of a spec's Brian2 equations.

    Parameters
    ----------
    spec : NetworkSpec
        The network (noise off); its values are the defaults of :meth:`forward`.
    settings : SimulationSettings
        Step, readout interval and features, as for the Brian2 run.
    stimulus_dt : Quantity, optional
        Step of the stimulus rows (default ``settings.dt``); a whole multiple of it.
    surrogate : Surrogate, optional
        Threshold surrogate (spiking models); default :class:`Surrogate`\\ ``()``.

    Attributes
    ----------
    state_names : list of str
        State variables, in Brian2's order.
    parameter_names : list of str
        Per-neuron constants the update reads (``tau``, ``w_in_0``, ``I_bias``, ...);
        gradients are returned for each of them.
    update_code : str
        The abstract code Brian2 generated, from which the twin was derived.

    Examples
    --------
    >>> from brian2 import ms
    >>> from hetbrian import models, network
    >>> spec = network.batch([network.ReservoirConfig(models.rate_model(), 5, seed=1)])
    >>> settings = network.SimulationSettings(dt=0.5 * ms, readout_dt=1 * ms)
    >>> twin = DifferentiableTwin(spec, settings)
    >>> twin.update_code.splitlines()[0]
    '_v = dt*(I_bias + I_rec - v + w_in_0*stimulus(t, 0))/tau + v'
    >>> run = twin.forward(np.ones((20, 1)))
    >>> run.features.shape
    (1, 10, 5)
    """

    def __init__(self, spec, settings, stimulus_dt=None, surrogate=None):
        if not isinstance(spec, NetworkSpec):
            raise ParameterError(f"spec={spec!r}; expected a NetworkSpec")
        if not isinstance(settings, SimulationSettings):
            raise ParameterError(f"settings={settings!r}; expected SimulationSettings")
        if spec.noise:
            raise SpecError(
                "the spec has noise on (sigma_noise > 0); the twin integrates "
                "noise-free equations only: train with noise=0 and switch noise on "
                "for the Brian2 run"
            )
        settings.check_model(spec.model)
        self.spec = spec
        self.settings = settings
        self.dt = float(settings.dt)
        stimulus_dt = settings.dt if stimulus_dt is None else stimulus_dt
        sdt = float(quantity_in("stimulus_dt", stimulus_dt, second))
        ratio = sdt / self.dt
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ParameterError(
                f"stimulus_dt={stimulus_dt!r}; expected a whole multiple of "
                f"dt={settings.dt!r}"
            )
        self.steps_per_row = int(round(ratio))
        self.surrogate = Surrogate() if surrogate is None else surrogate
        if not isinstance(self.surrogate, Surrogate):
            raise ParameterError(f"surrogate={surrogate!r}; expected a Surrogate")
        self._generate()
        self.threshold_scale = self._scale() if self.kind == "spiking" else None

    # ------------------------------------------------------------------ generation
    def _generate(self):
        spec, settings, model = self.spec, self.settings, self.spec.model
        eqs, reset = network_equations(spec, settings)
        self.equations = eqs
        self.reset_code = reset
        refractory = model.refractory
        if refractory is not None and refractory is not False:
            if not isinstance(refractory, Quantity):
                raise SpecError(
                    f"refractory={refractory!r}: the twin needs a fixed refractory "
                    "period (a time), not a condition"
                )
            self.refractory_steps = int((float(refractory) + 1e-3 * self.dt) / self.dt)
            update_eqs = add_refractoriness(eqs)
        else:
            self.refractory_steps = None
            update_eqs = eqs
        code = StateUpdateMethod.apply_stateupdater(update_eqs, {}, method=model.method)
        self.update_code = code
        self.state_names = sorted(eqs.diff_eq_names)
        # Brian2 writes to '(unless refractory)' variables from synapses only where
        # the neuron is not refractory (Variable.conditional_write); resets write
        # regardless
        self._clamped = {
            e.varname
            for e in eqs.values()
            if "unless refractory" in e.flags and self.refractory_steps is not None
        }
        self.n_inputs = spec.n_inputs

        # the stimulus calls become plain symbols u_c
        def stimulus_symbol(expr):
            def convert(e):
                if isinstance(e, sympy.Function) and e.func.__name__ == STIMULUS_NAME:
                    t_arg, c_arg = e.args
                    if getattr(t_arg, "name", None) != "t" or not c_arg.is_Integer:
                        raise SpecError(
                            f"method {model.method!r} evaluates {e} (the stimulus "
                            "at another time than t); the twin supports methods "
                            "that read the stimulus at t, such as 'euler'"
                        )
                    return sympy.Symbol(f"_u_{int(c_arg)}", real=True)
                return None

            return expr.replace(lambda e: convert(e) is not None, convert)

        temps = {}
        for line in code.splitlines():
            if not line.strip():
                continue
            lhs, rhs = (s.strip() for s in line.split("=", 1))
            expr = stimulus_symbol(_int_to_piecewise(str_to_sympy(rhs)))
            temps[lhs] = expr.xreplace(
                {sympy.Symbol(k, real=True): v for k, v in temps.items()}
            )
        new_state = [temps[x] for x in self.state_names]

        # subexpressions, fully expanded in states and parameters
        sub = {}
        pending = {n: eqs[n].expr.code for n in eqs.subexpr_names}
        for _ in range(len(pending) + 1):
            for name, text in list(pending.items()):
                expr = stimulus_symbol(_int_to_piecewise(str_to_sympy(text)))
                names = {s.name for s in expr.free_symbols}
                if names & set(pending) - {name}:
                    continue
                sub[name] = expr.xreplace(
                    {sympy.Symbol(k, real=True): v for k, v in sub.items()}
                )
                del pending[name]
        if pending:
            raise SpecError(f"subexpressions {sorted(pending)} refer to each other")
        self._subexpressions = sub

        def expand(text):
            expr = _int_to_piecewise(str_to_sympy(text))
            for _ in range(4):
                expr = stimulus_symbol(
                    expr.xreplace(
                        {sympy.Symbol(k, real=True): v for k, v in sub.items()}
                    )
                )
            return expr

        values = value_arrays(spec, settings)
        prefix = f"{GROUP_NAME}."
        constants = {k[len(prefix) :] for k in values if k.startswith(prefix)}
        constants -= set(self.state_names)
        constants -= {n for n in constants if n not in eqs.names}
        used = set()
        for e in new_state:
            used |= {s.name for s in e.free_symbols}

        # recurrent coupling
        self.kind = model.kind
        self.coupling = None
        self.on_pre = []
        if spec.has_synapses and model.kind == "rate":
            g = str_to_sympy(model.synapse_summed)
            repl = {}
            for s in g.free_symbols:
                if s.name.endswith("_post"):
                    raise SpecError(
                        f"synapse_summed={model.synapse_summed!r} reads {s.name}; the "
                        "twin supports summed expressions of w and presynaptic values"
                    )
                if s.name.endswith("_pre"):
                    base = s.name[: -len("_pre")]
                    repl[s] = sub.get(base, sympy.Symbol(base, real=True))
            g = stimulus_symbol(g.xreplace(repl))
            self.coupling = "I_rec"
            gnames = sorted({s.name for s in g.free_symbols} - {"w"})
            self._g_args = gnames
            self._g = _Kernel(
                [g],
                ["w", *gnames],
                ["w", *[n for n in gnames if n in self.state_names or n in constants]],
            )
        if spec.has_synapses and model.kind == "spiking":
            for var, op, text in _parse_statements(model.synapse_on_pre, ("+=", "-=")):
                if not var.endswith("_post"):
                    raise SpecError(
                        f"on_pre statement on {var!r}: the twin supports updates of "
                        "postsynaptic variables ('v_post += w')"
                    )
                g = str_to_sympy(text)
                if {s.name for s in g.free_symbols} - {"w"}:
                    raise SpecError(
                        f"on_pre expression {text!r}: the twin supports expressions "
                        "of w alone"
                    )
                sign = -1.0 if op == "-=" else 1.0
                self.on_pre.append(
                    (var[: -len("_post")], _Kernel([sign * g], ["w"], ["w"]))
                )

        # threshold and reset
        self.threshold = None
        self.reset = []
        if model.kind == "spiking":
            cond = _int_to_piecewise(str_to_sympy(model.threshold))
            if isinstance(cond, (sympy.StrictGreaterThan, sympy.GreaterThan)):
                distance = cond.lhs - cond.rhs
            elif isinstance(cond, (sympy.StrictLessThan, sympy.LessThan)):
                distance = cond.rhs - cond.lhs
            else:
                raise SpecError(
                    f"threshold={model.threshold!r}: the twin needs one comparison "
                    "such as 'v > V_th'"
                )
            self._threshold_condition = cond
            tnames = sorted(s.name for s in distance.free_symbols)
            self._t_args = tnames
            self.threshold = _Kernel(
                [distance], tnames, [n for n in tnames if n != "t"]
            )
            self._hard = sympy.lambdify(
                [sympy.Symbol(n, real=True) for n in tnames],
                cond.xreplace(
                    {s: sympy.Symbol(s.name, real=True) for s in cond.free_symbols}
                ),
                modules="numpy",
            )
            used |= set(tnames)
            for var, op, text in _parse_statements(reset):
                if var not in self.state_names:
                    raise SpecError(
                        f"reset statement on {var!r}: the twin resets state "
                        f"variables {self.state_names}"
                    )
                r = expand(text)
                rnames = sorted(s.name for s in r.free_symbols)
                used |= set(rnames)
                self.reset.append((var, op, rnames, _Kernel([r], rnames, rnames)))

        # recorded features
        self.feature_exprs = []
        for name in settings.features:
            var = "spike_trace" if name == "spikes" else model.features[name]
            expr = expand(var)
            if name == "spikes":
                expr = expr / sympy.Symbol("tau_filter", real=True)
            self.feature_exprs.append(expr)
            used |= {s.name for s in expr.free_symbols}

        self.parameter_names = sorted(n for n in constants if n in used)
        inputs = [f"_u_{c}" for c in range(self.n_inputs)]
        extra = [n for n in ("I_rec", _NR, "t", "dt") if n in used]
        unknown = used - set(self.state_names) - set(self.parameter_names)
        unknown -= set(inputs) | set(extra)
        if unknown:
            raise SpecError(
                f"the equations read {sorted(unknown)}, which the twin cannot supply"
            )
        self._update_args = self.state_names + self.parameter_names + inputs + extra
        self.update = _Kernel(
            new_state,
            self._update_args,
            self.state_names
            + self.parameter_names
            + (["I_rec"] if "I_rec" in extra else []),
        )
        fargs = self.state_names + self.parameter_names
        self.features_kernel = _Kernel(self.feature_exprs, fargs, fargs)
        self.n_features = len(self.feature_exprs)
        log.debug(
            "twin of %s: states %s, parameters %s",
            model.name,
            self.state_names,
            self.parameter_names,
        )

    # ---------------------------------------------------------------------- values
    def default_values(self, spec=None):
        """Per-neuron values of ``spec`` (default: the twin's) as SI float arrays.

        Returns
        -------
        dict
            ``parameters`` (name to (N,) array, every name of
            :attr:`parameter_names`), ``initial`` (state name to (N,) array),
            ``syn_w`` (recurrent weights).
        """
        spec = self.spec if spec is None else spec
        if spec.structure() != self.spec.structure():
            raise SpecError("the spec has another structure than the twin's")
        arrays = value_arrays(spec, self.settings)
        n = spec.n_neurons
        params = {}
        for name in self.parameter_names:
            params[name] = np.array(arrays[f"{GROUP_NAME}.{name}"][0], dtype=float)
        initial = {}
        for name in self.state_names:
            key = f"{GROUP_NAME}.{name}"
            initial[name] = (
                np.array(arrays[key][0], dtype=float) if key in arrays else np.zeros(n)
            )
        syn_w = np.array(spec.syn_w, dtype=float)
        return {"parameters": params, "initial": initial, "syn_w": syn_w}

    def values(self, parameters=None, syn_w=None):
        """Values for :meth:`forward`: the spec's, with some replaced.

        Initial values that the model sets from a parameter (``v = E_L``) follow the
        replaced parameter, as they do in the Brian2 network built from
        :meth:`write_back`.

        Parameters
        ----------
        parameters : dict of str to ndarray, optional
            Per-neuron SI values for names of :attr:`parameter_names`.
        syn_w : ndarray, optional
            Recurrent weights.
        """
        values = self.default_values()
        for name, array in (parameters or {}).items():
            if name not in values["parameters"]:
                raise ParameterError(
                    f"parameters names {name!r}; expected one of {self.parameter_names}"
                )
            values["parameters"][name] = np.asarray(array, dtype=float)
        for var, source in self.spec.model.initial.items():
            if isinstance(source, str) and source in values["parameters"]:
                values["initial"][var] = values["parameters"][source].copy()
        if syn_w is not None:
            values["syn_w"] = np.asarray(syn_w, dtype=float)
        return values

    def write_back(self, parameters=None, syn_w=None, spec=None):
        """A copy of ``spec`` (default: the twin's) holding new values.

        Parameters
        ----------
        parameters : dict of str to ndarray, optional
            Per-neuron SI values, by name: model parameters, ``I_bias`` and
            ``w_in_<c>`` (the input weights).
        syn_w : ndarray, optional
            Recurrent weights (SI).

        Returns
        -------
        NetworkSpec
        """
        spec = self.spec if spec is None else spec
        new_params = {k: np.array(v, dtype=float) for k, v in spec.parameters.items()}
        w_in = np.array(spec.input_weights, dtype=float)
        for name, values in (parameters or {}).items():
            values = np.asarray(values, dtype=float)
            if values.shape != (spec.n_neurons,):
                raise ParameterError(
                    f"parameters[{name!r}] has shape {values.shape}; expected "
                    f"({spec.n_neurons},)"
                )
            m = re.fullmatch(r"w_in_(\d+)", name)
            if m:
                w_in[:, int(m.group(1))] = values
            elif name in new_params:
                new_params[name] = values.copy()
            else:
                raise ParameterError(
                    f"parameters names {name!r}; expected one of "
                    f"{sorted(new_params)} or w_in_<c>"
                )
        new_w = spec.syn_w if syn_w is None else np.asarray(syn_w, dtype=float)
        if new_w.shape != spec.syn_w.shape:
            raise ParameterError(
                f"syn_w has shape {new_w.shape}; expected {spec.syn_w.shape}"
            )
        return dataclasses.replace(
            spec,
            parameters=new_params,
            input_weights=np.ascontiguousarray(w_in),
            syn_w=np.array(new_w, dtype=float),
        )

    # --------------------------------------------------------------------- forward
    def _stimulus(self, stimulus):
        u = np.asarray(stimulus, dtype=float)
        if u.ndim == 2:
            u = u[None]
        if u.ndim != 3 or u.shape[2] != self.n_inputs:
            raise ParameterError(
                f"stimulus has shape {np.shape(stimulus)}; expected (n_rows, "
                f"{self.n_inputs}) or (batch, n_rows, {self.n_inputs})"
            )
        if not np.all(np.isfinite(u)):
            raise ParameterError("stimulus contains NaN or inf")
        return u

    def _scale(self):
        """Surrogate scale, fixed from the spec's own values (not from a run's)."""
        if self.surrogate.scale is not None:
            return float(np.asarray(self.surrogate.scale))
        values = self.default_values()
        env = dict(values["initial"])
        env.update(values["parameters"])
        env["t"] = 0.0
        (c,), _ = self.threshold(env)
        scale = float(np.mean(np.abs(c)))
        return scale if scale > 0 else 1.0

    def forward(self, stimulus, values=None, smooth=False):
        """Simulate a batch of stimulus sequences.

        Parameters
        ----------
        stimulus : ndarray, shape (n_rows, K) or (B, n_rows, K)
            One row per ``stimulus_dt``; the run lasts ``n_rows * stimulus_dt``.
        values : dict, optional
            As returned by :meth:`default_values` (default: the spec's values).
        smooth : bool
            Spiking models: emit the smooth step ``S(c / scale)`` instead of ``H``
            (see the module docstring).

        Returns
        -------
        TwinRun
        """
        u = self._stimulus(stimulus)
        values = self.default_values() if values is None else values
        batch, n_rows, _ = u.shape
        n = self.spec.n_neurons
        n_steps = n_rows * self.steps_per_row
        k = self.settings.steps_per_sample
        params = values["parameters"]
        syn_w = values["syn_w"]
        state = {
            s: np.broadcast_to(values["initial"][s], (batch, n)).copy()
            for s in self.state_names
        }
        pre, post = self.spec.syn_i, self.spec.syn_j
        spiking = self.kind == "spiking"
        scale = self.threshold_scale if spiking else 1.0
        last = np.full((batch, n), -(10**9), dtype=np.int64)
        g_on_pre = [(var, kern({"w": syn_w})) for var, kern in self.on_pre]
        recorded, cache = [], []
        spikes = np.zeros((batch, n_steps, n), dtype=bool) if spiking else None
        for step in range(n_steps):
            entry = {}
            env = dict(state)
            env.update(params)
            if step % k == 0:
                feats, _ = self.features_kernel(env)
                recorded.append(
                    np.concatenate([np.broadcast_to(f, (batch, n)) for f in feats], 1)
                )
                entry["record"] = dict(state)
            env["t"] = step * self.dt
            env["dt"] = self.dt
            row = min(step // self.steps_per_row, n_rows - 1)
            for c in range(self.n_inputs):
                env[f"_u_{c}"] = u[:, row, c][:, None]
            if self.coupling is not None:
                genv = {"w": syn_w}
                for name in self._g_args:
                    source = state.get(name, params.get(name))
                    genv[name] = source[..., pre]
                (gs,), gd = self._g(genv)
                gs = np.broadcast_to(gs, (batch, pre.size))
                i_rec = np.zeros((batch, n))
                np.add.at(i_rec, (slice(None), post), gs)
                env["I_rec"] = i_rec
                entry["genv"] = genv
                entry["gd"] = gd
            elif "I_rec" in self._update_args:
                env["I_rec"] = 0.0  # no synapses: the summed variable stays at zero
            if self.refractory_steps is not None:
                nr = ((step - last) >= self.refractory_steps).astype(float)
                env[_NR] = nr
            new, jac = self.update(env)
            entry["env"] = env
            entry["jac"] = jac
            state = {
                s: np.broadcast_to(v, (batch, n)).astype(float, copy=True)
                for s, v in zip(self.state_names, new, strict=True)
            }
            if spiking:
                tenv = dict(state)
                tenv.update(params)
                tenv["t"] = env["t"]
                (c,), cd = self.threshold(tenv)
                x = np.broadcast_to(c, (batch, n)) / scale
                hard = np.asarray(self._hard(*[tenv[a] for a in self._t_args]), bool)
                hard = np.broadcast_to(hard, (batch, n))
                gate = env.get(_NR, 1.0)
                if self.refractory_steps is not None:
                    hard = hard & (gate > 0)
                z = (self.surrogate.smooth(x) * gate) if smooth else hard.astype(float)
                spikes[:, step] = hard
                last[hard] = step
                # after the threshold a neuron that spiked is refractory
                open_post = np.broadcast_to(gate, (batch, n)) * (1.0 - hard)
                entry.update(x=x, cd=cd, gate=gate, z=z, scale=scale, open=open_post)
                for var, (gw, _) in g_on_pre:
                    gw = np.broadcast_to(gw[0], pre.shape)
                    inc = np.zeros((batch, n))
                    np.add.at(inc, (slice(None), post), z[:, pre] * gw)
                    if var in self._clamped:
                        inc *= open_post
                    state[var] = state[var] + inc
                resets = []
                for var, op, rnames, kern in self.reset:
                    renv = {a: state.get(a, params.get(a)) for a in rnames}
                    (r,), rd = kern(renv)
                    r = np.broadcast_to(r, (batch, n))
                    old = state[var]
                    resets.append((var, op, r, rd, old))
                    if op == "=":
                        state[var] = old * (1.0 - z) + z * r
                    else:
                        state[var] = old + (z * r if op == "+=" else -z * r)
                entry["resets"] = resets
            cache.append(entry)
        features = np.stack(recorded, axis=1)
        times = np.arange(features.shape[1]) * float(self.settings.readout_dt)
        return TwinRun(features, times, spikes, cache, values, smooth)

    # -------------------------------------------------------------------- backward
    def backward(self, run, grad_features):
        """Gradient of a scalar loss with respect to every value of the run.

        Parameters
        ----------
        run : TwinRun
        grad_features : ndarray, shape of ``run.features``
            dLoss / dfeatures.

        Returns
        -------
        dict
            ``parameters`` (name to (N,) gradient), ``syn_w`` (per synapse),
            ``initial`` (state name to (N,) gradient, summed over the batch).
        """
        grad_features = np.asarray(grad_features, dtype=float)
        if grad_features.shape != run.features.shape:
            raise ParameterError(
                f"grad_features has shape {grad_features.shape}; expected "
                f"{run.features.shape}"
            )
        params = run.values["parameters"]
        batch, _, _ = run.features.shape
        n = self.spec.n_neurons
        pre, post = self.spec.syn_i, self.spec.syn_j
        g_params = {p: np.zeros(n) for p in self.parameter_names}
        g_w = np.zeros(self.spec.syn_w.shape)
        lam = {s: np.zeros((batch, n)) for s in self.state_names}
        sample = len(run.features[0]) - 1
        k = self.settings.steps_per_sample
        spiking = self.kind == "spiking"
        g_on_pre = [
            (var, kern({"w": run.values["syn_w"]})) for var, kern in self.on_pre
        ]
        surrogate = self.surrogate

        def add_param(name, contribution):
            g_params[name] += np.sum(np.broadcast_to(contribution, (batch, n)), axis=0)

        for step in range(len(run.cache) - 1, -1, -1):
            entry = run.cache[step]
            if spiking:
                z = entry["z"]
                lam_z = np.zeros((batch, n))
                for var, op, r, rd, old in reversed(entry["resets"]):
                    lv = lam[var]
                    if op == "=":
                        lam_z += lv * (r - old)
                        coeff = lv * z
                        lam[var] = lv * (1.0 - z)
                    else:
                        sign = 1.0 if op == "+=" else -1.0
                        lam_z += sign * lv * r
                        coeff = sign * lv * z
                    for (_, name), d in rd.items():
                        if name in lam:
                            lam[name] = lam[name] + coeff * d
                        elif name in g_params:
                            add_param(name, coeff * d)
                for var, ((gw,), gwd) in g_on_pre:
                    gw = np.broadcast_to(gw, pre.shape)
                    lv = lam[var] * entry["open"] if var in self._clamped else lam[var]
                    lp = lv[:, post]
                    np.add.at(lam_z, (slice(None), pre), lp * gw)
                    if (0, "w") in gwd:
                        dgw = np.broadcast_to(gwd[(0, "w")], pre.shape)
                        g_w += np.sum(lp * z[:, pre], axis=0) * dgw
                # the same surrogate derivative in both modes: with smooth=True it is
                # the exact derivative of the forward pass
                dz = surrogate.derivative(entry["x"]) * entry["gate"]
                lam_c = lam_z * dz / entry["scale"]
                for (_, name), d in entry["cd"].items():
                    if name in lam:
                        lam[name] = lam[name] + lam_c * d
                    elif name in g_params:
                        add_param(name, lam_c * d)
            # state update X' = F(X, P, I_rec, ...)
            jac = entry["jac"]
            new_lam = {s: np.zeros((batch, n)) for s in self.state_names}
            lam_rec = np.zeros((batch, n)) if self.coupling is not None else None
            for (i, name), d in jac.items():
                li = lam[self.state_names[i]] * d
                if name in new_lam:
                    new_lam[name] += li
                elif name == "I_rec":
                    if lam_rec is not None:
                        lam_rec += li
                else:
                    add_param(name, li)
            lam = new_lam
            if self.coupling is not None:
                lp = lam_rec[:, post]
                for (_, name), d in entry["gd"].items():
                    contrib = lp * np.broadcast_to(d, lp.shape)
                    if name == "w":
                        g_w += np.sum(contrib, axis=0)
                    elif name in lam:
                        np.add.at(lam[name], (slice(None), pre), contrib)
                    else:
                        np.add.at(g_params[name], pre, np.sum(contrib, axis=0))
            if step % k == 0:
                env = dict(entry["record"])
                env.update(params)
                _, fd = self.features_kernel(env)
                gf = grad_features[:, step // k]
                for (i, name), d in fd.items():
                    contrib = gf[:, i * n : (i + 1) * n] * d
                    if name in lam:
                        lam[name] = lam[name] + contrib
                    else:
                        add_param(name, contrib)
                sample -= 1
        initial = {s: np.sum(lam[s], axis=0) for s in self.state_names}
        for var, source in self.spec.model.initial.items():
            if isinstance(source, str) and source in g_params:
                g_params[source] = g_params[source] + initial[var]
        return {"parameters": g_params, "syn_w": g_w, "initial": initial}
