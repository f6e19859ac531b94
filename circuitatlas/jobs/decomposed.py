"""Decomposed feature visualisation of one stored unit: its expanded weights from an upstream
observation layer, computed on the network, one image per weight position, saved as a grid and
linked on the neuron."""

from __future__ import annotations

import json

import numpy as np
from torch import nn

from circuitatlas import artifacts, checks, names
from circuitatlas.analysis.featurevis import RenderSettings
from circuitatlas.analysis.featurevis.decomposed import decomposed as render_decomposed
from circuitatlas.errors import InvalidInput
from circuitatlas.ingest.expanded import expanded_kernels
from circuitatlas.ingest.layergraph import build_layer_graph
from circuitatlas.jobs.network import network
from circuitatlas.queries.aliases import resolve_layer
from circuitatlas.queries.models import input_size, model_layers, model_meta, neuron
from circuitatlas.queries.writeback import set_neuron_properties
from circuitatlas.store import Store

__all__ = ["decomposed"]


def decomposed(store: Store, model: str, layer: str, channel: int, upstream: str,
               settings: RenderSettings = RenderSettings(), min_share: float = 0.1,
               module: nn.Module | None = None) -> dict:
    """Render the decomposed feature visualisation of ``layer:channel`` over ``upstream`` (an
    earlier observation layer) at the model's input size with ``settings``' steps, lr and seed
    (pixels, no transforms: each image holds what its position sees). Saves the grid and sets
    the neuron's ``decomposed`` (JSON: upstream layer -> grid path). Returns ``layer``,
    ``channel``, ``upstream``, ``grid``, ``shape`` (kh, kw), ``origin``, ``rendered`` (positions
    drawn) and ``strongest`` (row, col of the largest weight vector)."""
    layer, upstream = resolve_layer(store, model, layer), resolve_layer(store, model, upstream)
    known = {row["name"]: row for row in model_layers(store, model)}
    channel = checks.whole("channel", channel, 0)
    if channel >= known[layer]["channels"]:
        raise InvalidInput(f"channel {channel} is not in {layer} ({known[layer]['channels']} channels)")
    if known[upstream]["order"] >= known[layer]["order"]:
        raise InvalidInput(f"{upstream} does not come before {layer}")
    min_share = checks.real("min_share", min_share, 0.0, 1.0)
    size = input_size(model_meta(store, model))
    net = network(store, model, module)
    graph = build_layer_graph(net, (3, size, size), observation_layers=[upstream, layer])
    out_idx, in_idx, kernels, origin = expanded_kernels(graph, upstream, layer)
    rows = out_idx == channel
    weights = np.zeros((known[upstream]["channels"], *kernels.shape[1:]), dtype=np.float32)
    weights[in_idx[rows]] = kernels[rows]
    if not rows.any():
        raise InvalidInput(f"{layer}:{channel} has no expanded weights from {upstream}")
    found = render_decomposed(net, upstream, weights, size, origin=origin, min_share=min_share, steps=settings.steps,
                              lr=settings.lr, seed=settings.seed)
    path = artifacts.inside(model, "decomposed", f"{layer}-{channel}-from-{upstream}.png")
    artifacts.save_grid(found.images.permute(0, 1, 3, 4, 2).numpy(), path)
    stored = neuron(store, names.neuron_uid(model, layer, channel)).get("decomposed")
    links = json.loads(stored) if isinstance(stored, str) else {}
    links[upstream] = str(path)
    set_neuron_properties(store, model, layer, {channel: {"decomposed": json.dumps(links, sort_keys=True)}})
    norms = np.linalg.norm(weights, axis=0)
    strongest = np.unravel_index(int(norms.argmax()), norms.shape)
    return {"layer": layer, "channel": channel, "upstream": upstream, "grid": str(path),
            "shape": list(weights.shape[1:]), "origin": [int(v) for v in origin], "rendered": int(found.rendered.sum()),
            "strongest": [int(v) for v in strongest]}
