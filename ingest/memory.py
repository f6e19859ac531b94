"""How much memory an ingest's tracing will take at an input size, against what the machine has.

The activations of one forward pass are worked out from shapes alone (fake tensors: nothing is
computed or allocated); tracing holds them, and the windows of expanded weights hold them with
their gradients, so an ingest needs about :data:`ACTIVATION_FACTOR` times their bytes. Available
memory is the least of the kernel's ``MemAvailable``, the cgroup's limit and ``RLIMIT_AS``.
"""

from __future__ import annotations

import resource
from pathlib import Path

import torch
from torch import fx

from circuitatlas.errors import InvalidInput

__all__ = ["ACTIVATION_FACTOR", "activation_bytes", "available_bytes", "check_input_memory"]

ACTIVATION_FACTOR = 2.0
SHARE = 0.8  # of the available memory an ingest may plan to use


class _Sizes(fx.Interpreter):
    """Runs a graph and adds up the bytes of every tensor it makes."""

    total = 0

    def run_node(self, node: fx.Node) -> object:
        value = super().run_node(node)
        for leaf in torch.utils._pytree.tree_leaves(value):
            if isinstance(leaf, torch.Tensor):
                self.total += leaf.numel() * leaf.element_size()
        return value


def activation_bytes(gm: fx.GraphModule, input_size: tuple[int, int, int]) -> int | None:
    """Bytes of every value of one forward pass of ``gm`` on a (1, C, H, W) input, from shapes
    propagated with fake tensors; None when the fake run fails (the real run will say why)."""
    from torch._subclasses.fake_tensor import (
        FakeTensorMode,  # torch's own shape-only tensors
    )

    sizes = _Sizes(gm)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
            sizes.run(torch.empty(1, *input_size))
    except Exception:
        return None
    return sizes.total


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


def check_input_memory(gm: fx.GraphModule, input_size: tuple[int, int, int], force: bool = False) -> None:
    """InvalidInput when tracing ``gm`` at ``input_size`` would need more than SHARE of the
    available memory (``force`` skips the check)."""
    if force:
        return
    needed = activation_bytes(gm, input_size)
    room = available_bytes()
    if needed is None or room is None:
        return
    needed = int(needed * ACTIVATION_FACTOR)
    if needed > SHARE * room:
        size = "x".join(map(str, input_size))
        raise InvalidInput(f"input size {size} needs about {needed / 2**30:.1f} GiB for its activations and "
                           f"{room / 2**30:.1f} GiB is available; choose a smaller --input-size, or pass --force")
