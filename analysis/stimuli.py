"""Synthetic stimuli: deterministic images (H, W, 3) float32 in [0, 1].

Angles are in degrees, counter-clockwise, 0 pointing right (image rows grow downwards, so
"up" is angle 90). Positions are (row, col) in pixels; the default is the image centre.
Shapes are drawn with a one-pixel anti-aliased edge from exact distance fields.

* ``curve(orientation)``: an arc whose convex side faces ``orientation`` (the arc's midpoint
  lies at ``position``; the circle's centre is ``radius`` behind it).
* ``line(orientation)``: a straight segment along ``orientation`` (mod 180).
* ``edge(orientation)``: dark-to-bright step whose bright side faces ``orientation``.
* ``grating``, ``hilo`` (high-low frequency boundary), ``color_contrast``, ``center_surround``,
  ``circle``, ``angle``; ``sweep`` varies one parameter.

The geometry under them (:func:`pixel_grid`, :func:`along_across`, :func:`arc_polar`) also draws
the planted networks' kernels (:mod:`circuitatlas.analysis.planted`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

__all__ = ["curve", "line", "edge", "grating", "hilo", "color_contrast", "center_surround", "circle", "angle",
           "sweep", "STIMULI", "pixel_grid", "along_across", "arc_polar"]

Color = Sequence[float]


def _unit(deg: float) -> tuple[float, float]:
    """(cos, sin) of an angle in degrees: the unit vector pointing along it."""
    rad = np.deg2rad(deg)
    return float(np.cos(rad)), float(np.sin(rad))


def pixel_grid(size: int, position: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x (right) and y (up) offsets (size, size) of every pixel centre from ``position`` (row, col),
    by default the image centre.

    >>> x, y = pixel_grid(3)
    >>> x[0].tolist(), y[0].tolist()  # the top row: y is up
    ([-1.0, 0.0, 1.0], [1.0, 1.0, 1.0])
    """
    r0, c0 = position if position is not None else ((size - 1) / 2, (size - 1) / 2)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    return cols - c0, -(rows - r0)


def along_across(x: np.ndarray, y: np.ndarray, orientation: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of points (x, y) along ``orientation`` (degrees) and across it (to its left)."""
    ux, uy = _unit(orientation)
    return x * ux + y * uy, -x * uy + y * ux


def arc_polar(x: np.ndarray, y: np.ndarray, orientation: float, radius: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    """Polar coordinates of points (x, y) about the circle of an arc of ``radius`` whose midpoint
    is the origin and whose convex side faces ``orientation`` (degrees).

    Returns
    -------
    rho : array
        Distance from the circle's centre.
    theta : array
        Direction from the circle's centre, degrees in [-180, 180].
    offset : array
        ``theta`` relative to the arc's midpoint, degrees in [-180, 180).
    centre : (float, float)
        The circle's centre (x, y), ``radius`` behind the midpoint.
    """
    ux, uy = _unit(orientation)
    cx, cy = -radius * ux, -radius * uy
    dx, dy = x - cx, y - cy
    theta = np.degrees(np.arctan2(dy, dx))
    return np.hypot(dx, dy), theta, (theta - orientation + 180) % 360 - 180, (cx, cy)


def _paint(mask: np.ndarray, color: Color, background: Color) -> np.ndarray:
    fg, bg = np.asarray(color, dtype=np.float64), np.asarray(background, dtype=np.float64)
    img = bg[None, None, :] * (1 - mask[..., None]) + fg[None, None, :] * mask[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def _stroke(distance: np.ndarray, width: float) -> np.ndarray:
    return np.clip(width / 2 + 0.5 - distance, 0, 1)


def curve(
    orientation: float,
    radius: float = 12.0,
    size: int = 64,
    span: float = 120.0,
    position: tuple[float, float] | None = None,
    width: float = 2.0,
    color: Color = (1.0, 1.0, 1.0),
    background: Color = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """An arc of a circle of ``radius`` spanning ``span`` degrees, convex side towards ``orientation``.

    >>> img = curve(90, radius=10, size=32)
    >>> img.shape, img.dtype, float(img.max())
    ((32, 32, 3), dtype('float32'), 1.0)
    """
    x, y = pixel_grid(size, position)
    rho, _, off, (cx, cy) = arc_polar(x, y, orientation, radius)
    on_arc = np.abs(off) <= span / 2
    dist = np.where(on_arc, np.abs(rho - radius), np.inf)
    for end in (orientation - span / 2, orientation + span / 2):  # round caps at both ends
        ex, ey = _unit(end)
        dist = np.minimum(dist, np.hypot(x - (cx + radius * ex), y - (cy + radius * ey)))
    return _paint(_stroke(dist, width), color, background)


def line(
    orientation: float,
    size: int = 64,
    length: float | None = None,
    position: tuple[float, float] | None = None,
    width: float = 2.0,
    color: Color = (1.0, 1.0, 1.0),
    background: Color = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """A straight segment through ``position`` along ``orientation`` (``length=None``: across the image)."""
    along, across = along_across(*pixel_grid(size, position), orientation)
    half = (length if length is not None else 4 * size) / 2
    dist = np.hypot(np.maximum(np.abs(along) - half, 0), across)
    return _paint(_stroke(dist, width), color, background)


def edge(
    orientation: float,
    size: int = 64,
    position: tuple[float, float] | None = None,
    color: Color = (1.0, 1.0, 1.0),
    background: Color = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """A step edge through ``position``: ``color`` on the side ``orientation`` points to."""
    x, y = pixel_grid(size, position)
    ux, uy = _unit(orientation)
    return _paint(np.clip(x * ux + y * uy + 0.5, 0, 1), color, background)


def grating(
    frequency: float = 0.1,
    orientation: float = 0.0,
    phase: float = 0.0,
    size: int = 64,
    contrast: float = 1.0,
) -> np.ndarray:
    """A sinusoidal grating: ``frequency`` in cycles per pixel along ``orientation``, ``phase`` in degrees."""
    x, y = pixel_grid(size, None)
    ux, uy = _unit(orientation)
    value = 0.5 + 0.5 * contrast * np.cos(2 * np.pi * frequency * (x * ux + y * uy) + np.deg2rad(phase))
    return np.repeat(value[..., None], 3, axis=2).astype(np.float32)


def hilo(orientation: float, size: int = 64, frequency: float = 0.35, position: tuple[float, float] | None = None,
         seed: int = 0) -> np.ndarray:
    """High-low frequency boundary: fine texture on the side ``orientation`` points to, flat grey on the other."""
    x, y = pixel_grid(size, position)
    ux, uy = _unit(orientation)
    texture = grating(frequency, orientation + 90, size=size)[..., 0]
    side = np.clip(x * ux + y * uy + 0.5, 0, 1)
    value = side * texture + (1 - side) * 0.5
    return np.repeat(value[..., None], 3, axis=2).astype(np.float32)


def color_contrast(
    orientation: float,
    color_a: Color = (1.0, 0.1, 0.1),
    color_b: Color = (0.1, 0.8, 0.1),
    size: int = 64,
    position: tuple[float, float] | None = None,
) -> np.ndarray:
    """Two colours split by a line; ``color_a`` on the side ``orientation`` points to."""
    return edge(orientation, size, position, color=color_a, background=color_b)


def center_surround(
    radius: float = 8.0,
    center: Color = (1.0, 1.0, 1.0),
    surround: Color = (0.0, 0.0, 0.0),
    size: int = 64,
    position: tuple[float, float] | None = None,
) -> np.ndarray:
    """A disc of ``center`` colour on a ``surround`` field."""
    x, y = pixel_grid(size, position)
    return _paint(np.clip(radius + 0.5 - np.hypot(x, y), 0, 1), center, surround)


def circle(radius: float = 12.0, size: int = 64, width: float = 2.0, position: tuple[float, float] | None = None,
           color: Color = (1.0, 1.0, 1.0), background: Color = (0.0, 0.0, 0.0)) -> np.ndarray:
    """A circle outline."""
    x, y = pixel_grid(size, position)
    return _paint(_stroke(np.abs(np.hypot(x, y) - radius), width), color, background)


def angle(orientation: float, opening: float = 90.0, size: int = 64, length: float = 16.0, width: float = 2.0,
          position: tuple[float, float] | None = None, color: Color = (1.0, 1.0, 1.0),
          background: Color = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Two segments from ``position`` whose bisector points away from ``orientation``: the
    corner points towards ``orientation`` (like a curve's convex side)."""
    x, y = pixel_grid(size, position)
    dist = np.full(x.shape, np.inf)
    for arm in (orientation + 180 - opening / 2, orientation + 180 + opening / 2):
        ux, uy = _unit(arm)
        along = np.clip(x * ux + y * uy, 0, length)
        dist = np.minimum(dist, np.hypot(x - along * ux, y - along * uy))
    return _paint(_stroke(dist, width), color, background)


STIMULI: dict[str, Callable[..., np.ndarray]] = {
    "curve": curve, "line": line, "edge": edge, "grating": grating, "hilo": hilo,
    "color_contrast": color_contrast, "center_surround": center_surround, "circle": circle, "angle": angle,
}


def sweep(stimulus: str | Callable[..., np.ndarray], parameter: str, values: Sequence[float], **fixed) -> np.ndarray:
    """A batch (n, H, W, 3) varying one parameter of a stimulus.

    >>> sweep("curve", "orientation", [0, 90, 180], size=16).shape
    (3, 16, 16, 3)
    """
    fn = STIMULI[stimulus] if isinstance(stimulus, str) else stimulus
    return np.stack([fn(**{**fixed, parameter: v}) for v in values])
