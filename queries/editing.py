"""Edits in the graph: select edges or units with a user's Cypher predicate (read-only, checked
to stay an expression), store an edit with what it touches, read it back, store its effect and a
motif's faithfulness."""

from __future__ import annotations

import json
from typing import Any, Sequence

from circuitatlas import names
from circuitatlas.errors import InvalidInput, NotFound
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["check_predicate", "check_name_free", "edges_where", "units_where", "create_edit", "read_edit", "list_edits",
           "store_effect", "delete_edit", "store_faithfulness", "neuron_edits", "summary_lines", "PREDICATE_TIMEOUT"]

PREDICATE_TIMEOUT = 60.0  # seconds for one selection query
MAX_SELECTED = 200_000  # rows one predicate may select: an edit is one transaction
_OPEN, _CLOSE = "([{", ")]}"


def check_predicate(predicate: str) -> str:
    """``predicate`` when it is one Cypher expression that cannot leave the parentheses it is put
    in (brackets balanced outside string literals, no comments or ``;``); InvalidInput otherwise.
    It then runs in a read-only transaction, so a write is refused by the server too."""
    if not isinstance(predicate, str) or not predicate.strip():
        raise InvalidInput("the predicate is empty: give a Cypher expression over the pattern's variables")
    depth, quote, i = [], None, 0
    while i < len(predicate):
        ch = predicate[i]
        if quote == "`":  # a quoted name: only a doubled backtick escapes
            if ch == "`":
                if predicate.startswith("``", i):
                    i += 1
                else:
                    quote = None
        elif quote:  # a string: a backslash escapes the next character
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif predicate.startswith(("//", "/*"), i) or ch == ";":
            raise InvalidInput("the predicate may not hold comments or ';': give one Cypher expression")
        elif ch in _OPEN:
            depth.append(_CLOSE[_OPEN.index(ch)])
        elif ch in _CLOSE:
            if not depth or depth.pop() != ch:
                raise InvalidInput(f"the predicate's brackets do not balance at {predicate[:i + 1]!r}: "
                                   "give one Cypher expression")
        i += 1
    if quote or depth:
        raise InvalidInput("the predicate has an unclosed quote or bracket: give one Cypher expression")
    return predicate


def _select(store: Store, template: str, model: str, predicate: str, params: dict[str, Any]) -> list[dict]:
    query = template.format(predicate=check_predicate(predicate))
    reserved = sorted(set(params) & {"model"})
    if reserved:
        raise InvalidInput(f"parameter name {reserved[0]!r} is reserved")
    rows = store.query_read_only(query, {**params, "model": model}, limit=MAX_SELECTED + 1, timeout=PREDICATE_TIMEOUT)
    if len(rows) > MAX_SELECTED:
        raise InvalidInput(f"the predicate selects more than {MAX_SELECTED:,} rows; narrow it (an edit is written "
                           "in one transaction)")
    return rows


def edges_where(store: Store, model: str, predicate: str, **params: Any) -> list[dict[str, Any]]:
    """The direct edges ``(a)-[w:WEIGHT]->(b)`` of ``model`` for which ``predicate`` holds
    (``a``, ``w``, ``b`` and ``params`` in scope): src/dst layer and channel per row."""
    return _select(store, cypher.EDGES_WHERE, model, predicate, params)


def units_where(store: Store, model: str, predicate: str, **params: Any) -> list[dict[str, Any]]:
    """The neurons ``n`` of ``model`` for which ``predicate`` holds: layer and channel per row."""
    return _select(store, cypher.UNITS_WHERE, model, predicate, params)


def check_name_free(store: Store, model: str, name: str) -> str:
    """The uid edit ``name`` of ``model`` would have; InvalidInput when the model has it already."""
    uid = names.edit_uid(model, name)
    if store.read(cypher.EDIT_EXISTS, uid=uid):
        raise InvalidInput(f"model {model!r} already has an edit {name!r}; delete it first or choose another name")
    return uid


def create_edit(store: Store, model: str, name: str, props: dict[str, Any], ablations: Sequence[dict],
                edges: Sequence[dict], replacements: Sequence[dict]) -> str:
    """Write ``(:Edit)`` and its ``ABLATES`` / ``EDITS_EDGE`` / ``REPLACES`` relationships in one
    transaction; InvalidInput when the name is taken (checked again here: the caller's work
    between its own check and this write may take a while; nothing written)."""
    uid = check_name_free(store, model, name)
    try:
        rows = store.write_returning(cypher.CREATE_EDIT, uid=uid, name=name, model=model, props=props,
                                     ablations=list(ablations), edges=list(edges), replacements=list(replacements))
    except Exception as exc:  # the uniqueness constraint, when another writer took the name meanwhile
        if "already exists" in str(exc) or "ConstraintValidation" in type(exc).__name__:
            raise InvalidInput(f"model {model!r} already has an edit {name!r}") from None
        raise
    if not rows:
        raise NotFound(f"no model {model!r} in the graph; nothing was stored")
    expected = len(ablations) + len(edges) + len(replacements)
    if rows[0]["touches"] != expected:  # a neuron went away meanwhile (a concurrent drop)
        store.write(cypher.DELETE_EDIT, uid=uid)
        raise NotFound(f"some neurons of edit {name!r} are gone from {model!r}; nothing was stored")
    return uid


def read_edit(store: Store, model: str, name: str) -> dict[str, Any]:
    """The edit's properties and what it touches (``ablations``, ``edges``, ``replacements``)."""
    rows = store.read(cypher.EDIT, uid=names.edit_uid(model, name))
    if not rows:
        raise NotFound(f"model {model!r} has no edit {name!r} (see `circuitatlas edit list {model}`)")
    return rows[0]


def list_edits(store: Store, model: str) -> list[dict[str, Any]]:
    """Every edit of ``model``: name, description, counts of what it touches, effect summary."""
    rows = store.read(cypher.LIST_EDITS, model=model)
    for row in rows:
        row["effect_summary"] = json.loads(row["effect_summary"]) if row["effect_summary"] else None
    return rows


def store_effect(store: Store, model: str, name: str, effect: dict[str, Any], summary: dict[str, Any]) -> None:
    """Put a measured effect (JSON) and its summary on the edit; NotFound when it is gone."""
    if not store.write_returning(cypher.SET_EDIT_EFFECT, uid=names.edit_uid(model, name), effect=json.dumps(effect),
                                 summary=json.dumps(summary)):
        raise NotFound(f"edit {name!r} of {model!r} is gone; its effect was not stored")


def delete_edit(store: Store, model: str, name: str) -> None:
    """Delete one edit (the weights are never changed by an edit, so nothing else is)."""
    if not store.write_returning(cypher.DELETE_EDIT, uid=names.edit_uid(model, name))[0]["deleted"]:
        raise NotFound(f"model {model!r} has no edit {name!r}")


def store_faithfulness(store: Store, motif_uid: str, faithfulness: float, detail: dict[str, Any]) -> None:
    """``faithfulness`` and its detail (JSON) on a stored motif."""
    if not store.write_returning(cypher.SET_MOTIF_FAITHFULNESS, uid=motif_uid, faithfulness=faithfulness,
                                 detail=json.dumps(detail)):
        raise NotFound(f"no motif {motif_uid!r}")


def neuron_edits(store: Store, uid: str) -> list[dict[str, Any]]:
    """The edits that touch neuron ``uid`` and how."""
    return store.read(cypher.NEURON_EDITS, uid=uid)


def summary_lines(s: dict) -> str:
    """An effect summary in words."""
    classes = ("; the network's output is a map, not classes" if "changed_top1" not in s else
               f"; top-1 class changed on {s['changed_top1']:.1%}" + (
                   f" (random control: {s['changed_top1_control']:.1%})" if "changed_top1_control" in s else ""))
    lines = [f"{s['units']} units touched, {s['images']} images ({s['probe']}){classes}"]
    for key, label in (("accuracy", "accuracy"), ("loss", "loss"), ("echo_mean", "echo"),
                       ("top_mean", "activation on top examples")):
        if key in s:
            spread = s.get(key + "_control_range")
            control = (f" (random controls: mean {s[key + '_control']:.3g}, range {spread[0]:.3g} to "
                       f"{spread[1]:.3g})" if spread else "")
            lines.append(f"{label}: {s[key + '_before']:.3g} -> {s[key]:.3g}{control}")
    return "\n".join(lines)
