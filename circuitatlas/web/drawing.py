"""The viewer's figures as SVG text: weight kernels (blue positive, red negative, one scale per
kernel), RGB kernels of the first layer, tuning curves as polar plots, weight matrices, SVD
scatter plots and circuits as layered diagrams. Pure functions of arrays and plain data; every
string that reaches the SVG is escaped here, every image is a URL handed in."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["POSITIVE", "NEGATIVE", "weight_colour", "kernel_svg", "rgb_kernel_svg", "polar_svg", "matrix_svg",
           "scatter_svg", "CircuitLayout", "layout_circuit", "circuit_svg", "CLUSTER_COLOURS"]

POSITIVE = (33, 102, 172)  # blue: excitatory weights
NEGATIVE = (178, 24, 43)  # red: inhibitory weights
CLUSTER_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
                   "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6")

Url = Callable[[Any], "str | None"]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def weight_colour(value: float, scale: float) -> str:
    """White at 0, blue for positive and red for negative values, full at ``|value| >= scale``."""
    t = 0.0 if scale <= 0 else min(1.0, abs(float(value)) / scale)
    r, g, b = POSITIVE if value >= 0 else NEGATIVE
    mix = [round(255 + (c - 255) * t) for c in (r, g, b)]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def kernel_svg(kernel: Any, cell: int = 10, scale: float | None = None, title: str = "") -> str:
    """A (kh, kw) kernel as a grid of cells, coloured on ``scale`` (default: its own largest
    |value|); each cell's title holds its value."""
    k = np.atleast_2d(np.asarray(kernel, dtype=np.float64))
    scale = float(np.abs(k).max()) if scale is None else scale
    h, w = k.shape
    cells = "".join(
        f'<rect x="{j * cell}" y="{i * cell}" width="{cell}" height="{cell}" fill="{weight_colour(k[i, j], scale)}">'
        f"<title>{k[i, j]:+.4g}</title></rect>" for i in range(h) for j in range(w))
    label = f"<title>{_e(title)}</title>" if title else ""
    return (f'<svg class="kernel" xmlns="http://www.w3.org/2000/svg" width="{w * cell}" height="{h * cell}" '
            f'viewBox="0 0 {w * cell} {h * cell}">{label}{cells}'
            f'<rect width="{w * cell}" height="{h * cell}" fill="none" stroke="#999" stroke-width="0.5"/></svg>')


def rgb_kernel_svg(kernel: np.ndarray, size: int = 64) -> str:
    """A (kh, kw, 3) kernel over the image as the colour it responds to (grey at 0; scaled by its
    largest |value|), ``size`` px wide."""
    k = np.asarray(kernel, dtype=np.float64)
    peak = float(np.abs(k).max()) or 1.0
    rgb = np.clip(0.5 + 0.5 * k / peak, 0, 1) * 255
    h, w = k.shape[:2]
    cell = size / max(h, w)
    cells = "".join(
        f'<rect x="{j * cell:.2f}" y="{i * cell:.2f}" width="{cell + 0.05:.2f}" height="{cell + 0.05:.2f}" '
        f'fill="rgb({rgb[i, j, 0]:.0f},{rgb[i, j, 1]:.0f},{rgb[i, j, 2]:.0f})"/>' for i in range(h) for j in range(w))
    return (f'<svg class="rgb-kernel" xmlns="http://www.w3.org/2000/svg" width="{w * cell:.0f}" '
            f'height="{h * cell:.0f}" viewBox="0 0 {w * cell:.2f} {h * cell:.2f}">{cells}</svg>')


def polar_svg(angles: Sequence[float], responses: Sequence[float], size: int = 220,
              preferred: float | None = None) -> str:
    """A tuning curve as a polar plot: the response (rectified, scaled to the largest) at each
    angle in degrees, 0 degrees to the right and counter-clockwise, with the preferred angle
    drawn as a line."""
    a = np.radians(np.asarray(angles, dtype=np.float64))
    r = np.maximum(np.asarray(responses, dtype=np.float64), 0)
    peak = float(r.max()) if r.size and r.max() > 0 else 1.0
    c, radius = size / 2, size / 2 - 22
    points = " ".join(f"{c + radius * v / peak * math.cos(t):.1f},{c - radius * v / peak * math.sin(t):.1f}"
                      for t, v in zip(a, r))
    rings = "".join(f'<circle cx="{c}" cy="{c}" r="{radius * f:.1f}" fill="none" stroke="#ddd"/>'
                    for f in (0.25, 0.5, 0.75, 1.0))
    ticks = "".join(
        f'<text x="{c + (radius + 12) * math.cos(math.radians(d)):.1f}" '
        f'y="{c - (radius + 12) * math.sin(math.radians(d)) + 4:.1f}" text-anchor="middle">{d}°</text>'
        for d in (0, 90, 180, 270))
    line = ""
    if preferred is not None:
        t = math.radians(float(preferred))
        line = (f'<line class="preferred" x1="{c}" y1="{c}" x2="{c + radius * math.cos(t):.1f}" '
                f'y2="{c - radius * math.sin(t):.1f}" stroke="#d95f02" stroke-width="2"/>')
    return (f'<svg class="polar" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
            f'font-size="10" fill="#444">{rings}'
            f'<line x1="{c - radius}" y1="{c}" x2="{c + radius}" y2="{c}" stroke="#eee"/>'
            f'<line x1="{c}" y1="{c - radius}" x2="{c}" y2="{c + radius}" stroke="#eee"/>{ticks}'
            f'<polygon points="{points}" fill="rgba(33,102,172,0.15)" stroke="rgb(33,102,172)" stroke-width="1.5"/>'
            f'{line}</svg>')


def matrix_svg(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], cell: int = 22,
               row_title: str = "", col_title: str = "") -> str:
    """A (rows, cols) weight matrix as a red/blue heat map on one symmetric scale, labelled."""
    m = np.asarray(matrix, dtype=np.float64)
    scale = float(np.abs(m).max()) or 1.0
    left, top = 70, 84
    cells = "".join(
        f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
        f'fill="{weight_colour(m[i, j], scale)}"><title>{_e(rows[i])} ← {_e(cols[j])}: {m[i, j]:+.4g}</title></rect>'
        for i in range(m.shape[0]) for j in range(m.shape[1]))
    row_labels = "".join(f'<text x="{left - 4}" y="{top + i * cell + cell * 0.7:.1f}" text-anchor="end">'
                         f"{_e(label)}</text>" for i, label in enumerate(rows))
    col_labels = "".join(
        f'<text transform="translate({left + j * cell + cell * 0.7:.1f},{top - 4}) rotate(-60)">{_e(label)}</text>'
        for j, label in enumerate(cols))
    width, height = left + m.shape[1] * cell + 10, top + m.shape[0] * cell + 24
    titles = (f'<text x="{left}" y="{height - 6}" font-weight="bold">{_e(col_title)}</text>'
              f'<text transform="translate(12,{top + m.shape[0] * cell}) rotate(-90)" font-weight="bold">'
              f"{_e(row_title)}</text>")
    return (f'<svg class="matrix" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-size="10" fill="#333">{cells}{row_labels}{col_labels}{titles}</svg>')


def scatter_svg(points: np.ndarray, groups: Sequence[int], labels: Sequence[str], links: Sequence[str | None],
                size: int = 360) -> str:
    """2-D points (first two columns) coloured by group, each a link with its label as title."""
    p = np.asarray(points, dtype=np.float64).reshape(len(labels), -1)[:, :2] if len(labels) else np.zeros((0, 2))
    pad = 20
    lo, hi = (p.min(axis=0), p.max(axis=0)) if len(p) else (np.zeros(2), np.ones(2))
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = pad + (p - lo) / span * (size - 2 * pad)
    dots = []
    for (x, y), group, label, link in zip(xy, groups, labels, links):
        colour = CLUSTER_COLOURS[group % len(CLUSTER_COLOURS)]
        dot = (f'<circle cx="{x:.1f}" cy="{size - y:.1f}" r="4.5" fill="{colour}" '
               f'stroke="#fff" stroke-width="0.8"><title>{_e(label)} (cluster {group})</title></circle>')
        dots.append(f'<a href="{_e(link)}">{dot}</a>' if link else dot)
    return (f'<svg class="scatter" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}">'
            f'<rect width="{size}" height="{size}" fill="#fafafa" stroke="#ddd"/>{"".join(dots)}</svg>')


# -- circuits -------------------------------------------------------------------------------------
TILE, GAP, ROW_GAP, LEFT = 56, 18, 90, 150  # px; rows wider than WIDE units get SMALL_TILE tiles
WIDE, SMALL_TILE, SMALL_GAP = 14, 40, 10


@dataclass
class CircuitLayout:
    """Where each unit of a circuit sits: rows are layers (the target's on top, earlier layers
    below, in the model's layer order), units within a row ordered to keep edges short."""

    rows: list[tuple[str, list[str]]]  # (layer, uids left to right), top row first
    xy: dict[str, tuple[float, float]] = field(default_factory=dict)  # uid -> tile's top-left
    width: float = 0.0
    height: float = 0.0
    tile: float = TILE  # side of a unit's square, px


def layout_circuit(nodes: dict[str, dict[str, Any]], edges: Sequence[tuple[str, str]],
                   layer_order: dict[str, int]) -> CircuitLayout:
    """Rows by layer (latest on top); each row after the first ordered by the mean x of the units
    above it that it feeds (barycentre), ties by channel."""
    by_layer: dict[str, list[str]] = {}
    for uid, props in nodes.items():
        by_layer.setdefault(props["layer"], []).append(uid)
    layers = sorted(by_layer, key=lambda name: -layer_order.get(name, 0))
    feeds: dict[str, list[str]] = {}
    for a, b in edges:
        feeds.setdefault(a, []).append(b)
    layout = CircuitLayout(rows=[])
    x_of: dict[str, float] = {}
    for r, layer in enumerate(layers):
        uids = sorted(by_layer[layer], key=lambda u: nodes[u].get("channel", 0))
        if r:
            def centre(uid: str) -> float:
                above = [x_of[b] for b in feeds.get(uid, []) if b in x_of]
                return sum(above) / len(above) if above else float("inf")
            uids.sort(key=lambda u: (centre(u), nodes[u].get("channel", 0)))
        layout.rows.append((layer, uids))
        for i, uid in enumerate(uids):
            x_of[uid] = i
    widest = max((len(uids) for _, uids in layout.rows), default=1)
    tile, gap = (TILE, GAP) if widest <= WIDE else (SMALL_TILE, SMALL_GAP)
    layout.tile = tile
    layout.width = LEFT + widest * (tile + gap) + gap
    layout.height = len(layout.rows) * (tile + ROW_GAP) + 10
    for r, (_, uids) in enumerate(layout.rows):
        offset = LEFT + (widest - len(uids)) * (tile + gap) / 2
        for i, uid in enumerate(uids):
            layout.xy[uid] = (offset + i * (tile + gap), 10 + r * (tile + ROW_GAP))
    return layout


def circuit_svg(nodes: dict[str, dict[str, Any]], edges: Sequence[dict[str, Any]], layout: CircuitLayout,
                image_url: Url, page_url: Url, targets: Sequence[str] = ()) -> str:
    """A circuit as the Circuits figures draw it: each unit its feature visualisation (or its
    channel number where it has none), each edge a curve from a unit's top to the bottom of the
    unit it feeds, blue for positive and red for negative, as wide as its share of the target's
    strongest input (``rel_in``). Edges carry ``data-edge`` (their index) for the page's script."""
    parts, size = [], layout.tile
    for layer, uids in layout.rows:  # each row's layer named just left of its first unit
        x, y = layout.xy[uids[0]]
        parts.append(f'<text class="row-label" x="{x - 8:.0f}" y="{y + size / 2 + 4:.0f}" text-anchor="end" '
                     f'font-weight="bold">{_e(layer)}</text>')
    for i, edge in sorted(enumerate(edges), key=lambda item: abs(item[1].get("rel_in", 0))):
        (ax, ay), (bx, by) = layout.xy[edge["source"]], layout.xy[edge["target"]]
        x1, y1, x2, y2 = ax + size / 2, ay, bx + size / 2, by + size + 12
        mid = (y1 + y2) / 2
        rel = float(edge.get("rel_in", 0.0))
        strength = min(1.0, abs(rel))
        colour = weight_colour(1 if rel >= 0 else -1, 1)
        d = f"M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} {x2:.1f},{y2:.1f}"
        parts.append(
            f'<g class="edge" data-edge="{i}"><path d="{d}" fill="none" stroke="{colour}" '
            f'stroke-width="{0.6 + 4.4 * strength:.2f}" stroke-opacity="{0.35 + 0.55 * strength:.2f}"/>'
            f'<path class="hit" d="{d}" fill="none" stroke="transparent" stroke-width="10">'
            f"<title>{_e(edge['source'])} → {_e(edge['target'])}: {rel:+.2f} of the strongest input</title></path></g>")
    for uid, (x, y) in layout.xy.items():
        props = nodes[uid]
        url, link = image_url(props.get("featurevis")), page_url(uid)
        face = (f'<image href="{_e(url)}" x="{x:.1f}" y="{y:.1f}" width="{size}" height="{size}" '
                f'preserveAspectRatio="none"/>' if url else
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{size}" height="{size}" fill="#eee"/>')
        ring = "#d95f02" if uid in targets else "#888"
        tile = (f'{face}<rect x="{x:.1f}" y="{y:.1f}" width="{size}" height="{size}" fill="none" stroke="{ring}" '
                f'stroke-width="{2 if uid in targets else 0.8}"/>'
                f'<text x="{x + size / 2:.1f}" y="{y + size + 11:.1f}" text-anchor="middle">'
                f'{_e(props.get("channel", ""))}</text>'
                f"<title>{_e(uid)}</title>")
        parts.append(f'<a class="unit" href="{_e(link)}" data-uid="{_e(uid)}">{tile}</a>' if link else
                     f'<g class="unit" data-uid="{_e(uid)}">{tile}</g>')
    return (f'<svg class="circuit" xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{layout.width:.0f}" height="{layout.height:.0f}" '
            f'viewBox="0 0 {layout.width:.0f} {layout.height:.0f}" '
            f'font-family="sans-serif" font-size="10" fill="#333">'
            f'<rect width="100%" height="100%" fill="#fff"/>{"".join(parts)}</svg>')
