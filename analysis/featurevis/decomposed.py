"""Decomposed feature visualisation (Curve Circuits): for a target unit and an upstream layer,
one image per spatial position of the target's expanded weights, each maximising the dot
product of the upstream activations at that position with the weight vector there. The grid of
images shows what the unit wants to see where (for a curve detector: line pieces along the
curve's tangent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from circuitatlas.analysis.featurevis.objectives import Objective
from circuitatlas.analysis.featurevis.render import render
from circuitatlas.analysis.hooks import run_to_layers
from circuitatlas.analysis.tuning import model_device
from circuitatlas.errors import InvalidInput

__all__ = ["Decomposed", "decomposed", "position_objective"]


@dataclass
class Decomposed:
    """``images`` (kh, kw, 3, H, W): grey where the weight vector is under ``min_share`` of the
    strongest; ``rendered`` (kh, kw) marks the others; ``activations`` (kh, kw) their dot products;
    ``positions`` (kh, kw, 2) the upstream map's (row, col) of each."""

    images: torch.Tensor
    rendered: np.ndarray
    activations: np.ndarray
    positions: np.ndarray


def position_objective(layer: str, vectors: torch.Tensor, positions: list[tuple[int, int]], rectify: bool = True
                       ) -> Objective:
    """Image i scores ``vectors[i] · activation[layer][i, :, row_i, col_i]`` (of the activation's
    positive part with ``rectify``)."""
    rows = torch.as_tensor([p[0] for p in positions], dtype=torch.long)
    cols = torch.as_tensor([p[1] for p in positions], dtype=torch.long)

    def score(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        a = acts[layer]
        b = torch.arange(a.shape[0], device=a.device)
        picked = a[b, :, rows.to(a.device), cols.to(a.device)]  # (B, C)
        if rectify:  # forward: the positive part; backward: leaky, so that a silent start still moves
            leaky = torch.nn.functional.leaky_relu(picked, 0.01)
            picked = leaky + (torch.relu(picked) - leaky).detach()
        return (picked * vectors.to(a.device, a.dtype)).sum(dim=1)

    return Objective(score, [layer], f"{layer}·weights@positions")


def decomposed(model: nn.Module, layer: str, weights: np.ndarray | torch.Tensor, size: int,
               origin: tuple[int, int] | None = None, min_share: float = 0.1, rectify: bool = True,
               **render_kwargs) -> Decomposed:
    """Render, in one batch, the image for each position of ``weights`` (C, kh, kw): a target
    unit's expanded weights from ``layer``, whose [:, 0, 0] sits at ``origin`` (row, col) of
    ``layer``'s map at ``size`` px (default: the window centred on the map's centre, as direct
    weights of a stride-1 convolution with same padding). Positions whose weight vector has a
    norm under ``min_share`` of the strongest are left grey. With ``rectify`` the dot product
    takes the upstream activations' positive parts, as a unit after a ReLU passes them on (a
    layer hooked before its ReLU would otherwise be pushed to negative values by negative
    weights, which the next layer never sees). ``render_kwargs`` go to
    :func:`~.render.render` (default here: pixels, no transforms, so that each image holds only
    what its own position sees)."""
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    if w.dim() != 3:
        raise InvalidInput(f"weights must be (channels, kh, kw), not {tuple(w.shape)}")
    c, kh, kw = w.shape
    model = model.eval()
    with torch.no_grad():
        shape = run_to_layers(model, [layer], torch.full((1, 3, size, size), 0.5,
                                                         device=model_device(None, model)))[layer].shape
    if shape[1] != c:
        raise InvalidInput(f"{layer} has {shape[1]} channels; the weights have {c}")
    top, left = origin if origin is not None else (shape[2] // 2 - kh // 2, shape[3] // 2 - kw // 2)
    norms = w.norm(dim=0)
    keep = [(i, j) for i in range(kh) for j in range(kw)
            if float(norms[i, j]) > 0 and float(norms[i, j]) >= min_share * float(norms.max())]
    positions = np.array([[[top + i, left + j] for j in range(kw)] for i in range(kh)])
    outside = [(i, j) for i, j in keep if not (0 <= top + i < shape[2] and 0 <= left + j < shape[3])]
    if outside:
        raise InvalidInput(f"weight position {outside[0]} falls outside {layer}'s {shape[2]}x{shape[3]} map")
    images = torch.full((kh, kw, 3, size, size), 0.5)
    activations = np.zeros((kh, kw))
    rendered = np.zeros((kh, kw), dtype=bool)
    if keep:
        vectors = torch.stack([w[:, i, j] for i, j in keep])
        objective = position_objective(layer, vectors, [tuple(positions[i, j]) for i, j in keep], rectify)
        options = {"param": "pixel", "transforms": "none", **render_kwargs}
        result = render(model, objective, size=size, batch=len(keep), **options)
        for n, (i, j) in enumerate(keep):
            images[i, j] = result.images[n]
            activations[i, j] = float(result.activations[n])
            rendered[i, j] = True
    return Decomposed(images, rendered, activations, positions)
