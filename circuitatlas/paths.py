"""Where circuitatlas keeps things on disk; each can be moved with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "circuitatlas"


def cache_dir() -> Path:
    """Downloaded, reproducible things (Neo4j jars, built zoo models): CIRCUITATLAS_CACHE_DIR."""
    return Path(os.environ.get("CIRCUITATLAS_CACHE_DIR") or platformdirs.user_cache_dir(APP))


def state_dir() -> Path:
    """The local Neo4j server's store, logs and credentials: CIRCUITATLAS_STATE_DIR."""
    return Path(os.environ.get("CIRCUITATLAS_STATE_DIR") or platformdirs.user_data_dir(APP))


def artifacts_dir() -> Path:
    """Plots and images written by analyses: CIRCUITATLAS_ARTIFACTS_DIR."""
    default = Path(platformdirs.user_data_dir(APP)) / "artifacts"
    return Path(os.environ.get("CIRCUITATLAS_ARTIFACTS_DIR") or default)
