"""Following a traced model node by node: :class:`TraceState` hands every node to the handler
for its op (:mod:`circuitatlas.ingest.handlers`) and keeps what they find: the layers, the
weight layers and every value's channel provenance."""

from __future__ import annotations

import warnings
from typing import Any

from torch import fx

from circuitatlas.errors import IngestError
from circuitatlas.ingest import handlers
from circuitatlas.ingest.graphtypes import INPUT_LAYER, LayerInfo, WeightLayer
from circuitatlas.ingest.provenance import Provenance, Step, Unsupported, handler_for, node_shape

__all__ = ["TraceState", "belongs", "module_output"]


def _module_path(node: fx.Node) -> str:
    """The innermost module that ``node`` runs in ('' at the top)."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        return next(reversed(stack.values()))[0]
    return str(node.target) if node.op == "call_module" else ""


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    flat: list[Any] = []
    for arg in list(node.args) + list(node.kwargs.values()):
        flat += list(arg) if isinstance(arg, (list, tuple)) else [arg]
    return [a for a in flat if isinstance(a, fx.Node) and node_shape(a) is not None]


def _tuple_of_tensors(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return isinstance(meta, (tuple, list)) and bool(meta) and all(hasattr(m, "shape") for m in meta)


def belongs(node: fx.Node, path: str) -> bool:
    """Whether ``node`` runs inside module ``path``."""
    if node.op == "call_module" and (node.target == path or str(node.target).startswith(path + ".")):
        return True
    return any(p == path or p.startswith(path + ".") for p, _ in (node.meta.get("nn_module_stack") or {}).values())


def module_output(gm: fx.GraphModule, path: str) -> fx.Node:
    """The one traced value that leaves module ``path``."""
    inside = [n for n in gm.graph.nodes if belongs(n, path)]
    if not inside:
        raise IngestError(f"no module {path!r} is called in the traced model (see `--layers`)")
    leaving = [n for n in inside if any(not belongs(u, path) for u in n.users)]
    if len(leaving) != 1 or node_shape(leaving[0]) is None:
        raise IngestError(f"module {path!r} has {len(leaving)} outputs; an observation layer needs exactly one")
    return leaving[0]


class TraceState:
    """The layers, weight layers and per-value provenance found so far, node by node."""

    def __init__(self, gm: fx.GraphModule, lenient: bool = False) -> None:
        self.root = gm
        self.modules = dict(gm.named_modules())
        self.lenient = lenient
        self.prov: dict[str, Provenance] = {}  # fx node name -> provenance
        self.varying: set[str] = set()  # nodes whose value depends on the input
        self.pieces: dict[str, list[Provenance]] = {}  # a chunk/split node -> its pieces' provenance
        self.layers: dict[str, LayerInfo] = {}
        self.weight_layers: dict[str, WeightLayer] = {}
        self.output_nodes: dict[str, str] = {}  # layer name -> fx node name

    def add_layer(self, name: str, kind: str, shape: tuple[int, ...], node: fx.Node,
                  channels_last: bool = False) -> None:
        """A layer of output ``shape`` (channels first, batch dim left out) whose value is ``node``'s."""
        if name in self.layers:
            raise IngestError(f"module {name!r} is called more than once; shared weights are not supported")
        self.layers[name] = LayerInfo(name, kind, int(shape[0]), len(self.layers), tuple(shape),
                                      channels_last=channels_last)
        self.output_nodes[name] = node.name

    def sum_layer_name(self, node: fx.Node) -> tuple[str, fx.Node]:
        """The name of the layer a sum makes, and the node whose value it is: the module the sum
        runs in when the sum is that module's output (through per-channel ops only: ResNet's
        ``relu(out + identity)``), so a block is not stored twice; else ``<module>.<node name>``."""
        path = _module_path(node)
        if path and path not in self.layers and path not in self.weight_layers:
            try:
                out = module_output(self.root, path)
            except IngestError:
                out = None
            current = node
            while current is not out and len(current.users) == 1:
                user = next(iter(current.users))
                if handler_for(user, self.modules)[0] is not handlers.pointwise or _tensor_args(user)[:1] != [current]:
                    break
                current = user
            if current is out:
                return path, out
        name = f"{path}.{node.name}" if path else node.name
        return (name if name not in self.modules else f"{name}_sum"), node

    def function_layer_name(self, node: fx.Node) -> str:
        """The name of a weight layer that a function call makes: the module it runs in, unless
        that name is taken (then ``<module>.<node name>``)."""
        path = _module_path(node)
        if path and path not in self.layers:
            return path
        return f"{path}.{node.name}" if path else node.name

    def follow(self, node: fx.Node) -> None:
        """Record ``node``'s provenance (and its layer, for weight layers and the input)."""
        shape = node_shape(node)
        if node.op == "placeholder" or any(a.name in self.varying for a in node.all_input_nodes):
            self.varying.add(node.name)
        if node.op == "placeholder":
            if shape is None or len(shape) != 4:
                raise IngestError("the model's input must be one (N, C, H, W) image tensor")
            self.add_layer(INPUT_LAYER, "input", shape[1:], node)
            self.prov[node.name] = Provenance([((INPUT_LAYER, c),) for c in range(shape[1])])
            return
        pieces = _tuple_of_tensors(node)
        if node.op in ("output", "get_attr") or (not pieces and (shape is None or len(shape) < 2)):
            return
        inputs = [a for a in _tensor_args(node) if a.name in self.prov]
        if node.name not in self.varying:
            return  # a value that does not depend on the input (a reshaped parameter): no neurons
        handler, what = handler_for(node, self.modules)
        module = self.modules[node.target] if node.op == "call_module" else None
        step = Step(node, shape or (), inputs, self.prov[inputs[0].name] if inputs else None, module, what)
        try:
            if handler is None:
                raise Unsupported(what)
            found = handler(self, step)
        except Unsupported as exc:
            self._skip(node, str(exc))
            return
        if not pieces:
            self.prov[node.name] = found

    def _skip(self, node: fx.Node, what: str) -> None:
        path = _module_path(node) or "<top>"
        message = f"unsupported op {what} in module {path!r} (node {node.name})"
        if not self.lenient:
            raise IngestError(message + "; --lenient skips it")
        warnings.warn(message + ": skipped (--lenient); channels behind it get no direct edges", stacklevel=3)
        shape = node_shape(node)
        if shape is not None and len(shape) >= 2:
            self.prov[node.name] = Provenance([() for _ in range(shape[1])])
