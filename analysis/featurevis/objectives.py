"""Objectives as small composable values (after lucent): an :class:`Objective` maps the captured
activations ``{layer: (B, C, H, W)}`` to one score per image (B,), to be maximised. Objectives add,
subtract, scale and negate; ``"layer:channel"`` parses into a channel objective.

Vectorised over the batch: ``channel(layer, [c0, c1, ...])`` scores image i by channel c_i, so a
whole layer renders in one batch with one objective instead of a sum of per-channel ones.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from circuitatlas.errors import InvalidInput

__all__ = ["Objective", "channel", "neuron", "units", "direction", "diversity", "contrast_penalty", "as_objective",
           "INPUT"]

INPUT = "input"  # the image fed to the model (after transforms), for image-space objectives

Score = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class Objective:
    """A per-image score over named layers' activations, with a readable description."""

    def __init__(self, score: Score, layers: Sequence[str], description: str) -> None:
        self.score = score
        self.layers = list(dict.fromkeys(layers))
        self.description = description

    def __call__(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.score(acts)

    def __add__(self, other: "Objective | float") -> "Objective":
        if isinstance(other, (int, float)):
            return Objective(lambda a: self(a) + other, self.layers, f"({self.description} + {other})")
        return Objective(lambda a: self(a) + other(a), self.layers + other.layers,
                         f"({self.description} + {other.description})")

    __radd__ = __add__

    def __neg__(self) -> "Objective":
        return Objective(lambda a: -self(a), self.layers, f"-{self.description}")

    def __sub__(self, other: "Objective | float") -> "Objective":
        return self + (-other)

    def __mul__(self, k: float) -> "Objective":
        if not isinstance(k, (int, float)):
            raise TypeError("objectives scale by numbers only")
        return Objective(lambda a: k * self(a), self.layers, f"{k} * {self.description}")

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.description})"


class _PerImage:
    """Channel index per image: one for all (an int) or one each (a list), kept on each device
    it is asked for, so that the optimisation loop copies nothing to the GPU."""

    def __init__(self, channels: int | Sequence[int]) -> None:
        self.single = channels if isinstance(channels, int) else None
        self.index = None if isinstance(channels, int) else torch.as_tensor(list(channels), dtype=torch.long)
        self._on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, batch: int, device: torch.device) -> torch.Tensor:
        if self.single is not None:
            return torch.full((batch,), self.single, dtype=torch.long, device=device)
        if len(self.index) != batch:
            raise ValueError(f"{len(self.index)} channels for a batch of {batch} images")
        if device not in self._on:
            self._on[device] = self.index.to(device)
        return self._on[device]


def channel(layer: str, n: int | Sequence[int]) -> Objective:
    """Mean activation of channel ``n`` (or, per image, of ``n[i]``) over all positions."""
    per_image = _PerImage(n)

    def score(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        a = acts[layer]
        return a[torch.arange(a.shape[0], device=a.device), per_image(a.shape[0], a.device)].mean(dim=(1, 2))

    return Objective(score, [layer], f"{layer}:{n}")


def neuron(layer: str, n: int | Sequence[int], row: int | None = None, col: int | None = None) -> Objective:
    """Activation of channel ``n`` at one position (default: the centre of the map)."""
    per_image = _PerImage(n)

    def score(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        a = acts[layer]
        r = a.shape[2] // 2 if row is None else row
        c = a.shape[3] // 2 if col is None else col
        return a[torch.arange(a.shape[0], device=a.device), per_image(a.shape[0], a.device), r, c]

    return Objective(score, [layer], f"{layer}:{n}@centre" if row is None else f"{layer}:{n}@{row},{col}")


def units(pairs: Sequence[tuple[str, int]], at_centre: bool = False) -> Objective:
    """Image i scores its own unit ``pairs[i] = (layer, channel)``: the channel's mean, or with
    ``at_centre`` its centre neuron. The layers may differ from image to image, so one batch can
    render units of several layers (its forward pass runs to the deepest of them). Units of one
    layer give :func:`channel` (or :func:`neuron`) itself."""
    pairs = [(layer, int(c)) for layer, c in pairs]
    layers = list(dict.fromkeys(layer for layer, _ in pairs))
    make = neuron if at_centre else channel
    rows = {layer: [i for i, (l, _) in enumerate(pairs) if l == layer] for layer in layers}
    chosen = {layer: [pairs[i][1] for i in rows[layer]] for layer in layers}
    if len(layers) == 1:
        return make(layers[0], chosen[layers[0]])
    parts = {layer: (_PerImage(rows[layer]), make(layer, chosen[layer])) for layer in layers}
    order = [i for layer in layers for i in rows[layer]]  # batch positions, grouped by layer
    back = _PerImage(sorted(range(len(order)), key=order.__getitem__))  # grouped -> batch order

    def score(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        device = acts[layers[0]].device
        grouped = [objective({layer: acts[layer][index(len(rows[layer]), device)]})
                   for layer, (index, objective) in parts.items()]
        return torch.cat(grouped)[back(len(order), device)]

    names = ", ".join(f"{layer}:{chosen[layer]}" for layer in layers)
    return Objective(score, layers, f"units({names})" + ("@centre" if at_centre else ""))


def direction(layer: str, vector: Sequence[float] | torch.Tensor) -> Objective:
    """Mean over positions of the activation's dot product with ``vector`` (C,)."""
    v = torch.as_tensor(vector, dtype=torch.float32)

    def score(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        a = acts[layer]
        return torch.einsum("bchw,c->bhw", a, v.to(a.device, a.dtype)).mean(dim=(1, 2))

    return Objective(score, [layer], f"{layer}·direction")


def diversity(layer: str) -> Objective:
    """Negative mean cosine similarity of each image's Gram matrix to the others' (push a batch
    of images for one unit apart). Couples the images of a batch by design."""
    def score(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        a = acts[layer]
        b = a.shape[0]
        flat = a.reshape(b, a.shape[1], -1)
        gram = torch.nn.functional.normalize(torch.bmm(flat, flat.transpose(1, 2)).reshape(b, -1), dim=1)
        sim = gram @ gram.T
        return -(sim.sum(dim=1) - sim.diagonal()) / max(b - 1, 1)

    return Objective(score, [layer], f"diversity({layer})")


def contrast_penalty(weight: float = 1.0) -> Objective:
    """``-weight`` x mean squared distance of the image from grey: keeps pixels that do not help
    the objective from saturating (add it to a unit objective)."""
    return Objective(lambda a: -weight * ((a[INPUT] - 0.5) ** 2).mean(dim=(1, 2, 3)), [INPUT],
                     f"{weight} * contrast_penalty")


def as_objective(spec: "Objective | str") -> Objective:
    """An Objective as is, or ``"layer:channel"`` parsed into :func:`channel`.

    >>> as_objective("features.7:3").description
    'features.7:3'
    """
    if isinstance(spec, Objective):
        return spec
    layer, sep, n = str(spec).rpartition(":")
    if not sep or not layer or not n.strip().isdigit():
        raise InvalidInput(f"expected 'layer:channel', got {spec!r}")
    return channel(layer, int(n))
