"""Numbers given at the library boundary, checked with a one-line InvalidInput: the ranges the CLI's
options declare (``circuitatlas.cli.ranges``) held again where the API takes the value, so a
caller of the API is refused what the CLI refuses. NaN and infinity are never a count, a size
or a bound.

>>> whole("steps", 3.0), real("lr", 1)
(3, 1.0)
>>> real("min_rel", float("nan"), 0, 1)
Traceback (most recent call last):
...
circuitatlas.errors.InvalidInput: min_rel must be a finite number, not nan
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

from circuitatlas.errors import InvalidInput

__all__ = ["whole", "real", "fraction", "seconds", "choice"]


def whole(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int: a whole number (3 or 3.0, not True or 3.5) in [``low``, ``high``]."""
    integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise InvalidInput(f"{name} must be a whole number, not {value!r}")
    number = int(value)
    _within(name, number, low, high)
    return number


def real(name: str, value: Any, low: float | None = None, high: float | None = None,
         above: bool = False) -> float:
    """``value`` as a finite float in [``low``, ``high``] (with ``above``: greater than ``low``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"{name} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{name} must be a finite number, not {number}")
    if above and low is not None and number <= low:
        raise InvalidInput(f"{name} must be greater than {low:g}, not {number:g}")
    _within(name, number, low, high)
    return number


def fraction(name: str, value: Any) -> float:
    """A fraction of the strongest edge, in [0, 1]."""
    return real(name, value, 0.0, 1.0)


def seconds(name: str, value: Any) -> float | None:
    """A timeout: None (no limit of our own) or a positive, finite number of seconds."""
    return None if value is None else real(name, value, 0.0, above=True)


def _within(name: str, number: float, low: float | None, high: float | None) -> None:
    if (low is None or number >= low) and (high is None or number <= high):
        return
    if low is not None and high is not None:
        raise InvalidInput(f"{name} must be between {low:g} and {high:g}, not {number:g}")
    bound = f"at least {low:g}" if low is not None else f"at most {high:g}"
    raise InvalidInput(f"{name} must be {bound}, not {number:g}")


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    """``value`` when it is one of ``options`` (listed in the error in the order given)."""
    if value not in options:
        raise InvalidInput(f"{name} must be one of {list(options)}, not {value!r}")
    return value
