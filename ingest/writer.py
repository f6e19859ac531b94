"""LayerGraph -> Neo4j, in resumable parts.

An ingest is a list of parts: ``nodes`` (model, layers, neurons, FEEDS), then one
``direct:<layer>`` per weight layer and one ``expanded:<layer>`` per observation-layer
pair. The Model node is created first with ``status: "ingesting"`` and records each part
when it commits; ``status: "complete"`` is set last. ``resume`` redoes only the parts not
recorded, deleting whatever a killed run left of them first, so no node or edge is doubled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from circuitatlas.errors import IngestError
from circuitatlas.ingest import rows
from circuitatlas.ingest.layergraph import LayerGraph
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["IngestOptions", "Part", "plan_parts", "write_model", "Progress"]


@dataclass(frozen=True)
class IngestOptions:
    direct: bool = True
    expanded: bool = True
    min_l2: float = 0.0
    top_k_per_neuron: int | None = None
    batch_size: int = 20_000  # edges per transaction
    workers: int = 2  # concurrent write transactions


@dataclass(frozen=True)
class Part:
    name: str  # "nodes", "direct:<layer>", "expanded:<layer>"
    rel_type: str | None
    dst: str | None
    src: str | None  # expanded parts: the observation layer it comes from
    edges_estimate: int


class Progress:
    """Callbacks for long writes; the default does nothing (the CLI draws a bar)."""

    def start(self, total_edges: int) -> None: ...

    def part(self, name: str) -> None: ...

    def edges(self, n: int) -> None: ...


def plan_parts(graph: LayerGraph, options: IngestOptions) -> list[Part]:
    parts = [Part("nodes", None, None, None, 0)]
    if options.direct:
        for layer in graph.weight_layers.values():
            n = sum(len(s) for s in layer.sources) * (layer.out_channels // layer.groups)
            parts.append(Part(f"direct:{layer.name}", "WEIGHT", layer.name, None, n))
    if options.expanded:
        obs = graph.observation_layers
        for a, b in zip(obs, obs[1:]):
            n = graph.layers[a].channels * graph.layers[b].channels
            parts.append(Part(f"expanded:{b}", "EXPANDED", b, a, n))
    return parts


def plan_fingerprint(graph: LayerGraph, options: IngestOptions) -> str:
    spec = {
        "layers": [(i.name, i.kind, list(i.shape)) for i in graph.layers.values()],
        "observed": graph.observation_layers,
        "options": [options.direct, options.expanded, options.min_l2, options.top_k_per_neuron],
    }
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def check_finite(graph: LayerGraph) -> None:
    for layer in graph.weight_layers.values():
        if not (np.isfinite(layer.weight).all() and np.isfinite(layer.bias).all()):
            raise IngestError(f"layer {layer.name!r} has NaN or infinite weights; nothing was written")


def write_model(
    store: Store,
    model: str,
    graph: LayerGraph,
    meta: dict,
    options: IngestOptions,
    edge_blocks: Callable[[Part], Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]],
    mode: str = "fresh",
    progress: Progress | None = None,
) -> None:
    """Write ``graph`` as model ``model``. ``mode``: "fresh" (refuse an existing id),
    "replace" (drop it first) or "resume" (finish an interrupted ingest of the same plan).

    ``edge_blocks(part)`` yields ``(src_layer, out_idx, in_idx, kernels)`` blocks for a part.
    """
    progress = progress or Progress()
    check_finite(graph)
    store.ensure_schema()
    parts = plan_parts(graph, options)
    plan = plan_fingerprint(graph, options)
    existing = store.read(cypher.MODEL_PLAN, model=model)
    done: set[str] = set()
    if existing:
        status = existing[0]["status"]
        if mode == "replace":
            store.drop_model(model)
        elif mode == "resume":
            if status == "complete":
                return
            if existing[0]["plan"] != plan:
                raise IngestError(f"model {model!r} was started with other layers or options; use --replace")
            done = set(existing[0]["parts_done"] or [])
        elif status == "complete":
            raise IngestError(f"model {model!r} is already in the graph; pass --replace to overwrite it")
        else:
            raise IngestError(
                f"an earlier ingest of {model!r} did not finish (status {status!r}); "
                "re-run with --resume to finish it, or --replace to start over"
            )
    if not existing or mode == "replace":
        store.write(cypher.CREATE_MODEL, model=model, plan=plan, observation_layers=graph.observation_layers,
                    input_size=list(graph.input_shape), **meta)

    progress.start(sum(p.edges_estimate for p in parts if p.name not in done))
    id_cache: dict[str, list[str]] = {}

    def ids(layer: str) -> list[str]:
        """Store ids of a layer's neurons by channel (looked up once per layer)."""
        if layer not in id_cache:
            found = store.read(cypher.NEURON_IDS, model=model, layer=layer)
            by_channel = [""] * graph.layers[layer].channels
            for row in found:
                by_channel[row["channel"]] = row["id"]
            id_cache[layer] = by_channel
        return id_cache[layer]

    for part in parts:
        if part.name in done:
            continue
        progress.part(part.name)
        if part.name == "nodes":
            store.delete_model_subgraph(model)
            _write_nodes(store, model, graph, options)
        else:
            store.run_autocommit(cypher.delete_incoming_edges(part.rel_type), model=model, layer=part.dst,
                                 batch=10_000)
            query = cypher.create_edges(part.rel_type)
            for src, out_idx, in_idx, kernels in edge_blocks(part):
                edge_rows = rows.kernel_rows(ids(src), ids(part.dst), out_idx, in_idx, kernels,
                                             options.min_l2, options.top_k_per_neuron)
                store.write_rows(query, edge_rows, batch_size=options.batch_size, on_batch=progress.edges,
                                 weight=_edge_count, workers=options.workers)
        store.write(cypher.MARK_PART_DONE, model=model, part=part.name)
    store.write(cypher.MARK_COMPLETE, model=model)


def _edge_count(row: dict) -> int:
    return len(row["s"])


def _write_nodes(store: Store, model: str, graph: LayerGraph, options: IngestOptions) -> None:
    store.write(cypher.CREATE_LAYERS, model=model, rows=rows.layer_rows(model, graph))
    store.write_rows(cypher.CREATE_NEURONS, rows.neuron_rows(model, graph), batch_size=10_000, model=model)
    feeds = [{"src": rows.layer_uid(model, a), "dst": rows.layer_uid(model, b), "kind": kind}
             for a, b, kind in rows.feed_pairs(graph, options.direct, options.expanded)]
    store.write(cypher.CREATE_FEEDS, rows=feeds)
