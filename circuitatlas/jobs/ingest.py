"""Ingest as a job: the pipeline writes the network, then the other names its architecture gives
its layers are stored on them (``Layer.aliases``), so every later call can be given either; or,
as a dry run, what an ingest would store, worked out without a database."""

from __future__ import annotations

import dataclasses

from torch import nn

from circuitatlas.ingest.job import IngestJob
from circuitatlas.ingest.layergraph import build_layer_graph
from circuitatlas.ingest.pipeline import ingest as run_pipeline
from circuitatlas.ingest.plan import IngestPlan, plan_ingest
from circuitatlas.ingest.sources import layer_aliases, load_model
from circuitatlas.ingest.writer import Progress
from circuitatlas.names import check_model_id
from circuitatlas.queries.aliases import store_aliases
from circuitatlas.store import ModelSummary, Store

__all__ = ["ingest", "dry_run"]


def _canonical_layers(source: str | nn.Module, job: IngestJob) -> IngestJob:
    """``job`` with observation layers given by an alias renamed to their canonical names."""
    if job.layers and isinstance(source, str):
        canonical = {alias: layer for layer, others in layer_aliases(job.arch or source).items() for alias in others}
        job = dataclasses.replace(job, layers=tuple(canonical.get(layer, layer) for layer in job.layers))
    return job


def ingest(store: Store, source: str | nn.Module, name: str, job: IngestJob,
           progress: Progress | None = None) -> ModelSummary:
    """Run :func:`circuitatlas.ingest.pipeline.ingest` (observation layers given by any of their
    names), then store the layer aliases of the model's architecture (none for most)."""
    summary = run_pipeline(store, source, name, _canonical_layers(source, job), progress)
    store_aliases(store, name, layer_aliases(summary.arch))
    return summary


def dry_run(source: str | nn.Module, name: str, job: IngestJob) -> IngestPlan:
    """What ingesting ``source`` as ``name`` with ``job`` would store (layers, neurons, direct and
    expanded edges, store size and time), without writing anything or needing a server."""
    check_model_id(name)
    job = _canonical_layers(source, job)
    loaded = load_model(source, weights=job.weights, arch=job.arch, trust_pickle=job.trust_pickle)
    graph = build_layer_graph(loaded.module, job.input_size, job.layers, lenient=job.lenient,
                              force=job.force)
    return plan_ingest(graph, job.edges, name, loaded.arch)
