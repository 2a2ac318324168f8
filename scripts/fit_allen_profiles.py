"""Fit membrane-time-constant distributions to the Allen Cell Types tables.

Writes the fitted figures (parameters, bootstrap intervals, AIC and KS ranking; no
raw data) as a small CSV table, twice with the same content: ``data/`` for readers of
the repository and ``hetbrian/data/`` where it installs with the package and is read
by :func:`hetbrian.biology.measured_profile`. Optionally draws the figure of
``docs/biology.md``.

Inputs, one of:

- ``--data-dir DIR`` (default ``$HETBRIAN_ALLEN_DATA``, else
  ``../shared/data/allen_cell_types`` beside the repository): the reference tables
  ``mouse_cell_metrics.csv``, ``human_cell_metrics.csv`` (labelled by dendrite type)
  and ``ephys_features.csv`` (mouse and human cells without labels, fitted as species
  ``mixed``, class ``all``);
- ``--from-api``: mouse and human cells downloaded from the Allen Brain Map API into
  the local cache (needs the network).

Usage::

    python scripts/fit_allen_profiles.py --n-boot 1000 --seed 0 \\
        --figure docs/figures/biology_tau.png
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

from hetbrian import biology

logger = logging.getLogger("fit_allen_profiles")

REPO = Path(__file__).resolve().parents[1]
TABLE_NAME = "allen_tau_fits.csv"
#: Reference tables, the species of their cells, and whether they are labelled.
REFERENCE_TABLES = (
    ("mouse_cell_metrics.csv", "mouse"),
    ("human_cell_metrics.csv", "human"),
    ("ephys_features.csv", "mixed"),
)


def default_data_dir():
    """``$HETBRIAN_ALLEN_DATA``, else ``../shared/data/allen_cell_types``."""
    env = os.environ.get("HETBRIAN_ALLEN_DATA")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data" / "allen_cell_types"


def load_tables(data_dir, from_api):
    """The cell tables to fit, as ``CellTable`` objects."""
    if from_api:
        return [biology.load_allen_cell_types(s) for s in ("mouse", "human")]
    data_dir = Path(data_dir)
    tables = []
    for name, species in REFERENCE_TABLES:
        path = data_dir / name
        if not path.is_file():
            logger.warning("%s not found; skipped", path)
            continue
        tables.append(biology.load_cell_table(path, species=species))
    if not tables:
        raise SystemExit(f"no reference table found in {data_dir}")
    return tables


def draw_figure(tables, fits, path, seed):
    """Measured tau of the largest table beside a lognormal profile at its fit."""
    table = max(tables, key=len)
    measured = table.values("membrane_tau")
    species = table.species_names[0] if len(table.species_names) == 1 else "all"
    group = fits[(species, "all")]
    best = group[0]
    normal = next(f for f in group if f.family == "normal")
    profile = biology.measured_profile(
        "lognormal", cell_class="all", species=species, fits=group
    )
    model = profile.sample(measured.size, np.random.default_rng(seed))
    distance = biology.distribution_distance(model, measured)
    logger.info("figure: lognormal profile vs measured: %s", distance)
    fig = biology.plot_distributions(
        measured,
        {"lognormal profile": model},
        fits=(best, normal) if best.family != "lognormal" else (normal,),
        title=(
            f"Membrane time constant, {table.source} ({measured.size} cells): "
            f"KS {distance.ks:.3f}, W1(log) {distance.wasserstein_log:.3f}"
        ),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    logger.info("wrote %s", path)


def main(argv=None):
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--from-api", action="store_true")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-cells", type=int, default=10)
    parser.add_argument(
        "--out",
        type=Path,
        nargs="+",
        default=[REPO / "data" / TABLE_NAME, REPO / "hetbrian" / "data" / TABLE_NAME],
        help="output CSV files (same content in each)",
    )
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    tables = load_tables(args.data_dir, args.from_api)
    rng = np.random.default_rng(args.seed)
    fits = {}
    for table in tables:
        groups = biology.fit_cell_classes(
            table, n_boot=args.n_boot, rng=rng, min_cells=args.min_cells
        )
        for key, group in groups.items():
            if key in fits:
                raise SystemExit(f"group {key} appears in two tables")
            fits[key] = group
            best = group[0]
            logger.info(
                "%s/%s n=%d: best %s (mean %.2f ms, cv %.3f); AIC order %s",
                *key,
                best.n,
                best.family,
                float(best.mean / best.unit),
                best.cv,
                [f.family for f in group],
            )
    for out in args.out:
        biology.write_fit_table(out, fits)
        logger.info("wrote %s", out)
    if args.figure is not None:
        draw_figure(tables, fits, args.figure, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
