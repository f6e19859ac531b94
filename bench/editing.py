"""Circuit editing on a real-size network, without the database: how long it takes to trace the
layer graph, apply an edit of each kind to a copy of the module, find mean maps, draw a random
control of the same size, and what the edit's hooks add to a forward pass. Prints JSON.

    python bench/editing.py [--model resnet50] [--size 224] [--edges 1000] [--images 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from circuitatlas.analysis.editing import (
    Ablation,
    EdgeEdit,
    EditSpec,
    Replacement,
    edges_into,
    edited_module,
    mean_maps,
    random_like,
)
from circuitatlas.benchmarking import emit, machine
from circuitatlas.ingest.layergraph import build_layer_graph


def _timed(work) -> tuple[float, object]:
    began = time.monotonic()
    out = work()
    return round(time.monotonic() - began, 3), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--edges", type=int, default=1000)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = getattr(torchvision.models, args.model)(weights=None).eval()
    trace_s, graph = _timed(lambda: build_layer_graph(net, (3, args.size, args.size)))
    rng = np.random.default_rng(0)
    convs = [name for name, w in graph.weight_layers.items() if w.kind == "conv" and w.folded_bn]
    target = convs[len(convs) // 2]  # a conv in the middle of the network
    weight = graph.weight_layers[target]
    edges = []
    for b in rng.choice(weight.out_channels, min(args.edges, weight.out_channels), replace=False):
        src, _ = edges_into(weight, int(b))[int(rng.integers(weight.weight.shape[1]))]
        edges.append(EdgeEdit(src, (target, int(b)), 0.0))
    while len(edges) < args.edges:  # more edges than output channels: more than one per channel
        b = int(rng.integers(weight.out_channels))
        src, _ = edges_into(weight, b)[int(rng.integers(weight.weight.shape[1]))]
        if all((e.src, e.dst) != (src, (target, b)) for e in edges):
            edges.append(EdgeEdit(src, (target, b), 0.0))
    x = torch.rand(args.images, 3, args.size, args.size)
    units = [(target, c) for c in range(64)]
    means_s, means = _timed(lambda: mean_maps(net, graph, units, x))
    kernel = np.zeros(weight.weight.shape[1:])
    spec = EditSpec([Ablation(layer, c, "mean", means[(layer, c)]) for layer, c in units], edges,
                    [Replacement(target, c, kernel, 0.0) for c in range(64, 72)])
    apply_s, edited = _timed(lambda: edited_module(net, graph, spec))
    control_s, _ = _timed(lambda: random_like(spec, graph, np.random.default_rng(1)))
    with torch.no_grad():
        plain_s, _ = _timed(lambda: net(x))
        edited_s, _ = _timed(lambda: edited(x))
    result = {
        "benchmark": "editing", "machine": machine(), "model": f"{args.model} (random init)", "size": args.size,
        "layer": target, "edit": {"edges": len(spec.edges), "ablations": len(spec.ablations),
                                  "replacements": len(spec.replacements)},
        "trace_layer_graph_s": trace_s, "mean_maps_s": means_s, "mean_maps_images": args.images,
        "apply_edit_s": apply_s, "random_control_s": control_s,
        "forward_s": {"unedited": plain_s, "edited": edited_s, "images": args.images},
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
