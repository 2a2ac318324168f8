"""The ``hetbrian`` command: demo, run, summary, plot, bench."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from importlib import resources
from pathlib import Path

from hetbrian.errors import HetbrianError

BENCHMARKS = {
    "readout": "hetbrian.bench.readout",
    "rerun": "hetbrian.bench.engines:rerun",
    "batch": "hetbrian.bench.engines:batch",
    "throughput": "hetbrian.bench.engines:throughput",
    "train": "hetbrian.bench.training",
}


def _summary(path):
    import xarray as xr

    from hetbrian.report import format_table, summary_table

    with xr.open_dataset(path) as ds:
        if ds.attrs.get("protocol_kind") == "quenched_vs_trained":
            from hetbrian.training.comparison import summary_text

            return summary_text(ds.load())
        columns, rows, extra = summary_table(ds.load())
        name = ds.attrs.get("protocol_name", Path(path).stem)
        claim = ds.attrs.get("claim", "")
    header = f"{name}: {claim}" if claim else name
    return header + "\n\n" + format_table(columns, rows, extra)


def _plot(path, out):
    import xarray as xr

    from hetbrian.report import plot_results

    with xr.open_dataset(path) as ds:
        if ds.attrs.get("protocol_kind") == "quenched_vs_trained":
            from hetbrian.training.comparison import plot_comparison

            return plot_comparison(ds.load(), out)
        return plot_results(ds.load(), out)


def cmd_run(args):
    from hetbrian.protocols import run_protocol

    start = time.perf_counter()
    path = run_protocol(
        args.protocol,
        out=args.out,
        quick=args.quick,
        executor=args.executor,
        progress=not args.quiet,
    )
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    print(_summary(path))


def cmd_demo(args):
    from hetbrian.protocols import run_protocol

    start = time.perf_counter()
    text = resources.files("hetbrian").joinpath("demo.toml").read_text()
    out = Path(args.out)
    path = run_protocol(text, out=out, executor=args.executor, progress=not args.quiet)
    figures = _plot(path, out)
    print(
        f"wrote {path} and {len(figures)} figure files in {out}/ "
        f"in {time.perf_counter() - start:.1f} s"
    )
    print(_summary(path))


def cmd_summary(args):
    print(_summary(args.results))


def cmd_plot(args):
    out = args.out or str(Path(args.results).parent)
    for path in _plot(args.results, out):
        print(path)


def cmd_bench(args):
    import importlib

    target = BENCHMARKS[args.name]
    module_name, _, function = target.partition(":")
    module = importlib.import_module(module_name)
    result = getattr(module, function or "run")(quick=args.quick)
    formatter = getattr(module, "format_table", None)
    print(formatter(result) if formatter else json.dumps(result, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="hetbrian",
        description="Quenched neuronal heterogeneity in Brian2 reservoir networks.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the small embedded heterogeneity protocol")
    demo.add_argument("--out", default="hetbrian-demo", help="output folder")
    demo.add_argument("--executor", default=None, help="serial, local:K or dask:ADDR")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run a protocol file")
    run.add_argument("protocol", help="path of a protocols/*.toml file")
    run.add_argument("--out", default=None, help="output folder")
    run.add_argument("--quick", action="store_true", help="apply the [quick] overrides")
    run.add_argument("--executor", default=None, help="serial, local:K or dask:ADDR")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    summary = sub.add_parser("summary", help="print the claim table of a result")
    summary.add_argument("results", help="a results .nc file")
    summary.set_defaults(func=cmd_summary)

    plot = sub.add_parser("plot", help="write the standard figures of a result")
    plot.add_argument("results", help="a results .nc file")
    plot.add_argument("--out", default=None, help="folder (default: beside results)")
    plot.set_defaults(func=cmd_plot)

    bench = sub.add_parser("bench", help="run a benchmark and print its table")
    bench.add_argument("name", choices=sorted(BENCHMARKS))
    bench.add_argument("--json", default=None, help="also write the figures here")
    bench.add_argument("--quick", action="store_true", help="smaller sizes")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    """Entry point of the ``hetbrian`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        args.func(args)
    except HetbrianError as err:
        print(f"hetbrian: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
