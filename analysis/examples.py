"""Dataset examples: the inputs (cropped to the receptive field) that excite each unit most."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from circuitatlas import checks
from circuitatlas.analysis.tuning import layer_activations, receptive_field
from circuitatlas.errors import InvalidInput

__all__ = ["Example", "top_examples", "load_images"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass
class Example:
    image_index: int
    activation: float
    position: tuple[int, int]  # (row, col) in the layer's map
    crop: np.ndarray  # (h, w, 3) float in [0, 1]


def load_images(folder: str | Path, size: int, limit: int | None = None,
                as_bytes: bool = False) -> tuple[np.ndarray, list[str]]:
    """Images under ``folder`` (an ImageFolder layout or flat), centre-cropped and resized to
    ``size``: (n, size, size, 3) floats in [0, 1] (``as_bytes``: uint8, a quarter of the memory)
    and their paths, in sorted order."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)[:limit]
    if not files:
        raise InvalidInput(f"no images ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {folder}")
    out = []
    for path in files:
        img = Image.open(path).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(img, dtype=np.uint8) if as_bytes else np.asarray(img, dtype=np.float32) / 255.0)
    return np.stack(out), [str(p) for p in files]


def top_examples(
    model: nn.Module,
    layer: str,
    images: np.ndarray,
    channels: Sequence[int] | None = None,
    k: int = 9,
    batch: int = 64,
) -> dict[int, list[Example]]:
    """The ``k`` images (N, H, W, 3) that excite each channel most (maximum over positions),
    each cropped to the receptive field around the winning position."""
    k, batch = checks.whole("k", k, 1), checks.whole("batch", batch, 1)
    model = model.eval()
    size = images.shape[1]
    field = receptive_field(model, layer, size)
    (top, left, bottom, right), (ch, cw), stride = field.box, field.position, field.stride
    maxima, where = [], []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float()
        act = layer_activations(model, layer, x)
        flat = act.flatten(2)
        value, index = flat.max(dim=2)
        maxima.append(value.numpy())
        where.append(index.numpy())
    values, positions = np.concatenate(maxima), np.concatenate(where)
    width = act.shape[3]
    channels = list(range(values.shape[1])) if channels is None else list(channels)
    out: dict[int, list[Example]] = {}
    for c in channels:
        best = np.argsort(-values[:, c], kind="stable")[:k]
        found = []
        for i in best:
            r, col = divmod(int(positions[i, c]), width)
            dy, dx = int(round((r - ch) * stride)), int(round((col - cw) * stride))
            t, l = max(top + dy, 0), max(left + dx, 0)
            b, rr = min(bottom + dy, size), min(right + dx, size)
            found.append(Example(int(i), float(values[i, c]), (r, col), images[i, t:max(b, t + 1), l:max(rr, l + 1)]))
        out[c] = found
    return out
