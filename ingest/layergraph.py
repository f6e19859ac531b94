"""``nn.Module`` -> :class:`LayerGraph`: weight layers, channel provenance, observation layers.

The model is traced with ``torch.fx`` at a given input size. For every traced value we
track, per channel, which neurons (``(layer, channel)`` pairs) it carries, through
pointwise ops, pooling, concat (channel offsets) and add (residuals: both sources).
Every conv/linear becomes a :class:`WeightLayer` whose per-input-channel sources give
the direct edges; a BatchNorm right after a conv is folded into it.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from circuitatlas.errors import IngestError

__all__ = ["LayerInfo", "WeightLayer", "LayerGraph", "build_layer_graph", "INPUT_LAYER"]

INPUT_LAYER = "input"
Source = tuple[str, int]  # (layer name, channel)

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.Dropout, nn.Dropout2d, nn.Identity, nn.LocalResponseNorm, nn.BatchNorm2d,
    nn.BatchNorm1d, nn.PReLU, nn.Softplus, nn.Mish,
)
_POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_POINTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.dropout, F.sigmoid,
    F.tanh, torch.relu, torch.sigmoid, torch.tanh, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.local_response_norm, F.batch_norm, torch.clone,
}
_POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach", "clamp", "clamp_"}
_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul, operator.truediv}
_CAT = {torch.cat, torch.concat}
_FLATTEN_FUNCTIONS = {torch.flatten}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclass
class LayerInfo:
    """A layer node of the graph: a weight layer, the input image, or an observation block."""

    name: str
    kind: str  # "input" | "conv" | "linear" | "block"
    channels: int
    order: int
    shape: tuple[int, ...]  # output shape without the batch dim: (C, H, W) or (C,)
    branches: list[str | None] | None = None  # block layers: the branch each channel comes from


@dataclass
class WeightLayer:
    """A conv or linear layer with its effective (BatchNorm-folded) weights.

    ``weight`` is (out, in / groups, kh, kw); a linear layer reading a flattened (C, H, W)
    map is stored as a conv with an (H, W) kernel. ``sources[i]`` lists the neurons that
    carry input channel ``i``.
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


@dataclass
class _Prov:
    """Per-channel sources of a traced value; ``flat`` remembers (C, H, W) after a flatten."""

    channels: list[tuple[Source, ...]]
    flat: tuple[int, int, int] | None = None


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack)) if stack else (node.target if node.op == "call_module" else "<top>")


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(d) for d in meta.shape)


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    flat: list[Any] = []
    for arg in list(node.args) + list(node.kwargs.values()):
        flat += list(arg) if isinstance(arg, (list, tuple)) else [arg]
    return [a for a in flat if isinstance(a, fx.Node) and _shape(a) is not None]


def trace(model: nn.Module, input_size: tuple[int, int, int]) -> fx.GraphModule:
    """Symbolically trace ``model`` (in eval mode) and record every value's shape."""
    model = model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many kinds; the message is what matters
        raise IngestError(f"torch.fx cannot trace {type(model).__name__}: {str(exc).splitlines()[0]}") from None
    example = torch.zeros(1, *input_size)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as exc:
        raise IngestError(
            f"{type(model).__name__} does not run on input size {tuple(input_size)}: {str(exc).splitlines()[0]}"
        ) from None
    return gm


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(
        bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    w = weight * scale.reshape(-1, 1, 1, 1)
    return w.numpy(), ((b - bn.running_mean) * scale + shift).numpy()


def build_layer_graph(
    model: nn.Module,
    input_size: tuple[int, int, int] = (3, 224, 224),
    observation_layers: Iterable[str] | None = None,
    lenient: bool = False,
) -> LayerGraph:
    """Trace ``model`` and extract its weight layers, channel provenance and observation layers.

    ``observation_layers=None`` picks the top-level blocks (see :func:`default_observation_layers`).
    An op that cannot be followed raises :class:`IngestError` naming it, or with
    ``lenient=True`` is skipped (channels behind it get no direct edges).
    """
    gm = trace(model, tuple(input_size))
    modules = dict(gm.named_modules())
    prov: dict[str, _Prov] = {}
    layers: dict[str, LayerInfo] = {}
    weight_layers: dict[str, WeightLayer] = {}
    output_nodes: dict[str, str] = {}
    order = 0

    def add_layer(name: str, kind: str, shape: tuple[int, ...], node: fx.Node) -> None:
        nonlocal order
        if name in layers:
            raise IngestError(f"module {name!r} is called more than once; shared weights are not supported")
        layers[name] = LayerInfo(name, kind, int(shape[0]), order, shape)
        output_nodes[name] = node.name
        order += 1

    def unsupported(node: fx.Node, what: str) -> None:
        message = f"unsupported op {what} in module {_module_path(node)!r} (node {node.name})"
        if not lenient:
            raise IngestError(message + "; --lenient skips it")
        warnings.warn(message + ": skipped (--lenient); channels behind it get no direct edges", stacklevel=2)
        shape = _shape(node)
        if shape is not None and len(shape) >= 2:
            prov[node.name] = _Prov([() for _ in range(shape[1])])

    for node in gm.graph.nodes:
        shape = _shape(node)
        if node.op == "placeholder":
            if shape is None or len(shape) != 4:
                raise IngestError("the model's input must be one (N, C, H, W) image tensor")
            add_layer(INPUT_LAYER, "input", shape[1:], node)
            prov[node.name] = _Prov([((INPUT_LAYER, c),) for c in range(shape[1])])
            continue
        if node.op in ("output", "get_attr") or shape is None or len(shape) < 2:
            continue
        inputs = [a for a in _tensor_args(node) if a.name in prov]
        first = prov[inputs[0].name] if inputs else None

        if node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if first is None:
                    unsupported(node, f"{type(module).__name__} with an untracked input")
                    continue
                weight_layers[node.target] = _weight_layer(node.target, module, first)
                add_layer(node.target, "conv" if isinstance(module, nn.Conv2d) else "linear", shape[1:], node)
                prov[node.name] = _Prov([((node.target, c),) for c in range(shape[1])])
            elif isinstance(module, nn.BatchNorm2d) and inputs and _foldable(inputs[0], modules):
                conv = weight_layers[inputs[0].target]
                w, b = _fold_bn(torch.from_numpy(conv.weight), torch.from_numpy(conv.bias), module)
                conv.weight, conv.bias, conv.folded_bn = w, b, node.target
                prov[node.name] = first
            elif isinstance(module, _POINTWISE_MODULES + _POOL_MODULES) and first is not None:
                prov[node.name] = first
            elif isinstance(module, nn.Flatten) and first is not None:
                prov[node.name] = _flatten(first, _shape(inputs[0]))
            else:
                unsupported(node, type(module).__name__)
        elif node.op in ("call_function", "call_method"):
            target = node.target
            if target in _CAT or target == "cat":
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                if dim not in (1, -3) or any(a.name not in prov for a in node.args[0]):
                    unsupported(node, f"cat(dim={dim})")
                    continue
                prov[node.name] = _Prov([s for a in node.args[0] for s in prov[a.name].channels])
            elif target in _ADD or target in ("add", "add_"):
                if len(inputs) == 2 and len(prov[inputs[0].name].channels) == len(prov[inputs[1].name].channels):
                    a, b = prov[inputs[0].name].channels, prov[inputs[1].name].channels
                    prov[node.name] = _Prov([tuple(dict.fromkeys(x + y)) for x, y in zip(a, b)])
                elif len(inputs) == 1:
                    prov[node.name] = first
                else:
                    unsupported(node, "add of differently shaped tensors")
            elif target in _MUL or target in ("mul", "mul_", "div"):
                if not inputs:
                    unsupported(node, str(target))
                    continue
                # x * gate (squeeze-excitation): the channels are x's, the larger map
                main = max(inputs, key=lambda a: int(np.prod(_shape(a)[2:] or (1,))))
                prov[node.name] = prov[main.name]
            elif (target in _FLATTEN_FUNCTIONS or target in _FLATTEN_METHODS) and first is not None:
                prov[node.name] = _flatten(first, _shape(inputs[0])) if len(shape) == 2 else first
            elif (target in _POINTWISE_FUNCTIONS or target in _POINTWISE_METHODS) and first is not None:
                prov[node.name] = first
            else:
                unsupported(node, getattr(target, "__name__", str(target)))
        else:
            unsupported(node, node.op)

    observed = (list(observation_layers) if observation_layers is not None
                else default_observation_layers(model, gm, layers))
    for name in observed:
        if name in layers:
            continue
        node = _block_output(gm, name)
        node_shape = _shape(node)
        add_layer(name, "block", node_shape[1:], node)
        if node.name in prov:
            layers[name].branches = [_branch_of(name, sources) for sources in prov[node.name].channels]
    position = {node.name: i for i, node in enumerate(gm.graph.nodes)}
    by_position = sorted(layers.values(), key=lambda info: (position[output_nodes[info.name]], info.kind == "block"))
    layers = {info.name: info for info in by_position}
    for i, info in enumerate(by_position):
        info.order = i
    observed.sort(key=lambda n: layers[n].order)
    feeds = sorted({(src, w.name) for w in weight_layers.values() for srcs in w.sources for src, _ in srcs},
                   key=lambda p: (layers[p[1]].order, layers[p[0]].order))
    return LayerGraph(layers, weight_layers, observed, feeds, gm, output_nodes, tuple(input_size))


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


def _foldable(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return (node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d)
            and len(node.users) == 1)


def _flatten(first: _Prov, in_shape: tuple[int, ...] | None) -> _Prov:
    if in_shape is None or len(in_shape) != 4:
        return first
    c, h, w = in_shape[1:]
    return _Prov(first.channels, flat=(c, h, w))


def _weight_layer(name: str, module: nn.Module, source: _Prov) -> WeightLayer:
    weight = module.weight.detach().float()
    bias = module.bias.detach().float() if module.bias is not None else torch.zeros(weight.shape[0])
    if isinstance(module, nn.Conv2d):
        if len(source.channels) != module.in_channels:
            raise IngestError(f"{name}: expects {module.in_channels} input channels, traced {len(source.channels)}")
        return WeightLayer(name, "conv", weight.numpy().copy(), bias.numpy().copy(), module.groups,
                           list(source.channels))
    if source.flat is not None:
        c, h, w = source.flat
        if module.in_features != c * h * w:
            raise IngestError(f"{name}: expects {module.in_features} features, traced {c}x{h}x{w}")
        return WeightLayer(name, "linear", weight.reshape(-1, c, h, w).numpy().copy(), bias.numpy().copy(), 1,
                           list(source.channels))
    if len(source.channels) != module.in_features:
        raise IngestError(f"{name}: expects {module.in_features} features, traced {len(source.channels)}")
    return WeightLayer(name, "linear", weight.reshape(weight.shape[0], -1, 1, 1).numpy().copy(),
                       bias.numpy().copy(), 1, list(source.channels))


def _belongs(node: fx.Node, path: str) -> bool:
    if node.op == "call_module" and (node.target == path or str(node.target).startswith(path + ".")):
        return True
    return path in (node.meta.get("nn_module_stack") or {})


def _block_output(gm: fx.GraphModule, path: str) -> fx.Node:
    """The one traced value that leaves module ``path``."""
    inside = [n for n in gm.graph.nodes if _belongs(n, path)]
    if not inside:
        raise IngestError(f"no module {path!r} is called in the traced model (see `--layers`)")
    leaving = [n for n in inside if any(not _belongs(u, path) for u in n.users)]
    if len(leaving) != 1 or _shape(leaving[0]) is None:
        raise IngestError(f"module {path!r} has {len(leaving)} outputs; an observation layer needs exactly one")
    return leaving[0]


def default_observation_layers(model: nn.Module, gm: fx.GraphModule, layers: dict[str, LayerInfo]) -> list[str]:
    """The model's top-level blocks with a spatial output: plain ``nn.Sequential`` containers
    are opened one level at a time (ResNet's ``layer1`` -> ``layer1.0``, VGG's ``features`` ->
    its convs); modules without weights, not called, or with a flat output are left out."""
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    weight_names = [name for name, info in layers.items() if info.kind in ("conv", "linear")]
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
                shape = node.shape if node else _shape(_block_output(gm, path))[1:]
                if len(shape) == 3:
                    found.append(path)

    visit("", model)
    return found
