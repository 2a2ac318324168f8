"""Benchmark of the multi-task ridge readout: one shared fit against per-task fits.

Figures (``run()`` returns them; :func:`format_table` lays them out):

- ``ratio_all_over_one``: time to fit 500 tasks at once over the time to fit one
  (goal: at most 2; the products of the features with 500 targets put the floor
  near 1.7 at this shape);
- ``ratio_all_over_one_scored``: the same for :func:`hetbrian.readout.ridge_readout`
  (75/25 split in time, fit on the first 3750 rows, test scores on the last 1250);
- ``ratio_one_by_one_over_all``: 500 tasks fitted one by one over all at once (the
  one-by-one time is extrapolated from a measured subset, stated in the figures);
- ``ratio_sklearn_over_gcv`` and ``ratio_sklearn_over_loo``: scikit-learn's
  ``RidgeCV(alphas, alpha_per_target=True)`` over this readout with ``selection="gcv"``
  and ``"loo"`` (the criterion scikit-learn uses) on the same data and alphas;
- ``max_coef_diff_loo``: largest coefficient difference between ``selection="loo"``
  and ``RidgeCV``, relative to the largest coefficient; ``alpha_agreement_*``: the
  fraction of tasks given the same strength.

Shapes: 400 features, 5000 samples, 500 tasks (``quick``: 100, 1000, 100). Timings are
the best of a few interleaved repeats with :func:`time.perf_counter`; the machine's
BLAS, its thread count and the load average are recorded beside them, since on a
shared machine other processes can inflate any single timing several-fold.
"""

from __future__ import annotations

import logging
import os
import platform
import time

import numpy as np

from hetbrian.bench import format_result
from hetbrian.readout import RidgeReadout, ridge_readout

__all__ = ["run", "format_table"]

log = logging.getLogger(__name__)


def _problem(n_samples, n_features, n_tasks, seed=0):
    """Correlated features (condition number about 1e3) and noisy linear targets."""
    rng = np.random.default_rng(seed)
    spectrum = np.logspace(0, -3, n_features)
    q, _ = np.linalg.qr(rng.standard_normal((n_features, n_features)))
    x = (rng.standard_normal((n_samples, n_features)) * spectrum) @ q.T + 0.5
    w = rng.standard_normal((n_features, n_tasks)) / np.sqrt(n_features)
    clean = x @ w
    noise = np.logspace(-3, 0, n_tasks) * clean.std(axis=0)
    y = clean + rng.standard_normal((n_samples, n_tasks)) * noise
    return x, y


def _best_interleaved(functions, repeats):
    """Best time of each function, the repeats interleaved so drift hits all alike."""
    best = [np.inf] * len(functions)
    for _ in range(repeats):
        for i, fn in enumerate(functions):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def _environment():
    env = {
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", ""),
        "load_average_1min": round(os.getloadavg()[0], 2),  # at the end of the run
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # threadpoolctl comes with scikit-learn; optional here
        return env
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            env["blas"] = (
                f"{info.get('internal_api')} {info.get('version')} "
                f"{info.get('architecture')} threads={info.get('num_threads')}"
            )
            break
    return env


def run(quick: bool = False, blas_threads: int | None = 1) -> dict:
    """Measure the readout at 400 features, 5000 samples, 500 tasks; return the figures.

    Parameters
    ----------
    quick : bool
        Small shapes (1000 samples, 100 features, 100 tasks) for a smoke run.
    blas_threads : int or None
        Limit BLAS to this many threads while measuring (default 1, through
        threadpoolctl when installed): on a shared machine a multi-threaded BLAS
        slows down erratically when another process takes a core. ``None`` leaves
        the BLAS as it is.

    Returns
    -------
    dict
        ``shape``, ``seconds`` (raw timings), ``figures`` (ratios and differences),
        ``environment`` and ``notes``.
    """
    if blas_threads is None:
        return _run(quick)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it BLAS is not limited
        result = _run(quick)
        result["notes"].append("threadpoolctl not installed: BLAS threads not limited")
        return result
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        result = _run(quick)
    result["environment"]["blas_threads_limit"] = blas_threads
    return result


def _run(quick):
    n, p, t = (1000, 100, 100) if quick else (5000, 400, 500)
    repeats = 2 if quick else 5
    n_single = 10 if quick else 20
    x, y = _problem(n, p, t)
    scale = np.linalg.norm(x - x.mean(axis=0)) ** 2 / p
    alphas = np.logspace(-6, 1, 15) * scale
    gcv = RidgeReadout(alphas=alphas, selection="gcv")
    loo = RidgeReadout(alphas=alphas, selection="loo")
    seconds, figures, notes = {}, {}, []

    log.info("readout bench: n=%d p=%d tasks=%d", n, p, t)
    seconds["gcv_one_task"], seconds["gcv_all_tasks"] = _best_interleaved(
        [lambda: gcv.fit(x, y[:, :1]), lambda: gcv.fit(x, y)], repeats
    )
    t0 = time.perf_counter()
    for j in range(n_single):
        gcv.fit(x, y[:, j : j + 1])
    seconds["gcv_one_by_one_all_tasks"] = (time.perf_counter() - t0) * t / n_single
    notes.append(f"one-by-one time extrapolated from {n_single} of {t} tasks")
    fit_gcv = gcv.fit(x, y)
    t0 = time.perf_counter()
    fit_loo = loo.fit(x, y)
    seconds["loo_all_tasks"] = time.perf_counter() - t0

    def scored(k):
        return ridge_readout(x, y[:, :k], alphas=alphas)

    seconds["ridge_readout_one_task"], seconds["ridge_readout_all_tasks"] = (
        _best_interleaved([lambda: scored(1), lambda: scored(t)], repeats)
    )

    figures["ratio_all_over_one"] = seconds["gcv_all_tasks"] / seconds["gcv_one_task"]
    figures["ratio_all_over_one_scored"] = (
        seconds["ridge_readout_all_tasks"] / seconds["ridge_readout_one_task"]
    )
    figures["ratio_one_by_one_over_all"] = (
        seconds["gcv_one_by_one_all_tasks"] / seconds["gcv_all_tasks"]
    )
    try:
        from sklearn.linear_model import Ridge, RidgeCV
    except ImportError:  # scikit-learn is a test dependency, not a runtime one
        notes.append("scikit-learn not installed: no comparison with RidgeCV")
    else:
        reference = RidgeCV(alphas=alphas, alpha_per_target=True)
        t0 = time.perf_counter()
        reference.fit(x, y)
        seconds["sklearn_ridgecv_all_tasks"] = time.perf_counter() - t0
        coef = reference.coef_.T
        top = np.abs(coef).max()
        same_loo = fit_loo.alpha == reference.alpha_
        same_gcv = fit_gcv.alpha == reference.alpha_
        figures["ratio_sklearn_over_gcv"] = (
            seconds["sklearn_ridgecv_all_tasks"] / seconds["gcv_all_tasks"]
        )
        figures["ratio_sklearn_over_loo"] = (
            seconds["sklearn_ridgecv_all_tasks"] / seconds["loo_all_tasks"]
        )
        figures["max_coef_diff_loo"] = float(np.abs(fit_loo.weights - coef).max() / top)
        figures["alpha_agreement_loo"] = float(same_loo.mean())
        figures["alpha_agreement_gcv"] = float(same_gcv.mean())
        if same_gcv.any():
            diff = np.abs(fit_gcv.weights - coef)[:, same_gcv].max() / top
            figures["max_coef_diff_gcv_same_alpha"] = float(diff)
        alpha = float(alphas[7])
        fixed = RidgeReadout(alphas=[alpha]).fit(x, y)
        ridge = Ridge(alpha=alpha, solver="svd").fit(x, y)
        figures["max_coef_diff_fixed_alpha"] = float(
            np.abs(fixed.weights - ridge.coef_.T).max() / np.abs(ridge.coef_).max()
        )
    return {
        "shape": {"samples": n, "features": p, "tasks": t, "alphas": alphas.size},
        "seconds": seconds,
        "figures": figures,
        "environment": _environment(),
        "notes": notes,
    }


def format_table(result: dict) -> str:
    """Lay out the result of :func:`run` as a plain-text table (for the CLI)."""
    title = (
        "readout benchmark: {samples} samples x {features} features, {tasks} tasks, "
        "{alphas} alphas".format(**result["shape"])
    )
    return format_result(title, result)
