"""The bulk path: a fresh model into an empty local Neo4j by ``neo4j-admin database import``.

The online writer (:mod:`circuitatlas.ingest.writer`) sends rows over Bolt. This one writes the
same graph as CSV files (numbers formatted by numpy, :mod:`circuitatlas.ingest.csvtext`), stops
the local server, imports them offline and starts the server again. An offline import
replaces the whole database, so it is only possible when:

- the store is the local server that circuitatlas runs (``circuitatlas db start``),
- its database holds no node at all,
- and the ingest is not a ``resume``.

``bulk="auto"`` takes it when possible for plans of at least :data:`AUTO_MIN_EDGES` edges (the
restart costs seconds); ``"always"`` raises with the reason when it is not possible;
``"never"`` stays online. The model records which path wrote it (``ingest_path``).

The graph is the online path's, node for node and edge for edge, with one difference in
types: kernels and their statistics are 32-bit floats (the network's own precision).
Kernels read back identical to the online path's; statistics agree to float32 rounding.

Safety: a marker file sits in the state dir from just before the import until it has
succeeded. A failed or killed import leaves it, and the next server start then resets the
database to empty, which is what it was before.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from circuitatlas import lifecycle, paths
from circuitatlas.errors import IngestError
from circuitatlas.ingest import rows
from circuitatlas.ingest.csvtext import (
    float32_words,
    int_cells,
    text_cell,
    with_separator,
)
from circuitatlas.ingest.writer import Blocks, Part, WriteJob, check_finite
from circuitatlas.localserver import LocalServer
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["AUTO_MIN_EDGES", "bulk_refusal", "choose_path", "write_import_files", "bulk_write_model"]

AUTO_MIN_EDGES = 500_000
EDGE_HEADER = ":START_ID,:END_ID,kernel:float[],kh:int,kw:int," + ",".join(
    f"{name}:float" for name in cypher.EDGE_STATS)
_FLOATS_PER_CHUNK = 1 << 20  # kernel values formatted per step (bounded memory)


def bulk_refusal(store: Store, mode: str) -> str | None:
    """Why the bulk path cannot write to ``store`` now, or None when it can."""
    if store.local_state_dir is None:
        return "the store is not the local server that circuitatlas runs (an offline import needs its files)"
    if store.database not in (None, "neo4j"):
        return f"the local server has one database, neo4j, not {store.database!r}"
    if mode == "resume":
        return "a resume finishes an online ingest"
    if store.read(cypher.ANY_NODE):
        return "the database is not empty (an offline import replaces the whole database)"
    return None


def choose_path(store: Store, job: WriteJob, mode: str, bulk: str) -> str:
    """``"bulk"`` or ``"online"`` for ``bulk`` = "auto", "always" or "never" (see the module doc)."""
    if bulk not in ("auto", "always", "never"):
        raise ValueError(f"bulk must be auto, always or never, not {bulk!r}")
    if bulk == "never":
        return "online"
    reason = bulk_refusal(store, mode)
    if bulk == "always":
        if reason:
            raise IngestError(f"cannot bulk-import: {reason}; use --bulk never or auto")
        return "bulk"
    return "bulk" if reason is None and job.edges_estimate >= AUTO_MIN_EDGES else "online"


# -- CSV files ----------------------------------------------------------------------------------
def _text(value: object) -> str:
    """A CSV string field: quoted, quotes doubled; empty for None (no property)."""
    if value is None:
        return ""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise IngestError(f"cannot bulk-import a name with a line break: {text!r}")
    return '"' + text.replace('"', '""') + '"'


def _array(values: list, kind: str = "str") -> str:
    items = [str(v) for v in values]
    if any(";" in item for item in items):
        raise IngestError(f"cannot bulk-import a name with ';' (the array separator): {items}")
    return _text(";".join(items)) if kind == "str" else ";".join(items)


def _flag(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


@dataclass
class ImportFiles:
    """The CSV files of one model, by label or relationship type, and what they hold."""

    folder: Path
    nodes: dict[str, Path] = field(default_factory=dict)
    relationships: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, int] = field(default_factory=dict)  # WEIGHT / EXPANDED edges written


def write_import_files(folder: Path, job: WriteJob) -> ImportFiles:
    """Write ``job`` as neo4j-admin CSV files in ``folder`` (integer node ids).

    The Model node records every part as done (the import lands whole or not at all), with
    status ``ingesting`` until the imported graph has passed :func:`circuitatlas.lifecycle.verify`.
    """
    paths.private_dir(folder)  # owner-only: the CSVs hold the whole network
    files = ImportFiles(folder)
    neuron_base = _write_node_files(files, job)
    part_edges = _write_edge_files(files, job, neuron_base)
    _write_model_file(files, job, part_edges)
    return files


def _write_model_file(files: ImportFiles, job: WriteJob, part_edges: dict[str, int]) -> None:
    """The Model node, written last: every part recorded as done with the edges it wrote, status
    ``ingesting`` until :func:`bulk_write_model` has checked the imported graph against them."""
    model, graph, meta = job.model, job.graph, job.meta
    now = _dt.datetime.now(_dt.timezone.utc).isoformat()
    parts = [p.name for p in job.parts]
    files.nodes["Model"] = files.folder / "model.csv"
    files.nodes["Model"].write_text(
        ":ID,id,arch,source,weights,status,plan,input_size:int[],observation_layers:string[],parts_done:string[],"
        "part_edges:long[],created:datetime\n"
        f"0,{_text(model)},{_text(meta.get('arch'))},{_text(meta.get('source'))},{_text(meta.get('weights'))},"
        f"ingesting,{job.plan},{_array(list(graph.input_shape), 'int')},"
        f"{_array(graph.observation_layers)},{_array(parts)},{_array([part_edges.get(p, 0) for p in parts], 'int')},"
        f"{now}\n")


def _write_node_files(files: ImportFiles, job: WriteJob) -> dict[str, int]:
    """Layer and Neuron nodes and the HAS_LAYER (from the Model node, id 0), HAS_NEURON and FEEDS
    relationships. Returns each layer's first neuron id (neuron id = that + channel)."""
    folder, model, graph = files.folder, job.model, job.graph
    layer_ids, neuron_base = {}, {}
    next_id = 1
    with open(folder / "layers.csv", "w") as f:
        f.write(":ID,uid,model,name,kind,channels:int,order:int,shape:int[],observed:boolean,folded_bn\n")
        for row in rows.layer_rows(model, graph):
            layer_ids[row["name"]] = next_id
            f.write(f"{next_id},{_text(row['uid'])},{_text(model)},{_text(row['name'])},{_text(row['kind'])},"
                    f"{row['channels']},{row['order']},{_array(row['shape'], 'int')},{_flag(row['observed'])},"
                    f"{_text(row['folded_bn'])}\n")
            next_id += 1
    files.nodes["Layer"] = folder / "layers.csv"
    for name, info in graph.layers.items():
        neuron_base[name] = next_id
        next_id += info.channels
    with open(folder / "neurons.csv", "w") as f:
        f.write(":ID,uid,model,layer,channel:int,bias:double,branch\n")
        for row in rows.neuron_rows(model, graph):
            bias = repr(row["bias"]) if "bias" in row else ""
            f.write(f"{neuron_base[row['layer']] + row['channel']},{_text(row['uid'])},{_text(model)},"
                    f"{_text(row['layer'])},{row['channel']},{bias},{_text(row.get('branch'))}\n")
    files.nodes["Neuron"] = folder / "neurons.csv"

    with open(folder / "has_layer.csv", "w") as f:
        f.write(":START_ID,:END_ID\n" + "".join(f"0,{i}\n" for i in layer_ids.values()))
    with open(folder / "has_neuron.csv", "w") as f:
        f.write(":START_ID,:END_ID\n")
        for name, info in graph.layers.items():
            f.write("".join(f"{layer_ids[name]},{neuron_base[name] + c}\n" for c in range(info.channels)))
    feeds = rows.feed_pairs(graph, job.options.direct, job.options.expanded)
    with open(folder / "feeds.csv", "w") as f:
        f.write(":START_ID,:END_ID,kind\n" + "".join(f"{layer_ids[a]},{layer_ids[b]},{k}\n" for a, b, k in feeds))
    files.relationships.update(HAS_LAYER=folder / "has_layer.csv", HAS_NEURON=folder / "has_neuron.csv",
                               FEEDS=folder / "feeds.csv")
    return neuron_base


def _write_edge_files(files: ImportFiles, job: WriteJob, neuron_base: dict[str, int]) -> dict[str, int]:
    """One CSV file per edge type, block by block, a bounded chunk of lines at a time; returns
    the edges written by each part."""
    graph, options, progress = job.graph, job.options, job.progress
    last_id = max(neuron_base[name] + info.channels for name, info in graph.layers.items())
    id_words = 1 if last_id < 10**7 else 2
    handles = {}
    part_edges: dict[str, int] = {}
    try:
        for rel_type in cypher.EDGE_TYPES:
            path = files.folder / f"{rel_type.lower()}.csv"
            handles[rel_type] = open(path, "wb")
            handles[rel_type].write((EDGE_HEADER + "\n").encode())
            files.relationships[rel_type] = path
            files.edges[rel_type] = 0
        for part, (src, out_idx, in_idx, kernels) in _prefetched(job.parts[1:], job.edge_blocks):
            progress.part(f"csv {part.name}")
            n, kh, kw = kernels.shape
            flat = kernels.reshape(n, kh * kw)
            by_name = rows.edge_stats(flat, out_idx, in_idx, graph.layers[part.dst].channels,
                                      graph.layers[src].channels, job.maxima(part, src))
            stats = np.stack([by_name[name] for name in cypher.EDGE_STATS], axis=1)  # the header's order
            order, _ = rows.select_edges(out_idx, by_name["l2"], options.min_l2,
                                         options.top_k_per_neuron, grouped=False)  # a file needs no grouping
            step = max(1, _FLOATS_PER_CHUNK // (kh * kw))
            for start in range(0, order.size, step):
                pick = order[start:start + step]
                handles[part.rel_type].write(_edge_lines(
                    neuron_base[src] + in_idx[pick], neuron_base[part.dst] + out_idx[pick],
                    flat[pick], stats[pick], kh, kw, id_words))
                files.edges[part.rel_type] += pick.size
                part_edges[part.name] = part_edges.get(part.name, 0) + pick.size
                progress.edges(pick.size)
        for handle in handles.values():  # on disk before the server stops: a stop that waits
            handle.flush()  # behind gigabytes of dirty pages would outlast its timeout
            os.fsync(handle.fileno())
    finally:
        for handle in handles.values():
            handle.close()
    return part_edges


def _edge_lines(src: np.ndarray, dst: np.ndarray, flat: np.ndarray, stats: np.ndarray, kh: int, kw: int,
                id_words: int) -> bytes:
    """CSV lines of EDGE_HEADER for n edges: node ids, (n, kh*kw) float32 kernels and their
    (n, len(EDGE_STATS)) statistics in ``cypher.EDGE_STATS`` order."""
    n, m = flat.shape
    k0 = 2 * id_words  # where the kernel's cells start, in words
    s0 = k0 + 2 * m + 1  # where the statistics' cells start, after "kh,kw,"
    line = np.empty((n, s0 + 2 * stats.shape[1]), dtype=np.uint64)
    line[:, :id_words] = int_cells(src, id_words)
    line[:, id_words:k0] = int_cells(dst, id_words)
    float32_words(flat, line[:, k0:k0 + 2 * m:2], line[:, k0 + 1:k0 + 2 * m:2], ";")
    with_separator(line[:, k0:k0 + 2 * m], ",")
    line[:, s0 - 1] = text_cell(f"{kh:03d},{kw:03d},", 1, 1)[0, 0]
    float32_words(stats, line[:, s0::2], line[:, s0 + 1::2], ",")
    with_separator(line, "\n")
    return line.tobytes()


def _prefetched(parts: list[Part], edge_blocks: Blocks, depth: int = 2) -> Iterator[tuple[Part, tuple]]:
    """``(part, block)`` for every block of every part, computed one step ahead in a thread:
    torch works out the next expanded kernels while the caller formats this block's CSV."""
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        """Hand over an item unless the consumer has gone; False when it has."""
        while not stop.is_set():
            try:
                box.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for part in parts:
                for block in edge_blocks(part):
                    if not put((part, block)):
                        return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=produce, name="circuitatlas-blocks", daemon=True)
    worker.start()
    try:
        while (item := box.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


# -- the import --------------------------------------------------------------------------------
def _import_args(files: ImportFiles) -> list[str]:
    # the database name first: after --relationships it would be read as one more file
    args = ["database", "import", "full", "neo4j", "--id-type=integer", "--overwrite-destination",
            f"--report-file={files.folder / 'import.report'}"]
    args += [f"--nodes={label}={path}" for label, path in files.nodes.items()]
    return args + [f"--relationships={rel}={path}" for rel, path in files.relationships.items()]


def _admin_error(output: str) -> str:
    """The telling lines of neo4j-admin's output (its exception, not the stack trace)."""
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith(("\tat ", "..."))]
    telling = [line for line in lines if "Exception" in line or "rror" in line] or lines[-3:]
    return " | ".join(telling[:3])[:600]


def bulk_write_model(store: Store, job: WriteJob) -> dict[str, float]:
    """Write ``job``'s graph as model ``job.model`` through an offline import (see the module doc).

    Returns the seconds spent writing CSV (``csv_s``), importing (``import_s``), with the
    server down in all (``offline_s``), populating the indexes after the restart (``indexes_s``:
    the edge indexes on ``rel_in``/``rel_out`` are built from the imported edges then) and
    checking the imported graph (``verify_s``).
    """
    check_finite(job.graph)
    reason = bulk_refusal(store, "fresh")
    if reason:
        raise IngestError(f"cannot bulk-import: {reason}")
    server = LocalServer(store.local_state_dir)
    folder = server.state_dir / "bulk"
    shutil.rmtree(folder, ignore_errors=True)

    def still_empty() -> None:  # under the server's lock, just before it stops
        if store.read(cypher.ANY_NODE):
            raise IngestError("cannot bulk-import: the database is no longer empty; nothing was changed")

    timings: dict[str, float] = {}
    began = time.monotonic()
    try:
        job.progress.start(job.edges_estimate)
        files = write_import_files(folder, job)
        timings["csv_s"] = round(time.monotonic() - began, 2)
        job.progress.part("neo4j-admin import")
        with server.offline(before_stop=still_empty):
            server.import_marker.write_text(json.dumps({"model": job.model, "folder": str(folder)}))
            began_import = time.monotonic()
            done = server.run_admin(_import_args(files))
            timings["import_s"] = round(time.monotonic() - began_import, 2)
            if done.returncode != 0:  # the marker stays: the restart resets the database to empty
                detail = _admin_error(done.stdout + done.stderr)
                raise IngestError(f"neo4j-admin import failed (the database is reset to empty): {detail}")
            server.import_marker.unlink()
        timings["offline_s"] = round(time.monotonic() - began - timings["csv_s"], 2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(Exception):  # a failed start is the error already on its way
            store.reconnect()
    began = time.monotonic()
    store.ensure_schema()
    timings["indexes_s"] = round(time.monotonic() - began, 2)
    began = time.monotonic()
    lock = lifecycle.ModelLock(store, job.model, "bulk")
    lock.take()
    with lock:
        lifecycle.verify(store, lock, job.expected)
    timings["verify_s"] = round(time.monotonic() - began, 2)
    return timings
