"""The network behind a stored model, for jobs that run it (tuning, examples, rendering, motifs)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from circuitatlas.ingest.sources import check_fingerprint, rebuild
from circuitatlas.queries.models import model_meta
from circuitatlas.store import Store

__all__ = ["network", "lazy_network"]


def network(store: Store, model: str, module: nn.Module | None = None, trust_pickle: bool = False,
            meta: dict | None = None) -> nn.Module:
    """``module`` (checked to hold the weights ingested) if given, else the network rebuilt from
    what ingest recorded (``meta``: the Model node's properties, when the caller has read them)."""
    meta = model_meta(store, model) if meta is None else meta
    return rebuild(meta, trust_pickle=trust_pickle) if module is None else check_fingerprint(module, meta)


def lazy_network(store: Store, model: str, module: nn.Module | None = None) -> Callable[[], nn.Module]:
    """:func:`network`, built on the first call only (a job may not need it at all)."""
    built: list[nn.Module] = []

    def get() -> nn.Module:
        if not built:
            built.append(network(store, model, module))
        return built[0]

    return get
