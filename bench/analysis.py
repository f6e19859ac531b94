"""SVD benchmark: SVD + clustering for every consecutive observation-layer pair of GoogLeNet,
weights read from Neo4j (random init; the ingest itself is setup and timed apart). Prints JSON.

    python bench/analysis.py [--model googlenet]
"""

from __future__ import annotations

import argparse
import json
import time

from circuitatlas.analysis.svd import svd_clusters
from circuitatlas.api import Atlas
from circuitatlas.benchmarking import machine, scratch_server
from circuitatlas.queries.weights import read_abs_sums


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="googlenet")
    args = parser.parse_args()
    result: dict = {"benchmark": "svd_all_pairs", "model": args.model, "machine": machine()}
    with scratch_server("ca-bench-svd-") as (server, _):
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            began = time.monotonic()
            summary = atlas.ingest(args.model, "bench", direct=False)
            result["setup_ingest_s"] = round(time.monotonic() - began, 1)
            layers = atlas.cypher("MATCH (m:Model {id: 'bench'}) RETURN m.observation_layers AS obs")[0]["obs"]
            pairs = []
            total_read = total_svd = 0.0
            began = time.monotonic()
            for src, dst in zip(layers, layers[1:]):
                t0 = time.monotonic()
                W = read_abs_sums(atlas.store, "bench", src, dst, "expanded")  # sum |W| per edge (l1)
                t1 = time.monotonic()
                r = svd_clusters(W)
                t2 = time.monotonic()
                total_read += t1 - t0
                total_svd += t2 - t1
                pairs.append({"pair": f"{src}->{dst}", "shape": list(W.shape), "k": r.k,
                              "read_s": round(t1 - t0, 2), "svd_s": round(t2 - t1, 3)})
            wall = time.monotonic() - began
            # the same analysis through the write-back API, for the full cost a user sees
            began = time.monotonic()
            for src, dst in zip(layers, layers[1:]):
                atlas.analyze_svd("bench", src, dst)
            api_wall = time.monotonic() - began
        result.update({
            "pairs": pairs, "expanded_edges": summary.expanded_edges,
            "total_s": round(wall, 1), "read_s": round(total_read, 1), "svd_s": round(total_svd, 2),
            "with_write_back_s": round(api_wall, 1), "target_s": 60, "meets_target": wall < 60,
            "edges_read_per_s": round(summary.expanded_edges / total_read),
        })
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
