"""Results a person can read: summary tables and standard figures of protocols.

The **score** of a cell is the mean over tasks of ``r2_clipped`` (test-block R²
clipped to [0, 1]). Confidence intervals are 95 % Student-t intervals over seeds.
``delta_vs_hom`` is the paired difference of scores, cell minus ``cv = 0`` of the same
seed, with its interval over seeds. "Heterogeneous beats homogeneous"
(``frac_tasks_het>hom``) compares, for one seed, every task's ``r2`` at a ``cv > 0``
with the same task at ``cv = 0`` (same connectivity and input weights: the networks of
one seed differ only in the heterogeneous parameter).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import scipy.stats
import xarray as xr

from hetbrian.errors import DataError

__all__ = ["cell_scores", "summary_table", "format_table", "plot_results"]


def cell_scores(dataset):
    """Mean score over tasks per cell (all dimensions but ``task``)."""
    return dataset["r2_clipped"].mean("task")


def _ci(values):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.nan, np.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, np.nan
    half = scipy.stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1)
    return mean, float(half / np.sqrt(values.size))


def _condition_dims(dataset):
    return [d for d in dataset["r2_clipped"].dims if d not in ("task", "seed")]


def summary_table(dataset):
    """Rows of the protocol's claim.

    Returns
    -------
    (list of str, list of list, list of str)
        Column names, rows, and extra lines (the protocol-specific finding).
    """
    if "r2_clipped" not in dataset:
        raise DataError("the dataset has no r2_clipped variable: not a protocol result")
    scores = cell_scores(dataset)
    dims = _condition_dims(dataset)
    columns = dims + ["score", "ci95", "n_seeds"]
    has_cv = "cv" in dims and 0.0 in [float(v) for v in dataset["cv"].values]
    if has_cv:
        columns += ["delta_vs_hom", "delta_ci95", "frac_tasks_het>hom"]
    if "participation_ratio" in dataset:
        columns.append("PR")
    if "alignment" in dataset:
        columns.append("alignment")
    if "firing_rate" in dataset:
        columns.append("rate_Hz")
    rows = []
    for combo in itertools.product(*[dataset[d].values for d in dims]):
        sel = dict(zip(dims, combo, strict=True))
        per_seed = scores.sel(sel).values
        mean, half = _ci(per_seed)
        row = [*_fmt_coords(combo), mean, half, int(np.isfinite(per_seed).sum())]
        if has_cv:
            row += [*_paired_difference(scores, sel), _beats_homogeneous(dataset, sel)]
        if "participation_ratio" in dataset:
            row.append(_nanmean(dataset["participation_ratio"].sel(sel)))
        if "alignment" in dataset:
            row.append(_nanmean(dataset["alignment"].sel(sel)))
        if "firing_rate" in dataset:
            row.append(_nanmean(dataset["firing_rate"].sel(sel)))
        rows.append(row)
    extra = _finding(dataset, scores, dims)
    return columns, rows, extra


def _nanmean(values):
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else np.nan


def _fmt_coords(combo):
    return [v.item() if hasattr(v, "item") else v for v in combo]


def _paired_difference(scores, sel):
    """Mean and CI over seeds of score(cell) - score(cv = 0, same seed)."""
    if float(sel["cv"]) == 0:
        return np.nan, np.nan
    reference = {k: v for k, v in sel.items() if k != "cv"}
    hom = scores.sel(reference).sel(cv=0.0)
    if "profile" in hom.dims:  # cv = 0 is one network whatever the family
        hom = hom.mean("profile")
    return _ci(scores.sel(sel).values - hom.values)


def _beats_homogeneous(dataset, sel):
    if float(sel["cv"]) == 0:
        return np.nan
    reference = dict(sel, cv=0.0)
    # the profile axis does not matter at cv = 0: every family is homogeneous there
    het = dataset["r2"].sel(sel)
    try:
        hom = dataset["r2"].sel(reference)
    except KeyError:
        return np.nan
    valid = np.isfinite(het.values) & np.isfinite(hom.values)
    if not valid.any():
        # the homogeneous cell of this family may be missing: take any family's
        if "profile" in reference:
            reference.pop("profile")
            hom = dataset["r2"].sel(reference).mean("profile")
            valid = np.isfinite(het.values) & np.isfinite(hom.values)
        if not valid.any():
            return np.nan
    return float(np.mean((het.values > hom.values)[valid]))


def _finding(dataset, scores, dims):
    kind = dataset.attrs.get("protocol_kind", "")
    lines = []
    if kind == "size" and {"n_neurons", "cv"} <= set(dims):
        mean = scores.mean("seed")
        others = [d for d in dims if d not in ("n_neurons", "cv")]
        if others:
            mean = mean.mean(others)
        sizes = [int(n) for n in dataset["n_neurons"].values]
        largest = max(sizes)
        hom = float(mean.sel(n_neurons=largest, cv=0.0))
        lines.append(f"largest homogeneous network: N = {largest}, score {hom:.4f}")
        for cv in dataset["cv"].values:
            if float(cv) == 0:
                continue
            matching = [
                n for n in sorted(sizes) if float(mean.sel(n_neurons=n, cv=cv)) >= hom
            ]
            if matching:
                lines.append(
                    f"smallest heterogeneous network (cv = {float(cv):g}) matching it: "
                    f"N = {matching[0]} ({largest / matching[0]:.1f}x fewer neurons)"
                )
            else:
                lines.append(
                    f"no heterogeneous network (cv = {float(cv):g}) matches it"
                )
    if kind == "recurrence" and {"gain", "cv"} <= set(dims):
        mean = scores.mean("seed")
        has_zero = 0.0 in [float(g) for g in dataset["gain"].values]
        for cv in dataset["cv"].values:
            at_cv = mean.sel(cv=cv)
            low, high = float(at_cv.min()), float(at_cv.max())
            line = (
                f"cv = {float(cv):g}: score over all recurrent settings {low:.4f} to "
                f"{high:.4f} (spread {high - low:.4f})"
            )
            if has_zero:
                removed = float(at_cv.sel(gain=0.0).mean())
                line += f"; without recurrence (J = 0) {removed:.4f}"
            lines.append(line)
    if kind == "data_efficiency" and {"train_duration", "cv"} <= set(dims):
        mean = scores.mean("seed")
        durations = list(dataset["train_duration"].values)
        longest = durations[-1]
        reference = float(mean.sel(cv=0.0, train_duration=longest))
        lines.append(
            f"homogeneous score with the longest training ({longest}): {reference:.4f}"
        )
        for cv in dataset["cv"].values:
            reached = [
                d
                for d in durations
                if float(mean.sel(cv=cv, train_duration=d)) >= reference
            ]
            lines.append(
                f"cv = {float(cv):g} first matches it with {reached[0]} of training"
                if reached
                else f"cv = {float(cv):g} does not match it"
            )
    if kind == "mechanisms" and "participation_ratio" in dataset:
        s = scores.values.ravel()
        pr = dataset["participation_ratio"].values.ravel()
        al = dataset["alignment"].mean("task").values.ravel()
        ok = np.isfinite(s) & np.isfinite(pr) & np.isfinite(al)
        if ok.sum() > 2:
            r_pr = scipy.stats.spearmanr(s[ok], pr[ok]).statistic
            r_al = scipy.stats.spearmanr(s[ok], al[ok]).statistic
            lines.append(
                f"Spearman correlation across cells of score with participation "
                f"ratio: {r_pr:.3f}; with target alignment: {r_al:.3f}"
            )
    if "cv" in dims:
        mean = scores.mean([d for d in scores.dims if d not in ("cv",)])
        best = float(mean.idxmax("cv"))
        lines.append(
            f"score averaged over the other axes and seeds is highest at cv = {best:g}"
            f" ({float(mean.max()):.4f}; cv = 0: {float(mean.sel(cv=0.0)):.4f})"
            if 0.0 in [float(v) for v in dataset["cv"].values]
            else f"score is highest at cv = {best:g}"
        )
    missing = json.loads(dataset.attrs.get("missing_cells_json", "[]"))
    if missing:
        lines.append(f"{len(missing)} cells were unreachable and are missing (NaN)")
    return lines


def format_table(columns, rows, extra=()):
    """Plain-text table."""

    def cell(value):
        if isinstance(value, float):
            return "nan" if not np.isfinite(value) else f"{value:.4f}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(str(c)), *(len(r[i]) for r in text_rows)) if text_rows else len(c)
        for i, c in enumerate(columns)
    ]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in text_rows
    ]
    lines += [""] + list(extra) if extra else []
    return "\n".join(lines)


def _line_plot(ax, dataset, scores, x, hue):
    xs = dataset[x].values
    hues = dataset[hue].values if hue else [None]
    for h in hues:
        sub = scores.sel({hue: h}) if hue else scores
        rest = [d for d in sub.dims if d not in (x, "seed")]
        if rest:
            sub = sub.mean(rest)
        stats = [_ci(sub.sel({x: v}).values) for v in xs]
        mean = np.array([m for m, _ in stats])
        half = np.nan_to_num(np.array([e for _, e in stats]))
        xv = np.arange(len(xs)) if xs.dtype.kind in "US" else xs.astype(float)
        ax.errorbar(xv, mean, yerr=half, marker="o", capsize=3, label=str(h))
        if xs.dtype.kind in "US":
            ax.set_xticks(xv, xs)
    ax.set_xlabel(x)
    if x == "n_neurons":
        ax.set_xscale("log", base=2)
    ax.set_ylabel("mean R² over tasks (clipped)")
    if hue:
        ax.legend(title=hue, fontsize="small")


def plot_results(dataset, out):
    """Write the protocol's standard figures as PNG and PDF.

    Figures: score against each sweep axis (lines per family or per cv), and a heat
    map of the score per task family against the cv (or the first axis).

    Returns
    -------
    list of Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scores = cell_scores(dataset)
    dims = _condition_dims(dataset)
    name = dataset.attrs.get("protocol_name", "results")
    written = []

    def save(fig, stem):
        for ext in ("png", "pdf"):
            path = out / f"{name}_{stem}.{ext}"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            written.append(path)
        plt.close(fig)

    for x in dims:
        hue = None
        for candidate in ("profile", "cv"):
            if candidate in dims and candidate != x:
                hue = candidate
                break
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        _line_plot(ax, dataset, scores, x, hue)
        ax.set_title(f"{name}: score vs {x}")
        save(fig, f"score_vs_{x}")
    if "family" in dataset.coords and dims:
        x = "cv" if "cv" in dims else dims[0]
        by_family = dataset["r2_clipped"].groupby("family").mean("task")
        rest = [d for d in by_family.dims if d not in ("family", x)]
        table = by_family.mean(rest).transpose("family", x)
        fig, ax = plt.subplots(figsize=(6, 3.8))
        image = ax.imshow(table.values, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(table.sizes["family"]), table["family"].values)
        ax.set_xticks(range(table.sizes[x]), [f"{v}" for v in table[x].values])
        ax.set_xlabel(x)
        ax.set_title(f"{name}: mean R² per task family")
        fig.colorbar(image, ax=ax, label="R² (clipped)")
        save(fig, "task_families")
    if "participation_ratio" in dataset and dims:
        # one point per cell: does the score follow dimensionality or alignment?
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
        colour = dataset["cv"] if "cv" in dataset.coords else None
        for ax, var in zip(axes, ("participation_ratio", "alignment"), strict=True):
            values = dataset[var]
            if "task" in values.dims:
                values = values.mean("task")
            x_values = xr.broadcast(values, scores)[0].transpose(*scores.dims)
            c = None
            if colour is not None:
                c = xr.broadcast(colour, scores)[0].transpose(*scores.dims)
                c = c.values.ravel()
            points = ax.scatter(
                x_values.values.ravel(),
                scores.values.ravel(),
                c=c,
                s=14,
                cmap="viridis",
            )
            ax.set_xlabel(var.replace("_", " "))
        axes[0].set_ylabel("mean R² over tasks (clipped)")
        if colour is not None:
            fig.colorbar(points, ax=axes, label="cv")
        fig.suptitle(f"{name}: score against state dimensionality and alignment")
        save(fig, "mechanisms")
    return written
