"""Files that analyses write (feature-visualisation PNGs and their sidecars, contact sheets,
dataset-example crops, plots): every path is built here, under the artifacts folder
(:func:`circuitatlas.paths.artifacts_dir`), and a path that would leave it is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from circuitatlas import paths
from circuitatlas.errors import InvalidInput

__all__ = ["inside", "stored_path", "content_key", "render_paths", "save_render", "load_render", "image_problem",
           "contact_sheet_path", "save_contact_sheet", "save_example_crops", "save_grid"]

_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)  # what Pillow raises on bad files


def inside(*parts: str, root: Path | None = None) -> Path:
    """``root / parts...`` (default root: the artifacts folder), refused with InvalidInput when it
    resolves outside the root (a model id or layer name such as ``../../x`` or ``/tmp/x``). The
    artifacts folder is created owner-only (0700) when missing."""
    base = root or paths.private_dir(paths.artifacts_dir())
    path = base.joinpath(*parts)
    real_base, real = base.resolve(), path.resolve()
    if real != real_base and real_base not in real.parents:
        raise InvalidInput(f"{'/'.join(parts)!r} would put a file outside {base}")
    return path


def stored_path(path: Any) -> Path | None:
    """``path`` (a path read back from the graph, absolute or relative to the artifacts folder)
    resolved, symlinks followed, when it lies inside the artifacts folder; None otherwise (also
    for anything that is not a path). Touches no file but to resolve links."""
    if not isinstance(path, (str, Path)) or not str(path):
        return None
    base = paths.artifacts_dir()
    try:
        real, real_base = base.joinpath(path).resolve(), base.resolve()
    except (ValueError, OSError):  # a NUL byte, a symlink loop
        return None
    return real if real_base in real.parents else None


def content_key(spec: Any, length: int = 24) -> str:
    """A hex SHA-256 of ``spec`` as canonical JSON: equal specs, equal keys."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:length]


def render_paths(key: str) -> tuple[Path, Path]:
    """The content-addressed PNG of one feature visualisation and the JSON beside it."""
    return inside("featurevis", f"{key}.png"), inside("featurevis", f"{key}.json")


def save_render(key: str, image: np.ndarray, sidecar: dict[str, Any]) -> Path:
    """Save an (H, W, 3) image in [0, 1] as ``key``'s PNG, then its sidecar JSON (written last:
    a PNG without one counts as not saved)."""
    png, side = render_paths(key)
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(png)
    side.write_text(json.dumps(sidecar))
    return png


def load_render(key: str) -> tuple[Path, dict[str, Any]] | None:
    """``(png, sidecar)`` of an earlier render with this key, or None (also when the PNG is not an
    image or the sidecar holds no activation: such a render is made again)."""
    png, side = render_paths(key)
    if not (png.is_file() and side.is_file()) or image_problem(png) is not None:
        return None
    try:
        sidecar = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("activation"), (int, float)):
        return None
    return png, sidecar


def image_problem(path: Any) -> str | None:
    """Why ``path``, an image path read back from the graph, cannot be used: it resolves outside
    the artifacts folder (a stale or foreign path), is no file, or does not open as an image;
    None when it can be used."""
    if not isinstance(path, (str, Path)) or not str(path):
        return f"{path!r} is not a file path"
    real = stored_path(path)
    if real is None:
        return f"{path} is outside the artifacts folder {paths.artifacts_dir()} (or not a path at all)"
    if not real.is_file():
        return f"{path} does not exist"
    try:
        with Image.open(real) as image:
            image.verify()
    except _UNREADABLE:
        return f"{path} is not an image"
    return None


def contact_sheet_path(model: str, layer: str) -> Path:
    return inside(model, f"featurevis-{layer}.png")


def save_contact_sheet(images: Sequence[str | Path], path: Path, columns: int = 16, cell: int = 64) -> Path:
    """All images in a grid, ``cell`` px each, saved to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = max(1, (len(images) + columns - 1) // columns)
    sheet = Image.new("RGB", (min(columns, max(1, len(images))) * cell, rows * cell), "white")
    for i, file in enumerate(images):
        with Image.open(file) as img:
            sheet.paste(img.convert("RGB").resize((cell, cell)), ((i % columns) * cell, (i // columns) * cell))
    sheet.save(path)
    return path


def save_grid(images: np.ndarray, path: Path, gap: int = 1) -> Path:
    """Images (rows, cols, H, W, 3) in [0, 1] as one PNG grid with white ``gap`` px lines."""
    rows, cols, h, w, _ = images.shape
    grid = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 3))
    for i in range(rows):
        for j in range(cols):
            grid[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = images[i, j]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def save_example_crops(model: str, layer: str, channel: int, crops: Sequence[tuple[int, np.ndarray]],
                       out_dir: str | Path | None = None) -> list[str]:
    """Save one unit's top dataset-example crops ((image index, (h, w, 3) crop in [0, 1]) in rank
    order) as PNGs, doubled in size (at least 32 px); returns their paths."""
    folder = inside(str(channel), root=Path(out_dir)) if out_dir else inside(model, "examples", layer, str(channel))
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for rank, (index, crop) in enumerate(crops):
        path = folder / f"{rank:02d}-img{index}.png"
        Image.fromarray((np.clip(crop, 0, 1) * 255).astype(np.uint8)).resize(
            (max(32, crop.shape[1] * 2), max(32, crop.shape[0] * 2)), Image.NEAREST).save(path)
        files.append(str(path))
    return files
