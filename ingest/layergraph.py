"""``nn.Module`` -> :class:`LayerGraph`: weight layers, channel provenance, observation layers.

The model is traced with ``torch.fx`` at a given input size and every traced node is handed to
the handler for its op (:mod:`circuitatlas.ingest.handlers`), which tracks, per channel, which
neurons (``(layer, channel)`` pairs) a value carries, through pointwise ops, pooling, concat
(channel offsets), reshapes (channel shuffles) and sums (the residual stream: a layer of its
own). Every conv/linear/add becomes a :class:`WeightLayer` whose per-input-channel sources give
the direct edges; a BatchNorm right after a conv is folded into it. The observation layers
(blocks whose outputs are compared by expanded weights) are added last, and every layer is
numbered in graph order.
"""

from __future__ import annotations

from typing import Iterable

from torch import fx, nn

from circuitatlas.errors import IngestError
from circuitatlas.ingest.graphtypes import (
    INPUT_LAYER,
    LayerGraph,
    LayerInfo,
    Source,
    WeightLayer,
)
from circuitatlas.ingest.memory import check_input_memory, record_shapes
from circuitatlas.ingest.provenance import node_shape
from circuitatlas.ingest.tracestate import TraceState, module_output

__all__ = ["LayerInfo", "WeightLayer", "LayerGraph", "build_layer_graph", "INPUT_LAYER", "trace",
           "default_observation_layers"]


def trace(model: nn.Module, input_size: tuple[int, int, int], force: bool = False) -> fx.GraphModule:
    """Symbolically trace ``model`` (in eval mode) and record every value's shape; an input size
    whose activations would not fit in memory is refused first unless ``force``."""
    model = model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds; the message is what matters
        raise IngestError(f"torch.fx cannot trace {type(model).__name__}: {str(exc).splitlines()[0]}") from None
    try:  # shapes from fake tensors: seconds less than a real forward pass on a large network
        needed: int | None = record_shapes(gm, input_size)
    except Exception:  # an op fake tensors cannot run: the real pass below records the shapes
        needed = None
    check_input_memory(needed, input_size, force)
    if needed is None:
        try:
            record_shapes(gm, input_size, fake=False)
        except Exception as exc:
            raise IngestError(
                f"{type(model).__name__} does not run on input size {tuple(input_size)}: {str(exc).splitlines()[0]}"
            ) from None
    return gm


def build_layer_graph(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 224, 224),
    observation_layers: Iterable[str] | None = None,
    lenient: bool = False,
    force: bool = False,
) -> LayerGraph:
    """Trace ``model`` and extract its weight layers, channel provenance and observation layers.

    ``observation_layers=None`` picks the top-level blocks (see :func:`default_observation_layers`).
    An op that cannot be followed raises :class:`IngestError` naming it, or with
    ``lenient=True`` is skipped (channels behind it get no direct edges). An input size too
    large for the memory available is refused unless ``force`` (:mod:`.memory`).
    """
    gm = trace(model, tuple(input_size), force)
    state = TraceState(gm, lenient)
    for node in gm.graph.nodes:
        state.follow(node)
    observed = (list(observation_layers) if observation_layers is not None
                else default_observation_layers(model, gm, state.layers))
    _add_blocks(state, gm, observed)
    flipped = [name for name in observed if state.layers[name].channels_last]
    if flipped:
        raise IngestError(f"observation layers {flipped} have their channels last (N, H, W, C); observe the block "
                          "that contains them")
    layers = _in_graph_order(gm, state)
    observed.sort(key=lambda n: layers[n].order)
    weight_layers = state.weight_layers
    feeds = sorted({(src, w.name) for w in weight_layers.values() for srcs in w.sources for src, _ in srcs},
                   key=lambda p: (layers[p[1]].order, layers[p[0]].order))
    return LayerGraph(layers, weight_layers, observed, feeds, gm, state.output_nodes, tuple(input_size))


def _add_blocks(state: TraceState, gm: fx.GraphModule, observed: list[str]) -> None:
    """Observation layers that are not weight layers become ``block`` layers, with the branch
    each channel comes from."""
    for name in observed:
        if name in state.layers:
            continue
        node = module_output(gm, name)
        state.add_layer(name, "block", node_shape(node)[1:], node)
        if node.name in state.prov and state.prov[node.name].canonical:
            channels = state.prov[node.name].channels
            state.layers[name].branches = [_branch_of(name, sources) for sources in channels]
            state.layers[name].sources = list(channels)


def _in_graph_order(gm: fx.GraphModule, state: TraceState) -> dict[str, LayerInfo]:
    """The layers by the position of their value in the graph (a block after the weight layer
    with the same value), numbered again in that order."""
    position = {node.name: i for i, node in enumerate(gm.graph.nodes)}
    by_position = sorted(state.layers.values(),
                         key=lambda info: (position[state.output_nodes[info.name]], info.kind == "block"))
    for i, info in enumerate(by_position):
        info.order = i
    return {info.name: info for info in by_position}


def _branch_of(block: str, sources: tuple[Source, ...]) -> str | None:
    """The child module of ``block`` that a channel comes from, when it comes from exactly one
    (``inception3a.branch2.1.conv`` -> ``branch2``); None for residual sums or outside sources."""
    layers = {layer for layer, _ in sources}
    if len(layers) != 1:
        return None
    (layer,) = layers
    if not layer.startswith(block + "."):
        return None
    return layer[len(block) + 1:].split(".")[0]


def default_observation_layers(model: nn.Module, gm: fx.GraphModule, layers: dict[str, LayerInfo]) -> list[str]:
    """The model's top-level blocks with a spatial output: plain ``nn.Sequential`` containers
    are opened one level at a time (ResNet's ``layer1`` -> ``layer1.0``, VGG's ``features`` ->
    its convs); modules without weights, not called, or with a flat output are left out."""
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    weight_names = [name for name, info in layers.items() if info.kind in ("conv", "linear", "add")]
    found: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if not any(w == path or w.startswith(path + ".") for w in weight_names):
                continue
            if type(child) is nn.Sequential:
                visit(path, child)
            elif path in layers or any(c == path or c.startswith(path + ".") for c in called):
                node = layers[path] if path in layers else None
                shape = node.shape if node else node_shape(module_output(gm, path))[1:]
                if len(shape) == 3:
                    found.append(path)

    visit("", model)
    return found
