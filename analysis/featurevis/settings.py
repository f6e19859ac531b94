"""Render settings, declared once: the CLI and the API build them, the featurevis job passes
them to :func:`~circuitatlas.analysis.featurevis.render.render` and keys its images by them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from circuitatlas import checks
from circuitatlas.analysis.featurevis.param import PARAMETERISATIONS
from circuitatlas.analysis.featurevis.transforms import TRANSFORMS

__all__ = ["RenderSettings", "STARTS"]

STARTS = ("noise", "stimulus")  # where a render starts: shared noise, or the unit's best synthetic stimulus

_VERSION = 2  # bump when the rendering changes what a key's image looks like


@dataclass(frozen=True)
class RenderSettings:
    """``steps`` of Adam at ``lr`` on ``size`` px images in the ``param`` parameterisation, under
    the ``transforms`` preset, each image starting from ``start`` (``seed`` draws the noise).

    The defaults were chosen by ``bench/featurevis_quality.py`` on held-out seeds of two planted
    generators, the zoo and a pretrained MobileNetV2 (README, "Feature visualisation quality"):
    pixels without transforms, started from each unit's best synthetic stimulus, ranked their
    own unit first and beat its best stimulus for every unit measured, where Lucid's Fourier
    parameterisation with jitter, scale and rotation did neither on the Gabor generator.
    """

    steps: int = 512
    size: int = 128
    lr: float = 0.05
    seed: int = 0
    param: str = "pixel"
    transforms: str = "none"
    start: str = "stimulus"

    def __post_init__(self) -> None:
        # the ranges of the CLI's options (circuitatlas.cli.analyses.featurevis_cmd), held here for the API too
        object.__setattr__(self, "steps", checks.whole("steps", self.steps, 1))
        object.__setattr__(self, "size", checks.whole("size (px)", self.size, 8))
        object.__setattr__(self, "lr", checks.real("lr", self.lr, 0.0, above=True))
        object.__setattr__(self, "seed", checks.whole("seed", self.seed, 0))
        checks.choice("param", self.param, sorted(PARAMETERISATIONS))
        checks.choice("transforms", self.transforms, sorted(TRANSFORMS))
        checks.choice("start", self.start, STARTS)

    def render_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``render_units``."""
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What an image's content key records of how it was made."""
        return {**asdict(self), "objective": "channel", "version": _VERSION}
