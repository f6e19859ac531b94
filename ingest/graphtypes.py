"""The layer graph as plain data: :class:`LayerInfo`, :class:`WeightLayer`, :class:`LayerGraph`.

Built by :func:`circuitatlas.ingest.layergraph.build_layer_graph` (which re-exports these
names), read by the row builders and both writers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import fx

__all__ = ["INPUT_LAYER", "Source", "LayerInfo", "WeightLayer", "LayerGraph"]

INPUT_LAYER = "input"
Source = tuple[str, int]  # (layer name, channel)


@dataclass
class LayerInfo:
    """A layer node of the graph: a weight layer, the input image, or an observation block."""

    name: str
    kind: str  # "input" | "conv" | "linear" | "add" | "block"
    channels: int
    order: int
    shape: tuple[int, ...]  # output shape without the batch dim, channels first: (C, H, W) or (C,)
    branches: list[str | None] | None = None  # block layers: the branch each channel comes from
    channels_last: bool = False  # the module's output is (N, H, W, C) (ConvNeXt's pointwise linears)
    sources: list[tuple[Source, ...]] | None = field(default=None, repr=False)  # block layers: each channel's neurons


@dataclass
class WeightLayer:
    """A conv, linear or add layer with its effective (BatchNorm-folded) weights.

    ``weight`` is (out, in / groups, kh, kw); a linear layer reading a flattened (C, H, W)
    map is stored as a conv with an (H, W) kernel; an add of two maps of C channels as a grouped
    1x1 conv (C groups of two inputs: channel ``c`` of each operand, weighted by the factor it
    carries). ``sources[i]`` lists the neurons that carry input channel ``i``.
    """

    name: str
    kind: str
    weight: np.ndarray
    bias: np.ndarray
    groups: int
    sources: list[tuple[Source, ...]]
    folded_bn: str | None = None

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def input_channels_of(self, out_channel: int) -> range:
        """The full-tensor input channel indices that output channel ``out_channel`` reads."""
        per_group = self.weight.shape[1]
        group = out_channel // (self.out_channels // self.groups)
        return range(group * per_group, (group + 1) * per_group)


@dataclass
class LayerGraph:
    """Everything ingest needs to know about a traced model, in plain data."""

    layers: dict[str, LayerInfo]
    weight_layers: dict[str, WeightLayer]
    observation_layers: list[str]
    feeds: list[tuple[str, str]]
    graph_module: fx.GraphModule = field(repr=False)
    output_nodes: dict[str, str] = field(repr=False)  # layer name -> fx node name
    input_shape: tuple[int, ...] = ()
