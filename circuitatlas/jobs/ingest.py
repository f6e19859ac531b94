"""Ingest as a job: the pipeline writes the network, then the other names its architecture gives
its layers are stored on them (``Layer.aliases``), so every later call can be given either."""

from __future__ import annotations

import dataclasses

from torch import nn

from circuitatlas.ingest.job import IngestJob
from circuitatlas.ingest.pipeline import ingest as run_pipeline
from circuitatlas.ingest.sources import layer_aliases
from circuitatlas.ingest.writer import Progress
from circuitatlas.queries.aliases import store_aliases
from circuitatlas.store import ModelSummary, Store

__all__ = ["ingest"]


def ingest(store: Store, source: str | nn.Module, name: str, job: IngestJob,
           progress: Progress | None = None) -> ModelSummary:
    """Run :func:`circuitatlas.ingest.pipeline.ingest` (observation layers given by any of their
    names), then store the layer aliases of the model's architecture (none for most)."""
    if job.layers and isinstance(source, str):
        canonical = {alias: layer for layer, others in layer_aliases(job.arch or source).items() for alias in others}
        job = dataclasses.replace(job, layers=tuple(canonical.get(layer, layer) for layer in job.layers))
    summary = run_pipeline(store, source, name, job, progress)
    store_aliases(store, name, layer_aliases(summary.arch))
    return summary
