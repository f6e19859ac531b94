"""LayerGraph -> rows for the store: layers, neurons, FEEDS pairs, and weight edges grouped by
target neuron, with the kernel statistics and pruning both writers share.

Edge rows are generated lazily, one target neuron at a time, so a large model never sits in
Python lists whole. A row carries every kept incoming edge of one target neuron from one
source layer, strongest first (see :func:`kernel_rows`)::

    {"d": target id, "s": [source id, ...], "k": [the kernels' kh * kw values, concatenated],
     "n": kh * kw, "kh": kh, "kw": kw, "sum": [...], "l1": [...], "l2": [...], "max": [...], "min": [...],
     "rel_in": [...], "rel_out": [...]}

where ids are the neurons' store (element) ids and each statistic has one value per source,
in the order of ``s`` (``queries.cypher.create_edges`` reads these keys).

Relative strengths: ``rel_in`` is an edge's |sum| over the largest |sum| among all the
target's inputs of that kind, ``rel_out`` over the largest among all the source's outputs of
that kind, both taken over every edge the network has (before pruning), so they do not depend
on ``min_l2`` or ``top_k``. A direct edge's target reads all its inputs in one weight layer, but
a source may feed several: :func:`direct_strongest` works the maxima out over the whole graph
first. Expanded edges join consecutive observation layers only, so one block holds them all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Iterator

import numpy as np

from circuitatlas import names
from circuitatlas.ingest.graphtypes import LayerGraph, WeightLayer

__all__ = ["layer_rows", "feed_pairs", "neuron_rows", "kernel_rows", "direct_blocks", "direct_strongest",
           "strongest", "relative", "edge_stats", "select_edges", "kernel_stats", "l2_norms", "Strongest"]

# per layer, per channel: the largest |sum| among a neuron's inputs ("in") or outputs ("out")
Strongest = dict[str, dict[str, np.ndarray]]


def layer_rows(model: str, graph: LayerGraph) -> list[dict]:
    """One row per layer (few: kept as a list)."""
    return [
        {"uid": names.layer_uid(model, info.name), "name": info.name, "kind": info.kind, "channels": info.channels,
         "order": info.order, "shape": list(info.shape),
         "observed": info.name in graph.observation_layers,
         "folded_bn": (graph.weight_layers[info.name].folded_bn if info.name in graph.weight_layers else None)}
        for info in graph.layers.values()
    ]


def feed_pairs(graph: LayerGraph, direct: bool, expanded: bool) -> list[tuple[str, str, str]]:
    """The FEEDS relationships ``(src layer, dst layer, kind)``: ``"direct"`` for every layer that
    feeds another (with direct weights), ``"expanded"`` between consecutive observation layers."""
    pairs = [(a, b, "direct") for a, b in graph.feeds] if direct else []
    if expanded:
        obs = graph.observation_layers
        pairs += [(a, b, "expanded") for a, b in zip(obs, obs[1:])]
    return pairs


def neuron_rows(model: str, graph: LayerGraph) -> Iterator[dict]:
    """One row per neuron: every channel of every layer; weight layers add their bias."""
    for info in graph.layers.values():
        bias = graph.weight_layers[info.name].bias if info.name in graph.weight_layers else None
        for c in range(info.channels):
            row = {"uid": names.neuron_uid(model, info.name, c), "layer": info.name, "channel": c}
            if bias is not None:
                row["bias"] = float(bias[c])
            if info.branches is not None and info.branches[c] is not None:
                row["branch"] = info.branches[c]
            yield row


def direct_blocks(layer: WeightLayer) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Split a weight layer by source layer: ``(src_layer, out_idx, in_channel_idx, kernels)``.

    ``kernels[k]`` (kh, kw) is the kernel from ``src_layer``'s channel ``in_channel_idx[k]``
    to output channel ``out_idx[k]``. A neuron that reaches several input channels (``cat([x, x])``)
    gets the sum of its kernels, as it would in the network. Kernels are float32 (float64 for a
    float64 layer).
    """
    per_group = layer.weight.shape[1]
    outs_per_group = layer.out_channels // layer.groups
    inputs: dict[str, list[tuple[int, int]]] = defaultdict(list)  # src layer -> (input channel, src channel)
    for i, sources in enumerate(layer.sources):
        for src_layer, src_channel in sources:
            inputs[src_layer].append((i, src_channel))
    for src_layer, pairs in inputs.items():
        chans = np.array(pairs, dtype=np.int64)
        group, local = np.divmod(chans[:, 0], per_group)
        outs = group[:, None] * outs_per_group + np.arange(outs_per_group)[None, :]  # (n_in, outs_per_group)
        kernels = layer.weight[outs, local[:, None]]  # (n_in, outs_per_group, kh, kw)
        out_idx = outs.reshape(-1)
        in_idx = np.repeat(chans[:, 1], outs_per_group)
        kernels = kernels.reshape(-1, *layer.weight.shape[2:])
        if len(np.unique(chans[:, 1])) < len(chans):  # one neuron on several input channels: sum them
            keys, inverse = np.unique(np.stack([out_idx, in_idx], axis=1), axis=0, return_inverse=True)
            summed = np.zeros((len(keys), *kernels.shape[1:]), dtype=np.float64)
            np.add.at(summed, inverse.reshape(-1), kernels)
            out_idx, in_idx, kernels = keys[:, 0], keys[:, 1], summed
        yield src_layer, out_idx, in_idx, kernels.astype(np.float64 if layer.weight.dtype == np.float64 else np.float32)


def strongest(out_idx: np.ndarray, in_idx: np.ndarray, sums: np.ndarray, n_out: int, n_in: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """The largest |sum| into each of ``n_out`` targets and out of each of ``n_in`` sources."""
    magnitude = np.abs(sums)
    into, out_of = np.zeros(n_out), np.zeros(n_in)
    np.maximum.at(into, out_idx, magnitude)
    np.maximum.at(out_of, in_idx, magnitude)
    return into, out_of


def direct_strongest(graph: LayerGraph) -> Strongest:
    """``{"in": {layer: (channels,)}, "out": {layer: (channels,)}}``: each neuron's strongest
    direct input and output |sum| over the whole graph (the kernels summed first: cheap)."""
    found: Strongest = {"in": {}, "out": {}}
    for layer in graph.weight_layers.values():
        summed = replace(layer, weight=layer.weight.sum(axis=(2, 3), keepdims=True, dtype=np.float64))
        for src, out_idx, in_idx, sums in direct_blocks(summed):
            into, out_of = strongest(out_idx, in_idx, sums.reshape(-1), layer.out_channels,
                                     graph.layers[src].channels)
            found["in"][layer.name] = np.maximum(found["in"].get(layer.name, 0.0), into)
            found["out"][src] = np.maximum(found["out"].get(src, 0.0), out_of)
    return found


def relative(sums: np.ndarray, out_idx: np.ndarray, in_idx: np.ndarray, into: np.ndarray, out_of: np.ndarray
             ) -> dict[str, np.ndarray]:
    """``rel_in`` and ``rel_out`` of edges with these sums, given the targets' strongest inputs
    ``into`` and the sources' strongest outputs ``out_of`` (by channel)."""
    magnitude = np.abs(sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_in = np.where(into[out_idx] > 0, magnitude / into[out_idx], 0.0)
        rel_out = np.where(out_of[in_idx] > 0, magnitude / out_of[in_idx], 0.0)
    return {"rel_in": np.minimum(rel_in, 1.0), "rel_out": np.minimum(rel_out, 1.0)}


def select_edges(out_idx: np.ndarray, l2: np.ndarray, min_l2: float = 0.0, top_k: int | None = None,
                 grouped: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Which edges to store, from their kernels' l2 norms (``kernel_stats(...)["l2"]``).

    All-zero kernels and those below ``min_l2`` are dropped; with ``top_k`` only the ``top_k``
    strongest inputs of each target stay. Returns ``(order, boundaries)``: edge indices
    grouped by target neuron, strongest first in each group, and where each group starts.
    ``grouped=False`` (honoured without ``top_k``) keeps the input order and skips the sort.
    """
    keep = (l2 > 0) & (l2 >= min_l2)
    if not grouped and top_k is None:
        return np.flatnonzero(keep), np.zeros(0, dtype=np.int64)
    order = np.lexsort((-l2, out_idx))  # by target, strongest first
    order = order[keep[order]]
    boundaries = np.flatnonzero(np.diff(out_idx[order])) + 1
    if top_k is not None and order.size:
        starts = np.concatenate([[0], boundaries])
        rank = np.arange(order.size) - np.repeat(starts, np.diff(np.concatenate([starts, [order.size]])))
        order = order[rank < top_k]
        boundaries = np.flatnonzero(np.diff(out_idx[order])) + 1
    return order, boundaries


def l2_norms(flat: np.ndarray) -> np.ndarray:
    """The l2 norm of each row of (n, kh*kw) kernels, summed in float64."""
    return np.sqrt(np.einsum("ij,ij->i", flat, flat, dtype=np.float64))


def kernel_stats(flat: np.ndarray) -> dict[str, np.ndarray]:
    """Per-edge statistics of (n, kh*kw) kernels, summed in float64 whatever their dtype (no
    float64 copy of the kernels is made): sum, l1 (sum of |w|), l2, max, min."""
    return {"sum": flat.sum(axis=1, dtype=np.float64), "l1": np.abs(flat).sum(axis=1, dtype=np.float64),
            "l2": l2_norms(flat), "max": flat.max(axis=1).astype(np.float64),
            "min": flat.min(axis=1).astype(np.float64)}


def edge_stats(flat: np.ndarray, out_idx: np.ndarray, in_idx: np.ndarray, n_out: int, n_in: int,
               maxima: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """:func:`kernel_stats` and :func:`relative` strengths of (n, kh*kw) kernels; ``maxima``
    (targets' strongest inputs, sources' strongest outputs) default to this block's own."""
    stats = kernel_stats(flat)
    into, out_of = maxima if maxima is not None else strongest(out_idx, in_idx, stats["sum"], n_out, n_in)
    return {**stats, **relative(stats["sum"], out_idx, in_idx, into, out_of)}


def kernel_rows(
    src_ids: list[str],
    dst_ids: list[str],
    out_idx: np.ndarray,
    in_idx: np.ndarray,
    kernels: np.ndarray,
    min_l2: float = 0.0,
    top_k: int | None = None,
    maxima: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[dict]:
    """Edge rows grouped by target neuron, with kernel statistics; all-zero kernels are dropped.

    ``src_ids[c]`` / ``dst_ids[c]`` are the store ids of channel ``c`` of the source and target
    layers; ``kernels`` is (n, kh, kw). Pruning is :func:`select_edges`'; ``maxima`` as in
    :func:`edge_stats`. A row is ``{d, s: [...], k: [concatenated kernels], n: kh*kw, kh, kw,
    sum: [...], l1, l2, max, min, rel_in, rel_out}``.
    """
    n, kh, kw = kernels.shape
    flat = kernels.reshape(n, kh * kw)  # float32 kernels stay float32 until a row's tolist()
    stats = edge_stats(flat, out_idx, in_idx, len(dst_ids), len(src_ids), maxima)
    order, boundaries = select_edges(out_idx, stats["l2"], min_l2, top_k)
    for group in np.split(order, boundaries):
        if group.size == 0:
            continue
        yield {
            "d": dst_ids[int(out_idx[group[0]])],
            "s": [src_ids[int(i)] for i in in_idx[group]],
            "k": flat[group].reshape(-1).tolist(),
            "n": kh * kw,
            "kh": kh,
            "kw": kw,
            **{name: values[group].tolist() for name, values in stats.items()},
        }
