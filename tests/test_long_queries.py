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
from circuitatlas.store import QUERY_TIMEOUT_ENV, RETRY_TIME_ENV, Store

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
    monkeypatch.delenv(QUERY_TIMEOUT_ENV)
    monkeypatch.setenv(RETRY_TIME_ENV, "a while")
    with pytest.raises(QueryError, match=f"{RETRY_TIME_ENV} must be a number"):
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


def _raising(code: str, times: int, calls: list) -> object:
    """A transaction function that fails with the server error ``code`` its first ``times`` calls."""
    from neo4j.exceptions import Neo4jError

    def work(tx):
        calls.append(1)
        tx.run("RETURN 1").consume()
        if len(calls) <= times:
            raise Neo4jError._hydrate_neo4j(code=code, message="raised by the test")  # the driver's own factory
        return "done"

    return work


def test_a_memory_error_is_not_retried_and_other_transient_errors_are(atlas):
    """The driver retries every TransientError for 30 s; running out of memory would only happen
    again, so it ends at once with a one-line QueryError (the deadlock beside it is retried)."""
    store = atlas.store
    calls: list = []
    with pytest.raises(QueryError, match="out of memory.*not retried"):
        with store._guarded(), store.session() as session:
            session.execute_write(store._unit(_raising("Neo.TransientError.General.TransactionMemoryLimit", 5, calls)))
    assert len(calls) == 1
    calls.clear()
    with store._guarded(), store.session() as session:
        assert session.execute_write(store._unit(_raising("Neo.TransientError.Transaction.DeadlockDetected", 1,
                                                          calls))) == "done"
    assert len(calls) == 2
