"""Viewer benchmark: server time (request in, response out, HTML rendered; no network) of every
page and a few of their JSON twins on an ingested GoogLeNet (random weights, expanded weights
between the Inception blocks, an SVD analysis) in a scratch local Neo4j, plus the motif page on a
planted network (a detector run on GoogLeNet is a benchmark of its own). Prints JSON.

    python bench/serve.py [--model googlenet] [--runs 20] [--warmup 2]

Target: p95 under 300 ms for every page, the depth-2 circuit page included. Each call cycles
through different units; the first ``--warmup`` calls of each case are reported apart.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable
from urllib.parse import quote

import numpy as np
from starlette.testclient import TestClient

from circuitatlas.api import Atlas
from circuitatlas.benchmarking import add_case, finish, latency, latency_run, scratch_server
from circuitatlas.web import pages
from circuitatlas.web.app import create_app, freeze_startup_objects

TARGET_MS = 300.0


def cases(model: str, analysis: str, motif: str) -> list[tuple[str, Callable[[int], str]]]:
    """(description, url of the i-th call)."""
    m = f"/models/{model}"
    return [
        ("models page", lambda i: "/"),
        ("model page (GoogLeNet, all layers)", lambda i: m),
        ("layer page inception4a (512 units)", lambda i: f"{m}/layers/inception4a"),
        ("layer page inception5b (1024 units)", lambda i: f"{m}/layers/inception5b"),
        ("layer page conv1.conv (64 units, RGB kernels)", lambda i: f"{m}/layers/conv1.conv"),
        ("neuron page inception4a unit", lambda i: f"{m}/layers/inception4a/{(i * 37) % 512}"),
        ("neuron page inception3b.branch2.1.conv unit",
         lambda i: f"{m}/layers/inception3b.branch2.1.conv/{(i * 11) % 192}"),
        ("circuit page inception4a unit, depth 2, min_rel 0.3",
         lambda i: f"{m}/circuit?units=inception4a:{(i * 31) % 512}"),
        ("circuit page inception4a unit, depth 1, min_rel 0.3",
         lambda i: f"{m}/circuit?units=inception4a:{(i * 31) % 512}&depth=1"),
        ("circuit JSON inception4a unit, depth 2", lambda i: f"/api{m}/circuit?units=inception4a:{(i * 31) % 512}"),
        ("circuit SVG download, depth 2", lambda i: f"{m}/circuit.svg?units=inception4a:{(i * 31) % 512}"),
        ("SVD page inception3a -> inception3b", lambda i: f"{m}/svd?analysis={quote(analysis)}"),
        ("console: 100 neurons", lambda i: "/console?q=" + quote(
            f"MATCH (n:Neuron {{model: {json.dumps(model)}}}) RETURN n.uid, n.channel SKIP {i} LIMIT 100")),
        ("motif page (planted equivariance family)", lambda i: pages.motif_url(motif)),
    ]


def measure(client: TestClient, url: Callable[[int], str], runs: int, warmup: int) -> dict[str, Any]:
    times, sizes = [], []
    for i in range(warmup + runs):
        began = time.perf_counter()
        response = client.get(url(i))
        times.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url(i)}: {response.status_code} {response.text[:200]}")
        sizes.append(len(response.content))
    return {**latency(times, warmup), "bytes_median": int(np.median(sizes[warmup:]))}


def main() -> None:
    args, result = latency_run("serve", target_ms=TARGET_MS)
    with scratch_server("ca-bench-serve-") as (server, _):
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            began = time.monotonic()
            atlas.ingest(args.model, "bench", input_size=(3, 224, 224))
            analysis = atlas.analyze_svd("bench", "inception3a", "inception3b").analysis
            atlas.ingest("planted:equivariance", "planted", input_size=(3, 33, 33), expanded=False)
            for layer in ("mid", "high"):
                atlas.annotate_tuning("planted", layer, radius=5, width=1.5)
            atlas.find_motifs("rotation_equivariance", "planted", ["mid", "high"], n_perm=100, alpha=0.05)
            motif = atlas.motifs("planted")[0]["uid"]
            result["setup_s"] = round(time.monotonic() - began, 1)
            client = TestClient(create_app(atlas.store))
            freeze_startup_objects()  # as `circuitatlas serve` does
            for description, url in cases("bench", analysis, motif):
                add_case(result, {"page": description, "example": url(0),
                                  **measure(client, url, args.runs, args.warmup)}, TARGET_MS)
    finish(result)


if __name__ == "__main__":
    main()
