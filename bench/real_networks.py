"""Real networks at real size, side by side in one run (prints one JSON object):

- ingest ResNet-50 (random weights, 224 px, direct and expanded edges) into an empty local
  server (the bulk path ``auto`` takes) and into a non-empty one (the online path: GoogLeNet is
  there first); edges, edges/s, peak RSS of the ingesting process, store size, next to what the
  dry run predicted; for the bulk path, the seconds of each phase as the Model node records them
  (CSV, import, server down, index population, final check);
- each shipped pattern on GoogLeNet and on ResNet-50, direct and expanded: seconds to the first
  1,000 matches, and every match counted in the server (30 s at most; random weights give
  millions of matches);
- neighbourhood queries on GoogLeNet (top-10 inputs, top-10 outputs, inputs of at least 30% of
  the strongest): p50 and p95 over 1,000 random neurons.

    python bench/real_networks.py [--out FILE.json] [--skip-online] [--resnet-size 3,224,224]

Each ingest runs in a process of its own, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

import numpy as np

from circuitatlas.api import Atlas
from circuitatlas.benchmarking import machine, scratch_server
from circuitatlas.errors import QueryError
from circuitatlas.queries.patterns import PATTERNS

TARGETS = {"resnet50_bulk_s": 300, "pattern_s": 10, "neighbourhood_p95_ms": 5}


def ingest_child(state_dir: str, source: str, name: str, size: str) -> dict:
    """Runs in a child process: one ingest, its figures."""
    with Atlas.connect(state_dir=state_dir) as atlas:
        began = time.monotonic()
        summary = atlas.ingest(source, name, input_size=tuple(int(x) for x in size.split(",")))
        wall = time.monotonic() - began
        model = atlas.model_meta(name)
    edges = summary.weight_edges + summary.expanded_edges
    phases = {key.removeprefix("bulk_"): value for key, value in sorted(model.items()) if key.startswith("bulk_")}
    return {"path": summary.ingest_path, "wall_s": round(wall, 1), **({"bulk_phases_s": phases} if phases else {}),
            "direct_edges": summary.weight_edges,
            "expanded_edges": summary.expanded_edges, "neurons": summary.neurons, "edges_per_s": round(edges / wall),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def ingest(state_dir: str, source: str, name: str, size: str = "3,224,224") -> dict:
    cmd = [sys.executable, __file__, "--child", str(state_dir), source, name, size]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ingest of {source} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def patterns(atlas: Atlas, model: str, first: int = 1000, timeout: float = 20.0) -> dict:
    """Per shipped pattern and kind: seconds to the first ``first`` matches (what a search with a
    limit costs), and every match counted in the server, each within ``timeout`` seconds."""
    found = {}
    for kind in ("direct", "expanded"):
        for name in PATTERNS:
            began = time.monotonic()
            try:
                n_first: int | str = len(atlas.search(name, model, kind, limit=first, timeout=timeout))
            except QueryError:
                n_first = f"> {timeout:g} s"
            first_s = round(time.monotonic() - began, 2)
            began = time.monotonic()
            try:
                count: int | str = atlas.count_matches(name, model, kind, timeout=timeout)
            except QueryError:
                count = f"> {timeout:g} s to count"
            found[f"{name}/{kind}"] = {f"first_{first}_s": first_s, "found": n_first, "matches": count,
                                       "count_s": round(time.monotonic() - began, 2)}
    return found


def neighbourhood(atlas: Atlas, model: str, runs: int = 1000) -> dict:
    uids = [r["uid"] for r in atlas.cypher("MATCH (n:Neuron {model: $m}) WHERE n.layer <> 'input' "
                                           "RETURN n.uid AS uid", m=model)]
    rng = random.Random(0)
    cases = {"top10_inputs": lambda u: atlas.neighbours(u, "inputs", k=10),
             "top10_outputs": lambda u: atlas.neighbours(u, "outputs", k=10),
             "inputs_over_30pct": lambda u: atlas.neighbours(u, "inputs", k=None, min_rel=0.3)}
    result = {}
    for name, call in cases.items():
        for uid in rng.sample(uids, 20):  # warm-up: plans compiled, pages cached
            call(uid)
        times, sizes = [], []
        for uid in rng.sample(uids, runs):
            began = time.perf_counter()
            sizes.append(len(call(uid)))
            times.append((time.perf_counter() - began) * 1000)
        result[name] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                        "p95_ms": round(float(np.percentile(times, 95)), 2), "mean_rows": round(float(np.mean(sizes)), 1)}
    return result


def dry_run(source: str, size: str = "3,224,224") -> dict:
    plan = Atlas.dry_run(source, source, input_size=tuple(int(x) for x in size.split(",")))
    return {k: v for k, v in plan.summary().items() if k not in ("by_layer", "observation_layers")}


def resnet50(args: argparse.Namespace, result: dict, save) -> None:
    with scratch_server("ca-bench-empty-", heap="3g", pagecache="2g") as (server, _):
        result["resnet50_empty"] = ingest(server.state_dir, "resnet50", "resnet50", args.resnet_size)
        save()
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            result["patterns_resnet50"] = patterns(atlas, "resnet50")
        server.stop()
        result["resnet50_empty"]["store_mib"] = round(server.status().store_bytes / 2**20)
        save()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--skip-online", action="store_true")
    parser.add_argument("--resnet-size", default="3,224,224", help="C,H,W ResNet-50 is traced at")
    parser.add_argument("--keep-resnet", help="a result JSON of an earlier run whose ResNet-50 figures to keep")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(ingest_child(*args.child)))
        return
    result: dict = {"benchmark": "real_networks", "machine": machine(), "targets": TARGETS,
                    "resnet50_input_size": args.resnet_size,
                    "dry_run": {"resnet50": dry_run("resnet50", args.resnet_size), "googlenet": dry_run("googlenet")}}

    def save() -> None:  # after every stage: a long run that is cut short keeps what it measured
        if args.out:
            with open(args.out, "w") as handle:
                handle.write(json.dumps(result, indent=2) + "\n")

    if args.keep_resnet:  # the ResNet-50 figures of an earlier run of this script, kept as they are
        kept = json.loads(open(args.keep_resnet).read())
        result.update({k: v for k, v in kept.items() if k.startswith(("resnet50", "patterns_resnet50"))})
    else:
        resnet50(args, result, save)
    with scratch_server("ca-bench-nonempty-", heap="3g", pagecache="2g") as (server, _):

        result["googlenet_empty"] = ingest(server.state_dir, "googlenet", "googlenet")
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            result["patterns_googlenet"] = patterns(atlas, "googlenet")
            result["neighbourhood_googlenet"] = neighbourhood(atlas, "googlenet")
        save()
        if not args.skip_online:
            result["resnet50_nonempty"] = ingest(server.state_dir, "resnet50", "resnet50", args.resnet_size)
        server.stop()
        stored = "googlenet" if args.skip_online else "googlenet_and_resnet50"
        result[f"store_mib_{stored}"] = round(server.status().store_bytes / 2**20)
        save()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
