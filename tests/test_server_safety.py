"""Data safety of the local server (#17): the password is never lost or invented, the state dir
is owner-only, transaction logs stay bounded, artifacts follow the state dir, URIs are checked
and never echo a password."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from neo4j.exceptions import ConfigurationError, ServiceUnavailable

from circuitatlas import artifacts, localserver, paths
from circuitatlas.cli import main
from circuitatlas.config import resolve_connection
from circuitatlas.errors import (
    CircuitAtlasError,
    ConfigError,
    ConnectionFailed,
    ServerError,
)
from circuitatlas.localserver import LocalServer, free_port
from circuitatlas.store import Store, translate_errors

HEAP, PAGECACHE = "512m", "256m"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _loose(top: Path) -> list[str]:
    """Everything under ``top`` (itself included) that group or other may use."""
    found = []
    for root, _dirs, files in os.walk(top):
        for name in [root, *(os.path.join(root, f) for f in files)]:
            mode = os.lstat(name).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{name} {oct(stat.S_IMODE(mode))}")
    return found


def _bytes(text: str) -> int:
    """A Neo4j byte size as SHOW SETTINGS or a setting writes it: '128.00MiB', '64M', '524288'."""
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMG]?)(?:i?B)?", text.strip()).groups()
    return int(float(number) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit])


# -- the password: never lost, never invented ----------------------------------------------------
def _write_raw(state_dir: Path, **fields: object) -> Path:
    raw = {"format": 1, "neo4j_version": "5.26.30", "user": "neo4j", "password": "p" * 32, "password_set": True,
           "pid": None, "port": 7687, "uri": None, "started_at": None, "heap": "1g", "pagecache": "512m"}
    raw.update(fields)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "state.json").write_text(json.dumps({k: v for k, v in raw.items() if v is not ...}))
    return state_dir / "state.json"


@pytest.mark.parametrize("field, value", [("pid", "123"), ("port", 7687.5), ("password_set", "yes"),
                                          ("password", 12345678), ("heap", None), ("format", True)])
def test_a_field_of_the_wrong_type_is_a_one_line_config_error(tmp_path, field, value):
    _write_raw(tmp_path, **{field: value})
    with pytest.raises(ConfigError, match=f"corrupt \\({field} should be") as caught:
        LocalServer(tmp_path).read_state()
    assert "\n" not in str(caught.value) and "12345678" not in str(caught.value)


@pytest.mark.parametrize("password", [..., "", None])
def test_a_state_file_without_its_password_is_refused_and_never_rewritten(tmp_path, password):
    # a stale pid: running_state and stop used to clean it up, writing a random password on the way
    state_file = _write_raw(tmp_path, password=password, pid=_dead_pid())
    before = state_file.read_bytes()
    server = LocalServer(tmp_path)
    for call in (server.read_state, server.running_state, server.stop, server.status):
        with pytest.raises(ConfigError, match="db reset-password.*keeps the data") as caught:
            call()
        assert "wipe" not in str(caught.value) and "\n" not in str(caught.value)
    result = CliRunner().invoke(main, ["--state-dir", str(tmp_path), "db", "stop"])
    assert result.exit_code == 1 and "db reset-password" in result.output and "Traceback" not in result.output
    assert state_file.read_bytes() == before


def test_a_password_never_given_to_the_store_is_made_fresh(tmp_path):
    _write_raw(tmp_path, password=..., password_set=False)
    state = LocalServer(tmp_path).read_state()
    assert not state.password_set and len(state.password) >= 24


def test_reset_password_needs_a_store(tmp_path):
    with pytest.raises(ConfigError, match="no local Neo4j store .*db start"):
        LocalServer(tmp_path / "fresh").reset_password()


# -- URIs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("uri", ["http://127.0.0.1:7474", "https://example.org:7473", "ftp://h:1", "127.0.0.1:7687"])
def test_schemes_other_than_bolt_and_neo4j_are_refused(monkeypatch, uri):
    with pytest.raises(ConfigError, match="is not supported: use one of bolt://") as caught:
        resolve_connection(uri=uri, password="x")
    assert "\n" not in str(caught.value)
    monkeypatch.delenv("NEO4J_URI", raising=False)
    result = CliRunner().invoke(main, ["--uri", uri, "--password", "x", "models"])
    assert result.exit_code == 1 and "is not supported" in result.output
    assert isinstance(result.exception, SystemExit)  # a one-line error, no traceback (no aiohttp needed)


@pytest.mark.parametrize("uri", ["bolt://neo4j:secret@127.0.0.1:7687", "neo4j+s://neo4j:secret@db.example:7687",
                                 "http://neo4j:secret@127.0.0.1:7474", "neo4j:secret@127.0.0.1:7687"])
def test_a_password_in_the_uri_is_never_echoed(monkeypatch, uri):
    for password in (None, "x"):
        with pytest.raises(ConfigError) as caught:
            resolve_connection(uri=uri, password=password)
        assert "secret" not in str(caught.value) and "***@" in str(caught.value)
    monkeypatch.setenv("NEO4J_URI", uri)
    monkeypatch.setenv("NEO4J_PASSWORD", "x")
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 1 and "secret" not in result.output


@pytest.mark.parametrize("error", [
    ServiceUnavailable("Couldn't connect to bolt://neo4j:secret@127.0.0.1:1"),
    ConfigurationError("URI userinfo is not supported. Given URI: 'bolt://neo4j:secret@127.0.0.1:1'."),
    ValueError("bad uri 'neo4j://neo4j:secret@x'"),
])
def test_translate_errors_masks_the_password_of_a_uri(error):
    with pytest.raises(ConnectionFailed) as caught, translate_errors("bolt://neo4j:secret@127.0.0.1:1"):
        raise error
    assert "secret" not in str(caught.value) and "bolt://***@127.0.0.1:1" in str(caught.value)


# -- artifacts follow the state dir -------------------------------------------------------------
def test_artifacts_follow_the_state_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("CIRCUITATLAS_ARTIFACTS_DIR", raising=False)  # conftest sets it for every test
    monkeypatch.setenv("CIRCUITATLAS_STATE_DIR", str(tmp_path / "state"))
    assert paths.artifacts_dir() == tmp_path / "state" / "artifacts"
    monkeypatch.setenv("CIRCUITATLAS_ARTIFACTS_DIR", str(tmp_path / "mine"))
    assert paths.artifacts_dir() == tmp_path / "mine"  # still wins


def test_the_cli_state_dir_option_moves_the_artifacts(monkeypatch, tmp_path):
    monkeypatch.delenv("CIRCUITATLAS_ARTIFACTS_DIR", raising=False)
    monkeypatch.delenv("CIRCUITATLAS_STATE_DIR", raising=False)
    seen = []
    probe = click.Command("probe", callback=lambda: seen.append(artifacts.inside("m", "plot.png")))
    monkeypatch.setitem(main.commands, "probe", probe)
    result = CliRunner().invoke(main, ["--state-dir", str(tmp_path / "state"), "probe"])
    assert result.exit_code == 0, result.output
    assert seen == [tmp_path / "state" / "artifacts" / "m" / "plot.png"]
    assert "CIRCUITATLAS_STATE_DIR" not in os.environ  # restored when the command ends
    result = CliRunner().invoke(main, ["probe"], env={"CIRCUITATLAS_STATE_DIR": str(tmp_path / "env")})
    assert result.exit_code == 0 and seen[-1] == tmp_path / "env" / "artifacts" / "m" / "plot.png"


def test_the_artifacts_folder_is_created_owner_only(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUITATLAS_ARTIFACTS_DIR", str(tmp_path / "new" / "artifacts"))
    artifacts.inside("model", "x.png")
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "artifacts").st_mode) == 0o700


# -- a real server: permissions, checkpoints, password recovery ----------------------------------
def _stop_for_good(server: LocalServer) -> None:
    """Stop the server whatever its state file says (a test may have broken it on purpose)."""
    with contextlib.suppress(CircuitAtlasError):
        server.stop()
    with contextlib.suppress(OSError, ValueError, TypeError):
        pid = json.loads(server.state_file.read_text())["pid"]
        if pid and server._owns(pid):
            os.kill(pid, signal.SIGTERM)
            server._terminate(pid, 60.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> LocalServer:
    if os.environ.get("NEO4J_URI"):
        pytest.skip("NEO4J_URI points at an outside server")
    started = LocalServer(tmp_path_factory.mktemp("safety") / "state")
    try:
        started.start(port=free_port(), heap=HEAP, pagecache=PAGECACHE)
        yield started
    finally:
        _stop_for_good(started)


def test_nothing_in_the_state_dir_is_readable_by_others_after_start(server):
    assert _loose(server.state_dir) == []
    assert stat.S_IMODE(os.stat(server.state_file).st_mode) == 0o600


def test_an_older_state_dir_is_tightened_at_start(server):
    server.stop()
    for root, dirs, files in os.walk(server.state_dir):  # as an older circuitatlas left it
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    server.start(port=free_port(), heap=HEAP, pagecache=PAGECACHE)
    assert _loose(server.state_dir) == []


def _settings(server: LocalServer, prefix: str) -> dict[str, str]:
    with Store.open(resolve_connection(state_dir=server.state_dir)) as store:
        rows = store.read("SHOW SETTINGS YIELD name, value WHERE name STARTS WITH $prefix RETURN name, value",
                          prefix=prefix)
    return {row["name"]: row["value"] for row in rows}


def test_the_server_checkpoints_by_log_volume(server):
    running = _settings(server, "db.checkpoint")
    assert running["db.checkpoint"] == localserver._CHECKPOINT_SETTINGS["db.checkpoint"] == "VOLUME"
    volume = _bytes(running["db.checkpoint.interval.volume"])
    assert volume == _bytes(localserver._CHECKPOINT_SETTINGS["db.checkpoint.interval.volume"]) <= 256 * 2**20


def test_transaction_logs_stay_bounded_under_big_transactions(server):
    """About 1 GB of transaction log written in 400 transactions (1 MB of fresh data each, about
    2.5 MB of log): the log folder must stay within what the settings allow, not grow with it."""
    logs = _settings(server, "db.tx_log") | _settings(server, "db.checkpoint")
    volume = _bytes(logs["db.checkpoint.interval.volume"])
    rotation = _bytes(logs["db.tx_log.rotation.size"])
    kept = int(re.fullmatch(r"(\d+) files?", logs["db.tx_log.rotation.retention_policy"]).group(1))
    # since the last checkpoint: up to the volume, plus what is written while the next one is due
    # (checked every second) and runs; before it: the kept files, the checkpoint's own, the one after
    bound = volume + (kept + 2) * rotation + 128 * 2**20
    folder = server.home / "data" / "transactions" / "neo4j"
    peak = written = 0
    with Store.open(resolve_connection(state_dir=server.state_dir)) as store:
        for _ in range(400):
            rows = [{"k": k, "v": os.urandom(64 * 1024).hex()} for k in range(8)]  # 8 x 128 KB, never the same
            store.write("UNWIND $rows AS row MERGE (b:Blob {k: row.k}) SET b.v = row.v", rows=rows)
            written += sum(len(row["v"]) for row in rows)
            peak = max(peak, sum(f.stat().st_size for f in folder.iterdir() if f.is_file()))
        store.write("MATCH (b:Blob) DELETE b")
    assert 2 * written > bound  # the workload's log (more than twice its data) is past the bound
    assert peak <= bound, f"transaction logs reached {peak / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB)"


def test_a_password_the_store_rejects_points_to_reset_password_not_wipe(server):
    server.stop()
    state = server.read_state()
    good, state.password = state.password, "not-the-stores-password-at-all"
    server._write_state(state)
    with pytest.raises(ServerError, match="db reset-password.*keeps the data") as caught:
        server.start(port=free_port(), heap=HEAP, pagecache=PAGECACHE)
    assert "wipe" not in str(caught.value)
    assert server.read_state().password == "not-the-stores-password-at-all"  # kept, not replaced
    assert server.running_state() is None
    state = server.read_state()
    state.password = good
    server._write_state(state)
    server.start(port=free_port(), heap=HEAP, pagecache=PAGECACHE)


def test_a_lost_password_is_recovered_with_reset_password_and_the_data_kept(server):
    with Store.open(resolve_connection(state_dir=server.state_dir)) as store:
        store.write("CREATE (:Keep {x: $x})", x=17)
    raw = json.loads(server.state_file.read_text())
    old = raw.pop("password")
    server.state_file.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="db reset-password"):
        resolve_connection(state_dir=server.state_dir)
    runner, where = CliRunner(), ["--state-dir", str(server.state_dir)]
    result = runner.invoke(main, [*where, "db", "stop"])
    assert result.exit_code == 1 and "db reset-password" in result.output
    assert "password" not in json.loads(server.state_file.read_text())  # not invented by stop
    result = runner.invoke(main, [*where, "db", "reset-password"])
    assert result.exit_code == 0, result.output
    state = json.loads(server.state_file.read_text())
    assert state["password_set"] and len(state["password"]) >= 24 and state["password"] != old
    assert stat.S_IMODE(os.stat(server.state_file).st_mode) == 0o600
    assert _loose(server.state_dir) == []
    with Store.open(resolve_connection(state_dir=server.state_dir)) as store:
        assert store.read("MATCH (k:Keep) RETURN k.x AS x") == [{"x": 17}]
