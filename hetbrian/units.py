"""Quantities written as text ("20 ms", "0.5 nA") and back."""

from __future__ import annotations

import re

import numpy as np
from brian2 import Quantity, get_unit
from brian2.units import allunits
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions

from hetbrian.errors import UnitError

__all__ = ["parse_quantity", "format_quantity", "UNITS"]

#: Unit names understood in text, from Brian2's own table (``ms``, ``mV``, ``nA``,
#: ``Mohm``, ``Hz``, ...).
UNITS = {str(u): u for u in allunits.all_units}
UNITS.update({repr(u): u for u in allunits.all_units})

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


def parse_quantity(text, expected=None, where="value"):
    """Parse ``"20 ms"`` (or a plain number for a dimensionless value).

    Parameters
    ----------
    text : str or float or Quantity
        The value as written.
    expected : Unit or 1, optional
        Unit whose dimensions the value must have.
    where : str
        Name or key path used in error messages.

    Returns
    -------
    Quantity or float

    Examples
    --------
    >>> from brian2 import ms
    >>> parse_quantity("20 ms", ms)
    20. * msecond
    """
    if isinstance(text, Quantity):
        value = text
    elif isinstance(text, bool):
        raise UnitError(f"{where}={text!r}; expected a number or a quantity")
    elif isinstance(text, int | float):
        value = float(text)
    elif isinstance(text, str):
        match = _QUANTITY.match(text)
        if not match:
            raise UnitError(
                f"{where}={text!r} is not a quantity; expected a number and a unit "
                "such as '20 ms'"
            )
        number, unit_name = match.groups()
        if not unit_name:
            value = float(number)
        elif unit_name in UNITS:
            value = float(number) * UNITS[unit_name]
        else:
            raise UnitError(f"{where}={text!r}: unknown unit {unit_name!r}")
    else:
        raise UnitError(f"{where}={text!r}; expected a number or a quantity")
    if expected is not None:
        want = get_dimensions(expected)
        got = get_dimensions(value) if isinstance(value, Quantity) else DIMENSIONLESS
        is_zero = not isinstance(value, Quantity) and value == 0
        if got != want and not is_zero:
            if want is DIMENSIONLESS:
                raise UnitError(f"{where}={text!r}; expected a plain number")
            raise UnitError(
                f"{where}={text!r} has dimensions {got}; expected a quantity in "
                f"{get_unit(want)!r} such as '1 {get_unit(want)!r}'"
            )
        if is_zero and want is not DIMENSIONLESS:
            value = 0.0 * get_unit(want)
    return value


def format_quantity(value):
    """Text form of a quantity that :func:`parse_quantity` reads back."""
    if not isinstance(value, Quantity) or get_dimensions(value) is DIMENSIONLESS:
        return repr(float(np.asarray(value)))
    return str(value).replace("*", "").replace("  ", " ")
