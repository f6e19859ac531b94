"""source -> loaded module -> LayerGraph -> Neo4j: the whole ingest, as one function."""

from __future__ import annotations

import json
import time
from typing import Iterator

import numpy as np
from torch import nn

from circuitatlas import lifecycle
from circuitatlas.ingest import rows
from circuitatlas.ingest.bulk import bulk_write_model, choose_path
from circuitatlas.ingest.expanded import expanded_kernels, linearise
from circuitatlas.ingest.job import IngestJob
from circuitatlas.ingest.layergraph import LayerGraph, build_layer_graph
from circuitatlas.ingest.sources import load_model, weights_fingerprint
from circuitatlas.ingest.writer import Part, Progress, WriteJob, write_model
from circuitatlas.names import check_model_id
from circuitatlas.queries import cypher
from circuitatlas.store import ModelSummary, Store

__all__ = ["ingest", "edge_blocks_for"]


def edge_blocks_for(graph: LayerGraph):
    """A function ``part -> blocks`` that computes a part's edges on demand (direct weights from
    the layer, expanded ones by autograd on one shared linearised copy)."""
    linear = None

    def blocks(part: Part) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        nonlocal linear
        if part.rel_type == "WEIGHT":
            yield from rows.direct_blocks(graph.weight_layers[part.dst])
            return
        if linear is None:
            linear = linearise(graph.graph_module)
        out_idx, in_idx, kernels, _origin = expanded_kernels(graph, part.src, part.dst, linear)
        yield part.src, out_idx, in_idx, kernels

    return blocks


def ingest(store: Store, source: str | nn.Module, name: str, job: IngestJob = IngestJob(),
           progress: Progress | None = None) -> ModelSummary:
    """Load ``source``, trace it and write it to the graph as model ``name``; returns its summary.

    ``job.bulk`` ("auto", "always", "never") picks the offline-import path of :mod:`.bulk`.
    """
    began = time.monotonic()
    check_model_id(name)
    lifecycle.check_can_begin(store, name, job.mode)  # before minutes of loading and tracing
    loaded = load_model(source, weights=job.weights, arch=job.arch, trust_pickle=job.trust_pickle)
    fingerprint = weights_fingerprint(loaded.module)  # before anything touches the module
    graph = build_layer_graph(loaded.module, job.input_size, job.layers, lenient=job.lenient,
                              force=job.force)
    meta = {"arch": loaded.arch, "source": loaded.source, "weights": loaded.weights}
    write = WriteJob(name, graph, meta, job.edges, edge_blocks_for(graph), progress)
    path = choose_path(store, write, job.mode, job.bulk)
    props: dict = {"ingest_path": path, "weights_sha256": fingerprint, "lenient": job.lenient}
    if path == "bulk":
        timings = bulk_write_model(store, write)
        props.update({f"bulk_{key}": value for key, value in timings.items()})
    else:
        write_model(store, write, mode=job.mode)
    props["ingest_seconds"] = round(time.monotonic() - began, 3)
    if loaded.truth is not None:
        props["truth"] = json.dumps(loaded.truth)
    store.write(cypher.SET_MODEL_PROPERTIES, model=name, props=props)
    return next(m for m in store.models() if m.id == name)
