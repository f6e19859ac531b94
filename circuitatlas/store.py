"""The one object that talks to Neo4j: reads, batched writes, schema, model housekeeping.

The store takes an injected driver and a database name and does no I/O in ``__init__``;
driver errors leave it as :mod:`circuitatlas.errors` exceptions with one-line messages.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import neo4j
from neo4j.exceptions import (
    AuthError,
    ClientError,
    ConfigurationError,
    CypherSyntaxError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
)

from circuitatlas import records
from circuitatlas.config import Connection
from circuitatlas.errors import ConnectionFailed, QueryError
from circuitatlas.queries import cypher

DEFAULT_BATCH = 5000
# Every transaction circuitatlas opens ends on the server after this many seconds (reads, writes,
# a user's Cypher; batched deletes get LONG_TIMEOUT_FACTOR times as long): a runaway query never
# outlives the command that started it. CIRCUITATLAS_QUERY_TIMEOUT overrides it (0: no limit).
QUERY_TIMEOUT_ENV = "CIRCUITATLAS_QUERY_TIMEOUT"
DEFAULT_QUERY_TIMEOUT = 600.0
LONG_TIMEOUT_FACTOR = 12
# How long the driver goes on retrying a transaction that failed for a transient reason (a lost
# connection, a deadlock) before the error reaches the caller; its backoff doubles from 1 s, so the
# last wait may take about as long again. The driver's own default (30 s) kept a command that had lost
# its server waiting more than a minute. CIRCUITATLAS_RETRY_TIME overrides it (0: no retry).
RETRY_TIME_ENV = "CIRCUITATLAS_RETRY_TIME"
DEFAULT_RETRY_TIME = 10.0


def _seconds_from_env(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise QueryError(f"{name} must be a number of seconds, not {text!r}") from None


def default_query_timeout() -> float | None:
    """The transaction timeout in seconds: CIRCUITATLAS_QUERY_TIMEOUT, else DEFAULT_QUERY_TIMEOUT."""
    value = _seconds_from_env(QUERY_TIMEOUT_ENV, DEFAULT_QUERY_TIMEOUT)
    return value if value > 0 else None


def retry_time() -> float:
    """The driver's retry budget in seconds: CIRCUITATLAS_RETRY_TIME, else DEFAULT_RETRY_TIME."""
    return max(_seconds_from_env(RETRY_TIME_ENV, DEFAULT_RETRY_TIME), 0.0)


@dataclass(frozen=True)
class ModelSummary:
    """One row of ``circuitatlas models``."""

    id: str
    arch: str | None
    source: str | None
    weights: str | None
    status: str | None
    created: str | None
    layers: int
    neurons: int
    weight_edges: int
    expanded_edges: int
    ingest_path: str | None = None  # "online" (Bolt writes) or "bulk" (neo4j-admin import)


@contextlib.contextmanager
def translate_errors(uri: str) -> Iterator[None]:
    """Turn driver exceptions into one-line circuitatlas errors that name the URI (its user and
    password masked, in the driver's own words too: :func:`circuitatlas.config.redact_uri`)."""
    from circuitatlas.config import redact_uri

    shown = redact_uri(uri)
    try:
        yield
    except AuthError:
        raise ConnectionFailed(f"Neo4j at {shown} rejected the user name or password") from None
    except (ServiceUnavailable, SessionExpired) as exc:
        raise ConnectionFailed(
            f"cannot reach Neo4j at {shown} ({redact_uri(_first_line(exc))}); is it running? "
            "`circuitatlas db start` starts the local one"
        ) from None
    except CypherSyntaxError as exc:
        raise QueryError(f"Cypher syntax error: {_first_line(exc.message or exc)}") from None
    except (ClientError, Neo4jError) as exc:
        raise QueryError(f"Neo4j: {_first_line(exc.message or exc)}") from None
    except ConfigurationError as exc:
        raise ConnectionFailed(f"bad connection settings for {shown}: {redact_uri(_first_line(exc))}") from None
    except ValueError as exc:
        if "uri" in str(exc).lower() or "scheme" in str(exc).lower():
            raise ConnectionFailed(f"bad Neo4j URI {shown!r}: {redact_uri(_first_line(exc))}") from None
        raise


@contextlib.contextmanager
def _timeout_as_query_error(timeout: float | None) -> Iterator[None]:
    """A transaction the server ended at its timeout, as a one-line QueryError."""
    try:
        yield
    except Neo4jError as exc:
        if "TransactionTimedOut" in (exc.code or ""):
            after = f"after {timeout:g} s" if timeout is not None else "at the server's transaction timeout"
            raise QueryError(f"query timed out {after} (pass a larger timeout)") from None
        raise


# errors the driver classes as transient but that a retry meets again (the same query needs the same
# memory): raised at once instead of being retried for the driver's 30 s
NOT_RETRIED = ("MemoryPoolOutOfMemoryError", "TransactionMemoryLimit", "OutOfMemoryError")


class _Final(Exception):
    """A Neo4j error carried past the driver's retry loop (which retries only driver errors)."""

    def __init__(self, error: Neo4jError) -> None:
        super().__init__(str(error))
        self.error = error


def _not_retried(work: Callable) -> Callable:
    """``work(tx, ...)`` raising the errors in NOT_RETRIED as :class:`_Final`."""

    def guarded(tx: neo4j.ManagedTransaction, *args: Any, **kwargs: Any) -> Any:
        try:
            return work(tx, *args, **kwargs)
        except Neo4jError as exc:
            if any(name in (exc.code or "") for name in NOT_RETRIED):
                raise _Final(exc) from exc
            raise

    return guarded


@contextlib.contextmanager
def _final_errors() -> Iterator[None]:
    """A deterministic error (see NOT_RETRIED) as a one-line QueryError that says why it was not retried."""
    try:
        yield
    except _Final as final:
        raise QueryError(f"Neo4j ran out of memory for this query ({_first_line(final.error.message or final.error)}); "
                         "not retried, as it would fail again: give the server more heap "
                         "(`circuitatlas db start --heap`) or ask for less at once") from None


def _first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _weighted_batches(
    rows: Iterable[Mapping[str, Any]], size: int, weight: Callable[[Mapping[str, Any]], int]
) -> Iterator[tuple[list[Mapping[str, Any]], int]]:
    chunk: list[Mapping[str, Any]] = []
    total = 0
    for row in rows:
        chunk.append(row)
        total += weight(row)
        if total >= size:
            yield chunk, total
            chunk, total = [], 0
    if chunk:
        yield chunk, total


def batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items, consuming ``rows`` lazily."""
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


_C = TypeVar("_C", bound="Closing")


class Closing:
    """A context manager that calls ``close()`` when its block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(Closing):
    """Reads and writes one Neo4j database through an injected driver."""

    def __init__(self, driver: neo4j.Driver, database: str | None = None, uri: str = "",
                 connection: Connection | None = None, query_timeout: float | None = -1.0) -> None:
        self.driver = driver
        self.database = database
        self.uri = uri
        self.connection = connection  # kept by :meth:`open`, for :meth:`reconnect`
        # seconds before the server ends a transaction (None: never); -1: the default
        self.query_timeout = default_query_timeout() if query_timeout == -1.0 else query_timeout
        # every transaction of this store carries it, so cancel_running can find them on the server
        self.metadata = {"circuitatlas": uuid.uuid4().hex}

    def _timeout(self, long: bool = False) -> float | None:
        """This store's transaction timeout in seconds (``long``: batched deletes); None: none."""
        return self.query_timeout * LONG_TIMEOUT_FACTOR if long and self.query_timeout else self.query_timeout

    def _query(self, text: str, long: bool = False) -> neo4j.Query:
        """``text`` with this store's transaction timeout (``long``: batched deletes) and tag."""
        return neo4j.Query(text, timeout=self._timeout(long), metadata=self.metadata)

    def _unit(self, work: Callable, timeout: float | None = None) -> Callable:
        """``work`` as a managed transaction function with ``timeout`` seconds (None: this
        store's) and this store's tag; the driver retries transient errors, but not those in
        NOT_RETRIED."""
        seconds = self.query_timeout if timeout is None else max(float(timeout), 0.001)
        return neo4j.unit_of_work(timeout=seconds, metadata=self.metadata)(_not_retried(work))

    def cancel_running(self) -> int:
        """End on the server every transaction this store still has running, over a connection of
        its own (the store's may be blocked reading a result): what an interrupted command does
        before it exits. Returns how many were ended; 0 for a store made from a bare driver."""
        if self.connection is None:
            return 0
        with translate_errors(self.uri), neo4j.GraphDatabase.driver(
                self.connection.uri, auth=(self.connection.user, self.connection.password),
                notifications_min_severity="OFF") as helper:
            found, _, _ = helper.execute_query(cypher.OWN_TRANSACTIONS, tag=self.metadata["circuitatlas"],
                                               database_=self.database)
            ids = [row["id"] for row in found]
            if ids:
                helper.execute_query(cypher.TERMINATE_TRANSACTIONS, ids=ids, database_=self.database)
        return len(ids)

    @contextlib.contextmanager
    def _guarded(self, long: bool = False) -> Iterator[None]:
        with translate_errors(self.uri), _timeout_as_query_error(self._timeout(long)), _final_errors():
            yield

    @property
    def local_state_dir(self) -> str | None:
        """The state dir of the local server this store talks to (None for any other server)."""
        return self.connection.state_dir if self.connection is not None else None

    @classmethod
    def open(cls, connection: Connection) -> "Store":
        """Make a driver for ``connection`` and check that the server answers."""
        with translate_errors(connection.uri):
            driver = neo4j.GraphDatabase.driver(
                connection.uri, auth=(connection.user, connection.password), notifications_min_severity="OFF",
                max_transaction_retry_time=retry_time(),
            )
            try:
                driver.verify_connectivity()
            except BaseException:
                driver.close()
                raise
        return cls(driver, connection.database, connection.uri, connection)

    def reconnect(self) -> None:
        """A fresh driver after the server restarted (pooled connections are dead then)."""
        if self.connection is None:
            raise ConnectionFailed("this store was made from a driver, not a connection: cannot reconnect")
        fresh = Store.open(self.connection)
        self.driver.close()
        self.driver = fresh.driver

    def close(self) -> None:
        self.driver.close()

    def session(self, read: bool = False) -> neo4j.Session:
        """A session that sees every earlier write of this store (the driver's shared bookmarks)."""
        mode = neo4j.READ_ACCESS if read else neo4j.WRITE_ACCESS
        return self.driver.session(database=self.database, default_access_mode=mode,
                                   bookmark_manager=self.driver.execute_query_bookmark_manager)

    # -- queries --------------------------------------------------------------------------
    def read(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """Run our own read query (routed to a reader) and return rows as dicts."""
        with self._guarded(), self.session(read=True) as session:
            return session.execute_read(self._unit(lambda tx: [record.data() for record in tx.run(query, params)]))

    def read_with_timeout(self, query: str, timeout: float | None, **params: Any) -> list[dict[str, Any]]:
        """:meth:`read` under a transaction timeout in seconds (None: the store's own), which the
        server enforces: it ends a query still running then, and QueryError says so in one line.
        Values come as the driver decodes them (``record.data()``'s recursive copy, which costs more
        than the decoding on large lists, is skipped): return maps and lists, not nodes."""
        timeout = self.query_timeout if timeout is None else timeout
        if timeout is not None:
            timeout = max(float(timeout), 0.001)  # the driver rounds to milliseconds; 0 would mean none
        with translate_errors(self.uri), _timeout_as_query_error(timeout), self.session(read=True) as session:
            # an auto-commit transaction: no driver retries that would outlast the timeout
            return [dict(record.items()) for record in session.run(
                neo4j.Query(query, timeout=timeout, metadata=self.metadata), params)]

    def stream(self, query: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Run a read query and yield rows one at a time (the result is never held whole)."""
        with self._guarded(), self.session(read=True) as session:
            for record in session.run(self._query(query), params):
                yield record.data()

    def write(self, query: str, **params: Any) -> dict[str, int]:
        """Run our own write query in one transaction; returns the update counters."""
        return self._write(query, params)[1]

    def write_returning(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """Run our own write query in one transaction; returns its rows as dicts."""
        return self._write(query, params)[0]

    def _write(self, query: str, params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        def work(tx: neo4j.ManagedTransaction) -> tuple[list[dict[str, Any]], dict[str, int]]:
            result = tx.run(query, params)
            rows = [record.data() for record in result]
            return rows, _counters(result.consume())

        with self._guarded(), self.session() as session:
            return session.execute_write(self._unit(work))

    def run_autocommit(self, query: str, **params: Any) -> dict[str, int]:
        """Run a query in an auto-commit transaction (needed by ``CALL {} IN TRANSACTIONS``),
        under the long timeout."""
        with self._guarded(long=True), self.session() as session:
            summary = session.run(self._query(query, long=True), params).consume()
        return _counters(summary)

    def write_rows(
        self,
        query: str,
        rows: Iterable[Mapping[str, Any]],
        batch_size: int = DEFAULT_BATCH,
        on_batch: Callable[[int], None] | None = None,
        weight: Callable[[Mapping[str, Any]], int] | None = None,
        workers: int = 1,
        **params: Any,
    ) -> int:
        """Send ``rows`` as ``$rows`` in batches to an ``UNWIND $rows AS row ...`` query.

        Rows are consumed lazily, so a generator never sits in memory whole. A batch closes
        when its rows' ``weight`` (default 1 each) reaches ``batch_size``. With ``workers > 1``
        that many transactions run at once (at most two batches each in flight). Returns the
        total weight written; ``on_batch(weight)`` is called after each committed batch.
        """
        weigh = weight or (lambda row: 1)

        def send(session: neo4j.Session, chunk: list[Mapping[str, Any]]) -> None:
            session.execute_write(self._unit(lambda tx: tx.run(query, rows=chunk, **params).consume()))

        batches = _weighted_batches(rows, batch_size, weigh)
        report = on_batch or (lambda w: None)
        with self._guarded():
            if workers > 1:
                return self._write_concurrently(send, batches, workers, report)
            total = 0
            with self.session() as session:
                for chunk, w in batches:
                    send(session, chunk)
                    total += w
                    report(w)
            return total

    def _write_concurrently(self, send: Callable[[neo4j.Session, list], None],
                            batches: Iterable[tuple[list, int]], workers: int, report: Callable[[int], None]) -> int:
        """``workers`` sessions sending batches at once, at most two batches each in flight."""
        local = threading.local()
        sessions: list[neo4j.Session] = []

        def work(chunk: list[Mapping[str, Any]]) -> None:
            if not hasattr(local, "session"):
                local.session = self.session()
                sessions.append(local.session)
            send(local.session, chunk)

        total = 0
        pending: list[tuple[concurrent.futures.Future, int]] = []
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            try:
                for chunk, w in batches:
                    pending.append((pool.submit(work, chunk), w))
                    while len(pending) >= 2 * workers or (pending and pending[0][0].done()):
                        future, done_w = pending.pop(0)
                        future.result()
                        total += done_w
                        report(done_w)
                for future, done_w in pending:
                    future.result()
                    total += done_w
                    report(done_w)
            finally:
                for future, _ in pending:
                    future.cancel()
                pool.shutdown(wait=True)
                for session in sessions:
                    session.close()
        return total

    def query_read_only(self, query: str, params: Mapping[str, Any] | None = None, limit: int | None = None,
                        timeout: float | None = None) -> list[dict[str, Any]]:
        """Run a user's query, refusing anything that would change the graph.

        The server's own plan says whether the query writes (``EXPLAIN`` executes nothing);
        the query then runs in a read transaction that is rolled back if it changed anything.
        ``limit`` keeps the first rows (the rest are discarded on the server, never sent);
        ``timeout`` (seconds) replaces the store's own transaction timeout for this query.
        """
        params = dict(params or {})
        with self._guarded(), self.session(read=True) as session:
            body = query.lstrip()
            if not body[:7].upper() == "EXPLAIN":
                plain = body[7:] if body[:7].upper() == "PROFILE" else body
                kind = session.run("EXPLAIN " + plain, params).consume().query_type
                if kind != "r":
                    raise QueryError(
                        f"refused: this query can change the graph (query type {kind!r}); pass --write to run it"
                    )

            def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
                result = tx.run(query, params)
                rows = [records.row(record) for record in itertools.islice(result, limit)]
                if result.consume().counters.contains_updates:
                    raise QueryError("refused: this query changed the graph; it was rolled back (pass --write)")
                return rows

            with _timeout_as_query_error(timeout if timeout is not None else self.query_timeout):
                return session.execute_read(self._unit(work, timeout))

    def query_write(self, query: str, params: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Run a user's query that may write, in an auto-commit transaction."""
        with self._guarded(), self.session() as session:
            result = session.run(self._query(query), dict(params or {}))
            rows = [records.row(record) for record in result]
            return rows, _counters(result.consume())

    # -- schema and housekeeping ----------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create the constraints and indexes (idempotent) and wait until they are online."""
        for statement in cypher.SCHEMA:
            self.write(statement)
        with translate_errors(self.uri), self.session() as session:
            session.run("CALL db.awaitIndexes(300)").consume()

    def server_info(self) -> dict[str, Any]:
        rows = self.read(cypher.SERVER_COMPONENTS)
        return rows[0] if rows else {}

    def models(self) -> list[ModelSummary]:
        return [ModelSummary(**row) for row in self.read(cypher.LIST_MODELS)]

    def delete_model_subgraph(self, model: str, batch: int = 10_000) -> None:
        """Delete a model's edges, neurons and layers (its Model node stays)."""
        for rel_type in cypher.EDGE_TYPES:
            self.run_autocommit(cypher.delete_model_edges(rel_type), model=model, batch=batch)
        for label in cypher.MODEL_LABELS:
            self.run_autocommit(cypher.delete_model_nodes(label), model=model, batch=batch)

    def delete_everything(self, batch: int = 10_000) -> None:
        """Delete every node and edge of this database (the schema stays)."""
        self.run_autocommit(cypher.DELETE_EVERYTHING, batch=batch)


class ReadOnlyStore(Store):
    """A store that opens read sessions only (the viewer's): any write it is asked for fails
    before a session is opened, and the server refuses writes in a read transaction. Its reads
    are auto-commit transactions (:meth:`read_with_timeout`), which the driver does not retry: a
    page fails at once when Neo4j is down instead of after the driver's 30 s of retries (its
    queries return maps and lists, never nodes)."""

    def read(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self.read_with_timeout(query, None, **params)

    @classmethod
    def over(cls, store: Store) -> "ReadOnlyStore":
        """A read-only store on ``store``'s driver and settings (closing either closes both)."""
        return cls(store.driver, store.database, store.uri, store.connection, store.query_timeout)

    def session(self, read: bool = False) -> neo4j.Session:
        if not read:
            raise QueryError("refused: this store is read-only (no write session is opened)")
        return super().session(read=True)


def _counters(summary: neo4j.ResultSummary) -> dict[str, int]:
    counters = summary.counters
    names = ("nodes_created", "nodes_deleted", "relationships_created", "relationships_deleted",
             "properties_set", "labels_added", "constraints_added", "indexes_added")
    return {name: getattr(counters, name) for name in names if getattr(counters, name)}
