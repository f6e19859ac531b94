"""Walking the weight graph: a unit's upstream circuit as the Circuits figures draw it, and the
strongest paths between two units. Same conventions as :mod:`.connectivity` (unit criteria,
relative strength, ``timeout`` and ``limit``)."""

from __future__ import annotations

import warnings
from typing import Any

import networkx as nx
import numpy as np

from circuitatlas import checks, names
from circuitatlas.errors import InvalidInput, NotFound, QueryError
from circuitatlas.queries import cypher
from circuitatlas.queries.connectivity import (
    DEFAULT_LIMIT,
    DEFAULT_TIMEOUT,
    PATH_WEIGHTS,
    Truncated,
    _Budget,
    _check_limit,
    _fraction,
    _kernel_arrays,
    _sign,
    _uid,
    resolve_kind,
)
from circuitatlas.store import Store

__all__ = ["circuit", "paths"]


def circuit(store: Store, target: str, depth: int = 2, min_rel: float = 0.3, kind: str = "auto",
            sign: str | None = None, kernels: bool = True, limit: int = DEFAULT_LIMIT,
            timeout: float | None = DEFAULT_TIMEOUT) -> nx.DiGraph:
    """The upstream circuit of ``target`` as the Circuits figures draw it: every input whose
    |sum| is at least ``min_rel`` of the unit's strongest input, then the same for each of those,
    ``depth`` edges back (observation layers, with the default expanded weights).

    A ``networkx.DiGraph``: nodes are neuron uids with the neuron's properties and ``depth``
    (edges from the target, the shortest where a unit is reached twice); edges carry ``kernel``
    ((kh, kw) array; left out with ``kernels=False``, which moves far less data), ``sum``,
    ``l1``, ``l2``, ``max``, ``min``, ``kh``, ``kw`` and ``rel_in``; ``sign`` ("+", "-") keeps
    excitatory or inhibitory inputs only. At most ``limit`` edges (strongest first within a
    step; :class:`Truncated` warns when cut). One query per step back.
    """
    depth, min_rel, limit = checks.whole("depth", depth, 1), _fraction("min_rel", min_rel), _check_limit(limit)
    uid = _uid(store, target)
    kind = resolve_kind(store, [uid], kind)
    rel = names.rel_type(kind)
    budget = _Budget(timeout)
    found = budget.read(store, cypher.UNITS_PROPERTIES, uids=[uid])
    if not found:
        raise NotFound(f"no neuron {uid!r} in the graph")
    g = nx.DiGraph(target=uid, kind=kind, depth=depth, min_rel=min_rel)
    g.add_node(uid, **found[0]["props"], depth=0)
    frontier = [uid]
    for step in range(1, depth + 1):
        left = limit - g.number_of_edges()
        step_edges = _circuit_edges(budget.read(store, cypher.circuit_step(rel, kernels), uids=frontier,
                                                min_rel=min_rel, sign=_sign(sign), limit=left + 1)[0], kernels)
        if len(step_edges) > left:
            warnings.warn(f"circuit: stopped at limit={limit} edges (strongest first at each step); "
                          "pass a larger limit or min_rel", Truncated, stacklevel=2)
            step_edges = sorted(step_edges, key=lambda e: -abs(e[2]["rel_in"]))[:left]
        new = sorted({a for a, _, _ in step_edges} - set(g))
        for row in budget.read(store, cypher.UNITS_PROPERTIES, uids=new):
            g.add_node(row["props"]["uid"], **row["props"], depth=step)
        g.add_edges_from(step_edges)
        frontier = new
        if len(g.edges) >= limit or not frontier:
            break
    return g


def _circuit_edges(row: dict[str, Any], kernels: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """One step of :func:`circuit` from its columns: ``(source, target, attributes)`` per edge, with
    ``rel_in`` signed over the target's strongest input (one divisor per target, read off its
    edges as |sum| / stored rel_in) and kernels as (kh, kw) arrays."""
    targets = row["target"]
    total, stored = np.asarray(row["sum"], dtype=np.float64), np.asarray(row["rel_in"], dtype=np.float64)
    index: dict[str, int] = {}
    at = np.fromiter((index.setdefault(t, len(index)) for t in targets), dtype=np.int64, count=len(targets))
    strongest = np.zeros(len(index))
    np.maximum.at(strongest, at, np.abs(total) / np.where(stored > 0, stored, 1.0))
    rel = (total / strongest[at]).tolist() if total.size else []
    edges = [{"sum": s, "l1": l1, "l2": l2, "max": hi, "min": lo, "kh": kh, "kw": kw, "rel_in": r}
             for s, l1, l2, hi, lo, kh, kw, r in zip(row["sum"], row["l1"], row["l2"], row["max"], row["min"],
                                                     row["kh"], row["kw"], rel, strict=True)]
    if kernels:
        for edge, kernel in zip(edges, _kernel_arrays(row["kernel"], row["kh"], row["kw"]), strict=True):
            edge["kernel"] = kernel
    return list(zip(row["source"], targets, edges, strict=True))


def paths(store: Store, source: str, target: str, max_len: int = 3, k: int = 10, kind: str = "auto",
          weight: str = "product", min_len: int = 1, min_rel: float = 0.0, limit: int = 200_000,
          timeout: float | None = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """The ``k`` strongest paths from ``source`` to ``target`` of ``min_len`` to ``max_len``
    edges through the ``kind`` graph ("auto": expanded where the source's layer has it).

    ``weight="product"`` (the default) scores a path by the product of its edges' signed
    ``rel_in``: each factor is the share of its target's strongest input that the edge carries,
    so the product is the path's first-order effect (the linearised network, one unit of the
    source's activity pushed along the path) in units of each layer's strongest input; its sign
    says excitatory or inhibitory, and paths are ranked by its magnitude. ``"sum"`` scores by the
    sum of |rel_in| along the path (neuprint's summed weights), which favours longer paths: use it
    with ``min_len == max_len``. Edges below ``min_rel`` are left out.

    Exact: the subgraph of every edge on some short enough path is read (pruned by reachability
    from both ends) and a k-best dynamic programme runs over it, hop by hop. ``limit`` bounds the
    edges read; past it the call raises rather than answer from part of the subgraph.
    Rows, strongest first: ``length``, ``units`` (uids from source to target), ``sum`` and
    ``rel_in`` (per edge) and ``strength``.
    """
    max_len, min_len = checks.whole("max_len", max_len, 1), checks.whole("min_len", min_len, 1)
    k, limit, min_rel = _check_limit(k, "k"), _check_limit(limit), _fraction("min_rel", min_rel)
    if not min_len <= max_len:
        raise InvalidInput(f"path lengths must satisfy 1 <= min_len <= max_len, got {min_len} and {max_len}")
    if weight not in PATH_WEIGHTS:
        raise InvalidInput(f"weight must be one of {', '.join(PATH_WEIGHTS)}, not {weight!r}")
    source, target = _uid(store, source), _uid(store, target)
    if source == target:
        raise InvalidInput("source and target are the same unit")
    kind = "direct" if kind == "auto" and (resolve_kind(store, [source], kind, "out") == "direct" or resolve_kind(
        store, [target], kind, "in") == "direct") else resolve_kind(store, [source], kind, "out")
    rel = names.rel_type(kind)
    budget = _Budget(timeout)
    ids = {row["uid"]: row["id"] for row in budget.read(store, cypher.UNIT_EXISTS, uids=[source, target])}
    for uid in (source, target):
        if uid not in ids:
            raise NotFound(f"no neuron {uid!r} in the graph")
    s, t = ids[source], ids[target]

    model, source_layer, _ = names.parse_neuron_uid(source)
    target_layer = names.parse_neuron_uid(target)[1]
    if names.parse_neuron_uid(target)[0] != model:
        raise InvalidInput(f"{source} and {target} are in different models")
    layers_at, cyclic = _layers_per_hop(budget.read(store, cypher.LAYER_FEEDS, model=model, kind=kind),
                                        source_layer, target_layer, max_len)
    wanted = sorted(set().union(*layers_at))
    layer_of = {row["id"]: row["layer"] for row in budget.read(store, cypher.LAYERS_NEURON_IDS, model=model,
                                                               layers=wanted)} if wanted else {}
    layer_of.update({s: source_layer, t: target_layer})
    nodes = [s] + sorted(set(layer_of) - {s})
    index = {node: i for i, node in enumerate(nodes)}
    last = {row["id"] for row in budget.read(store, cypher.path_predecessors(rel), ids=[t])} | {t}
    hops = _read_hops(store, budget, rel, layer_of, layers_at, (s, t, target_layer, cyclic), index, nodes, last,
                      max_len, limit, (source, target))
    used = sorted({0, index[t]} | {int(i) for _, dst, _ in hops for i in np.unique(dst)})
    info = {index[row["id"]]: row for row in budget.read(store, cypher.path_nodes(rel), ids=[nodes[i] for i in used])}
    strongest = np.zeros(len(nodes))
    for i, row in info.items():
        strongest[i] = row["b_in"] or 0.0
    uids = {i: row["uid"] for i, row in info.items()}
    return _best_paths(hops, strongest, uids, index[t], k, weight, min_len, min_rel)


def _read_hops(store: Store, budget: "_Budget", rel: str, layer_of: dict, layers_at: list, ends: tuple,
               index: dict, nodes: list, last: set, max_len: int, limit: int, names_: tuple
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The edges a path may take at each hop, as (src, dst, sum) arrays of node indices, read
    hop by hop from whichever side has fewer edges to scan."""
    s, t, target_layer, cyclic = ends
    source, target = names_
    hops: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per hop: (src, dst, sum) arrays
    frontier, read = {s}, 0
    for hop in range(1, max_len + 1):
        # where a partial path may be after `hop` edges: a layer on a short enough layer path, never
        # another unit of the target's layer, and within one edge of the target when one is left
        allowed = {n for n, layer in layer_of.items() if layer in layers_at[hop - 1]
                   and (layer != target_layer or n == t or cyclic)}
        allowed &= {t} if hop == max_len else last if hop == max_len - 1 else allowed
        if not frontier or not allowed:
            break
        sources, targets = {n: index[n] for n in frontier}, {n: index[n] for n in allowed}
        cost = budget.read(store, cypher.path_degrees(rel), sources=sources, targets=targets)[0]
        forward = (cost["forward"] or 0) <= (cost["backward"] or 0)
        rows = budget.read(store, cypher.path_edges(rel, forward), sources=sources, targets=targets)
        src = np.concatenate([np.broadcast_to(row["src"], len(row["sum"])) for row in rows] + [np.zeros(0, int)])
        dst = np.concatenate([np.broadcast_to(row["dst"], len(row["sum"])) for row in rows] + [np.zeros(0, int)])
        sums = np.concatenate([np.asarray(row["sum"], dtype=np.float64) for row in rows] + [np.zeros(0)])
        read += sums.size
        if read > limit:
            raise QueryError(f"the paths from {source} to {target} cross more than {limit} edges; "
                             "pass a larger limit, a smaller max_len or a min_rel")
        hops.append((src.astype(np.int64), dst.astype(np.int64), sums))
        frontier = {nodes[i] for i in np.unique(dst)} - {t}
    return hops


def _layers_per_hop(feeds: list[dict[str, str]], source: str, target: str, max_len: int
                    ) -> tuple[list[set[str]], bool]:
    """For hop i = 1..max_len, the layers on some layer path of at most ``max_len`` FEEDS steps from
    ``source`` to ``target`` that it reaches after exactly i steps (the layer graph is tiny); and
    whether the target's layer lies on a cycle (never in a CNN: then no other unit of that layer
    leads to the target)."""
    succ: dict[str, set[str]] = {}
    pred: dict[str, set[str]] = {}
    for feed in feeds:
        succ.setdefault(feed["src"], set()).add(feed["dst"])
        pred.setdefault(feed["dst"], set()).add(feed["src"])
    ahead, behind = [{source}], [{target}]
    for _ in range(max_len):
        ahead.append({b for a in ahead[-1] for b in succ.get(a, ())})
        behind.append({a for b in behind[-1] for a in pred.get(b, ())})
    return ([ahead[i] & set().union(*behind[: max_len - i + 1]) for i in range(1, max_len + 1)],
            target in set().union(*behind[1:]))


def _best_paths(hops: list[tuple[np.ndarray, np.ndarray, np.ndarray]], strongest: np.ndarray, uids: dict[int, str],
                t: int, k: int, weight: str, min_len: int, min_rel: float) -> list[dict[str, Any]]:
    """k-best dynamic programme over the hops (the source is neuron 0, the target ``t``): after
    hop i each neuron keeps its k best partial paths of exactly i edges (both scores are monotone
    in a path's prefix, so this is exact)."""
    product = weight == "product"
    node = np.array([0])
    value = np.array([1.0 if product else 0.0])
    layers: list[dict[str, np.ndarray]] = []  # per hop: node, value, parent entry, edge sum, edge rel
    ends: list[tuple[float, int, int]] = []  # (score, hop, entry)
    for hop, (src, dst, sums) in enumerate(hops, start=1):
        if dst.size == 0 or node.size == 0:
            break
        rel = sums / np.where(strongest[dst] > 0, strongest[dst], 1.0)
        keep = np.abs(rel) >= min_rel
        src, dst, sums, rel = src[keep], dst[keep], sums[keep], rel[keep]
        order = np.argsort(node, kind="stable")  # join edges to the partial paths ending at their source
        first = np.searchsorted(node[order], src, "left")
        count = np.searchsorted(node[order], src, "right") - first
        edge = np.repeat(np.arange(src.size), count)
        offset = np.arange(edge.size) - np.repeat(np.cumsum(count) - count, count)
        parent = order[np.repeat(first, count) + offset]
        score = value[parent] * rel[edge] if product else value[parent] + np.abs(rel[edge])
        target = dst[edge]
        ranked = np.lexsort((-np.abs(score), target))
        group_start = np.searchsorted(target[ranked], target[ranked], "left")
        best = ranked[np.arange(ranked.size) - group_start < k]
        layers.append({"node": target[best], "value": score[best], "parent": parent[best],
                       "sum": sums[edge[best]], "rel": rel[edge[best]]})
        at_target = layers[-1]["node"] == t
        if hop >= min_len:
            ends += [(float(layers[-1]["value"][j]), hop, int(j)) for j in np.flatnonzero(at_target)]
        node, value = np.where(at_target, -1, layers[-1]["node"]), layers[-1]["value"]
    ends.sort(key=lambda end: -abs(end[0]))
    found = []
    for score, hop, entry in ends[:k]:
        chain, edge_sums, edge_rels = [], [], []
        for h in range(hop - 1, -1, -1):
            chain.append(uids[int(layers[h]["node"][entry])])
            edge_sums.append(float(layers[h]["sum"][entry]))
            edge_rels.append(float(layers[h]["rel"][entry]))
            entry = int(layers[h]["parent"][entry])
        found.append({"length": hop, "units": [uids[0]] + chain[::-1], "sum": edge_sums[::-1],
                      "rel_in": edge_rels[::-1], "strength": score})
    return found
