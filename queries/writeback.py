"""Analysis results written back onto the graph: every job's writes go through here, each
replacing an earlier run of the same analysis."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

import numpy as np

from circuitatlas import names
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["svd_analysis_key", "write_clusters", "set_neuron_properties", "set_layer_sheet", "replace_motifs"]


def svd_analysis_key(src: str, dst: str, kind: str, k: int | None) -> str:
    return f"svd:{kind}:{src}->{dst}:k={'auto' if k is None else k}"


def write_clusters(
    store: Store,
    model: str,
    analysis: str,
    method: str,
    src: str,
    dst: str,
    k: int,
    sides: dict[str, tuple[list[str], np.ndarray, np.ndarray]],
    params: dict,
) -> None:
    """Replace analysis ``analysis``: its Cluster nodes, IN_CLUSTER edges and neuron properties.

    ``sides`` maps "input"/"output" to (neuron uids, cluster labels, coordinates (n, d)).
    """
    store.write(cypher.DELETE_ANALYSIS, model=model, analysis=analysis)
    cluster_rows = []
    for side, (_, labels, _) in sides.items():
        for index in sorted(set(labels.tolist())):
            cluster_rows.append({"uid": names.cluster_uid(model, analysis, side, index), "side": side,
                                 "index": index, "size": int(np.sum(labels == index))})
    store.write(cypher.CREATE_CLUSTERS, rows=cluster_rows, model=model, method=method, analysis=analysis, k=k,
                src=src, dst=dst, params=json.dumps(params, sort_keys=True))
    for side, (uids, labels, coords) in sides.items():
        rows = [{"uid": uid, "index": int(label), "coords": [float(x) for x in xy],
                 "cluster": names.cluster_uid(model, analysis, side, label)}
                for uid, label, xy in zip(uids, labels.tolist(), coords)]
        store.write(cypher.assign_clusters(side), rows=rows, analysis=analysis)


def set_neuron_properties(store: Store, model: str, layer: str, props_by_channel: dict[int, dict[str, Any]]) -> None:
    """Set properties on neurons of one layer (channel -> {property: value}); others are kept."""
    rows = [{"uid": names.neuron_uid(model, layer, c), "props": props} for c, props in props_by_channel.items()]
    if rows:
        store.write(cypher.SET_NEURON_PROPERTIES, rows=rows)


def set_layer_sheet(store: Store, model: str, layer: str, sheet: str) -> None:
    """Link a layer to its feature-visualisation contact sheet."""
    store.write(cypher.SET_LAYER_SHEET, uid=names.layer_uid(model, layer), sheet=sheet)


def set_layer_battery(store: Store, model: str, layer: str, battery: dict, probe: str,
                      responses: dict[int, dict[str, list[float]]]) -> None:
    """Store a layer's probe battery: its part (JSON) and chosen ``probe`` on the Layer node, each
    channel's responses per probe (JSON) on its neuron as ``probe_responses``."""
    set_neuron_properties(store, model, layer, {c: {"probe_responses": json.dumps(r)} for c, r in responses.items()})
    store.write(cypher.SET_LAYER_BATTERY, uid=names.layer_uid(model, layer), battery=json.dumps(battery, default=float),
                probe=probe)


def replace_motifs(store: Store, model: str, run: str, layers: Sequence[str], motifs: Sequence[Any],
                   kind: str | None = None, diagnostics: dict | None = None) -> None:
    """Replace detector run ``run``'s Motif nodes with ``motifs`` (each with ``kind``, ``score``,
    ``p_value``, ``params`` and ``members``: neuron uid -> {"role", "orientation"}); with ``kind``,
    also record the run itself as a (:MotifRun) node holding its ``diagnostics`` (JSON) and the
    number found, so that a run that found nothing says why."""
    rows = [{"uid": names.motif_uid(model, run_id(run), i), "kind": m.kind, "score": float(m.score),
             "p_value": float(m.p_value), "params": json.dumps(m.params, default=float), "layers": list(layers),
             "members": [{"uid": uid, "role": info["role"], "orientation": info.get("orientation"),
                          "fit": info.get("fit"), "fit_without_strongest": info.get("fit_without_strongest"),
                          "fit_p": info.get("fit_p")} for uid, info in m.members.items()]}
            for i, m in enumerate(motifs)]
    store.write(cypher.DELETE_MOTIFS, model=model, run=run)
    if rows:
        store.write(cypher.CREATE_MOTIFS, rows=rows, model=model, run=run)
    if kind is not None:
        store.write(cypher.MERGE_MOTIF_RUN, uid=f"{model}/motifrun/{run_id(run)}", model=model, run=run, kind=kind,
                    layers=list(layers), found=len(rows), diagnostics=json.dumps(diagnostics or {}, default=float))


def run_id(run: str) -> str:
    """A short stable id of a detector run's description."""
    return hashlib.sha256(run.encode()).hexdigest()[:12]
