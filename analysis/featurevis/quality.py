"""How good a layer's feature visualisations are, measured rather than looked at.

* :func:`cross_activations`: every unit's objective (channel mean, no transforms) on every render
  of the layer; :func:`own_rank` reads from it whether a unit's own render is the one that
  excites it most (rank 1).
* :func:`best_stimuli`: each unit's best synthetic stimulus from a bank of edges, lines, curves,
  gratings, colour contrasts and discs searched over orientation, scale, phase and position. A
  render that does not beat it has not found the unit's preferred input.
* :func:`render_orientation`: the orientation (mod 180) a render shows, from its structure tensor.
* :func:`saturation` and :func:`high_frequency`: what a person sees; compare them with the same
  measures over the model's stimulus or dataset images (:func:`reference_range`).

Pure functions over a module and image tensors; nothing is drawn or saved here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from circuitatlas.analysis import stimuli
from circuitatlas.analysis.hooks import run_to_layers
from circuitatlas.analysis.tuning import model_device

__all__ = ["cross_activations", "own_rank", "stimulus_bank", "StimulusBank", "best_stimuli", "BestStimuli",
           "stimulus_starts", "render_orientation",
           "saturation", "high_frequency", "reference_range", "HIGH_FREQUENCY"]

HIGH_FREQUENCY = 0.25  # cycles per pixel above which spectral power counts as high-frequency (Nyquist: 0.5)


def _channel_means(model: nn.Module, layer: str, images: torch.Tensor, channels: Sequence[int],
                   batch: int = 64) -> torch.Tensor:
    """(N images, len(channels)) channel means of ``layer`` over all positions."""
    device = model_device(None, model)
    dtype = next(model.parameters(), torch.empty(0, dtype=torch.float32)).dtype
    index = torch.as_tensor(list(channels), dtype=torch.long)
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            x = images[start:start + batch].to(device=device, dtype=dtype)
            acts = run_to_layers(model, [layer], x)[layer]
            out.append(acts[:, index.to(acts.device)].mean(dim=(2, 3)).float().cpu())
    return torch.cat(out)


def cross_activations(model: nn.Module, layer: str, channels: Sequence[int], images: torch.Tensor) -> np.ndarray:
    """(unit, render) matrix: unit ``channels[i]``'s channel mean on ``images[j]`` (rendered for
    ``channels[j]``), the model in eval mode, no transforms."""
    model = model.eval()
    return _channel_means(model, layer, images, channels).T.numpy().astype(np.float64)


def own_rank(matrix: np.ndarray) -> np.ndarray:
    """Per unit, the rank (1 = best) of its own render (the diagonal) among all renders; ties
    count in the own render's favour."""
    own = np.diag(matrix)
    return 1 + (matrix > own[:, None]).sum(axis=1)


@dataclass
class StimulusBank:
    """Synthetic images (N, 3, size, size) in [0, 1] and what each one is."""

    images: torch.Tensor
    labels: list[dict]


def stimulus_bank(size: int, n_orientations: int = 16) -> StimulusBank:
    """Edges, lines, curves and colour contrasts over ``n_orientations`` directions (lines over
    half a turn), three scales and three positions each; gratings over frequencies and four
    phases; centre-surround discs of both polarities. Sizes follow the image size."""
    images: list[np.ndarray] = []
    labels: list[dict] = []

    def add(image: np.ndarray, **label) -> None:
        images.append(image)
        labels.append(label)

    full = [float(a) for a in np.arange(n_orientations) * 360.0 / n_orientations]
    half = [a for a in full if a < 180.0]
    c = size / 2
    positions = [None, (c - size / 6, c), (c, c - size / 6)]
    widths = [max(1.0, size / 32), max(1.5, size / 16), max(2.0, size / 8)]
    radii = [size / 10, size / 6, size / 3]
    pairs = [((1.0, 0.1, 0.1), (0.1, 0.8, 0.1)), ((0.1, 0.2, 1.0), (0.9, 0.8, 0.1)), ((0.1, 0.8, 0.1), (0.8, 0.1, 0.8))]
    for a in full:
        for pos in positions:
            add(stimuli.edge(a, size, position=pos), kind="edge", orientation=a, position=pos)
            for r in radii:
                add(stimuli.curve(a, radius=r, size=size, position=pos, width=widths[1]), kind="curve", orientation=a,
                    radius=r, position=pos)
        for ca, cb in pairs:
            add(stimuli.color_contrast(a, ca, cb, size=size), kind="color_contrast", orientation=a, colors=[ca, cb])
    for a in half:
        for w in widths:
            for pos in positions:
                add(stimuli.line(a, size, position=pos, width=w), kind="line", orientation=a, width=w, position=pos)
        for f in np.geomspace(1.0 / size, 0.4, 8):
            for phase in (0.0, 90.0, 180.0, 270.0):
                add(stimuli.grating(float(f), a, phase, size=size), kind="grating", orientation=a,
                    frequency=float(f), phase=phase)
    for r in radii:
        for centre, surround in (((1.0,) * 3, (0.0,) * 3), ((0.0,) * 3, (1.0,) * 3)):
            add(stimuli.center_surround(r, centre, surround, size=size), kind="center_surround", radius=r,
                polarity="on" if centre[0] else "off")
    array = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)
    return StimulusBank(torch.from_numpy(array), labels)


@dataclass
class BestStimuli:
    """Per unit: the best channel mean over a bank, the bank index and label of the stimulus."""

    activations: np.ndarray
    indices: np.ndarray
    labels: list[dict]


def best_stimuli(model: nn.Module, layer: str, channels: Sequence[int], bank: StimulusBank) -> BestStimuli:
    """Each unit's best channel mean over the bank, and the stimulus that gave it."""
    model = model.eval()
    acts = _channel_means(model, layer, bank.images, channels).numpy().astype(np.float64)  # (N, units)
    best = acts.argmax(axis=0)
    return BestStimuli(acts[best, np.arange(len(channels))], best, [bank.labels[int(i)] for i in best])


def stimulus_starts(model: nn.Module, units: Sequence[tuple[str, int]], size: int, contrast: float = 0.6
                    ) -> torch.Tensor:
    """(len(units), 3, size, size): each unit's best stimulus of :func:`stimulus_bank` at
    ``contrast`` around grey, to start its render from (off the sigmoid's flat ends)."""
    bank = stimulus_bank(size)
    starts = torch.empty(len(units), 3, size, size)
    for layer in dict.fromkeys(layer for layer, _ in units):
        rows = [i for i, (name, _) in enumerate(units) if name == layer]
        best = best_stimuli(model, layer, [units[i][1] for i in rows], bank)
        starts[rows] = bank.images[torch.as_tensor(best.indices, dtype=torch.long)]
    return 0.5 + contrast * (starts - 0.5)


def render_orientation(image: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """The orientation (degrees mod 180, counter-clockwise, 0 = rightwards, as the stimuli) along
    which the image varies most, and how clearly (coherence in [0, 1]), from the structure tensor
    of its luminance. A line or grating drawn along ``a`` varies along ``a + 90``."""
    x = torch.as_tensor(image, dtype=torch.float64)
    lum = (x.mean(dim=0) if x.dim() == 3 else x).numpy()
    gy, gx = np.gradient(lum)
    gy = -gy  # rows grow downwards; y points up
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    angle = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy)) % 180.0
    trace = jxx + jyy
    coherence = float(np.hypot(jxx - jyy, 2 * jxy) / trace) if trace > 0 else 0.0
    return float(angle), coherence


def saturation(images: torch.Tensor) -> np.ndarray:
    """Per image, the mean HSV saturation ``(max - min) / max`` over its pixels."""
    hi = images.amax(dim=1)
    lo = images.amin(dim=1)
    return ((hi - lo) / hi.clamp(min=1e-6)).mean(dim=(1, 2)).double().numpy()


def high_frequency(images: torch.Tensor, cutoff: float = HIGH_FREQUENCY) -> np.ndarray:
    """Per image, the share of the luminance's spectral power (mean removed) above ``cutoff``
    cycles per pixel."""
    lum = images.double().mean(dim=1)
    lum = lum - lum.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(lum).abs() ** 2
    fy = torch.fft.fftfreq(lum.shape[1], dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(lum.shape[2], dtype=torch.float64)[None, :]
    high = (torch.sqrt(fx * fx + fy * fy) > cutoff).to(power.dtype)
    total = power.sum(dim=(1, 2)).clamp(min=1e-12)
    return ((power * high).sum(dim=(1, 2)) / total).numpy()


def reference_range(values: np.ndarray, low: float = 5.0, high: float = 95.0) -> tuple[float, float]:
    """The ``low``-``high`` percentile range of a measure over reference images."""
    return float(np.percentile(values, low)), float(np.percentile(values, high))
