"""The names a user may give a layer or a unit, resolved to the canonical ones.

A layer's canonical name is its module path (``mixed3b``, ``mixed3b.5x5``); an architecture may
declare other names for its layers (InceptionV1: ``3b``, ``mixed3b_5x5``, Lucent's
``mixed3b_5x5_pre_relu_conv``...), which ingest stores as the ``aliases`` list of each Layer
node. Every job and API call that takes a layer or a unit resolves it here first, so a
canonical name and each of its aliases work alike everywhere; uids stay canonical.
"""

from __future__ import annotations

import copy
import difflib
from typing import Iterable, Mapping, Sequence

from circuitatlas import names
from circuitatlas.errors import InvalidInput, NotFound
from circuitatlas.queries import cypher
from circuitatlas.queries.models import layer_info, model_meta
from circuitatlas.queries.patterns import validate
from circuitatlas.store import Store

__all__ = ["store_aliases", "resolve_layer", "resolve_layers", "resolve_unit", "alias_free_uids", "resolve_pattern"]


def store_aliases(store: Store, model: str, aliases: Mapping[str, Sequence[str]]) -> None:
    """Set ``aliases`` (canonical layer name -> other names) on the model's Layer nodes; names of
    layers the model does not have are skipped."""
    rows = [{"uid": names.layer_uid(model, layer), "aliases": list(other)} for layer, other in aliases.items() if other]
    if rows:
        store.write(cypher.SET_LAYER_ALIASES, rows=rows)


def _alias_of(store: Store, model: str, name: str) -> str | None:
    """The canonical name of the layer that ``name`` is an alias of, or None."""
    found = store.read(cypher.LAYER_BY_ALIAS, model=model, alias=name)
    return found[0]["name"] if found else None


def resolve_layer(store: Store, model: str, name: str) -> str:
    """The canonical name of layer ``name`` (itself, or the layer it is an alias of); NotFound
    with the closest names when the model has no such layer."""
    if store.read(cypher.LAYER_INFO, uid=names.layer_uid(model, name)):
        return name
    canonical = _alias_of(store, model, name)
    if canonical is not None:
        return canonical
    model_meta(store, model)  # an unknown model is reported as such
    known = [n for row in store.read(cypher.LAYER_NAMES, model=model) for n in (row["name"], *row["aliases"])]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise NotFound(f"no layer {name!r} in model {model!r} ({hint}see `circuitatlas layers {model}`)")


def resolve_layers(store: Store, model: str, layers: Iterable[str]) -> list[str]:
    """:func:`resolve_layer` of each name, in order."""
    return [resolve_layer(store, model, layer) for layer in layers]


def resolve_unit(store: Store, model: str, unit: str) -> str:
    """The neuron uid of ``unit``: ``"<layer>:<channel>"`` with any name of the layer
    (``3b:379``, ``mixed3b:379``) or a whole uid of this model; InvalidInput for a malformed
    unit or a channel the layer does not have."""
    try:
        if "/" in unit:
            owner, layer, channel = names.parse_neuron_uid(unit)
            if owner != model:
                raise InvalidInput(f"{unit!r} is a neuron of model {owner!r}, not of {model!r}")
        else:
            layer, channel = names.parse_unit(unit)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    found = store.read(cypher.LAYER_INFO, uid=names.layer_uid(model, layer))  # a canonical name: one read
    if found:
        channels = found[0]["channels"]
    else:
        layer = resolve_layer(store, model, layer)
        channels = layer_info(store, model, layer)["channels"]
    if not 0 <= channel < channels:
        raise InvalidInput(f"channel {channel} is not in {layer} ({channels} channels)")
    return names.neuron_uid(model, layer, channel)


def alias_free_uids(store: Store, uids: Sequence[str]) -> list[str]:
    """Each uid with its layer replaced by the canonical name when it is an alias; otherwise as
    it is (an explicit uid list selects what exists: an unknown uid matches nothing). One read
    for all of them."""
    parsed = [names.parse_neuron_uid(uid) for uid in uids]
    pairs = sorted({(model, layer) for model, layer, _ in parsed})
    found = store.read(cypher.LAYERS_BY_ALIAS, pairs=[{"model": m, "layer": layer} for m, layer in pairs])
    canonical = {(row["model"], row["alias"]): row["name"] for row in found}
    return [uid if (model, layer) not in canonical else names.neuron_uid(model, canonical[model, layer], channel)
            for uid, (model, layer, channel) in zip(uids, parsed)]


def resolve_pattern(store: Store, model: str, pattern: dict | str) -> dict | str:
    """A search pattern with the ``layer`` of each of its nodes that is an alias replaced by its
    canonical name; other names stay as they are (a pattern filters on ``Neuron.layer``, and an
    unknown layer matches nothing, as before aliases); a pattern name as it is. A malformed
    pattern is refused first (InvalidInput), before any of it is sent."""
    if not isinstance(pattern, dict):
        return pattern
    validate(pattern)
    resolved = copy.deepcopy(pattern)
    for spec in resolved["nodes"].values():
        if spec.get("layer") is not None:
            spec["layer"] = _alias_of(store, model, spec["layer"]) or spec["layer"]
    return resolved
