"""The project's own Neo4j: state dir handling, lifecycle, bad environments."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess

import pytest

from circuitatlas.config import resolve_connection
from circuitatlas.errors import ConfigError, ServerError
from circuitatlas.localserver import JarCache, LocalServer, ServerState, find_java, free_port
from circuitatlas.store import Store


def test_running_server_is_not_started_twice(neo4j_server):
    if neo4j_server is None:
        pytest.skip("NEO4J_URI points at an outside server")
    before = neo4j_server.running_state()
    state, started = neo4j_server.start()
    assert not started
    assert (state.pid, state.uri) == (before.pid, before.uri)


def test_state_file_is_private_and_password_random(neo4j_server):
    if neo4j_server is None:
        pytest.skip("NEO4J_URI points at an outside server")
    mode = stat.S_IMODE(os.stat(neo4j_server.state_file).st_mode)
    assert mode == 0o600
    state = json.loads(neo4j_server.state_file.read_text())
    assert state["password_set"] and len(state["password"]) >= 24 and state["password"] != "neo4j"
    assert state["uri"].startswith("bolt://127.0.0.1:")


def test_server_listens_on_loopback_only(neo4j_server):
    if neo4j_server is None:
        pytest.skip("NEO4J_URI points at an outside server")
    port = neo4j_server.running_state().port
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("ss is not available")
    listeners = [line.split()[3] for line in out.stdout.splitlines() if line.split()[3].endswith(f":{port}")]
    assert listeners and all(addr.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for addr in listeners)


def test_lifecycle_keeps_data_and_password_across_restart(tmp_path):
    server = LocalServer(tmp_path / "state")
    state, started = server.start(port=free_port(), heap="256m", pagecache="64m")
    assert started and server.status().running
    with Store.open(resolve_connection(state_dir=server.state_dir)) as store:
        store.write("CREATE (:Probe {x: $x})", x=42)
    assert server.stop()
    status = server.status()
    assert not status.running and status.pid is None and status.store_bytes > 0
    assert not server.stop()  # stopping a stopped server is a no-op
    server.start(port=free_port(), heap="256m", pagecache="64m")
    try:
        with Store.open(resolve_connection(state_dir=server.state_dir)) as store:
            assert store.read("MATCH (p:Probe) RETURN p.x AS x") == [{"x": 42}]
    finally:
        server.stop()
    # the stop skips Netty's quiet period, yet it is the clean shutdown: checkpointed, no recovery
    # at the next start (the crash test in test_ingest_store sees "Recovery completed." after a kill)
    debug = (server.home / "logs" / "debug.log").read_text()
    assert "internal.dbms.bolt.netty_server_shutdown_quiet_period=0" in debug  # the config each start lists
    assert len(re.findall(r'triggered by "Database shutdown".*checkpoint completed', debug)) == 4  # 2 stops x 2 dbs
    assert "Recovery completed." not in debug


def test_stale_pid_is_cleaned(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    server = LocalServer(tmp_path)
    server._write_state(ServerState(pid=proc.pid, port=1, uri="bolt://127.0.0.1:1", password_set=True))
    assert server.running_state() is None
    saved = json.loads(server.state_file.read_text())
    assert saved["pid"] is None and saved["uri"] is None and saved["password_set"]


def test_foreign_state_dir_is_refused(tmp_path):
    (tmp_path / "somebody-elses-file").write_text("data")
    with pytest.raises(ConfigError, match="not a circuitatlas state dir"):
        LocalServer(tmp_path).start()
    assert (tmp_path / "somebody-elses-file").read_text() == "data"


def test_dir_with_only_our_artifacts_counts_as_fresh(tmp_path):
    # analyses run against a remote Neo4j write images into the default data dir before any local server
    (tmp_path / "artifacts" / "demo").mkdir(parents=True)
    (tmp_path / ".lock").write_text("")
    assert LocalServer(tmp_path).read_state() is None
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a circuitatlas state dir"):
        LocalServer(tmp_path).read_state()


def test_corrupt_state_file_is_refused_and_store_kept(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    (tmp_path / "neo4j").mkdir()
    (tmp_path / "neo4j" / "keep").write_text("store")
    with pytest.raises(ConfigError, match="corrupt"):
        LocalServer(tmp_path).start()
    assert (tmp_path / "neo4j" / "keep").read_text() == "store"


def test_explicit_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} .* in use"):
            LocalServer(tmp_path).start(port=port)


def test_missing_java_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ConfigError, match="Java 17\\+ .*docker compose.*NEO4J_URI"):
        find_java()


def test_missing_maven_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="Maven .*docker compose.*NEO4J_URI"):
        JarCache(tmp_path / "cache").ensure()


def test_no_server_and_no_uri_says_how_to_start(monkeypatch, tmp_path):
    monkeypatch.delenv("NEO4J_URI", raising=False)
    with pytest.raises(ConfigError, match="circuitatlas db start"):
        resolve_connection(state_dir=tmp_path)


def test_a_zombie_is_not_alive():
    """A server started by another process of ours is a zombie once it stops, until its parent
    reaps it: stopping it from elsewhere (a bulk import in a child process) must see it gone."""
    import time

    from circuitatlas.ports import pid_alive

    child = subprocess.Popen(["sleep", "0.1"])
    time.sleep(0.5)  # exited, not yet reaped
    assert not pid_alive(child.pid)
    child.wait()
    assert pid_alive(os.getpid())
