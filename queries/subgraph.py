"""Subgraphs of a stored model as networkx graphs."""

from __future__ import annotations

from typing import Iterable

import networkx as nx
import numpy as np

from circuitatlas import names
from circuitatlas.errors import NotFound
from circuitatlas.queries import cypher
from circuitatlas.store import Store

__all__ = ["subgraph"]


def subgraph(
    store: Store,
    model: str,
    layers: Iterable[str],
    kind: str = "expanded",
    min_l2: float = 0.0,
    top_k: int | None = None,
) -> nx.DiGraph:
    """The neurons of ``layers`` and the ``kind`` edges among them, as a ``networkx.DiGraph``.

    Nodes are neuron uids with the neuron's properties as attributes; each edge carries its
    kernel as a (kh, kw) numpy array under ``kernel`` plus ``sum``, ``l2``, ``max``, ``min``.
    ``top_k`` keeps each target's strongest inputs (by l2). One query, streamed.
    """
    layers = list(layers)
    g = nx.DiGraph(model=model, kind=kind, layers=layers)
    for row in store.stream(cypher.SUBGRAPH, model=model, layers=layers, rel_type=names.rel_type(kind),
                            min_l2=float(min_l2), top_k=top_k):
        if row["what"] == "node":
            props = row["props"]
            g.add_node(props["uid"], **props)
        else:
            edge = dict(row["edge"])
            edge["kernel"] = np.asarray(edge["kernel"], dtype=np.float32).reshape(edge["kh"], edge["kw"])
            g.add_edge(row["src"], row["dst"], **edge)
    if g.number_of_nodes() == 0:
        raise NotFound(f"no neurons of layers {layers} in model {model!r}")
    return g
