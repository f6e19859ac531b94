"""Motif detection on stored weights: each detector's inputs read from the graph (weights between
layers, the probe battery stored or measured now), the run of :mod:`~circuitatlas.analysis.motifs.runs`,
and its findings written back as ``(:Motif)`` nodes that replace an earlier run of the same kind,
layers and parameters, with the run and its diagnostics as a ``(:MotifRun)`` node."""

from __future__ import annotations

import json
from typing import Iterable

import numpy as np
from torch import nn

from circuitatlas import checks, names
from circuitatlas.analysis import motifs as M
from circuitatlas.analysis.motifs.runs import BatteryTuning, run_detector
from circuitatlas.analysis.probes import ProbeBattery, measure_probes
from circuitatlas.analysis.tuning import checked_stimulus_params
from circuitatlas.errors import NotFound
from circuitatlas.jobs.network import lazy_network
from circuitatlas.jobs.tuning import battery_for
from circuitatlas.queries.aliases import resolve_layers
from circuitatlas.queries.models import input_size, layer_info, model_meta
from circuitatlas.queries.weights import read_edge_stat, read_weights
from circuitatlas.queries.writeback import replace_motifs
from circuitatlas.store import Store

__all__ = ["find_motifs", "layer_weights", "ModuleInputs", "detect"]


def layer_weights(store: Store, model: str, src: str, dst: str, kernels: bool = False) -> np.ndarray:
    """Kernel sums (out, in) between two layers, or whole kernels (out, in, kh, kw) with
    ``kernels``: the expanded weights when stored (the linear path through whatever lies between,
    pooling included, as :class:`~circuitatlas.analysis.motifs.runs.ModuleInputs` reads a module),
    else the direct ones (the image to a first conv; a model ingested without expanded edges)."""
    read = read_weights if kernels else (lambda *a: read_edge_stat(*a, "sum"))
    try:
        return read(store, model, src, dst, "expanded")
    except NotFound:
        return read(store, model, src, dst, "direct")


class _Inputs(BatteryTuning):
    """What the detectors of one stored model read: weights from the graph, tuning from the
    layer's stored probe battery (measured and stored on first use) or the caller's stimulus."""

    def __init__(self, store: Store, model: str, module: nn.Module | None, stimulus_params: dict) -> None:
        self.store, self.model = store, model
        super().__init__(stimulus_params, lazy_network(store, model, module), input_size(model_meta(store, model)))

    def weights(self, src: str, dst: str, kernels: bool = False) -> np.ndarray:
        return layer_weights(self.store, self.model, src, dst, kernels)

    def battery(self, layer: str) -> ProbeBattery:
        return battery_for(self.store, self.model, layer, self.module)

    def is_image(self, layer: str) -> bool:
        return layer_info(self.store, self.model, layer)["kind"] == "input"


def find_motifs(store: Store, kind: str, model: str, layers: Iterable[str], *, n_perm: int = 200,
                alpha: float = 0.01, seed: int = 0, stimulus_params: dict | None = None,
                module: nn.Module | None = None, **params) -> M.Findings:
    """Run detector ``kind`` and store its findings (``layers``: any of their names) and the run
    with its diagnostics; members come back as neuron uids. Tuning is measured under the probe
    battery unless ``stimulus_params`` name a stimulus (``{"stimulus": "edge"}``) or its sizes."""
    layers = list(layers)
    names.check_motif_layers(kind, layers)
    n_perm, seed = checks.whole("n_perm", n_perm, 1), checks.whole("seed", seed, 0)
    alpha = checks.real("alpha", alpha, 0.0, 1.0, above=True)
    stimulus_params = checked_stimulus_params(dict(stimulus_params or {}))
    layers = resolve_layers(store, model, layers)
    common = {"n_perm": n_perm, "alpha": alpha, "seed": seed, **params}
    found = run_detector(kind, _Inputs(store, model, module, stimulus_params), layers, **common)
    for motif in found:
        motif.members = {names.neuron_uid(model, *names.parse_unit(unit)): info
                         for unit, info in motif.members.items()}
    run = f"{kind}:{','.join(layers)}:{json.dumps({**common, **stimulus_params}, sort_keys=True)}"
    replace_motifs(store, model, run, layers, found, kind, found.diagnostics)
    return found


class ModuleInputs(BatteryTuning):
    """Detector inputs of a module in hand: weights from its layer graph (expanded across
    whatever lies between two layers, BatchNorm folded), tuning from the probe battery."""

    def __init__(self, module: nn.Module, input_size: tuple[int, int, int],
                 stimulus_params: dict | None = None) -> None:
        from circuitatlas.ingest.layergraph import build_layer_graph

        module = module.eval()
        super().__init__(stimulus_params, lambda: module, int(input_size[-1]))
        self.graph = build_layer_graph(module, tuple(input_size))
        self._batteries: dict[str, ProbeBattery] = {}

    def weights(self, src: str, dst: str, kernels: bool = False) -> np.ndarray:
        from circuitatlas.ingest.expanded import expanded_kernels

        out_idx, in_idx, k, _ = expanded_kernels(self.graph, src, dst)
        dense = np.zeros((self.graph.layers[dst].shape[0], self.graph.layers[src].shape[0], *k.shape[1:]), np.float32)
        dense[out_idx, in_idx] = k
        return dense if kernels else dense.sum(axis=(2, 3))

    def is_image(self, layer: str) -> bool:
        return layer == "input"

    def battery(self, layer: str) -> ProbeBattery:
        if layer not in self._batteries:
            self._batteries[layer] = measure_probes(self.module(), layer, self.size)
        return self._batteries[layer]


def detect(kind: str, module: nn.Module, layers: list[str], input_size: tuple[int, int, int],
           stimulus_params: dict | None = None, n_perm: int = 200, alpha: float = 0.01, seed: int = 0,
           **params) -> M.Findings:
    """Detector ``kind`` on a module in hand, with the defaults of a stored model's run."""
    return run_detector(kind, ModuleInputs(module, input_size, stimulus_params), list(layers), n_perm=n_perm,
                        alpha=alpha, seed=seed, **params)
