"""Pictures of analysis results, drawn with Pillow; functions return images, saving is the caller's."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from circuitatlas.analysis.svd import SvdResult

__all__ = ["rgb_thumbnail", "svd_scatter"]

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
