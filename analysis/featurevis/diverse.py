"""Several different images for one unit (a polysemantic unit, or a union over cases, has more
than one thing it responds to): the unit's objective on every image of a batch, plus a term that
pushes the images' activation statistics (Gram matrices) in a layer below apart."""

from __future__ import annotations

import torch
from torch import nn

from circuitatlas import checks
from circuitatlas.analysis.featurevis.objectives import channel, diversity
from circuitatlas.analysis.featurevis.quality import best_stimuli, stimulus_bank
from circuitatlas.analysis.featurevis.render import RenderResult, render
from circuitatlas.analysis.featurevis.settings import RenderSettings
from circuitatlas.analysis.hooks import run_to_layers
from circuitatlas.analysis.tuning import model_device

__all__ = ["render_diverse"]


def render_diverse(model: nn.Module, layer: str, unit: int, n: int, below: str | None = None, weight: float = 1.0,
                   spread: float = 0.1, scale: float | None = None, **render_kwargs) -> RenderResult:
    """``n`` images of ``layer``'s channel ``unit``, each maximising the channel's mean plus
    ``weight`` x (the unit's best synthetic stimulus activation, so that the term has the unit's
    scale) x the images' diversity in ``below`` (default: ``layer``; a layer below it separates
    cases better when ``layer`` has few channels). The images start from grey plus independent
    noise of ``spread`` (seeded by ``seed``): identical starts would get identical gradients.
    ``scale``, the unit's best-stimulus activation, is found here when not given (a caller
    rendering a whole layer finds all its units' at once). ``activations`` are the channel means
    alone."""
    n = checks.whole("diversity", n, 1)
    weight = checks.real("weight", weight, 0.0)
    size = render_kwargs.get("size", RenderSettings.size)
    if scale is None:
        scale = float(best_stimuli(model, layer, [unit], stimulus_bank(size)).activations[0])
    objective = channel(layer, unit) + (weight * max(abs(scale), 1e-6)) * diversity(below or layer)
    generator = torch.Generator().manual_seed(int(render_kwargs.get("seed", RenderSettings.seed)))
    init = (0.5 + spread * torch.randn(n, 3, size, size, generator=generator)).clamp(0.05, 0.95)
    result = render(model, objective, batch=n, init=init, **render_kwargs)
    with torch.no_grad():  # report the unit's own activation, without the diversity term
        acts = run_to_layers(model, [layer], result.images.to(model_device(None, model)))[layer]
    result.activations = acts[:, unit].mean(dim=(1, 2)).float().cpu()
    return result
