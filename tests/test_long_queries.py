"""Every transaction circuitatlas opens has a server-side timeout, and an interrupted command
leaves no transaction running on the server (checked with SHOW TRANSACTIONS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from circuitatlas.errors import QueryError
from circuitatlas.store import QUERY_TIMEOUT_ENV, Store

# seconds of work on any server, and a marker to find it in SHOW TRANSACTIONS
SLOW = "UNWIND range(1, 2000000000) AS x WITH x WHERE x % 7 = 99 RETURN count(x) AS n // {marker}"


def _running(store: Store, marker: str) -> bool:
    rows = store.read("SHOW TRANSACTIONS YIELD currentQuery RETURN collect(currentQuery) AS q")
    return any(marker in (q or "") and "SHOW TRANSACTIONS" not in q for q in rows[0]["q"])


def _gone(store: Store, marker: str, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _running(store, marker):
            return True
        time.sleep(0.2)
    return False


def test_reads_writes_and_streams_end_at_the_store_timeout(connection, monkeypatch):
    with Store.open(connection) as plain:
        assert plain.query_timeout == 600.0  # the default: no transaction of ours outlives ten minutes
    monkeypatch.setenv(QUERY_TIMEOUT_ENV, "0.3")
    with Store.open(connection) as store:
        assert store.query_timeout == 0.3
        for name, call in (("read", store.read), ("write", store.write),
                           ("stream", lambda q: list(store.stream(q)))):
            marker = f"timeout-probe-{name}"
            began = time.monotonic()
            with pytest.raises(QueryError, match=r"timed out after 0\.3 s"):
                call(SLOW.format(marker=marker))
            assert time.monotonic() - began < 30
            assert _gone(store, marker), f"{name}: the timed-out query still runs in the server"
    monkeypatch.setenv(QUERY_TIMEOUT_ENV, "soon")
    with pytest.raises(QueryError, match=f"{QUERY_TIMEOUT_ENV} must be a number"):
        Store.open(connection)


def test_an_interrupted_command_leaves_no_transaction(connection, cli_env):
    """Ctrl-C during a long `circuitatlas cypher`: the command ends, and so does its query."""
    marker = "interrupt-probe"
    env = {**os.environ, **cli_env}
    process = subprocess.Popen([sys.executable, "-m", "circuitatlas.cli", "cypher", SLOW.format(marker=marker)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with Store.open(connection) as store:
        try:
            deadline = time.monotonic() + 60
            while not _running(store, marker):
                assert process.poll() is None and time.monotonic() < deadline, "the query never started"
                time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode != 0 and "Traceback" not in output
        assert _gone(store, marker), "the interrupted command's query still runs in the server"
