"""The query API (unit criteria and the helpers of queries.connectivity) against independent
computations: hand-written Cypher for the criteria, numpy on the weight arrays for adjacency and
similarity, networkx on the whole graph for paths, common partners and circuits."""

from __future__ import annotations

import doctest
import itertools
import json
import os
import subprocess
import sys
import time

import networkx as nx
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from circuitatlas.cli import main
from circuitatlas.errors import InvalidInput, NotFound, QueryError
from circuitatlas.queries import connectivity, criteria, profiles
from circuitatlas.queries.connectivity import Truncated
from circuitatlas.queries.criteria import Units, where


def test_kernel_arrays_keep_order_across_shapes():
    """Flat kernels of mixed shapes become (kh, kw) float32 arrays in their own order."""
    flat = [[1.0] * 9, [2.0], [3.0] * 9, [4.0, 5.0], [6.0]]
    kh, kw = [3, 1, 3, 1, 1], [3, 1, 3, 2, 1]
    arrays = connectivity._kernel_arrays(flat, kh, kw)
    assert [a.shape for a in arrays] == [(3, 3), (1, 1), (3, 3), (1, 2), (1, 1)]
    assert all(a.dtype == np.float32 for a in arrays)
    assert [float(a.flat[0]) for a in arrays] == [1.0, 2.0, 3.0, 4.0, 6.0] and arrays[3].tolist() == [[4.0, 5.0]]
    assert connectivity._kernel_arrays([], [], []) == []


def test_circuit_edges_divide_by_each_targets_strongest():
    """One step's columns to edges: rel_in is signed and over each target's own strongest input
    (|sum| / stored rel_in), whatever the other targets' strongest are."""
    from circuitatlas.queries.paths import _circuit_edges
    row = {"target": ["m/b:0", "m/b:0", "m/b:1"], "source": ["m/a:0", "m/a:1", "m/a:0"],
           "sum": [2.0, -1.0, 0.5], "rel_in": [1.0, 0.5, 0.5], "l1": [2.0, 1.0, 0.5], "l2": [1.0, 0.5, 0.3],
           "max": [1.0, 0.0, 0.5], "min": [0.0, -1.0, 0.0], "kh": [1, 1, 1], "kw": [2, 2, 2],
           "kernel": [[1.0, 1.0], [-0.5, -0.5], [0.25, 0.25]]}
    edges = _circuit_edges(row, kernels=True)
    assert [(a, b) for a, b, _ in edges] == [("m/a:0", "m/b:0"), ("m/a:1", "m/b:0"), ("m/a:0", "m/b:1")]
    assert [e["rel_in"] for _, _, e in edges] == pytest.approx([1.0, -0.5, 0.5])  # strongest 2.0, 2.0, 1.0
    assert edges[1][2]["kernel"].tolist() == [[-0.5, -0.5]] and edges[2][2]["sum"] == 0.5
    assert "kernel" not in _circuit_edges(row, kernels=False)[0][2]
    empty = {key: [] for key in row}
    assert _circuit_edges(empty, kernels=True) == []


@pytest.fixture(scope="module")
def graph(atlas):
    """The demo network ``t`` (direct and expanded edges, an SVD analysis written back, a few
    branches and annotations set by hand) and the planted equivariance network ``pl`` (direct
    edges, tuning of mid and high, the rotation-equivariance motif found)."""
    torch.manual_seed(0)
    atlas.ingest("tiny", "t", input_size=(3, 32, 32))
    atlas.ingest("planted:equivariance", "pl", input_size=(3, 33, 33), expanded=False)
    for layer in ("mid", "high"):
        atlas.annotate_tuning("pl", layer, radius=5, width=1.5)
    found = atlas.find_motifs("rotation_equivariance", "pl", ["mid", "high"], n_perm=100, alpha=0.05)
    assert found, "the planted family should be found"
    atlas.analyze_svd("t", "block1", "down", k=2)
    atlas.execute("MATCH (n:Neuron {model: 't', layer: 'block1'}) SET n.branch = CASE WHEN n.channel < 4 "
                  "THEN 'branch1' ELSE 'branch2' END")
    atlas.execute("MATCH (n:Neuron {model: 't', layer: 'down'}) WHERE n.channel IN [1, 5] SET n.featurevis = 'x.png'")
    atlas.execute("MATCH (l:Layer {uid: 't/block1'}) SET l.aliases = ['b1', 'first_block']")
    return atlas


@pytest.fixture(scope="module")
def full(graph):
    """(model, kind) -> every neuron and every ``kind`` edge of the model as networkx, with rel_in
    and rel_out from its own sums (read once per module)."""
    cache = {}

    def get(model, kind):
        if (model, kind) not in cache:
            cache[model, kind] = _full(graph, model, kind)
        return cache[model, kind]
    return get


def _full(atlas, model, kind):
    g = atlas.subgraph(model, [layer["name"] for layer in atlas.layers(model)], kind=kind)
    strongest_in = {n: max((abs(d["sum"]) for _, _, d in g.in_edges(n, data=True)), default=0.0) for n in g}
    strongest_out = {n: max((abs(d["sum"]) for _, _, d in g.out_edges(n, data=True)), default=0.0) for n in g}
    for a, b, d in g.edges(data=True):
        d["rel_in"] = d["sum"] / strongest_in[b]
        d["rel_out"] = d["sum"] / strongest_out[a]
    return g


def _uids(rows):
    return sorted(row["uid"] for row in rows)


# -- criteria --------------------------------------------------------------------------------------
def test_criteria_doctests():
    assert doctest.testmod(criteria).failed == 0


def test_where_keeps_values_out_of_the_query_text():
    hostile = "x' }) DETACH DELETE n //"
    c = Units(model=hostile, layers=[hostile, "a*"], branch=hostile, cluster=hostile, motif=[hostile, "superposition"],
              role=hostile, annotated="featurevis", uids=[f"{hostile}/l:1"], orientation=(10, 20), min_selectivity=0.5)
    text, params = where(c, "n", "u")
    assert hostile not in text and "DELETE" not in text
    assert all(key.startswith("u_") for key in params)
    assert params["u_model"] == hostile and hostile in params["u_layers"]
    with pytest.raises(InvalidInput):
        where(c, "n) DETACH DELETE (n", "u")
    with pytest.raises(InvalidInput):
        Units(layers="mid")  # no model and no uids
    with pytest.raises(InvalidInput):
        Units(uids=["not-a-uid"])
    with pytest.raises(InvalidInput):
        Units(model="t", annotated=["a b"])
    with pytest.raises(InvalidInput):
        Units.from_options(model="t", colour="red")


CRITERIA_CASES = [  # (criteria, the same selection written by hand in Cypher)
    (Units(model="t", layers=["block1", "down"]),
     "MATCH (n:Neuron {model: 't'}) WHERE n.layer IN ['block1', 'down'] RETURN n.uid AS uid"),
    (Units(model="t", layers="block?.branch*", channels=[0, 2, 5]),
     "MATCH (n:Neuron {model: 't'}) WHERE n.layer IN ['block1.branch1.0', 'block1.branch2.0', 'block2.branch1.0', "
     "'block2.branch2.0'] AND n.channel IN [0, 2, 5] RETURN n.uid AS uid"),
    (Units(model="t", layers=["stem.0", "block2*"]),
     "MATCH (n:Neuron {model: 't'}) WHERE n.layer = 'stem.0' OR n.layer STARTS WITH 'block2' RETURN n.uid AS uid"),
    (Units(model="t", kind="conv"),
     "MATCH (:Layer {model: 't', kind: 'conv'})-[:HAS_NEURON]->(n) RETURN n.uid AS uid"),
    (Units(model="t", kind=["block", "linear"], channels=[1]),
     "MATCH (l:Layer {model: 't'})-[:HAS_NEURON]->(n {channel: 1}) WHERE l.kind IN ['block', 'linear'] "
     "RETURN n.uid AS uid"),
    (Units(model="t", branch="branch2"),
     "MATCH (n:Neuron {model: 't', branch: 'branch2'}) RETURN n.uid AS uid"),
    (Units(model="t", cluster="t/svd:expanded:block1->down:k=2/input/1"),
     "MATCH (n:Neuron)-[:IN_CLUSTER]->(:Cluster {uid: 't/svd:expanded:block1->down:k=2/input/1'}) RETURN n.uid AS uid"),
    (Units(model="pl", motif="rotation_equivariance", role="downstream"),
     "MATCH (n:Neuron)-[:IN_MOTIF {role: 'downstream'}]->(:Motif {model: 'pl', kind: 'rotation_equivariance'}) "
     "RETURN DISTINCT n.uid AS uid"),
    (Units(model="pl", role="upstream"),
     "MATCH (n:Neuron {model: 'pl'})-[:IN_MOTIF {role: 'upstream'}]->(:Motif) RETURN DISTINCT n.uid AS uid"),
    (Units(model="pl", orientation=(330, 30)),  # wraps through 0
     "MATCH (n:Neuron {model: 'pl'}) WHERE n.orientation >= 330 OR n.orientation <= 30 RETURN n.uid AS uid"),
    (Units(model="pl", layers="high", orientation=(80, 190), min_selectivity=0.5),
     "MATCH (n:Neuron {model: 'pl', layer: 'high'}) WHERE 80 <= n.orientation <= 190 "
     "AND n.orientation_selectivity >= 0.5 RETURN n.uid AS uid"),
    (Units(model="pl", orientation=(0, 360)),
     "MATCH (n:Neuron {model: 'pl'}) WHERE n.orientation IS NOT NULL RETURN n.uid AS uid"),
    (Units(model="t", annotated="featurevis"),
     "MATCH (n:Neuron {model: 't'}) WHERE n.featurevis IS NOT NULL RETURN n.uid AS uid"),
    (Units(uids=["t/down:3", "pl/high:0", "t/down:99"]),
     "MATCH (n:Neuron) WHERE n.uid IN ['t/down:3', 'pl/high:0'] RETURN n.uid AS uid"),
    (Units(model="t", uids=["t/down:3", "pl/high:0"]),
     "MATCH (n:Neuron {uid: 't/down:3'}) RETURN n.uid AS uid"),
    (Units.from_options(model="pl", layers="mid,high", channels="0,3-4", orientation="100:300"),
     "MATCH (n:Neuron {model: 'pl'}) WHERE n.layer IN ['mid', 'high'] AND n.channel IN [0, 3, 4] "
     "AND 100 <= n.orientation <= 300 RETURN n.uid AS uid"),
]


@pytest.mark.parametrize("case", range(len(CRITERIA_CASES)))
def test_units_match_handwritten_cypher(graph, case):
    selected, query = CRITERIA_CASES[case]
    expected = sorted(row["uid"] for row in graph.cypher(query))
    assert expected, "every case should select something"
    rows = graph.units(selected)
    assert _uids(rows) == expected
    assert [r["uid"] for r in rows] == [r["uid"] for r in sorted(rows, key=lambda r: (r["model"], r["layer"], r["channel"]))]
    assert list(rows[0]) == list(connectivity.UNIT_FIELDS)


def test_units_planted_orientations_and_limit(graph):
    truth = graph.model_meta("pl")["truth"]
    planted = (json.loads(truth) if isinstance(truth, str) else truth)["units"]
    for lo in range(0, 360, 45):  # each measured curve unit lies in the range around its planted orientation
        rows = graph.units(model="pl", layers="high", orientation=((lo - 10) % 360, (lo + 10) % 360))
        assert [planted[f"high:{r['channel']}"]["orientation"] for r in rows] == [lo]
    with pytest.warns(Truncated):
        assert len(graph.units(Units(model="t"), limit=5)) == 5


# -- timeouts --------------------------------------------------------------------------------------
def test_timeout_ends_the_transaction_in_the_server(graph):
    slow = ("MATCH (a:Neuron), (b:Neuron), (c:Neuron), (d:Neuron) "  # minutes of work
            "RETURN sum(a.channel + b.channel + c.channel + d.channel) AS s // slow-query-probe")
    began = time.monotonic()
    with pytest.raises(QueryError, match=r"^query timed out after 0\.3 s"):
        graph.store.read_with_timeout(slow, 0.3)
    assert time.monotonic() - began < 20
    for _ in range(50):  # the server has ended it, not only the client given up
        running = graph.store.read("SHOW TRANSACTIONS YIELD currentQuery RETURN currentQuery")
        if not any("slow-query-probe" in (row["currentQuery"] or "") for row in running):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the timed-out query is still running in the server")
    with pytest.raises(QueryError, match="timed out"):
        connectivity.units(graph.store, Units(model="t"), timeout=1e-9)


# -- neighbours against networkx ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["direct", "expanded"])
def test_neighbours_match_networkx(graph, full, kind):
    """A neuron's partners by |sum| over every layer it meets, filtered by the stored rel_in
    (inputs) or rel_out (outputs), against the whole graph's own sums."""
    g = full("t", kind)
    checked = nothing = 0
    for uid in ("t/block1:3", "t/down:5", "t/stem.0:2", "t/block2:9", "t/input:0"):
        for side, edges, rel in (("inputs", g.in_edges(uid, data=True), "rel_in"),
                                 ("outputs", g.out_edges(uid, data=True), "rel_out")):
            partners = [(a if side == "inputs" else b, d) for a, b, d in edges]
            if not partners:
                assert graph.neighbours(uid, side, k=None, kind=kind) == []  # a row of nulls is not a partner
                nothing += 1
                continue
            for min_rel in (0.0, 0.3):
                expected = {p: d for p, d in partners if abs(d[rel]) >= min_rel - 1e-12}
                got = graph.neighbours(uid, side, k=None, min_rel=min_rel, kind=kind)
                assert {r["uid"] for r in got} == set(expected)
                magnitudes = [abs(r["sum"]) for r in got]
                assert magnitudes == sorted(magnitudes, reverse=True)
                for row in got:
                    assert row[rel] == pytest.approx(abs(expected[row["uid"]][rel]), rel=1e-9)
            top = graph.neighbours(uid, side, k=2, kind=kind)
            strongest = sorted(abs(d["sum"]) for _, d in partners)[-2:][::-1]
            assert [abs(r["sum"]) for r in top] == pytest.approx(strongest, rel=1e-12)
            checked += 1
    assert checked >= 5 and nothing >= 1
    with pytest.raises(InvalidInput, match="side must be"):
        graph.neighbours("t/down:5", "sideways")
    assert graph.neighbours("t/b1:3", "inputs", kind=kind) == graph.neighbours("t/block1:3", "inputs", kind=kind)
    with pytest.raises((InvalidInput, NotFound)):
        graph.neighbours("t/down:99", "inputs", kind=kind)


# -- adjacency against numpy ---------------------------------------------------------------------------
def _sums(atlas, model, kind):
    """(src layer, dst layer) -> the (out, in) sums of every kernel, from the weight arrays."""
    feeds = atlas.cypher("MATCH (a:Layer {model: $m})-[:FEEDS {kind: $k}]->(b:Layer) RETURN a.name AS a, b.name AS b",
                         m=model, k=kind)
    return {(f["a"], f["b"]): atlas.weights(model, f["a"], f["b"], kind).astype(np.float64).sum(axis=(2, 3))
            for f in feeds}


def _strongest(sums):
    """uid -> the largest |sum| among its inputs, and among its outputs, over every layer pair."""
    strongest_in, strongest_out = {}, {}
    for (a, b), s in sums.items():
        for j, v in enumerate(np.abs(s).max(axis=1)):
            strongest_in[(b, j)] = max(strongest_in.get((b, j), 0.0), v)
        for i, v in enumerate(np.abs(s).max(axis=0)):
            strongest_out[(a, i)] = max(strongest_out.get((a, i), 0.0), v)
    return strongest_in, strongest_out


@pytest.mark.parametrize("kind,sources,targets", [
    ("direct", ["stem.0", "block1.branch1.0", "block1.branch2.0", "block1"], ["block1", "down"]),
    ("direct", ["stem.0"], ["block1.branch2.0", "down"]),
    ("expanded", ["block1"], ["down"]),
])
def test_adjacency_matches_numpy(graph, kind, sources, targets):
    sums = _sums(graph, "t", kind)
    strongest_in, strongest_out = _strongest(sums)
    weights = {pair: graph.weights("t", *pair, kind) for pair in sums}
    for min_rel, sign in ((0.0, None), (0.4, None), (0.2, "-")):
        found = graph.adjacency(Units(model="t", layers=sources), Units(model="t", layers=targets), kind,
                                min_rel=min_rel, sign=sign, kernels=True)
        expected = {}
        for (a, b), s in sums.items():
            if a in sources and b in targets:
                for j, i in zip(*np.nonzero(s)):
                    rel_in = s[j, i] / strongest_in[(b, j)]
                    if abs(rel_in) >= min_rel and (sign is None or s[j, i] < 0):
                        expected[(f"t/{a}:{i}", f"t/{b}:{j}")] = (s[j, i], rel_in, s[j, i] / strongest_out[(a, i)],
                                                                 weights[(a, b)][j, i])
        got = {(e["source"], e["target"]): e for e in found.edges}
        assert set(got) == set(expected) and expected
        for key, (total, rel_in, rel_out, kernel) in expected.items():
            edge = got[key]
            assert edge["sum"] == pytest.approx(total, rel=1e-5, abs=1e-7)
            assert edge["rel_in"] == pytest.approx(rel_in, rel=1e-5)
            assert edge["rel_out"] == pytest.approx(rel_out, rel=1e-5)
            np.testing.assert_array_equal(edge["kernel"], kernel)
        assert [abs(e["sum"]) for e in found.edges] == sorted((abs(e["sum"]) for e in found.edges), reverse=True)
        assert _uids(found.sources) == sorted({a for a, _ in expected})
        assert _uids(found.targets) == sorted({b for _, b in expected})
        matrix, rows, cols = found.matrix("rel_in")
        assert matrix.shape == (len(rows), len(cols))
        assert np.count_nonzero(matrix) == len(expected)


def test_adjacency_bounds_and_limit(graph):
    sources, targets = Units(model="t", layers="stem.0"), Units(model="t", layers="block1.branch2.0")
    every = graph.adjacency(sources, targets).edges
    strong = graph.adjacency(sources, targets, min_abs=0.2).edges
    assert [e for e in every if abs(e["sum"]) >= 0.2] == strong
    assert all(e["sum"] > 0 for e in graph.adjacency(sources, targets, sign="+").edges)
    with pytest.warns(Truncated):
        cut = graph.adjacency(sources, targets, limit=7)
    assert cut.edges == every[:7] and cut.truncated
    by_uid = graph.adjacency(["t/stem.0:0", "t/stem.0:1"], "t/down:3")
    assert {(e["source"], e["target"]) for e in by_uid.edges} == {
        (e["source"], e["target"]) for e in every if e["source"] in ("t/stem.0:0", "t/stem.0:1") and e["target"] == "t/down:3"}


# -- paths, common partners and circuits against networkx ---------------------------------------------
def _paths_nx(g, source, target, max_len, weight, min_len=1, min_rel=0.0):
    found = []
    for path in nx.all_simple_paths(g, source, target, cutoff=max_len):
        rels = [g.edges[a, b]["rel_in"] for a, b in zip(path, path[1:])]
        if len(rels) < min_len or any(abs(r) < min_rel for r in rels):
            continue
        found.append((float(np.prod(rels)) if weight == "product" else float(np.sum(np.abs(rels))), path))
    return sorted(found, key=lambda x: -abs(x[0]))


@pytest.mark.parametrize("model,kind,source,target,max_len,min_len,weight,min_rel", [
    ("t", "direct", "t/stem.0:0", "t/fc:3", 4, 1, "product", 0.0),
    ("t", "direct", "t/input:1", "t/down:5", 3, 1, "product", 0.0),
    ("t", "direct", "t/input:0", "t/down:2", 3, 3, "sum", 0.0),
    ("t", "direct", "t/stem.0:3", "t/block2.branch2.0:4", 4, 1, "product", 0.3),
    ("t", "expanded", "t/stem.0:0", "t/block2:3", 3, 1, "product", 0.0),
    ("pl", "direct", "pl/edges:0", "pl/high:3", 2, 1, "product", 0.0),
    ("pl", "direct", "pl/input:2", "pl/high:5", 3, 1, "sum", 0.0),
])
def test_paths_match_networkx(graph, full, model, kind, source, target, max_len, min_len, weight, min_rel):
    g = full(model, kind)
    k = 7
    expected = _paths_nx(g, source, target, max_len, weight, min_len, min_rel)
    got = graph.paths(source, target, max_len, k, kind=kind, weight=weight, min_len=min_len, min_rel=min_rel)
    assert expected, "the case should have paths"
    assert [abs(p["strength"]) for p in got] == pytest.approx([abs(s) for s, _ in expected[:k]], rel=1e-9)
    for p in got:  # each returned path exists, with the strength networkx gives it
        units = p["units"]
        assert units[0] == source and units[-1] == target and p["length"] == len(units) - 1
        rels = [g.edges[a, b]["rel_in"] for a, b in zip(units, units[1:])]
        assert p["rel_in"] == pytest.approx(rels, rel=1e-9)
        assert p["sum"] == pytest.approx([g.edges[a, b]["sum"] for a, b in zip(units, units[1:])], rel=1e-12)
        score = np.prod(rels) if weight == "product" else np.sum(np.abs(rels))
        assert p["strength"] == pytest.approx(score, rel=1e-9)
    assert len({tuple(p["units"]) for p in got}) == len(got)


def test_paths_auto_kind_errors_and_limit(graph):
    auto = graph.paths("t/stem.0:0", "t/block2:3", 3, 3)
    assert auto == graph.paths("t/stem.0:0", "t/block2:3", 3, 3, kind="expanded")
    assert graph.paths("t/block2:3", "t/stem.0:0", 3) == []  # nothing runs backwards
    with pytest.raises(NotFound):
        graph.paths("t/stem.0:0", "t/nolayer:0")
    with pytest.raises(InvalidInput):
        graph.paths("t/stem.0:0", "t/down:99")  # down has 16 channels
    with pytest.raises(InvalidInput):
        graph.paths("t/stem.0:0", "t/stem.0:0")
    with pytest.raises(InvalidInput):
        graph.paths("t/stem.0:0", "t/fc:1", max_len=2, min_len=3)
    with pytest.raises(InvalidInput):
        graph.paths("t/stem.0:0", "t/fc:1", weight="mean")
    with pytest.raises(QueryError, match="more than 10 edges"):
        graph.paths("t/input:0", "t/fc:1", 5, kind="direct", limit=10)


@pytest.mark.parametrize("side,units,min_rel,min_shared", [
    ("inputs", ["t/down:0", "t/down:1", "t/down:7"], 0.0, None),
    ("inputs", ["t/down:0", "t/down:1", "t/down:7"], 0.3, 2),
    ("outputs", ["t/block1:0", "t/block1:4"], 0.3, None),
    ("inputs", ["pl/high:0", "pl/high:1"], 0.15, None),
])
def test_common_partners_match_networkx(graph, full, side, units, min_rel, min_shared):
    model = units[0].split("/")[0]
    g = full(model, "direct")
    column = "rel_in" if side == "inputs" else "rel_out"
    links: dict[str, dict[str, float]] = {}
    for u in units:
        edges = g.in_edges(u, data=True) if side == "inputs" else ((b, a, d) for a, b, d in g.out_edges(u, data=True))
        for p, _, d in edges:
            if d["sum"] != 0 and abs(d[column]) >= min_rel:
                links.setdefault(p, {})[u] = d[column]
    needed = min_shared or len(units)
    expected = {p: rels for p, rels in links.items() if len(rels) >= needed}
    helper = graph.common_inputs if side == "inputs" else graph.common_outputs
    rows = helper(units, min_rel, min_shared=min_shared)
    assert expected and {r["uid"]: set(r[column]) for r in rows} == {p: set(r) for p, r in expected.items()}
    for row in rows:
        assert row["shared"] == len(expected[row["uid"]])
        for u, rel in row[column].items():
            assert rel == pytest.approx(expected[row["uid"]][u], rel=1e-9)
    keys = [(-r["shared"], -r["strength"]) for r in rows]
    assert keys == sorted(keys)


def _circuit_nx(g, target, depth, min_rel):
    depth_of, edges, frontier = {target: 0}, set(), [target]
    for step in range(1, depth + 1):
        new = []
        for b in frontier:
            strongest = max(abs(d["sum"]) for _, _, d in g.in_edges(b, data=True)) if g.in_degree(b) else 0.0
            for a, _, d in g.in_edges(b, data=True):
                if d["sum"] != 0 and abs(d["sum"]) >= min_rel * strongest:
                    edges.add((a, b))
                    if a not in depth_of:
                        depth_of[a] = step
                        new.append(a)
        frontier = new
    return depth_of, edges


@pytest.mark.parametrize("model,kind,target,depth,min_rel", [
    ("t", "expanded", "t/block2:0", 2, 0.3),
    ("t", "direct", "t/fc:4", 3, 0.5),
    ("pl", "direct", "pl/high:0", 2, 0.3),
    ("pl", "direct", "pl/high:5", 3, 0.6),
])
def test_circuit_matches_networkx(graph, full, model, kind, target, depth, min_rel):
    g = full(model, kind)
    depth_of, edges = _circuit_nx(g, target, depth, min_rel)
    c = graph.circuit(target, depth, min_rel, kind=kind)
    assert dict(c.nodes(data="depth")) == depth_of
    assert set(c.edges) == edges and edges
    for a, b, d in c.edges(data=True):
        np.testing.assert_array_equal(d["kernel"], g.edges[a, b]["kernel"])
        assert d["rel_in"] == pytest.approx(g.edges[a, b]["rel_in"], rel=1e-9)
        assert d["sum"] == g.edges[a, b]["sum"]
    assert c.nodes[target]["layer"] == target.rpartition("/")[2].partition(":")[0]
    bare = graph.circuit(target, depth, min_rel, kind=kind, kernels=False)
    assert set(bare.edges) == edges and not any("kernel" in d for _, _, d in bare.edges(data=True))


def test_circuit_auto_kind_sign_and_limit(graph):
    assert graph.circuit("t/block2:0").graph["kind"] == "expanded"
    assert graph.circuit("pl/high:0").graph["kind"] == "direct"  # ingested without expanded edges
    excitatory = graph.circuit("pl/high:0", 1, 0.1, sign="+")
    assert all(d["sum"] > 0 for _, _, d in excitatory.edges(data=True))
    with pytest.warns(Truncated):
        cut = graph.circuit("t/fc:4", 3, 0.0, kind="direct", limit=20)
    assert cut.number_of_edges() == 20
    with pytest.raises(NotFound):
        graph.circuit("elsewhere/fc:4")


# -- similar units against numpy -------------------------------------------------------------------
def _cosines(rows):
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit @ unit.T


@pytest.mark.parametrize("model,src,dst,kind,by", [
    ("pl", "mid", "high", "direct", "inputs"),
    ("pl", "mid", "high", "direct", "kernels"),
    ("pl", "mid", "high", "direct", "outputs"),
    ("t", "block1", "down", "expanded", "inputs"),
    ("t", "block1", "down", "expanded", "kernels"),
])
@pytest.mark.parametrize("held", [True, False], ids=["in-memory", "in-server"])
def test_similar_units_match_numpy(graph, model, src, dst, kind, by, held, monkeypatch):
    """Both ways of comparing: the layer's profiles held in this process, and (a layer over
    ENTRY_BYTES) one pass in the server."""
    profiles.clear()
    monkeypatch.setattr(profiles, "ENTRY_BYTES", profiles.ENTRY_BYTES if held else 0)
    w = graph.weights(model, src, dst, kind).astype(np.float64)  # (out, in, kh, kw)
    if by == "inputs":
        vectors, layer = w.sum(axis=(2, 3)), dst
    elif by == "kernels":
        vectors, layer = w.reshape(w.shape[0], -1), dst
    else:
        vectors, layer = w.sum(axis=(2, 3)).T, src
    cos = _cosines(vectors)
    for unit in (0, 3):
        got = graph.similar_units(f"{model}/{layer}:{unit}", by, k=4, kind=kind)
        order = [j for j in np.argsort(-cos[unit], kind="stable") if j != unit][:4]
        assert [r["cosine"] for r in got] == pytest.approx(cos[unit, order], rel=1e-6, abs=1e-9)
        for r in got:
            assert r["cosine"] == pytest.approx(cos[unit, r["channel"]], rel=1e-6, abs=1e-9)
            assert r["layer"] == layer and r["channel"] != unit


def test_kernels_of_different_shapes_from_one_partner_are_compared_centred():
    """Units of a concatenation read one partner through a 1x1 and a 3x3 path: the 1x1 kernel
    sits at the centre of the 3x3 block, so it meets the 3x3 kernel's middle tap."""
    k3 = np.arange(9.0)
    rows = [{"unit": {"uid": "m/c:0"}, "partners": ["m/a:0"], "values": [[2.0]], "shapes": [[1, 1]]},
            {"unit": {"uid": "m/c:1"}, "partners": ["m/a:0"], "values": [list(k3)], "shapes": [[3, 3]]}]
    held = profiles.LayerProfiles([r["unit"] for r in rows], *profiles._matrix(rows, kernels=True))
    assert held.matrix.shape == (2, 9) and held.matrix[0].tolist() == [0, 0, 0, 0, 2, 0, 0, 0, 0]
    (_, cosine, partners), = held.most_similar("m/c:0", 5)
    assert cosine == pytest.approx(k3[4] / np.linalg.norm(k3)) and partners == 1


def test_similar_units_read_a_reingested_model_again(atlas):
    """The held profiles are keyed by the model's completion: new weights under the same id are
    read again, not answered from the old ones."""
    from torch import nn

    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 3))

    answers = []
    for seed in (1, 2):
        atlas.ingest(net(seed), "resim", input_size=(3, 8, 8), expanded=False, replace=seed == 2)
        w = atlas.weights("resim", "0", "2").astype(np.float64).sum(axis=(2, 3))
        cos = _cosines(w)[0]
        got = atlas.similar_units("resim/2:0", "inputs", k=4)
        assert [r["cosine"] for r in got] == pytest.approx(sorted(np.delete(cos, 0), reverse=True)[:4], rel=1e-6)
        answers.append([r["cosine"] for r in got])
    assert answers[0] != pytest.approx(answers[1])


def test_similar_units_find_the_planted_rotation_neighbours(graph):
    # curve j is excited by early curves near its own orientation: its nearest units are j-1 and j+1
    for j in range(8):
        top = graph.similar_units(f"pl/high:{j}", "inputs", k=2)
        assert {r["channel"] for r in top} == {(j - 1) % 8, (j + 1) % 8}
    assert graph.similar_units("t/down:0", k=2)[0]["uid"] == graph.similar_units("t/down:0", k=2, kind="expanded")[0]["uid"]
    with pytest.raises(InvalidInput):
        graph.similar_units("t/input:0", "inputs", kind="direct")  # the image has no inputs
    with pytest.raises(InvalidInput):
        graph.similar_units("t/down:0", "colour")
    with pytest.raises(NotFound):
        graph.similar_units("t/down.conv:1")


# -- the CLI ---------------------------------------------------------------------------------------
def _cli(env, *args):
    result = CliRunner().invoke(main, ["query", *args], env=env)
    return result


def test_cli_query_commands(graph, cli_env, tmp_path):
    out = _cli(cli_env, "units", "-m", "pl", "--layers", "high", "--orientation", "80:100", "--json")
    assert out.exit_code == 0, out.output
    assert [r["uid"] for r in json.loads(out.output)] == ["pl/high:2"]

    out = _cli(cli_env, "adjacency", "-m", "t", "--from-layers", "block1", "--to-layers", "down", "--to-channels", "0-2",
               "--min-rel", "0.4", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    api = graph.adjacency(Units(model="t", layers="block1"), Units(model="t", layers="down", channels=[0, 1, 2]),
                          min_rel=0.4)
    assert data["edges"] == api.edges and data["sources"] == api.sources and data["targets"] == api.targets

    csv_file = tmp_path / "edges.csv"
    out = _cli(cli_env, "adjacency", "-m", "t", "--from-layers", "block1", "--to-uid", "t/down:0", "--kernels",
               "--csv", str(csv_file))
    assert out.exit_code == 0, out.output
    lines = csv_file.read_text().splitlines()
    assert lines[0].split(",")[:3] == ["source", "target", "sum"] and len(lines) == 1 + 8
    assert (tmp_path / "edges.sources.csv").exists() and (tmp_path / "edges.targets.csv").exists()

    out = _cli(cli_env, "paths", "t/stem.0:0", "t/fc:3", "--kind", "direct", "-k", "3", "--max-len", "4", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == graph.paths("t/stem.0:0", "t/fc:3", 4, 3, kind="direct")
    out = _cli(cli_env, "paths", "t/stem.0:0", "t/fc:3", "--kind", "direct", "-k", "3", "--max-len", "4")
    assert out.exit_code == 0 and " -> " in out.output

    out = _cli(cli_env, "common", "--uid", "t/down:0", "--uid", "t/down:1", "--min-rel", "0.3", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == graph.common_inputs(["t/down:0", "t/down:1"], 0.3)
    out = _cli(cli_env, "common", "-m", "t", "--layers", "stem.0", "--channels", "0,4", "--side", "outputs",
               "--limit", "1")
    assert out.exit_code == 0 and "note: common_outputs: stopped at limit=1" in out.output

    out = _cli(cli_env, "similar", "pl/high:0", "-k", "2", "--json")
    assert out.exit_code == 0, out.output
    assert {r["channel"] for r in json.loads(out.output)} == {1, 7}

    out = _cli(cli_env, "circuit", "pl/high:0", "--min-rel", "0.5", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    c = graph.circuit("pl/high:0", 2, 0.5)
    assert {(e["source"], e["target"]) for e in data["edges"]} == set(c.edges)
    assert {n["uid"] for n in data["nodes"]} == set(c.nodes) and data["kind"] == "direct"
    out = _cli(cli_env, "circuit", "pl/high:0", "--min-rel", "0.5", "--csv", str(tmp_path / "c.csv"))
    assert out.exit_code == 0 and len((tmp_path / "c.csv").read_text().splitlines()) == 1 + c.number_of_edges()

    out = _cli(cli_env, "units", "--layers", "high")
    assert out.exit_code == 1 and out.output.strip() == "Error: unit criteria need a model or explicit uids"
    out = _cli(cli_env, "similar", "t/down:99")
    assert out.exit_code == 1 and out.output.strip() == "Error: channel 99 is not in down (16 channels)"


def test_reading_the_graph_never_loads_torch(graph, cli_env):
    """The query commands (and `models`) run in a fresh interpreter without importing torch,
    which alone takes seconds: only the jobs that run networks load it."""
    script = "\n".join([
        "import sys",
        "from circuitatlas.cli import main",
        "for args in (['models', '--json'], ['query', 'units', '-m', 't', '--layers', 'down', '--json'],",
        "             ['query', 'adjacency', '-m', 't', '--from-layers', 'block1', '--to-uid', 't/down:0',",
        "              '--kernels'],",
        "             ['query', 'paths', 't/stem.0:0', 't/fc:3', '--kind', 'direct', '--max-len', '4', '-k', '2'],",
        "             ['query', 'similar', 'pl/high:0'],",
        "             ['query', 'common', '--uid', 't/down:0', '--uid', 't/down:1'],",
        "             ['query', 'circuit', 'pl/high:0', '--json'], ['cypher', 'RETURN 1 AS x']):",
        "    main(args, standalone_mode=False)",
        "print('torch loaded:', 'torch' in sys.modules)",
    ])
    env = {**os.environ, **cli_env}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert '"t/down:0"' in run.stdout and " -> " in run.stdout  # the commands did their work
    assert run.stdout.strip().splitlines()[-1] == "torch loaded: False"


def test_layer_aliases_and_unknown_layers(graph):
    assert graph.units(Units(model="t", layers=["b1", "down"])) == graph.units(Units(model="t", layers=["block1", "down"]))
    by_alias = graph.circuit("t/b1:2", 1, 0.3)
    assert by_alias.graph["target"] == "t/block1:2" and set(by_alias.edges) == set(graph.circuit("t/block1:2", 1, 0.3).edges)
    assert graph.similar_units("t/first_block:0", k=3) == graph.similar_units("t/block1:0", k=3)
    with pytest.raises(NotFound, match="did you mean block1"):
        graph.units(Units(model="t", layers="blok1"))
    # a uid whose layer is an alias selects the same unit in every helper that takes units
    assert [u["uid"] for u in graph.units(["t/b1:2"])] == ["t/block1:2"]
    assert graph.adjacency("t/b1:2", Units(model="t", layers="down")).edges == \
        graph.adjacency("t/block1:2", Units(model="t", layers="down")).edges
    assert graph.common_inputs(["t/b1:2", "t/b1:3"]) == graph.common_inputs(["t/block1:2", "t/block1:3"])


def test_auto_kind_at_the_ends_of_the_observation_layers(graph):
    # the first observation layer has expanded outputs but no expanded inputs: "auto" must read its
    # direct inputs (from the image), not report none
    first = graph.circuit("t/stem.0:0", 1, 0.0)
    assert first.graph["kind"] == "direct" and first.number_of_edges() > 0
    assert set(first.edges) == set(graph.circuit("t/stem.0:0", 1, 0.0, kind="direct").edges)
    assert graph.similar_units("t/stem.0:0", k=3) == graph.similar_units("t/stem.0:0", k=3, kind="direct")


def test_helpers_check_their_arguments(graph):
    for call in (lambda: graph.adjacency("t/stem.0:0", "t/down:0", kind="both"),
                 lambda: graph.adjacency("t/stem.0:0", "t/down:0", min_rel=1.5),
                 lambda: graph.adjacency("t/stem.0:0", "t/down:0", sign="up"),
                 lambda: graph.units(Units(model="t"), limit=0),
                 lambda: graph.circuit("t/down:0", depth=0),
                 lambda: graph.circuit("down:0"),
                 lambda: graph.common_inputs(["t/down:0"], min_shared=0),
                 lambda: Units.from_options(model="t", channels="7-4"),
                 lambda: Units.from_options(model="t", channels=","),
                 lambda: Units(model="t", min_selectivity="high")):
        with pytest.raises(InvalidInput):
            call()
    assert list(itertools.islice(graph.units(["t/down:0"]), 1))[0]["uid"] == "t/down:0"
