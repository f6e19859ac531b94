"""Channel provenance as plain data, and the op tables its handlers are registered in.

For every traced value, :class:`~circuitatlas.ingest.tracestate.TraceState` records a
:class:`Provenance`: per channel, which neurons (``(layer, channel)`` pairs) it carries and by
what factor. A node is handed to the handler registered for its module class (the nearest
registered base class), function or method name; the handler returns the node's
:class:`Provenance`, or raises :class:`Unsupported` naming the op, which fails the trace or,
with ``lenient``, skips the op with a warning.

Adding an op: write ``handler(state, step) -> Provenance`` in
:mod:`circuitatlas.ingest.handlers` and register it there with :func:`register_op` (the op
families are in :mod:`circuitatlas.ingest.ops`).

Layouts. A value's channels are on dim 1 (``(N, C, H, W)`` or ``(N, C)``), or on the last dim
(``last``: ``(N, H, W, C)`` after a permute, as ConvNeXt's blocks do), or, between the reshapes
of a channel shuffle, on no single dim: then ``ids`` holds, for every element of the value
(batch dim left out), the index of its channel in ``channels``. :func:`from_ids` turns the
result of a reshape back into one of the first two layouts when it is one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
from torch import fx, nn

from circuitatlas.ingest.graphtypes import Source

if TYPE_CHECKING:
    from circuitatlas.ingest.tracestate import TraceState

__all__ = ["Provenance", "Step", "Unsupported", "Handler", "register_op", "handler_for", "node_shape",
           "run_node", "from_ids", "MODULE_OPS", "FUNCTION_OPS", "METHOD_OPS",
           "NAMED_OPS"]


@dataclass
class Provenance:
    """Per-channel sources of a traced value.

    ``scale[i]`` (None: all ones) is the factor channel ``i`` carries its sources by: a BatchNorm
    that could not be folded into a convolution, LayerNorm's per-channel weight, a layer scale or
    a constant multiplier on the way (nonlinearities count as the identity, as in the linearised
    network of the expanded weights). ``flat`` remembers (C, H, W) after a flatten.
    """

    channels: list[tuple[Source, ...]]
    flat: tuple[int, int, int] | None = None
    last: bool = False  # channels on the last dim
    scale: np.ndarray | None = None
    ids: np.ndarray | None = None  # no channel dim: the channel index of every element

    @property
    def canonical(self) -> bool:
        """Channels on dim 1: what convolutions, pooling and BatchNorm read."""
        return not self.last and self.ids is None

    def scales(self) -> np.ndarray:
        """``scale`` with the ones filled in (float64, one per entry of ``channels``)."""
        return np.ones(len(self.channels)) if self.scale is None else self.scale

    def scaled(self, factor: np.ndarray | float) -> "Provenance":
        """The same channels carried by ``factor`` times more (a scalar or one per channel). A
        flattened map's per-element factors (a BatchNorm1d after a flatten) are not followed:
        the channels stay as they are."""
        factor = np.asarray(factor, dtype=np.float64)
        if factor.size not in (1, len(self.channels)):
            return self
        return replace(self, scale=self.scales() * factor)

    def picked(self, index: np.ndarray, last: bool = False) -> "Provenance":
        """The channels ``index`` (into ``channels``), in that order, on dim 1 or the last dim."""
        return Provenance([self.channels[int(i)] for i in index], last=last,
                          scale=None if self.scale is None else self.scale[index])

    def element_ids(self, shape: tuple[int, ...]) -> np.ndarray:
        """The channel index of every element of a value of ``shape`` (batch dim left out)."""
        if self.ids is not None:
            return self.ids
        channels = np.arange(len(self.channels), dtype=np.int64)
        if self.last:
            return np.broadcast_to(channels, shape)
        return np.broadcast_to(channels.reshape(-1, *[1] * (len(shape) - 1)), shape)


def from_ids(table: Provenance, ids: np.ndarray) -> Provenance:
    """The provenance of a value whose elements carry channels ``ids`` of ``table``: channels on
    dim 1 or on the last dim when the ids are constant along every other dim, else kept as ids."""
    if ids.ndim == 0:
        raise Unsupported("a reshape to a scalar")
    first = ids.reshape(ids.shape[0], -1)
    if (first == first[:, :1]).all():
        return table.picked(first[:, 0])
    rows = ids.reshape(-1, ids.shape[-1])
    if ids.ndim > 1 and (rows == rows[:1]).all():
        return table.picked(rows[0], last=True)
    return replace(table, flat=None, last=False, ids=np.ascontiguousarray(ids))


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
NAMED_OPS: dict[str, Handler] = {}


def _qualified(obj: object) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
METHOD_OPS: dict[str, Handler] = {}


def register_op(handler: Handler, modules: Iterable[type] = (), functions: Iterable[Callable] = (),
                methods: Iterable[str] = (), names: Iterable[str] = ()) -> None:
    """Make ``handler`` follow the given module classes, functions and tensor method names, and
    the classes or functions of the given qualified names (``module.qualname``: a library's ops
    followed without importing it)."""
    for table, keys in ((MODULE_OPS, modules), (FUNCTION_OPS, functions), (METHOD_OPS, methods), (NAMED_OPS, names)):
        for key in keys:
            if key in table:
                raise ValueError(f"{key!r} already has a handler")
            table[key] = handler


def handler_for(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[Handler | None, str]:
    """The handler registered for ``node``'s op (None when there is none) and the op's name."""
    if node.op == "call_module":
        module_type = type(modules[node.target])
        found = next((MODULE_OPS.get(c) or NAMED_OPS.get(_qualified(c)) for c in module_type.__mro__
                      if c in MODULE_OPS or _qualified(c) in NAMED_OPS), None)
        return found, module_type.__name__
    if node.op == "call_function":
        found = FUNCTION_OPS.get(node.target) or NAMED_OPS.get(_qualified(node.target))
        return found, getattr(node.target, "__name__", str(node.target))
    if node.op == "call_method":
        return METHOD_OPS.get(node.target), str(node.target)
    return None, node.op


def node_shape(node: fx.Node) -> tuple[int, ...] | None:
    """The traced value's shape (batch dim included), or None when it is not one tensor."""
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(d) for d in meta.shape)


def run_node(root: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> Any:
    """What ``node`` computes from the given argument values: a parameter or buffer of ``root``
    (``get_attr``), a function, a tensor method or a submodule called on them."""
    if node.op == "get_attr":
        obj: Any = root
        for attr in str(node.target).split("."):
            obj = getattr(obj, attr)
        return obj
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)
    if node.op == "call_module":
        return root.get_submodule(node.target)(*args, **kwargs)
    raise ValueError(f"cannot evaluate node {node.name} ({node.op})")
