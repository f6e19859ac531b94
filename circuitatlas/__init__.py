"""circuitatlas: circuits of trained convolutional networks as a queryable Neo4j graph."""

from typing import Any

from circuitatlas.errors import CircuitAtlasError

__all__ = ["Atlas", "CircuitAtlasError", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Atlas pulls in torch and every job: imported on first use, so that `circuitatlas.errors`
    # or the CLI's `db` commands stay light
    if name == "Atlas":
        from circuitatlas.api import Atlas

        return Atlas
    raise AttributeError(f"module 'circuitatlas' has no attribute {name!r}")
