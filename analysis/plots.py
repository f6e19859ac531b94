"""Pictures of analysis results, drawn with Pillow; functions return images, saving is the caller's."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from circuitatlas.analysis.svd import SvdResult

__all__ = ["rgb_thumbnail", "svd_scatter", "cka_heatmap", "matched_pairs", "stacked"]

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def rgb_thumbnail(kernel: np.ndarray, size: int = 28) -> Image.Image:
    """A (3, kh, kw) first-layer filter as an RGB picture (0 -> grey, scaled by its max |w|)."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 3 or k.shape[0] != 3:
        raise ValueError(f"expected a (3, kh, kw) filter, got {k.shape}")
    scale = np.abs(k).max() or 1.0
    rgb = ((k / scale) * 0.5 + 0.5).clip(0, 1).transpose(1, 2, 0)
    return Image.fromarray((rgb * 255).astype(np.uint8)).resize((size, size), Image.NEAREST)


def _panel(coords: np.ndarray, clusters: np.ndarray, title: str, thumbs: dict[int, Image.Image] | None,
           size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill="black")
    xy = coords[:, :2] if coords.shape[1] >= 2 else np.hstack([coords, np.zeros_like(coords)])
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    margin = 40
    pix = margin + (xy - lo) / span * (size - 2 * margin)
    for unit, ((x, y), c) in enumerate(zip(pix, clusters)):
        colour = _PALETTE[int(c) % len(_PALETTE)]
        if thumbs and unit in thumbs:
            t = thumbs[unit]
            img.paste(t, (int(x - t.width / 2), int(y - t.height / 2)))
            draw.rectangle([x - t.width / 2 - 1, y - t.height / 2 - 1, x + t.width / 2, y + t.height / 2],
                           outline=colour, width=2)
        else:
            draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour)
            draw.text((x + 6, y - 6), str(unit), fill=(60, 60, 60))
    return img


def svd_scatter(
    result: SvdResult,
    title: str = "",
    input_thumbnails: dict[int, Image.Image] | None = None,
    output_thumbnails: dict[int, Image.Image] | None = None,
    size: int = 520,
) -> Image.Image:
    """Input units (left) and output units (right) on the first two SVD coordinates, coloured
    by cluster, drawn as thumbnails where given."""
    left = _panel(result.input_coords, result.input_clusters, f"inputs  {title}", input_thumbnails, size)
    right = _panel(result.output_coords, result.output_clusters, f"outputs  k={result.k}", output_thumbnails, size)
    out = Image.new("RGB", (2 * size + 10, size), "white")
    out.paste(left, (0, 0))
    out.paste(right, (size + 10, 0))
    return out


def _diverging(value: float) -> tuple[int, int, int]:
    """0 -> white, 1 -> dark blue; NaN (not compared) -> light grey."""
    if not np.isfinite(value):
        return (235, 235, 235)
    v = float(np.clip(value, 0.0, 1.0))
    return (int(255 - 215 * v), int(255 - 175 * v), int(255 - 80 * v))


def _vertical_text(text: str) -> Image.Image:
    """``text`` written bottom to top (for column labels), black on white."""
    img = Image.new("RGB", (7 * len(text) + 6, 14), "white")
    ImageDraw.Draw(img).text((2, 1), text, fill="black")
    return img.rotate(90, expand=True)


def cka_heatmap(rows: list[str], columns: list[str], values: np.ndarray, baseline: np.ndarray | None = None,
                title: str = "", cell: int = 52) -> Image.Image:
    """A rows x columns grid of CKA values (NaN: not compared), coloured by value and labelled,
    with ``baseline`` (the random-init networks' CKA) in brackets under each value."""
    values = np.asarray(values, dtype=np.float64)
    left = 16 + 7 * max((len(r) for r in rows), default=4)
    top = 36 + 7 * max((len(c) for c in columns), default=4)
    img = Image.new("RGB", (max(left + cell * len(columns) + 20, 8 * len(title) + 20), top + cell * len(rows) + 16),
                    "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill="black")
    for j, name in enumerate(columns):
        label = _vertical_text(name)
        img.paste(label, (left + j * cell + (cell - label.width) // 2, top - 4 - label.height))
    for i, name in enumerate(rows):
        draw.text((8, top + i * cell + cell // 2 - 6), name, fill="black")
        for j in range(len(columns)):
            v = values[i, j]
            box = [left + j * cell, top + i * cell, left + (j + 1) * cell - 2, top + (i + 1) * cell - 2]
            draw.rectangle(box, fill=_diverging(v))
            if np.isfinite(v):
                ink = "white" if v > 0.6 else "black"
                draw.text((box[0] + 10, box[1] + 10), f"{v:.2f}", fill=ink)
                if baseline is not None and np.isfinite(baseline[i, j]):
                    draw.text((box[0] + 6, box[1] + 28), f"({baseline[i, j]:.2f})", fill=ink)
    return img


def matched_pairs(pairs: list[tuple[Image.Image | None, Image.Image | None, str]], title: str = "",
                  cell: int = 72, columns: int = 4) -> Image.Image:
    """Matched units side by side (A's image, B's image, a caption of up to two lines under
    them), ``columns`` pairs a row; a missing image is drawn as a grey box."""
    pair_w, pair_h = 2 * cell + 6, cell + 34
    rows = max(1, -(-len(pairs) // columns))
    img = Image.new("RGB", (columns * (pair_w + 16) + 10, 30 + rows * (pair_h + 10)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill="black")
    for k, (a, b, caption) in enumerate(pairs):
        x, y = 10 + (k % columns) * (pair_w + 16), 30 + (k // columns) * (pair_h + 10)
        for dx, picture in ((0, a), (cell + 6, b)):
            if picture is None:
                draw.rectangle([x + dx, y, x + dx + cell - 1, y + cell - 1], fill=(220, 220, 220))
            else:
                img.paste(picture.convert("RGB").resize((cell, cell), Image.BILINEAR), (x + dx, y))
        for line, text in enumerate(caption.split("\n")):
            draw.text((x, y + cell + 4 + 13 * line), text, fill="black")
    return img


def stacked(images: list[Image.Image], gap: int = 12) -> Image.Image:
    """Images one under the other on white."""
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)),
                    "white")
    y = 0
    for picture in images:
        out.paste(picture, (0, y))
        y += picture.height + gap
    return out


def tuning_before_after(panels: list[dict], title: str = "", width: int = 180, height: int = 110,
                        columns: int = 4) -> Image.Image:
    """One small plot per unit of its tuning curve over 0-360 degrees before an edit (black),
    after it (red) and under each random control (grey), on the unit's own scale, with a dotted
    line at the preferred angle + 180 (the echo). ``panels``: dicts with ``title``, ``before``,
    ``after``, ``controls`` (lists of responses) and ``preferred`` (an index)."""
    rows = max(1, -(-len(panels) // columns))
    pad_w, pad_h = width + 24, height + 40
    img = Image.new("RGB", (columns * pad_w + 20, 30 + rows * pad_h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill="black")
    for k, panel in enumerate(panels):
        x0, y0 = 14 + (k % columns) * pad_w, 30 + (k // columns) * pad_h + 14
        curves = [np.asarray(panel["before"], float), np.asarray(panel["after"], float),
                  *(np.asarray(c, float) for c in panel.get("controls", []))]
        lo, hi = min(0.0, *(c.min() for c in curves)), max(1e-9, *(c.max() for c in curves))
        n = len(curves[0])

        def points(curve: np.ndarray) -> list[tuple[float, float]]:
            return [(x0 + width * i / (n - 1), y0 + height - height * (v - lo) / (hi - lo))
                    for i, v in enumerate(curve)]

        draw.rectangle([x0, y0, x0 + width, y0 + height], outline=(200, 200, 200))
        zero = y0 + height - height * (0 - lo) / (hi - lo)
        draw.line([(x0, zero), (x0 + width, zero)], fill=(225, 225, 225))
        echo_x = x0 + width * ((panel["preferred"] + n // 2) % n) / (n - 1)
        for yy in range(int(y0), int(y0 + height), 6):
            draw.line([(echo_x, yy), (echo_x, yy + 2)], fill=(150, 150, 220))
        for curve in curves[2:]:
            draw.line(points(curve), fill=(170, 170, 170), width=1)
        draw.line(points(curves[0]), fill=(0, 0, 0), width=2)
        draw.line(points(curves[1]), fill=(200, 30, 30), width=2)
        draw.text((x0, y0 - 13), panel["title"], fill="black")
        draw.text((x0, y0 + height + 3), "0", fill=(110, 110, 110))
        draw.text((x0 + width - 18, y0 + height + 3), "360", fill=(110, 110, 110))
    return img
