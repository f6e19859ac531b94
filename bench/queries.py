"""Query API benchmark: p50/p95 of each helper of :mod:`circuitatlas.queries.connectivity` on
typical calls against an ingested GoogLeNet (random weights) in a scratch local Neo4j. Prints JSON.

    python bench/queries.py [--model googlenet] [--runs 20] [--warmup 2]

Targets: p95 under 100 ms for every helper but paths, under 1 s for paths. Each call cycles
through different units (so no answer is read twice in a row); the first ``--warmup`` calls of
each case (plan compilation, a cold page cache, and for similar_units the first read of the
layer's profiles, which later calls on that layer compare in memory) are reported apart and left
out of p50/p95. ``round_trip`` is a trivial query's latency: the machine's floor under every helper.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from circuitatlas.api import Atlas
from circuitatlas.benchmarking import add_case, finish, latency, latency_run, scratch_server
from circuitatlas.queries.criteria import Units

TARGET_MS = {"paths": 1000.0}
DEFAULT_TARGET_MS = 100.0


def cases(model: str) -> list[tuple[str, str, Callable[[Atlas, int], Any]]]:
    """(helper, description, call(atlas, i)): the calls measured, the i-th run on the i-th units."""
    u = lambda layer, ch: f"{model}/{layer}:{ch}"  # noqa: E731  (the bench's own shorthand)
    return [
        ("units", "one layer's units by layer and channel list (32 units of inception4a)",
         lambda a, i: a.units(Units(model=model, layers="inception4a", channels=range(i % 16, 512, 16)))),
        ("units", "branch pattern of a block (inception3b.branch*, 4 layers, 608 units)",
         lambda a, i: a.units(Units(model=model, layers=f"inception3b.branch{1 + i % 4}*"))),
        ("units", "explicit uids (10)",
         lambda a, i: a.units([u("inception3b", (i * 7 + j * 41) % 480) for j in range(10)])),
        ("adjacency", "expanded, 16 inception3a units -> 8 inception3b units, min_rel 0.3",
         lambda a, i: a.adjacency(Units(model=model, layers="inception3a", channels=range(i % 16, 256, 16)),
                                  Units(model=model, layers="inception3b", channels=range(i % 60, 480, 60)),
                                  "expanded", min_rel=0.3)),
        ("adjacency", "expanded, all inputs of 4 inception3b units with kernels, min_rel 0.3",
         lambda a, i: a.adjacency(Units(model=model, layers="inception3a"),
                                  [u("inception3b", (i * 13 + j * 97) % 480) for j in range(4)],
                                  "expanded", min_rel=0.3, kernels=True)),
        ("adjacency", "direct, inception3b.branch2.0.conv -> 4 units of inception3b.branch2.1.conv",
         lambda a, i: a.adjacency(Units(model=model, layers="inception3b.branch2.0.conv"),
                                  Units(model=model, layers="inception3b.branch2.1.conv",
                                        channels=[(i * 11 + j * 48) % 192 for j in range(4)]), "direct")),
        ("paths", "expanded, inception3a unit -> inception4a unit, max_len 3, k 10",
         lambda a, i: a.paths(u("inception3a", (i * 17) % 256), u("inception4a", (i * 29) % 512), 3, 10)),
        ("paths", "direct, inception3a.branch2.1.conv -> inception4a.branch1.conv, max_len 3, k 10",
         lambda a, i: a.paths(u("inception3a.branch2.1.conv", (i * 17) % 128),
                              u("inception4a.branch1.conv", (i * 29) % 192), 3, 10, kind="direct")),
        ("common_inputs", "expanded, 4 inception3b units, min_rel 0.3",
         lambda a, i: a.common_inputs([u("inception3b", (i * 5 + j * 120) % 480) for j in range(4)], 0.3,
                                      kind="expanded")),
        ("common_outputs", "expanded, 4 inception3b units, min_rel 0.3",
         lambda a, i: a.common_outputs([u("inception3b", (i * 5 + j * 120) % 480) for j in range(4)], 0.3,
                                       kind="expanded")),
        ("similar_units", "inception3b by inputs (expanded, 480 x 256)",
         lambda a, i: a.similar_units(u("inception3b", (i * 37) % 480), "inputs", 10)),
        ("similar_units", "inception3b by outputs (expanded, 480 x 512)",
         lambda a, i: a.similar_units(u("inception3b", (i * 37) % 480), "outputs", 10)),
        ("similar_units", "inception3b.branch2.1.conv by kernels (direct, 3x3 over 128 inputs)",
         lambda a, i: a.similar_units(u("inception3b.branch2.1.conv", (i * 37) % 192), "kernels", 10)),
        ("circuit", "inception4a unit, depth 2, min_rel 0.3, with kernels",
         lambda a, i: a.circuit(u("inception4a", (i * 31) % 512), 2, 0.3, limit=100_000)),
        ("circuit", "inception4a unit, depth 2, min_rel 0.3, without kernels",
         lambda a, i: a.circuit(u("inception4a", (i * 31) % 512), 2, 0.3, kernels=False, limit=100_000)),
        ("circuit", "inception4a unit, depth 2, min_rel 0.6, with kernels",
         lambda a, i: a.circuit(u("inception4a", (i * 31) % 512), 2, 0.6, limit=100_000)),
    ]


def size(result: Any) -> int:
    """Rows of a table, edges of an adjacency or a graph."""
    if hasattr(result, "edges") and isinstance(result.edges, list):
        return len(result.edges)
    if hasattr(result, "number_of_edges"):
        return result.number_of_edges()
    return len(result)


def measure(atlas: Atlas, call: Callable[[Atlas, int], Any], runs: int, warmup: int) -> dict[str, Any]:
    times, sizes = [], []
    for i in range(warmup + runs):
        began = time.perf_counter()
        result = call(atlas, i)
        times.append((time.perf_counter() - began) * 1000)
        sizes.append(size(result))
    return {**latency(times, warmup), "rows_median": int(np.median(sizes[warmup:])),
            "rows_max": int(max(sizes[warmup:]))}


def main() -> None:
    args, result = latency_run("query_api")
    with scratch_server("ca-bench-queries-") as (server, _):
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            began = time.monotonic()
            atlas.ingest(args.model, "bench", input_size=(3, 224, 224))
            result["setup_ingest_s"] = round(time.monotonic() - began, 1)
            # the floor under every helper on this machine today: one trivial query's round trip
            result["round_trip"] = {"query": "RETURN 1", **measure(
                atlas, lambda a, _i: a.store.read_with_timeout("RETURN 1 AS x", None), 100, args.warmup)}
            for helper, description, call in cases("bench"):
                add_case(result, {"helper": helper, "call": description,
                                  **measure(atlas, call, args.runs, args.warmup)},
                         TARGET_MS.get(helper, DEFAULT_TARGET_MS))
    finish(result)


if __name__ == "__main__":
    main()
