"""Types of the CLI's numeric options: click's ranges, with NaN and infinity refused (click's own
FloatRange lets ``nan`` through: every comparison with it is false). The library checks the
same ranges again (:mod:`circuitatlas.checks`) for callers of the API."""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["FiniteRange", "COUNT", "SEED", "FRACTION", "POSITIVE", "NON_NEGATIVE", "SECONDS"]


class FiniteRange(click.FloatRange):
    """A :class:`click.FloatRange` of finite numbers."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


COUNT = click.IntRange(min=1)  # steps, k, limits, permutations
SEED = click.IntRange(min=0)
FRACTION = FiniteRange(0.0, 1.0)  # of the strongest edge; a selectivity
POSITIVE = FiniteRange(0.0, min_open=True)  # a learning rate, a radius in pixels
NON_NEGATIVE = FiniteRange(0.0)
SECONDS = FiniteRange(0.001)  # the driver rounds a timeout to milliseconds, and 0 would mean none
