"""Signed pattern search: a small graph pattern over neurons, compiled to one parameterised
Cypher query, and the same pattern matched in memory on networkx (the two must agree).

A pattern::

    {"nodes": {"a": {"layer": "mid"}, "b": {"layer": "high"}},
     "edges": [{"src": "a", "dst": "b", "sign": "+", "min": 0.5, "relative": True}]}

``sign`` is "+" or "-" on the edge's ``sum``; ``min`` bounds |sum| from below, absolutely, or
with ``relative`` as a fraction of the target's strongest incoming |sum| (over all its inputs
of that kind): the edge's stored ``rel_in``. Distinct pattern nodes match distinct neurons.
Variable names in the query are generated (``n0``, ``e0``...); layers and bounds travel as
parameters.

The query expands one edge at a time and checks that edge's sign, bounds and distinctness right
there, so a partial match that fails is dropped before anything grows from it (the relative
bounds are stored on the edges for this: nothing is enumerated first and filtered later). A
``layers`` restriction applies to every node the pattern does not pin to a layer; ``limit``
ends the search at that many matches, and a timeout (default 60 s) ends the transaction on the
server.
"""

from __future__ import annotations

import re
from typing import Any

import networkx as nx

from circuitatlas import checks
from circuitatlas.errors import InvalidInput, QueryError
from circuitatlas.names import rel_type
from circuitatlas.queries.models import model_meta
from circuitatlas.store import Store

__all__ = ["compile_pattern", "search", "count_matches", "match_networkx", "PATTERNS", "validate", "SEARCH_TIMEOUT"]

SEARCH_TIMEOUT = 60.0  # seconds; the server ends the transaction

PATTERNS: dict[str, dict] = {
    "feed_forward_excitation": {
        "nodes": {"a": {}, "b": {}, "c": {}},
        "edges": [{"src": "a", "dst": "b", "sign": "+", "min": 0.5, "relative": True},
                  {"src": "b", "dst": "c", "sign": "+", "min": 0.5, "relative": True}]},
    "mutual_inhibition": {  # two pathways, each inhibited by the other's main input
        "nodes": {"x": {}, "x2": {}, "p": {}, "p2": {}},
        "edges": [{"src": "x", "dst": "p", "sign": "+", "min": 0.5, "relative": True},
                  {"src": "x2", "dst": "p2", "sign": "+", "min": 0.5, "relative": True},
                  {"src": "x", "dst": "p2", "sign": "-", "min": 0.3, "relative": True},
                  {"src": "x2", "dst": "p", "sign": "-", "min": 0.3, "relative": True}]},
    "union_of_two_cases": {
        "nodes": {"x": {}, "x2": {}, "p": {}, "p2": {}, "u": {}},
        "edges": [{"src": "x", "dst": "p", "sign": "+", "min": 0.5, "relative": True},
                  {"src": "x2", "dst": "p2", "sign": "+", "min": 0.5, "relative": True},
                  {"src": "x", "dst": "p2", "sign": "-", "min": 0.3, "relative": True},
                  {"src": "x2", "dst": "p", "sign": "-", "min": 0.3, "relative": True},
                  {"src": "p", "dst": "u", "sign": "+", "min": 0.5, "relative": True},
                  {"src": "p2", "dst": "u", "sign": "+", "min": 0.5, "relative": True}]},
}


_NODE_KEYS = {"layer"}
_EDGE_KEYS = {"src", "dst", "sign", "min", "relative"}


def validate(pattern: dict) -> None:
    """InvalidInput saying what is wrong when ``pattern`` is not a pattern as the module describes."""
    if not isinstance(pattern, dict):
        raise InvalidInput(f"a pattern is a dict with 'nodes' and 'edges', not {type(pattern).__name__}")
    extra = set(pattern) - {"nodes", "edges"}
    nodes, edges = pattern.get("nodes"), pattern.get("edges")
    if extra or not isinstance(nodes, dict) or not nodes or not isinstance(edges, list):
        raise InvalidInput("a pattern needs 'nodes' (a non-empty dict) and 'edges' (a list), and nothing else"
                           + (f"; it has {sorted(map(str, extra))}" if extra else ""))
    for name, spec in nodes.items():
        _check_node(name, spec)
    for i, edge in enumerate(edges):
        _check_edge(i, edge, nodes)


def _check_node(name: Any, spec: Any) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,30}", name):
        raise InvalidInput(f"pattern node names are identifiers (letters, digits, _), not {name!r}")
    if not isinstance(spec, dict):
        raise InvalidInput(f"pattern node {name!r} must be a dict such as {{\"layer\": \"mid\"}} or {{}}, not {spec!r}")
    if set(spec) - _NODE_KEYS:
        raise InvalidInput(f"pattern node {name!r} has unknown keys {sorted(map(str, set(spec) - _NODE_KEYS))}; "
                           "a node may only name its 'layer'")
    if spec.get("layer") is not None and not isinstance(spec["layer"], str):
        raise InvalidInput(f"the layer of pattern node {name!r} must be a layer name, not {spec['layer']!r}")


def _check_edge(i: int, edge: Any, nodes: dict) -> None:
    if not isinstance(edge, dict):
        raise InvalidInput(f"pattern edge {i} must be a dict such as {{\"src\": \"a\", \"dst\": \"b\"}}, "
                           f"not {edge!r}")
    if set(edge) - _EDGE_KEYS:
        raise InvalidInput(f"pattern edge {i} has unknown keys {sorted(map(str, set(edge) - _EDGE_KEYS))}; "
                           f"known: {', '.join(sorted(_EDGE_KEYS))}")
    for end in ("src", "dst"):
        if not isinstance(edge.get(end), str) or edge[end] not in nodes:
            raise InvalidInput(f"pattern edge {i}: {end} {edge.get(end)!r} is not a node of the pattern")
    if edge.get("sign", "+") not in ("+", "-"):
        raise InvalidInput(f"pattern edge {i}: sign must be '+' or '-', not {edge.get('sign')!r}")
    if not isinstance(edge.get("relative", False), bool):
        raise InvalidInput(f"pattern edge {i}: relative must be true or false, not {edge['relative']!r}")
    if edge.get("min") is not None:
        high = 1.0 if edge.get("relative") else None  # a relative bound is a fraction of the strongest input
        checks.real(f"pattern edge {i}: min", edge["min"], 0.0, high)


def compile_pattern(pattern: dict, kind: str = "direct", layers: list[str] | None = None,
                    limit: int | None = None, count: bool = False) -> tuple[str, dict[str, Any]]:
    """(query, parameters) for ``pattern``; the query returns one row per match, ``m``: name ->
    uid (with ``count``: one row, ``n``, the number of matches, none of them sent).

    Each edge becomes a ``MATCH`` that expands from already bound neurons, with its sign, its
    bound (absolute on ``sum`` or relative on ``rel_in``) and the distinctness of the neurons
    bound so far checked right there; with a ``limit``, each edge after the first is a subquery
    over the neurons bound before it, so that the search walks from them and stops at the limit.
    """
    validate(pattern)
    rel = rel_type(kind)
    names = list(pattern["nodes"])
    var = {name: f"n{i}" for i, name in enumerate(names)}
    params: dict[str, Any] = {}
    if layers is not None:
        params["layers"] = list(layers)
    bound: list[str] = []

    def node(name: str, conditions: list[str]) -> str:
        v = var[name]
        if v in bound:
            return f"({v})"
        conditions += [f"{v} <> {other}" for other in bound]
        bound.append(v)
        layer = pattern["nodes"][name].get("layer")
        if layer is None:
            if layers is not None:
                conditions.append(f"{v}.layer IN $layers")
            return f"({v}:Neuron {{model: $model}})"
        params[f"layer_{v}"] = layer
        return f"({v}:Neuron {{model: $model, layer: $layer_{v}}})"

    lines = []
    for i, edge in _connected_order(pattern["edges"]):
        e = f"e{i}"
        conditions = [f"{e}.sum {'>' if edge.get('sign', '+') == '+' else '<'} 0"]
        if edge.get("min"):
            params[f"min_{e}"] = float(edge["min"])
            conditions.append(f"{e}.rel_in >= $min_{e}" if edge.get("relative") else f"abs({e}.sum) >= $min_{e}")
        before = list(bound)
        src = node(edge["src"], conditions)
        dst = node(edge["dst"], conditions)
        match = f"MATCH {src}-[{e}:{rel}]->{dst} WHERE " + " AND ".join(conditions)
        if not before or limit is None or count:
            lines.append(match)
            continue
        # with a limit, every later edge in a subquery over the neurons bound so far: the planner
        # then walks from them, row by row, and the limit stops the walk early, where it would seek
        # every strong edge of the model into a hash join first (the first 1,000 mutual_inhibition
        # matches on GoogLeNet: 18 s -> 0.8 s). Counting every match is faster with the joins.
        new = [v for v in bound if v not in before] or [e]
        lines.append(f"CALL ({', '.join(before)}) {{ {match} RETURN {', '.join(new)} }}")
    for name in names:
        if var[name] not in bound:
            conditions: list[str] = []
            text = node(name, conditions)
            lines.append(f"MATCH {text}" + (" WHERE " + " AND ".join(conditions) if conditions else ""))
    query = "\n".join(lines)
    if count:
        return query + "\nRETURN count(*) AS n", params
    query += "\nRETURN {" + ", ".join(f"`{name}`: {var[name]}.uid" for name in names) + "} AS m"
    if limit is not None:
        params["limit"] = int(limit)
        query += "\nLIMIT $limit"
    return query, params


def _connected_order(edges: list[dict]) -> list[tuple[int, dict]]:
    """The edges (with their index) in the order the query expands them: each next edge is one
    whose ends are already bound (a check, not a new expansion), else one that grows from a bound
    node, else the first left: so two-pathway patterns never form a cross product of pathways."""
    left = list(enumerate(edges))
    bound: set[str] = set()
    ordered = []
    while left:
        def reach(item: tuple[int, dict]) -> int:
            return (item[1]["src"] in bound) + (item[1]["dst"] in bound)
        best = max(left, key=reach)  # max keeps the first of equals: the given order otherwise
        left.remove(best)
        ordered.append(best)
        bound |= {best[1]["src"], best[1]["dst"]}
    return ordered


def search(store: Store, pattern: dict | str, model: str, kind: str = "direct", layers: list[str] | None = None,
           limit: int | None = None, timeout: float | None = SEARCH_TIMEOUT) -> list[dict[str, str]]:
    """Matches of ``pattern`` (a dict or a name in :data:`PATTERNS`) in ``model``: every one, or
    the first ``limit``; neurons of ``layers`` only where the pattern names no layer. Ends with a
    one-line :class:`QueryError` after ``timeout`` seconds (None: the server's own limit)."""
    limit = None if limit is None else checks.whole("limit", limit, 1)
    query, params = compile_pattern(_shipped(pattern), kind, layers, limit)
    return [row["m"] for row in _run(store, query, timeout, model=model, **params)]


def count_matches(store: Store, pattern: dict | str, model: str, kind: str = "direct",
                  layers: list[str] | None = None, timeout: float | None = SEARCH_TIMEOUT) -> int:
    """How many matches :func:`search` would return, counted in the server (none is sent)."""
    query, params = compile_pattern(_shipped(pattern), kind, layers, count=True)
    return int(_run(store, query, timeout, model=model, **params)[0]["n"])


def _shipped(pattern: dict | str) -> dict:
    if isinstance(pattern, str):
        if pattern not in PATTERNS:
            raise InvalidInput(f"no shipped pattern {pattern!r}; choose one of {', '.join(PATTERNS)} or pass a dict")
        return PATTERNS[pattern]
    return pattern


def _run(store: Store, query: str, timeout: float | None, **params: Any) -> list[dict]:
    """The search's rows; NotFound for a model that is not in the graph (which no pattern matches)."""
    timeout = checks.seconds("timeout", timeout)
    model_meta(store, params["model"])
    try:
        return store.read_with_timeout(query, timeout, **params)
    except QueryError as exc:
        if "timed out" not in str(exc):
            raise
        raise QueryError(f"pattern search {exc}; or narrow it with layers or a limit") from None


def match_networkx(g: nx.DiGraph, pattern: dict) -> list[dict[str, str]]:
    """The same matches found by backtracking over a networkx graph whose nodes carry ``layer``
    and whose edges carry ``sum`` (as :func:`~circuitatlas.queries.subgraph.subgraph` returns).
    Relative bounds use each target's strongest input *in g*: give it every input layer."""
    validate(pattern)
    names = list(pattern["nodes"])
    strongest = {n: max((abs(d["sum"]) for _, _, d in g.in_edges(n, data=True)), default=0.0) for n in g}

    def edge_ok(edge: dict, a: str, b: str) -> bool:
        if not g.has_edge(a, b):
            return False
        s = g.edges[a, b]["sum"]
        if (s > 0) != (edge.get("sign", "+") == "+") or s == 0:
            return False
        bound = float(edge.get("min") or 0.0)
        if edge.get("relative") and bound:
            bound *= strongest[b]
        return abs(s) >= bound

    candidates = {name: [n for n, d in g.nodes(data=True)
                         if pattern["nodes"][name].get("layer") in (None, d.get("layer"))] for name in names}
    found: list[dict[str, str]] = []

    def extend(assigned: dict[str, str]) -> None:
        if len(assigned) == len(names):
            found.append(dict(assigned))
            return
        name = names[len(assigned)]
        for node in candidates[name]:
            if node in assigned.values():
                continue
            assigned[name] = node
            if all(edge_ok(e, assigned[e["src"]], assigned[e["dst"]]) for e in pattern["edges"]
                   if e["src"] in assigned and e["dst"] in assigned):
                extend(assigned)
            del assigned[name]

    extend({})
    return found
