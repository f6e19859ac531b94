"""Radial tuning of a layer's units, stored on each neuron; and a layer's tuning for the motif
detectors, read from the graph when every neuron has it, else measured and stored now."""

from __future__ import annotations

import json
from typing import Callable, Iterable

import numpy as np
from torch import nn

from circuitatlas.analysis.tuning import TuningResult, radial_tuning
from circuitatlas.jobs.network import network
from circuitatlas.queries.aliases import resolve_layer
from circuitatlas.queries.models import input_size, layer_tuning, model_meta
from circuitatlas.queries.writeback import set_neuron_properties
from circuitatlas.store import Store

__all__ = ["annotate_tuning", "tuning_for"]


def annotate_tuning(store: Store, model: str, layer: str, channels: Iterable[int] | None = None,
                    stimulus: str = "curve", n_angles: int = 64, module: nn.Module | None = None,
                    **stimulus_params) -> TuningResult:
    """Measure, then store ``orientation``, ``orientation_selectivity``, ``tuning``,
    ``tuning_angles`` and ``tuning_params`` on each neuron measured (``layer``: any of its names)."""
    layer = resolve_layer(store, model, layer)
    net = network(store, model, module)
    size = input_size(model_meta(store, model))
    result = radial_tuning(net, layer, channels, stimulus=stimulus, n_angles=n_angles, size=size, **stimulus_params)
    params = json.dumps({"stimulus": stimulus, **result.params}, default=str)
    angles = [float(a) for a in result.angles]
    set_neuron_properties(store, model, layer, {
        c: {"orientation": float(result.preferred_deg[i]), "orientation_selectivity": float(result.selectivity[i]),
            "tuning": [float(v) for v in result.responses[:, i]], "tuning_angles": angles, "tuning_params": params}
        for i, c in enumerate(result.channels)})
    return result


def tuning_for(store: Store, model: str, layer: str, net: Callable[[], nn.Module],
               stimulus_params: dict) -> TuningResult:
    """The layer's tuning: stored on every neuron (and no stimulus asked for), else measured with
    ``stimulus_params`` on ``net()`` and stored."""
    rows = layer_tuning(store, model, layer)
    if rows and all(r["tuning"] for r in rows) and not stimulus_params:
        return TuningResult(layer, [r["channel"] for r in rows], np.asarray(rows[0]["angles"]),
                            np.asarray([r["tuning"] for r in rows]).T, np.asarray([r["orientation"] for r in rows]),
                            np.asarray([r["selectivity"] for r in rows]), "stored")
    return annotate_tuning(store, model, layer, module=net(), **stimulus_params)
