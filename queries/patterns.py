"""Signed pattern search: a small graph pattern over neurons, compiled to one parameterised
Cypher query, and the same pattern matched in memory on networkx (the two must agree).

A pattern::

    {"nodes": {"a": {"layer": "mid"}, "b": {"layer": "high"}},
     "edges": [{"src": "a", "dst": "b", "sign": "+", "min": 0.5, "relative": True}]}

``sign`` is "+" or "-" on the edge's ``sum``; ``min`` bounds |sum| from below, absolutely, or
with ``relative`` as a fraction of the target's strongest incoming |sum| (over all its inputs
of that kind). Distinct pattern nodes match distinct neurons. Variable names in the query are
generated (``n0``, ``e0``...); layers and bounds travel as parameters.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import networkx as nx

from circuitatlas.errors import InvalidInput
from circuitatlas.names import rel_type
from circuitatlas.store import Store

__all__ = ["compile_pattern", "search", "match_networkx", "PATTERNS", "validate"]

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


def validate(pattern: dict) -> None:
    nodes = pattern.get("nodes")
    edges = pattern.get("edges")
    if not isinstance(nodes, dict) or not nodes or not isinstance(edges, list):
        raise InvalidInput("a pattern needs 'nodes' (a non-empty dict) and 'edges' (a list)")
    for name in nodes:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,30}", str(name)):
            raise InvalidInput(f"pattern node names are identifiers (letters, digits, _), not {name!r}")
    for edge in edges:
        if edge.get("src") not in nodes or edge.get("dst") not in nodes:
            raise InvalidInput(f"edge {edge} names a node that the pattern does not have")
        if edge.get("sign", "+") not in ("+", "-"):
            raise InvalidInput(f"edge sign must be '+' or '-', got {edge.get('sign')!r}")


def compile_pattern(pattern: dict, kind: str = "direct") -> tuple[str, dict[str, Any]]:
    """(query, parameters) for ``pattern``; the query returns one row per match, ``m``: name -> uid.

    Each edge becomes a ``MATCH`` that expands from already bound neurons, with its sign and
    absolute bound checked right there; relative bounds need the target's strongest input, which
    a subquery computes once per candidate target before the final filter.
    """
    validate(pattern)
    rel = rel_type(kind)
    names = list(pattern["nodes"])
    var = {name: f"n{i}" for i, name in enumerate(names)}
    params: dict[str, Any] = {}
    bound: set[str] = set()

    def node(name: str) -> str:
        v = var[name]
        if v in bound:
            return f"({v})"
        bound.add(v)
        layer = pattern["nodes"][name].get("layer")
        if layer is None:
            return f"({v}:Neuron {{model: $model}})"
        params[f"layer_{v}"] = layer
        return f"({v}:Neuron {{model: $model, layer: $layer_{v}}})"

    lines, relative = [], []
    for i, edge in enumerate(pattern["edges"]):
        e, b = f"e{i}", var[edge["dst"]]
        conditions = [f"{e}.sum {'>' if edge.get('sign', '+') == '+' else '<'} 0"]
        if edge.get("min"):
            params[f"min_{e}"] = float(edge["min"])
            if edge.get("relative"):
                relative.append((e, b))
            else:
                conditions.append(f"abs({e}.sum) >= $min_{e}")
        lines.append(f"MATCH {node(edge['src'])}-[{e}:{rel}]->{node(edge['dst'])} WHERE " + " AND ".join(conditions))
    for name in names:
        if var[name] not in bound:
            lines.append(f"MATCH {node(name)}")
    for b in sorted({b for _, b in relative}):
        lines.append(f"CALL ({b}) {{ MATCH ()-[z:{rel}]->({b}) RETURN max(abs(z.sum)) AS strongest_{b} }}")
    final = [f"{var[x]} <> {var[y]}" for x, y in itertools.combinations(names, 2)]
    final += [f"abs({e}.sum) >= $min_{e} * strongest_{b}" for e, b in relative]
    query = "\n".join(lines)
    if final:
        query += "\nWITH * WHERE " + " AND ".join(final)
    query += "\nRETURN {" + ", ".join(f"`{name}`: {var[name]}.uid" for name in names) + "} AS m"
    return query, params


def search(store: Store, pattern: dict | str, model: str, kind: str = "direct") -> list[dict[str, str]]:
    """Every match of ``pattern`` (a dict or a name in :data:`PATTERNS`) in ``model``."""
    if isinstance(pattern, str):
        if pattern not in PATTERNS:
            raise InvalidInput(f"no shipped pattern {pattern!r}; choose one of {', '.join(PATTERNS)} or pass a dict")
        pattern = PATTERNS[pattern]
    query, params = compile_pattern(pattern, kind)
    return [row["m"] for row in store.stream(query, model=model, **params)]


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
