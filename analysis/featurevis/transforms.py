"""Random image transforms applied at each optimisation step (robustness to small shifts,
scales and rotations keeps feature visualisations from exploiting pixel-level noise).

Each transform takes the batch and a ``torch.Generator``; one random draw per step is shared by
the whole batch, so a batch render equals the same renders done one at a time.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from circuitatlas import checks

__all__ = ["pad", "jitter", "random_scale", "random_rotate", "compose", "standard_transforms", "shift_transforms",
           "TRANSFORMS", "transforms_for"]

Transform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _pick(options: Sequence[float], generator: torch.Generator | None) -> float:
    return float(options[int(torch.randint(len(options), (1,), generator=generator))])


def pad(width: int, value: float = 0.5) -> Transform:
    return lambda x, g: F.pad(x, [width] * 4, mode="constant", value=value)


def jitter(d: int) -> Transform:
    def apply(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        dx, dy = (int(v) for v in torch.randint(0, d, (2,), generator=g))
        return x[:, :, dy:x.shape[2] - d + dy, dx:x.shape[3] - d + dx]

    return apply


@functools.lru_cache(maxsize=256)
def _grid(scale: float, angle_deg: float, height: int, width: int, device: torch.device,
          dtype: torch.dtype) -> torch.Tensor:
    """The sampling grid (1, H, W, 2) of one scale and rotation, made once per shape and device
    (the options are few, and building it each step would copy to the GPU and stall it)."""
    a = math.radians(angle_deg)
    theta = torch.tensor([[[math.cos(a) / scale, -math.sin(a) / scale, 0.0],
                           [math.sin(a) / scale, math.cos(a) / scale, 0.0]]], dtype=dtype)
    return F.affine_grid(theta, [1, 1, height, width], align_corners=False).to(device)


def _affine(x: torch.Tensor, scale: float, angle_deg: float) -> torch.Tensor:
    grid = _grid(scale, angle_deg, x.shape[2], x.shape[3], x.device, x.dtype)
    return F.grid_sample(x, grid.expand(x.shape[0], -1, -1, -1), mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def random_scale(scales: Sequence[float]) -> Transform:
    return lambda x, g: _affine(x, _pick(scales, g), 0.0)


def random_rotate(angles: Sequence[float]) -> Transform:
    return lambda x, g: _affine(x, 1.0, _pick(angles, g))


def compose(transforms: Sequence[Transform]) -> Transform:
    def apply(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        for t in transforms:
            x = t(x, g)
        return x

    return apply


def standard_transforms(size: int) -> list[Transform]:
    """Lucid's defaults, scaled to the image size: pad, coarse jitter, scale, rotate, fine jitter."""
    unit = max(1, size // 32)
    return [pad(3 * unit), jitter(2 * unit), random_scale([1 + (i - 5) / 50 for i in range(11)]),
            random_rotate(list(range(-10, 11)) + 5 * [0]), jitter(unit)]


def shift_transforms(size: int) -> list[Transform]:
    """Pad and jitter only (no scaling or rotation): robustness to position without blurring an
    oriented pattern over a range of angles."""
    unit = max(1, size // 32)
    return [pad(3 * unit), jitter(2 * unit), jitter(unit)]


TRANSFORMS: dict[str, Callable[[int], list[Transform]]] = {
    "standard": standard_transforms, "shift": shift_transforms, "none": lambda size: []}


def transforms_for(name: str, size: int) -> list[Transform]:
    """The named preset of :data:`TRANSFORMS` at ``size`` px."""
    return TRANSFORMS[checks.choice("transforms", name, sorted(TRANSFORMS))](size)
