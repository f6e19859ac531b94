"""Motif benchmark: every detector over all consecutive observation layers of a model
(GoogLeNet by default, random weights), weights and tuning from the local Neo4j. Prints JSON.

    python bench/motifs.py [--model googlenet] [--perm 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from circuitatlas.api import Atlas
from circuitatlas.benchmarking import machine, scratch_server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="googlenet")
    parser.add_argument("--perm", type=int, default=200)
    args = parser.parse_args()
    result: dict = {"benchmark": "motifs_all_layers", "model": args.model, "n_perm": args.perm,
                    "machine": machine(), "runs": []}
    with scratch_server("ca-bench-motifs-") as (server, _):
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            began = time.monotonic()
            atlas.ingest(args.model, "bench", direct=False)
            result["setup_ingest_s"] = round(time.monotonic() - began, 1)
            layers = atlas.model_meta("bench")["observation_layers"]
            module = atlas.module("bench")
            began = time.monotonic()
            for layer in layers:  # tuning once per layer (stored, then read by every detector)
                atlas.annotate_tuning("bench", layer, module=module)
            result["tuning_s"] = round(time.monotonic() - began, 1)
            runs = [("rotation_equivariance", [a, b]) for a, b in zip(layers, layers[1:])]
            runs += [("superposition", [a, b]) for a, b in zip(layers, layers[1:])]
            runs += [("union_over_cases", [a, b, c]) for a, b, c in zip(layers, layers[1:], layers[2:])]
            runs += [("flip_equivariance", layers)]  # one chain: each layer's pairs map the next
            began = time.monotonic()
            for kind, chosen in runs:
                t0 = time.monotonic()
                found = atlas.find_motifs(kind, "bench", chosen, n_perm=args.perm, module=module)
                result["runs"].append({"kind": kind, "layers": chosen, "found": len(found),
                                       "seconds": round(time.monotonic() - t0, 2)})
                print(json.dumps(result["runs"][-1]), file=sys.stderr, flush=True)
            result["detectors_s"] = round(time.monotonic() - began, 1)
    result["total_s"] = round(result["tuning_s"] + result["detectors_s"], 1)
    result["target_s"] = 300
    result["meets_target"] = result["total_s"] < 300
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
