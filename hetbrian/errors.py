"""Exception types raised by hetbrian, one per family of failure."""

__all__ = [
    "HetbrianError",
    "ParameterError",
    "UnitError",
    "SpecError",
    "DataError",
    "EngineError",
    "ProtocolError",
]


class HetbrianError(Exception):
    """Base class of every error raised on purpose by hetbrian."""


class ParameterError(HetbrianError, ValueError):
    """An argument has a value outside what the function accepts.

    The message names the argument, the value received and what was expected.
    """


class UnitError(HetbrianError, TypeError):
    """An argument has no physical unit, or the wrong one."""


class SpecError(HetbrianError, ValueError):
    """A network description is inconsistent (sizes, names, batching)."""


class DataError(HetbrianError, ValueError):
    """Input data (features, targets, tables) are malformed: NaN, wrong shape, ..."""


class EngineError(HetbrianError, RuntimeError):
    """A simulation engine cannot build or run the requested network."""


class ProtocolError(HetbrianError, ValueError):
    """A protocol file is invalid; the message names the key path."""
