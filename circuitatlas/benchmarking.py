"""What the benchmarks in ``bench/`` share: a scratch Neo4j of their own and a description of the
machine that goes into every result JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from circuitatlas.localserver import LocalServer, free_port

__all__ = ["scratch_server", "machine", "latency_run", "latency", "add_case", "finish", "emit"]


@contextlib.contextmanager
def scratch_server(prefix: str, heap: str = "2g", pagecache: str = "1g") -> Iterator[tuple[LocalServer, Path]]:
    """A fresh local Neo4j in a temporary state dir, stopped and deleted afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    server = LocalServer(scratch / "state")
    try:
        server.start(port=free_port(), heap=heap, pagecache=pagecache)
        yield server, scratch
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def machine() -> dict:
    """CPU model, cores, memory, Python and torch versions, torch threads."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem, 1), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def latency_run(benchmark: str, **fields: object) -> tuple[argparse.Namespace, dict]:
    """The command line of a latency benchmark over an ingested model (``--model googlenet``,
    ``--runs 20``, ``--warmup 2``) and its result's head: those settings, ``fields``, the machine
    and an empty ``cases`` list."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="googlenet")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    return args, {"benchmark": benchmark, "model": args.model, "weights": "random (none)", "runs": args.runs,
                  "warmup": args.warmup, **fields, "machine": machine(), "cases": []}


def latency(times_ms: Sequence[float], warmup: int) -> dict:
    """p50, p95, mean and max of timings in ms, the first ``warmup`` reported apart and left out."""
    measured = np.asarray(times_ms[warmup:])
    return {"p50_ms": round(float(np.percentile(measured, 50)), 1),
            "p95_ms": round(float(np.percentile(measured, 95)), 1),
            "mean_ms": round(float(measured.mean()), 1), "max_ms": round(float(measured.max()), 1),
            "warmup_ms": [round(t, 1) for t in times_ms[:warmup]]}


def add_case(result: dict, row: dict, target_ms: float) -> None:
    """Mark ``row`` against its p95 target, add it to ``result["cases"]`` and show it on stderr."""
    row.update(target_ms=target_ms, meets_target=row["p95_ms"] < target_ms)
    result["cases"].append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)


def emit(result: dict, out: str | Path | None = None) -> None:
    """A benchmark's result as JSON on stdout and, when ``out`` is given, in that file too
    (numpy scalars written as floats)."""
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def finish(result: dict) -> None:
    """Whether every case met its target, then the whole result as JSON on stdout."""
    result["meets_all_targets"] = all(row["meets_target"] for row in result["cases"])
    print(json.dumps(result, indent=2))
