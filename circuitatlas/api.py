"""The public Python API: :class:`Atlas`, one connection to a circuit graph."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from circuitatlas.ingest.writer import Progress

from circuitatlas.config import resolve_connection
from circuitatlas.store import ModelSummary, Store


class Atlas:
    """A circuit graph in Neo4j.

    Open one with :meth:`connect` and use it as a context manager::

        with Atlas.connect() as atlas:          # NEO4J_* settings, else the local server
            atlas.cypher("MATCH (m:Model) RETURN m.id AS id")
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def connect(
        cls,
        uri: str | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        state_dir: str | Path | None = None,
    ) -> "Atlas":
        """Connect with explicit settings, else NEO4J_URI/USER/PASSWORD/DATABASE, else the
        local server started by ``circuitatlas db start`` (its password is read for you)."""
        return cls(Store.open(resolve_connection(uri, user, password, database, state_dir)))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Atlas":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def init_schema(self) -> None:
        """Create circuitatlas's constraints and indexes; safe to repeat."""
        self.store.ensure_schema()

    def cypher(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """Run a read-only Cypher query with parameters; a query that would write is refused."""
        return self.store.query_read_only(query, params)

    def execute(self, query: str, **params: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Run a Cypher query that may write; returns ``(rows, update counters)``."""
        return self.store.query_write(query, params)

    def models(self) -> list[ModelSummary]:
        """Every model in the graph with its status and node and edge counts."""
        return self.store.models()

    def drop(self, model: str) -> None:
        """Delete one model's subgraph (in batches; raises NotFound for an unknown id)."""
        self.store.drop_model(model)

    def ingest(
        self,
        source: "str | nn.Module",
        name: str,
        weights: str | None = None,
        arch: str | None = None,
        input_size: tuple[int, int, int] = (3, 224, 224),
        layers: Iterable[str] | None = None,
        *,
        replace: bool = False,
        resume: bool = False,
        lenient: bool = False,
        direct: bool = True,
        expanded: bool = True,
        min_l2: float = 0.0,
        top_k_per_neuron: int | None = None,
        trust_pickle: bool = False,
        progress: "Progress | None" = None,
    ) -> ModelSummary:
        """Ingest a network as model ``name``.

        ``source`` is a torchvision model name (``weights``: "DEFAULT", an enum name or "none"),
        a checkpoint path (a state dict needs ``arch``; a pickled module needs ``trust_pickle``),
        a built-in architecture name, or an ``nn.Module``. ``layers`` picks the observation
        layers for expanded weights (default: the top-level blocks). An existing id is refused
        unless ``replace``; ``resume`` finishes an interrupted ingest without duplicates.
        """
        from circuitatlas.ingest.pipeline import ingest
        from circuitatlas.ingest.writer import IngestOptions

        if replace and resume:
            raise ValueError("replace and resume exclude each other")
        mode = "replace" if replace else "resume" if resume else "fresh"
        options = IngestOptions(direct, expanded, min_l2, top_k_per_neuron)
        return ingest(self.store, source, name, weights, arch, tuple(input_size), layers, mode=mode,
                      lenient=lenient, options=options, trust_pickle=trust_pickle, progress=progress)

    def weights(self, model: str, src_layer: str, dst_layer: str, kind: str = "direct") -> "np.ndarray":
        """The (out, in, kh, kw) kernels from ``src_layer`` to ``dst_layer``, read from the graph.
        ``kind`` is "direct" (WEIGHT edges) or "expanded" (EXPANDED edges)."""
        from circuitatlas.queries.weights import read_weights

        return read_weights(self.store, model, src_layer, dst_layer, kind)
