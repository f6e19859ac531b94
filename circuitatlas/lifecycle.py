"""A model's lifecycle in the graph: its states, one writer at a time, and the check before "complete".

The Model node's ``status`` is a small state machine:

==========  ==============================================================================
ingesting   an ingest is writing its parts (or was killed: ``--resume`` finishes it)
complete    every part written and the graph checked against the plan
dropping    a drop, or the first half of a replace, is deleting it (or was killed: running
            ``drop``, or the ``--replace``, again finishes it; it is never resumed)
==========  ==============================================================================

Transitions: a fresh ingest creates the node (``ingesting``); ``resume`` continues only an
``ingesting`` model with the same plan; ``replace`` takes any model through ``dropping`` back to
``ingesting`` on the same node; ``drop`` takes any model through ``dropping`` to nothing;
``complete`` is set only after :func:`verify` finds the graph's counts equal to what the parts
recorded, and parts that disagree are marked undone for a resume to write again.

One writer at a time: a lock on the Model node (``lock_owner``, ``lock_op``, ``lock_heartbeat``
in the server's milliseconds), taken in a transaction that holds the node's write lock before it
reads the owner, kept fresh by a heartbeat thread every :data:`HEARTBEAT_S` and released at
the end. A dead owner's lock is taken over: a process of this host that no longer runs at once,
any other once its heartbeat is older than :data:`STALE_S`. Recording a part, a status or
``complete`` succeeds only while the lock is held; a writer that lost it stops.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from circuitatlas.errors import IngestError, NotFound
from circuitatlas.ports import pid_alive
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["HEARTBEAT_S", "STALE_S", "ModelLock", "LockHeld", "ingesting", "check_can_begin", "drop_model",
           "verify", "PartCounts"]

HEARTBEAT_S = 10.0
STALE_S = 90.0  # a heartbeat this old means its owner is gone (nine beats missed)
_HOST = socket.gethostname()


class LockHeld(IngestError):
    """Another live process is writing this model."""


def _owner_token() -> str:
    """``"<host>:<pid>:<random>"``: who holds a lock, and whether it still runs."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _dead(holder: str | None) -> bool:
    """True when ``holder`` is a process of this host that no longer runs, or a lock of this
    process that no live :class:`ModelLock` holds (one left behind when the server went away)."""
    if not holder:
        return False
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return holder not in ModelLock.live
    return not pid_alive(int(pid))


def _describe(row: Mapping[str, Any]) -> str:
    host, _, rest = (row.get("holder") or "?").partition(":")
    age = row.get("age_ms")
    beat = f", heartbeat {age / 1000:.0f} s ago" if age is not None else ""
    return f"pid {rest.partition(':')[0]} on {host} ({row.get('op') or 'writing'}{beat})"


class ModelLock:
    """The lock of one model for one operation (``op``: ingest, resume, replace, drop).

    Use :meth:`create` (a new model) or :meth:`take` (an existing one), then the lock as a
    context manager: the heartbeat runs inside the block and the lock is released after it
    (a dropped model's lock goes with its node)."""

    live: set[str] = set()  # the owners of the locks this process holds now

    def __init__(self, store: Store, model: str, op: str) -> None:
        self.store, self.model, self.op = store, model, op
        self.owner = _owner_token()
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- taking it ------------------------------------------------------------------------
    def create(self, props: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create the model, locked, when its id is free; returns None then, else the existing
        model's status and lock (nothing changed)."""
        row = self.store.write_returning(cypher.CREATE_MODEL, model=self.model, props=dict(props), owner=self.owner,
                                         op=self.op)[0]
        self.held = bool(row["ours"])
        if self.held:
            ModelLock.live.add(self.owner)
        return None if self.held else row

    def take(self) -> dict[str, Any]:
        """Take the lock of an existing model (NotFound when there is none, LockHeld when a live
        process holds it); returns the model's ``status``, ``plan`` and ``parts_done``."""
        current = self.store.read(cypher.MODEL_LOCK, model=self.model)
        if not current:
            raise NotFound(f"no model {self.model!r} in the graph (see `circuitatlas models`)")
        dead = [current[0]["holder"]] if _dead(current[0]["holder"]) else []
        rows = self.store.write_returning(cypher.TAKE_MODEL_LOCK, model=self.model, owner=self.owner, op=self.op,
                                          dead=dead, stale_ms=int(STALE_S * 1000))
        if not rows:
            raise NotFound(f"no model {self.model!r} in the graph (see `circuitatlas models`)")
        if not rows[0]["ours"]:
            raise LockHeld(f"model {self.model!r} is being written by {_describe(rows[0])}; wait for it to end "
                           f"(a dead writer's lock is taken over: at once on this host, after {STALE_S:.0f} s "
                           "without a heartbeat from another)")
        self.held = True
        ModelLock.live.add(self.owner)
        return rows[0]

    # -- holding it -----------------------------------------------------------------------
    def __enter__(self) -> "ModelLock":
        if not self.held:
            raise RuntimeError("take or create the lock before entering it")
        self._beat = threading.Thread(target=self._heartbeat, name=f"circuitatlas-lock-{self.model}", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        ModelLock.live.discard(self.owner)
        if self._beat is not None:
            self._beat.join(timeout=1.0)  # a beat stuck on a server that went away ends by itself
        if self.held:
            with contextlib.suppress(Exception):  # no retries: a server that went away keeps the lock,
                self.store.run_autocommit(cypher.RELEASE_MODEL_LOCK, model=self.model, owner=self.owner)
            self.held = False  # and a dead owner's lock is taken over

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                counters = self.store.run_autocommit(cypher.LOCK_HEARTBEAT, model=self.model, owner=self.owner)
            except Exception:  # the server is away for a moment: the next beat tries again
                continue
            if not counters.get("properties_set"):
                self.lost = True
                return

    def check(self) -> None:
        """Raise IngestError when another process has taken the lock over."""
        if self.lost:
            raise IngestError(f"model {self.model!r} was taken over by another process while this one wrote it "
                              "(a heartbeat missed for too long); stopped without recording more")

    def write(self, query: str, **params: Any) -> None:
        """A write that only the lock's owner may make (its query matches ``lock_owner = $owner``);
        IngestError when the lock was lost."""
        self.check()
        if not self.store.write(query, model=self.model, owner=self.owner, **params):
            self.lost = True
            self.check()


# -- drop ---------------------------------------------------------------------------------------
def drop_model(store: Store, model: str, batch: int = 10_000) -> None:
    """Delete one model's whole subgraph in server-side batches (bounded heap), under its lock:
    ``dropping`` first, so that a killed drop is finished by dropping again, never resumed."""
    lock = ModelLock(store, model, "drop")
    lock.take()
    with lock:
        lock.write(cypher.SET_LOCKED_STATUS, status="dropping")
        store.delete_model_subgraph(model, batch)
        lock.write(cypher.DELETE_LOCKED_MODEL_NODE)
        lock.held = False  # the lock went with the node


# -- the final check ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PartCounts:
    """What a plan says the graph holds: layer -> neurons, and part -> (relationship type, target
    layer) for the edge parts."""

    neurons: Mapping[str, int]
    edge_parts: Mapping[str, tuple[str, str]]


def verify(store: Store, lock: ModelLock, expected: PartCounts) -> None:
    """Mark the model ``complete`` when the graph holds exactly the plan's layers and neurons and,
    layer by layer, the edges its parts recorded writing. Otherwise the parts that disagree are
    marked undone (all of them when the nodes disagree) and IngestError says so: a resume writes
    them again."""
    model = lock.model
    record = store.read(cypher.MODEL_RECORD, model=model)[0]
    written = dict(zip(record["parts_done"] or [], record["part_edges"] or []))
    missing = [part for part in ("nodes", *expected.edge_parts) if part not in written]
    if missing:
        raise IngestError(f"model {model!r} cannot be marked complete: parts {missing[:3]} were not written; "
                          "re-run with --resume")
    found = store.read(cypher.MODEL_COUNTS, model=model)[0]
    counts = {row["layer"]: row for row in found["counts"]}
    problems = []
    if sorted(found["layers"]) != sorted(expected.neurons):
        problems.append(f"{len(found['layers'])} layers, the plan {len(expected.neurons)}")
    for layer, n in expected.neurons.items():
        row = counts.get(layer, {})
        if row.get("neurons", 0) != n or row.get("owned", 0) != n:
            problems.append(f"layer {layer!r} holds {row.get('neurons', 0)} neurons, the plan {n}")
    undone = ["nodes"] if problems else []
    targets = {}  # (relationship type, layer) -> the parts writing into it
    for part, target in expected.edge_parts.items():
        targets.setdefault(target, []).append(part)
    for (rel_type, layer), parts in targets.items():
        want, have = sum(written[p] for p in parts), counts.get(layer, {}).get(rel_type, 0)
        if have != want:
            undone += parts
            problems.append(f"{have:,} {rel_type} edges into {layer!r}, its parts wrote {want:,}")
    if problems:
        lock.write(cypher.UNMARK_PARTS, parts=undone)
        raise IngestError(f"model {model!r} failed its final check ({'; '.join(problems[:3])}); the parts that "
                          "disagree were marked undone: re-run with --resume to write them again")
    lock.write(cypher.MARK_COMPLETE)


# -- an ingest's beginning ----------------------------------------------------------------------
def _live(row: Mapping[str, Any]) -> bool:
    """True when the model ``row`` (holder, age_ms) is locked by a writer that still runs."""
    return bool(row.get("holder")) and not _dead(row["holder"]) and (row.get("age_ms") or 0) <= STALE_S * 1000


def _refusal(model: str, mode: str, row: Mapping[str, Any]) -> str | None:
    """Why an ingest in ``mode`` may not go on with the existing model ``row``, or None."""
    status = row.get("status")
    if _live(row) and (mode == "fresh" or status != "complete"):
        return f"model {model!r} is being written by {_describe(row)}"
    if mode == "replace":
        return None
    if status == "dropping":
        return (f"model {model!r} is half dropped (a drop or replace was interrupted); run `circuitatlas drop "
                f"{model}` to finish the drop, or ingest again with --replace")
    if mode == "fresh" and status == "complete":
        return f"model {model!r} is already in the graph; pass --replace to overwrite it"
    if mode == "fresh":
        return (f"an earlier ingest of {model!r} did not finish (status {status!r}); re-run with --resume to finish "
                "it, or --replace to start over")
    if mode == "resume" and status not in ("ingesting", "complete"):
        return f"model {model!r} has status {status!r}; only an ingest that did not finish can be resumed"
    return None


def check_can_begin(store: Store, model: str, mode: str) -> None:
    """IngestError now, before a network is loaded and traced, when an ingest of ``model`` in
    ``mode`` would be refused (the same rules :func:`ingesting` applies under the lock)."""
    rows = store.read(cypher.MODEL_LOCK, model=model)
    reason = _refusal(model, mode, rows[0]) if rows else None
    if reason:
        raise IngestError(reason)


@contextlib.contextmanager
def ingesting(store: Store, model: str, mode: str, plan: str, props: Mapping[str, Any]
              ) -> Iterator[tuple[ModelLock, set[str]] | None]:
    """The model's lock for an ingest in ``mode`` ("fresh", "resume" or "replace"), held (with
    its heartbeat) for the block, and the parts already done; None when a resume finds the model
    complete. A fresh ingest creates the Model node (``ingesting``, ``props`` and ``plan``); a
    replace takes an existing one through ``dropping`` and starts it again on the same node."""
    lock = ModelLock(store, model, "ingest" if mode == "fresh" else mode)
    props = {**props, "plan": plan}
    existing = lock.create(props)
    row: Mapping[str, Any] = {}
    if existing is not None:
        if mode == "fresh" or not _live(existing):  # a live writer: take() says who it is
            reason = _refusal(model, mode, existing)
            if reason:
                raise IngestError(reason)
        row = lock.take()
    with lock:
        if existing is None:
            yield lock, set()
            return
        if mode == "resume":
            reason = _refusal(model, mode, row)
            if reason:
                raise IngestError(reason)
            if row["status"] == "complete":
                yield None
                return
            if row["plan"] != plan:
                raise IngestError(f"model {model!r} was started with other layers or options; use --replace")
            yield lock, set(row["parts_done"] or [])
            return
        lock.write(cypher.SET_LOCKED_STATUS, status="dropping")  # replace: a kill from here on leaves
        store.delete_model_subgraph(model)  # a model that is finished by drop or --replace, never resumed
        lock.write(cypher.RESTART_MODEL, props=props, op=mode)
        yield lock, set()
