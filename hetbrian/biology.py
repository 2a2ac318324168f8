"""Measured cell properties: loading, fitted distributions, joint draws, comparisons.

This module grounds heterogeneity profiles in single-cell electrophysiology, in the
layout of the Allen Cell Types Database (membrane time constant ``tau`` in ms, resting
and threshold potentials in mV, input resistance in MOhm, rheobase in pA, and a cell
class such as the dendrite type: *spiny* cells are putative excitatory, *aspiny* and
*sparsely spiny* cells putative inhibitory).

Four steps, each a function:

1. **Load** a table from a path (:func:`load_cell_table`) or from the Allen Brain Map
   API into a local cache (:func:`download_allen_cell_types`). Columns are matched to
   canonical feature names (:data:`FEATURES`), values are checked against a plausible
   range and unit, and invalid rows are dropped with a logged count and reason.
2. **Fit** lognormal, gamma, Weibull, inverse Gaussian and (symmetric control) normal
   distributions by maximum likelihood (:func:`fit_distribution`,
   :func:`fit_families`, :func:`fit_cell_classes`). All five families have two free
   parameters (the location of the positive families is fixed at zero), so
   ``AIC = 2 * 2 - 2 ln L`` ranks them by likelihood; the Kolmogorov-Smirnov statistic
   ``D = sup |F_n(x) - F(x)|`` is reported beside it as a goodness-of-fit measure.
   Percentile bootstrap intervals (resampling cells with replacement and refitting)
   are given for the parameters and for the fitted mean and cv.
3. **Use** the fits: :func:`measured_profile` builds a hetbrian
   :class:`~hetbrian.heterogeneity.Profile` from the fitted table shipped with the
   package (``hetbrian/data/allen_tau_fits.csv``, written by
   ``scripts/fit_allen_profiles.py``), optionally moved to a target mean and cv;
   :func:`fit_joint` draws whole cells (time constant with resting and threshold
   potential, ...) through a Gaussian copula that keeps their measured rank
   correlation.
4. **Compare** a model parameter set with a measured one
   (:func:`distribution_distance`: KS statistic and Wasserstein distance on linear and
   log scale) and plot both (:func:`plot_distributions`).

Examples
--------
>>> import numpy as np
>>> from brian2 import ms
>>> tau = measured_profile("lognormal", cell_class="spiny", species="mouse",
...                        mean=20 * ms, cv=0.5)
>>> tau.family, round(tau.cv, 2)
('lognormal', 0.5)
>>> values = 18 * ms * np.random.default_rng(0).lognormal(0.0, 0.4, 500)
>>> best = fit_families(values)[0]
>>> best.family
'lognormal'
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats
from brian2 import Mohm, Quantity, ms, mV, pA
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions

from hetbrian.errors import DataError, ParameterError, UnitError
from hetbrian.heterogeneity import Empirical, Gamma, LogNormal

__all__ = [
    "Feature",
    "FEATURES",
    "CellTable",
    "load_cell_table",
    "download_allen_cell_types",
    "load_allen_cell_types",
    "FIT_FAMILIES",
    "Fit",
    "fit_distribution",
    "fit_families",
    "fit_cell_classes",
    "write_fit_table",
    "read_fit_table",
    "fitted_table",
    "measured_profile",
    "empirical_profile",
    "JointDistribution",
    "fit_joint",
    "DistributionDistance",
    "distribution_distance",
    "plot_distributions",
]

logger = logging.getLogger(__name__)


# -- features and their columns ---------------------------------------------------
@dataclass(frozen=True)
class Feature:
    """One measured cell property and how a table column maps onto it.

    Parameters
    ----------
    name : str
        Canonical name used throughout hetbrian (``"membrane_tau"``, ...).
    unit : Unit
        Unit the column is in, unless :func:`load_cell_table` is told otherwise.
    columns : tuple of str
        Accepted column names, first match wins.
    valid : tuple of float
        Open interval ``(low, high)``, in ``unit``, outside which a value is invalid.
    typical_median : tuple of float
        Range, in ``unit``, the median of a real table lies in; a median outside it
        means the column is in another unit.
    """

    name: str
    unit: Quantity
    columns: tuple[str, ...]
    valid: tuple[float, float]
    typical_median: tuple[float, float]


#: Features recognised in a cell table, by canonical name.
FEATURES = {
    f.name: f
    for f in (
        Feature(
            "membrane_tau", ms, ("tau", "ef__tau", "membrane_tau"), (0, 1000), (1, 200)
        ),
        Feature(
            "resting_potential",
            mV,
            ("vrest", "ef__vrest", "resting_potential"),
            (-150, 50),
            (-100, -40),
        ),
        Feature(
            "threshold_potential",
            mV,
            (
                "threshold_v_long_square",
                "ef__threshold_v_long_square",
                "threshold_potential",
            ),
            (-150, 50),
            (-80, -10),
        ),
        Feature(
            "input_resistance",
            Mohm,
            ("input_resistance_mohm", "input_resistance", "ef__ri"),
            (0, 1e5),
            (10, 5000),
        ),
        Feature(
            "rheobase",
            pA,
            ("threshold_i_long_square", "rheobase", "ef__threshold_i_long_square"),
            (0, 1e5),
            (5, 3000),
        ),
    )
}

_CLASS_COLUMNS = ("dendrite_type", "tag__dendrite_type", "cell_class")
_SPECIES_COLUMNS = ("species", "donor__species")
_SPECIES_NAMES = {"mus musculus": "mouse", "homo sapiens": "human"}
_MISSING = {"", "nan", "na", "n/a", "none", "null"}
#: Unit strings of the fitted table.
_UNIT_NAMES = {"ms": ms, "mV": mV, "Mohm": Mohm, "pA": pA}


def _unit_name(unit):
    for name, u in _UNIT_NAMES.items():
        if u is unit or (get_dimensions(u) == get_dimensions(unit) and u == unit):
            return name
    raise UnitError(
        f"unit {unit} has no name in the fitted table; expected one of "
        f"{sorted(_UNIT_NAMES)}"
    )


def _feature(name):
    if name not in FEATURES:
        raise ParameterError(
            f"feature={name!r} is unknown; expected one of {sorted(FEATURES)}"
        )
    return FEATURES[name]


def _to_float(text):
    """Parse one cell: a float, NaN for a missing value, None for non-numeric text."""
    text = text.strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


# -- the table ----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CellTable:
    """Measured properties of single cells, one entry per cell.

    Build it with :func:`load_cell_table`. Values are stored as floats in each
    feature's unit (:data:`FEATURES`), NaN where a value is missing or was invalid.
    Every cell has a valid membrane time constant: rows without one are dropped at
    loading.

    Parameters
    ----------
    features : dict of str to numpy.ndarray
        Values per canonical feature name.
    cell_class : numpy.ndarray of str
        Class of each cell (dendrite type), ``"unlabelled"`` where the table has none.
    species : numpy.ndarray of str
        Species of each cell (``"mouse"``, ``"human"``, ...).
    source : str
        Where the table came from (a file name).
    """

    features: dict
    cell_class: np.ndarray
    species: np.ndarray
    source: str = ""

    def __len__(self):
        return int(self.cell_class.size)

    @property
    def classes(self):
        """Cell classes present, sorted."""
        return sorted(set(self.cell_class.tolist()))

    @property
    def species_names(self):
        """Species present, sorted."""
        return sorted(set(self.species.tolist()))

    def _mask(self, cell_class=None, species=None):
        mask = np.ones(len(self), dtype=bool)
        if cell_class not in (None, "all"):
            if cell_class not in self.classes:
                raise ParameterError(
                    f"cell_class={cell_class!r} is not in the table {self.source!r}; "
                    f"expected one of {self.classes + ['all']}"
                )
            mask &= self.cell_class == cell_class
        if species not in (None, "all"):
            if species not in self.species_names:
                raise ParameterError(
                    f"species={species!r} is not in the table {self.source!r}; "
                    f"expected one of {self.species_names}"
                )
            mask &= self.species == species
        return mask

    def select(self, cell_class=None, species=None):
        """The cells of one class and species (``None`` or ``"all"``: every one)."""
        mask = self._mask(cell_class, species)
        return CellTable(
            features={k: v[mask] for k, v in self.features.items()},
            cell_class=self.cell_class[mask],
            species=self.species[mask],
            source=self.source,
        )

    def values(self, feature="membrane_tau", cell_class=None, species=None):
        """Valid values of one feature, with their unit.

        Parameters
        ----------
        feature : str
            Canonical feature name (a key of :data:`FEATURES`).
        cell_class, species : str, optional
            Restrict to one class or species; ``None`` or ``"all"`` keeps every cell.

        Returns
        -------
        Quantity
            1-D array without missing values.
        """
        spec = _feature(feature)
        if feature not in self.features:
            raise DataError(
                f"feature={feature!r} is not in the table {self.source!r}; it has "
                f"{sorted(self.features)}"
            )
        x = self.features[feature][self._mask(cell_class, species)]
        return x[np.isfinite(x)] * spec.unit


def load_cell_table(path, species=None, units=None, strict=True):
    """Read a table of single-cell electrophysiology (Allen Cell Types layout).

    Recognised columns (first match per feature, other columns are ignored):
    ``tau`` / ``ef__tau`` (membrane time constant, ms), ``vrest`` (mV),
    ``threshold_v_long_square`` (mV), ``input_resistance_mohm`` or
    ``input_resistance`` (MOhm), ``threshold_i_long_square`` or ``rheobase`` (pA),
    ``dendrite_type`` (cell class) and ``species`` / ``donor__species``.

    Validation, in order:

    - the time-constant column must exist (:class:`~hetbrian.errors.DataError`
      naming the columns found);
    - text that is not a number raises a :class:`~hetbrian.errors.DataError`
      naming the column, the line and the value (``strict=True``), or is treated as
      missing and counted in the log (``strict=False``);
    - values outside a plausible range (:data:`FEATURES`: for example a time
      constant <= 0 ms or >= 1000 ms) are invalid. A row with a missing or invalid
      time constant is dropped; an invalid value of another feature becomes missing.
      Both are logged at WARNING level with their count and reason;
    - the median of each feature's remaining values must be typical for its unit
      (a time-constant column in seconds has a median near 0.02 and raises, saying
      to pass ``units={"membrane_tau": second}``).

    Parameters
    ----------
    path : str or Path
        CSV file with a header row.
    species : str, optional
        Species of every cell, for a table without a species column (default:
        ``"unknown"``). Ignored where the table has one.
    units : dict of str to Unit, optional
        Unit of a column where it differs from the default in :data:`FEATURES`,
        for example ``{"membrane_tau": second}``.
    strict : bool
        Raise on non-numeric text (default) instead of dropping it.

    Returns
    -------
    CellTable
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"path={str(path)!r} is not a file")
    with path.open(newline="", encoding="utf-8") as fh:
        return _parse_cell_table(fh, path.name, species, units, strict)


def _parse_cell_table(fh, source, species, units, strict):
    reader = csv.reader(fh)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataError(f"table {source!r} is empty: no header row") from None
    rows = [r for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"table {source!r} has a header but no rows")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise DataError(
                f"table {source!r} line {i + 2} has {len(r)} fields; the header has "
                f"{len(header)}"
            )
    units = dict(units or {})
    for name, unit in units.items():
        spec = _feature(name)
        if not isinstance(unit, Quantity) or get_dimensions(unit) != get_dimensions(
            spec.unit
        ):
            raise UnitError(
                f"units[{name!r}]={unit}; expected a unit with the dimensions of "
                f"{spec.unit}"
            )
    n = len(rows)
    columns = {h: i for i, h in enumerate(header)}

    found = {}
    for name, spec in FEATURES.items():
        col = next((c for c in spec.columns if c in columns), None)
        if col is not None:
            found[name] = col
    if "membrane_tau" not in found:
        raise DataError(
            f"table {source!r} has no membrane time constant column; expected one of "
            f"{list(FEATURES['membrane_tau'].columns)}, found columns {header}"
        )

    features = {}
    non_numeric = {}
    for name, col in found.items():
        spec = FEATURES[name]
        raw = [r[columns[col]] for r in rows]
        parsed = [_to_float(t) for t in raw]
        bad = [(i, raw[i]) for i, v in enumerate(parsed) if v is None]
        if bad and strict:
            shown = ", ".join(f"line {i + 2}: {t!r}" for i, t in bad[:5])
            raise DataError(
                f"table {source!r} column {col!r} ({name}) has {len(bad)} non-numeric "
                f"value(s) ({shown}); expected numbers in {spec.unit}. Fix the "
                "table, or pass strict=False to drop them"
            )
        non_numeric[name] = len(bad)
        x = np.array([math.nan if v is None else v for v in parsed], dtype=float)
        if name in units:
            x = x * float(units[name] / spec.unit)
        features[name] = x

    keep = np.ones(n, dtype=bool)
    for name, x in features.items():
        spec = FEATURES[name]
        lo, hi = spec.valid
        missing = ~np.isfinite(x)
        out_of_range = np.isfinite(x) & ~((x > lo) & (x < hi))
        missing_only = int(missing.sum()) - non_numeric[name]
        reasons = []
        if non_numeric[name]:
            reasons.append(f"{non_numeric[name]} non-numeric")
        if missing_only:
            reasons.append(f"{missing_only} missing")
        if out_of_range.any():
            reasons.append(
                f"{int(out_of_range.sum())} outside ({lo:g}, {hi:g}) {spec.unit}"
            )
        if name == "membrane_tau":
            keep &= ~(missing | out_of_range)
            if reasons:
                logger.warning(
                    "table %r: dropped %d of %d rows without a valid membrane time "
                    "constant (%s)",
                    source,
                    int((missing | out_of_range).sum()),
                    n,
                    ", ".join(reasons),
                )
        elif out_of_range.any() or non_numeric[name]:
            logger.warning(
                "table %r: %s set to missing (%s)", source, name, ", ".join(reasons)
            )
        x[out_of_range] = math.nan
    if not keep.any():
        lo, hi = FEATURES["membrane_tau"].valid
        raise DataError(
            f"table {source!r} has no row with a valid membrane time constant; "
            f"values must lie in ({lo:g}, {hi:g}) ms (pass units= if the column is "
            "in another unit)"
        )

    for name, x in features.items():
        spec = FEATURES[name]
        finite = x[keep][np.isfinite(x[keep])]
        if finite.size == 0:
            continue
        median = float(np.median(finite))
        lo, hi = spec.typical_median
        if not lo <= median <= hi:
            raise DataError(
                f"table {source!r} column {found[name]!r} ({name}) has median "
                f"{median:.4g} {spec.unit}, outside the typical {lo}-{hi} "
                f"{spec.unit}; the column is probably in another unit: pass "
                f"units={{{name!r}: <unit>}}"
            )

    if (col := next((c for c in _CLASS_COLUMNS if c in columns), None)) is not None:
        cell_class = [r[columns[col]].strip().lower() or "unlabelled" for r in rows]
    else:
        cell_class = ["unlabelled"] * n
    if (col := next((c for c in _SPECIES_COLUMNS if c in columns), None)) is not None:
        names = [r[columns[col]].strip().lower() for r in rows]
        species_of = [_SPECIES_NAMES.get(s, s) or "unknown" for s in names]
    else:
        species_of = [species or "unknown"] * n

    table = CellTable(
        features={k: v[keep] for k, v in features.items()},
        cell_class=np.array(cell_class, dtype=str)[keep],
        species=np.array(species_of, dtype=str)[keep],
        source=source,
    )
    logger.info(
        "table %r: %d cells, features %s, classes %s",
        source,
        len(table),
        sorted(table.features),
        table.classes,
    )
    return table


# -- Allen Brain Map API --------------------------------------------------------------
ALLEN_API_URL = "https://api.brain-map.org/api/v2/data/query.json"
#: Fields of the API model ``ApiCellTypesSpecimenDetail`` written to the cache.
_ALLEN_FIELDS = (
    "specimen__id",
    "donor__species",
    "tag__dendrite_type",
    "ef__tau",
    "ef__vrest",
    "ef__threshold_v_long_square",
    "ef__ri",
    "ef__threshold_i_long_square",
)
_ALLEN_SPECIES = {"mouse": "Mus musculus", "human": "Homo Sapiens"}


def _default_cache_dir():
    env = os.environ.get("HETBRIAN_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "hetbrian"
    return base / "allen_cell_types"


def _allen_query_url(species, start_row, page_size):
    criteria = (
        "model::ApiCellTypesSpecimenDetail,"
        f"rma::criteria,[donor__species$il'{_ALLEN_SPECIES[species]}'],"
        f"rma::options[num_rows$eq{page_size}][start_row$eq{start_row}]"
        "[order$eq'specimen__id']"
    )
    return ALLEN_API_URL + "?" + urllib.parse.urlencode({"criteria": criteria})


def download_allen_cell_types(
    species="mouse", cache_dir=None, refresh=False, timeout=30.0, page_size=2000
):
    """Download cell features from the Allen Brain Map API into a local cache.

    Queries the RMA model ``ApiCellTypesSpecimenDetail`` (one row per recorded cell,
    with its electrophysiology features ``ef__*``, its dendrite type and donor
    species) page by page, and writes the fields :func:`load_cell_table` reads to
    ``<cache_dir>/allen_cell_types_<species>.csv``. A cached file is reused unless
    ``refresh`` is true; it is written under a temporary name and renamed, so an
    interrupted download leaves no partial cache.

    Parameters
    ----------
    species : {"mouse", "human"}
        Donor species.
    cache_dir : str or Path, optional
        Cache folder (default: ``$HETBRIAN_CACHE_DIR/allen_cell_types`` or
        ``~/.cache/hetbrian/allen_cell_types``).
    refresh : bool
        Download again even if the cache file exists.
    timeout : float
        Seconds to wait for each response.
    page_size : int
        Rows per request.

    Returns
    -------
    Path
        The cached CSV file.
    """
    if species not in _ALLEN_SPECIES:
        raise ParameterError(
            f"species={species!r} is unknown; expected one of {sorted(_ALLEN_SPECIES)}"
        )
    if not isinstance(page_size, int) or page_size < 1:
        raise ParameterError(f"page_size={page_size!r} must be a positive integer")
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = cache_dir / f"allen_cell_types_{species}.csv"
    if target.is_file() and not refresh:
        logger.info("using cached Allen cell types table %s", target)
        return target

    records = []
    total = None
    while total is None or len(records) < total:
        url = _allen_query_url(species, len(records), page_size)
        logger.info("requesting %s", url)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise DataError(
                f"could not download from {ALLEN_API_URL} ({exc}); load a local "
                "table with load_cell_table(path) instead"
            ) from exc
        except json.JSONDecodeError as exc:
            raise DataError(
                f"the Allen API answered with invalid JSON ({exc})"
            ) from exc
        if not payload.get("success", False):
            raise DataError(f"the Allen API refused the query: {payload.get('msg')!r}")
        page = payload.get("msg", [])
        total = int(payload.get("total_rows", len(page)))
        if not page:
            break
        records.extend(page)
    if not records:
        raise DataError(f"the Allen API returned no cells for species={species!r}")

    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".csv.part")
    with partial.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(_ALLEN_FIELDS)
        for rec in records:
            writer.writerow(
                ["" if rec.get(k) is None else rec.get(k) for k in _ALLEN_FIELDS]
            )
    partial.replace(target)
    logger.info("wrote %d cells to %s", len(records), target)
    return target


def load_allen_cell_types(species="mouse", cache_dir=None, refresh=False, **kwargs):
    """Download (or reuse the cached) Allen table and load it as a :class:`CellTable`.

    Parameters are those of :func:`download_allen_cell_types`; further keyword
    arguments go to :func:`load_cell_table`.
    """
    path = download_allen_cell_types(species, cache_dir=cache_dir, refresh=refresh)
    return load_cell_table(path, species=species, **kwargs)


# -- maximum-likelihood fits ----------------------------------------------------------
#: Families fitted, with their scipy.stats name; loc is fixed at 0 except for normal.
FIT_FAMILIES = {
    "lognormal": "lognorm",
    "gamma": "gamma",
    "weibull": "weibull_min",
    "inverse_gaussian": "invgauss",
    "normal": "norm",
}
_POSITIVE_FAMILIES = ("lognormal", "gamma", "weibull", "inverse_gaussian")
#: Preferred unit to fit in, by dimensions (numbers in the table are in this unit).
_FIT_UNITS = {get_dimensions(u): u for u in (ms, mV, Mohm, pA)}


def _weibull_mle(x):
    """Weibull shape ``c`` and scale ``lam`` with loc 0, by maximum likelihood.

    ``c`` solves ``sum(y^c ln y) / sum(y^c) - 1/c - mean(ln y) = 0`` with
    ``y = x / max(x)`` (the left side increases with ``c``), then
    ``lam = max(x) * mean(y^c)^(1/c)``.
    """
    top = x.max()
    logy = np.log(x / top)
    mean_log = logy.mean()

    def score(c):
        w = np.exp(c * logy)
        return (w * logy).sum() / w.sum() - 1.0 / c - mean_log

    lo, hi = 1e-2, 1.0
    while score(hi) < 0:
        hi *= 2
        if hi > 1e4:
            raise DataError("the Weibull fit does not converge: values nearly equal")
    while score(lo) > 0 and lo > 1e-8:
        lo /= 10
    c = scipy.optimize.brentq(score, lo, hi, xtol=1e-12)
    lam = top * np.mean(np.exp(c * logy)) ** (1.0 / c)
    return float(c), 0.0, float(lam)


def _mle(x, family):
    """Shape, loc, scale of ``family`` fitted to the plain array ``x``."""
    if family == "weibull":
        return _weibull_mle(x)
    if family == "normal":
        return None, float(x.mean()), float(x.std())
    dist = getattr(scipy.stats, FIT_FAMILIES[family])
    shape, loc, scale = dist.fit(x, floc=0)
    return float(shape), float(loc), float(scale)


def _frozen(family, shape, loc, scale):
    dist = getattr(scipy.stats, FIT_FAMILIES[family])
    if shape is None:
        return dist(loc=loc, scale=scale)
    return dist(shape, loc=loc, scale=scale)


def _mean_cv(family, shape, loc, scale):
    m, v = (float(s) for s in _frozen(family, shape, loc, scale).stats(moments="mv"))
    return m, math.sqrt(v) / m if m != 0 else math.nan


@dataclass(frozen=True, eq=False)
class Fit:
    """A maximum-likelihood fit of one family to one feature of one group of cells.

    The fitted distribution is ``scipy.stats.<name>(shape, loc=loc, scale=scale)``
    in ``unit`` (``name`` from :data:`FIT_FAMILIES`; no shape for the normal).

    Attributes
    ----------
    family : str
        A key of :data:`FIT_FAMILIES`.
    unit : Unit
        Unit of ``loc``, ``scale`` and the data (ms for time constants).
    n : int
        Number of cells fitted.
    shape, loc, scale : float
        Fitted parameters (``shape`` is None for the normal family).
    log_likelihood : float
        Maximised log-likelihood of the data (densities in ``1/unit``).
    ks_statistic, ks_pvalue : float
        One-sample Kolmogorov-Smirnov test of the data against the fit. The
        p-value ignores that the parameters were fitted to the same data, so it is
        too large; use it to rank, not as a test.
    ci : dict of str to (float, float)
        Bootstrap percentile intervals of ``shape``, ``scale``, ``mean`` (in
        ``unit``) and ``cv``; empty without bootstrap.
    sample : dict of str to float
        Moments of the data: ``mean`` and ``median`` (in ``unit``), ``cv``,
        ``skewness``.
    delta_aic, aic_weight : float
        AIC above the best family of the same ranking, and the Akaike weight
        ``exp(-delta/2) / sum exp(-delta/2)``; NaN outside a ranking.
    aic_rank, ks_rank : int
        Rank (1 = best) by AIC and by KS statistic within the ranking; 0 outside.
    """

    family: str
    unit: Quantity
    n: int
    shape: float | None
    loc: float
    scale: float
    log_likelihood: float
    ks_statistic: float
    ks_pvalue: float
    feature: str = "membrane_tau"
    species: str = ""
    cell_class: str = ""
    source: str = ""
    ci: dict = field(default_factory=dict)
    confidence: float = 0.95
    n_boot: int = 0
    sample: dict = field(default_factory=dict)
    delta_aic: float = math.nan
    aic_weight: float = math.nan
    aic_rank: int = 0
    ks_rank: int = 0

    n_params = 2

    @property
    def aic(self):
        """Akaike information criterion ``2 k - 2 ln L`` with ``k = 2``."""
        return 2 * self.n_params - 2 * self.log_likelihood

    def distribution(self):
        """The fitted ``scipy.stats`` distribution, in ``unit``."""
        return _frozen(self.family, self.shape, self.loc, self.scale)

    @property
    def mean(self):
        """Mean of the fitted distribution, with its unit."""
        return _mean_cv(self.family, self.shape, self.loc, self.scale)[0] * self.unit

    @property
    def cv(self):
        """Coefficient of variation of the fitted distribution."""
        return _mean_cv(self.family, self.shape, self.loc, self.scale)[1]

    @property
    def skewness(self):
        """Skewness (Fisher) of the fitted distribution."""
        return float(self.distribution().stats(moments="s"))

    def quantiles(self, n=1000):
        """``n`` values at the quantiles ``(i + 1/2) / n``, with their unit."""
        if not isinstance(n, int | np.integer) or n < 2:
            raise ParameterError(f"n={n!r} must be an integer >= 2")
        q = (np.arange(n) + 0.5) / n
        return self.distribution().ppf(q) * self.unit

    def __repr__(self):
        return (
            f"Fit({self.family!r}, {self.species or '?'}/{self.cell_class or '?'}, "
            f"n={self.n}, mean={self.mean!r}, cv={self.cv:.3f}, aic={self.aic:.2f})"
        )


def _plain(values, name="values"):
    """Check a 1-D Quantity sample; return floats in the preferred unit and the unit."""
    if not isinstance(values, Quantity) or get_dimensions(values) is DIMENSIONLESS:
        raise UnitError(
            f"{name} has no physical unit; expected a Brian2 quantity array such as "
            "tau_values * ms"
        )
    unit = _FIT_UNITS.get(get_dimensions(values))
    if unit is None:
        raise UnitError(
            f"{name} has dimensions {get_dimensions(values)}; expected a time, "
            "voltage, resistance or current"
        )
    x = np.asarray(values / unit, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise DataError(
            f"{name} holds {int((~np.isfinite(x)).sum())} non-finite value(s); drop "
            "them before fitting"
        )
    return x, unit


def fit_distribution(values, family, n_boot=0, rng=None, confidence=0.95, **labels):
    """Fit one family by maximum likelihood, with bootstrap intervals.

    The positive families (lognormal, gamma, Weibull, inverse Gaussian) have their
    location fixed at zero and two free parameters, shape and scale; the normal has
    loc and scale. The log-likelihood ``ln L = sum_i ln f(x_i)`` is maximised by
    ``scipy.stats`` (closed forms for lognormal, inverse Gaussian and normal, a 1-D
    root for gamma) or by :func:`_weibull_mle`. The bootstrap draws ``n_boot``
    samples of the cells with replacement, refits each, and reports the
    ``(1 -/+ confidence) / 2`` percentiles of shape, scale, mean and cv.

    Parameters
    ----------
    values : Quantity
        Measured (or sampled) values, 1-D, all finite; all positive for the
        positive families.
    family : str
        A key of :data:`FIT_FAMILIES`.
    n_boot : int
        Bootstrap resamples (0: no intervals).
    rng : numpy.random.Generator or int, optional
        Random generator or seed for the bootstrap.
    confidence : float
        Coverage of the intervals, in (0, 1).
    **labels
        ``feature``, ``species``, ``cell_class``, ``source`` stored on the fit.

    Returns
    -------
    Fit
    """
    if family not in FIT_FAMILIES:
        raise ParameterError(
            f"family={family!r} is unknown; expected one of {list(FIT_FAMILIES)}"
        )
    if not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise ParameterError(f"n_boot={n_boot!r} must be a non-negative integer")
    if not 0 < confidence < 1:
        raise ParameterError(f"confidence={confidence!r} must be in (0, 1)")
    x, unit = _plain(values)
    if x.size < 3:
        raise DataError(f"values holds {x.size} value(s); a fit needs at least 3")
    if family in _POSITIVE_FAMILIES and x.min() <= 0:
        raise DataError(
            f"values has minimum {x.min():.4g} {unit}; the {family} family needs "
            "positive values"
        )
    if x.std() == 0:
        raise DataError("values are all equal; no distribution can be fitted")

    shape, loc, scale = _mle(x, family)
    dist = _frozen(family, shape, loc, scale)
    loglik = float(dist.logpdf(x).sum())
    ks = scipy.stats.kstest(x, dist.cdf)
    sample = {
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "cv": float(x.std() / x.mean()),
        "skewness": float(scipy.stats.skew(x)),
    }
    ci = _bootstrap(x, family, n_boot, rng, confidence) if n_boot else {}
    return Fit(
        family=family,
        unit=unit,
        n=int(x.size),
        shape=shape,
        loc=loc,
        scale=scale,
        log_likelihood=loglik,
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        ci=ci,
        confidence=confidence,
        n_boot=int(n_boot),
        sample=sample,
        **labels,
    )


def _bootstrap(x, family, n_boot, rng, confidence):
    """Percentile bootstrap intervals of shape, scale, mean and cv."""
    rng = np.random.default_rng(rng)
    draws = []
    failed = 0
    for _ in range(n_boot):
        xb = x[rng.integers(0, x.size, x.size)]
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                shape, loc, scale = _mle(xb, family)
                m, cv = _mean_cv(family, shape, loc, scale)
        except (DataError, ValueError, RuntimeError, FloatingPointError):
            failed += 1
            continue
        row = (math.nan if shape is None else shape, scale, m, cv)
        if all(math.isfinite(v) for v in row[1:]):
            draws.append(row)
        else:
            failed += 1
    if failed:
        level = logging.WARNING if failed > 0.1 * n_boot else logging.INFO
        logger.log(
            level,
            "%s bootstrap: %d of %d refits failed and were left out",
            family,
            failed,
            n_boot,
        )
    if len(draws) < 2:
        raise DataError(
            f"{family} bootstrap: fewer than 2 of {n_boot} refits succeeded"
        )
    draws = np.array(draws)
    alpha = (1 - confidence) / 2
    ci = {}
    for j, name in enumerate(("shape", "scale", "mean", "cv")):
        col = draws[:, j]
        if np.all(np.isnan(col)):
            continue
        lo, hi = np.quantile(col, [alpha, 1 - alpha])
        ci[name] = (float(lo), float(hi))
    return ci


def _rank(fits):
    """Sort fits by AIC; set delta AIC, Akaike weights and AIC and KS ranks."""
    fits = sorted(fits, key=lambda f: f.aic)
    best = fits[0].aic
    delta = np.array([f.aic - best for f in fits])
    weight = np.exp(-delta / 2)
    weight /= weight.sum()
    ks_order = sorted(range(len(fits)), key=lambda i: fits[i].ks_statistic)
    ks_rank = {i: r + 1 for r, i in enumerate(ks_order)}
    return tuple(
        replace(
            f,
            delta_aic=float(delta[i]),
            aic_weight=float(weight[i]),
            aic_rank=i + 1,
            ks_rank=ks_rank[i],
        )
        for i, f in enumerate(fits)
    )


def fit_families(
    values, families=tuple(FIT_FAMILIES), n_boot=0, rng=None, confidence=0.95, **labels
):
    """Fit several families to one sample and rank them by AIC.

    Parameters
    ----------
    values : Quantity
        The sample (see :func:`fit_distribution`).
    families : sequence of str
        Keys of :data:`FIT_FAMILIES` (default: all five).
    n_boot, rng, confidence, **labels
        As in :func:`fit_distribution`; one generator serves every family.

    Returns
    -------
    tuple of Fit
        Best first (lowest AIC), with ``delta_aic``, ``aic_weight``, ``aic_rank`` and
        ``ks_rank`` set.
    """
    if isinstance(families, str) or not families:
        raise ParameterError(
            f"families={families!r} must be a non-empty sequence of family names"
        )
    rng = np.random.default_rng(rng)
    fits = [
        fit_distribution(values, fam, n_boot, rng, confidence, **labels)
        for fam in families
    ]
    return _rank(fits)


def fit_cell_classes(
    table,
    feature="membrane_tau",
    families=tuple(FIT_FAMILIES),
    n_boot=200,
    rng=None,
    confidence=0.95,
    min_cells=10,
):
    """Fit and rank every family for each species and cell class of a table.

    Each species gets one group per cell class and one, ``"all"``, of all its
    cells (the only group where the table has no classes). Groups with fewer than
    ``min_cells`` cells are skipped, with a log message.

    Parameters
    ----------
    table : CellTable
        Loaded table.
    feature : str
        Feature to fit (default: the membrane time constant).
    families, n_boot, rng, confidence
        As in :func:`fit_families`.
    min_cells : int
        Smallest group fitted.

    Returns
    -------
    dict of (str, str) to tuple of Fit
        Ranked fits by ``(species, cell_class)``.
    """
    if not isinstance(table, CellTable):
        raise ParameterError(f"table={table!r} must be a CellTable")
    rng = np.random.default_rng(rng)
    out = {}
    for species in table.species_names:
        classes = [c for c in table.classes if c != "unlabelled"]
        present = set(table.select(species=species).cell_class.tolist())
        for cell_class in [c for c in classes if c in present] + ["all"]:
            values = table.values(feature, cell_class=cell_class, species=species)
            if values.size < min_cells:
                logger.info(
                    "%s/%s: %d cells with %s, fewer than min_cells=%d; not fitted",
                    species,
                    cell_class,
                    values.size,
                    feature,
                    min_cells,
                )
                continue
            out[(species, cell_class)] = fit_families(
                values,
                families,
                n_boot,
                rng,
                confidence,
                feature=feature,
                species=species,
                cell_class=cell_class,
                source=table.source,
            )
    return out


# -- the fitted table on disk -------------------------------------------------------
_TABLE_COLUMNS = (
    "source", "species", "cell_class", "feature", "unit", "n", "family",
    "aic_rank", "ks_rank", "shape", "loc", "scale", "mean", "cv", "skewness",
    "log_likelihood", "aic", "delta_aic", "aic_weight", "ks_statistic",
    "ks_pvalue", "confidence", "n_boot", "shape_ci_low", "shape_ci_high",
    "scale_ci_low", "scale_ci_high", "mean_ci_low", "mean_ci_high", "cv_ci_low",
    "cv_ci_high", "sample_mean", "sample_median", "sample_cv", "sample_skewness",
)  # fmt: skip


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return str(v)


def write_fit_table(path, fits):
    """Write ranked fits as a small CSV table (one row per group and family).

    Parameters
    ----------
    path : str or Path
        Output file; its folder is created.
    fits : dict of tuple of Fit, or sequence of Fit
        The result of :func:`fit_cell_classes`, or fits in any order.

    Returns
    -------
    Path
    """
    flat = (
        [f for group in fits.values() for f in group]
        if isinstance(fits, Mapping)
        else list(fits)
    )
    if not flat or not all(isinstance(f, Fit) for f in flat):
        raise ParameterError("fits must hold at least one Fit and only Fit objects")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(_TABLE_COLUMNS)
        for f in flat:
            ci = f.ci
            row = {
                "source": f.source, "species": f.species, "cell_class": f.cell_class,
                "feature": f.feature, "unit": _unit_name(f.unit), "n": f.n,
                "family": f.family, "aic_rank": f.aic_rank, "ks_rank": f.ks_rank,
                "shape": f.shape, "loc": f.loc, "scale": f.scale,
                "mean": float(f.mean / f.unit), "cv": f.cv, "skewness": f.skewness,
                "log_likelihood": f.log_likelihood, "aic": f.aic,
                "delta_aic": f.delta_aic, "aic_weight": f.aic_weight,
                "ks_statistic": f.ks_statistic, "ks_pvalue": f.ks_pvalue,
                "confidence": f.confidence, "n_boot": f.n_boot,
                "sample_mean": f.sample.get("mean"),
                "sample_median": f.sample.get("median"),
                "sample_cv": f.sample.get("cv"),
                "sample_skewness": f.sample.get("skewness"),
            }  # fmt: skip
            for name in ("shape", "scale", "mean", "cv"):
                lo, hi = ci.get(name, (None, None))
                row[f"{name}_ci_low"], row[f"{name}_ci_high"] = lo, hi
            writer.writerow([_fmt(row[c]) for c in _TABLE_COLUMNS])
    return path


def read_fit_table(path=None):
    """Read a fitted table written by :func:`write_fit_table`.

    Parameters
    ----------
    path : str or Path, optional
        The CSV file (default: the table shipped with the package,
        ``hetbrian/data/allen_tau_fits.csv``).

    Returns
    -------
    tuple of Fit
    """
    if path is None:
        text = resources.files("hetbrian").joinpath("data/allen_tau_fits.csv")
        text = text.read_text(encoding="utf-8")
        source = "hetbrian/data/allen_tau_fits.csv"
    else:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"path={str(path)!r} is not a file")
        text = path.read_text(encoding="utf-8")
        source = str(path)
    reader = csv.DictReader(io.StringIO(text))
    missing = set(_TABLE_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise DataError(f"fitted table {source!r} lacks columns {sorted(missing)}")
    fits = []
    for line, row in enumerate(reader, start=2):
        try:
            num = {k: _to_float(row[k]) for k in _TABLE_COLUMNS[9:]}
            if any(v is None for v in num.values()):
                raise ValueError("non-numeric value")
            unit = _UNIT_NAMES[row["unit"]]
            ci = {
                name: (num[f"{name}_ci_low"], num[f"{name}_ci_high"])
                for name in ("shape", "scale", "mean", "cv")
                if math.isfinite(num[f"{name}_ci_low"])
            }
            fits.append(
                Fit(
                    family=row["family"],
                    unit=unit,
                    n=int(row["n"]),
                    shape=None if math.isnan(num["shape"]) else num["shape"],
                    loc=num["loc"],
                    scale=num["scale"],
                    log_likelihood=num["log_likelihood"],
                    ks_statistic=num["ks_statistic"],
                    ks_pvalue=num["ks_pvalue"],
                    feature=row["feature"],
                    species=row["species"],
                    cell_class=row["cell_class"],
                    source=row["source"],
                    ci=ci,
                    confidence=num["confidence"],
                    n_boot=int(num["n_boot"]),
                    sample={
                        k: num[f"sample_{k}"]
                        for k in ("mean", "median", "cv", "skewness")
                    },
                    delta_aic=num["delta_aic"],
                    aic_weight=num["aic_weight"],
                    aic_rank=int(row["aic_rank"]),
                    ks_rank=int(row["ks_rank"]),
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"fitted table {source!r} line {line}: {exc}") from exc
    return tuple(fits)


@functools.cache
def fitted_table():
    """The fitted table shipped with the package (read once, then cached)."""
    return read_fit_table()


def _select_fits(fits, species, cell_class, feature):
    group = [
        f
        for f in fits
        if f.species == species and f.cell_class == cell_class and f.feature == feature
    ]
    if not group:
        groups = sorted(
            {(f.species, f.cell_class) for f in fits if f.feature == feature}
        )
        raise ParameterError(
            f"no fit for species={species!r}, cell_class={cell_class!r}, "
            f"feature={feature!r}; the table has {groups}"
        )
    return sorted(group, key=lambda f: f.aic)


# -- profiles from biology -----------------------------------------------------------
_PROFILE_KINDS = {"lognormal": LogNormal, "gamma": Gamma}


def measured_profile(
    kind="lognormal",
    cell_class="spiny",
    species="mouse",
    mean=None,
    cv=None,
    lower=None,
    feature="membrane_tau",
    family=None,
    fits=None,
    n_values=1000,
    tolerance=0.05,
):
    """A heterogeneity profile fitted to measured cells.

    ``kind="lognormal"`` or ``"gamma"``: that family with the mean and cv of its
    maximum-likelihood fit to the group. ``kind="empirical"``: an
    :class:`~hetbrian.heterogeneity.Empirical` profile that resamples ``n_values``
    quantiles ``F^-1((i + 1/2) / n_values)`` of a fitted model (``family``, default
    the group's best family by AIC), so that the measured shape is available offline
    without the raw data. Given ``mean`` or ``cv``, the profile is moved there: the
    parametric kinds take them as parameters, the empirical kind maps its values by
    the power law of :class:`~hetbrian.heterogeneity.Empirical`, which keeps the
    shape on a log scale.

    Parameters
    ----------
    kind : {"lognormal", "gamma", "empirical"}
        Profile family.
    cell_class : str
        ``"spiny"``, ``"aspiny"``, ``"sparsely spiny"`` or ``"all"``.
    species : str
        ``"mouse"``, ``"human"`` or ``"mixed"`` (the unlabelled table of both).
    mean : Quantity, optional
        Target mean (default: the fitted one), with the unit of the feature.
    cv : float, optional
        Target coefficient of variation (default: the fitted one).
    lower : Quantity, optional
        Lower bound of the profile (draws at or below it are redrawn).
    feature : str
        Fitted feature (default: membrane time constant).
    family : str, optional
        Fitted family the empirical kind resamples (default: best by AIC).
    fits : sequence of Fit, optional
        Fits to draw from (default: :func:`fitted_table`, the shipped table).
    n_values : int
        Quantiles the empirical kind holds.
    tolerance : float
        Passed to the profile.

    Returns
    -------
    Profile
    """
    fits = fitted_table() if fits is None else tuple(fits)
    group = _select_fits(fits, species, cell_class, feature)
    if kind in _PROFILE_KINDS:
        fit = next((f for f in group if f.family == kind), None)
        if fit is None:
            raise ParameterError(f"kind={kind!r}: the table has no {kind} fit")
        return _PROFILE_KINDS[kind](
            mean=fit.mean if mean is None else mean,
            cv=fit.cv if cv is None else cv,
            lower=lower,
            tolerance=tolerance,
        )
    if kind == "empirical":
        fit = (
            group[0]
            if family is None
            else next((f for f in group if f.family == family), None)
        )
        if fit is None:
            raise ParameterError(
                f"family={family!r} has no fit for {species}/{cell_class}; expected "
                f"one of {[f.family for f in group]}"
            )
        if fit.family == "normal" and float(fit.distribution().cdf(0)) > 1e-6:
            raise ParameterError(
                f"family='normal' for {species}/{cell_class} puts "
                f"{float(fit.distribution().cdf(0)):.1%} of its mass below zero; "
                "choose a positive family"
            )
        logger.info("empirical profile from the %r fit", fit)
        return Empirical(
            values=fit.quantiles(n_values),
            mean=mean,
            cv=cv,
            lower=lower,
            tolerance=tolerance,
        )
    raise ParameterError(
        f"kind={kind!r} is unknown; expected one of "
        f"{sorted(_PROFILE_KINDS) + ['empirical']}"
    )


def empirical_profile(
    table,
    cell_class=None,
    species=None,
    feature="membrane_tau",
    mean=None,
    cv=None,
    lower=None,
    tolerance=0.05,
):
    """An :class:`~hetbrian.heterogeneity.Empirical` profile of measured values.

    Resamples the cells of a loaded table (not a fitted model; see
    :func:`measured_profile` for the offline form), optionally mapped to a target
    mean and cv.

    Parameters
    ----------
    table : CellTable
        Loaded table.
    cell_class, species : str, optional
        Group of cells (``None`` or ``"all"``: every cell).
    feature : str
        Feature resampled.
    mean, cv, lower, tolerance
        As in :class:`~hetbrian.heterogeneity.Empirical`.

    Returns
    -------
    Empirical
    """
    if not isinstance(table, CellTable):
        raise ParameterError(f"table={table!r} must be a CellTable")
    values = table.values(feature, cell_class=cell_class, species=species)
    return Empirical(values=values, mean=mean, cv=cv, lower=lower, tolerance=tolerance)


# -- joint sampling -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class JointDistribution:
    """Several cell properties drawn together, keeping their rank correlation.

    A Gaussian copula. A draw takes ``z ~ N(0, R)``, ``u = Phi(z)`` and
    ``x_j = Q_j(u_j)``, with ``Q_j`` the quantile function of the marginal of feature
    ``j`` (the measured values interpolated, or a fitted family), so each marginal is
    kept. The Spearman correlation of such draws is ``(6/pi) asin(R/2)``; choosing
    ``R = 2 sin(pi rho_S / 6)`` from the measured Spearman matrix ``rho_S`` makes it
    the measured one, up to sampling error.

    Attributes
    ----------
    features : tuple of str
        Canonical feature names.
    correlation : numpy.ndarray
        ``R``, the correlation matrix of the Gaussian copula.
    marginals : tuple
        Per feature, a :class:`Fit` or the sorted measured values (plain floats in
        the feature's unit).
    n : int
        Number of complete cells the copula was estimated from.
    """

    features: tuple
    correlation: np.ndarray
    marginals: tuple
    n: int

    def _quantile(self, j, u):
        marginal = self.marginals[j]
        if isinstance(marginal, Fit):
            return marginal.distribution().ppf(u)
        y = marginal
        pos = (np.arange(y.size) + 1) / (y.size + 1)
        return np.interp(u, pos, y)

    def sample(self, n, rng):
        """Draw ``n`` cells.

        Parameters
        ----------
        n : int
            Number of cells.
        rng : numpy.random.Generator or int
            Random generator or seed.

        Returns
        -------
        dict of str to Quantity
            One array of ``n`` values per feature, row ``i`` of every array the
            same cell.
        """
        if not isinstance(n, int | np.integer) or n < 0:
            raise ParameterError(f"n={n!r} must be a non-negative integer")
        rng = np.random.default_rng(rng)
        chol = np.linalg.cholesky(self.correlation)
        z = rng.standard_normal((n, len(self.features))) @ chol.T
        u = scipy.stats.norm.cdf(z)
        return {
            name: self._quantile(j, u[:, j]) * FEATURES[name].unit
            for j, name in enumerate(self.features)
        }

    def rank_correlation(self):
        """Spearman correlation implied by the copula, ``(6/pi) asin(R/2)``."""
        return 6 / np.pi * np.arcsin(self.correlation / 2)


def fit_joint(
    table,
    features=("membrane_tau", "resting_potential", "threshold_potential"),
    cell_class=None,
    species=None,
    marginals="empirical",
):
    """Estimate a :class:`JointDistribution` of several features from a table.

    Only cells with a valid value of every feature are used; how many were left out
    is logged.

    Parameters
    ----------
    table : CellTable
        Loaded table.
    features : sequence of str
        At least two canonical feature names.
    cell_class, species : str, optional
        Group of cells (``None`` or ``"all"``: every cell).
    marginals : {"empirical", "fitted"}
        ``"empirical"``: the measured values, interpolated between order statistics
        (draws stay within the measured range). ``"fitted"``: per feature the best
        family by AIC (the positive families only where every value is positive,
        else the normal).

    Returns
    -------
    JointDistribution
    """
    if not isinstance(table, CellTable):
        raise ParameterError(f"table={table!r} must be a CellTable")
    features = tuple(features)
    if len(features) < 2 or len(set(features)) != len(features):
        raise ParameterError(
            f"features={features!r} must name at least two different features"
        )
    if marginals not in ("empirical", "fitted"):
        raise ParameterError(
            f"marginals={marginals!r}; expected 'empirical' or 'fitted'"
        )
    for name in features:
        _feature(name)
        if name not in table.features:
            raise DataError(
                f"feature {name!r} is not in the table {table.source!r}; it has "
                f"{sorted(table.features)}"
            )
    mask = table._mask(cell_class, species)
    data = np.column_stack([table.features[name][mask] for name in features])
    complete = np.all(np.isfinite(data), axis=1)
    if (~complete).any():
        logger.warning(
            "fit_joint: %d of %d cells lack a valid value of one of %s and are left "
            "out",
            int((~complete).sum()),
            complete.size,
            list(features),
        )
    data = data[complete]
    n = data.shape[0]
    if n < 10:
        raise DataError(f"fit_joint: {n} complete cells; at least 10 are needed")

    spearman = scipy.stats.spearmanr(data).statistic
    if np.ndim(spearman) == 0:  # two features: scipy returns the one coefficient
        spearman = np.array([[1.0, spearman], [spearman, 1.0]])
    corr = 2 * np.sin(np.pi / 6 * spearman)
    # nearest positive-definite matrix, should round-off make it singular
    w, v = np.linalg.eigh(corr)
    if w.min() < 1e-8:
        corr = v @ np.diag(np.maximum(w, 1e-8)) @ v.T
        d = np.sqrt(np.diag(corr))
        corr = corr / np.outer(d, d)

    margs = []
    for j, name in enumerate(features):
        col = data[:, j]
        if marginals == "empirical":
            margs.append(np.sort(col))
            continue
        fams = tuple(FIT_FAMILIES) if col.min() > 0 else ("normal",)
        margs.append(fit_families(col * FEATURES[name].unit, fams, feature=name)[0])
    return JointDistribution(
        features=features, correlation=corr, marginals=tuple(margs), n=n
    )


# -- comparing distributions ----------------------------------------------------------
@dataclass(frozen=True)
class DistributionDistance:
    """Distances between a model parameter set and a measured distribution.

    Attributes
    ----------
    ks : float
        Kolmogorov-Smirnov statistic ``sup |F_model - F_measured|``. It is unchanged
        by any increasing map of the values, so it is the same on linear and log
        scale.
    ks_pvalue : float
        Two-sample (measured values) or one-sample (measured fit) KS p-value.
    wasserstein : Quantity
        ``W1 = integral |Q_model(u) - Q_measured(u)| du`` on the linear scale.
    wasserstein_log : float
        The same on the natural-log scale (unit-free: a W1 of 0.1 is a typical
        factor ``e^0.1`` between matched quantiles); NaN where a value is <= 0.
    """

    ks: float
    ks_pvalue: float
    wasserstein: Quantity
    wasserstein_log: float


def distribution_distance(model, measured, n_quantiles=10_000):
    """KS statistic and Wasserstein distances between model and measured values.

    Parameters
    ----------
    model : Quantity
        Sampled or trained parameter values (for example ``profile.sample(n, rng)``).
    measured : Quantity or Fit
        Measured values with the same dimensions, or a fitted distribution. A fit
        enters the KS statistic through its CDF and the Wasserstein distances through
        ``n_quantiles`` quantiles ``F^-1((i + 1/2) / n_quantiles)``.
    n_quantiles : int
        Quantiles that stand for a fitted distribution.

    Returns
    -------
    DistributionDistance
    """
    x, unit = _plain(model, "model")
    if isinstance(measured, Fit):
        if get_dimensions(measured.unit) != get_dimensions(unit):
            raise UnitError(
                f"model has dimensions {get_dimensions(unit)} but the fit is in "
                f"{measured.unit}"
            )
        dist = measured.distribution()
        scale = float(measured.unit / unit)
        ks = scipy.stats.kstest(x, lambda v: dist.cdf(v / scale))
        y = measured.quantiles(int(n_quantiles)) / unit
        y = np.asarray(y, dtype=float)
    else:
        y, yunit = _plain(measured, "measured")
        if get_dimensions(yunit) != get_dimensions(unit):
            raise UnitError(
                f"model has dimensions {get_dimensions(unit)} but measured has "
                f"{get_dimensions(yunit)}"
            )
        ks = scipy.stats.ks_2samp(x, y)
    if x.size == 0 or y.size == 0:
        raise DataError("model and measured must each hold at least one value")
    w = scipy.stats.wasserstein_distance(x, y)
    if x.min() > 0 and y.min() > 0:
        w_log = float(scipy.stats.wasserstein_distance(np.log(x), np.log(y)))
    else:
        logger.warning(
            "distribution_distance: values <= 0 present; the log-scale Wasserstein "
            "distance is undefined and set to NaN"
        )
        w_log = math.nan
    return DistributionDistance(
        ks=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        wasserstein=float(w) * unit,
        wasserstein_log=w_log,
    )


def plot_distributions(
    measured, models, fits=(), bins=30, log_scale=True, figure=None, title=None
):
    """Measured and model distributions, as histograms and ECDFs side by side.

    Parameters
    ----------
    measured : Quantity
        Measured values.
    models : Quantity or dict of str to Quantity
        One model sample, or several by label.
    fits : sequence of Fit
        Fitted distributions drawn as density and CDF curves.
    bins : int
        Histogram bins, shared by all samples (log-spaced on a log scale).
    log_scale : bool
        Logarithmic value axis (needs positive values).
    figure : matplotlib.figure.Figure, optional
        Figure to draw into (default: a new one, 10 x 4 inches).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        With two axes: histograms (density) and ECDFs.
    """
    from matplotlib.figure import Figure

    y, unit = _plain(measured, "measured")
    if isinstance(models, Quantity):
        models = {"model": models}
    if not isinstance(models, Mapping):
        raise ParameterError("models must be a Quantity or a dict of label to Quantity")
    samples = {"measured": y}
    for label, values in models.items():
        x, xunit = _plain(values, f"models[{label!r}]")
        if get_dimensions(xunit) != get_dimensions(unit):
            raise UnitError(f"models[{label!r}] has other dimensions than measured")
        samples[label] = x * float(xunit / unit)
    if not isinstance(fits, Sequence) or not all(isinstance(f, Fit) for f in fits):
        raise ParameterError("fits must be a sequence of Fit")
    allv = np.concatenate(list(samples.values()))
    if log_scale and allv.min() <= 0:
        raise DataError("log_scale=True needs positive values; pass log_scale=False")
    lo, hi = allv.min(), allv.max()
    edges = (
        np.geomspace(lo, hi, bins + 1) if log_scale else np.linspace(lo, hi, bins + 1)
    )
    grid = np.geomspace(lo, hi, 400) if log_scale else np.linspace(lo, hi, 400)

    fig = (
        figure if figure is not None else Figure(figsize=(10, 4), layout="constrained")
    )
    ax_hist, ax_ecdf = fig.subplots(1, 2)
    for i, (label, v) in enumerate(samples.items()):
        color = f"C{i}"
        style = (
            {"histtype": "stepfilled", "alpha": 0.35}
            if i == 0
            else {"histtype": "step", "linewidth": 1.5}
        )
        ax_hist.hist(
            v,
            bins=edges,
            density=True,
            color=color,
            label=f"{label} (n={v.size})",
            **style,
        )
        xs = np.sort(v)
        ax_ecdf.step(
            xs,
            np.arange(1, xs.size + 1) / xs.size,
            where="post",
            color=color,
            label=label,
        )
    for k, f in enumerate(fits):
        dist = f.distribution()
        g = grid * float(unit / f.unit)
        color = f"C{len(samples) + k}"
        ax_hist.plot(
            grid,
            dist.pdf(g) * float(unit / f.unit),
            color=color,
            linestyle="--",
            label=f"{f.family} fit",
        )
        ax_ecdf.plot(
            grid, dist.cdf(g), color=color, linestyle="--", label=f"{f.family} fit"
        )
    for ax in (ax_hist, ax_ecdf):
        if log_scale:
            ax.set_xscale("log")
        ax.set_xlabel(f"value ({unit})")
    ax_hist.set_ylabel(f"density (1/{unit})")
    ax_ecdf.set_ylabel("cumulative fraction")
    ax_hist.legend(fontsize="small")
    ax_ecdf.legend(fontsize="small", loc="lower right")
    if title:
        fig.suptitle(title)
    return fig
