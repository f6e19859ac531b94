"""Weights read back from the graph as arrays."""

from __future__ import annotations

import numpy as np

from circuitatlas.errors import NotFound
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["read_weights"]

_REL = {"direct": "WEIGHT", "expanded": "EXPANDED"}


def read_weights(store: Store, model: str, src_layer: str, dst_layer: str, kind: str = "direct") -> np.ndarray:
    """Reassemble the (out, in, kh, kw) kernels between two layers; absent edges are zeros."""
    if kind not in _REL:
        raise ValueError(f"kind must be 'direct' or 'expanded', not {kind!r}")
    shapes = []
    for layer in (src_layer, dst_layer):
        info = store.read(cypher.LAYER_INFO, uid=f"{model}/{layer}")
        if not info:
            raise NotFound(f"no layer {layer!r} in model {model!r}")
        shapes.append(info[0]["channels"])
    out = None
    for row in store.stream(cypher.read_edges(_REL[kind]), model=model, src=src_layer, dst=dst_layer):
        if out is None:
            out = np.zeros((shapes[1], shapes[0], row["kh"], row["kw"]), dtype=np.float32)
        kernels = np.asarray(row["kernels"], dtype=np.float32).reshape(len(row["src"]), row["kh"], row["kw"])
        out[row["dst"], row["src"]] = kernels
    if out is None:
        raise NotFound(f"no {kind} edges from {src_layer} to {dst_layer} in model {model!r}")
    return out
