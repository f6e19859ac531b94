"""Ingest benchmark: full GoogLeNet (random weights) into a fresh local Neo4j, side by side with
the offline `neo4j-admin database import` of the same edges (the upper bound) and a naive
one-edge-per-transaction writer on a sample (the floor). Prints one JSON object.

    python bench/ingest.py [--model googlenet] [--naive-sample 2000] [--no-bound]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from circuitatlas.api import Atlas
from circuitatlas.config import resolve_connection
from circuitatlas.ingest import rows
from circuitatlas.ingest.pipeline import edge_blocks_for
from circuitatlas.ingest.layergraph import build_layer_graph
from circuitatlas.ingest.sources import load_model
from circuitatlas.ingest.writer import IngestOptions, Progress, plan_parts
from circuitatlas.localserver import LocalServer, find_java, free_port
from circuitatlas.store import Store


@contextlib.contextmanager
def scratch_server(prefix: str) -> Iterator[tuple[LocalServer, Path]]:
    """A fresh local Neo4j in a temporary state dir, stopped and deleted afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    server = LocalServer(scratch / "state")
    try:
        server.start(port=free_port(), heap="2g", pagecache="1g")
        yield server, scratch
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem, 1), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


class Timer(Progress):
    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self._last: tuple[str, float] | None = None
        self.edges_written = 0

    def part(self, name: str) -> None:
        now = time.monotonic()
        if self._last:
            self.parts[self._last[0]] = round(now - self._last[1], 2)
        self._last = (name, now)

    def edges(self, n: int) -> None:
        self.edges_written += n

    def finish(self) -> None:
        self.part("")


def _fmt(values: np.ndarray) -> list[str]:
    return [";".join(map(repr, row)) for row in values.astype(np.float32).astype(np.float64).round(7).tolist()]


def write_csv(model_name: str, graph, options: IngestOptions, folder: Path) -> tuple[int, int]:
    """The same nodes and edges as the online path, as neo4j-admin CSV files."""
    blocks = edge_blocks_for(graph)
    n_nodes = 0
    with open(folder / "neurons.csv", "w") as f:
        f.write("uid:ID,model,layer,channel:int,:LABEL\n")
        for row in rows.neuron_rows(model_name, graph):
            f.write(f"{row['uid']},{model_name},{row['layer']},{row['channel']},Neuron\n")
            n_nodes += 1
    n_edges = 0
    with open(folder / "edges.csv", "w") as f:
        f.write(":START_ID,:END_ID,:TYPE,kernel:float[],kh:int,kw:int,sum:float,l2:float,max:float,min:float\n")
        for part in plan_parts(graph, options)[1:]:
            for src, out_idx, in_idx, kernels in blocks(part):
                n, kh, kw = kernels.shape
                flat = kernels.reshape(n, -1).astype(np.float64)
                keep = np.abs(flat).max(axis=1) > 0
                flat, out_idx, in_idx = flat[keep], out_idx[keep], in_idx[keep]
                stats = np.stack([flat.sum(1), np.sqrt((flat**2).sum(1)), flat.max(1), flat.min(1)], 1)
                for o, i, k, s in zip(out_idx.tolist(), in_idx.tolist(), _fmt(flat), stats.tolist()):
                    f.write(f"{model_name}/{src}:{i},{model_name}/{part.dst}:{o},{part.rel_type},{k},{kh},{kw},"
                            f"{s[0]!r},{s[1]!r},{s[2]!r},{s[3]!r}\n")
                n_edges += len(out_idx)
    return n_nodes, n_edges


def admin_import(folder: Path, home: Path, lib: Path) -> float:
    (home / "conf").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NEO4J_HOME": str(home), "NEO4J_CONF": str(home / "conf")}
    cmd = [find_java(), "-Xmx2g", "-cp", f"{lib}/*", "org.neo4j.cli.AdminTool", "database", "import", "full",
           f"--nodes={folder / 'neurons.csv'}", f"--relationships={folder / 'edges.csv'}",
           f"--report-file={folder / 'import.report'}",  # not the working directory (its default)
           "--overwrite-destination", "neo4j"]
    began = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    return time.monotonic() - began


def naive_floor(store: Store, model_name: str, sample: int) -> float:
    """One edge per transaction, endpoints matched by uid: the simplest possible writer."""
    src = store.read("MATCH (n:Neuron {model: $m}) RETURN n.uid AS uid LIMIT 200", m=model_name)
    uids = [r["uid"] for r in src]
    rng = np.random.default_rng(0)
    began = time.monotonic()
    for _ in range(sample):
        a, b = rng.choice(len(uids), 2)
        store.write("MATCH (a:Neuron {uid: $a}), (b:Neuron {uid: $b}) "
                    "CREATE (a)-[:NAIVE {kernel: $k, kh: 3, kw: 3, sum: 0.0, l2: 0.0, max: 0.0, min: 0.0}]->(b)",
                    a=uids[a], b=uids[b], k=rng.standard_normal(9).tolist())
    return sample / (time.monotonic() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="googlenet")
    parser.add_argument("--input-size", default="3,224,224")
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--no-bound", action="store_true", help="skip the neo4j-admin import")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.input_size.split(","))
    result: dict = {"benchmark": "ingest", "model": args.model, "machine": machine()}
    with scratch_server("ca-bench-") as (server, scratch):
        timer = Timer()
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            began = time.monotonic()
            summary = atlas.ingest(args.model, "bench", input_size=size, progress=timer)
            wall = time.monotonic() - began
            timer.finish()
            edges = summary.weight_edges + summary.expanded_edges
            result["online"] = {
                "wall_s": round(wall, 1), "edges": edges, "direct_edges": summary.weight_edges,
                "expanded_edges": summary.expanded_edges, "neurons": summary.neurons,
                "edges_per_s": round(edges / wall), "peak_rss_mib": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "slowest_parts_s": dict(sorted(timer.parts.items(), key=lambda kv: -kv[1])[:5]),
            }
            result["floor"] = {"naive_edges_per_s": round(naive_floor(atlas.store, "bench", args.naive_sample)),
                               "sample": args.naive_sample}
        server.stop()
        result["online"]["store_mib"] = round(server.status().store_bytes / 2**20)
        if not args.no_bound:
            graph = build_layer_graph(load_model(args.model).module, size)
            folder = scratch / "csv"
            folder.mkdir()
            began = time.monotonic()
            n_nodes, n_edges = write_csv("bench", graph, IngestOptions(), folder)
            csv_s = time.monotonic() - began
            import_s = admin_import(folder, scratch / "import-home", server.jars.ensure())
            result["bound"] = {"edges": n_edges, "csv_s": round(csv_s, 1), "import_s": round(import_s, 1),
                               "import_edges_per_s": round(n_edges / import_s),
                               "with_csv_edges_per_s": round(n_edges / (csv_s + import_s))}
            result["ratios"] = {
                "online_over_import": round(result["online"]["edges_per_s"] / result["bound"]["import_edges_per_s"], 3),
                "online_over_import_with_csv": round(
                    result["online"]["edges_per_s"] / result["bound"]["with_csv_edges_per_s"], 3),
            }
        result.setdefault("ratios", {})["online_over_naive"] = round(
            result["online"]["edges_per_s"] / result["floor"]["naive_edges_per_s"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
