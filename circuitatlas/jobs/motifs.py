"""Motif detection on stored weights: each detector family's inputs read from the graph (weights
between layers, tuning stored or measured now), the pure detector run, and its findings written
back as ``(:Motif)`` nodes that replace an earlier run of the same kind, layers and parameters."""

from __future__ import annotations

import json
from typing import Callable, Iterable

import numpy as np
from torch import nn

from circuitatlas import checks, names
from circuitatlas.analysis import motifs as M
from circuitatlas.analysis.tuning import checked_stimulus_params, radial_tuning
from circuitatlas.errors import NotFound
from circuitatlas.jobs.network import lazy_network
from circuitatlas.jobs.tuning import tuning_for
from circuitatlas.queries.aliases import resolve_layers
from circuitatlas.queries.models import input_size, layer_info, model_meta
from circuitatlas.queries.weights import read_edge_stat, read_weights
from circuitatlas.queries.writeback import replace_motifs
from circuitatlas.store import Store

__all__ = ["find_motifs", "layer_weights"]

_PAIR_KEYS = ("min_similarity", "min_margin", "min_selectivity", "orientation_tolerance")


def layer_weights(store: Store, model: str, src: str, dst: str, kernels: bool = False) -> np.ndarray:
    """Kernel sums (out, in) between two layers, or whole kernels (out, in, kh, kw) with
    ``kernels``: direct weights when the layers are directly connected, else expanded."""
    read = read_weights if kernels else (lambda *a: read_edge_stat(*a, "sum"))
    try:
        return read(store, model, src, dst, "direct")
    except NotFound:
        return read(store, model, src, dst, "expanded")


class _Inputs:
    """What the detectors of one model read: weights, and tuning stored or measured on demand."""

    def __init__(self, store: Store, model: str, module: nn.Module | None, stimulus_params: dict) -> None:
        self.store, self.model, self.stimulus_params = store, model, stimulus_params
        self.net = lazy_network(store, model, module)

    def weights(self, src: str, dst: str, kernels: bool = False) -> np.ndarray:
        return layer_weights(self.store, self.model, src, dst, kernels)

    def tuning(self, layer: str):
        return tuning_for(self.store, self.model, layer, self.net, self.stimulus_params)


def _rotation(inputs: _Inputs, layers: list[str], common: dict) -> list[M.Motif]:
    t_in, t_out = inputs.tuning(layers[0]), inputs.tuning(layers[1])
    found = M.rotation_equivariance(inputs.weights(*layers), t_in, t_out, tuple(layers), **common)
    if found:  # whole kernels only now: do they rotate with orientation?
        kernels = inputs.weights(*layers, kernels=True)
        for motif in found:
            fi = [names.parse_unit(n)[1] for n, i in motif.members.items() if i["role"] == "upstream"]
            fo = [names.parse_unit(n)[1] for n, i in motif.members.items() if i["role"] == "downstream"]
            motif.params["kernel_rotation"] = M.kernel_rotation(kernels, fi, fo, t_in, t_out)
    return found


def _flip(inputs: _Inputs, layers: list[str], common: dict) -> list[M.Motif]:
    """flip_equivariance along consecutive layers, each layer's candidate pairs giving the mirror
    map of its units for the next; the image's map is the identity, any other first layer's
    comes from its tuning."""
    from_image = layer_info(inputs.store, inputs.model, layers[0])["kind"] == "input"
    mirror = None if from_image else M.mirror_map_from_tuning(inputs.tuning(layers[0]))
    pair_params = {k: v for k, v in common.items() if k in _PAIR_KEYS}
    found = []
    for src, dst in zip(layers, layers[1:]):
        kernels = inputs.weights(src, dst, kernels=True)
        tuning = inputs.tuning(dst)
        found += M.flip_equivariance(kernels, mirror, tuning, (src, dst), **common)
        pairs = M.mirror_pairs(kernels, mirror, tuning, **pair_params)
        mirror = M.mirror_map(kernels.shape[0], [(j, k) for _, j, k in pairs])
    return found


def _union(inputs: _Inputs, layers: list[str], common: dict) -> list[M.Motif]:
    return M.union_over_cases(inputs.weights(layers[0], layers[1]), inputs.weights(layers[1], layers[2]),
                              inputs.tuning(layers[1]), tuple(layers), **common)


def _superposition(inputs: _Inputs, layers: list[str], common: dict) -> list[M.Motif]:
    size = input_size(model_meta(inputs.store, inputs.model))
    lines = [radial_tuning(inputs.net(), layer, stimulus="line", n_angles=16, size=size, length=size / 3,
                           width=1.5).responses[:8] for layer in layers]
    return M.superposition(inputs.weights(*layers), lines[1], tuple(layers), class_responses_in=lines[0], **common)


# motif kind -> its detector run on stored inputs (names.MOTIF_LAYERS says how many layers each takes)
DETECTORS: dict[str, Callable[[_Inputs, list[str], dict], list[M.Motif]]] = {
    "rotation_equivariance": _rotation, "flip_equivariance": _flip, "union_over_cases": _union,
    "superposition": _superposition,
}


def find_motifs(store: Store, kind: str, model: str, layers: Iterable[str], *, n_perm: int = 200,
                alpha: float = 0.01, seed: int = 0, stimulus_params: dict | None = None,
                module: nn.Module | None = None, **params) -> list[M.Motif]:
    """Run detector ``kind`` and store its findings (``layers``: any of their names); members
    come back as neuron uids."""
    layers = list(layers)
    names.check_motif_layers(kind, layers)
    n_perm, seed = checks.whole("n_perm", n_perm, 1), checks.whole("seed", seed, 0)
    alpha = checks.real("alpha", alpha, 0.0, 1.0, above=True)
    stimulus_params = checked_stimulus_params(dict(stimulus_params or {}))
    layers = resolve_layers(store, model, layers)
    common = {"n_perm": n_perm, "alpha": alpha, "seed": seed, **params}
    found = DETECTORS[kind](_Inputs(store, model, module, stimulus_params), layers, common)
    for motif in found:
        motif.members = {names.neuron_uid(model, *names.parse_unit(unit)): info
                         for unit, info in motif.members.items()}
    run = f"{kind}:{','.join(layers)}:{json.dumps({**common, **stimulus_params}, sort_keys=True)}"
    replace_motifs(store, model, run, layers, found)
    return found

