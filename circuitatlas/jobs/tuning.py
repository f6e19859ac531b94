"""Tuning of a layer's units, stored on each neuron: under a named stimulus, or under the probe
battery's most selective probe (the battery stored on the layer and its neurons, measured once)."""

from __future__ import annotations

import json
from typing import Callable, Iterable

from torch import nn

from circuitatlas.analysis.probes import (
    ProbeBattery,
    battery_from_records,
    battery_records,
    measure_probes,
    period_of,
)
from circuitatlas.analysis.tuning import TuningResult, radial_tuning
from circuitatlas.jobs.network import network
from circuitatlas.queries.aliases import resolve_layer
from circuitatlas.queries.models import input_size, layer_battery, layer_tuning, model_meta
from circuitatlas.queries.writeback import set_layer_battery, set_neuron_properties
from circuitatlas.store import Store

__all__ = ["annotate_tuning", "battery_for", "store_tuning"]


def store_tuning(store: Store, model: str, layer: str, result: TuningResult) -> None:
    """``orientation``, ``orientation_selectivity``, ``tuning``, ``tuning_angles`` and
    ``tuning_params`` on each neuron of ``result``."""
    params = json.dumps({"stimulus": result.stimulus, **result.params}, default=str)
    angles = [float(a) for a in result.angles]
    set_neuron_properties(store, model, layer, {
        c: {"orientation": float(result.preferred_deg[i]), "orientation_selectivity": float(result.selectivity[i]),
            "tuning": [float(v) for v in result.responses[:, i]], "tuning_angles": angles, "tuning_params": params}
        for i, c in enumerate(result.channels)})


def battery_for(store: Store, model: str, layer: str, net: Callable[[], nn.Module]) -> ProbeBattery:
    """The layer's probe battery: as stored, else measured on ``net()`` and stored, with the most
    selective probe's tuning as each neuron's tuning where the layer has none yet (a tuning the
    user asked for, ``annotate_tuning`` with a stimulus, is kept)."""
    stored = layer_battery(store, model, layer)
    if stored is not None:
        return battery_from_records(layer, *stored)
    battery = measure_probes(net(), layer, input_size(model_meta(store, model)))
    part, responses = battery_records(battery)
    set_layer_battery(store, model, layer, part, battery.best(), responses)
    if not any(row["tuning"] for row in layer_tuning(store, model, layer)):
        store_tuning(store, model, layer, battery.results[battery.best()])
    return battery


def annotate_tuning(store: Store, model: str, layer: str, channels: Iterable[int] | None = None,
                    stimulus: str | None = None, n_angles: int = 64, module: nn.Module | None = None,
                    **stimulus_params) -> TuningResult:
    """Measure, then store each neuron's tuning (``layer``: any of its names): under ``stimulus``,
    or with none named, under the probe battery's most selective probe (the battery stored too)."""
    layer = resolve_layer(store, model, layer)
    if stimulus is None and not stimulus_params and channels is None:
        battery = battery_for(store, model, layer, lambda: network(store, model, module))
        return battery.results[battery.best()]
    net = network(store, model, module)
    stimulus = stimulus or "curve"
    result = radial_tuning(net, layer, channels, stimulus=stimulus, n_angles=n_angles,
                           size=input_size(model_meta(store, model)),
                           period=period_of(stimulus), **stimulus_params)
    store_tuning(store, model, layer, result)
    return result
