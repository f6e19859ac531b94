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
    "WEIGHT_MODULES", "LINEAR_FUNCTIONS", "FOLDABLE_NORM_MODULES",
    "NONLINEAR_MODULES", "NONLINEAR_FUNCTIONS", "NONLINEAR_METHODS",
    "AFFINE_MODULES", "AFFINE_FUNCTIONS", "AFFINE_METHODS", "AFFINE_NAMES",
    "POOL_MODULES", "POOL_FUNCTIONS",
    "FLATTEN_MODULES", "FLATTEN_FUNCTIONS", "FLATTEN_METHODS",
    "ADD_FUNCTIONS", "ADD_METHODS", "SUB_FUNCTIONS", "SUB_METHODS", "MUL_FUNCTIONS", "MUL_METHODS",
    "DIV_FUNCTIONS", "DIV_METHODS", "CAT_FUNCTIONS", "CAT_METHODS", "BATCHNORM_FUNCTIONS", "LAYERNORM_MODULES",
    "LAYERNORM_FUNCTIONS", "MEAN_FUNCTIONS", "MEAN_METHODS", "RESHAPE_FUNCTIONS", "RESHAPE_METHODS",
    "REARRANGE_FUNCTIONS", "REARRANGE_METHODS", "SPLIT_FUNCTIONS", "SPLIT_METHODS", "GETITEM_FUNCTIONS",
]

# layers with weights: each becomes a WeightLayer (F.linear with a parameter as weight too)
WEIGHT_MODULES = (nn.Conv2d, nn.Linear)
LINEAR_FUNCTIONS = frozenset({F.linear})
# folded into the convolution before it when that convolution feeds only it; else a per-channel scale
FOLDABLE_NORM_MODULES = (nn.BatchNorm2d, nn.BatchNorm1d)

# per-channel and nonlinear (dropout and local response norm included): identity when linearised
NONLINEAR_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.LocalResponseNorm, nn.PReLU, nn.Softplus, nn.Mish, nn.Dropout, nn.Dropout2d,
)
NONLINEAR_FUNCTIONS = frozenset({
    torch.relu, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish,
    F.hardsigmoid, F.sigmoid, F.tanh, F.dropout, F.local_response_norm, F.hardtanh, F.mish,
})
NONLINEAR_METHODS = frozenset({"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_"})

# per-channel and the identity in eval mode (stochastic depth, drop path): kept as they are when linearised
AFFINE_MODULES = (nn.Identity,)
AFFINE_FUNCTIONS = frozenset({torch.clone})
# ... and by qualified name, so that following them does not import torchvision (seconds at start-up)
AFFINE_NAMES = frozenset({"torchvision.ops.stochastic_depth.StochasticDepth",
                          "torchvision.ops.stochastic_depth.stochastic_depth"})
AFFINE_METHODS = frozenset({"contiguous", "clone", "detach", "float", "to"})

# eval-mode BatchNorm as a function (timm's norm+activation layers): a per-channel scale
BATCHNORM_FUNCTIONS = frozenset({F.batch_norm})
# LayerNorm over the channels at each position (ConvNeXt): a per-position normaliser, nonlinear,
# the identity when linearised; its per-channel weight is a scale
LAYERNORM_MODULES = (nn.LayerNorm,)
LAYERNORM_FUNCTIONS = frozenset({F.layer_norm})

# spatial pooling keeps each channel's sources
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = frozenset({F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d})

# a global mean over the spatial dims (MNASNet's x.mean([2, 3])): each channel keeps its sources
MEAN_FUNCTIONS = frozenset({torch.mean})
MEAN_METHODS = frozenset({"mean"})

# ops that only move elements: the result's channels are found by applying the op to channel ids
RESHAPE_FUNCTIONS = frozenset({torch.reshape})
RESHAPE_METHODS = frozenset({"reshape", "view"})
REARRANGE_FUNCTIONS = frozenset({torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze})
REARRANGE_METHODS = frozenset({"permute", "transpose", "squeeze", "unsqueeze"})
SPLIT_FUNCTIONS = frozenset({torch.chunk, torch.split})
SPLIT_METHODS = frozenset({"chunk", "split"})
GETITEM_FUNCTIONS = frozenset({operator.getitem})

# (N, C, H, W) -> (N, C*H*W): a linear layer after it reads every position of every channel
FLATTEN_MODULES = (nn.Flatten,)
FLATTEN_FUNCTIONS = frozenset({torch.flatten})
FLATTEN_METHODS = frozenset({"flatten"})

# two-operand ops: a sum (or difference) of two maps is a layer of its own, one neuron per channel
# (the residual stream); a product of two maps is a gate (squeeze-excite): the channels are the
# larger map's; a product with a constant scales the channels
ADD_FUNCTIONS = frozenset({operator.add, operator.iadd, torch.add})
ADD_METHODS = frozenset({"add", "add_"})
SUB_FUNCTIONS = frozenset({operator.sub, operator.isub, torch.sub})
SUB_METHODS = frozenset({"sub", "sub_"})
MUL_FUNCTIONS = frozenset({operator.mul, operator.imul, torch.mul})
MUL_METHODS = frozenset({"mul", "mul_"})
DIV_FUNCTIONS = frozenset({operator.truediv, operator.itruediv, torch.div})
DIV_METHODS = frozenset({"div", "div_"})

# concatenation along channels: the operands' channels one after another
CAT_FUNCTIONS = frozenset({torch.cat, torch.concat})
CAT_METHODS = frozenset({"cat"})
