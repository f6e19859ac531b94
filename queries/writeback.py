"""Analysis results written back onto the graph, replacing an earlier run of the same analysis."""

from __future__ import annotations

import json

import numpy as np

from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["svd_analysis_key", "write_clusters"]


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
            cluster_rows.append({"uid": f"{model}/{analysis}/{side}/{index}", "side": side, "index": index,
                                 "size": int(np.sum(labels == index))})
    store.write(cypher.CREATE_CLUSTERS, rows=cluster_rows, model=model, method=method, analysis=analysis, k=k,
                src=src, dst=dst, params=json.dumps(params, sort_keys=True))
    for side, (uids, labels, coords) in sides.items():
        rows = [{"uid": uid, "index": int(label), "coords": [float(x) for x in xy],
                 "cluster": f"{model}/{analysis}/{side}/{int(label)}"}
                for uid, label, xy in zip(uids, labels.tolist(), coords)]
        store.write(cypher.assign_clusters(side), rows=rows, analysis=analysis)
