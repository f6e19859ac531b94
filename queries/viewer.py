"""What the viewer's pages read that no other helper does: a model's analyses and branches, a
layer's units with their clusters and motifs, the RGB kernels of a layer that reads the image, a
neuron's memberships, one motif and one SVD analysis. Plain dicts and lists, one indexed query
each; NotFound where the thing asked for is not in the graph."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from circuitatlas.errors import NotFound
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["model_analyses", "model_branches", "layer_units", "image_kernels", "memberships", "motif",
           "svd_analysis"]


def model_analyses(store: Store, model: str) -> list[dict[str, Any]]:
    """The SVD analyses stored for a model: ``analysis``, ``src``, ``dst``, ``k``, ``method``, ``sides``."""
    return store.read(cypher.MODEL_ANALYSES, model=model)


def model_branches(store: Store, model: str) -> dict[str, list[dict[str, Any]]]:
    """layer -> its branches (``branch``, ``units``) for the layers whose neurons carry one."""
    return {row["layer"]: row["branches"] for row in store.read(cypher.MODEL_BRANCHES, model=model)}


def layer_units(store: Store, model: str, layer: str) -> list[dict[str, Any]]:
    """Every neuron of a layer by channel: ``channel``, ``uid``, ``branch``, ``orientation``,
    ``selectivity``, ``featurevis`` (path as stored), ``activation``, ``clusters`` (analysis, side,
    index) and ``motifs`` (uid, kind, role)."""
    return store.read_with_timeout(cypher.LAYER_UNITS, None, model=model, layer=layer)[0]["units"]


def image_kernels(store: Store, model: str, layer: str) -> dict[int, np.ndarray]:
    """channel -> its (kh, kw, 3) kernel over the image's colour channels, for a layer that reads
    the input directly (empty for any other layer)."""
    kernels: dict[int, np.ndarray] = {}
    for row in store.read(cypher.LAYER_IMAGE_KERNELS, model=model, layer=layer):
        if row["rgb"] > 2:
            continue
        rgb = kernels.setdefault(row["channel"], np.zeros((row["kh"], row["kw"], 3), dtype=np.float32))
        if rgb.shape[:2] == (row["kh"], row["kw"]):
            rgb[..., row["rgb"]] = np.asarray(row["kernel"], dtype=np.float32).reshape(row["kh"], row["kw"])
    return kernels


def memberships(store: Store, uid: str) -> dict[str, list[dict[str, Any]]]:
    """A neuron's ``motifs`` (uid, kind, role, score, p_value, layers, fit, orientation),
    ``clusters`` (analysis, side, index, size, src_layer, dst_layer) and ``analogues`` in other
    models (uid, model, layer, channel, featurevis, score, p_value, mutual, analysis)."""
    rows = store.read(cypher.NEURON_MEMBERSHIPS, uid=uid)
    return rows[0] if rows else {"motifs": [], "clusters": [], "analogues": []}


def motif(store: Store, uid: str) -> dict[str, Any]:
    """One motif's properties (``params`` decoded) and its ``members`` (uid, layer, channel,
    featurevis, role, orientation, fit, fit_without_strongest, fit_p), by role and orientation."""
    rows = store.read(cypher.MOTIF, uid=uid)
    if not rows:
        raise NotFound(f"no motif {uid!r} in the graph")
    found = dict(rows[0]["motif"])
    found["params"] = _decoded(found.get("params"))
    return {**found, "members": rows[0]["members"]}


def svd_analysis(store: Store, model: str, analysis: str) -> list[dict[str, Any]]:
    """The clusters of one stored SVD analysis, input side first: ``side``, ``index``, ``size``,
    ``k``, ``src``, ``dst``, ``params`` (decoded) and ``members`` (uid, layer, channel, branch,
    featurevis, coords)."""
    rows = store.read(cypher.SVD_ANALYSIS, model=model, analysis=analysis)
    if not rows:
        raise NotFound(f"no analysis {analysis!r} of model {model!r} in the graph")
    return [{**row, "params": _decoded(row["params"])} for row in rows]


def _decoded(text: Any) -> Any:
    """A JSON property as data (the text itself when it is not JSON)."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
