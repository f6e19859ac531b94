"""What the benchmarks in ``bench/`` share: a scratch Neo4j of their own and a description of the
machine that goes into every result JSON."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from circuitatlas.localserver import LocalServer, free_port

__all__ = ["scratch_server", "machine"]


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
