"""source -> loaded module -> LayerGraph -> Neo4j: the whole ingest, as one function."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from torch import nn

from circuitatlas.ingest import rows
from circuitatlas.ingest.bulk import bulk_write_model, choose_path
from circuitatlas.ingest.expanded import expanded_kernels, linearise
from circuitatlas.ingest.layergraph import LayerGraph, build_layer_graph
from circuitatlas.ingest.sources import load_model, weights_fingerprint
from circuitatlas.ingest.writer import IngestOptions, Part, Progress, write_model
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


def ingest(
    store: Store,
    source: str | nn.Module,
    name: str,
    weights: str | None = None,
    arch: str | None = None,
    input_size: tuple[int, int, int] = (3, 224, 224),
    layers: Iterable[str] | None = None,
    mode: str = "fresh",
    lenient: bool = False,
    options: IngestOptions = IngestOptions(),
    trust_pickle: bool = False,
    progress: Progress | None = None,
    bulk: str = "auto",
) -> ModelSummary:
    """Load ``source``, trace it and write it to the graph as model ``name``; returns its summary.

    ``bulk`` ("auto", "always", "never") picks the offline-import path of :mod:`.bulk`.
    """
    began = time.monotonic()
    loaded = load_model(source, weights=weights, arch=arch, trust_pickle=trust_pickle)
    fingerprint = weights_fingerprint(loaded.module)  # before anything touches the module
    graph = build_layer_graph(loaded.module, tuple(input_size), layers, lenient=lenient)
    meta = {"arch": loaded.arch, "source": loaded.source, "weights": loaded.weights}
    path = choose_path(store, graph, options, mode, bulk)
    props: dict = {"ingest_path": path, "weights_sha256": fingerprint}
    if path == "bulk":
        timings = bulk_write_model(store, name, graph, meta, options, edge_blocks_for(graph), progress=progress)
        props.update({f"bulk_{key}": value for key, value in timings.items()})
    else:
        write_model(store, name, graph, meta, options, edge_blocks_for(graph), mode=mode, progress=progress)
    props["ingest_seconds"] = round(time.monotonic() - began, 3)
    if loaded.truth is not None:
        props["truth"] = json.dumps(loaded.truth)
    store.write(cypher.SET_MODEL_PROPERTIES, model=name, props=props)
    return next(m for m in store.models() if m.id == name)
