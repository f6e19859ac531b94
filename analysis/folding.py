"""BatchNorm folded into the convolution before it: the one folding formula of circuitatlas.

In eval mode a BatchNorm is a per-channel affine map ``y = (x - mean) * scale + shift`` with
``scale = gamma / sqrt(var + eps)``, so a convolution followed by it is one convolution with
weight ``w * scale`` and bias ``(b - mean) * scale + shift``. Ingest folds the weights it
stores (:mod:`circuitatlas.ingest.provenance`); rendering folds modules
(:mod:`circuitatlas.analysis.featurevis.fusion`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_batchnorm_weights", "batchnorm_scale"]


def batchnorm_scale(running_var: torch.Tensor, eps: float, weight: torch.Tensor | None) -> torch.Tensor:
    """The per-channel factor of an eval-mode BatchNorm: ``weight / sqrt(var + eps)``."""
    with torch.no_grad():
        std = torch.sqrt(running_var + eps)
        return weight / std if weight is not None else 1.0 / std


def fold_batchnorm_weights(weight: torch.Tensor, bias: torch.Tensor | None,
                           bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of a convolution ``(weight, bias)`` with eval-mode ``bn`` after it.

    ``weight`` is (out, in / groups, kh, kw), ``bias`` (out,) or None (zero). The results do not
    require grad and have the dtype torch's type promotion gives ``weight`` and ``bn``'s tensors.
    """
    with torch.no_grad():
        scale = batchnorm_scale(bn.running_var, bn.eps, bn.weight if bn.affine else None)
        shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        b = bias if bias is not None else torch.zeros_like(bn.running_mean)
        folded = weight * scale.reshape(-1, *[1] * (weight.dim() - 1))
        return folded, (b - bn.running_mean) * scale + shift
