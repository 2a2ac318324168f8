"""Linear readout of reservoir features, trained for every task of a battery at once.

The readout of a reservoir is ridge regression on ``[features, 1]``. One singular
value decomposition of the centred training features serves every target and every
candidate regularization strength; each task gets its own strength, chosen by
generalized cross-validation, exact leave-one-out or a validation split
(:class:`RidgeReadout`). :func:`ridge_readout` adds the washout, the split in time and
the held-out scores, and returns an :class:`xarray.Dataset` with a ``task`` dimension.

Features from a spiking network come from :func:`filtered_spike_trains` (spike indices
and times, pure NumPy) or :func:`state_features` (membrane potentials from a monitor).

Examples
--------
>>> import numpy as np
>>> from hetbrian.tasks import TaskBattery
>>> rng = np.random.default_rng(0)
>>> u = rng.standard_normal(3000)
>>> lags = np.stack([np.roll(u, k) for k in range(6)], axis=1)  # a shift register
>>> battery = TaskBattery.grid(["u"], memory_delays=range(1, 9), prediction_horizons=(),
...     power_degrees=(), delayed_power_delays=(), legendre_delays=(),
...     product_delays=(), narma_orders=())
>>> scores = ridge_readout(lags, battery.targets(u), tasks=battery)
>>> np.round(scores["r2_clipped"].values, 2)
array([1., 1., 1., 1., 1., 0., 0., 0.])
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.signal
import xarray as xr

from hetbrian.errors import DataError, ParameterError, UnitError
from hetbrian.stimuli import as_seconds
from hetbrian.tasks import Targets, Task, TaskBattery

__all__ = [
    "SELECTIONS",
    "DEFAULT_RELATIVE_ALPHAS",
    "RidgeReadout",
    "RidgeFit",
    "ridge_readout",
    "MemoryCapacity",
    "memory_capacity",
    "filtered_spike_trains",
    "state_features",
]

log = logging.getLogger(__name__)

#: How the regularization strength of each task is chosen.
SELECTIONS = ("gcv", "loo", "validation")

#: Default grid of strengths, in units of the mean squared singular value of the
#: centred training features (``trace(Xc^T Xc) / n_features``).
DEFAULT_RELATIVE_ALPHAS = np.logspace(-8, 2, 21)

#: Default (train, validation, test) fractions per selection method.
_DEFAULT_SPLIT = {
    "gcv": (0.75, 0.0, 0.25),
    "loo": (0.75, 0.0, 0.25),
    "validation": (0.5, 0.25, 0.25),
}


# ------------------------------------------------------------------------- validation
def _matrix(name, value):
    """Return ``value`` as a finite 2-D float array (a 1-D array becomes a column)."""
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} is not numeric: {type(value).__name__}") from None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(
            f"{name} has shape {np.shape(value)}; expected (n_samples, n_columns)"
        )
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"{name} contains {int(bad.sum())} NaN or inf values "
            f"(first at row {row}, column {col})"
        )
    return a


def _alphas(alphas):
    a = np.atleast_1d(np.asarray(alphas, dtype=float))
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ParameterError(
            f"alphas={alphas!r}; expected a non-empty sequence of finite values >= 0"
        )
    return np.unique(a)  # sorted: ties go to the smallest strength


def _selection(selection):
    if selection not in SELECTIONS:
        raise ParameterError(f"selection={selection!r}; expected one of {SELECTIONS}")
    return selection


# ---------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class RidgeFit:
    """Weights of a fitted readout, one column per task.

    Attributes
    ----------
    weights : numpy.ndarray
        Shape ``(n_features, n_tasks)``.
    intercept : numpy.ndarray
        Shape ``(n_tasks,)``.
    alpha : numpy.ndarray
        Chosen strength per task, shape ``(n_tasks,)``.
    alphas : numpy.ndarray
        The candidate strengths, shape ``(n_alphas,)``.
    criterion : numpy.ndarray
        Selection criterion (mean squared error estimate) per candidate and task,
        shape ``(n_alphas, n_tasks)``; ``inf`` where undefined.
    train_r2 : numpy.ndarray
        R² on the training data at the chosen strength, shape ``(n_tasks,)``.
    rank : int
        Numerical rank of the centred training features.
    selection : str
        The selection method used.
    """

    weights: np.ndarray
    intercept: np.ndarray
    alpha: np.ndarray
    alphas: np.ndarray
    criterion: np.ndarray
    train_r2: np.ndarray
    rank: int
    selection: str

    def predict(self, features):
        """Readout output ``features @ weights + intercept``, shape (n, n_tasks)."""
        x = _matrix("features", features)
        if x.shape[1] != self.weights.shape[0]:
            raise DataError(
                f"features has {x.shape[1]} columns; the readout was fitted on "
                f"{self.weights.shape[0]}"
            )
        return x @ self.weights + self.intercept


class RidgeReadout:
    r"""Ridge regression on ``[features, 1]`` for many targets and strengths at once.

    For training features :math:`X \in \mathbb{R}^{n \times p}` and targets
    :math:`Y \in \mathbb{R}^{n \times T}`, each task :math:`t` minimizes

    .. math:: \lVert y_t - X w_t - b_t \mathbf{1} \rVert^2
              + \alpha_t \lVert w_t \rVert^2,

    the intercept :math:`b_t` unpenalized. With the centred data
    :math:`X_c = X - \mathbf{1}\bar x^\top`, :math:`Y_c = Y - \mathbf{1}\bar y^\top` and
    **one** thin SVD :math:`X_c = U S V^\top` (singular values below
    ``rcond * s_max`` dropped, rank :math:`r`), and :math:`B = U^\top Y_c`:

    .. math:: w_t(\alpha) = V\,\mathrm{diag}\!\left(\frac{s_k}{s_k^2 + \alpha}\right)
              B_{:,t},\qquad b_t = \bar y_t - \bar x^\top w_t.

    Every strength then costs :math:`O(r T)`. With shrinkage factors
    :math:`f_k(\alpha) = s_k^2 / (s_k^2 + \alpha)`, the training residual sum of squares
    and the effective degrees of freedom (intercept included) are

    .. math:: \mathrm{RSS}_t(\alpha) = \lVert Y_{c,t} \rVert^2 - \lVert B_{:,t}\rVert^2
              + \sum_k (1 - f_k)^2 B_{kt}^2,\qquad
              \mathrm{df}(\alpha) = 1 + \sum_k f_k(\alpha).

    Selection of :math:`\alpha_t` among the candidates (ties go to the smallest):

    - ``"gcv"``: :math:`\mathrm{GCV}_t(\alpha) = \frac{\mathrm{RSS}_t / n}
      {(1 - \mathrm{df}/n)^2}`, cost :math:`O(A r T)`;
    - ``"loo"``: exact leave-one-out error
      :math:`\frac1n \sum_i \left(\frac{r_{it}}{1 - h_i}\right)^2` with leverages
      :math:`h_i = 1/n + \sum_k U_{ik}^2 f_k` and residuals
      :math:`R = Y_c - U\,\mathrm{diag}(f) B`, cost :math:`O(A n r T)`; this is the
      criterion of scikit-learn's ``RidgeCV``; GCV replaces every :math:`h_i` by
      their mean and equals it when the leverages are equal;
    - ``"validation"``: mean squared error on held-out rows
      :math:`(X_v, Y_v)`, from :math:`Z = (X_v - \bar x) V`, :math:`G = Z^\top Z`,
      :math:`Q = Z^\top (Y_v - \bar y)` and :math:`c = \mathrm{diag}(s/(s^2+\alpha))B`:
      :math:`\lVert E_t\rVert^2 - 2 Q_{:,t}^\top c_{:,t} + c_{:,t}^\top G c_{:,t}`,
      cost :math:`O(A r^2 T)`.

    The weights are those fitted on the training rows (no refit on training plus
    validation rows). Features are not rescaled: scale them yourself if their
    variances differ by orders of magnitude, or the penalty weighs them unevenly.

    Parameters
    ----------
    alphas : sequence of float, optional
        Candidate strengths :math:`\alpha \ge 0`, in squared feature units. Default:
        :data:`DEFAULT_RELATIVE_ALPHAS` times :math:`\mathrm{tr}(X_c^\top X_c)/p`.
    selection : {"gcv", "loo", "validation"}
        How each task's strength is chosen.
    rcond : float, optional
        Relative cut-off for small singular values (default
        ``max(n, p) * machine epsilon``).
    """

    def __init__(self, alphas=None, selection="gcv", rcond=None):
        self.alphas = None if alphas is None else _alphas(alphas)
        self.selection = _selection(selection)
        if rcond is not None and not (0 <= float(rcond) < 1):
            raise ParameterError(f"rcond={rcond!r}; expected 0 <= rcond < 1")
        self.rcond = rcond

    def check(self, features, targets, validation=None):
        """Validate the inputs of :meth:`fit`; return them as float arrays."""
        x = _matrix("features", features)
        y = _matrix("targets", targets)
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"features has {x.shape[0]} rows but targets has {y.shape[0]}"
            )
        if x.shape[0] < 3:
            raise DataError(f"only {x.shape[0]} training rows; need at least 3")
        if (validation is None) != (self.selection != "validation"):
            raise ParameterError(
                f"validation={'given' if validation is not None else None}: pass "
                "(features, targets) of held-out rows exactly when "
                "selection='validation'"
            )
        val = None
        if validation is not None:
            xv = _matrix("validation features", validation[0])
            yv = _matrix("validation targets", validation[1])
            if xv.shape[1] != x.shape[1] or yv.shape[1] != y.shape[1]:
                raise DataError(
                    f"validation shapes {xv.shape}, {yv.shape} do not match training "
                    f"shapes {x.shape}, {y.shape}"
                )
            if xv.shape[0] != yv.shape[0] or xv.shape[0] < 1:
                raise DataError(
                    f"validation features have {xv.shape[0]} rows, targets "
                    f"{yv.shape[0]}; expected equal and at least 1"
                )
            val = (xv, yv)
        return x, y, val

    def fit(self, features, targets, validation=None):
        """Fit every target, each with its own strength.

        Parameters
        ----------
        features : array_like
            Training features, shape ``(n, p)``.
        targets : array_like
            Training targets, shape ``(n, T)`` or ``(n,)``.
        validation : tuple of array_like, optional
            ``(features, targets)`` of held-out rows; required exactly when
            ``selection="validation"``.

        Returns
        -------
        RidgeFit
        """
        x, y, val = self.check(features, targets, validation)
        n, p = x.shape
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - x_mean, y - y_mean
        u, s, vt = _thin_svd(xc, self.rcond)
        s2 = s * s
        alphas = self.alphas
        if alphas is None:
            alphas = DEFAULT_RELATIVE_ALPHAS * (s2.sum() / p if s2.size else 1.0)
        b = u.T @ yc
        b2 = b * b
        yy = np.einsum("ij,ij->j", yc, yc)
        perp = np.maximum(yy - b2.sum(axis=0), 0.0)

        if self.selection == "gcv":
            criterion = _gcv(s2, b2, perp, alphas, n)
        elif self.selection == "loo":
            criterion = _loo(u, s2, b, yc, alphas, n)
        else:
            criterion = _validation_error(s, vt, b, x_mean, y_mean, val, alphas)

        finite = np.where(np.isfinite(criterion), criterion, np.inf)
        best = np.argmin(finite, axis=0)
        if np.any(np.isinf(finite[best, np.arange(finite.shape[1])])):
            raise DataError(
                "no candidate strength gives a finite selection criterion; with "
                f"{n} training rows and rank {s.size}, add larger alphas"
            )
        alpha = alphas[best]
        denom = s2[None, :] + alpha[:, None]  # (T, r)
        weights = vt.T @ (b * (s[None, :] / denom).T)
        intercept = y_mean - x_mean @ weights
        shrink = (alpha[:, None] / denom) ** 2
        rss = perp + np.einsum("tk,kt->t", shrink, b2)
        with np.errstate(divide="ignore", invalid="ignore"):
            train_r2 = np.where(yy > 0, 1.0 - rss / yy, np.nan)
        log.debug(
            "ridge fit: n=%d p=%d rank=%d tasks=%d alphas=%d selection=%s",
            n, p, s.size, y.shape[1], alphas.size, self.selection,
        )  # fmt: skip
        return RidgeFit(
            weights=weights,
            intercept=intercept,
            alpha=alpha,
            alphas=alphas,
            criterion=criterion,
            train_r2=train_r2,
            rank=int(s.size),
            selection=self.selection,
        )


def _thin_svd(xc, rcond):
    """Thin SVD of the centred features, truncated to the numerical rank."""
    # An eigendecomposition of the p x p Gram matrix would be several times cheaper
    # for n >> p but squares the condition number, losing the small singular values
    # of correlated reservoir states at weak regularization; not implemented. Where
    # this dominates, fit many tasks per factorization (one battery per call).
    u, s, vt = scipy.linalg.svd(
        xc, full_matrices=False, lapack_driver="gesdd", check_finite=False
    )
    if rcond is None:
        rcond = max(xc.shape) * np.finfo(float).eps
    rank = int(np.count_nonzero(s > rcond * (s[0] if s.size else 0.0)))
    if rank == s.size:  # no copy of U in the common full-rank case
        return u, s, vt
    return u[:, :rank], s[:rank], vt[:rank]


def _gcv(s2, b2, perp, alphas, n):
    """GCV criterion per strength and task, shape (n_alphas, n_tasks)."""
    a = alphas[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(s2[None, :] + a > 0, (a / (s2[None, :] + a)) ** 2, 0.0)
        rss = perp[None, :] + shrink @ b2
        df = 1.0 + (s2[None, :] / (s2[None, :] + a)).sum(axis=1)
        gap = 1.0 - df / n
        out = (rss / n) / (gap * gap)[:, None]
    out[gap <= 1e-12] = np.inf
    return out


def _loo(u, s2, b, yc, alphas, n):
    """Exact leave-one-out mean squared error, shape (n_alphas, n_tasks)."""
    u2 = u * u
    out = np.empty((alphas.size, yc.shape[1]))
    for i, alpha in enumerate(alphas):
        f = s2 / (s2 + alpha)
        h = 1.0 / n + u2 @ f
        if np.any(h >= 1.0 - 1e-12):
            out[i] = np.inf
            continue
        resid = yc - u @ (f[:, None] * b)
        resid /= (1.0 - h)[:, None]
        out[i] = np.einsum("ij,ij->j", resid, resid) / n
    return out


def _validation_error(s, vt, b, x_mean, y_mean, val, alphas):
    """Mean squared error on the validation rows, shape (n_alphas, n_tasks)."""
    xv, yv = val
    z = (xv - x_mean) @ vt.T
    e = yv - y_mean
    g = z.T @ z
    q = z.T @ e
    ee = np.einsum("ij,ij->j", e, e)
    out = np.empty((alphas.size, yv.shape[1]))
    for i, alpha in enumerate(alphas):
        c = (s / (s * s + alpha))[:, None] * b
        quad = np.einsum("kt,kt->t", g @ c, c)
        out[i] = np.maximum(ee - 2.0 * np.einsum("kt,kt->t", q, c) + quad, 0.0)
    return out / yv.shape[0]


# ---------------------------------------------------------------------------- scoring
def _scores(y, pred):
    """R², clipped R², NRMSE, correlation and flags per column of held-out data."""
    resid = y - pred
    ss_res = np.einsum("ij,ij->j", resid, resid)
    yc = y - y.mean(axis=0)
    pc = pred - pred.mean(axis=0)
    ss_tot = np.einsum("ij,ij->j", yc, yc)
    ss_pred = np.einsum("ij,ij->j", pc, pc)
    scale = np.maximum(np.einsum("ij,ij->j", y, y), 1e-300)
    constant = ss_tot <= 1e-24 * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(constant, np.nan, 1.0 - ss_res / ss_tot)
        nrmse = np.where(constant, np.nan, np.sqrt(ss_res / ss_tot))
        corr = np.einsum("ij,ij->j", yc, pc) / np.sqrt(ss_tot * ss_pred)
    corr = np.where(constant | (ss_pred <= 0), np.nan, corr)
    return {
        "r2": r2,
        "r2_clipped": np.clip(np.nan_to_num(r2, nan=0.0), 0.0, 1.0),
        "nrmse": nrmse,
        "correlation": corr,
        "negative_r2": np.nan_to_num(r2, nan=0.0) < 0,
        "constant_target": constant,
    }


_VARIABLE_ATTRS = {
    "r2": (
        "coefficient of determination on the test rows, 1 - SS_res/SS_tot with "
        "SS_tot about the test mean; unclipped (may be negative), NaN for a "
        "constant test target",
        "1",
    ),
    "r2_clipped": ("r2 clipped to [0, 1], NaN counted as 0; sum it for capacity", "1"),
    "nrmse": ("root mean squared error over the test target's standard deviation", "1"),
    "correlation": ("Pearson correlation of readout output and target (test)", "1"),
    "alpha": ("chosen ridge strength", "feature_units^2"),
    "train_r2": ("coefficient of determination on the training rows", "1"),
    "negative_r2": ("r2 < 0: the readout is worse than the test mean", "1"),
    "constant_target": ("the test target has zero variance; r2 undefined", "1"),
}


def _split(n, split, selection):
    if split is None:
        split = _DEFAULT_SPLIT[selection]
    try:
        fractions = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        raise ParameterError(f"split={split!r}; expected three fractions") from None
    if len(fractions) != 3 or any(not (0 <= f <= 1) for f in fractions):
        raise ParameterError(
            f"split={split!r}; expected (train, validation, test) fractions in [0, 1]"
        )
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ParameterError(f"split={split!r}; the fractions must add up to 1")
    f_train, f_val, _ = fractions
    if (f_val > 0) != (selection == "validation"):
        raise ParameterError(
            f"split={split!r} with selection={selection!r}: the validation fraction "
            "must be > 0 exactly when selection='validation'"
        )
    n_train = int(round(f_train * n))
    n_val = int(round(f_val * n))
    n_test = n - n_train - n_val
    if n_train < 3 or n_test < 2 or (selection == "validation" and n_val < 2):
        raise DataError(
            f"{n} rows after washout and delays split {split} into {n_train} train, "
            f"{n_val} validation and {n_test} test rows; need at least 3, 2 and 2"
        )
    return n_train, n_val, n_test


def _task_coords(tasks, n_tasks):
    if tasks is None:
        return {"task": np.array([f"task{i}" for i in range(n_tasks)], dtype=object)}
    if isinstance(tasks, TaskBattery):
        if len(tasks) != n_tasks:
            raise DataError(
                f"tasks has {len(tasks)} tasks but targets has {n_tasks} columns"
            )
        return tasks.coords()
    names = [str(t) for t in tasks]
    if len(names) != n_tasks:
        raise DataError(f"tasks has {len(names)} names but targets has {n_tasks}")
    return {"task": np.array(names, dtype=object)}


def ridge_readout(
    features,
    targets,
    *,
    tasks=None,
    valid=None,
    washout=0,
    split=None,
    selection="gcv",
    alphas=None,
    rcond=None,
):
    """Fit a readout for every task and score it on held-out rows.

    Rows used: ``max(valid.start, washout)`` to ``valid.stop`` of ``features``, split in
    time into train, validation and test blocks (in that order). The readout
    (:class:`RidgeReadout`) is fitted on the training block, the strength chosen per
    task, and scores computed on the test block:

    - ``r2`` = 1 - SS_res / SS_tot (SS_tot about the test mean), **not clipped**; NaN
      and flag ``constant_target`` where the test target is constant;
    - ``r2_clipped`` = r2 clipped to [0, 1] with NaN as 0, flag ``negative_r2`` where
      the raw value was below 0 (a sum of ``r2_clipped`` is a capacity);
    - ``nrmse`` = RMSE / std of the test target (equals sqrt(1 - r2));
    - ``correlation``: Pearson correlation of output and target.

    Every input is checked before any fitting.

    Parameters
    ----------
    features : array_like
        Shape ``(n_samples, n_features)``, one row per readout sample.
    targets : Targets or array_like
        From :meth:`hetbrian.tasks.TaskBattery.targets` (its ``valid`` is used), or an
        array of shape ``(n_valid, n_tasks)`` belonging to ``features[valid]``.
    tasks : TaskBattery or sequence of str, optional
        Labels for the ``task`` dimension (default ``task0``, ``task1``, ...).
    valid : slice, optional
        Rows of ``features`` the targets belong to (default: all rows); not allowed
        with a :class:`~hetbrian.tasks.Targets`, which carries its own.
    washout : int
        Leading readout samples discarded (initial transient of the network).
    split : tuple of float, optional
        (train, validation, test) fractions adding to 1; default (0.75, 0, 0.25),
        or (0.5, 0.25, 0.25) for ``selection="validation"``.
    selection : {"gcv", "loo", "validation"}
        How each task's strength is chosen (see :class:`RidgeReadout`).
    alphas : sequence of float, optional
        Candidate strengths (see :class:`RidgeReadout`).
    rcond : float, optional
        Relative singular-value cut-off.

    Returns
    -------
    xarray.Dataset
        Variables ``r2``, ``r2_clipped``, ``nrmse``, ``correlation``, ``alpha``,
        ``train_r2``, ``negative_r2``, ``constant_target`` on dimension ``task``, task
        labels as coordinates, and in ``attrs`` the metric names, units and sizes.
    """
    readout = RidgeReadout(alphas=alphas, selection=selection, rcond=rcond)
    x = _matrix("features", features)
    if isinstance(targets, Targets):
        if valid is not None:
            raise ParameterError("valid=...; a Targets object carries its own range")
        values, valid = targets.values, targets.valid
    else:
        values = targets
    y = _matrix("targets", values)
    if valid is None:
        valid = slice(0, x.shape[0])
    if not isinstance(valid, slice) or valid.step not in (None, 1):
        raise ParameterError(f"valid={valid!r}; expected a slice of rows, step 1")
    start, stop, _ = valid.indices(x.shape[0])
    if (valid.stop is not None and valid.stop > x.shape[0]) or stop - start != len(y):
        raise DataError(
            f"targets has {len(y)} rows belonging to feature rows {valid}, but "
            f"features has {x.shape[0]} rows; lengths do not match"
        )
    if isinstance(washout, bool) or not isinstance(washout, (int, np.integer)):
        raise ParameterError(f"washout={washout!r}; expected an integer >= 0")
    if washout < 0:
        raise ParameterError(f"washout={washout!r}; expected an integer >= 0")
    coords = _task_coords(tasks, y.shape[1])
    first = max(start, int(washout))
    n = stop - first
    if n <= 0:
        raise DataError(
            f"washout={washout} leaves no rows: targets cover feature rows "
            f"{start}..{stop}"
        )
    n_train, n_val, n_test = _split(n, split, readout.selection)
    x_used, y_used = x[first:stop], y[first - start :]
    x_tr, y_tr = x_used[:n_train], y_used[:n_train]
    x_te, y_te = x_used[n - n_test :], y_used[n - n_test :]
    val = None
    if n_val:
        val = (x_used[n_train : n_train + n_val], y_used[n_train : n_train + n_val])

    fit = readout.fit(x_tr, y_tr, validation=val)
    scores = _scores(y_te, fit.predict(x_te))
    scores["alpha"] = fit.alpha
    scores["train_r2"] = fit.train_r2
    data_vars = {}
    for key, value in scores.items():
        long_name, units = _VARIABLE_ATTRS[key]
        data_vars[key] = ("task", value, {"long_name": long_name, "units": units})
    attrs = {
        "metrics": "r2 r2_clipped nrmse correlation",
        "metric_units": "1 1 1 1",
        "r2_clipping": "r2 unclipped; r2_clipped in [0, 1], NaN counted as 0",
        "selection": readout.selection,
        "alphas": fit.alphas,
        "washout_samples": int(washout),
        "first_row": int(first),
        "n_train": int(n_train),
        "n_validation": int(n_val),
        "n_test": int(n_test),
        "n_features": int(x.shape[1]),
        "feature_rank": int(fit.rank),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


# -------------------------------------------------------------------- memory capacity
class MemoryCapacity(NamedTuple):
    """Linear memory capacity: total and per delay."""

    total: float
    per_delay: np.ndarray
    delays: np.ndarray


def memory_capacity(features, inputs, *, max_delay=100, component=0, **readout):
    r"""Linear memory capacity of a reservoir (Jaeger 2001).

    .. math:: \mathrm{MC} = \sum_{\Delta=1}^{\Delta_\max}
              \rho^2\big(u(t - \Delta), \hat y_\Delta(t)\big)

    with :math:`\rho` the correlation on the test rows between the delayed input and
    the readout trained for it (:func:`ridge_readout`). A delay the reservoir does not
    remember still scores about :math:`1/n_\mathrm{test}` through chance correlation,
    so over many delays the total is biased upwards by about
    :math:`\Delta_\max / n_\mathrm{test}`; report it beside the total when it matters.

    Parameters
    ----------
    features : array_like
        Shape ``(n_samples, n_features)`` at the readout times.
    inputs : array_like
        Input at the same readout times, shape ``(n_samples,)`` or
        ``(n_samples, n_components)``.
    max_delay : int
        Largest delay :math:`\Delta_\max`, in readout samples.
    component : int
        Input column to remember.
    **readout
        ``washout``, ``split``, ``selection``, ``alphas``, ``rcond`` of
        :func:`ridge_readout`.

    Returns
    -------
    MemoryCapacity
        ``total``, ``per_delay`` (:math:`\rho^2`, NaN counted as 0) and ``delays``.
    """
    u = _matrix("inputs", inputs)
    if isinstance(max_delay, bool) or not isinstance(max_delay, (int, np.integer)):
        raise ParameterError(f"max_delay={max_delay!r}; expected an integer >= 1")
    if max_delay < 1:
        raise ParameterError(f"max_delay={max_delay!r}; expected an integer >= 1")
    if not (isinstance(component, (int, np.integer)) and 0 <= component < u.shape[1]):
        raise ParameterError(
            f"component={component!r}; inputs has {u.shape[1]} components"
        )
    names = [str(i) for i in range(u.shape[1])]
    battery = TaskBattery(
        [Task("memory", int(component), delay=d) for d in range(1, max_delay + 1)],
        names,
    )
    x = _matrix("features", features)
    if x.shape[0] != u.shape[0]:
        raise DataError(
            f"features has {x.shape[0]} rows but inputs has {u.shape[0]}; both must "
            "be sampled at the same readout times"
        )
    scores = ridge_readout(x, battery.targets(u), tasks=battery, **readout)
    rho2 = np.nan_to_num(scores["correlation"].values ** 2, nan=0.0)
    return MemoryCapacity(float(rho2.sum()), rho2, np.arange(1, max_delay + 1))


# ------------------------------------------------------------------ spiking features
def _time_value(name, value):
    """A time as float seconds (any sign): a number or a Brian2 time quantity."""
    if getattr(value, "dim", None) is not None:
        if str(value.dim) != "s":
            raise UnitError(f"{name}={value!r} is not a time; expected e.g. 0*ms")
        value = np.asarray(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}={value!r}; expected a time in seconds") from None
    if not math.isfinite(x):
        raise ParameterError(f"{name}={value!r}; expected a finite time")
    return x


def filtered_spike_trains(
    spike_indices,
    spike_times,
    n_neurons,
    *,
    tau,
    sample_interval,
    n_samples,
    t_start=0.0,
):
    r"""Exponentially filtered spike trains sampled at the readout times.

    .. math:: r_i(t_k) = \sum_{s:\ i_s = i,\ t_s \le t_k} e^{-(t_k - t_s)/\tau},
              \qquad t_k = t_\mathrm{start} + k\,\Delta t_\mathrm{r}

    Each spike adds 1 (divide by :math:`\tau` for a rate in Hz). A spike at exactly
    a sample time counts in that sample (to a relative tolerance of 1e-9 of the
    interval), the convention for spike times and monitor samples on one clock.
    Computed by scattering each spike onto its first sample and running the
    recursion :math:`r(t_{k+1}) = e^{-\Delta t_\mathrm{r}/\tau} r(t_k) + a_{k+1}`.

    Parameters
    ----------
    spike_indices : array_like of int
        Neuron index of each spike (e.g. ``SpikeMonitor.i``).
    spike_times : array_like
        Time of each spike, seconds as floats, or a Brian2 time quantity.
    n_neurons : int
        Number of neurons (columns).
    tau : float or Quantity
        Filter time constant (seconds, or a Brian2 time).
    sample_interval : float or Quantity
        Time between readout samples (seconds, or a Brian2 time).
    n_samples : int
        Number of readout samples.
    t_start : float or Quantity
        Time of the first sample (seconds); spikes before it still contribute.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_samples, n_neurons)``, float64.
    """
    tau = as_seconds("tau", tau)
    interval = as_seconds("sample_interval", sample_interval)
    t_start = _time_value("t_start", t_start)
    for name, value in (("n_neurons", n_neurons), ("n_samples", n_samples)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ParameterError(f"{name}={value!r}; expected an integer >= 1")
        if value < 1:
            raise ParameterError(f"{name}={value!r}; expected an integer >= 1")
    if getattr(spike_times, "dim", None) is not None and str(spike_times.dim) != "s":
        raise UnitError(f"spike_times has unit {spike_times.dim}; expected a time")
    times = np.asarray(spike_times, dtype=float).ravel()
    indices = np.asarray(spike_indices).ravel()
    if indices.shape != times.shape:
        raise DataError(
            f"spike_indices has {indices.size} entries but spike_times {times.size}"
        )
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise DataError(f"spike_indices has dtype {indices.dtype}; expected integers")
    if indices.size and (indices.min() < 0 or indices.max() >= n_neurons):
        raise DataError(
            f"spike_indices span {indices.min()}..{indices.max()}; expected "
            f"0..{n_neurons - 1}"
        )
    if not np.all(np.isfinite(times)):
        raise DataError("spike_times contains NaN or inf")

    position = (times - t_start) / interval
    first = np.maximum(np.ceil(position - 1e-9), 0).astype(np.int64)
    keep = first < n_samples
    first, indices, times = first[keep], indices[keep].astype(np.int64), times[keep]
    amount = np.exp(-(t_start + first * interval - times) / tau)
    jumps = np.bincount(
        first * n_neurons + indices, weights=amount, minlength=n_samples * n_neurons
    ).reshape(n_samples, n_neurons)
    decay = math.exp(-interval / tau)
    return scipy.signal.lfilter([1.0], [1.0, -decay], jumps, axis=0)


def state_features(states, stride=1, offset=0):
    """Features from recorded state variables such as membrane potentials.

    Parameters
    ----------
    states : array_like
        Shape ``(n_neurons, n_times)``, the layout of a Brian2 ``StateMonitor``
        variable (``monitor.v``); a quantity is taken in SI units (volts).
    stride, offset : int
        Keep recorded times ``offset, offset + stride, ...`` (recording every step
        and reading out every ``stride`` steps).

    Returns
    -------
    numpy.ndarray
        Shape ``(n_samples, n_neurons)``, float64, C-contiguous.
    """
    a = np.asarray(states, dtype=float)
    if a.ndim != 2:
        raise DataError(f"states has shape {a.shape}; expected (n_neurons, n_times)")
    for name, value, low in (("stride", stride, 1), ("offset", offset, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ParameterError(f"{name}={value!r}; expected an integer >= {low}")
        if value < low:
            raise ParameterError(f"{name}={value!r}; expected an integer >= {low}")
    out = np.ascontiguousarray(a[:, offset::stride].T)
    if not np.all(np.isfinite(out)):
        raise DataError("states contains NaN or inf")
    return out
