"""Weights read back from the graph as arrays."""

from __future__ import annotations

import numpy as np

from circuitatlas import names
from circuitatlas.errors import NotFound
from circuitatlas.queries import cypher
from circuitatlas.queries.models import layer_info
from circuitatlas.store import Store

__all__ = ["read_weights", "read_abs_sums", "read_edge_stat"]

def read_edge_stat(store: Store, model: str, src_layer: str, dst_layer: str, kind: str = "direct",
                   stat: str = "sum") -> np.ndarray:
    """One statistic of each kernel between two layers as an (out, in) array (absent edges: 0)."""
    rel = names.rel_type(kind)
    out = np.zeros((layer_info(store, model, dst_layer)["channels"], layer_info(store, model, src_layer)["channels"]), dtype=np.float64)
    found = False
    for row in store.stream(cypher.read_edge_stat(rel, stat), model=model, src=src_layer, dst=dst_layer):
        out[row["dst"], row["src"]] = row["value"]
        found = True
    if not found:
        raise NotFound(f"no {kind} edges from {src_layer} to {dst_layer} in model {model!r}")
    return out


def read_abs_sums(store: Store, model: str, src_layer: str, dst_layer: str, kind: str = "direct") -> np.ndarray:
    """Sum over kernel positions of |W| between two layers, (out, in), from the edges' ``l1``."""
    return read_edge_stat(store, model, src_layer, dst_layer, kind, "l1")


def read_weights(store: Store, model: str, src_layer: str, dst_layer: str, kind: str = "direct") -> np.ndarray:
    """Reassemble the (out, in, kh, kw) kernels between two layers; absent edges are zeros."""
    rel = names.rel_type(kind)
    shapes = [layer_info(store, model, src_layer)["channels"], layer_info(store, model, dst_layer)["channels"]]
    out = None
    for row in store.stream(cypher.read_edges(rel), model=model, src=src_layer, dst=dst_layer):
        if out is None:
            out = np.zeros((shapes[1], shapes[0], row["kh"], row["kw"]), dtype=np.float32)
        kernels = np.asarray(row["kernels"], dtype=np.float32).reshape(len(row["src"]), row["kh"], row["kw"])
        out[row["dst"], row["src"]] = kernels
    if out is None:
        raise NotFound(f"no {kind} edges from {src_layer} to {dst_layer} in model {model!r}")
    return out
