"""Weight profiles of a layer's units, for :func:`~circuitatlas.queries.connectivity.similar_units`.

A layer's profiles are one matrix: a row per unit, a column per input (or output) partner of
the layer, holding the edge's ``sum`` (or, by kernels, its kernel flattened, each partner's
block as large as the partner's largest kernel, smaller kernels centred in it). A unit's
similar units are then one matrix-vector product. The matrix is read from the graph once and
kept in this process (least recently used first out, :data:`CACHE_BYTES` in all), keyed by the
server, the model's completion time, the layer, the edge kind and the side: a model ingested
again is read again, and stored weights never change otherwise (edits leave them as they are).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from circuitatlas.queries import cypher

__all__ = ["LayerProfiles", "layer_profiles", "CACHE_BYTES", "ENTRY_BYTES", "clear"]

CACHE_BYTES = 256 * 2**20  # all cached profile matrices together
ENTRY_BYTES = 64 * 2**20  # a layer larger than this is compared in the server, one pass, not cached

Read = Callable[..., list[dict[str, Any]]]


@dataclass(frozen=True)
class LayerProfiles:
    """The units of one layer (unit rows, by channel), their profile matrix (float64), each
    unit's number of partners (edges on the profile's side) and each profile's norm."""

    units: list[dict[str, Any]]
    matrix: np.ndarray
    partners: np.ndarray
    norms: np.ndarray = field(init=False)
    index: dict[str, int] = field(init=False)  # uid -> row

    def __post_init__(self) -> None:
        object.__setattr__(self, "norms", np.sqrt(np.einsum("ij,ij->i", self.matrix, self.matrix)))
        object.__setattr__(self, "index", {unit["uid"]: i for i, unit in enumerate(self.units)})

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes)

    def has_profile(self, uid: str) -> bool:
        """Whether ``uid`` is one of the units and has a non-zero profile."""
        return uid in self.index and bool(self.norms[self.index[uid]] > 0)

    def most_similar(self, uid: str, k: int) -> list[tuple[dict[str, Any], float, int]]:
        """The ``k`` other units whose profile has the largest cosine with ``uid``'s (ties by
        uid), leaving out units whose profile is zero: (unit row, cosine, partners)."""
        index = self.index[uid]
        norms = self.norms
        own = self.matrix[index]
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = (self.matrix @ own) / (norms * norms[index])
        keep = np.flatnonzero(norms > 0)
        keep = keep[keep != index]
        uids = np.array([self.units[i]["uid"] for i in keep], dtype=object)
        order = keep[np.lexsort((uids, -cos[keep]))][:k]
        return [(self.units[i], float(cos[i]), int(self.partners[i])) for i in order]


def _shapes(row: dict[str, Any], kernels: bool) -> list[tuple[int, int]]:
    """Each edge's kernel shape (a kernel stored without one: a row), (1, 1) for sums."""
    if not kernels:
        return [(1, 1)] * len(row["partners"])
    return [(kh, kw) if kh and kw else (1, len(value))
            for (kh, kw), value in zip(row["shapes"], row["values"])]


def _matrix(rows: list[dict[str, Any]], kernels: bool) -> tuple[np.ndarray, np.ndarray]:
    """The profile matrix of ``rows`` (``partners``, ``values`` and ``shapes`` per unit)."""
    shapes = [_shapes(row, kernels) for row in rows]
    columns: dict[str, tuple[int, int]] = {}  # partner -> (kh, kw) of its block
    for row, row_shapes in zip(rows, shapes):
        for partner, (kh, kw) in zip(row["partners"], row_shapes):
            old = columns.get(partner, (0, 0))
            columns[partner] = (max(old[0], kh), max(old[1], kw))
    offsets, width = {}, 0
    for partner, (kh, kw) in columns.items():
        offsets[partner] = width
        width += kh * kw
    matrix = np.zeros((len(rows), width))
    for i, (row, row_shapes) in enumerate(zip(rows, shapes)):
        if not kernels:
            matrix[i, [offsets[partner] for partner in row["partners"]]] = row["values"]
            continue
        for partner, (kh, kw), value in zip(row["partners"], row_shapes, row["values"]):
            start = offsets[partner]
            bh, bw = columns[partner]
            top, left = (bh - kh) // 2, (bw - kw) // 2
            block = matrix[i, start:start + bh * bw].reshape(bh, bw)
            block[top:top + kh, left:left + kw] = np.asarray(value, dtype=np.float64).reshape(kh, kw)
    return matrix, np.array([len(row["partners"]) for row in rows])


class _Cache:
    """Least-recently-used profile matrices, at most :data:`CACHE_BYTES` together."""

    def __init__(self) -> None:
        self.entries: OrderedDict[Hashable, LayerProfiles] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable) -> LayerProfiles | None:
        with self.lock:
            found = self.entries.get(key)
            if found is not None:
                self.entries.move_to_end(key)
            return found

    def put(self, key: Hashable, profiles: LayerProfiles) -> None:
        with self.lock:
            self.entries[key] = profiles
            while sum(p.nbytes for p in self.entries.values()) > CACHE_BYTES and len(self.entries) > 1:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_CACHE = _Cache()


def clear() -> None:
    """Forget every cached profile matrix."""
    _CACHE.clear()


def layer_profiles(read: Read, server: Hashable, model: str, completed: str | None, layer: str, rel_type: str,
                   side: str, kernels: bool) -> LayerProfiles:
    """The profiles of ``layer``'s units (from the cache when the model is complete and was
    read before at the same completion time)."""
    key = (server, model, completed, layer, rel_type, side, kernels)
    found = _CACHE.get(key) if completed is not None else None
    if found is not None:
        return found
    rows = read(cypher.layer_profiles_query(rel_type, side, kernels), model=model, layer=layer)
    matrix, partners = _matrix(rows, kernels)
    profiles = LayerProfiles([row["unit"] for row in rows], matrix, partners)
    if completed is not None and profiles.nbytes <= ENTRY_BYTES:
        _CACHE.put(key, profiles)
    return profiles
