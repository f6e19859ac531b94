"""Cross-model matches in the graph: write a comparison (replacing an earlier run of the same
layer pair), and read a unit's analogues, layer-to-layer similarity and family alignments."""

from __future__ import annotations

import json
from typing import Any, Sequence

from circuitatlas import names
from circuitatlas.errors import NotFound
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["comparison_key", "replace_comparison", "analogues", "layer_similarity", "family_analogues"]


def comparison_key(model_a: str, layer_a: str, model_b: str, layer_b: str) -> str:
    """The ``analysis`` id of one layer pair's comparison: ``<A>/<layer>~<B>/<layer>``."""
    return f"{names.layer_uid(model_a, layer_a)}~{names.layer_uid(model_b, layer_b)}"


def replace_comparison(store: Store, model_a: str, layer_a: str, model_b: str, layer_b: str,
                       similar: dict[str, Any], pairs: Sequence[dict[str, Any]],
                       families: Sequence[dict[str, Any]]) -> str:
    """In one transaction: drop the pair's earlier ANALOGOUS and SIMILAR edges, then write the
    ``(:Layer)-[:SIMILAR]->(:Layer)`` edge (``similar``'s properties), one
    ``(:Neuron)-[:ANALOGOUS]->(:Neuron)`` per pair (``a``, ``b`` uids and ``props``) and one
    ``(:Motif)-[:ANALOGOUS]->(:Motif)`` per family match. Returns the analysis id."""
    key = comparison_key(model_a, layer_a, model_b, layer_b)
    done = store.write_returning(cypher.REPLACE_COMPARISON, layer_a=names.layer_uid(model_a, layer_a),
                                 layer_b=names.layer_uid(model_b, layer_b), analysis=key, similar=similar,
                                 pairs=list(pairs), families=list(families))
    if not done or not done[0]["done"]:  # a layer went away meanwhile (a concurrent drop): nothing was written
        raise NotFound(f"{names.layer_uid(model_a, layer_a)} or {names.layer_uid(model_b, layer_b)} is gone; "
                       "nothing was stored")
    return key


def analogues(store: Store, uid: str) -> list[dict[str, Any]]:
    """The units stored as ANALOGOUS to neuron ``uid`` (either direction), best score first."""
    return store.read(cypher.NEURON_ANALOGUES, uid=uid)


def layer_similarity(store: Store, models: Sequence[str]) -> list[dict[str, Any]]:
    """Every SIMILAR edge between layers of ``models`` (cka, its permutation p-value, the
    random-init baseline, the number of stored unit matches)."""
    return store.read(cypher.LAYER_SIMILARITY, models=list(models))


def family_analogues(store: Store, models: Sequence[str]) -> list[dict[str, Any]]:
    """Every family-to-family match between motifs of ``models``, its pairs decoded."""
    rows = store.read(cypher.FAMILY_ANALOGUES, models=list(models))
    for row in rows:
        if isinstance(row["match"].get("pairs"), str):
            row["match"]["pairs"] = json.loads(row["match"]["pairs"])
    return rows
