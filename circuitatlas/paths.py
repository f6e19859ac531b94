"""Where circuitatlas keeps things on disk; each can be moved with an environment variable."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

import platformdirs

APP = "circuitatlas"
STATE_DIR_ENV = "CIRCUITATLAS_STATE_DIR"


def cache_dir() -> Path:
    """Downloaded, reproducible things (Neo4j jars, built zoo models): CIRCUITATLAS_CACHE_DIR."""
    return Path(os.environ.get("CIRCUITATLAS_CACHE_DIR") or platformdirs.user_cache_dir(APP))


def state_dir() -> Path:
    """The local Neo4j server's store, logs and credentials: CIRCUITATLAS_STATE_DIR."""
    return Path(os.environ.get(STATE_DIR_ENV) or platformdirs.user_data_dir(APP))


def artifacts_dir() -> Path:
    """Plots and images written by analyses: CIRCUITATLAS_ARTIFACTS_DIR, else ``artifacts`` in
    the state dir (which follows CIRCUITATLAS_STATE_DIR and the CLI's ``--state-dir``)."""
    return Path(os.environ.get("CIRCUITATLAS_ARTIFACTS_DIR") or state_dir() / "artifacts")


def private_dir(path: Path) -> Path:
    """``path``, created owner-only (0700) when it is missing; an existing folder is left as it is."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def state_dir_as(path: str | Path | None) -> Iterator[None]:
    """Within the block, :func:`state_dir` (and what follows it) is ``path``, for this process and
    the processes it starts; None changes nothing. The previous setting is back afterwards."""
    if path is None:
        yield
        return
    before = os.environ.get(STATE_DIR_ENV)
    os.environ[STATE_DIR_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(STATE_DIR_ENV, None)
        else:
            os.environ[STATE_DIR_ENV] = before


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created owner-only, in a folder created 0700) for the
    duration of the block."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
