"""Shapes of a traced network at an input size, and how much memory its ingest will take against
what the machine has.

Shapes are recorded by one run with fake tensors (nothing is computed or allocated), which also
gives the bytes of one forward pass's activations; tracing holds them, and the windows of expanded weights hold them with
their gradients, so an ingest needs about :data:`ACTIVATION_FACTOR` times their bytes. Available
memory is the least of the kernel's ``MemAvailable``, the cgroup's limit and ``RLIMIT_AS``.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import torch
from torch import fx
from torch.fx.passes.shape_prop import (
    _extract_tensor_metadata,  # ShapeProp's own, kept as it is
)

from circuitatlas.errors import InvalidInput

__all__ = ["ACTIVATION_FACTOR", "ShapeRecorder", "record_shapes", "activation_bytes", "available_bytes",
           "check_input_memory"]

ACTIVATION_FACTOR = 2.0
SHARE = 0.8  # of the available memory an ingest may plan to use


class ShapeRecorder(fx.Interpreter):
    """Runs a graph, records each node's tensor metadata in ``node.meta["tensor_meta"]`` (as
    torch's ShapeProp does, without printing a traceback when a node fails) and adds up the bytes
    of every tensor made (``nbytes``)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.nbytes = 0

    def run_node(self, node: fx.Node) -> object:
        value = super().run_node(node)
        found = False

        def metadata(obj: object) -> object:
            nonlocal found
            if not isinstance(obj, torch.Tensor):
                return obj
            found = True
            self.nbytes += obj.numel() * obj.element_size()
            return _extract_tensor_metadata(obj)

        meta = fx.node.map_aggregate(value, metadata)
        if found:
            node.meta["tensor_meta"] = meta
        return value


def record_shapes(gm: fx.GraphModule, input_size: tuple[int, int, int], fake: bool = True) -> int:
    """Record every node's shape for a (1, C, H, W) input and return the bytes of one forward
    pass's values. ``fake``: with torch's fake tensors (shapes only, nothing computed or
    allocated); otherwise a real forward pass. Raises what the run raises."""
    from torch._subclasses.fake_tensor import (
        FakeTensorMode,  # torch's own shape-only tensors
    )

    recorder = ShapeRecorder(gm)
    with FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext(), torch.no_grad():
        recorder.run(torch.zeros(1, *input_size))
    return recorder.nbytes


def activation_bytes(gm: fx.GraphModule, input_size: tuple[int, int, int]) -> int | None:
    """Bytes of every value of one forward pass of ``gm`` on a (1, C, H, W) input, from a fake run
    (shapes are recorded on the way); None when the fake run fails."""
    try:
        return record_shapes(gm, input_size)
    except Exception:
        return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def _address_space_available() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return soft - int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return soft


def available_bytes() -> int | None:
    """The memory this process can still take: the least of MemAvailable, the cgroup's room and
    the address-space limit's room; None when none of them can be read."""
    known = [b for b in (_meminfo_available(), _cgroup_available(), _address_space_available()) if b is not None]
    return max(0, min(known)) if known else None


def check_input_memory(needed: int | None, input_size: tuple[int, int, int], force: bool = False) -> None:
    """InvalidInput when ``needed`` bytes of activations (one forward pass, see
    :func:`activation_bytes`) at ``input_size`` would take more than SHARE of the available
    memory once ACTIVATION_FACTOR is applied (``force`` or an unknown ``needed`` skips the check)."""
    room = available_bytes()
    if force or needed is None or room is None:
        return
    needed = int(needed * ACTIVATION_FACTOR)
    if needed > SHARE * room:
        size = "x".join(map(str, input_size))
        raise InvalidInput(f"input size {size} needs about {needed / 2**30:.1f} GiB for its activations and "
                           f"{room / 2**30:.1f} GiB is available; choose a smaller --input-size, or pass --force")
