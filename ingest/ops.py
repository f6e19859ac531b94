"""The traced ops that ingest knows, by family, declared once.

Each family is listed three ways, as torch.fx sees it: modules (``call_module``, matched by
class), functions (``call_function``, matched by identity) and tensor methods
(``call_method``, matched by name). :mod:`circuitatlas.ingest.provenance` registers a channel
provenance handler per family; :mod:`circuitatlas.ingest.expanded` turns the nonlinear ones
into identities and max-pooling into average pooling.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "WEIGHT_MODULES", "FOLDABLE_NORM_MODULES",
    "NONLINEAR_MODULES", "NONLINEAR_FUNCTIONS", "NONLINEAR_METHODS",
    "AFFINE_MODULES", "AFFINE_FUNCTIONS", "AFFINE_METHODS",
    "POOL_MODULES", "POOL_FUNCTIONS",
    "FLATTEN_MODULES", "FLATTEN_FUNCTIONS", "FLATTEN_METHODS",
    "ADD_FUNCTIONS", "ADD_METHODS", "MUL_FUNCTIONS", "MUL_METHODS", "CAT_FUNCTIONS", "CAT_METHODS",
]

# layers with weights: each becomes a WeightLayer
WEIGHT_MODULES = (nn.Conv2d, nn.Linear)
# folded into the convolution before it when that convolution feeds only it; else per-channel affine
FOLDABLE_NORM_MODULES = (nn.BatchNorm2d,)

# per-channel and nonlinear (dropout and local response norm included): identity when linearised
NONLINEAR_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.LocalResponseNorm, nn.PReLU, nn.Softplus, nn.Mish, nn.Dropout, nn.Dropout2d,
)
NONLINEAR_FUNCTIONS = frozenset({
    torch.relu, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish,
    F.hardsigmoid, F.sigmoid, F.tanh, F.dropout, F.local_response_norm,
})
NONLINEAR_METHODS = frozenset({"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_"})

# per-channel and already affine in eval mode: kept as they are when linearised
AFFINE_MODULES = (nn.Identity, nn.BatchNorm1d)
AFFINE_FUNCTIONS = frozenset({F.batch_norm, torch.clone})
AFFINE_METHODS = frozenset({"contiguous", "clone", "detach"})

# spatial pooling keeps each channel's sources
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = frozenset({F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d})

# (N, C, H, W) -> (N, C*H*W): a linear layer after it reads every position of every channel
FLATTEN_MODULES = (nn.Flatten,)
FLATTEN_FUNCTIONS = frozenset({torch.flatten})
FLATTEN_METHODS = frozenset({"flatten", "view", "reshape"})

# two-operand ops: a sum carries both operands' sources; a product (a gate) the larger map's
ADD_FUNCTIONS = frozenset({operator.add, operator.iadd, torch.add})
ADD_METHODS = frozenset({"add", "add_"})
MUL_FUNCTIONS = frozenset({operator.mul, operator.imul, torch.mul, operator.truediv})
MUL_METHODS = frozenset({"mul", "mul_", "div"})

# concatenation along channels: the operands' channels one after another
CAT_FUNCTIONS = frozenset({torch.cat, torch.concat})
CAT_METHODS = frozenset({"cat"})
