"""Query helpers that researchers use without writing Cypher: units by criteria, adjacency
tables, common inputs and outputs and similar units (paths and circuits: :mod:`.paths`). Each takes unit criteria (:class:`~circuitatlas.queries.criteria.Units`, a neuron uid or a
list of uids), returns plain tables (lists of dicts, numpy arrays, networkx graphs), and has a
``timeout`` (seconds for the whole call, enforced by the server) and a row ``limit``.

Relative strength, read from what ingest stored on every edge (no scan of a neuron's other
edges at query time): ``rel_in`` of an edge is its ``sum`` over the largest |sum| among its
target's inputs of that kind, ``rel_out`` its ``sum`` over the largest |sum| among its source's
outputs. Both are signed here (the stored values are unsigned) and lie in [-1, 1]. For a model
ingested with pruning (``min_l2``, ``top_k_per_neuron``) the largest is the network's, before
pruning, and ``min_rel`` filters on it.

A table that reaches its ``limit`` is cut there (strongest rows first) and a :class:`Truncated`
warning says so; :func:`paths`, which cannot be answered from part of its subgraph, raises instead.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from circuitatlas import checks, names
from circuitatlas.errors import InvalidInput, NotFound, QueryError
from circuitatlas.queries import aliases, cypher, profiles
from circuitatlas.queries.criteria import Units, UnitsLike, as_units, is_pattern, where
from circuitatlas.store import Store

__all__ = ["units", "adjacency", "Adjacency", "common_inputs", "common_outputs", "similar_units", "neighbours",
           "Truncated",
           "DEFAULT_TIMEOUT", "DEFAULT_LIMIT", "resolve_kind"]

DEFAULT_TIMEOUT = 30.0  # seconds for one helper call, all its queries together
DEFAULT_LIMIT = 10_000  # rows of a table (edges of a circuit or of a paths subgraph)
SIGNS = {None: 0, "+": 1, "-": -1}
SIMILARITY = {"inputs": ("inputs", False), "outputs": ("outputs", False), "kernels": ("inputs", True)}
PATH_WEIGHTS = ("product", "sum")
UNIT_FIELDS = ("uid", "model", "layer", "channel", "branch", "orientation", "selectivity")  # a units table's columns


class Truncated(UserWarning):
    """A helper stopped at its row limit: what it returned is the first ``limit`` rows, strongest first."""


@dataclass
class Adjacency:
    """The three tables of :func:`adjacency`: the source and target units that have an edge in
    ``edges`` (unit rows as :func:`units` gives them) and the edges themselves (``source``,
    ``target``, ``sum``, ``l2``, ``rel_in``, ``rel_out``, and with kernels ``kernel`` (kh, kw))."""

    sources: list[dict[str, Any]]
    targets: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    kind: str = "direct"
    truncated: bool = False

    def matrix(self, value: str = "sum", targets: Sequence[str] | None = None,
               sources: Sequence[str] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
        """``(M, target_uids, source_uids)``: one edge column as a (targets, sources) array, 0 where
        no edge was returned; rows and columns in the order of :attr:`targets` and :attr:`sources`,
        or of the uids given (which must include every unit that has an edge here)."""
        rows = list(targets) if targets is not None else [u["uid"] for u in self.targets]
        cols = list(sources) if sources is not None else [u["uid"] for u in self.sources]
        at_row, at_col = {u: i for i, u in enumerate(rows)}, {u: i for i, u in enumerate(cols)}
        out = np.zeros((len(rows), len(cols)))
        for edge in self.edges:
            out[at_row[edge["target"]], at_col[edge["source"]]] = edge[value]
        return out, rows, cols


@dataclass
class _Budget:
    """One timeout for all the queries of a call: each query gets what is left of it."""

    timeout: float | None
    began: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.timeout = checks.seconds("timeout", self.timeout)

    def read(self, store: Store, query: str, **params: Any) -> list[dict[str, Any]]:
        left = None
        if self.timeout is not None:
            left = self.timeout - (time.monotonic() - self.began)
            if left <= 0:
                raise QueryError(f"query timed out after {self.timeout:g} s (pass a larger timeout)")
        try:
            return store.read_with_timeout(query, left, **params)
        except QueryError as exc:
            if self.timeout is not None and str(exc).startswith("query timed out"):
                raise QueryError(f"query timed out after {self.timeout:g} s (pass a larger timeout)") from None
            raise


def _unit(row: dict[str, Any]) -> dict[str, Any]:
    """A unit row with its columns in :data:`UNIT_FIELDS` order (a map projection has none)."""
    return {key: row.get(key) for key in UNIT_FIELDS}


def _check_limit(limit: int, name: str = "limit") -> int:
    return checks.whole(name, limit, 1)


def _capped(rows: list, limit: int, what: str) -> tuple[list, bool]:
    if len(rows) <= limit:
        return rows, False
    warnings.warn(f"{what}: stopped at limit={limit} rows (strongest first); pass a larger limit for more",
                  Truncated, stacklevel=3)
    return rows[:limit], True


def _kernel_arrays(flat: list[list[float]], kh: list[int], kw: list[int]) -> list[np.ndarray]:
    """Flat kernels as float32 (kh, kw) arrays, converted a shape at a time (views of one block)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(zip(kh, kw, strict=True)):
        by_shape.setdefault(shape, []).append(i)
    out: list[np.ndarray] = [np.empty(0, np.float32)] * len(flat)
    for (h, w), at in by_shape.items():
        for i, kernel in zip(at, np.asarray([flat[i] for i in at], dtype=np.float32).reshape(-1, h, w)):
            out[i] = kernel
    return out


def _sign(sign: str | None) -> int:
    if sign not in SIGNS:
        raise InvalidInput(f"sign must be '+', '-' or None, not {sign!r}")
    return SIGNS[sign]


def _fraction(name: str, value: float) -> float:
    try:
        return checks.fraction(name, value)
    except InvalidInput:
        raise InvalidInput(f"{name} is a fraction of the strongest edge, between 0 and 1, not {value!r}") from None


def resolve_kind(store: Store, uids: Iterable[str], kind: str, direction: str = "in") -> str:
    """``kind``, or for ``"auto"``: "expanded" when the layers of the units ``uids`` all have
    expanded edges in ``direction`` ("in": inputs, "out": outputs; the first observation layer
    has expanded outputs only, the last inputs only), else "direct"."""
    if kind != "auto":
        names.rel_type(kind)
        return kind
    layers = sorted({names.layer_uid(*names.parse_neuron_uid(uid)[:2]) for uid in uids})
    rows = store.read(cypher.LAYER_EDGE_KINDS, uids=layers)
    wanted = f"expanded_{direction}"
    return "expanded" if len(rows) == len(layers) and all(row[wanted] for row in rows) else "direct"


def _uid(store: Store, unit: str) -> str:
    """The canonical uid of one unit given as a uid whose layer may be an alias (``iv1/3b:379``)."""
    if not isinstance(unit, str):
        raise InvalidInput(f"give one neuron uid '<model>/<layer>:<channel>', not {unit!r}")
    try:
        model = names.parse_neuron_uid(unit)[0]
    except ValueError:
        raise InvalidInput(f"{unit!r} is not a neuron uid '<model>/<layer>:<channel>'") from None
    return aliases.resolve_unit(store, model, unit)


def _canonical(store: Store, selected: UnitsLike) -> Units:
    """Criteria with each layer named exactly resolved to its canonical name (an alias such as
    ``3b`` works; an unknown layer is NotFound with the closest names) and each uid made
    canonical (``iv1/3b:379`` -> ``iv1/mixed3b:379``)."""
    c = as_units(selected)
    if c.uids:
        c = dataclasses.replace(c, uids=tuple(aliases.alias_free_uids(store, c.uids)))
    model = c.model or (names.parse_neuron_uid(c.uids[0])[0] if c.uids else None)
    exact = [layer for layer in c.layers if not is_pattern(layer)]
    if model is None or not exact:
        return c
    resolved = aliases.resolve_layers(store, model, exact)
    return dataclasses.replace(c, layers=tuple(resolved) + tuple(x for x in c.layers if is_pattern(x)))


# -- units and adjacency --------------------------------------------------------------------------
def units(store: Store, criteria: UnitsLike, limit: int = DEFAULT_LIMIT,
          timeout: float | None = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """The neurons ``criteria`` selects, by model, layer and channel: ``uid``, ``model``,
    ``layer``, ``channel``, ``branch``, ``orientation``, ``selectivity`` (None where unset)."""
    limit = _check_limit(limit)
    text, params = where(_canonical(store, criteria), "n", "u")
    rows = _Budget(timeout).read(store, cypher.units_query(text), limit=limit + 1, **params)
    return _capped([_unit(row["unit"]) for row in rows], limit, "units")[0]


def adjacency(store: Store, sources: UnitsLike, targets: UnitsLike, kind: str = "direct", min_rel: float = 0.0,
              min_abs: float = 0.0, sign: str | None = None, kernels: bool = False, limit: int = DEFAULT_LIMIT,
              timeout: float | None = DEFAULT_TIMEOUT) -> Adjacency:
    """Edges of ``kind`` from the ``sources`` units to the ``targets`` units, as three tables.

    Keeps edges with |sum| >= ``min_abs`` and |rel_in| >= ``min_rel`` (a fraction of the target's
    strongest input of that kind, over all its inputs, not only the sources), of one ``sign``
    ("+", "-") when given; strongest |sum| first. ``kernels`` adds each kernel as a (kh, kw) array.
    """
    rel = names.rel_type(kind)
    limit = _check_limit(limit)
    source_text, source_params = where(_canonical(store, sources), "a", "s")
    target_text, target_params = where(_canonical(store, targets), "b", "t")
    budget = _Budget(timeout)
    row = budget.read(store, cypher.adjacency_query(rel, source_text, target_text, kernels),
                      min_rel=_fraction("min_rel", min_rel), min_abs=checks.real("min_abs", min_abs, 0.0),
                      sign=_sign(sign), limit=limit + 1, **source_params, **target_params)[0]
    columns = ("source", "target", "sum", "l2", "rel_in", "rel_out")
    edges = [dict(zip(columns, values)) for values in zip(*(row[c] for c in columns), strict=True)]
    if kernels:
        arrays = _kernel_arrays(row["kernel"], row["kh"], row["kw"])
        for edge, kernel, kh, kw in zip(edges, arrays, row["kh"], row["kw"], strict=True):
            edge["kernel"], edge["kh"], edge["kw"] = kernel, kh, kw
    edges, truncated = _capped(edges, limit, "adjacency")
    by_uid = {unit["uid"]: _unit(unit) for unit in row["source_units"] + row["target_units"]}
    sources, targets = ([by_uid[u] for u in sorted({e[side] for e in edges}, key=names.parse_neuron_uid)]
                        for side in ("source", "target"))
    return Adjacency(sources, targets, edges, kind, truncated)


# -- common partners and similar units ------------------------------------------------------------
def common_inputs(store: Store, units: UnitsLike, min_rel: float = 0.0, kind: str = "direct", sign: str | None = None,
                  min_shared: int | None = None, limit: int = DEFAULT_LIMIT,
                  timeout: float | None = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """Neurons that feed at least ``min_shared`` (default: all) of ``units``, each edge at least
    ``min_rel`` of that unit's strongest input. One row per partner: its unit columns, ``shared``
    (how many of the units it feeds), ``strength`` (the sum of |rel_in| over them) and ``rel_in``
    and ``sum`` (unit uid -> value); most shared, then strongest, first."""
    return _common(store, units, "inputs", min_rel, kind, sign, min_shared, limit, timeout)


def common_outputs(store: Store, units: UnitsLike, min_rel: float = 0.0, kind: str = "direct",
                   sign: str | None = None, min_shared: int | None = None, limit: int = DEFAULT_LIMIT,
                   timeout: float | None = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """Neurons fed by at least ``min_shared`` (default: all) of ``units``, each edge at least
    ``min_rel`` of that unit's strongest output; rows as :func:`common_inputs` with ``rel_out``."""
    return _common(store, units, "outputs", min_rel, kind, sign, min_shared, limit, timeout)


def _common(store: Store, selected: UnitsLike, side: str, min_rel: float, kind: str, sign: str | None,
            min_shared: int | None, limit: int, timeout: float | None) -> list[dict[str, Any]]:
    rel = names.rel_type(kind)
    limit = _check_limit(limit)
    min_shared = None if min_shared is None else checks.whole("min_shared", min_shared, 1)
    text, params = where(_canonical(store, selected), "u", "u")
    rows = _Budget(timeout).read(store, cypher.common_query(rel, text, side), min_rel=_fraction("min_rel", min_rel),
                                 sign=_sign(sign), min_shared=min_shared,
                                 limit=limit + 1, **params)
    column = "rel_in" if side == "inputs" else "rel_out"
    table = [{**_unit(row["unit"]), "shared": len(row["links"]), "strength": row["strength"],
              column: {link["unit"]: link["rel"] for link in row["links"]},
              "sum": {link["unit"]: link["sum"] for link in row["links"]}} for row in rows]
    return _capped(table, limit, f"common_{side}")[0]


def similar_units(store: Store, unit: str, by: str = "inputs", k: int = 10, kind: str = "auto",
                  timeout: float | None = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """The ``k`` other units of ``unit``'s layer whose weight profile is most like its own.

    ``by="inputs"``: the cosine between the units' input vectors (edge ``sum`` per input
    partner; partners aligned by identity, a missing edge counts 0); ``"outputs"`` the same over
    output partners; ``"kernels"``: the cosine between whole input kernels over aligned partners
    (so spatial structure counts, as it does when mirror pairs and rotated families are spotted by
    eye; a partner's kernels of different shapes are compared centred on each other). ``kind="auto"``:
    expanded weights where the layer has them, else direct. Rows: unit columns plus ``cosine``
    and ``partners`` (how many partners the unit has), most similar first, ties by uid.
    The layer's profiles are read once and kept in this process (:mod:`.profiles`): later calls
    on the same layer compare in memory.
    """
    if by not in SIMILARITY:
        raise InvalidInput(f"by must be one of {', '.join(SIMILARITY)}, not {by!r}")
    uid = _uid(store, unit)
    k = _check_limit(k, "k")
    side, kernels = SIMILARITY[by]
    kind = resolve_kind(store, [uid], kind, "in" if side == "inputs" else "out")
    rel = names.rel_type(kind)
    budget = _Budget(timeout)
    found = budget.read(store, cypher.unit_profile_size(rel, side), uid=uid)
    if not found:
        raise NotFound(f"no neuron {uid!r} in the graph")
    info = found[0]
    nothing = InvalidInput(f"{uid} has no {kind} {side} with non-zero weight: nothing to compare "
                           "(try another kind or by)")
    if (info["channels"] or 0) * info["partners"] * (info["cells"] if kernels else 1) * 8 <= profiles.ENTRY_BYTES:
        layer = profiles.layer_profiles(lambda query, **params: budget.read(store, query, **params),
                                        (store.uri, store.database), info["model"], info["completed"],
                                        info["layer"], rel, side, kernels)
        if not layer.has_profile(uid):
            raise nothing
        return [{**_unit(row), "cosine": cosine, "partners": partners}
                for row, cosine, partners in layer.most_similar(uid, k)]
    # a layer too large to hold: one pass over its edges in the server (there a partner's kernels
    # of different shapes add nothing to the dot product)
    rows = budget.read(store, cypher.profile_query(rel, side), uid=uid)
    value = "kernel" if kernels else "sum"
    profile = {row["partner"]: row[value] for row in rows if row["partner"] is not None}
    norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(v, dtype=np.float64))) for v in profile.values())))
    if norm == 0:
        raise nothing
    found = budget.read(store, cypher.similar_query(rel, side, kernels), uid=uid, model=info["model"],
                        layer=info["layer"], profile=profile, norm=norm, limit=k)
    return [{**_unit(row["unit"]), "cosine": row["cosine"], "partners": row["partners"]} for row in found]


NEIGHBOUR_SIDES = ("inputs", "outputs")


def neighbours(store: Store, unit: str, side: str = "inputs", k: int | None = 10, min_rel: float = 0.0,
               kind: str = "direct", sign: str | None = None, detail: bool = False,
               timeout: float | None = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """One neuron's strongest partners: its inputs (``side="inputs"``) or outputs, by |sum|,
    strongest first, the ``k`` first (None: all), each carrying at least ``min_rel`` of the
    neuron's strongest input (the stored ``rel_in``) or output (``rel_out``). Rows: ``uid``,
    ``sum``, ``l2``, ``rel_in``, ``rel_out`` (stored, unsigned), and with ``detail`` the edge's
    ``kernel`` (flat), ``kh``, ``kw`` and the partner's ``layer``, ``channel`` and ``featurevis``.
    One indexed query for a canonical uid, partners or none; an alias is resolved first."""
    if side not in NEIGHBOUR_SIDES:
        raise InvalidInput(f"side must be one of {', '.join(NEIGHBOUR_SIDES)}, not {side!r}")
    params = {"limit": _check_limit(k, "k") if k is not None else 2**31 - 1, "min_rel": _fraction("min_rel", min_rel),
              "sign": _sign(sign)}
    budget = _Budget(timeout)
    if isinstance(unit, str) and kind != "auto":  # one round trip when the uid is canonical
        found = budget.read(store, cypher.neighbours_query(names.rel_type(kind), side, detail), uid=unit, **params)
        if found:
            return _partners(found)
    uid = _uid(store, unit)  # an alias, or no neuron at all (the error)
    rel = names.rel_type(resolve_kind(store, [uid], kind, "in" if side == "inputs" else "out"))
    return _partners(budget.read(store, cypher.neighbours_query(rel, side, detail), uid=uid, **params))


def _partners(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`cypher.neighbours_query`'s rows, without its row of nulls for a neuron with no partners."""
    return [] if len(rows) == 1 and rows[0]["uid"] is None else rows


# -- circuits and paths ---------------------------------------------------------------------------
