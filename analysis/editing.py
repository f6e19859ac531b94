"""Circuit editing on a real network: ablate units, scale or set the kernels of direct edges,
replace a unit's incoming weights, all in the graph's own units (BatchNorm folded, source
factors included) and applied to a copy of the module.

An edge edit and a replacement change the parameters of the conv or linear layer that the edge
enters: the stored kernel is ``raw[b, i] * f[b, i]`` (``f`` = the folded BatchNorm scale of the
output channel times the factor the input channel carries), so scaling an edge scales the raw
slice and setting a kernel writes ``kernel / f``. A replacement also resets the folded
BatchNorm row, so the unit computes exactly ``kernel * input + bias``. An edge into a residual
sum (an ``add`` layer) scales that summand where it is made, which is exact when the summand
feeds the sum only (a block's last BatchNorm, a downsample); an identity shortcut that also
feeds the next conv is refused with that reason. A unit ablation is a forward hook on the
module whose output is the unit's value (the folded BatchNorm's for a conv), replacing the
channel with zero or its mean map. The hooks belong to the edited copy; the original module and
the stored weights are never touched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import fx, nn

from circuitatlas.analysis.folding import batchnorm_scale
from circuitatlas.analysis.hooks import capture, channels_first, is_channels_last
from circuitatlas.errors import InvalidInput
from circuitatlas.ingest.graphtypes import LayerGraph, Source, WeightLayer

__all__ = ["Ablation", "EdgeEdit", "Replacement", "EditSpec", "edited_module", "value_point", "unit_values",
           "mean_maps", "edges_into", "ABLATION_MODES"]

ABLATION_MODES = ("zero", "mean")


@dataclass(frozen=True)
class Ablation:
    """Unit ``layer:channel`` set to zero or to ``mean`` (its mean map over a probe set)."""

    layer: str
    channel: int
    mode: str = "zero"
    mean: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class EdgeEdit:
    """The direct edge ``src -> dst`` scaled by ``factor`` or given ``kernel`` (kh, kw), in the
    graph's folded units."""

    src: Source
    dst: Source
    factor: float | None = None
    kernel: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Replacement:
    """Unit ``layer:channel`` computing ``kernel`` (in / groups, kh, kw; folded units) over its
    inputs plus ``bias``: a hand-set unit in place of the trained one."""

    layer: str
    channel: int
    kernel: np.ndarray = field(compare=False)
    bias: float = 0.0


@dataclass
class EditSpec:
    """Every change an edit makes."""

    ablations: list[Ablation] = field(default_factory=list)
    edges: list[EdgeEdit] = field(default_factory=list)
    replacements: list[Replacement] = field(default_factory=list)

    def units(self) -> list[Source]:
        """The units whose value the edit changes directly (ablated, replaced, edge targets)."""
        seen = {(a.layer, a.channel) for a in self.ablations} | {(r.layer, r.channel) for r in self.replacements}
        seen |= {e.dst for e in self.edges}
        return sorted(seen)


# -- where a unit's value is ------------------------------------------------------------------
def value_point(module: nn.Module, graph: LayerGraph, layer: str) -> str:
    """The module whose output is ``layer``'s value in the graph: the folded BatchNorm of a conv,
    else the layer's own module; InvalidInput for a value made inside a forward (a sum that is
    not a block's output)."""
    if layer not in graph.layers:
        raise InvalidInput(f"the network has no layer {layer!r}")
    weight = graph.weight_layers.get(layer)
    if weight is not None and weight.folded_bn:
        return _called_once(graph, weight.folded_bn)
    names = dict(module.named_modules())
    if layer in names and layer != "":
        return _called_once(graph, layer)
    raise InvalidInput(f"layer {layer!r} is computed inside a module's forward, not by a module: edit the "
                       f"units it sums, or the block whose output it is")


def _calls(graph: LayerGraph) -> dict[str, int]:
    """How often each leaf module is called in the traced network."""
    counts: dict[str, int] = {}
    for node in graph.graph_module.graph.nodes:
        if node.op == "call_module":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
    return counts


def _called_once(graph: LayerGraph, path: str) -> str:
    """``path`` when the network calls that module once (a hook on it then acts on one value)."""
    if _calls(graph).get(path, 0) > 1:
        raise InvalidInput(f"module {path!r} is called more than once in the network; a hook on it would edit "
                           "every call")
    return path


def unit_values(module: nn.Module, graph: LayerGraph, units: Sequence[Source], images: torch.Tensor,
                batch: int = 64) -> Iterator[tuple[torch.Tensor, dict[Source, torch.Tensor]]]:
    """Per batch of ``images``, the network's output and each unit's value (N, H, W; (N,) for a
    vector layer) at its value point, copied (a later in-place op cannot change it). Run it under
    ``torch.no_grad()`` unless gradients are wanted."""
    points = {layer: value_point(module, graph, layer) for layer in {layer for layer, _ in units}}
    for start in range(0, len(images), batch):
        with capture(module, sorted(set(points.values())), stop=False, copy=True) as seen:
            out = module(images[start:start + batch])
        yield out, {(layer, c): seen[points[layer]][:, c] for layer, c in units}


def mean_maps(module: nn.Module, graph: LayerGraph, units: Iterable[Source], images: torch.Tensor,
              batch: int = 64) -> dict[Source, np.ndarray]:
    """Each unit's mean map (H, W; a scalar for a vector layer) over ``images`` at its value point."""
    units = list(units)
    sums: dict[Source, torch.Tensor] = {}
    with torch.no_grad():
        for _, values in unit_values(module.eval(), graph, units, images, batch):
            for unit, value in values.items():
                value = value.double().sum(0)
                sums[unit] = sums[unit] + value if unit in sums else value
    return {unit: (sums[unit] / len(images)).float().numpy() for unit in units}


# -- edges and parameters ---------------------------------------------------------------------
def edges_into(weight: WeightLayer, out_channel: int) -> list[tuple[Source, int]]:
    """The direct edges into ``out_channel`` as (source unit, input index within the group)."""
    rng = weight.input_channels_of(out_channel)
    return [(src, i - rng.start) for i in rng for src in weight.sources[i]]


def _input_index(weight: WeightLayer, edge: EdgeEdit) -> list[int]:
    found = [i for src, i in edges_into(weight, edge.dst[1]) if src == edge.src]
    if not found:
        raise InvalidInput(f"no direct edge {edge.src[0]}:{edge.src[1]} -> {edge.dst[0]}:{edge.dst[1]}")
    return found


def _raw_view(module: nn.Module, weight: WeightLayer) -> torch.Tensor:
    """The module's weight parameter viewed as the graph's (out, in / groups, kh, kw)."""
    return module.weight.data.view(weight.weight.shape)


def _bn_scale(root: nn.Module, weight: WeightLayer) -> torch.Tensor:
    if not weight.folded_bn:
        return torch.ones(weight.out_channels, dtype=torch.float64)
    bn = root.get_submodule(weight.folded_bn)
    return batchnorm_scale(bn.running_var, bn.eps, bn.weight if bn.affine else None).detach().double()


def _input_factors(raw: torch.Tensor, weight: WeightLayer, bn: torch.Tensor) -> np.ndarray:
    """The factor each input index carries, per output channel: stored / (raw * bn scale), read
    from a row where the raw slice is not zero (1 where no row tells)."""
    raw64 = raw.detach().double().numpy()
    stored = weight.weight.astype(np.float64) / bn.numpy().reshape(-1, 1, 1, 1)
    num = (stored * raw64).sum(axis=(2, 3))
    den = (raw64 * raw64).sum(axis=(2, 3))
    factors = np.ones(weight.weight.shape[:2])
    per_group = weight.out_channels // weight.groups
    for g in range(weight.groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        ratio = np.where(den[rows] > 0, num[rows] / np.where(den[rows] > 0, den[rows], 1), np.nan)
        with np.errstate(all="ignore"):  # a column of NaNs (no row tells) warns and gives NaN: then 1
            column = np.nanmedian(ratio, axis=0)
        factors[rows] = np.where(np.isnan(column), 1.0, column)
    return factors


def _weight_module(root: nn.Module, weight: WeightLayer) -> nn.Module:
    try:
        module = root.get_submodule(weight.name)
    except AttributeError:
        module = None
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise InvalidInput(f"layer {weight.name!r} is not a conv or linear module of the network; its weights "
                           "cannot be edited")
    return module


def _edit_weights(root: nn.Module, graph: LayerGraph, layer: str, edges: list[EdgeEdit],
                  replacements: list[Replacement]) -> None:
    weight = graph.weight_layers[layer]
    module = _weight_module(root, weight)
    raw = _raw_view(module, weight)
    bn = _bn_scale(root, weight)
    factors = _input_factors(raw, weight, bn)
    with torch.no_grad():
        for edge in edges:
            b = edge.dst[1]
            for i in _input_index(weight, edge):
                if edge.kernel is not None:
                    kernel = _checked_kernel(edge.kernel, tuple(raw.shape[2:]), f"{edge.src} -> {edge.dst}")
                    factor = bn[b].item() * factors[b, i]
                    if factor == 0 or not np.isfinite(factor):
                        raise InvalidInput(f"edge {edge.src[0]}:{edge.src[1]} -> {layer}:{b} carries a factor of "
                                           f"{factor}; its kernel cannot be set")
                    raw[b, i] = torch.from_numpy(kernel / factor).to(raw.dtype)
                else:
                    raw[b, i] *= _finite(edge.factor, "factor")
        for rep in replacements:
            b = rep.channel
            kernel = _checked_kernel(rep.kernel, tuple(raw.shape[1:]), f"replacement of {layer}:{b}")
            if np.any(factors[b] == 0):
                raise InvalidInput(f"an input of {layer}:{b} carries a factor of 0; it cannot be replaced")
            raw[b] = torch.from_numpy(kernel / factors[b].reshape(-1, 1, 1)).to(raw.dtype)
            bias = _finite(rep.bias, "bias")
            bnm = root.get_submodule(weight.folded_bn) if weight.folded_bn else None
            if bnm is not None:  # the BatchNorm row becomes the identity
                bnm.running_mean[b], bnm.running_var[b] = 0.0, 1.0 - bnm.eps
                if bnm.affine:
                    bnm.weight[b], bnm.bias[b] = 1.0, 0.0
            if module.bias is not None:  # the new bias goes where there is one
                module.bias[b] = bias
            elif bnm is not None and bnm.affine:
                bnm.bias[b] = bias
            elif bias:
                raise InvalidInput(f"{layer}:{b} has no bias to set (no conv bias, no affine BatchNorm); give bias 0")


def _checked_kernel(kernel: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``kernel`` as float64 of ``shape`` with finite values; InvalidInput otherwise."""
    array = np.asarray(kernel, dtype=np.float64)
    if array.shape != shape:
        raise InvalidInput(f"{what}: the kernel has shape {array.shape}, the weights there are {shape}")
    if not np.all(np.isfinite(array)):
        raise InvalidInput(f"{what}: the kernel holds values that are not finite")
    return array


def _finite(value: float | None, what: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a number, not {value!r}") from None
    if not np.isfinite(number):
        raise InvalidInput(f"{what} must be finite, not {value!r}")
    return number


def _summand_point(graph: LayerGraph, layer: str, operand: int) -> str:
    """The module that makes summand ``operand`` of the sum ``layer`` and feeds nothing else."""
    gm = graph.graph_module
    nodes = {n.name: n for n in gm.graph.nodes}
    node = nodes[graph.output_nodes[layer]]
    while node is not None and not (node.op in ("call_function", "call_method") and len(
            [a for a in node.args if isinstance(a, fx.Node)]) == 2):
        args = [a for a in node.args if isinstance(a, fx.Node)]
        node = args[0] if len(args) == 1 else None
    if node is None:
        raise InvalidInput(f"cannot find the sum that makes layer {layer!r}")
    arg = [a for a in node.args if isinstance(a, fx.Node)][operand]
    if arg.op != "call_module" or len(arg.users) != 1:
        raise InvalidInput(f"summand {operand} of {layer!r} ({arg.name}) also feeds other ops or is not a "
                           "module's output: scaling it into the sum alone is not supported")
    return _called_once(graph, str(arg.target))


def _sum_edits(graph: LayerGraph, layer: str, edges: list[EdgeEdit]) -> dict[str, np.ndarray]:
    """Per summand module, the per-channel factor to apply to its output."""
    weight = graph.weight_layers[layer]
    scales: dict[str, np.ndarray] = {}
    for edge in edges:
        c = edge.dst[1]
        for src, k in edges_into(weight, c):
            if src != edge.src:
                continue
            point = _summand_point(graph, layer, k)
            old = float(weight.weight[c, k, 0, 0])
            factor = _finite(edge.factor, "factor") if edge.kernel is None else (
                float(_checked_kernel(edge.kernel, (1, 1), f"{edge.src} -> {edge.dst}")[0, 0]) / old if old else np.nan)
            if not np.isfinite(factor):
                raise InvalidInput(f"edge {src[0]}:{src[1]} -> {layer}:{c} carries 0; it cannot be set by scaling")
            scales.setdefault(point, np.ones(weight.out_channels))[c] *= factor
            break
        else:
            raise InvalidInput(f"no direct edge {edge.src[0]}:{edge.src[1]} -> {layer}:{c}")
    return scales


def _hook(replace: dict[int, torch.Tensor | None], scale: torch.Tensor | None):
    def hook(module, _inputs, output):
        channels_last = is_channels_last(output, module)
        out = channels_first(output, module).clone()
        if scale is not None:
            out = out * scale.to(out.dtype).to(out.device).view(1, -1, *([1] * (out.dim() - 2)))
        for c, value in replace.items():
            out[:, c] = 0.0 if value is None else value.to(out.dtype).to(out.device)
        return out.movedim(1, -1) if channels_last else out

    return hook


def edited_module(module: nn.Module, graph: LayerGraph, spec: EditSpec) -> nn.Module:
    """A copy of ``module`` (in eval mode) with ``spec`` applied; ``graph`` is its layer graph."""
    root = copy.deepcopy(module).eval()
    by_layer: dict[str, tuple[list[EdgeEdit], list[Replacement]]] = {}
    for edge in spec.edges:
        if edge.dst[0] not in graph.weight_layers:
            raise InvalidInput(f"layer {edge.dst[0]!r} has no direct edges to edit")
        by_layer.setdefault(edge.dst[0], ([], []))[0].append(edge)
    for rep in spec.replacements:
        if rep.layer not in graph.weight_layers or graph.weight_layers[rep.layer].kind == "add":
            raise InvalidInput(f"layer {rep.layer!r} is not a conv or linear layer; its units cannot be replaced")
        by_layer.setdefault(rep.layer, ([], []))[1].append(rep)
    scales: dict[str, np.ndarray] = {}
    for layer, (edges, reps) in by_layer.items():
        if graph.weight_layers[layer].kind == "add":
            for point, factor in _sum_edits(graph, layer, edges).items():
                scales[point] = scales.get(point, 1.0) * factor
        else:
            _edit_weights(root, graph, layer, edges, reps)
    replace: dict[str, dict[int, torch.Tensor | None]] = {}
    for ab in spec.ablations:
        if ab.mode not in ABLATION_MODES:
            raise InvalidInput(f"ablation mode {ab.mode!r}: use one of {', '.join(ABLATION_MODES)}")
        if ab.mode == "mean" and ab.mean is None:
            raise InvalidInput(f"mean ablation of {ab.layer}:{ab.channel} needs its mean map")
        point = value_point(root, graph, ab.layer)
        replace.setdefault(point, {})[ab.channel] = None if ab.mode == "zero" else torch.as_tensor(ab.mean)
    for point in sorted(set(replace) | set(scales)):
        scale = torch.from_numpy(scales[point]) if point in scales else None
        root.get_submodule(point).register_forward_hook(_hook(replace.get(point, {}), scale))
    return root


def random_like(spec: EditSpec, graph: LayerGraph, rng: np.random.Generator) -> EditSpec:
    """An edit of the same size on random units and edges of the same layers, without repeats
    and, where enough remain, none of the edit's own: each ablation on a random unit of its layer
    (same mode; the unit's mean map is left to the caller), each edge edit on a random direct
    edge from the same source layer into the same layer (same factor, or the same kernel), each
    replacement's kernel on a random unit of its layer."""
    out = EditSpec()
    own = set(spec.units())
    per_layer: dict[str, int] = {}
    for layer in [a.layer for a in spec.ablations] + [r.layer for r in spec.replacements]:
        per_layer[layer] = per_layer.get(layer, 0) + 1
    taken: set[Source] = set()
    for ab in spec.ablations:
        c = _pick(graph.layers[ab.layer].channels, ab.layer, taken, own, per_layer[ab.layer], rng)
        out.ablations.append(Ablation(ab.layer, c, ab.mode))
    for rep in spec.replacements:
        c = _pick(graph.layers[rep.layer].channels, rep.layer, taken, own, per_layer[rep.layer], rng)
        out.replacements.append(Replacement(rep.layer, c, rep.kernel, rep.bias))
    edited = {(e.src, e.dst) for e in spec.edges}
    for (dst_layer, src_layer), group in _edge_groups(spec.edges).items():
        weight = graph.weight_layers[dst_layer]
        pool = [(src, (dst_layer, b)) for b in range(weight.out_channels) for src, i in edges_into(weight, b)
                if src[0] == src_layer and np.abs(weight.weight[b, i]).sum() > 0]
        others = [pair for pair in pool if pair not in edited]
        choices = others if len(others) >= len(group) else pool
        if len(choices) < len(group):
            raise InvalidInput(f"too few edges from {src_layer!r} into {dst_layer!r} for a random control")
        for edge, index in zip(group, rng.choice(len(choices), len(group), replace=False)):
            src, dst = choices[int(index)]
            out.edges.append(EdgeEdit(src, dst, edge.factor, edge.kernel))
    return out


def _edge_groups(edges: list[EdgeEdit]) -> dict[tuple[str, str], list[EdgeEdit]]:
    groups: dict[tuple[str, str], list[EdgeEdit]] = {}
    for edge in edges:
        groups.setdefault((edge.dst[0], edge.src[0]), []).append(edge)
    return groups


def _pick(channels: int, layer: str, taken: set[Source], own: set[Source], needed: int,
          rng: np.random.Generator) -> int:
    """A random unit of ``layer`` not drawn yet, outside the edit's own when ``needed`` of them remain."""
    free = [c for c in range(channels) if (layer, c) not in taken]
    outside = [c for c in free if (layer, c) not in own]
    if len([c for c in range(channels) if (layer, c) not in own]) >= needed:
        free = outside
    if not free:
        raise InvalidInput(f"layer {layer!r} has no units left for a random control")
    c = int(free[int(rng.integers(len(free)))])
    taken.add((layer, c))
    return c
