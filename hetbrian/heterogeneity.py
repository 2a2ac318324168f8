"""Heterogeneity profiles: distributions of a per-neuron parameter at a fixed mean.

Every profile is set by a **mean with its unit** and one **degree of heterogeneity**,
the coefficient of variation ``cv = std / mean``, so that one ``cv`` means the same
spread in every family. ``cv = 0`` is the homogeneous network in every family.

Families and how ``(mean, cv)`` set their parameters (``m`` the mean, ``c`` the cv):

================  ======================================================  ===========
family            parameters                                              skewness
================  ======================================================  ===========
homogeneous       every value equals ``m``                                0
lognormal         ``s² = ln(1 + c²)``, ``mu = ln m - s²/2``               ``c³ + 3c``
gamma             shape ``k = 1/c²``, scale ``theta = m c²``              ``2c``
uniform           on ``[m - a, m + a]``, ``a = sqrt(3) c m``              0
truncated normal  normal cut at ``m ± 2 s``, ``s = c m / 0.8796``         0
empirical         measured values ``y``, mapped ``x = A y^b`` (below)     as the data
================  ======================================================  ===========

Lower bound. A parameter such as a membrane time constant must stay above zero and at
least one integration step. Every profile takes a ``lower`` bound (default: zero) and
applies one policy, **resampling**: draws at or below the bound are rejected and drawn
again. Nothing is clipped onto the bound, so no spike of probability mass appears there.
Rejection truncates the distribution; the mean and cv of the *truncated* distribution
are computed at construction and must stay within ``tolerance`` (relative, default 5 %)
of the requested ones, or a :class:`~hetbrian.errors.ParameterError` says that the
family cannot reach that cv with that bound. The symmetric families (uniform, truncated
normal) must lie wholly above the bound, or their symmetry would be lost.

Examples
--------
>>> import numpy as np
>>> from brian2 import ms
>>> tau = LogNormal(mean=20 * ms, cv=0.5, lower=0.1 * ms)
>>> values = tau.sample(20_000, np.random.default_rng(1))
>>> stats = describe(values)
>>> bool(abs(stats["mean"] / (20 * ms) - 1) < 0.02), bool(abs(stats["cv"] - 0.5) < 0.03)
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.optimize
import scipy.stats
from brian2 import Quantity, get_unit
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions

from hetbrian.errors import ParameterError, UnitError

__all__ = [
    "Profile",
    "Homogeneous",
    "LogNormal",
    "Gamma",
    "Uniform",
    "TruncatedNormal",
    "Empirical",
    "FAMILIES",
    "make_profile",
    "describe",
]

#: Ratio of the standard deviation of a normal distribution cut at ±2 sigma to sigma.
_TRUNCNORM_CUT = 2.0
_TRUNCNORM_STD_FACTOR = float(scipy.stats.truncnorm(-2.0, 2.0).std())


def _as_quantity(name, value, dimensions=None):
    """Check that ``value`` is a Quantity with physical dimensions; return SI float."""
    if not isinstance(value, Quantity) or get_dimensions(value) is DIMENSIONLESS:
        raise UnitError(
            f"{name}={value!r} has no physical unit; expected a Brian2 quantity "
            "such as 20*ms"
        )
    if np.ndim(value) != 0:
        raise ParameterError(f"{name}={value!r} must be a scalar quantity")
    if dimensions is not None and get_dimensions(value) != dimensions:
        raise UnitError(
            f"{name}={value!r} has dimensions {get_dimensions(value)}; expected "
            f"{dimensions} (the dimensions of the mean)"
        )
    return float(np.asarray(value))


def describe(values):
    """Summary statistics of a sample: mean, std, cv, skewness, min, max.

    Parameters
    ----------
    values : Quantity or array
        The sampled parameter values.

    Returns
    -------
    dict
        ``mean``, ``std``, ``min`` and ``max`` carry the unit of ``values``;
        ``cv`` and ``skewness`` (Fisher, biased estimator) are plain floats.
    """
    unit = get_unit(get_dimensions(values)) if isinstance(values, Quantity) else 1.0
    x = np.asarray(values, dtype=float).ravel()
    mean = float(x.mean())
    std = float(x.std())
    skew = float(scipy.stats.skew(x)) if std > 0 else 0.0
    return {
        "n": x.size,
        "mean": mean * unit,
        "std": std * unit,
        "cv": std / mean if mean != 0 else float("nan"),
        "skewness": skew,
        "min": float(x.min()) * unit,
        "max": float(x.max()) * unit,
    }


@dataclass(frozen=True)
class Profile:
    """Base class of heterogeneity profiles.

    A subclass defines ``family`` and ``_scipy_dist()`` (a frozen ``scipy.stats``
    distribution in SI units, before the lower bound) or overrides ``_quantile``.

    Parameters
    ----------
    mean : Quantity
        Mean of the parameter, with its unit (for example ``20*ms``).
    cv : float
        Degree of heterogeneity: coefficient of variation std / mean, >= 0.
    lower : Quantity, optional
        Values at or below this bound are redrawn (default: zero).
    tolerance : float, optional
        Largest relative deviation of the bounded distribution's mean and cv from the
        requested ones (default 0.05).
    """

    mean: Quantity
    cv: float = 0.0
    lower: Quantity | None = None
    tolerance: float = 0.05
    family: ClassVar[str] = ""
    _max_draw_rounds: ClassVar[int] = 100

    def __post_init__(self):
        self._validate()
        self._check_bound()

    # -- validation ---------------------------------------------------------------
    def _validate(self):
        mean = _as_quantity("mean", self.mean)
        if not mean > 0:
            raise ParameterError(f"mean={self.mean!r} must be positive")
        if not isinstance(self.cv, int | float) or not math.isfinite(self.cv):
            raise ParameterError(f"cv={self.cv!r} must be a finite number >= 0")
        if self.cv < 0:
            raise ParameterError(
                f"cv={self.cv!r} is negative; the coefficient of variation is >= 0"
            )
        if self.lower is not None:
            lower = _as_quantity("lower", self.lower, get_dimensions(self.mean))
            if lower < 0:
                raise ParameterError(f"lower={self.lower!r} must be >= 0")
            if lower >= mean:
                raise ParameterError(
                    f"lower={self.lower!r} must be below mean={self.mean!r}"
                )
        if not 0 < self.tolerance < 1:
            raise ParameterError(f"tolerance={self.tolerance!r} must be in (0, 1)")

    @property
    def unit(self):
        """Brian2 unit of the parameter (the unit of ``mean``)."""
        return get_unit(get_dimensions(self.mean))

    @property
    def mean_si(self):
        """Mean in SI base units, as a float."""
        return float(np.asarray(self.mean))

    @property
    def lower_si(self):
        """Lower bound in SI base units, as a float (0 when none was given)."""
        return 0.0 if self.lower is None else float(np.asarray(self.lower))

    def _scipy_dist(self):
        raise NotImplementedError

    def bounded_moments(self):
        """Mean, cv and skewness of the distribution after the lower bound.

        Returns
        -------
        dict
            ``mean`` (Quantity), ``cv``, ``skewness`` and ``rejected`` (the
            probability that a draw falls at or below the bound and is redrawn).
        """
        if self.cv == 0:
            return {"mean": self.mean, "cv": 0.0, "skewness": 0.0, "rejected": 0.0}
        dist = self._scipy_dist()
        lo = self.lower_si
        rejected = float(dist.cdf(lo))
        if rejected < 1e-12:
            m, v, s = (float(x) for x in dist.stats(moments="mvs"))
        else:
            raw = [
                dist.expect(lambda x, k=k: x**k, lb=lo, conditional=True)
                for k in (1, 2, 3)
            ]
            m = raw[0]
            v = raw[1] - m**2
            s = (raw[2] - 3 * m * v - m**3) / v**1.5
        return {
            "mean": m * self.unit,
            "cv": math.sqrt(v) / m,
            "skewness": float(s),
            "rejected": rejected,
        }

    @property
    def skewness(self):
        """Skewness of the bounded distribution (Fisher)."""
        return self.bounded_moments()["skewness"]

    def _check_bound(self):
        if self.cv == 0:
            return
        moments = self.bounded_moments()
        if moments["rejected"] > 0.5:
            raise ParameterError(
                f"cv={self.cv} cannot be reached by the {self.family} family with "
                f"lower={self.lower!r}: {moments['rejected']:.0%} of draws fall "
                "below the bound"
            )
        mean_err = abs(float(moments["mean"] / self.mean) - 1)
        cv_err = abs(moments["cv"] / self.cv - 1)
        if mean_err > self.tolerance or cv_err > self.tolerance:
            raise ParameterError(
                f"cv={self.cv} cannot be reached by the {self.family} family with "
                f"lower={self.lower!r}: resampling below the bound gives mean "
                f"{moments['mean']!r} and cv {moments['cv']:.3f} (tolerance "
                f"{self.tolerance:.0%}); lower the cv or the bound, or use another "
                "family"
            )

    # -- sampling -----------------------------------------------------------------
    def _quantile(self, q):
        """Values at quantiles ``q`` of the distribution after the lower bound."""
        dist = self._scipy_dist()
        below = dist.cdf(self.lower_si)
        return dist.ppf(below + q * (1 - below))

    def sample(self, n, rng):
        """Draw ``n`` values.

        Draws use inverse-CDF sampling of the distribution truncated at the lower
        bound, which has exactly the distribution of redrawing every value at or
        below the bound. One uniform number per neuron is used, so the same ``rng``
        state gives every neuron the same rank in every family and degree.

        Parameters
        ----------
        n : int
            Number of values (neurons).
        rng : numpy.random.Generator or int
            Random generator, or a seed for one.

        Returns
        -------
        Quantity
            Array of ``n`` values with the unit of ``mean``.
        """
        if not isinstance(n, int | np.integer) or n < 0:
            raise ParameterError(f"n={n!r} must be a non-negative integer")
        rng = np.random.default_rng(rng)
        q = rng.random(n)
        if self.cv == 0:
            return np.full(n, self.mean_si) * self.unit
        values = np.asarray(self._quantile(q), dtype=float)
        # guard against round-off at the bound: redraw those values, never clip
        for _ in range(self._max_draw_rounds):
            bad = ~(values > self.lower_si)
            if not bad.any():
                break
            values[bad] = self._quantile(rng.random(int(bad.sum())))
        return values * self.unit

    # -- plain data ---------------------------------------------------------------
    def to_dict(self):
        """Plain-data form: family name, values as ``(number, unit string)``."""
        unit = self.unit
        out = {
            "family": self.family,
            "mean": [float(self.mean / unit), str(unit)],
            "cv": float(self.cv),
            "tolerance": self.tolerance,
        }
        if self.lower is not None:
            out["lower"] = [float(self.lower / unit), str(unit)]
        return out

    def with_cv(self, cv):
        """The same profile at another degree of heterogeneity."""
        from dataclasses import replace

        return replace(self, cv=cv)


@dataclass(frozen=True)
class Homogeneous(Profile):
    """Every neuron has the mean value; the cv must be zero."""

    family: ClassVar[str] = "homogeneous"

    def _validate(self):
        super()._validate()
        if self.cv != 0:
            raise ParameterError(
                f"cv={self.cv!r} given to the homogeneous profile; expected 0"
            )


@dataclass(frozen=True)
class LogNormal(Profile):
    """Log-normal profile: right-skewed, skewness ``c³ + 3c``."""

    family: ClassVar[str] = "lognormal"

    def _scipy_dist(self):
        s2 = math.log1p(self.cv**2)
        mu = math.log(self.mean_si) - s2 / 2
        return scipy.stats.lognorm(s=math.sqrt(s2), scale=math.exp(mu))


@dataclass(frozen=True)
class Gamma(Profile):
    """Gamma profile: right-skewed, shape ``1/c²``, skewness ``2c``."""

    family: ClassVar[str] = "gamma"

    def _scipy_dist(self):
        k = 1.0 / self.cv**2
        return scipy.stats.gamma(a=k, scale=self.mean_si / k)


@dataclass(frozen=True)
class Uniform(Profile):
    """Uniform profile (symmetric control) on ``mean ± sqrt(3) cv mean``."""

    family: ClassVar[str] = "uniform"

    def _half_width(self):
        return math.sqrt(3.0) * self.cv * self.mean_si

    def _scipy_dist(self):
        a = self._half_width()
        return scipy.stats.uniform(loc=self.mean_si - a, scale=2 * a)

    def _check_bound(self):
        lowest = self.mean_si - self._half_width()
        if self.cv > 0 and lowest <= self.lower_si:
            largest = (self.mean_si - self.lower_si) / (math.sqrt(3) * self.mean_si)
            raise ParameterError(
                f"cv={self.cv} cannot be reached by the uniform family with "
                f"mean={self.mean!r} and lower={self.lower or 0!r}: its support "
                f"would reach the bound; expected cv < {largest:.3f}"
            )


@dataclass(frozen=True)
class TruncatedNormal(Profile):
    """Normal profile cut at ``mean ± 2 s`` (symmetric control).

    ``s`` is chosen so that the standard deviation *after* the cut is ``cv * mean``:
    ``s = cv * mean / 0.8796``, 0.8796 being the std of a standard normal cut at ±2.
    """

    family: ClassVar[str] = "truncated_normal"

    def _sigma(self):
        return self.cv * self.mean_si / _TRUNCNORM_STD_FACTOR

    def _scipy_dist(self):
        c = _TRUNCNORM_CUT
        return scipy.stats.truncnorm(-c, c, loc=self.mean_si, scale=self._sigma())

    def _check_bound(self):
        lowest = self.mean_si - _TRUNCNORM_CUT * self._sigma()
        if self.cv > 0 and lowest <= self.lower_si:
            largest = (
                (self.mean_si - self.lower_si)
                * _TRUNCNORM_STD_FACTOR
                / (_TRUNCNORM_CUT * self.mean_si)
            )
            raise ParameterError(
                f"cv={self.cv} cannot be reached by the truncated_normal family with "
                f"mean={self.mean!r} and lower={self.lower or 0!r}: its support "
                f"would reach the bound; expected cv < {largest:.3f}"
            )


@dataclass(frozen=True)
class Empirical(Profile):
    """Resample measured values, mapped to the requested mean and cv.

    The measured values ``y`` (for example membrane time constants of recorded cells)
    are mapped by a power law ``x = A y^b``: monotone, positive, and a log-affine
    change that keeps the shape of the distribution on a log scale. ``b`` is solved so
    that the cv of the mapped values equals ``cv`` (``b = 0`` is homogeneous, ``b = 1``
    the data's own spread), then ``A`` so that their mean equals ``mean``. Draws
    resample the mapped values with replacement.

    Parameters
    ----------
    values : Quantity
        Measured values, same dimensions as ``mean``, all positive.
    mean : Quantity, optional
        Target mean (default: the mean of ``values``).
    cv : float, optional
        Target cv (default: the cv of ``values``).
    """

    values: Quantity | None = None
    mean: Quantity | None = None
    cv: float | None = None
    exponent: float = field(init=False, default=1.0)
    family: ClassVar[str] = "empirical"

    def __post_init__(self):
        if self.values is None:
            raise ParameterError("values=None: the empirical profile needs values")
        if not isinstance(self.values, Quantity) or (
            get_dimensions(self.values) is DIMENSIONLESS
        ):
            raise UnitError(
                "values has no physical unit; expected a Brian2 quantity array"
            )
        y = np.asarray(self.values, dtype=float).ravel()
        if y.size < 2 or not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise ParameterError(
                f"values must hold at least 2 finite positive numbers; got {y.size} "
                f"values with min {np.nanmin(y) if y.size else 'n/a'}"
            )
        unit = get_unit(get_dimensions(self.values))
        if self.mean is None:
            object.__setattr__(self, "mean", float(y.mean()) * unit)
        if self.cv is None:
            object.__setattr__(self, "cv", float(y.std() / y.mean()))
        super().__post_init__()

    def _solve_exponent(self, y):
        if self.cv == 0:
            return 0.0
        logy = np.log(y / np.exp(np.log(y).mean()))

        def cv_of(b):
            x = np.exp(b * logy)
            return x.std() / x.mean() - self.cv

        hi = 1.0
        while cv_of(hi) < 0:
            hi *= 2
            if hi > 1e3:
                raise ParameterError(
                    f"cv={self.cv} cannot be reached by mapping the measured values"
                )
        return float(scipy.optimize.brentq(cv_of, 0.0, hi, xtol=1e-12))

    def mapped_values(self):
        """The measured values mapped to the requested mean and cv, in SI floats."""
        y = np.asarray(self.values, dtype=float).ravel()
        x = np.exp(self.exponent * np.log(y / np.exp(np.log(y).mean())))
        return x * (self.mean_si / x.mean())

    def bounded_moments(self):
        x = self.mapped_values()
        keep = x > self.lower_si
        x = x[keep]
        return {
            "mean": float(x.mean()) * self.unit,
            "cv": float(x.std() / x.mean()),
            "skewness": float(scipy.stats.skew(x)) if x.std() > 0 else 0.0,
            "rejected": float(1 - keep.mean()),
        }

    def _check_bound(self):
        if self.cv > 0:
            # mapped values are known only after the exponent is solved
            object.__setattr__(
                self, "exponent", self._solve_exponent(np.asarray(self.values).ravel())
            )
        super()._check_bound()

    def _quantile(self, q):
        x = np.sort(self.mapped_values())
        x = x[x > self.lower_si]
        return x[np.minimum((q * x.size).astype(int), x.size - 1)]

    def to_dict(self):
        out = super().to_dict()
        out["values"] = [
            np.asarray(self.values / self.unit, dtype=float).tolist(),
            str(self.unit),
        ]
        return out


#: Profile classes by family name.
FAMILIES = {
    cls.family: cls
    for cls in (Homogeneous, LogNormal, Gamma, Uniform, TruncatedNormal, Empirical)
}


def make_profile(family, mean=None, cv=0.0, lower=None, **kwargs):
    """Build a profile by family name.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES` (``"homogeneous"``, ``"lognormal"``, ``"gamma"``,
        ``"uniform"``, ``"truncated_normal"``, ``"empirical"``). ``cv = 0`` in any
        family gives a :class:`Homogeneous` profile.
    mean : Quantity
        Mean with its unit.
    cv : float
        Degree of heterogeneity (coefficient of variation).
    lower : Quantity, optional
        Lower bound; draws at or below it are redrawn.
    **kwargs
        Passed on to the family (``values`` for ``"empirical"``, ``tolerance``).

    Returns
    -------
    Profile
    """
    if family not in FAMILIES:
        raise ParameterError(
            f"family={family!r} is unknown; expected one of {sorted(FAMILIES)}"
        )
    if family != "empirical" and cv == 0:
        return Homogeneous(mean=mean, cv=0.0, lower=lower)
    return FAMILIES[family](mean=mean, cv=cv, lower=lower, **kwargs)
