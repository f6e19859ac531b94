"""BatchNorm folded into the convolution before it, for rendering.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be folded
into the convolution's weights and bias: same outputs, one layer less to run forwards and
backwards at every optimisation step (and, under bf16 autocast, no casts to fp32 and back).

Which convolution a BatchNorm follows is read from the order modules are registered in; a wrong
guess cannot slip through, because the folded copy is only used when its activations equal the
original's on a random input.
"""

from __future__ import annotations

import copy
from typing import Collection, Sequence

import torch
from torch import nn

from circuitatlas.analysis.folding import fold_batchnorm_weights
from circuitatlas.analysis.hooks import run_to_layers

__all__ = ["fold_batchnorm", "folded_for_layers"]


def fold_batchnorm(model: nn.Module, keep: Collection[str] = ()) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) in which every ``Conv2d`` directly followed, among its
    parent's children, by a ``BatchNorm2d`` of matching width carries that BatchNorm, which
    becomes ``nn.Identity``; convolutions named in ``keep`` (observed layers: their own output
    would change) are left unfolded. Returns the copy and the number of BatchNorms folded."""
    folded = copy.deepcopy(model).eval()
    count = 0
    for prefix, parent in folded.named_modules():
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if f"{prefix}.{conv_name}".lstrip(".") in keep:
                continue
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.running_mean is not None and conv.out_channels == bn.num_features):
                setattr(parent, conv_name, _fused(conv, bn))
                setattr(parent, bn_name, nn.Identity())
                count += 1
    return folded, count


def _fused(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` with ``bn`` folded into its weight and bias (in ``conv``'s dtype)."""
    fused = copy.deepcopy(conv)
    weight, bias = fold_batchnorm_weights(conv.weight, conv.bias, bn)
    fused.weight = nn.Parameter(weight.to(conv.weight.dtype), conv.weight.requires_grad)
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype), conv.bias is not None and conv.bias.requires_grad)
    return fused


def folded_for_layers(model: nn.Module, layers: Sequence[str], size: int, device: torch.device,
                      rtol: float = 1e-3) -> nn.Module:
    """``model`` with BatchNorm folded where that leaves the activations of ``layers`` unchanged
    (checked in the model's own precision on random images of ``size`` px); else ``model`` itself. A convolution that
    is itself one of ``layers`` keeps its BatchNorm (which runs after it, beyond the layer read)."""
    folded, count = fold_batchnorm(model, keep=set(layers))
    if count == 0 or not layers:
        return model
    dtype = next(model.parameters(), torch.empty(0)).dtype
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    with torch.no_grad():
        want = run_to_layers(model, list(layers), x)
        got = run_to_layers(folded.to(device), list(layers), x)
    for layer in layers:
        scale = float(want[layer].abs().max()) + 1e-12
        if float((want[layer] - got[layer]).abs().max()) > rtol * scale:
            return model
    return folded
