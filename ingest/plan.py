"""What an ingest would store, worked out without writing anything (``ingest --dry-run``).

Direct edges are counted exactly (the same pruning as the writers, from the kernels' l2 norms,
without building a row; ``top_k`` per target and source layer, as the writers apply it).
Expanded edges are estimated by the source/target channel pairs that direct edges connect
between consecutive observation layers: an expanded kernel is zero where paths cancel (rare);
it can be non-zero without such a path only through a squeeze-excite gate, which the linearised
network evaluates at its biases. Store
size and time are estimates from rates measured on a 2-core machine (``bench/ingest.py``),
declared once here.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

from circuitatlas.ingest import rows
from circuitatlas.ingest.graphtypes import LayerGraph, WeightLayer
from circuitatlas.ingest.writer import IngestOptions

__all__ = ["IngestPlan", "plan_ingest", "direct_edge_count", "expanded_edge_bound", "RATES"]

# Measured by bench/ingest.py on the project's 2-core machine (Neo4j 5.26, local server):
# bytes on disk per edge (plus 8 per kernel value) and per neuron, and edges written per second
# by each path; expanded edges computed per second (autograd on the linearised network).
# (bench/results/real-networks-2core.json: ResNet-50 by the bulk path in 521 s, the plan said 507 s;
# GoogLeNet's store 2.9 GB with its indexes)
RATES = {"bytes_per_edge": 280, "bytes_per_kernel_value": 8, "bytes_per_neuron": 250,
         "online_edges_per_s": 25_000, "bulk_edges_per_s": 150_000, "expanded_edges_per_s": 60_000}


@dataclass(frozen=True)
class IngestPlan:
    """The counts of an ingest that was not run; :meth:`summary` is its JSON form."""

    model: str
    arch: str
    input_size: tuple[int, int, int]
    layers: int
    neurons: int
    weight_pairs: int  # (out, in) pairs of every conv/linear kernel (a linear over a map: per map channel)
    summand_channels: int  # one per operand channel of every add layer (the residual stream)
    direct_edges: int  # exactly what the writers would store, pruning included
    expanded_edges: int  # an upper bound (see the module docstring)
    store_bytes: int  # an estimate
    seconds: dict[str, float]  # an estimate of the whole ingest by each write path
    observation_layers: list[str] = field(default_factory=list)
    by_layer: list[dict] = field(default_factory=list)  # name, kind, channels, direct_in, expanded_in

    def summary(self) -> dict:
        return asdict(self)


def _sources_per_input(layer: WeightLayer) -> tuple[np.ndarray, bool]:
    """How many neurons each input channel carries, and whether a neuron sits on two channels of
    one group (its kernels are then summed into one edge)."""
    counts = np.array([len(s) for s in layer.sources], dtype=np.int64)
    per_group = layer.weight.shape[1]
    repeated = any(len(set(itertools.chain.from_iterable(layer.sources[g * per_group:(g + 1) * per_group]))) <
                   int(counts[g * per_group:(g + 1) * per_group].sum()) for g in range(layer.groups))
    return counts, repeated


def direct_edge_count(layer: WeightLayer, options: IngestOptions) -> int:
    """The direct edges the writers would store into ``layer`` (after ``min_l2`` and ``top_k``)."""
    counts, repeated = _sources_per_input(layer)
    if repeated:  # rare (cat([x, x])): count the merged edges themselves
        total = 0
        for _src, out_idx, _in_idx, kernels in rows.direct_blocks(layer):
            l2 = rows.l2_norms(kernels.reshape(len(kernels), -1))
            order, _ = rows.select_edges(out_idx, l2, options.min_l2, options.top_k_per_neuron)
            total += order.size
        return total
    out, per_group = layer.weight.shape[:2]
    w = layer.weight.reshape(out, per_group, -1)
    l2 = np.sqrt(np.einsum("ijk,ijk->ij", w, w, dtype=np.float64))
    keep = (l2 > 0) & (l2 >= options.min_l2)
    group = np.arange(out) // (out // layer.groups)
    total = 0
    for src in {name for sources in layer.sources for name, _ in sources}:  # top_k is per source layer
        from_src = np.array([sum(1 for name, _ in s if name == src) for s in layer.sources], dtype=np.int64)
        per_target = (keep * from_src.reshape(layer.groups, per_group)[group]).sum(axis=1)
        if options.top_k_per_neuron is not None:
            per_target = np.minimum(per_target, options.top_k_per_neuron)
        total += int(per_target.sum())
    return total


def _reach(graph: LayerGraph, src: str, dst: str) -> np.ndarray:
    """(channels of dst, channels of src) booleans: which pairs a chain of direct edges joins."""
    c_src = graph.layers[src].channels
    reach: dict[str, np.ndarray] = {}
    seeds = graph.layers[src].sources
    if src in graph.weight_layers or seeds is None:
        reach[src] = np.eye(c_src, dtype=bool)
    else:  # a block: its channels are other layers' neurons
        for c, sources in enumerate(seeds):
            for layer, channel in sources:
                reach.setdefault(layer, np.zeros((graph.layers[layer].channels, c_src), dtype=bool))[channel, c] = True
    first, last = graph.layers[src].order, graph.layers[dst].order
    for layer in sorted(graph.weight_layers.values(), key=lambda w: graph.layers[w.name].order):
        if not first < graph.layers[layer.name].order <= last or layer.name == src:
            continue
        per_group = layer.weight.shape[1]
        grouped = np.zeros((layer.groups, c_src), dtype=bool)
        for i, sources in enumerate(layer.sources):
            for name, channel in sources:
                if name in reach:
                    grouped[i // per_group] |= reach[name][channel]
        if grouped.any():
            reach[layer.name] = grouped[np.arange(layer.out_channels) // (layer.out_channels // layer.groups)]
    if dst in reach and dst in graph.weight_layers:
        return reach[dst]
    found = np.zeros((graph.layers[dst].channels, c_src), dtype=bool)
    for c, sources in enumerate(graph.layers[dst].sources or []):
        for name, channel in sources:
            if name in reach:
                found[c] |= reach[name][channel]
    return found


def expanded_edge_bound(graph: LayerGraph, src: str, dst: str) -> int:
    """An upper bound on the expanded edges from observation layer ``src`` to ``dst`` (every
    pair when a block's channels could not be followed)."""
    untracked = [n for n in (src, dst) if n not in graph.weight_layers and graph.layers[n].sources is None]
    if untracked:
        return graph.layers[src].channels * graph.layers[dst].channels
    return int(_reach(graph, src, dst).sum())


def plan_ingest(graph: LayerGraph, options: IngestOptions, model: str, arch: str) -> IngestPlan:
    """The counts, store size and time of writing ``graph`` with ``options`` as ``model``."""
    direct = {name: direct_edge_count(w, options) for name, w in graph.weight_layers.items()} if options.direct else {}
    obs = graph.observation_layers
    expanded = ({b: expanded_edge_bound(graph, a, b) for a, b in zip(obs, obs[1:])} if options.expanded else {})
    kernel_values = sum(direct[name] * int(np.prod(w.weight.shape[2:])) for name, w in graph.weight_layers.items()
                        if name in direct)
    n_direct, n_expanded = sum(direct.values()), sum(expanded.values())
    neurons = sum(info.channels for info in graph.layers.values())
    expanded_values = n_expanded * 25  # a typical expanded window is 3x3 to 7x7
    store = (RATES["bytes_per_edge"] * (n_direct + n_expanded) + RATES["bytes_per_neuron"] * neurons
             + RATES["bytes_per_kernel_value"] * (kernel_values + expanded_values))
    compute = n_expanded / RATES["expanded_edges_per_s"]
    edges = n_direct + n_expanded
    seconds = {"online": round(compute + edges / RATES["online_edges_per_s"], 1),
               "bulk": round(compute + edges / RATES["bulk_edges_per_s"], 1)}
    pairs = sum(int(np.prod(w.weight.shape[:2])) for w in graph.weight_layers.values() if w.kind != "add")
    summands = sum(int(np.prod(w.weight.shape[:2])) for w in graph.weight_layers.values() if w.kind == "add")
    by_layer = [{"name": info.name, "kind": info.kind, "channels": info.channels,
                 "direct_in": direct.get(info.name, 0), "expanded_in": expanded.get(info.name, 0)}
                for info in graph.layers.values()]
    return IngestPlan(model, arch, tuple(graph.input_shape), len(graph.layers), neurons, pairs, summands, n_direct,
                      n_expanded, int(store), seconds, list(obs), by_layer)
