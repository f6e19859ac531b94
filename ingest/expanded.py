"""Expanded weights between observation layers, as defined in the Circuits thread.

In a linearised copy of the model (pointwise nonlinearities -> identity, max-pool ->
average-pool over the same window, BatchNorm kept: in eval mode it is affine, LayerNorm ->
its per-channel weight: the normalisation counts as a nonlinearity), the
expanded kernel from unit ``i`` of layer A to unit ``j`` of layer B is the gradient of B's
channel ``j`` at its central position with respect to A's channel ``i``, cropped to the
window where any kernel of the pair is non-zero.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from circuitatlas.errors import IngestError
from circuitatlas.ingest.graphtypes import LayerGraph
from circuitatlas.ingest.ops import (
    LAYERNORM_FUNCTIONS,
    LAYERNORM_MODULES,
    NONLINEAR_FUNCTIONS,
    NONLINEAR_METHODS,
    NONLINEAR_MODULES,
)
from circuitatlas.ingest.provenance import run_node

__all__ = ["linearise", "expanded_kernels"]


def _identity(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x


def _layer_norm_weight(x: torch.Tensor, normalized_shape: Any = None, weight: torch.Tensor | None = None,
                       bias: torch.Tensor | None = None, eps: float = 0.0) -> torch.Tensor:
    """LayerNorm linearised: its per-channel weight, the normalisation taken as the identity."""
    return x if weight is None else x * weight


class _LayerNormWeight(nn.Module):
    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight = norm.weight if norm.elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _layer_norm_weight(x, weight=self.weight)


def linearise(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` with nonlinearities as identity and max-pooling as average pooling.

    Node names are kept, so values can be found by the names recorded at trace time.
    """
    lin = copy.deepcopy(gm).eval()
    modules = dict(lin.named_modules())
    for node in lin.graph.nodes:
        module = modules[node.target] if node.op == "call_module" else None
        if _is_nonlinear(node, module):
            node.op, node.target, node.kwargs = "call_function", _identity, {}
            node.args = node.args[:1]
        elif isinstance(module, nn.MaxPool2d):
            avg = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                               count_include_pad=False)
            _set_submodule(lin, node.target, avg)
        elif isinstance(module, LAYERNORM_MODULES):
            _set_submodule(lin, node.target, _LayerNormWeight(module))
        elif node.op == "call_function" and node.target in LAYERNORM_FUNCTIONS:
            node.target = _layer_norm_weight
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            _set_submodule(lin, node.target, nn.AdaptiveAvgPool2d(module.output_size))
        elif node.op == "call_function" and node.target is nn.functional.max_pool2d:
            node.target = nn.functional.avg_pool2d
    lin.recompile()
    return lin


def _is_nonlinear(node: fx.Node, module: nn.Module | None) -> bool:
    """Whether ``node`` is a per-channel nonlinearity (:mod:`circuitatlas.ingest.ops`)."""
    if node.op == "call_module":
        return isinstance(module, NONLINEAR_MODULES)
    if node.op == "call_function":
        return node.target in NONLINEAR_FUNCTIONS
    return node.op == "call_method" and node.target in NONLINEAR_METHODS


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _between(gm: fx.GraphModule, src: str, dst: str) -> tuple[list[fx.Node], set[str]]:
    """Nodes that ``dst`` depends on, in order, and the subset downstream of ``src``."""
    nodes = {n.name: n for n in gm.graph.nodes}
    needed: set[str] = set()
    stack = [nodes[dst]]
    while stack:
        node = stack.pop()
        if node.name in needed:
            continue
        needed.add(node.name)
        if node.name != src:
            stack += node.all_input_nodes
    downstream: set[str] = {src}
    ordered = [n for n in gm.graph.nodes if n.name in needed]
    for node in ordered:
        if any(a.name in downstream for a in node.all_input_nodes):
            downstream.add(node.name)
    if dst not in downstream:
        raise IngestError(f"{dst} does not depend on {src}: no expanded weights between them")
    return ordered, downstream


def _run_from(gm: fx.GraphModule, ordered: list[fx.Node], downstream: set[str], src: str, value: torch.Tensor
              ) -> torch.Tensor:
    """Evaluate the nodes between src and dst with src's value given; values that depend on the
    input but not on src are zeros (the linearised map from src is what the gradient sees);
    constants (parameters such as a layer scale, and ops on them) are what they are."""
    env: dict[str, Any] = {}
    batch = value.shape[0]
    varying: set[str] = set()
    for node in ordered:
        if node.op == "placeholder" or any(a.name in varying for a in node.all_input_nodes):
            varying.add(node.name)
    for node in ordered:
        if node.name == src:
            env[node.name] = value
            continue
        if node.name not in downstream and node.name in varying:
            meta = node.meta.get("tensor_meta")
            if meta is None or not hasattr(meta, "shape"):
                raise IngestError(f"cannot isolate node {node.name} between layers")
            env[node.name] = torch.zeros(batch, *meta.shape[1:], dtype=value.dtype)
            continue
        if node.op not in ("call_module", "call_function", "call_method", "get_attr"):
            raise IngestError(f"cannot evaluate node {node.name} ({node.op})")
        env[node.name] = run_node(gm, node, fx.node.map_arg(node.args, lambda n: env[n.name]),
                                  fx.node.map_arg(node.kwargs, lambda n: env[n.name]))
    return env[ordered[-1].name]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


_POSITIVE: "weakref.WeakKeyDictionary[fx.GraphModule, fx.GraphModule]" = weakref.WeakKeyDictionary()


def _positive_copy(lin: fx.GraphModule) -> fx.GraphModule:
    """``lin`` with every weight 1 and BatchNorm an identity scale: nothing cancels, so a
    gradient is non-zero exactly where the output depends on the input at all."""
    if lin not in _POSITIVE:
        pos = copy.deepcopy(lin)
        with torch.no_grad():
            for param in pos.parameters():
                param.fill_(1.0)
            for module in pos.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
                    module.running_var.fill_(1.0)
        _POSITIVE[lin] = pos
    return _POSITIVE[lin]


def _center_gradient(gm: fx.GraphModule, ordered: list[fx.Node], downstream: set[str], a_name: str,
                     js: torch.Tensor, shape_a: tuple[int, ...], center: tuple[int, ...]) -> torch.Tensor:
    """d out[j, *center] / d src for each j in ``js``: (len(js), *shape_a)."""
    with torch.enable_grad():
        a = torch.zeros(len(js), *shape_a, requires_grad=True)
        out = _run_from(gm, ordered, downstream, a_name, a)
        picked = out[torch.arange(len(js)), js]
        picked = picked[(slice(None), *center)] if len(center) else picked
        (grad,) = torch.autograd.grad(picked.sum(), a)
    return grad


def _crop_window(lin: fx.GraphModule, ordered: list[fx.Node], downstream: set[str], a_name: str,
                 shape_a: tuple[int, ...], hw_b: tuple[int, ...], center: tuple[int, ...]
                 ) -> tuple[int, int, int, int] | None:
    """A window (y0, y1, x0, x1) of the source map that holds everything the target's central
    position depends on, for every target channel, with a margin, aligned to the stride between the layers; None when
    cropping would not pay or cannot be done safely (the caller then uses the whole map).

    The window comes from a gradient through an all-positive copy of the network (nothing
    cancels there); the caller checks the cropped result against the whole map once.
    """
    c_a, h_a, w_a = shape_a
    if len(hw_b) != 2 or h_a % hw_b[0] or w_a % hw_b[1]:
        return None
    sy, sx = h_a // hw_b[0], w_a // hw_b[1]
    with torch.enable_grad():  # every target channel at once: branches differ in reach (1x1 vs 5x5)
        a = torch.zeros(1, *shape_a, requires_grad=True)
        out = _run_from(_positive_copy(lin), ordered, downstream, a_name, a)
        (grad,) = torch.autograd.grad(out[(0, slice(None), *center)].sum(), a)
    box = _bbox(grad[0].abs().sum(dim=0).numpy() > 0)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    y0, x0 = max(0, (y0 // sy - 1) * sy), max(0, (x0 // sx - 1) * sx)  # one stride of margin, aligned
    y1, x1 = min(h_a, (-(-y1 // sy) + 1) * sy), min(w_a, (-(-x1 // sx) + 1) * sx)
    if (y1 - y0) * (x1 - x0) > 0.5 * h_a * w_a:
        return None
    return y0, y1, x0, x1


def expanded_kernels(
    graph: LayerGraph,
    src: str,
    dst: str,
    linear: fx.GraphModule | None = None,
    max_batch_floats: int = 20_000_000,
    crop: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Expanded kernels from observation layer ``src`` to ``dst``.

    Returns ``(out_idx, in_idx, kernels, origin)`` with kernels (n, kh, kw), all-zero ones left
    out; every kernel of the pair shares one (kh, kw) window whose top-left corner is ``origin``
    (row, col) in ``src``'s map, for ``dst``'s central position (H // 2, W // 2).

    With ``crop`` the gradients are taken on the part of ``src``'s map that the central
    position depends on (found by :func:`_crop_window`, checked against the whole map on two
    units) instead of the whole map: the same kernels, several times faster on large maps.
    """
    lin = linear if linear is not None else linearise(graph.graph_module)
    a_name, b_name = graph.output_nodes[src], graph.output_nodes[dst]
    ordered, downstream = _between(lin, a_name, b_name)
    c_a, *hw_a = graph.layers[src].shape
    c_b, *hw_b = graph.layers[dst].shape
    if len(hw_a) != 2:
        raise IngestError(f"expanded weights need a spatial source layer; {src} has shape {graph.layers[src].shape}")
    center = tuple(d // 2 for d in hw_b)
    shape_a, offset = (c_a, *hw_a), (0, 0)
    if crop:
        shape_a, center, offset = _cropped(lin, ordered, downstream, a_name, c_b, shape_a, tuple(hw_b), center)
    chunk = max(1, min(c_b, max_batch_floats // max(1, 8 * shape_a[0] * shape_a[1] * shape_a[2])))
    crops: list[tuple[int, np.ndarray, tuple[int, int, int, int]]] = []
    for start in range(0, c_b, chunk):
        js = torch.arange(start, min(c_b, start + chunk))
        g = _center_gradient(lin, ordered, downstream, a_name, js, shape_a, center).numpy()
        box = _bbox(np.abs(g).max(axis=(0, 1)) > 0)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        placed = (y0 + offset[0], y1 + offset[0], x0 + offset[1], x1 + offset[1])  # in src's whole map
        crops.append((start, g[:, :, y0:y1, x0:x1].copy(), placed))
    return _assembled(crops, c_b, c_a)


def _cropped(lin: fx.GraphModule, ordered: list[fx.Node], downstream: set[str], a_name: str, c_b: int,
             shape_a: tuple[int, int, int], hw_b: tuple[int, ...], center: tuple[int, ...]
             ) -> tuple[tuple[int, int, int], tuple[int, ...], tuple[int, int]]:
    """``(shape, center, offset)`` of the part of the source map to take gradients on: the
    :func:`_crop_window`'s when it gives the whole map's gradients on two probe units, else
    the whole map (offset (0, 0))."""
    whole_map = (shape_a, center, (0, 0))
    window = _crop_window(lin, ordered, downstream, a_name, shape_a, hw_b, center)
    if window is None:
        return whole_map
    c_a, h_a, w_a = shape_a
    y0, y1, x0, x1 = window
    sy, sx = h_a // hw_b[0], w_a // hw_b[1]
    cropped_center = (center[0] - y0 // sy, center[1] - x0 // sx)
    cropped_shape = (c_a, y1 - y0, x1 - x0)
    probe = torch.tensor([0, c_b - 1])
    whole = _center_gradient(lin, ordered, downstream, a_name, probe, shape_a, center)
    part = torch.zeros_like(whole)
    part[:, :, y0:y1, x0:x1] = _center_gradient(lin, ordered, downstream, a_name, probe, cropped_shape,
                                               cropped_center)
    if torch.allclose(part, whole, rtol=1e-4, atol=1e-6 * float(whole.abs().max()) + 1e-30):
        return cropped_shape, cropped_center, (y0, x0)
    return whole_map


def _assembled(crops: list[tuple[int, np.ndarray, tuple[int, int, int, int]]], c_b: int, c_a: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Chunks ``(first target, (n, c_a, h, w) gradients, (y0, y1, x0, x1) in the source map)``
    -> ``(out_idx, in_idx, kernels, origin)`` on the window that holds them all."""
    if not crops:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 1, 1), dtype=np.float32), (0, 0)
    top, left = min(c[2][0] for c in crops), min(c[2][2] for c in crops)
    kh, kw = max(c[2][1] for c in crops) - top, max(c[2][3] for c in crops) - left
    full = np.zeros((c_b, c_a, kh, kw), dtype=np.float32)
    for start, g, (y0, y1, x0, x1) in crops:
        full[start:start + g.shape[0], :, y0 - top:y1 - top, x0 - left:x1 - left] = g
    nonzero = np.abs(full).reshape(c_b, c_a, -1).max(axis=2) > 0
    out_idx, in_idx = np.nonzero(nonzero)
    return out_idx.astype(np.int64), in_idx.astype(np.int64), full[out_idx, in_idx], (top, left)
