"""Benchmarks run by ``hetbrian bench NAME``: each compares two things in one run."""

__all__ = ["format_result"]


def format_result(title, result, width=34):
    """Plain-text table of a benchmark result (for the command line).

    Parameters
    ----------
    title : str
        First line.
    result : dict
        With ``seconds``, ``figures``, ``environment`` and ``notes``; optional
        ``goals``.
    width : int
        Width of the name column.
    """
    lines = [title, "", f"{'timing':<{width}} {'seconds':>10}"]
    lines += [f"{k:<{width}} {v:>10.4f}" for k, v in result["seconds"].items()]
    lines += ["", f"{'figure':<{width}} {'value':>10}"]
    lines += [f"{k:<{width}} {v:>10.4g}" for k, v in result["figures"].items()]
    if result.get("goals"):
        lines += [""] + [f"goal: {k} {v}" for k, v in result["goals"].items()]
    lines += [""] + [f"{k}: {v}" for k, v in result["environment"].items()]
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)
