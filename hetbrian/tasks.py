"""Temporal tasks computed from the input alone, and a battery of hundreds of them.

Targets are computed from the input **sampled at the readout times** (see
:func:`hetbrian.stimuli.subsample`), so every delay counts readout samples: at a readout
interval of 2 ms a delay of 5 looks 10 ms back.

Sign of the delay. A task reads the input at ``t - delay``: memory tasks have
``delay > 0`` (the past), prediction tasks ``delay < 0`` (the future, horizon
``-delay``), instantaneous tasks ``delay = 0``.

Examples
--------
>>> import numpy as np
>>> battery = TaskBattery.grid(["x"])
>>> len(battery) >= 300
True
>>> u = np.random.default_rng(0).standard_normal((1000, 1))
>>> y, valid = battery.targets(u)
>>> y.shape == (valid.stop - valid.start, len(battery))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.polynomial import legendre as _legendre

from hetbrian.errors import DataError, ParameterError

__all__ = ["FAMILIES", "Task", "Targets", "TaskBattery", "narma"]

#: Task families and the formula of their target (``u`` standardized input column).
FAMILIES = {
    "memory": "u_c(t - delay), delay >= 1",
    "prediction": "u_c(t + h), h = -delay >= 1",
    "power": "u_c(t)^degree, degree >= 2",
    "delayed_power": "u_c(t - delay)^degree, delay >= 1, degree >= 2",
    "legendre": "P_degree(v_c(t - delay)), v_c = u_c rescaled onto [-1, 1]",
    "product": "u_a(t - delay) * u_b(t - delay_b)",
    "narma": "bounded NARMA-order recursion driven by u_c rescaled onto [0, 0.5]",
}


def _int(name, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name}={value!r}; expected an integer")
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name}={value!r}; expected an integer >= {minimum}")
    return int(value)


@dataclass(frozen=True)
class Task:
    """One target, defined by its family and labels.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    component : int
        Input column the target reads.
    delay : int
        Readout samples back in time (negative: ahead), see the module docstring.
    degree : int
        Power or Legendre degree; 1 for linear families, 2 for products.
    component_b, delay_b : int
        Second factor of a product (``-1`` and ``0`` for every other family).
    order : int
        NARMA order (0 for every other family).
    """

    family: str
    component: int
    delay: int = 0
    degree: int = 1
    component_b: int = -1
    delay_b: int = 0
    order: int = 0

    def __post_init__(self):
        f = self.family
        if f not in FAMILIES:
            raise ParameterError(f"family={f!r}; expected one of {sorted(FAMILIES)}")
        _int("component", self.component, 0)
        for name in ("delay", "degree", "component_b", "delay_b", "order"):
            _int(name, getattr(self, name))
        bad = None
        if f == "memory" and not (self.delay >= 1 and self.degree == 1):
            bad = "memory needs delay >= 1 and degree 1"
        elif f == "prediction" and not (self.delay <= -1 and self.degree == 1):
            bad = "prediction needs delay <= -1 (horizon -delay) and degree 1"
        elif f == "power" and not (self.delay == 0 and self.degree >= 2):
            bad = "power needs delay 0 and degree >= 2"
        elif f == "delayed_power" and not (self.delay >= 1 and self.degree >= 2):
            bad = "delayed_power needs delay >= 1 and degree >= 2"
        elif f == "legendre" and not (self.delay >= 0 and self.degree >= 1):
            bad = "legendre needs delay >= 0 and degree >= 1"
        elif f == "product" and not (
            self.component_b >= 0
            and self.delay >= 0
            and self.delay_b >= 0
            and self.degree == 2
            and (self.component, self.delay) != (self.component_b, self.delay_b)
        ):
            bad = (
                "product needs component_b >= 0, delays >= 0, degree 2 and two "
                "different factors (a square is a delayed_power task)"
            )
        elif f == "narma" and not (self.order >= 1 and self.delay == 0):
            bad = "narma needs order >= 1 and delay 0"
        if f != "product" and (self.component_b != -1 or self.delay_b != 0):
            bad = f"{f} takes no second factor (component_b=-1, delay_b=0)"
        if f != "narma" and self.order != 0:
            bad = f"{f} takes no order (order=0)"
        if bad:
            raise ParameterError(f"invalid task {self!r}: {bad}")

    @property
    def back(self):
        """Samples of past input the target needs before its first valid sample."""
        return max(self.delay, self.delay_b, self.order, 0)

    @property
    def ahead(self):
        """Samples of future input the target needs after its last valid sample."""
        return max(-self.delay, -self.delay_b, 0)

    def label(self, names):
        """Task name, e.g. ``memory:x:d5``, with component names from ``names``."""
        c = names[self.component]
        f = self.family
        if f == "memory":
            return f"memory:{c}:d{self.delay}"
        if f == "prediction":
            return f"prediction:{c}:h{-self.delay}"
        if f == "power":
            return f"power:{c}:p{self.degree}"
        if f == "delayed_power":
            return f"delayed_power:{c}:d{self.delay}:p{self.degree}"
        if f == "legendre":
            return f"legendre:{c}:d{self.delay}:p{self.degree}"
        if f == "product":
            b = names[self.component_b]
            return f"product:{c}:d{self.delay}*{b}:d{self.delay_b}"
        return f"narma{self.order}:{c}"


class Targets(NamedTuple):
    """Targets of a battery and the input rows they belong to.

    ``values[i]`` belongs to input (and feature) row ``valid.start + i``, so the
    features to regress are ``features[valid]``.
    """

    values: np.ndarray
    valid: slice


def narma(u, order, bounded=True):
    r"""NARMA target of a given order driven by ``u`` (already within [0, 0.5]).

    .. math::
        s(t) = 0.3\,y(t) + 0.05\,y(t) \sum_{i=0}^{n-1} y(t-i)
              + 1.5\,u(t-n+1)\,u(t) + c,\qquad
        c = \begin{cases} 0.1 & n \le 10 \\ 0.01 & n > 10 \end{cases}

    and :math:`y(t+1) = \tanh s(t)` (``bounded=True``, the form every battery uses)
    or :math:`y(t+1) = s(t)` (``bounded=False``: for order 10 the classical NARMA-10),
    with :math:`y(t) = 0` for :math:`t < n`. The plain recursion is stable only for
    small orders driven by independent draws in [0, 0.5]; a slow or correlated input
    (a chaotic flow rescaled onto [0, 0.5]) makes it diverge within a hundred samples,
    which raises :class:`~hetbrian.errors.DataError`. The tanh keeps the target bounded
    for every input; driven by independent draws in [0, 0.5] the bounded NARMA-10 is
    on average about 12 % below the plain one (and differs from it by up to 0.15 at
    its peaks), so its scores are not those of papers using the plain NARMA-10.

    Parameters
    ----------
    u : array_like
        Input series, shape ``(n_samples,)``.
    order : int
        NARMA order :math:`n`.
    bounded : bool
        Apply the tanh (default) or use the plain recursion.

    Returns
    -------
    numpy.ndarray
        :math:`y`, shape ``(n_samples,)``; only :math:`t \ge n` is meaningful.
    """
    order = _int("order", order, 1)
    u = np.asarray(u, dtype=float)
    y = np.zeros(u.shape[0])
    c = 0.1 if order <= 10 else 0.01
    window = 0.0  # sum of y(t - i), i = 0..order-1
    for t in range(order - 1, u.shape[0] - 1):
        yt = y[t]
        window += yt
        if t - order >= 0:
            window -= y[t - order]
        s = 0.3 * yt + 0.05 * yt * window + 1.5 * u[t - order + 1] * u[t] + c
        y[t + 1] = math.tanh(s) if bounded else s
        if not abs(y[t + 1]) < 1e6:
            raise DataError(
                f"NARMA-{order} (plain recursion) diverged at sample {t + 1}; use "
                "bounded=True or independent inputs in [0, 0.5]"
            )
    return y


def _rescale(column, low, high):
    lo, hi = column.min(), column.max()
    if hi <= lo:
        raise DataError("a constant input column cannot drive a rescaled task")
    return low + (high - low) * (column - lo) / (hi - lo)


class TaskBattery:
    r"""An ordered set of tasks with their labels, computed all at once.

    Families (``u`` a standardized input column at the readout times, :math:`c, a, b`
    components, :math:`\Delta` the delay in readout samples, :math:`d` the degree):

    - ``memory``: :math:`y(t) = u_c(t - \Delta)`, :math:`\Delta \ge 1`;
    - ``prediction``: :math:`y(t) = u_c(t + h)`, stored as ``delay = -h``;
    - ``power``: :math:`y(t) = u_c(t)^d`;
    - ``delayed_power``: :math:`y(t) = u_c(t - \Delta)^d`;
    - ``legendre``: :math:`y(t) = P_d(v_c(t - \Delta))` with
      :math:`v_c = 2 (u_c - \min u_c) / (\max u_c - \min u_c) - 1`, the Legendre
      polynomials of information-processing capacity (orthogonal for uniform inputs);
    - ``product``: :math:`y(t) = u_a(t - \Delta_1)\,u_b(t - \Delta_2)`;
    - ``narma``: :func:`narma` (bounded, tanh) of order :math:`n` driven by
      :math:`0.5 (u_c - \min u_c) / (\max u_c - \min u_c)`.

    All targets share one valid range: rows ``max(back)`` to ``n - max(ahead)`` of the
    input, where a task needs ``back`` past and ``ahead`` future samples.

    Parameters
    ----------
    tasks : sequence of Task
        The tasks, in column order (at least one).
    component_names : sequence of str
        Names of the input columns, used in task names and coordinates.
    """

    def __init__(self, tasks: Sequence[Task], component_names: Sequence[str]):
        tasks = tuple(tasks)
        names = tuple(str(c) for c in component_names)
        if not names or len(set(names)) != len(names):
            raise ParameterError(
                f"component_names={component_names!r}; expected distinct names"
            )
        if not tasks:
            raise ParameterError("tasks=(); a battery needs at least one task")
        for task in tasks:
            if not isinstance(task, Task):
                raise ParameterError(f"tasks contains {task!r}; expected Task")
            top = max(task.component, task.component_b)
            if top >= len(names):
                raise ParameterError(
                    f"task {task!r} reads component {top}; the input has "
                    f"{len(names)} components {names}"
                )
        self.tasks = tasks
        self.component_names = names
        self.names = tuple(t.label(names) for t in tasks)
        if len(set(self.names)) != len(self.names):
            raise ParameterError("tasks contains duplicates")

    @classmethod
    def grid(
        cls,
        components,
        *,
        memory_delays=range(1, 41),
        prediction_horizons=range(1, 21),
        power_degrees=(2, 3, 4, 5),
        delayed_power_delays=range(1, 41),
        delayed_power_degrees=(2, 3),
        legendre_delays=range(0, 30),
        legendre_degrees=(2, 3, 4, 5),
        product_delays=range(0, 10),
        narma_orders=(2, 5, 10, 20),
    ):
        """Every task of a grid of delays, degrees and components.

        With the defaults one component gives 313 tasks: 40 memory, 20 prediction,
        4 power, 80 delayed power, 120 Legendre, 45 products of two delays of the
        same component and 4 NARMA. Each further pair of components adds 100 cross
        products (every pair of delays). Pass an empty sequence to drop a family.

        Parameters
        ----------
        components : int or sequence of str
            Number of input columns, or their names.
        memory_delays, prediction_horizons : sequence of int
            Delays of memory tasks and horizons of prediction tasks, readout samples.
        power_degrees : sequence of int
            Degrees of ``power`` tasks.
        delayed_power_delays, delayed_power_degrees : sequence of int
            Grid of ``delayed_power`` tasks.
        legendre_delays, legendre_degrees : sequence of int
            Grid of ``legendre`` tasks.
        product_delays : sequence of int
            Delays of each factor of ``product`` tasks.
        narma_orders : sequence of int
            Orders of ``narma`` tasks.

        Returns
        -------
        TaskBattery
        """
        if isinstance(components, (int, np.integer)) and not isinstance(
            components, bool
        ):
            names = tuple(str(i) for i in range(_int("components", components, 1)))
        else:
            names = tuple(components)
        n = len(names)
        tasks = []
        for c in range(n):
            tasks += [Task("memory", c, delay=d) for d in memory_delays]
            tasks += [Task("prediction", c, delay=-h) for h in prediction_horizons]
            tasks += [Task("power", c, degree=p) for p in power_degrees]
            tasks += [
                Task("delayed_power", c, delay=d, degree=p)
                for p in delayed_power_degrees
                for d in delayed_power_delays
            ]
            tasks += [
                Task("legendre", c, delay=d, degree=p)
                for p in legendre_degrees
                for d in legendre_delays
            ]
            delays = sorted(set(product_delays))
            tasks += [
                Task("product", c, delay=d1, degree=2, component_b=c, delay_b=d2)
                for i, d1 in enumerate(delays)
                for d2 in delays[i + 1 :]
            ]
            tasks += [Task("narma", c, order=k) for k in narma_orders]
        for a in range(n):
            for b in range(a + 1, n):
                tasks += [
                    Task("product", a, delay=d1, degree=2, component_b=b, delay_b=d2)
                    for d1 in product_delays
                    for d2 in product_delays
                ]
        return cls(tasks, names)

    def __len__(self):
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, index):
        return self.tasks[index]

    def __repr__(self):
        counts = {}
        for t in self.tasks:
            counts[t.family] = counts.get(t.family, 0) + 1
        return (
            f"TaskBattery({len(self)} tasks: {counts}, "
            f"components={self.component_names})"
        )

    @property
    def n_components(self):
        """Number of input columns the battery reads."""
        return len(self.component_names)

    @property
    def back(self):
        """Past samples the battery needs (largest delay or NARMA order)."""
        return max(t.back for t in self.tasks)

    @property
    def ahead(self):
        """Future samples the battery needs (largest prediction horizon)."""
        return max(t.ahead for t in self.tasks)

    def select(self, **labels):
        """The sub-battery whose tasks match every given label.

        Examples
        --------
        >>> TaskBattery.grid(["x"]).select(family="memory", delay=3).names
        ('memory:x:d3',)
        """
        keep = []
        for t in self.tasks:
            ok = True
            for key, value in labels.items():
                if not hasattr(t, key):
                    raise ParameterError(f"{key}=...; tasks have no label {key!r}")
                have = getattr(t, key)
                if key in ("component", "component_b") and isinstance(value, str):
                    have = self.component_names[have] if have >= 0 else ""
                if have != value:
                    ok = False
                    break
            if ok:
                keep.append(t)
        return TaskBattery(keep, self.component_names)

    def coords(self):
        """Task labels as xarray coordinates on a ``task`` dimension.

        Returns
        -------
        dict
            ``{"task": names, "family": ("task", ...), "component": ("task", ...),
            "delay": ..., "degree": ..., "component_b": ..., "delay_b": ...,
            "order": ...}``; components are given by name (``""`` where unused).
        """
        cn = self.component_names

        def column(key, dtype):
            return ("task", np.array([getattr(t, key) for t in self.tasks], dtype))

        return {
            "task": np.array(self.names, dtype=object),
            "family": ("task", np.array([t.family for t in self.tasks], dtype=object)),
            "component": (
                "task",
                np.array([cn[t.component] for t in self.tasks], dtype=object),
            ),
            "delay": column("delay", np.int64),
            "degree": column("degree", np.int64),
            "component_b": (
                "task",
                np.array(
                    [cn[t.component_b] if t.component_b >= 0 else "" for t in self],
                    dtype=object,
                ),
            ),
            "delay_b": column("delay_b", np.int64),
            "order": column("order", np.int64),
        }

    def valid_range(self, n_samples):
        """Rows of an input of ``n_samples`` rows where every target is defined."""
        start, stop = self.back, n_samples - self.ahead
        if stop - start < 1:
            raise DataError(
                f"an input of {n_samples} samples is too short for this battery: it "
                f"needs {self.back} past and {self.ahead} future samples plus at "
                "least one to fit"
            )
        return slice(start, stop)

    def targets(self, inputs):
        """Compute every target from the input at the readout times.

        Parameters
        ----------
        inputs : array_like
            Shape ``(n_samples, n_components)`` (a 1-D array is one component), the
            stimulus at the readout times (:func:`hetbrian.stimuli.subsample`).

        Returns
        -------
        Targets
            ``values`` of shape ``(valid.stop - valid.start, n_tasks)`` and the slice
            ``valid`` of input rows they belong to.
        """
        u = np.asarray(inputs, dtype=float)
        if u.ndim == 1:
            u = u[:, None]
        if u.ndim != 2 or u.shape[1] != self.n_components:
            raise DataError(
                f"inputs has shape {np.shape(inputs)}; expected (n_samples, "
                f"{self.n_components}) for components {self.component_names}"
            )
        if not np.all(np.isfinite(u)):
            raise DataError("inputs contains NaN or inf")
        valid = self.valid_range(u.shape[0])
        start, stop = valid.start, valid.stop

        def shifted(column, delay):
            return column[start - delay : stop - delay]

        cache = {}

        def transformed(kind, c, arg):
            key = (kind, c, arg)
            if key not in cache:
                if kind == "legendre":
                    cache[key] = _rescale(u[:, c], -1.0, 1.0)
                else:
                    cache[key] = narma(_rescale(u[:, c], 0.0, 0.5), arg)
            return cache[key]

        out = np.empty((stop - start, len(self.tasks)))
        for j, t in enumerate(self.tasks):
            x = shifted(u[:, t.component], t.delay)
            f = t.family
            if f in ("memory", "prediction"):
                out[:, j] = x
            elif f in ("power", "delayed_power"):
                out[:, j] = x**t.degree
            elif f == "legendre":
                v = shifted(transformed("legendre", t.component, None), t.delay)
                coef = np.zeros(t.degree + 1)
                coef[-1] = 1.0
                out[:, j] = _legendre.legval(v, coef)
            elif f == "product":
                out[:, j] = x * shifted(u[:, t.component_b], t.delay_b)
            else:
                out[:, j] = shifted(transformed("narma", t.component, t.order), 0)
        return Targets(out, valid)
