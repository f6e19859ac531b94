"""What the graph says about one model: its Model node, its layers, one layer's neurons, tuning
and feature-visualisation links, and its motifs, as plain dicts and lists."""

from __future__ import annotations

import json
from typing import Any

from circuitatlas import names
from circuitatlas.errors import NotFound
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["model_meta", "input_size", "model_layers", "layer_info", "layer_neurons", "neuron", "layer_tuning",
           "featurevis_keys", "featurevis_paths", "list_motifs"]


def model_meta(store: Store, model: str) -> dict[str, Any]:
    """The Model node's properties; NotFound for an unknown id."""
    rows = store.read(cypher.MODEL_META, model=model)
    if not rows:
        raise NotFound(f"no model {model!r} in the graph (see `circuitatlas models`)")
    return rows[0]["meta"]


def input_size(meta: dict[str, Any], default: int = 64) -> int:
    """The image side (px) the model was traced at, for stimuli and renders."""
    return int((meta.get("input_size") or [3, default, default])[1])


def model_layers(store: Store, model: str, observed: bool = False) -> list[dict[str, Any]]:
    """Layers in topological order (``name``, ``kind``, ``order``, ``channels``, ``shape``,
    ``observed``, ``featurevis_sheet``, ``aliases``); only observation layers with ``observed``."""
    model_meta(store, model)
    return store.read(cypher.MODEL_LAYERS, model=model, observed=observed)


def layer_info(store: Store, model: str, layer: str) -> dict[str, Any]:
    """One layer's ``channels``, ``kind`` and ``shape``; NotFound when the model has no such layer."""
    rows = store.read(cypher.LAYER_INFO, uid=names.layer_uid(model, layer))
    if not rows:
        raise NotFound(f"no layer {layer!r} in model {model!r} (see `circuitatlas layers {model}`)")
    return rows[0]


def layer_neurons(store: Store, model: str, layer: str) -> list[dict[str, Any]]:
    """``channel``, ``uid`` and ``branch`` of each neuron of a layer, by channel."""
    return store.read(cypher.LAYER_NEURONS, model=model, layer=layer)


def neuron(store: Store, uid: str) -> dict[str, Any]:
    """One neuron's properties (``uid``, ``layer``, ``channel``, ``branch``, annotations); NotFound
    when there is none."""
    rows = store.read(cypher.NEURON_PROPERTIES, uid=uid)
    if not rows:
        raise NotFound(f"no neuron {uid!r} in the graph")
    return rows[0]["props"]


def layer_tuning(store: Store, model: str, layer: str) -> list[dict[str, Any]]:
    """Stored tuning of each neuron (``channel``, ``orientation``, ``selectivity``, ``tuning``,
    ``angles``; None where not measured), by channel."""
    return store.read(cypher.LAYER_TUNING, model=model, layer=layer)


def layer_battery(store: Store, model: str, layer: str) -> tuple[dict, dict[int, dict]] | None:
    """A layer's stored probe battery (its part, and each channel's responses per probe), None
    when it was not measured on every neuron."""
    rows = store.read(cypher.LAYER_BATTERY, uid=names.layer_uid(model, layer))
    if not rows or rows[0]["battery"] is None:
        return None
    channels = {int(c): json.loads(r) for c, r in rows[0]["channels"] if c is not None and r is not None}
    if len(channels) != len([c for c, _ in rows[0]["channels"] if c is not None]):
        return None
    return json.loads(rows[0]["battery"]), channels


def motif_runs(store: Store, model: str) -> list[dict[str, Any]]:
    """Detector runs recorded for a model, newest first, each with its diagnostics."""
    return [{**r, "diagnostics": json.loads(r["diagnostics"] or "{}")}
            for r in store.read(cypher.MOTIF_RUNS, model=model)]


def featurevis_keys(store: Store, model: str, layer: str) -> dict[int, str | None]:
    """channel -> the key of the render linked to that neuron (None where none is)."""
    return {row["c"]: row["k"] for row in store.read(cypher.FEATUREVIS_KEYS, model=model, layer=layer)}


def featurevis_paths(store: Store, model: str, layer: str) -> dict[int, str]:
    """channel -> the feature-visualisation PNG linked to that neuron (as stored: check it before
    use), for the neurons of a layer that have one, by channel."""
    return {row["c"]: row["path"] for row in store.read(cypher.FEATUREVIS_PATHS, model=model, layer=layer)}


def list_motifs(store: Store, model: str) -> list[dict[str, Any]]:
    """Stored motifs of a model with members, roles, scores and p-values; NotFound for an unknown id
    (a model without motifs has none: an empty list)."""
    model_meta(store, model)
    return store.read(cypher.LIST_MOTIFS, model=model)
