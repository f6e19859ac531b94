"""One ingest, as a settings object declared once: built by the CLI and the API, read by the
pipeline. What to load (``weights``, ``arch``), how to trace it (``input_size``, ``layers``,
``lenient``), what to do with an existing id (``replace``, ``resume``), how to write (``bulk``)
and which edges to keep (``edges``: the writer's :class:`~circuitatlas.ingest.writer.IngestOptions`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from circuitatlas.errors import InvalidInput
from circuitatlas.ingest.writer import IngestOptions
from circuitatlas.names import check_layer_name

__all__ = ["IngestJob", "BULK_CHOICES"]

BULK_CHOICES = ("auto", "always", "never")
MAX_INPUT_SIDE = 100_000  # beyond any image; the memory check (ingest/memory.py) guards what is below


@dataclass(frozen=True)
class IngestJob:
    """The settings of one ingest (see the module docstring); ``mode`` is derived."""

    weights: str | None = None
    arch: str | None = None
    input_size: tuple[int, int, int] = (3, 224, 224)
    layers: tuple[str, ...] | None = None
    replace: bool = False
    resume: bool = False
    lenient: bool = False
    trust_pickle: bool = False
    bulk: str = "auto"
    force: bool = False  # trace an input size whose activations look too large for the memory
    edges: IngestOptions = field(default_factory=IngestOptions)

    def __post_init__(self) -> None:
        try:
            size = tuple(int(x) for x in self.input_size)
        except (TypeError, ValueError):
            raise InvalidInput(f"input_size is (C, H, W) in whole numbers, got {self.input_size!r}") from None
        object.__setattr__(self, "input_size", size)
        if len(size) != 3 or not all(1 <= x <= MAX_INPUT_SIDE for x in size):
            raise InvalidInput(f"input_size is (C, H, W), each from 1 to {MAX_INPUT_SIDE}, got {self.input_size}")
        if self.layers is not None:
            layers = tuple(self.layers)
            repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
            if repeated or not layers:
                raise InvalidInput(f"layers must be distinct and at least one, got {', '.join(layers) or 'none'}")
            for layer in layers:
                check_layer_name(layer)
            object.__setattr__(self, "layers", layers)
        if self.replace and self.resume:
            raise InvalidInput("replace and resume exclude each other")
        if self.bulk not in BULK_CHOICES:
            raise InvalidInput(f"bulk must be one of {', '.join(BULK_CHOICES)}, not {self.bulk!r}")

    @property
    def mode(self) -> str:
        """"replace", "resume" or "fresh"."""
        return "replace" if self.replace else "resume" if self.resume else "fresh"

    @classmethod
    def of(cls, **settings: Any) -> "IngestJob":
        """An IngestJob from flat keyword settings: its own fields and the edge options'
        (``direct``, ``expanded``, ``min_l2``, ``top_k_per_neuron``, ...)."""
        own = {f.name for f in dataclasses.fields(cls)} - {"edges"}
        edge_names = {f.name for f in dataclasses.fields(IngestOptions)}
        unknown = set(settings) - own - edge_names
        if unknown:
            raise TypeError(f"unknown ingest settings: {', '.join(sorted(unknown))}")
        edges = IngestOptions(**{k: v for k, v in settings.items() if k in edge_names})
        return cls(**{k: v for k, v in settings.items() if k in own}, edges=edges)
