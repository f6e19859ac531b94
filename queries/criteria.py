"""Unit criteria: one selector type for neurons, turned into a parameterised Cypher condition in
one place. Every query helper (:mod:`circuitatlas.queries.connectivity`), the CLI and any web
front end build their ``WHERE`` from :func:`where`; values only ever travel as parameters.

>>> c = Units(model="demo", layers=["block1", "block2.*"], channels=[0, 3])
>>> text, params = where(c, "n", "u")
>>> text
'n.model = $u_model AND (n.layer IN $u_layers OR any(x IN $u_layer_patterns WHERE n.layer =~ x)) AND n.channel IN $u_channels'
>>> params["u_layers"], params["u_layer_patterns"], params["u_channels"]
(['block1'], ['block2\\\\..*'], [0, 3])
>>> Units.from_options(model="demo", channels="0,2-4", orientation="330:30").channels
(0, 2, 3, 4)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Iterable

from circuitatlas import checks, names
from circuitatlas.errors import InvalidInput

__all__ = ["Units", "UnitsLike", "as_units", "where", "glob_regex", "is_pattern"]

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,30}")
_GLOB = re.compile(r"[*?]")
_LISTS = ("layers", "kind", "branch", "cluster", "motif", "role", "annotated")  # comma-separated as text


@dataclass(frozen=True)
class Units:
    """Which neurons: every field given must hold (AND); a field with several values matches any.

    ``model``: model id. ``layers``: layer names, or patterns with ``*`` and ``?``
    (``"inception3b.branch*"``). ``channels``: channel numbers. ``kind``: layer kinds
    (``input``, ``conv``, ``linear``, ``block``). ``branch``: the neuron's ``branch``.
    ``cluster``: Cluster uids it belongs to (:func:`circuitatlas.names.cluster_uid`).
    ``motif``: motif kinds (``rotation_equivariance``...) or Motif uids it is a member of, and
    ``role``: its IN_MOTIF role there (either alone works too). ``orientation``: ``(lo, hi)``
    degrees, the preferred orientation's range, counter-clockwise from ``lo`` to ``hi`` (so
    ``(330, 30)`` wraps through 0). ``min_selectivity``: lowest ``orientation_selectivity``.
    ``annotated``: neuron properties that must be present (``featurevis``, ``examples``...).
    ``uids``: explicit neuron uids (looked up by the unique index: the fast path for short lists).
    Needs ``model`` or ``uids``.
    """

    model: str | None = None
    layers: tuple[str, ...] = ()
    channels: tuple[int, ...] = ()
    kind: tuple[str, ...] = ()
    branch: tuple[str, ...] = ()
    cluster: tuple[str, ...] = ()
    motif: tuple[str, ...] = ()
    role: tuple[str, ...] = ()
    orientation: tuple[float, float] | None = None
    min_selectivity: float | None = None
    annotated: tuple[str, ...] = ()
    uids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("layers", "kind", "branch", "cluster", "motif", "role", "annotated", "uids"):
            object.__setattr__(self, name, _strings(name, getattr(self, name)))
        try:
            channels = (self.channels,) if isinstance(self.channels, int) else tuple(self.channels)
            object.__setattr__(self, "channels", tuple(int(c) for c in channels))
        except (TypeError, ValueError):
            raise InvalidInput(f"channels must be integers, not {self.channels!r}") from None
        if self.model is None and not self.uids:
            raise InvalidInput("unit criteria need a model or explicit uids")
        for uid in self.uids:
            try:
                names.parse_neuron_uid(uid)
            except ValueError:
                raise InvalidInput(f"{uid!r} is not a neuron uid '<model>/<layer>:<channel>'") from None
        if self.orientation is not None:
            try:
                lo, hi = (float(x) for x in self.orientation)
            except (TypeError, ValueError):
                raise InvalidInput(f"orientation is a (lo, hi) range in degrees, not {self.orientation!r}") from None
            object.__setattr__(self, "orientation", (checks.real("orientation", lo), checks.real("orientation", hi)))
        if self.min_selectivity is not None:
            try:
                selectivity = float(self.min_selectivity)
            except (TypeError, ValueError):
                raise InvalidInput(f"min_selectivity is a number, not {self.min_selectivity!r}") from None
            # a vector strength: the range of the CLI's --min-selectivity
            object.__setattr__(self, "min_selectivity", checks.real("min_selectivity", selectivity, 0.0, 1.0))
        for key in self.annotated:
            if not _IDENTIFIER.fullmatch(key):
                raise InvalidInput(f"annotations are neuron property names, not {key!r}")

    @classmethod
    def from_options(cls, **options: Any) -> "Units":
        """Criteria from text options as a CLI or a query string gives them: lists comma-separated
        (``layers="a,b*"``), channels with ranges (``"0,4-7"``), ``orientation="330:30"``;
        ``uids`` stays a sequence (a model id may hold a comma). Empty values are left out."""
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise InvalidInput(f"unknown unit criteria {sorted(unknown)}; known: {', '.join(sorted(known))}")
        parsed: dict[str, Any] = {}
        for key, value in options.items():
            if value is None or value == "" or value == ():
                continue
            if key == "channels" and isinstance(value, str):
                value = _channel_list(value)
            elif key == "orientation" and isinstance(value, str):
                lo, sep, hi = value.partition(":")
                if not sep:
                    raise InvalidInput(f"orientation is 'lo:hi' in degrees, not {value!r}")
                value = (lo, hi)
            elif key in _LISTS and isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            parsed[key] = value
        return cls(**parsed)


UnitsLike = Units | str | Iterable[str]


def as_units(value: UnitsLike) -> Units:
    """A :class:`Units`, one neuron uid, or a list of uids, as :class:`Units`."""
    if isinstance(value, Units):
        return value
    if isinstance(value, str):
        return Units(uids=(value,))
    return Units(uids=tuple(value))


def is_pattern(layer: str) -> bool:
    """Whether a layer criterion is a pattern (holds ``*`` or ``?``) rather than a name."""
    return bool(_GLOB.search(layer))


def glob_regex(pattern: str) -> str:
    """A layer pattern (``*`` any run of characters, ``?`` one) as a whole-name regular expression.

    >>> glob_regex("inception3b.branch?.*")
    'inception3b\\\\.branch.\\\\..*'
    """
    return "".join(".*" if part == "*" else "." if part == "?" else re.escape(part)
                   for part in re.split(r"([*?])", pattern) if part)


def where(criteria: Units, var: str = "n", prefix: str = "u") -> tuple[str, dict[str, Any]]:
    """``(condition, params)``: a Cypher boolean expression over the neuron variable ``var`` that
    holds for exactly the neurons ``criteria`` selects (``"true"`` when nothing is asked), and its
    parameters, named ``<prefix>_...`` so that several criteria can share one query.

    ``var`` and ``prefix`` are the caller's own identifiers (checked); only they and this
    function's fixed text enter the query; every value is a parameter. Subquery variables are
    prefixed too, so they never capture a variable of the surrounding query.
    """
    for name in (var, prefix):
        if not _IDENTIFIER.fullmatch(name):
            raise InvalidInput(f"{name!r} is not a Cypher identifier")
    c, v, p = criteria, var, prefix
    parts: list[str] = []
    params: dict[str, Any] = {}

    def param(name: str, value: Any) -> str:
        params[f"{p}_{name}"] = value
        return f"${p}_{name}"

    if c.uids:
        parts.append(f"{v}.uid IN {param('uids', list(c.uids))}")
    if c.model is not None:
        parts.append(f"{v}.model = {param('model', c.model)}")
    if c.layers:
        exact = [x for x in c.layers if not is_pattern(x)]
        patterns = [glob_regex(x) for x in c.layers if is_pattern(x)]
        options = []
        if exact:
            options.append(f"{v}.layer IN {param('layers', exact)}")
        if patterns:
            options.append(f"any(x IN {param('layer_patterns', patterns)} WHERE {v}.layer =~ x)")
        parts.append(options[0] if len(options) == 1 else f"({' OR '.join(options)})")
    if c.channels:
        parts.append(f"{v}.channel IN {param('channels', list(c.channels))}")
    if c.branch:
        parts.append(f"{v}.branch IN {param('branches', list(c.branch))}")
    if c.kind:
        parts.append(f"EXISTS {{ MATCH ({p}_layer:Layer)-[:HAS_NEURON]->({v}) "
                     f"WHERE {p}_layer.kind IN {param('kinds', list(c.kind))} }}")
    if c.cluster:
        parts.append(f"EXISTS {{ MATCH ({v})-[:IN_CLUSTER]->({p}_cluster:Cluster) "
                     f"WHERE {p}_cluster.uid IN {param('clusters', list(c.cluster))} }}")
    if c.motif or c.role:
        conditions = []
        if c.motif:
            kinds = [m for m in c.motif if m in names.MOTIF_KINDS]
            conditions.append(f"({p}_motif.kind IN {param('motif_kinds', kinds)} "
                              f"OR {p}_motif.uid IN {param('motifs', [m for m in c.motif if m not in kinds])})")
        if c.role:
            conditions.append(f"{p}_member.role IN {param('roles', list(c.role))}")
        parts.append(f"EXISTS {{ MATCH ({v})-[{p}_member:IN_MOTIF]->({p}_motif:Motif) "
                     f"WHERE {' AND '.join(conditions)} }}")
    if c.orientation is not None:
        lo, hi = c.orientation
        width = hi - lo if hi - lo >= 360 else (hi - lo) % 360
        if width >= 360:
            parts.append(f"{v}.orientation IS NOT NULL")
        else:  # counter-clockwise distance from lo, in [0, 360)
            parts.append(f"(({v}.orientation - {param('orientation_lo', lo)}) % 360.0 + 360.0) % 360.0 "
                         f"<= {param('orientation_width', width)}")
    if c.min_selectivity is not None:
        parts.append(f"{v}.orientation_selectivity >= {param('min_selectivity', c.min_selectivity)}")
    if c.annotated:
        parts.append(f"all(k IN {param('annotated', list(c.annotated))} WHERE {v}[k] IS NOT NULL)")
    return (" AND ".join(parts) or "true"), params


def _strings(name: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise InvalidInput(f"{name} must be a string or a list of strings, not {value!r}") from None
    if not all(isinstance(x, str) for x in items):
        raise InvalidInput(f"{name} must be strings, not {value!r}")
    return items


def _channel_list(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        first, sep, last = part.partition("-")
        try:
            lo, hi = (int(first), int(last)) if sep else (int(part), int(part))
        except ValueError:
            raise InvalidInput(f"channels are numbers and ranges like '0,4-7', not {text!r}") from None
        if hi < lo:
            raise InvalidInput(f"channel range {part!r} runs backwards")
        out += list(range(lo, hi + 1))
    if not out:
        raise InvalidInput(f"no channels in {text!r}")
    return tuple(out)
