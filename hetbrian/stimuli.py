"""Input signals for reservoir tasks: seeded, standardized, counted in simulation steps.

Every generator returns an array of shape ``(n_steps, n_components)``, one row per
simulation step, each column standardized over the run to zero mean and unit variance
(population variance, ``ddof=0``). Nothing here creates a Brian2 object: the network
layer turns :meth:`Stimulus.dense` into a ``TimedArray``.

Time scale. All time scales are counted in **simulation steps**, so the same generator
gives the same sequence of values whatever ``dt`` is; ``dt`` only says how long a step
lasts. Each family states its time scale in its own natural terms:

- :class:`Sinusoids`, :class:`MultiSine`: ``periods`` in steps.
- :class:`BandLimitedNoise`: ``shortest_period`` (and ``longest_period``) in steps.
- :class:`OrnsteinUhlenbeck`: correlation time ``tau`` in steps.
- :class:`MackeyGlass`, :class:`Lorenz`, :class:`Rossler` (flows):
  ``steps_per_unit``, the number of steps per unit of the flow's own time.
- :class:`Henon`, :class:`Logistic`, :class:`NarmaInput` (maps and draws):
  ``steps_per_iterate``, a whole number of steps each iterate is held for.

For example ``Lorenz(steps_per_unit=100)`` at ``dt = 0.1 ms`` advances the Lorenz
system by 0.01 of its time units per step, so one unit lasts 10 ms.

Randomness. :meth:`Generator.sample` and :meth:`Stimulus.sample` take an explicit
``rng`` (a :class:`numpy.random.Generator` or an integer seed); no global state is read.
A :class:`Stimulus` stack spawns one independent child generator per member
(``rng.spawn``): member ``i`` always draws from child ``i``, so appending a member
leaves the draws of the others unchanged.

Examples
--------
>>> import numpy as np
>>> stim = Stimulus([Lorenz(steps_per_unit=50), OrnsteinUhlenbeck(tau=20.0)])
>>> u = stim.sample(2000, rng=1)
>>> u.shape, stim.component_names
((2000, 4), ('lorenz.x', 'lorenz.y', 'lorenz.z', 'ou.0'))
>>> bool(np.allclose(u.mean(axis=0), 0.0) and np.allclose(u.std(axis=0), 1.0))
True
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import scipy.integrate
import scipy.interpolate
import scipy.signal

from hetbrian.errors import DataError, ParameterError, UnitError

__all__ = [
    "Generator",
    "Sinusoids",
    "MultiSine",
    "BandLimitedNoise",
    "OrnsteinUhlenbeck",
    "MackeyGlass",
    "Lorenz",
    "Rossler",
    "Henon",
    "Logistic",
    "NarmaInput",
    "Stimulus",
    "readout_stride",
    "subsample",
    "standardize",
]


# ----------------------------------------------------------------------------- helpers
def as_rng(rng, name="rng"):
    """Return a :class:`numpy.random.Generator` from a generator or an integer seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise ParameterError(
        f"{name}={rng!r}; expected a numpy.random.Generator or a non-negative integer "
        "seed (no global random state is read)"
    )


def as_seconds(name, value):
    """Return ``value`` as float seconds: a plain number or a Brian2 time quantity.

    Brian2 is not imported: a quantity is recognised by its ``dim`` attribute, and
    ``numpy.asarray`` of a quantity gives its value in SI units.
    """
    dim = getattr(value, "dim", None)
    if dim is not None:
        if str(dim) != "s":
            raise UnitError(f"{name}={value!r} is not a time; expected e.g. 1*ms")
        value = np.asarray(value)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{name}={value!r}; expected a time in seconds or a Brian2 time quantity"
        ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ParameterError(f"{name}={value!r}; expected a positive finite time")
    return seconds


def _positive(name, value, *, minimum=0.0, strict=True):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}={value!r}; expected a number") from None
    ok = math.isfinite(x) and (x > minimum if strict else x >= minimum)
    if not ok:
        relation = ">" if strict else ">="
        raise ParameterError(
            f"{name}={value!r}; expected a finite number {relation} {minimum}"
        )
    return x


def _count(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name}={value!r}; expected an integer >= {minimum}")
    if value < minimum:
        raise ParameterError(f"{name}={value!r}; expected an integer >= {minimum}")
    return int(value)


def standardize(values, name="stimulus"):
    """Return ``values`` with each column shifted and scaled to mean 0, variance 1.

    Raises :class:`~hetbrian.errors.DataError` for a non-finite or constant column.
    """
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        raise DataError(f"{name} produced non-finite values")
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    scale = np.maximum(np.abs(mean), 1.0)
    constant = std <= 1e-12 * scale
    if np.any(constant):
        raise DataError(
            f"{name} produced a constant component "
            f"(column {int(np.argmax(constant))}); "
            "check its parameters (a map can collapse onto a fixed point)"
        )
    return np.ascontiguousarray((values - mean) / std)


def _hold(iterates, steps_per_iterate, n_steps):
    """Sample-and-hold: repeat each row ``steps_per_iterate`` times, cut to n_steps."""
    return np.repeat(iterates, steps_per_iterate, axis=0)[:n_steps]


def readout_stride(readout_interval, dt):
    """Number of simulation steps per readout sample.

    Parameters
    ----------
    readout_interval : float or Quantity
        Time between two readout samples (seconds, or a Brian2 time).
    dt : float or Quantity
        Simulation step (seconds, or a Brian2 time).

    Returns
    -------
    int
        ``readout_interval / dt``, which must be a whole number.
    """
    interval = as_seconds("readout_interval", readout_interval)
    step = as_seconds("dt", dt)
    ratio = interval / step
    stride = round(ratio)
    if stride < 1 or abs(ratio - stride) > 1e-6 * max(1.0, ratio):
        raise ParameterError(
            f"readout_interval={readout_interval!r} is not a whole multiple of "
            f"dt={dt!r} (ratio {ratio:.6g}); choose an interval of k*dt"
        )
    return stride


def subsample(values, stride, offset=0):
    """Rows of ``values`` at the readout times: ``values[offset::stride]``.

    Readout sample ``k`` is taken at simulation step ``offset + k * stride``, the
    convention of a Brian2 monitor recording every ``stride`` steps from step
    ``offset``. Targets for the readout are computed from these rows, so task delays
    count readout samples.
    """
    values = np.asarray(values)
    stride = _count("stride", stride)
    offset = _count("offset", offset, minimum=0)
    return np.ascontiguousarray(values[offset::stride])


# -------------------------------------------------------------------------- base class
class Generator:
    """Base class of a stimulus family.

    A subclass sets :attr:`name` (class attribute), :attr:`component_names` (tuple of
    str) and defines ``_raw(n_steps, rng)`` returning a finite array of shape
    ``(n_steps, len(component_names))``; :meth:`sample` checks and standardizes it.
    """

    name: ClassVar[str] = "generator"
    component_names: tuple[str, ...] = ()

    @property
    def n_components(self):
        """Number of columns this generator contributes."""
        return len(self.component_names)

    def sample(self, n_steps, rng):
        """Draw ``n_steps`` steps, each component standardized over the run.

        Parameters
        ----------
        n_steps : int
            Number of simulation steps (rows), at least 2.
        rng : numpy.random.Generator or int
            Source of randomness (or its seed).

        Returns
        -------
        numpy.ndarray
            Shape ``(n_steps, n_components)``, float64, C-contiguous.
        """
        n_steps = _count("n_steps", n_steps, minimum=2)
        raw = self._raw(n_steps, as_rng(rng))
        return standardize(raw, name=type(self).__name__)

    def _raw(self, n_steps, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


# ------------------------------------------------------------------- periodic and noise
class Sinusoids(Generator):
    r"""Pure sinusoids, one component per period.

    .. math:: u_k(n) = \sin(2\pi n / P_k + \varphi_k),\quad
              \varphi_k \sim \mathcal{U}[0, 2\pi)\ \text{(or 0)}

    Parameters
    ----------
    periods : sequence of float
        Periods :math:`P_k` in simulation steps, each at least 2 (Nyquist).
    random_phase : bool
        Draw each phase from ``rng`` (default) or start every sine at phase 0.
    """

    name = "sinusoids"

    def __init__(self, periods, random_phase=True):
        periods = np.atleast_1d(np.asarray(periods, dtype=float))
        if periods.ndim != 1 or periods.size == 0:
            raise ParameterError(f"periods={periods!r}; expected a non-empty sequence")
        for p in periods:
            _positive("periods", p, minimum=2.0, strict=False)
        self.periods = tuple(float(p) for p in periods)
        self.random_phase = bool(random_phase)
        self.component_names = tuple(str(i) for i in range(len(self.periods)))

    def _phases(self, rng):
        k = len(self.periods)
        return rng.uniform(0, 2 * np.pi, k) if self.random_phase else np.zeros(k)

    def _raw(self, n_steps, rng):
        n = np.arange(n_steps)[:, None]
        return np.sin(2 * np.pi * n / np.asarray(self.periods) + self._phases(rng))


class MultiSine(Sinusoids):
    r"""A sum of sinusoids in one component (quasi-periodic for incommensurate periods).

    .. math:: u(n) = \sum_k \sin(2\pi n / P_k + \varphi_k)

    Parameters are those of :class:`Sinusoids`.
    """

    name = "multisine"

    def __init__(self, periods, random_phase=True):
        super().__init__(periods, random_phase)
        self.component_names = ("0",)

    def _raw(self, n_steps, rng):
        return super()._raw(n_steps, rng).sum(axis=1, keepdims=True)


class BandLimitedNoise(Generator):
    r"""Gaussian noise with a flat spectrum between two frequencies.

    Fourier coefficients :math:`c_f = a_f + i b_f`, :math:`a_f, b_f \sim
    \mathcal{N}(0,1)` for :math:`1/P_\mathrm{long} \le f \le 1/P_\mathrm{short}`
    (cycles per step), zero elsewhere, then an inverse real FFT of length ``n_steps``.
    The signal is therefore periodic over the run (its end joins its start), which a
    delay task at the edge of the run may notice; drop a washout at both ends if so.

    Parameters
    ----------
    shortest_period : float
        Shortest period present, in steps (at least 2): the low-pass cut-off.
    longest_period : float, optional
        Longest period present, in steps (default: the whole run; no high-pass).
    n_components : int
        Number of independent components.
    """

    name = "noise"

    def __init__(self, shortest_period, longest_period=None, n_components=1):
        self.shortest_period = _positive(
            "shortest_period", shortest_period, minimum=2.0, strict=False
        )
        if longest_period is not None:
            longest_period = _positive("longest_period", longest_period)
            if longest_period <= self.shortest_period:
                raise ParameterError(
                    f"longest_period={longest_period!r} must exceed "
                    f"shortest_period={shortest_period!r}"
                )
        self.longest_period = longest_period
        self.component_names = tuple(
            str(i) for i in range(_count("n_components", n_components))
        )

    def _raw(self, n_steps, rng):
        f = np.fft.rfftfreq(n_steps)
        low = 0.0 if self.longest_period is None else 1.0 / self.longest_period
        band = (f > 0) & (f >= low) & (f <= 1.0 / self.shortest_period)
        if band.sum() < 1:
            raise DataError(
                f"n_steps={n_steps} too short for BandLimitedNoise with periods "
                f"{self.shortest_period}..{self.longest_period}: no frequency in band"
            )
        shape = (f.size, self.n_components)
        coeff = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        coeff[~band] = 0.0
        return np.fft.irfft(coeff, n=n_steps, axis=0)


class OrnsteinUhlenbeck(Generator):
    r"""Ornstein-Uhlenbeck process, sampled exactly at every step.

    .. math:: x_{n+1} = a\,x_n + \sqrt{1 - a^2}\,\xi_n,\quad a = e^{-1/\tau},\quad
              \xi_n \sim \mathcal{N}(0, 1),\quad x_0 \sim \mathcal{N}(0, 1)

    so the process is stationary from the first step, with autocorrelation
    :math:`e^{-|m|/\tau}` at lag :math:`m` steps.

    Parameters
    ----------
    tau : float
        Correlation time in simulation steps (> 0).
    n_components : int
        Number of independent components.
    """

    name = "ou"

    def __init__(self, tau, n_components=1):
        self.tau = _positive("tau", tau)
        self.component_names = tuple(
            str(i) for i in range(_count("n_components", n_components))
        )

    def _raw(self, n_steps, rng):
        a = math.exp(-1.0 / self.tau)
        x0 = rng.standard_normal(self.n_components)
        xi = rng.standard_normal((n_steps, self.n_components))
        out, _ = scipy.signal.lfilter(
            [math.sqrt(1 - a * a)], [1.0, -a], xi, axis=0, zi=(a * x0)[None, :]
        )
        return out


# ------------------------------------------------------------------------------- flows
class _Flow(Generator):
    """An autonomous ODE integrated with LSODA (``scipy.integrate.odeint``)."""

    all_components: ClassVar[tuple[str, ...]] = ()
    rtol: ClassVar[float] = 1e-10
    atol: ClassVar[float] = 1e-10

    def _setup(self, steps_per_unit, transient, components):
        self.steps_per_unit = _positive("steps_per_unit", steps_per_unit)
        self.transient = _positive("transient", transient, strict=False)
        components = tuple(components)
        unknown = [c for c in components if c not in self.all_components]
        if unknown or not components or len(set(components)) != len(components):
            raise ParameterError(
                f"components={components!r}; expected distinct names among "
                f"{self.all_components}"
            )
        self.component_names = components

    def _initial(self, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def _rhs(self, t, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _raw(self, n_steps, rng):
        x0 = self._initial(rng)
        if self.transient > 0:
            x0 = self._integrate(x0, np.array([0.0, self.transient]))[-1]
        out = self._integrate(x0, np.arange(n_steps) / self.steps_per_unit)
        index = [self.all_components.index(c) for c in self.component_names]
        return out[:, index]

    def _integrate(self, x0, times):
        out, info = scipy.integrate.odeint(
            self._rhs, x0, times, rtol=self.rtol, atol=self.atol, tfirst=True,
            full_output=True, mxstep=100_000,
        )  # fmt: skip
        if info["message"] != "Integration successful.":
            raise DataError(
                f"{type(self).__name__} integration failed: {info['message']}"
            )
        return out


class Lorenz(_Flow):
    r"""Lorenz (1963) system.

    .. math:: \dot x = \sigma (y - x),\quad \dot y = x(\rho - z) - y,\quad
              \dot z = x y - \beta z

    Integrated with LSODA (``scipy.integrate.odeint``, relative and absolute tolerance
    1e-10) from a random point near the attractor; the first ``transient`` time units
    are discarded. The largest Lyapunov exponent at the
    default parameters is about 0.9 per time unit.

    Parameters
    ----------
    steps_per_unit : float
        Simulation steps per unit of Lorenz time (e.g. 100: the flow advances 0.01
        per step).
    sigma, rho, beta : float
        System parameters (defaults 10, 28, 8/3: the chaotic regime).
    transient : float
        Time units integrated and discarded before the first sample.
    components : sequence of str
        Which of ``"x", "y", "z"`` to return.
    """

    name = "lorenz"
    all_components = ("x", "y", "z")

    def __init__(
        self, steps_per_unit, sigma=10.0, rho=28.0, beta=8.0 / 3.0, transient=50.0,
        components=("x", "y", "z"),
    ):  # fmt: skip
        self.sigma, self.rho, self.beta = float(sigma), float(rho), float(beta)
        self._setup(steps_per_unit, transient, components)

    def _initial(self, rng):
        return np.array([1.0, 1.0, 25.0]) + rng.uniform(-1.0, 1.0, 3)

    def _rhs(self, t, v):
        x, y, z = v
        return [self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z]


class Rossler(_Flow):
    r"""Rössler (1976) system.

    .. math:: \dot x = -y - z,\quad \dot y = x + a y,\quad \dot z = b + z (x - c)

    Integrated as :class:`Lorenz`. One turn around the attractor takes about 6 time
    units at the default parameters.

    Parameters
    ----------
    steps_per_unit : float
        Simulation steps per unit of Rössler time.
    a, b, c : float
        System parameters (defaults 0.2, 0.2, 5.7: the chaotic regime).
    transient : float
        Time units integrated and discarded before the first sample.
    components : sequence of str
        Which of ``"x", "y", "z"`` to return.
    """

    name = "rossler"
    all_components = ("x", "y", "z")

    def __init__(
        self, steps_per_unit, a=0.2, b=0.2, c=5.7, transient=200.0,
        components=("x", "y", "z"),
    ):  # fmt: skip
        self.a, self.b, self.c = float(a), float(b), float(c)
        self._setup(steps_per_unit, transient, components)

    def _initial(self, rng):
        return np.array([1.0, 1.0, 0.0]) + rng.uniform(-0.5, 0.5, 3)

    def _rhs(self, t, v):
        x, y, z = v
        return [-y - z, x + self.a * y, self.b + z * (x - self.c)]


class MackeyGlass(Generator):
    r"""Mackey-Glass delay differential equation.

    .. math:: \dot x(t) = \beta\,\frac{x(t-\tau)}{1 + x(t-\tau)^{n}} - \gamma\,x(t)

    Scheme: classical fourth-order Runge-Kutta with step :math:`h = \tau / m`,
    :math:`m = \lceil \tau / h_\max \rceil`, so the delayed value falls on the grid;
    the delayed value at the half step is the mean of its two grid neighbours, which
    makes the scheme second order: over 100 time units the largest difference from a
    solution with :math:`h = 1/80` is about 1.3e-4 at the default :math:`h = 0.25`
    and four times that at :math:`h = 0.5` (``tests/test_stimuli.py``). The
    history on :math:`[-\tau, 0]` is constant, :math:`1.2 + \mathcal{U}[-0.1, 0.1]`
    drawn from ``rng``; the first ``transient`` time units are discarded, then the
    solution is interpolated (cubic spline) onto the simulation steps.

    Parameters
    ----------
    steps_per_unit : float
        Simulation steps per unit of Mackey-Glass time (at ``tau = 17`` one
        pseudo-period lasts about 50 units).
    tau : float
        Delay in time units (default 17: mildly chaotic).
    beta, gamma, exponent : float
        Production rate, decay rate and Hill exponent (defaults 0.2, 0.1, 10).
    transient : float
        Time units integrated and discarded.
    max_step : float
        Largest integration step :math:`h_\max` in time units.
    """

    name = "mackey_glass"

    def __init__(
        self, steps_per_unit, tau=17.0, beta=0.2, gamma=0.1, exponent=10.0,
        transient=500.0, max_step=0.25,
    ):  # fmt: skip
        self.steps_per_unit = _positive("steps_per_unit", steps_per_unit)
        self.tau = _positive("tau", tau)
        self.beta = _positive("beta", beta)
        self.gamma = _positive("gamma", gamma)
        self.exponent = _positive("exponent", exponent)
        self.transient = _positive("transient", transient, strict=False)
        self.max_step = _positive("max_step", max_step)
        self.component_names = ("x",)

    def _raw(self, n_steps, rng):
        m = math.ceil(self.tau / self.max_step)
        h = self.tau / m
        duration = self.transient + (n_steps - 1) / self.steps_per_unit
        n_grid = math.ceil(duration / h) + 2
        x = np.empty(m + n_grid)
        x[: m + 1] = 1.2 + rng.uniform(-0.1, 0.1)
        beta, gamma, p = self.beta, self.gamma, self.exponent

        def f(xt, xd):
            return beta * xd / (1.0 + xd**p) - gamma * xt

        # x[m + i] is x(i h); x[i] is x(i h - tau)
        for i in range(m, m + n_grid - 1):
            xt, d0, d1 = x[i], x[i - m], x[i - m + 1]
            dh = 0.5 * (d0 + d1)
            k1 = f(xt, d0)
            k2 = f(xt + 0.5 * h * k1, dh)
            k3 = f(xt + 0.5 * h * k2, dh)
            k4 = f(xt + h * k3, d1)
            x[i + 1] = xt + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        t_grid = np.arange(n_grid) * h
        spline = scipy.interpolate.CubicSpline(t_grid, x[m:])
        t_out = self.transient + np.arange(n_steps) / self.steps_per_unit
        return spline(t_out)[:, None]


# -------------------------------------------------------------------------------- maps
class _Map(Generator):
    """An iterated map; each iterate is held for ``steps_per_iterate`` steps."""

    def _setup(self, steps_per_iterate, transient):
        self.steps_per_iterate = _count("steps_per_iterate", steps_per_iterate)
        self.transient = _count("transient", transient, minimum=0)

    def _raw(self, n_steps, rng):
        n_iter = -(-n_steps // self.steps_per_iterate)
        iterates = self._iterate(n_iter, rng)
        return _hold(iterates, self.steps_per_iterate, n_steps)


class Henon(_Map):
    r"""Hénon map.

    .. math:: x_{k+1} = 1 - a x_k^2 + y_k,\quad y_{k+1} = b x_k

    Started from :math:`x_0, y_0 \sim \mathcal{U}[-0.1, 0.1]`; the first ``transient``
    iterates are discarded.

    Parameters
    ----------
    steps_per_iterate : int
        Simulation steps each iterate is held for (sample-and-hold).
    a, b : float
        Map parameters (defaults 1.4, 0.3: the classical strange attractor).
    transient : int
        Iterates discarded.
    """

    name = "henon"

    def __init__(self, steps_per_iterate=1, a=1.4, b=0.3, transient=1000):
        self.a, self.b = float(a), float(b)
        self._setup(steps_per_iterate, transient)
        self.component_names = ("x", "y")

    def _iterate(self, n_iter, rng):
        x, y = rng.uniform(-0.1, 0.1, 2)
        a, b = self.a, self.b
        out = np.empty((n_iter, 2))
        for k in range(self.transient + n_iter):
            x, y = 1.0 - a * x * x + y, b * x
            if abs(x) > 1e6:
                raise DataError(f"Henon map diverged with a={a}, b={b}")
            if k >= self.transient:
                out[k - self.transient] = x, y
        return out


class Logistic(_Map):
    r"""Logistic map.

    .. math:: x_{k+1} = r\,x_k (1 - x_k)

    Started from :math:`x_0 \sim \mathcal{U}[0.1, 0.9]`; the first ``transient``
    iterates are discarded. At ``r = 4`` floating point can land on the fixed point 0;
    the default ``r = 3.9`` is chaotic and does not.

    Parameters
    ----------
    steps_per_iterate : int
        Simulation steps each iterate is held for.
    r : float
        Growth parameter in (0, 4].
    transient : int
        Iterates discarded.
    """

    name = "logistic"

    def __init__(self, steps_per_iterate=1, r=3.9, transient=1000):
        self.r = _positive("r", r)
        if self.r > 4.0:
            raise ParameterError(f"r={r!r}; expected 0 < r <= 4 (else x leaves [0, 1])")
        self._setup(steps_per_iterate, transient)
        self.component_names = ("x",)

    def _iterate(self, n_iter, rng):
        x = rng.uniform(0.1, 0.9)
        r = self.r
        out = np.empty((n_iter, 1))
        for k in range(self.transient + n_iter):
            x = r * x * (1.0 - x)
            if k >= self.transient:
                out[k - self.transient, 0] = x
        return out


class NarmaInput(_Map):
    r"""Independent uniform draws, the classical input of NARMA tasks.

    .. math:: u_k \sim \mathcal{U}[\mathrm{low}, \mathrm{high}]\ \text{i.i.d.}

    Like every generator it is standardized; the NARMA task
    (:class:`hetbrian.tasks.Task`, family ``"narma"``) maps its component back onto
    [0, 0.5] before the recursion, so the standardization loses nothing.

    Parameters
    ----------
    steps_per_iterate : int
        Simulation steps each draw is held for.
    low, high : float
        Range of the draws (defaults 0 and 0.5).
    n_components : int
        Number of independent components.
    """

    name = "narma_input"

    def __init__(self, steps_per_iterate=1, low=0.0, high=0.5, n_components=1):
        self.low, self.high = float(low), float(high)
        if not self.high > self.low:
            raise ParameterError(f"high={high!r} must exceed low={low!r}")
        self._setup(steps_per_iterate, 0)
        self.component_names = tuple(
            str(i) for i in range(_count("n_components", n_components))
        )

    def _iterate(self, n_iter, rng):
        return rng.uniform(self.low, self.high, (n_iter, self.n_components))


# ------------------------------------------------------------------------------- stack
class Stimulus:
    """A stack of generators whose components are concatenated column-wise.

    Parameters
    ----------
    generators : sequence of Generator
        Members, in column order. Each draws from its own child of ``rng``
        (``rng.spawn``), so the members are independent.

    Attributes
    ----------
    component_names : tuple of str
        ``"<generator>.<component>"`` per column; a repeated generator name gets a
        ``#2``, ``#3``, ... suffix.
    """

    def __init__(self, generators):
        if isinstance(generators, Generator):
            generators = [generators]
        generators = list(generators)
        if not generators:
            raise ParameterError("generators=[]; expected at least one Generator")
        for g in generators:
            if not isinstance(g, Generator):
                raise ParameterError(
                    f"generators contains {g!r}; expected hetbrian.stimuli.Generator"
                )
        self.generators = tuple(generators)
        names, seen = [], {}
        for g in self.generators:
            seen[g.name] = seen.get(g.name, 0) + 1
            prefix = g.name if seen[g.name] == 1 else f"{g.name}#{seen[g.name]}"
            names.extend(f"{prefix}.{c}" for c in g.component_names)
        self.component_names = tuple(names)

    @property
    def n_components(self):
        """Total number of columns."""
        return len(self.component_names)

    def sample(self, n_steps, rng):
        """Draw every member for ``n_steps`` steps and concatenate the columns.

        Parameters
        ----------
        n_steps : int
            Number of simulation steps.
        rng : numpy.random.Generator or int
            Source of randomness (or its seed).

        Returns
        -------
        numpy.ndarray
            Shape ``(n_steps, n_components)``, float64, C-contiguous, each column
            standardized.
        """
        n_steps = _count("n_steps", n_steps, minimum=2)
        children = as_rng(rng).spawn(len(self.generators))
        parts = [
            g.sample(n_steps, r) for g, r in zip(self.generators, children, strict=True)
        ]
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    def dense(self, duration, dt, rng):
        """The stimulus at every simulation step of a run, ready for a ``TimedArray``.

        Parameters
        ----------
        duration : float or Quantity
            Length of the run (seconds, or a Brian2 time); a whole number of steps.
        dt : float or Quantity
            Simulation step (seconds, or a Brian2 time).
        rng : numpy.random.Generator or int
            Source of randomness (or its seed).

        Returns
        -------
        numpy.ndarray
            Shape ``(round(duration / dt), n_components)``, C-contiguous; row ``n``
            holds the value at time ``n * dt``. The network layer wraps it as
            ``TimedArray(values, dt=dt)``.
        """
        total = as_seconds("duration", duration)
        step = as_seconds("dt", dt)
        ratio = total / step
        n_steps = round(ratio)
        if abs(ratio - n_steps) > 1e-6 * max(1.0, ratio):
            raise ParameterError(
                f"duration={duration!r} is not a whole number of steps dt={dt!r}"
            )
        return self.sample(n_steps, rng)

    def __repr__(self):
        return f"Stimulus({list(self.generators)!r})"
