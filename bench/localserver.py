"""How long the project's local Neo4j takes to start and to stop, with the shipped settings and
with Neo4j's own Bolt shutdown quiet period (5 s), side by side in one run. Every test file that
restarts a server, and every bulk import (which stops the server for ``neo4j-admin``), pays these.

    python bench/localserver.py [--cycles 5] [--out bench/results/localserver-2core.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from circuitatlas import localserver
from circuitatlas.benchmarking import emit, machine
from circuitatlas.localserver import LocalServer, free_port


def cycles(n: int, shutdown_settings: dict[str, str]) -> dict:
    """Start and stop one fresh store ``n`` times with ``shutdown_settings`` in place of the shipped ones."""
    shipped = dict(localserver._SHUTDOWN_SETTINGS)
    localserver._SHUTDOWN_SETTINGS.clear()
    localserver._SHUTDOWN_SETTINGS.update(shutdown_settings)
    scratch = Path(tempfile.mkdtemp(prefix="bench-localserver-"))
    server = LocalServer(scratch / "state")
    starts, stops = [], []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            server.start(port=free_port(), heap="512m", pagecache="128m")
            t1 = time.perf_counter()
            server.stop()
            starts.append(t1 - t0)
            stops.append(time.perf_counter() - t1)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        localserver._SHUTDOWN_SETTINGS.clear()
        localserver._SHUTDOWN_SETTINGS.update(shipped)
    return {"settings": shutdown_settings, "cycles": n,
            "first_start_s": round(starts[0], 2),  # a new store: the password is set first
            "start_s_median": round(float(np.median(starts[1:] or starts)), 2),
            "stop_s_median": round(float(np.median(stops)), 2), "stop_s_max": round(max(stops), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    shipped = dict(localserver._SHUTDOWN_SETTINGS)
    neo4j_default = {key: "5" for key in shipped}  # Neo4j 5.26's default quiet period, in seconds
    result = {"benchmark": "localserver start and stop", "machine": machine(),
              "runs": [cycles(args.cycles, shipped), cycles(args.cycles, neo4j_default)]}
    emit(result, args.out)


if __name__ == "__main__":
    main()
