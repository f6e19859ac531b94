"""Render settings, declared once: the CLI and the API build them, the featurevis job passes
them to :func:`~circuitatlas.analysis.featurevis.render.render` and keys its images by them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from circuitatlas import checks
from circuitatlas.errors import InvalidInput

__all__ = ["RenderSettings"]

_VERSION = 1  # bump when the rendering changes what a key's image looks like


@dataclass(frozen=True)
class RenderSettings:
    """``steps`` of Adam at ``lr`` on ``size`` px images in the ``param`` parameterisation, from ``seed``."""

    steps: int = 512
    size: int = 128
    lr: float = 0.05
    seed: int = 0
    param: str = "fft"

    def __post_init__(self) -> None:
        # the ranges of the CLI's options (circuitatlas.cli.analyses.featurevis_cmd), held here for the API too
        object.__setattr__(self, "steps", checks.whole("steps", self.steps, 1))
        object.__setattr__(self, "size", checks.whole("size (px)", self.size, 8))
        object.__setattr__(self, "lr", checks.real("lr", self.lr, 0.0, above=True))
        object.__setattr__(self, "seed", checks.whole("seed", self.seed, 0))
        if self.param not in ("fft", "pixel"):
            raise InvalidInput(f"param must be 'fft' or 'pixel', not {self.param!r}")

    def render_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``render``/``render_units``."""
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What an image's content key records of how it was made."""
        return {**asdict(self), "objective": "channel", "version": _VERSION}
