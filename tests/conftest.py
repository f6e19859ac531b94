"""Shared fixtures: one real Neo4j for the whole session (the project's own local server in a
temporary state dir, or the server NEO4J_URI names), and an Atlas per test module on a wiped graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from circuitatlas.api import Atlas
from circuitatlas.config import Connection
from circuitatlas.localserver import LocalServer, free_port
from circuitatlas.store import Store

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of several workers sharing the cores: one thread each
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the processes the tests start (torch here is loaded)


# The longest test files first (their seconds in a run of 2026-12-07, two workers). Under xdist
# (--dist loadfile) this order only breaks ties: xdist hands out the files with the most tests
# first, and keeping this order instead (--no-loadscope-reorder) made no difference beyond the
# noise on fresh clones (scripts/test.sh). A plain `python -m pytest` runs in this order.
LONGEST_FIRST = ("test_faults.py", "test_server_safety.py", "test_ingest_bulk.py", "test_ingest_store.py",
                 "test_queries_api.py", "test_featurevis.py", "test_motifs.py", "test_real_networks.py",
                 "test_universality.py", "test_zoo_annotate.py", "test_featurevis_quality.py", "test_localserver.py",
                 "test_bad_input.py", "test_detectors_independent.py", "test_svd.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: a file keeps its order


@pytest.fixture(autouse=True)
def artifacts_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test writes its plots and images to a directory of its own, not the user's."""
    folder = tmp_path / "artifacts"
    monkeypatch.setenv("CIRCUITATLAS_ARTIFACTS_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory: pytest.TempPathFactory) -> LocalServer | None:
    """The session's local server (None when NEO4J_URI points elsewhere)."""
    if os.environ.get("NEO4J_URI"):
        yield None
        return
    server = LocalServer(tmp_path_factory.mktemp("neo4j-state"))
    server.start(port=free_port(), heap="512m", pagecache="256m")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def connection(neo4j_server: LocalServer | None) -> Connection:
    if neo4j_server is None:
        return Connection(os.environ["NEO4J_URI"], os.environ.get("NEO4J_USER", "neo4j"),
                          os.environ["NEO4J_PASSWORD"], os.environ.get("NEO4J_DATABASE"), "environment")
    state = neo4j_server.running_state()
    assert state is not None and state.uri
    return Connection(state.uri, state.user, state.password, None, "local server")


@pytest.fixture(scope="module")
def atlas(connection: Connection) -> Atlas:
    """An Atlas on a graph wiped at the start of the test module."""
    store = Store.open(connection)
    store.delete_everything()
    store.ensure_schema()
    with Atlas(store) as opened:
        yield opened


@pytest.fixture()
def seed() -> int:
    """Seeds numpy and torch so that randomness repeats."""
    np.random.seed(0)
    torch.manual_seed(0)
    return 0


@pytest.fixture()
def cli_env(connection: Connection, neo4j_server: LocalServer | None) -> dict[str, str]:
    """Environment for CliRunner calls that reach the session's server."""
    env = {"NEO4J_URI": connection.uri, "NEO4J_USER": connection.user, "NEO4J_PASSWORD": connection.password}
    if neo4j_server is not None:
        env["CIRCUITATLAS_STATE_DIR"] = str(Path(neo4j_server.state_dir))
    return env
