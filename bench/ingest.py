"""Ingest benchmark: full GoogLeNet (random weights) into a fresh local Neo4j, by both writers,
side by side in one run:

- online: batched UNWIND writes over Bolt (``bulk="never"``), the path for a non-empty graph;
- bulk: CSV written with numpy, then the offline ``neo4j-admin database import`` (``bulk="always"``),
  the path ``auto`` takes for a large model into an empty local server;
- bound: the import step alone (edges / import seconds), the upper bound of any path;
- floor: a naive one-edge-per-transaction writer on a sample.

Prints one JSON object with edges/s, wall time, peak RSS of this Python process, store size
and the ratios between them.

    python bench/ingest.py [--model googlenet] [--naive-sample 2000] [--only online|bulk]

Each path runs in a process of its own (``--only``), so each peak RSS is that path's alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from circuitatlas.api import Atlas
from circuitatlas.benchmarking import machine, scratch_server
from circuitatlas.ingest.writer import Progress
from circuitatlas.store import Store


class Timer(Progress):
    """Seconds per part of an ingest (online parts; the bulk path reports its own)."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self._last: tuple[str, float] | None = None

    def part(self, name: str) -> None:
        now = time.monotonic()
        if self._last:
            self.parts[self._last[0]] = round(self.parts.get(self._last[0], 0) + now - self._last[1], 2)
        self._last = (name, now)

    def finish(self) -> None:
        self.part("")


def _rss_mib() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_path(model: str, size: tuple[int, int, int], bulk: str, naive_sample: int) -> dict:
    """Ingest ``model`` into a fresh scratch server by one path; the measurements."""
    with scratch_server(f"ca-bench-{bulk}-") as (server, _scratch):
        timer = Timer()
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            rss_before = _rss_mib()
            began = time.monotonic()
            summary = atlas.ingest(model, "bench", input_size=size, progress=timer, bulk=bulk)
            wall = time.monotonic() - began
            timer.finish()
            meta = atlas.model_meta("bench")
            edges = summary.weight_edges + summary.expanded_edges
            result = {
                "path": summary.ingest_path, "wall_s": round(wall, 1), "edges": edges,
                "direct_edges": summary.weight_edges, "expanded_edges": summary.expanded_edges,
                "neurons": summary.neurons, "edges_per_s": round(edges / wall),
                "peak_rss_mib": _rss_mib(), "rss_before_mib": rss_before,
            }
            if summary.ingest_path == "bulk":
                result["steps_s"] = {k.removeprefix("bulk_"): v for k, v in meta.items() if k.startswith("bulk_")}
                result["import_edges_per_s"] = round(edges / meta["bulk_import_s"])
            else:
                result["slowest_parts_s"] = dict(sorted(timer.parts.items(), key=lambda kv: -kv[1])[:5])
                result["naive_floor"] = naive_floor(atlas.store, "bench", naive_sample)
        server.stop()
        result["store_mib"] = round(server.status().store_bytes / 2**20)
    return result


def naive_floor(store: Store, model_name: str, sample: int) -> dict:
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
    return {"edges_per_s": round(sample / (time.monotonic() - began)), "sample": sample}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="googlenet")
    parser.add_argument("--input-size", default="3,224,224")
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--only", choices=["online", "bulk"],
                        help="measure one path in this process and print its figures alone")
    args = parser.parse_args()
    if args.only:
        size = tuple(int(x) for x in args.input_size.split(","))
        print(json.dumps(run_path(args.model, size, "always" if args.only == "bulk" else "never", args.naive_sample)))
        return
    result: dict = {"benchmark": "ingest", "model": args.model, "machine": machine(),
                    "targets": {"edges_per_s": 100_000, "peak_rss_mib": 2048}}
    for path in ("bulk", "online"):  # each in its own process: a peak RSS is one path's alone
        cmd = [sys.executable, __file__, "--only", path, "--model", args.model, "--input-size", args.input_size,
               "--naive-sample", str(args.naive_sample)]
        result[path] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    result["bound"] = {"import_edges_per_s": result["bulk"]["import_edges_per_s"],
                       "note": "neo4j-admin import alone, from the bulk run's CSV"}
    result["floor"] = result["online"].pop("naive_floor")
    bulk, online, bound = result["bulk"]["edges_per_s"], result["online"]["edges_per_s"], result["bound"][
        "import_edges_per_s"]
    result["ratios"] = {"bulk_over_bound": round(bulk / bound, 3), "online_over_bound": round(online / bound, 3),
                        "bulk_over_online": round(bulk / online, 2),
                        "online_over_naive": round(online / result["floor"]["edges_per_s"], 1)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
