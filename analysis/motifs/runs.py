"""Each detector run on a model's layers, the same for a stored model (weights read from the
graph) and for a module in hand (weights from its layer graph; both in
:mod:`circuitatlas.jobs.motifs`): the inputs differ, the defaults and the probe chosen per layer
do not.

Tuning comes from the probe battery (:mod:`circuitatlas.analysis.probes`): per layer, the probe
under which the units are most selective, unless the caller names a stimulus. Every run returns
:class:`~circuitatlas.analysis.motifs.common.Findings` whose diagnostics name the probe of each
layer and how far each stage got.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence

import numpy as np
from torch import nn

from circuitatlas import names
from circuitatlas.analysis import motifs as M
from circuitatlas.analysis.probes import FULL_TURN, ProbeBattery, period_of
from circuitatlas.analysis.tuning import TuningResult, radial_tuning

__all__ = ["DetectorInputs", "BatteryTuning", "DETECTORS", "run_detector", "explain", "probe_classes", "PAIR_KEYS",
           "superposition_inputs",
           "N_CLASSES"]

PAIR_KEYS = ("min_similarity", "min_margin", "min_selectivity", "orientation_tolerance")
N_CLASSES = 8  # stimulus classes for superposition: the probe at 8 angles over one period


class DetectorInputs(Protocol):
    """What a detector run reads about a model."""

    used: dict[str, dict]  # layer -> the probe its tuning came from, and why (filled by tuning())

    def weights(self, src: str, dst: str, kernels: bool = False) -> np.ndarray:
        """Kernel sums (out, in), or whole kernels (out, in, kh, kw), from ``src`` to ``dst``."""

    def tuning(self, layer: str, among: Sequence[str] | None = None) -> TuningResult:
        """The layer's tuning under its most selective probe of ``among`` (or the caller's stimulus)."""

    def is_image(self, layer: str) -> bool:
        """Whether ``layer`` is the input image."""


class BatteryTuning:
    """Tuning from a probe battery measured once per layer (``battery(layer)``, supplied by a
    subclass), or from the caller's stimulus when ``stimulus_params`` are given."""

    def __init__(self, stimulus_params: dict | None, module: Callable[[], nn.Module], size: int) -> None:
        self.stimulus_params, self.module, self.size = dict(stimulus_params or {}), module, size
        self.used: dict[str, dict] = {}
        self._caller: dict[str, TuningResult] = {}

    def battery(self, layer: str) -> ProbeBattery:
        raise NotImplementedError

    def tuning(self, layer: str, among: Sequence[str] | None = None) -> TuningResult:
        if self.stimulus_params:
            if layer not in self._caller:
                params = dict(self.stimulus_params)
                stimulus = params.pop("stimulus", "curve")
                self._caller[layer] = radial_tuning(self.module(), layer, stimulus=stimulus, size=self.size,
                                                    period=period_of(stimulus), **params)
                self.used[layer] = {"probe": stimulus, "chosen_by": "caller"}
            return self._caller[layer]
        battery = self.battery(layer)
        self.used[layer] = {**battery.summary(among), "among": list(among) if among else "all", "chosen_by": "battery"}
        return battery.results[battery.best(among)]


def probe_classes(tuning: TuningResult, n: int = N_CLASSES) -> np.ndarray:
    """Responses (n, C) to the tuning's stimulus at ``n`` angles spread over one period."""
    per_period = len(tuning.angles) * tuning.period / 360.0
    picks = np.round(np.arange(n) * per_period / n).astype(int) % len(tuning.angles)
    return tuning.responses[picks]


def _rotation(inputs: DetectorInputs, layers: list[str], common: dict) -> M.Findings:
    """The upstream layer under one probe with a direction: the one under which most units of
    both layers fall in orientation families (the downstream layer's tuning predicted from the
    weights, or measured under the same probe with ``downstream="measured"``)."""
    family_params = {k: v for k, v in common.items() if k in ("min_selectivity", "min_shape_corr", "min_size")}
    measured = common.get("downstream") == "measured"
    sums = inputs.weights(*layers)

    def downstream_tuning(probe: str) -> TuningResult:
        return (inputs.tuning(layers[1], [probe]) if measured
                else M.predicted_tuning(sums, inputs.tuning(layers[0], [probe])))

    def in_families(tuning: TuningResult) -> int:
        return sum(len(f) for f in M.orientation_families(tuning, **family_params))

    counts = {probe: [in_families(inputs.tuning(layers[0], [probe])), in_families(downstream_tuning(probe))]
              for probe in FULL_TURN}
    probe = max(counts, key=lambda p: (min(counts[p]), sum(counts[p]), -FULL_TURN.index(p)))
    t_in = inputs.tuning(layers[0], [probe])
    t_out = inputs.tuning(layers[1], [probe]) if measured else None
    found = M.rotation_equivariance(sums, t_in, t_out, tuple(layers), **common)
    found.diagnostics["units_in_families_by_probe"] = counts
    if found:  # whole kernels only now: do they rotate with orientation?
        kernels = inputs.weights(*layers, kernels=True)
        t_kernels = t_out or M.predicted_tuning(sums, t_in)
        for motif in found:
            fi = [names.parse_unit(n)[1] for n, i in motif.members.items() if i["role"] == "upstream"]
            fo = [names.parse_unit(n)[1] for n, i in motif.members.items() if i["role"] == "downstream"]
            motif.params["kernel_rotation"] = M.kernel_rotation(kernels, fi, fo, t_in, t_kernels)
    return found


def _flip(inputs: DetectorInputs, layers: list[str], common: dict) -> M.Findings:
    """flip_equivariance along consecutive layers, each layer's candidate pairs giving the mirror
    map of its units for the next; the image's map is the identity, any other first layer's
    comes from its tuning. Each of the chain's steps is tested at alpha over the number of steps
    (Bonferroni), so that the chance of any false report in the chain stays alpha, with enough
    shuffles (at least 2 * steps / alpha) for a p-value to get there."""
    mirror = None if inputs.is_image(layers[0]) else M.mirror_map_from_tuning(inputs.tuning(layers[0]))
    pair_params = {k: v for k, v in common.items() if k in PAIR_KEYS}
    steps = len(layers) - 1  # each step tested at alpha / steps: the chain's chance of a false report stays alpha
    alpha = common["alpha"] / steps
    n_perm = max(common["n_perm"], math.ceil(2 / alpha) - 1)  # so that p = 1 / (n + 1) can reach alpha / steps
    common = {**common, "alpha": alpha, "n_perm": n_perm}
    found = M.Findings([], {"stage": "candidates", "steps": [], "alpha_per_step": alpha, "n_perm_per_step": n_perm})
    for src, dst in zip(layers, layers[1:]):
        kernels = inputs.weights(src, dst, kernels=True)
        tuning = inputs.tuning(dst)
        step = M.flip_equivariance(kernels, mirror, tuning, (src, dst), **common)
        found += step
        found.diagnostics["steps"].append({"layers": [src, dst], **step.diagnostics})
        pairs = M.mirror_pairs(kernels, mirror, None, **pair_params)
        mirror = M.mirror_map(kernels.shape[0], [(j, k) for _, j, k in pairs])
    if not found:
        found.diagnostics["reason"] = "no step of the chain reported a mirror pair (see steps)"
    return found


def _union(inputs: DetectorInputs, layers: list[str], common: dict) -> M.Findings:
    return M.union_over_cases(inputs.weights(layers[0], layers[1], kernels=True),
                              inputs.weights(layers[1], layers[2]), inputs.tuning(layers[1]), tuple(layers), **common)


def superposition_inputs(inputs: DetectorInputs, layers: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the superposition detector reads between two layers: the weights (B, A, kh, kw) and
    each layer's responses to the classes of one stimulus set, the first layer's probe
    (``class_responses`` of B, then of A)."""
    probe = inputs.tuning(layers[0]).params.get("probe")  # one stimulus set for both layers' classes
    among = [probe] if probe else None
    classes_in, classes = (probe_classes(inputs.tuning(layer, among)) for layer in layers)
    return inputs.weights(*layers), classes, classes_in


def _superposition(inputs: DetectorInputs, layers: list[str], common: dict) -> M.Findings:
    weights, classes, classes_in = superposition_inputs(inputs, layers)
    return M.superposition(weights, classes, tuple(layers), class_responses_in=classes_in, **common)


# motif kind -> its run (names.MOTIF_LAYERS says how many layers each takes)
DETECTORS: dict[str, Callable[[DetectorInputs, list[str], dict], M.Findings]] = {
    "rotation_equivariance": _rotation, "flip_equivariance": _flip, "union_over_cases": _union,
    "superposition": _superposition,
}


def run_detector(kind: str, inputs: DetectorInputs, layers: list[str], **common) -> M.Findings:
    """Detector ``kind`` over ``layers``; the probe each layer's tuning came from goes into the
    diagnostics and into each motif's params."""
    found = DETECTORS[kind](inputs, layers, common)
    found.diagnostics["probes"] = dict(inputs.used)
    for motif in found:
        motif.params["probes"] = {layer: info.get("probe") for layer, info in inputs.used.items()}
    return found


def explain(diagnostics: dict) -> list[str]:
    """A detector run's diagnostics as short lines: the probe of each layer, then each stage."""
    lines = []
    for layer, info in diagnostics.get("probes", {}).items():
        scores = info.get("scores")
        best = f" (mean selectivity {scores[info['probe']]:.2f}; {_ranked(scores)})" if scores else ""
        among = info.get("among", "all")
        pool = "" if among == "all" else f" among {', '.join(among)}"
        lines.append(f"probe for {layer}: {info.get('probe')}{best}, chosen by {info.get('chosen_by')}{pool}")
    for step in diagnostics.get("steps", [diagnostics]):
        where = f"{' -> '.join(step['layers'])}: " if "layers" in step else ""
        facts = {k: v for k, v in step.items() if k not in ("probes", "steps", "layers", "reason", "stage")}
        stated = ", ".join(f"{k} {_short(v)}" for k, v in facts.items())
        lines.append(f"{where}reached {step.get('stage', '?')}: {stated}")
        if step.get("reason"):
            lines.append(f"{where}nothing reported: {step['reason']}")
    if "steps" in diagnostics and diagnostics.get("reason"):
        lines.append(f"nothing reported: {diagnostics['reason']}")
    return lines


def _ranked(scores: dict[str, float]) -> str:
    return " > ".join(f"{name} {score:.2f}" for name, score in sorted(scores.items(), key=lambda kv: -kv[1]))


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
