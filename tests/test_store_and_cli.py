"""Store, Atlas and CLI against the real Neo4j."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from click.testing import CliRunner

from circuitatlas.cli import main
from circuitatlas.errors import NotFound, QueryError
from circuitatlas.lifecycle import drop_model
from circuitatlas.queries import cypher


def _invoke(cli_env, *args):
    return CliRunner().invoke(main, list(args), env=cli_env, catch_exceptions=False)


def test_schema_is_idempotent(atlas):
    atlas.init_schema()
    first = atlas.cypher("SHOW CONSTRAINTS YIELD name RETURN name ORDER BY name")
    atlas.init_schema()
    assert atlas.cypher("SHOW CONSTRAINTS YIELD name RETURN name ORDER BY name") == first
    names = {row["name"] for row in first}
    assert {"model_id", "layer_uid", "neuron_uid"} <= names
    indexes = {row["name"] for row in atlas.cypher("SHOW INDEXES YIELD name RETURN name")}
    assert "neuron_model_layer" in indexes


def test_uniqueness_constraint_holds(atlas):
    atlas.execute("CREATE (:Neuron {uid: 'dup/x:0', model: 'dup'})")
    with pytest.raises(QueryError, match="already exists"):
        atlas.execute("CREATE (:Neuron {uid: 'dup/x:0', model: 'dup'})")
    atlas.execute("MATCH (n:Neuron {model: 'dup'}) DELETE n")


def test_read_only_cypher_refuses_writes_and_changes_nothing(atlas):
    before = atlas.cypher("MATCH (n) RETURN count(n) AS n")[0]["n"]
    for query in ("CREATE (:Intruder)", "MATCH (n) DETACH DELETE n", "MERGE (x:Intruder {a: 1}) RETURN x"):
        with pytest.raises(QueryError, match="refused"):
            atlas.cypher(query)
    assert atlas.cypher("MATCH (n) RETURN count(n) AS n")[0]["n"] == before


def test_cypher_parameters(atlas):
    assert atlas.cypher("RETURN $a + $b AS s", a=2, b=3) == [{"s": 5}]


def test_write_rows_batches_lazily(atlas):
    seen = []

    def rows():
        for i in range(2500):
            seen.append(i)
            yield {"i": i}

    batches = []
    n = atlas.store.write_rows("UNWIND $rows AS row CREATE (:Batch {i: row.i})", rows(), batch_size=1000,
                               on_batch=batches.append)
    assert n == 2500 and batches == [1000, 1000, 500]
    assert atlas.cypher("MATCH (b:Batch) RETURN count(b) AS n, count(DISTINCT b.i) AS d") == [{"n": 2500, "d": 2500}]
    atlas.execute("MATCH (b:Batch) DELETE b")


def _fake_model(atlas, model: str, layers: int, width: int) -> nx.DiGraph:
    """A layered model written with plain Cypher, and the same graph in networkx."""
    g = nx.DiGraph()
    atlas.execute("CREATE (:Model {id: $m, status: 'complete'})", m=model)
    for l in range(layers):
        atlas.execute(
            "MATCH (m:Model {id: $m}) CREATE (m)-[:HAS_LAYER]->(l:Layer {uid: $m + '/L' + $l, model: $m, name: 'L' + $l})"
            " WITH l UNWIND range(0, $w - 1) AS c "
            "CREATE (l)-[:HAS_NEURON]->(:Neuron {uid: $m + '/L' + $l + ':' + c, model: $m, layer: 'L' + $l, channel: c})",
            m=model, l=str(l), w=width)
        g.add_nodes_from(f"{model}/L{l}:{c}" for c in range(width))
    for l in range(layers - 1):
        atlas.execute(
            "MATCH (a:Neuron {model: $m, layer: 'L' + $l}), (b:Neuron {model: $m, layer: 'L' + $n}) "
            "CREATE (a)-[:WEIGHT {kernel: [1.0]}]->(b)", m=model, l=str(l), n=str(l + 1))
        g.add_edges_from((f"{model}/L{l}:{a}", f"{model}/L{l + 1}:{b}") for a in range(width) for b in range(width))
    return g


def test_models_counts_and_drop_in_batches(atlas):
    g = _fake_model(atlas, "fake", layers=4, width=30)
    other = _fake_model(atlas, "other", layers=2, width=5)
    summary = {m.id: m for m in atlas.models()}
    assert summary["fake"].neurons == g.number_of_nodes()
    assert summary["fake"].weight_edges == g.number_of_edges()
    assert summary["fake"].layers == 4
    drop_model(atlas.store, "fake", batch=97)  # many small server-side batches
    assert [m.id for m in atlas.models()] == ["other"]
    assert atlas.cypher("MATCH (n {model: 'fake'}) RETURN count(n) AS n") == [{"n": 0}]
    assert atlas.cypher("MATCH (:Neuron {model: 'other'})-[r]->() RETURN count(r) AS n") == [
        {"n": other.number_of_edges()}]
    with pytest.raises(NotFound):
        atlas.drop("fake")
    atlas.drop("other")


def test_cli_cypher_json_and_table(atlas, cli_env):
    result = _invoke(cli_env, "cypher", "RETURN 1 AS x, $name AS name", "-p", "name=neuron", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"x": 1, "name": "neuron"}]
    table = _invoke(cli_env, "cypher", "UNWIND [1, 2] AS x RETURN x")
    assert table.exit_code == 0 and table.output.split() == ["x", "-", "1", "2"]


def test_cli_write_needs_flag(atlas, cli_env):
    refused = _invoke(cli_env, "cypher", "CREATE (:CliProbe)")
    assert refused.exit_code == 1 and "refused" in refused.output
    assert atlas.cypher("MATCH (p:CliProbe) RETURN count(p) AS n") == [{"n": 0}]
    allowed = _invoke(cli_env, "cypher", "CREATE (:CliProbe) RETURN 1 AS ok", "--write", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.output) == [{"ok": 1}]
    assert atlas.cypher("MATCH (p:CliProbe) RETURN count(p) AS n") == [{"n": 1}]
    atlas.execute("MATCH (p:CliProbe) DELETE p")


def test_cli_errors_are_one_line(atlas, cli_env):
    bad = _invoke(cli_env, "cypher", "MATC (n) RETURN n")
    assert bad.exit_code == 1 and "syntax" in bad.output.lower()
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1

    wrong = _invoke({**cli_env, "NEO4J_PASSWORD": "not-the-password"}, "models")
    assert wrong.exit_code == 1 and cli_env["NEO4J_URI"] in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1

    down = _invoke({**cli_env, "NEO4J_URI": "bolt://127.0.0.1:9"}, "models")
    assert down.exit_code == 1 and "db start" in down.output and len(down.output.strip().splitlines()) == 1


def test_cli_models_and_drop(atlas, cli_env):
    _fake_model(atlas, "clim", layers=2, width=3)
    listed = json.loads(_invoke(cli_env, "models", "--json").output)
    assert [(m["id"], m["neurons"], m["weight_edges"]) for m in listed] == [("clim", 6, 9)]
    dropped = _invoke(cli_env, "drop", "clim", "--yes")
    assert dropped.exit_code == 0
    missing = _invoke(cli_env, "drop", "clim", "--yes")
    assert missing.exit_code == 1 and "no model" in missing.output


def test_cli_db_status_json(neo4j_server, cli_env):
    if neo4j_server is None:
        pytest.skip("NEO4J_URI points at an outside server")
    status = json.loads(_invoke(cli_env, "db", "status", "--json").output)
    assert status["running"] and status["uri"] == neo4j_server.running_state().uri
    assert status["version"].startswith("5.26") and status["store_bytes"] > 0


def test_all_cypher_in_one_module_is_parameterised():
    # every query builder formats only our own constants (labels, relationship types)
    for rel in cypher.EDGE_TYPES:
        assert "$model" in cypher.delete_model_edges(rel)
    with pytest.raises(AssertionError):
        cypher.delete_model_edges("WEIGHT]->() DETACH DELETE r //")
