"""The bulk path (offline neo4j-admin import into an empty local server) writes the graph the
online path writes, refuses when it cannot be used, and a failed import loses nothing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from circuitatlas.api import Atlas
from circuitatlas.cli import main
from circuitatlas.errors import IngestError
from circuitatlas.ingest import bulk
from circuitatlas.ingest.csvtext import float32_cells, int_cells
from circuitatlas.localserver import LocalServer, free_port

SIZE = (3, 32, 32)


def test_float32_cells_parse_back_to_the_same_float32():
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-44, 38, 200_000)).astype(np.float32)
    powers = np.float32(10.0) ** np.arange(-44, 38, dtype=np.float32)
    near = [np.nextafter(powers, np.float32(0)), powers, np.nextafter(powers, np.float32(np.inf))]
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.0, 0.1], dtype=np.float32)
    values = np.concatenate([values, *near, special])
    values = values[np.isfinite(values)]
    text = float32_cells(values, ";").tobytes().decode()
    back = np.array([float(v) for v in text.split(";")[:-1]]).astype(np.float32)
    np.testing.assert_array_equal(back, values)
    with pytest.raises(ValueError):
        float32_cells(np.array([np.nan], dtype=np.float32))


def test_int_cells_are_zero_padded_with_the_separator():
    assert int_cells(np.array([0, 42, 9_999_999]), 1).tobytes() == b"0000000,0000042,9999999,"
    assert int_cells(np.array([123]), 2, "\n").tobytes() == b"000000000000123\n"
    with pytest.raises(ValueError):
        int_cells(np.array([10**7]), 1)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory):
    """A local server of this module's own: the bulk path stops and restarts it."""
    if os.environ.get("NEO4J_URI"):
        pytest.skip("the bulk path needs the local server that circuitatlas runs")
    server = LocalServer(tmp_path_factory.mktemp("bulk-state"))
    server.start(port=free_port(), heap="512m", pagecache="256m")
    with Atlas.connect(state_dir=server.state_dir) as atlas:
        yield server, atlas
    server.stop()


def _nodes(atlas: Atlas, label: str, model: str) -> dict[str, dict]:
    """Nodes of one model by uid (the model's own name cut off), without per-run properties."""
    skip = {"uid", "model", "id", "created", "completed"}
    key = "id" if label == "Model" else "uid"
    found = atlas.cypher(f"MATCH (n:{label}) WHERE n.{key} = $m OR n.model = $m RETURN properties(n) AS p", m=model)
    return {str(r["p"].get("uid", "")).removeprefix(model): {
        k: v for k, v in r["p"].items() if k not in skip and not k.startswith(("ingest_", "bulk_"))} for r in found}


def _edges(atlas: Atlas, model: str) -> dict[tuple, dict]:
    found = atlas.cypher(
        "MATCH (a {model: $m})-[r]->(b {model: $m}) "
        "RETURN a.uid AS a, b.uid AS b, type(r) AS t, properties(r) AS p", m=model)
    out: dict[tuple, dict] = {}
    for r in found:
        # a block that is a sum has direct and expanded FEEDS from the layer before it
        key = (r["a"].removeprefix(model), r["b"].removeprefix(model), r["t"], r["p"].get("kind"))
        assert key not in out, f"duplicate edge {key}"
        out[key] = r["p"]
    return out


def test_bulk_writes_the_graph_the_online_path_writes(local):
    server, atlas = local
    assert atlas.cypher("MATCH (n) RETURN count(n) AS n")[0]["n"] == 0
    bulk_summary = atlas.ingest("tiny", "b", input_size=SIZE, bulk="always")
    assert bulk_summary.ingest_path == "bulk" and bulk_summary.status == "complete"
    assert not server.import_marker.exists() and not (server.state_dir / "bulk").exists()
    # where the time went, phase by phase: the phases run one after another within the ingest
    props = atlas.cypher("MATCH (m:Model {id: 'b'}) RETURN properties(m) AS p")[0]["p"]
    phases = [props[f"bulk_{phase}_s"] for phase in ("csv", "offline", "indexes", "verify")]
    assert all(s >= 0 for s in phases) and 0 <= props["bulk_import_s"] <= props["bulk_offline_s"]
    assert sum(phases) <= props["ingest_seconds"] + 0.05  # each rounded to 0.01 s
    online_summary = atlas.ingest("tiny", "o", input_size=SIZE)  # auto: the database is not empty now
    assert online_summary.ingest_path == "online"
    assert (bulk_summary.neurons, bulk_summary.layers, bulk_summary.weight_edges, bulk_summary.expanded_edges) == (
        online_summary.neurons, online_summary.layers, online_summary.weight_edges, online_summary.expanded_edges)

    for label in ("Model", "Layer", "Neuron"):
        assert _nodes(atlas, label, "b") == _nodes(atlas, label, "o"), label
    bulk_edges, online_edges = _edges(atlas, "b"), _edges(atlas, "o")
    assert bulk_edges.keys() == online_edges.keys()
    kinds = {key[2] for key in bulk_edges}
    assert {"HAS_NEURON", "FEEDS", "WEIGHT", "EXPANDED"} <= kinds
    for key, got in bulk_edges.items():
        want = online_edges[key]
        assert got.keys() == want.keys(), key
        for name, value in want.items():
            if name == "kernel":
                assert got[name] == value, key  # float32 in both: identical
            elif isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-12), (key, name)
            else:
                assert got[name] == value, (key, name)
    has_layer = atlas.cypher("MATCH (:Model {id: 'b'})-[:HAS_LAYER]->(l) RETURN count(l) AS n")[0]["n"]
    assert has_layer == bulk_summary.layers
    np.testing.assert_array_equal(atlas.weights("b", "stem.0", "block1.branch2.0"),
                                  atlas.weights("o", "stem.0", "block1.branch2.0"))


def test_bulk_is_refused_with_its_reason_and_changes_nothing(local):
    server, atlas = local
    if not atlas.models():  # run alone: something in the database first
        atlas.ingest("tiny", "first", input_size=SIZE, bulk="never")
    before = [m.id for m in atlas.models()]
    with pytest.raises(IngestError, match="not empty"):
        atlas.ingest("tiny", "again", input_size=SIZE, bulk="always")
    result = CliRunner().invoke(main, ["ingest", "tiny", "--name", "again", "--input-size", "3,32,32",
                                       "--bulk", "always"], env={"CIRCUITATLAS_STATE_DIR": str(server.state_dir)})
    assert result.exit_code != 0
    assert "cannot bulk-import: the database is not empty" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert [m.id for m in atlas.models()] == before


def test_a_failed_import_leaves_the_empty_database_it_found(local, monkeypatch):
    server, atlas = local
    for model in atlas.models():
        atlas.drop(model.id)
    atlas.execute("MATCH (n) DETACH DELETE n")
    real = bulk._edge_lines

    def dangling(src, dst, *args):  # edges to a node id that the import does not have
        return real(src, dst + 5_000_000, *args)

    monkeypatch.setattr(bulk, "_edge_lines", dangling)
    with pytest.raises(IngestError, match="neo4j-admin import failed"):
        atlas.ingest("tiny", "broken", input_size=SIZE, bulk="always")
    assert server.running_state() is not None
    assert atlas.cypher("MATCH (n) RETURN count(n) AS n")[0]["n"] == 0
    assert not server.import_marker.exists()
    monkeypatch.undo()
    summary = atlas.ingest("tiny", "fixed", input_size=SIZE, bulk="always")
    assert summary.ingest_path == "bulk" and summary.status == "complete"
