"""Channel provenance through a traced model: one handler per op family, in lookup tables.

For every traced value :class:`TraceState` records, per channel, which neurons
(``(layer, channel)`` pairs) it carries. A node is handed to the handler registered for its
module class (the nearest registered base class), function or method name; the handler
returns the node's :class:`Provenance`, or raises :class:`Unsupported` naming the op, which
fails the trace or, with ``lenient``, skips the op with a warning.

Adding an op: write ``handler(state, step) -> Provenance`` and register it with
:func:`register_op` at the bottom of this module (the op families are in
:mod:`circuitatlas.ingest.ops`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import fx, nn

from circuitatlas.analysis.folding import fold_batchnorm_weights
from circuitatlas.errors import IngestError
from circuitatlas.ingest import ops
from circuitatlas.ingest.graphtypes import INPUT_LAYER, LayerInfo, Source, WeightLayer

__all__ = ["Provenance", "Step", "TraceState", "Unsupported", "Handler", "register_op", "handler_for",
           "node_shape", "MODULE_OPS", "FUNCTION_OPS", "METHOD_OPS"]


@dataclass
class Provenance:
    """Per-channel sources of a traced value; ``flat`` remembers (C, H, W) after a flatten."""

    channels: list[tuple[Source, ...]]
    flat: tuple[int, int, int] | None = None


class Unsupported(Exception):
    """Raised by a handler for an op it cannot follow; the message names the op."""


@dataclass
class Step:
    """One traced node as a handler sees it."""

    node: fx.Node
    shape: tuple[int, ...]  # the node's output shape, batch dim included
    inputs: list[fx.Node]  # its tensor arguments with a known provenance, in order
    first: Provenance | None  # the provenance of inputs[0]
    module: nn.Module | None  # the called module (call_module nodes)
    what: str  # the op's name, for messages


Handler = Callable[["TraceState", Step], Provenance]
MODULE_OPS: dict[type, Handler] = {}
FUNCTION_OPS: dict[Callable, Handler] = {}
METHOD_OPS: dict[str, Handler] = {}


def register_op(handler: Handler, modules: Iterable[type] = (), functions: Iterable[Callable] = (),
                methods: Iterable[str] = ()) -> None:
    """Make ``handler`` follow the given module classes, functions and tensor method names."""
    for table, keys in ((MODULE_OPS, modules), (FUNCTION_OPS, functions), (METHOD_OPS, methods)):
        for key in keys:
            if key in table:
                raise ValueError(f"{key!r} already has a handler")
            table[key] = handler


def handler_for(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[Handler | None, str]:
    """The handler registered for ``node``'s op (None when there is none) and the op's name."""
    if node.op == "call_module":
        module_type = type(modules[node.target])
        found = next((MODULE_OPS[c] for c in module_type.__mro__ if c in MODULE_OPS), None)
        return found, module_type.__name__
    if node.op == "call_function":
        return FUNCTION_OPS.get(node.target), getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return METHOD_OPS.get(node.target), str(node.target)
    return None, node.op


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The traced value's shape (batch dim included), or None when it is not one tensor."""
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(d) for d in meta.shape)


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack)) if stack else (node.target if node.op == "call_module" else "<top>")


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    flat: list[Any] = []
    for arg in list(node.args) + list(node.kwargs.values()):
        flat += list(arg) if isinstance(arg, (list, tuple)) else [arg]
    return [a for a in flat if isinstance(a, fx.Node) and node_shape(a) is not None]


class TraceState:
    """The layers, weight layers and per-value provenance found so far, node by node."""

    def __init__(self, gm: fx.GraphModule, lenient: bool = False) -> None:
        self.modules = dict(gm.named_modules())
        self.lenient = lenient
        self.prov: dict[str, Provenance] = {}  # fx node name -> provenance
        self.layers: dict[str, LayerInfo] = {}
        self.weight_layers: dict[str, WeightLayer] = {}
        self.output_nodes: dict[str, str] = {}  # layer name -> fx node name

    def add_layer(self, name: str, kind: str, shape: tuple[int, ...], node: fx.Node) -> None:
        """A layer of output ``shape`` (batch dim left out) whose value is ``node``'s."""
        if name in self.layers:
            raise IngestError(f"module {name!r} is called more than once; shared weights are not supported")
        self.layers[name] = LayerInfo(name, kind, int(shape[0]), len(self.layers), shape)
        self.output_nodes[name] = node.name

    def follow(self, node: fx.Node) -> None:
        """Record ``node``'s provenance (and its layer, for weight layers and the input)."""
        shape = node_shape(node)
        if node.op == "placeholder":
            if shape is None or len(shape) != 4:
                raise IngestError("the model's input must be one (N, C, H, W) image tensor")
            self.add_layer(INPUT_LAYER, "input", shape[1:], node)
            self.prov[node.name] = Provenance([((INPUT_LAYER, c),) for c in range(shape[1])])
            return
        if node.op in ("output", "get_attr") or shape is None or len(shape) < 2:
            return
        inputs = [a for a in _tensor_args(node) if a.name in self.prov]
        handler, what = handler_for(node, self.modules)
        module = self.modules[node.target] if node.op == "call_module" else None
        step = Step(node, shape, inputs, self.prov[inputs[0].name] if inputs else None, module, what)
        try:
            if handler is None:
                raise Unsupported(what)
            self.prov[node.name] = handler(self, step)
        except Unsupported as exc:
            self._skip(node, str(exc))

    def _skip(self, node: fx.Node, what: str) -> None:
        message = f"unsupported op {what} in module {_module_path(node)!r} (node {node.name})"
        if not self.lenient:
            raise IngestError(message + "; --lenient skips it")
        warnings.warn(message + ": skipped (--lenient); channels behind it get no direct edges", stacklevel=3)
        shape = node_shape(node)
        if shape is not None and len(shape) >= 2:
            self.prov[node.name] = Provenance([() for _ in range(shape[1])])


# -- handlers -----------------------------------------------------------------------------------
def _tracked(step: Step) -> Provenance:
    """The first input's provenance; an op on untracked values cannot be followed."""
    if step.first is None:
        raise Unsupported(step.what)
    return step.first


def _pointwise(state: TraceState, step: Step) -> Provenance:
    """Per-channel ops and pooling: each channel keeps its sources."""
    return _tracked(step)


def _weight(state: TraceState, step: Step) -> Provenance:
    """Conv and linear layers: a new weight layer whose channels are its own neurons."""
    if step.first is None:
        raise Unsupported(f"{step.what} with an untracked input")
    name = step.node.target
    state.weight_layers[name] = _weight_layer(name, step.module, step.first)
    state.add_layer(name, "conv" if isinstance(step.module, nn.Conv2d) else "linear", step.shape[1:], step.node)
    return Provenance([((name, c),) for c in range(step.shape[1])])


def _batchnorm(state: TraceState, step: Step) -> Provenance:
    """Folded into the convolution before it when that convolution feeds only it; else pointwise."""
    conv_node = step.inputs[0] if step.inputs else None
    if conv_node is None or not (conv_node.op == "call_module" and len(conv_node.users) == 1
                                 and isinstance(state.modules[conv_node.target], nn.Conv2d)):
        return _pointwise(state, step)
    conv = state.weight_layers[conv_node.target]
    weight, bias = fold_batchnorm_weights(torch.from_numpy(conv.weight), torch.from_numpy(conv.bias), step.module)
    conv.weight, conv.bias, conv.folded_bn = weight.numpy(), bias.numpy(), step.node.target
    return step.first


def _flattened(first: Provenance, in_shape: tuple[int, ...] | None) -> Provenance:
    if in_shape is None or len(in_shape) != 4:
        return first
    c, h, w = in_shape[1:]
    return Provenance(first.channels, flat=(c, h, w))


def _flatten_module(state: TraceState, step: Step) -> Provenance:
    """``nn.Flatten``: the channels remember the (C, H, W) map they were flattened from."""
    return _flattened(_tracked(step), node_shape(step.inputs[0]))


def _flatten_call(state: TraceState, step: Step) -> Provenance:
    """``flatten``/``view``/``reshape``: like ``nn.Flatten`` when the result is (N, features)."""
    first = _tracked(step)
    return _flattened(first, node_shape(step.inputs[0])) if len(step.shape) == 2 else first


def _cat(state: TraceState, step: Step) -> Provenance:
    """Concatenation along channels: the operands' channels one after another."""
    node = step.node
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if dim not in (1, -3) or any(a.name not in state.prov for a in node.args[0]):
        raise Unsupported(f"cat(dim={dim})")
    return Provenance([s for a in node.args[0] for s in state.prov[a.name].channels])


def _add(state: TraceState, step: Step) -> Provenance:
    """A sum (a residual): each channel carries both operands' sources."""
    channels = [state.prov[a.name].channels for a in step.inputs]
    if len(channels) == 2 and len(channels[0]) == len(channels[1]):
        return Provenance([tuple(dict.fromkeys(x + y)) for x, y in zip(*channels)])
    if len(channels) == 1:
        return step.first
    raise Unsupported("add of differently shaped tensors")


def _mul(state: TraceState, step: Step) -> Provenance:
    """``x * gate`` (squeeze-excitation): the channels are x's, the larger map's."""
    if not step.inputs:
        raise Unsupported(str(step.node.target))
    main = max(step.inputs, key=lambda a: int(np.prod(node_shape(a)[2:] or (1,))))
    return state.prov[main.name]


def _weight_layer(name: str, module: nn.Module, source: Provenance) -> WeightLayer:
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


# -- the tables ---------------------------------------------------------------------------------
register_op(_weight, modules=ops.WEIGHT_MODULES)
register_op(_batchnorm, modules=ops.FOLDABLE_NORM_MODULES)
register_op(_pointwise, modules=ops.NONLINEAR_MODULES + ops.AFFINE_MODULES + ops.POOL_MODULES,
            functions=ops.NONLINEAR_FUNCTIONS | ops.AFFINE_FUNCTIONS | ops.POOL_FUNCTIONS,
            methods=ops.NONLINEAR_METHODS | ops.AFFINE_METHODS)
register_op(_pointwise, modules=(nn.ZeroPad2d,))  # per channel and linear: kept as it is when linearised
register_op(_flatten_module, modules=ops.FLATTEN_MODULES)
register_op(_flatten_call, functions=ops.FLATTEN_FUNCTIONS, methods=ops.FLATTEN_METHODS)
register_op(_cat, functions=ops.CAT_FUNCTIONS, methods=ops.CAT_METHODS)
register_op(_add, functions=ops.ADD_FUNCTIONS, methods=ops.ADD_METHODS)
register_op(_mul, functions=ops.MUL_FUNCTIONS, methods=ops.MUL_METHODS)
