"""Forward hooks as scoped resources: always removed, errors included; optionally stopping the
forward pass once every requested layer has been computed. Outputs come channels first (a
linear layer over a channels-last map is permuted)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from circuitatlas.errors import InvalidInput

__all__ = ["capture", "run_to_layers", "channels_first", "is_channels_last"]


class _Stop(Exception):
    """Raised from a hook to end the forward pass early."""


@contextlib.contextmanager
def capture(model: nn.Module, layers: Sequence[str], stop: bool = True,
            copy: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of ``layers`` (module paths) while the block runs; with ``stop`` the
    forward pass ends once all of them are computed (use :func:`run_to_layers`). Without ``stop``
    pass ``copy``: an in-place op later in the pass (``ReLU(inplace=True)``, ``out += identity``)
    would otherwise change what was recorded."""
    modules = {}
    for layer in layers:
        try:
            modules[layer] = model.get_submodule(layer)
        except AttributeError:
            raise InvalidInput(f"{type(model).__name__} has no layer {layer!r}") from None
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(module, _inputs, output):
            output = output.clone() if copy else output  # clone keeps the autograd graph (renders need it)
            store[name] = channels_first(output, module)
            if stop and len(store) == len(modules):
                raise _Stop

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def is_channels_last(output: torch.Tensor, module: nn.Module) -> bool:
    """Whether ``module``'s ``output`` has its channels last: a Linear over (N, H, W, C)
    (ConvNeXt's pointwise MLPs), where the graph stores the layer channels first."""
    return isinstance(module, nn.Linear) and output.dim() == 4


def channels_first(output: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``module``'s ``output`` with its channels on dim 1, as the graph stores the layer."""
    return output.permute(0, 3, 1, 2) if is_channels_last(output, module) else output


def run_to_layers(model: nn.Module, layers: Sequence[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for ``images``, computing no more of the network than needed."""
    with capture(model, layers, copy=len(layers) > 1) as store:  # later in-place ops must not touch earlier ones
        try:
            model(images)
        except _Stop:
            pass
    missing = [layer for layer in layers if layer not in store]
    if missing:
        raise InvalidInput(f"layers {missing} were not reached by the forward pass")
    return dict(store)
