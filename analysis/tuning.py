"""Tuning curves: how units respond as a stimulus rotates (radial tuning) or bends (curvature).

Responses are read at the receptive-field centre of each channel's map (or the maximum over
positions), from a forward hook that is always removed and that stops the forward pass at the
layer, so deep models pay only for the layers they need. :func:`receptive_field` finds that
centre, the receptive-field box and the map's stride (dataset examples crop to the box).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from circuitatlas import checks
from circuitatlas.analysis import stimuli
from circuitatlas.analysis.hooks import run_to_layers
from circuitatlas.errors import InvalidInput

__all__ = ["TuningResult", "ReceptiveField", "layer_activations", "receptive_field", "model_device", "radial_tuning",
           "curvature_tuning", "circular_mean", "checked_stimulus_params"]

_POSITIVE = ("radius", "width", "length", "span", "frequency")  # stimulus sizes: a NaN or 0 draws nothing


def layer_activations(model: nn.Module, layer: str, images: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """The output of ``layer`` (N, C, H, W) for ``images`` (N, 3, H, W), stopping the forward there."""
    with contextlib.nullcontext() if grad else torch.no_grad():
        return run_to_layers(model, [layer], images)[layer]


@dataclass(frozen=True)
class ReceptiveField:
    """Where the centre unit of a layer's map looks in a square input.

    Attributes
    ----------
    centre : (int, int)
        Input pixel (row, col): centre of mass of |d output / d input|.
    box : (int, int, int, int)
        (top, left, bottom, right) of the input pixels with a non-zero gradient, bottom/right
        exclusive.
    position : (int, int)
        (row, col) of the centre unit in the layer's map.
    stride : float
        Input pixels per map position.
    """

    centre: tuple[int, int]
    box: tuple[int, int, int, int]
    position: tuple[int, int]
    stride: float


def receptive_field(model: nn.Module, layer: str, size: int, device: torch.device | str = "cpu") -> ReceptiveField:
    """The receptive field of the centre unit of ``layer``'s map in a (size x size) input, found by
    autograd on a grey image; the whole image, centred, when the gradient is zero."""
    x = torch.full((1, 3, size, size), 0.5, device=device, requires_grad=True)
    out = layer_activations(model, layer, x, grad=True)
    h, w = out.shape[2] // 2, out.shape[3] // 2
    (g,) = torch.autograd.grad(out[0, :, h, w].abs().sum() + out[0, :, h, w].sum(), x, allow_unused=True)
    mass = g.abs().sum(dim=(0, 1)).detach().cpu().numpy() if g is not None else None
    stride = size / out.shape[2]
    if mass is None or mass.sum() == 0:
        return ReceptiveField((size // 2, size // 2), (0, 0, size, size), (h, w), stride)
    rows, cols = np.mgrid[0:size, 0:size]
    r = float((rows * mass).sum() / mass.sum())
    c = float((cols * mass).sum() / mass.sum())
    on_rows, on_cols = np.flatnonzero(mass.any(axis=1)), np.flatnonzero(mass.any(axis=0))
    box = (int(on_rows[0]), int(on_cols[0]), int(on_rows[-1]) + 1, int(on_cols[-1]) + 1)
    return ReceptiveField((int(round(r)), int(round(c))), box, (h, w), stride)


def circular_mean(angles_deg: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preferred angle (degrees in [0, 360)) and vector strength in [0, 1] of non-negative
    ``weights`` (n, C) over ``angles_deg`` (n,).

    >>> pref, strength = circular_mean(np.array([0, 90, 180, 270]), np.array([[0.0], [1.0], [0.0], [0.0]]))
    >>> float(pref[0]), float(strength[0])
    (90.0, 1.0)
    """
    w = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    z = (w * np.exp(1j * np.deg2rad(angles_deg))[:, None]).sum(0)
    total = w.sum(0)
    pref = np.degrees(np.angle(z)) % 360
    strength = np.where(total > 0, np.abs(z) / np.where(total > 0, total, 1), 0.0)
    return np.round(pref, 9) % 360, strength


@dataclass
class TuningResult:
    """Responses (n_angles, C) of ``channels`` of ``layer`` to a stimulus rotated over ``angles``."""

    layer: str
    channels: list[int]
    angles: np.ndarray
    responses: np.ndarray
    preferred_deg: np.ndarray  # circular mean of the rectified response
    selectivity: np.ndarray  # vector strength: 1 = responds to one angle only, 0 = untuned
    stimulus: str
    params: dict = field(default_factory=dict)
    period: float = 360.0  # 180 for stimuli that look the same turned half way (lines, gratings)


def model_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """``device``, or where the model's parameters live (the CPU for a model without any)."""
    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _responses(model, layer, images: np.ndarray, channels, at, max_over_positions, device, batch, mean_std):
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).to(device)
        if mean_std is not None:
            mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in mean_std)
            x = (x - mean) / std
        act = layer_activations(model, layer, x)
        act = act[:, channels]
        out.append((act.amax(dim=(2, 3)) if max_over_positions else act[:, :, at[0], at[1]]).float().cpu().numpy())
    return np.concatenate(out)


def checked_stimulus_params(params: dict) -> dict:
    """``params`` with each stimulus size among them (``radius``, ``width``...) a positive, finite
    number; InvalidInput otherwise."""
    return {key: checks.real(key, value, 0.0, above=True) if key in _POSITIVE and value is not None else value
            for key, value in params.items()}


def radial_tuning(
    model: nn.Module,
    layer: str,
    channels: Sequence[int] | None = None,
    stimulus: str = "curve",
    n_angles: int = 64,
    size: int = 64,
    max_over_positions: bool = False,
    batch: int = 64,
    device: str | torch.device | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    period: float = 360.0,
    field: ReceptiveField | None = None,
    **stimulus_params,
) -> TuningResult:
    """Rotate ``stimulus`` (a name in :data:`stimuli.STIMULI` with an ``orientation``) over
    ``n_angles`` angles, centred on the receptive field of ``layer``'s centre unit, and read each
    channel's response there (or its maximum over positions).

    ``normalize=(mean, std)`` is applied to the images first (ImageNet models want it).
    ``period=180`` for stimuli that repeat after half a turn (lines, gratings): preferred angles
    and selectivity are then taken over doubled angles, preferred angles in [0, 180). ``field``:
    the layer's :func:`receptive_field` at this size when already found (else found here).
    """
    if period not in (180.0, 360.0):
        raise InvalidInput(f"period must be 180 or 360 degrees, not {period!r}")
    n_angles = checks.whole("n_angles", n_angles, 2)
    stimulus_params = checked_stimulus_params(stimulus_params)
    model = model.eval()
    device = model_device(device, model)
    field = field or receptive_field(model, layer, size, device)
    (row, col), at = field.centre, field.position
    angles = np.arange(n_angles) * 360.0 / n_angles
    fn = stimuli.STIMULI.get(stimulus)
    if fn is None or "orientation" not in fn.__code__.co_varnames:
        raise InvalidInput(f"stimulus {stimulus!r} has no orientation to rotate; "
                         f"choose one of {sorted(n for n, f in stimuli.STIMULI.items() if 'orientation' in f.__code__.co_varnames)}")
    accepted = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    unknown = sorted(set(stimulus_params) - set(accepted))
    if unknown:
        raise InvalidInput(f"stimulus {stimulus!r} takes no {', '.join(unknown)}; it takes "
                           f"{', '.join(a for a in accepted if a not in ('orientation', 'size'))}")
    params = {"size": size, **stimulus_params}
    if "position" in fn.__code__.co_varnames and "position" not in params:
        params["position"] = (row, col)
    images = np.stack([fn(orientation=a, **params) for a in angles])
    if channels is None:
        channels = list(range(layer_activations(model, layer, torch.from_numpy(images[:1]).permute(0, 3, 1, 2)
                                                 .to(device)).shape[1]))
    channels = list(channels)
    responses = _responses(model, layer, images, channels, at, max_over_positions, device, batch, normalize)
    preferred, strength = circular_mean(angles * 360.0 / period, responses)
    return TuningResult(layer, channels, angles, responses, preferred * period / 360.0, strength, stimulus,
                        {**{k: v for k, v in params.items() if k != "position"}, "position": [row, col],
                         "n_angles": n_angles, "max_over_positions": max_over_positions, "period": period},
                        float(period))


def curvature_tuning(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    orientations: Sequence[float],
    radii: Sequence[float] = (2, 3, 4, 5, 6, 8, 10, 14, 20, 40),
    size: int = 64,
    device: str | torch.device | None = None,
    **curve_params,
) -> np.ndarray:
    """Responses (len(radii), len(channels)) to curves of each radius at each channel's
    ``orientations`` (usually its preferred one); a straight line is the large-radius limit."""
    model = model.eval()
    device = model_device(device, model)
    field = receptive_field(model, layer, size, device)
    (row, col), at = field.centre, field.position
    out = np.zeros((len(radii), len(channels)))
    for j, (channel, orientation) in enumerate(zip(channels, orientations)):
        images = np.stack([stimuli.curve(orientation, radius=r, size=size, position=(row, col), **curve_params)
                           for r in radii])
        out[:, j] = _responses(model, layer, images, [channel], at, False, device, 64, None)[:, 0]
    return out
