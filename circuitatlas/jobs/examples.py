"""Top dataset examples of a layer's units: crops saved as PNGs, linked on each neuron."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from torch import nn

from circuitatlas import artifacts, checks
from circuitatlas.analysis.examples import Example, load_images, top_examples
from circuitatlas.jobs.network import network
from circuitatlas.queries.aliases import resolve_layer
from circuitatlas.queries.models import input_size, model_meta
from circuitatlas.queries.writeback import set_neuron_properties
from circuitatlas.store import Store

__all__ = ["annotate_examples"]


def annotate_examples(store: Store, model: str, layer: str, images: str | Path | np.ndarray,
                      channels: Iterable[int] | None = None, k: int = 9, module: nn.Module | None = None,
                      out_dir: str | None = None) -> dict[int, list[Example]]:
    """The ``k`` images (a folder, or an (N, H, W, 3) array) that excite each unit most; each
    neuron gets ``examples`` (PNG paths, best first) and ``examples_activation``; ``layer``: any
    of its names."""
    k = checks.whole("k", k, 1)  # before the network is rebuilt and the images read
    layer = resolve_layer(store, model, layer)
    net = network(store, model, module)
    if isinstance(images, (str, Path)):
        images, _ = load_images(images, input_size(model_meta(store, model)))
    found = top_examples(net, layer, np.asarray(images, dtype=np.float32), channels, k)
    props = {}
    for channel, examples in found.items():
        files = artifacts.save_example_crops(model, layer, channel, [(ex.image_index, ex.crop) for ex in examples],
                                             out_dir)
        props[channel] = {"examples": files, "examples_activation": [ex.activation for ex in examples]}
    set_neuron_properties(store, model, layer, props)
    return found
