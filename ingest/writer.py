"""What an ingest writes (:class:`IngestOptions`, :class:`WriteJob`, its plan of parts), and
the online writer: LayerGraph -> Neo4j over Bolt, in resumable parts.

An ingest is a list of parts: ``nodes`` (model, layers, neurons, FEEDS), then one
``direct:<layer>`` per weight layer and one ``expanded:<layer>`` per observation-layer
pair. The Model node is created first with ``status: "ingesting"`` and the writer's lock, and
records each part, with the edges it wrote, when it commits; ``status: "complete"`` is set last,
after the graph's counts are checked against those records (:mod:`circuitatlas.lifecycle`).
``resume`` redoes only the parts not recorded, deleting whatever a killed run left of them
first, so no node or edge is doubled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterator

import numpy as np

from circuitatlas import checks, lifecycle, names
from circuitatlas.errors import IngestError, InvalidInput
from circuitatlas.ingest import rows
from circuitatlas.ingest.graphtypes import LayerGraph
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["IngestOptions", "Part", "Progress", "Blocks", "WriteJob", "plan_parts", "plan_fingerprint",
           "check_finite", "write_model"]


# what edges carry: 2 = sums as add layers, rel_in/rel_out on every edge (a resume of an ingest
# begun by an older version does not match its plan, and says so)
GRAPH_FORMAT = 2


@dataclass(frozen=True)
class IngestOptions:
    """What an ingest writes (which edges, how pruned) and how fast (batches, workers)."""

    direct: bool = True
    expanded: bool = True
    min_l2: float = 0.0
    top_k_per_neuron: int | None = None
    batch_size: int = 20_000  # edges per transaction
    workers: int = 2  # concurrent write transactions

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_l2", checks.real("min_l2", self.min_l2, 0.0))
        if self.top_k_per_neuron is not None:
            object.__setattr__(self, "top_k_per_neuron", checks.whole("top_k_per_neuron", self.top_k_per_neuron, 1))
        for name in ("batch_size", "workers"):
            object.__setattr__(self, name, checks.whole(name, getattr(self, name), 1))
        if not (self.direct or self.expanded):
            raise InvalidInput("an ingest stores direct or expanded edges, or both")


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


# part -> its edge blocks ``(src_layer, out_idx, in_idx, kernels)``, kernels (n, kh, kw)
Blocks = Callable[[Part], Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]


@dataclass(frozen=True, eq=False)
class WriteJob:
    """One model to write, by either writer: its id, graph, metadata (``arch``, ``source``,
    ``weights``), options, where its edges come from and whom to tell about progress.

    The plan (:attr:`parts`, :attr:`plan`) is worked out once, on first use.
    """

    model: str
    graph: LayerGraph
    meta: dict
    options: IngestOptions
    edge_blocks: Blocks
    progress: Progress = field(default_factory=Progress)  # None is taken for the default

    def __post_init__(self) -> None:
        names.check_model_id(self.model)
        for layer in self.graph.layers:
            names.check_layer_name(layer)
        if self.progress is None:  # callers pass their optional progress straight on
            object.__setattr__(self, "progress", Progress())

    @cached_property
    def parts(self) -> list[Part]:
        return plan_parts(self.graph, self.options)

    @cached_property
    def plan(self) -> str:
        return plan_fingerprint(self.graph, self.options)

    @cached_property
    def strongest(self) -> rows.Strongest:
        """Each neuron's strongest direct input and output, for the edges' ``rel_in``/``rel_out``."""
        return rows.direct_strongest(self.graph) if self.options.direct else {"in": {}, "out": {}}

    def maxima(self, part: Part, src: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The strongest inputs of ``part``'s targets and outputs of ``src``'s neurons, when they
        reach beyond the block (direct edges); None when the block holds them (expanded)."""
        if part.rel_type != "WEIGHT":
            return None
        return self.strongest["in"][part.dst], self.strongest["out"][src]

    @property
    def expected(self) -> lifecycle.PartCounts:
        """What the graph holds when this job is written: neurons per layer, each edge part's target."""
        return lifecycle.PartCounts({name: info.channels for name, info in self.graph.layers.items()},
                                    {p.name: (p.rel_type, p.dst) for p in self.parts if p.rel_type})

    @property
    def edges_estimate(self) -> int:
        return sum(p.edges_estimate for p in self.parts)


def plan_parts(graph: LayerGraph, options: IngestOptions) -> list[Part]:
    """The parts of an ingest, in order: ``nodes``, then the direct and expanded edge parts."""
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
    """A short hash of what an ingest writes: a resume must continue the same plan."""
    spec = {
        "format": GRAPH_FORMAT,
        "layers": [(i.name, i.kind, list(i.shape)) for i in graph.layers.values()],
        "observed": graph.observation_layers,
        "options": [options.direct, options.expanded, options.min_l2, options.top_k_per_neuron],
    }
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def check_finite(graph: LayerGraph) -> None:
    for layer in graph.weight_layers.values():
        if not (np.isfinite(layer.weight).all() and np.isfinite(layer.bias).all()):
            raise IngestError(f"layer {layer.name!r} has NaN or infinite weights; nothing was written")


def write_model(store: Store, job: WriteJob, mode: str = "fresh") -> None:
    """Write ``job``'s graph as model ``job.model``. ``mode``: "fresh" (refuse an existing id),
    "replace" (drop it first) or "resume" (finish an interrupted ingest of the same plan); under
    the model's lock, checked against the plan before it is marked complete
    (:mod:`circuitatlas.lifecycle`).
    """
    check_finite(job.graph)
    store.ensure_schema()
    props = {"observation_layers": job.graph.observation_layers, "input_size": list(job.graph.input_shape), **job.meta}
    with lifecycle.ingesting(store, job.model, mode, job.plan, props) as begun:
        if begun is None:
            return
        lock, done = begun
        if "nodes" not in done:  # new nodes: every edge part is written again
            done = set()
        job.progress.start(sum(p.edges_estimate for p in job.parts if p.name not in done))
        ids = _NeuronIds(store, job)
        for part in job.parts:
            if part.name in done:
                continue
            job.progress.part(part.name)
            if part.name == "nodes":
                store.delete_model_subgraph(job.model)
                _write_nodes(store, job)
                edges = 0
            else:
                edges = _write_edges(store, job, part, ids, lock)
            lock.write(cypher.MARK_PART_DONE, part=part.name, edges=edges)
        lifecycle.verify(store, lock, job.expected)


class _NeuronIds:
    """Store ids of a layer's neurons by channel, looked up once per layer."""

    def __init__(self, store: Store, job: WriteJob) -> None:
        self.store, self.job = store, job
        self.by_layer: dict[str, list[str]] = {}

    def __call__(self, layer: str) -> list[str]:
        if layer not in self.by_layer:
            found = self.store.read(cypher.NEURON_IDS, model=self.job.model, layer=layer)
            by_channel = [""] * self.job.graph.layers[layer].channels
            for row in found:
                by_channel[row["channel"]] = row["id"]
            self.by_layer[layer] = by_channel
        return self.by_layer[layer]


def _write_edges(store: Store, job: WriteJob, part: Part, ids: _NeuronIds, lock: lifecycle.ModelLock) -> int:
    """One edge part (what a killed run left of it is deleted first); returns the edges written.
    Stops when the model's lock was taken over."""
    options = job.options
    store.run_autocommit(cypher.delete_incoming_edges(part.rel_type), model=job.model, layer=part.dst,
                         batch=10_000)
    query = cypher.create_edges(part.rel_type)

    def committed(n: int) -> None:
        lock.check()
        job.progress.edges(n)

    written = 0
    for src, out_idx, in_idx, kernels in job.edge_blocks(part):
        edge_rows = rows.kernel_rows(ids(src), ids(part.dst), out_idx, in_idx, kernels,
                                     options.min_l2, options.top_k_per_neuron, job.maxima(part, src))
        written += store.write_rows(query, edge_rows, batch_size=options.batch_size, on_batch=committed,
                                    weight=_edge_count, workers=options.workers)
    return written


def _edge_count(row: dict) -> int:
    return len(row["s"])


def _write_nodes(store: Store, job: WriteJob) -> None:
    model, graph, options = job.model, job.graph, job.options
    store.write(cypher.CREATE_LAYERS, model=model, rows=rows.layer_rows(model, graph))
    store.write_rows(cypher.CREATE_NEURONS, rows.neuron_rows(model, graph), batch_size=10_000, model=model)
    feeds = [{"src": names.layer_uid(model, a), "dst": names.layer_uid(model, b), "kind": kind}
             for a, b, kind in rows.feed_pairs(graph, options.direct, options.expanded)]
    store.write(cypher.CREATE_FEEDS, rows=feeds)
