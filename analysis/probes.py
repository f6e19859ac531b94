"""The probe battery: oriented stimuli sized to a layer's receptive field, each turned through a
full circle. Per layer, the probe under which the units are most selective is the one the motif
detectors use, unless the caller names a stimulus.

A full turn of an edge shows both polarities (bright side left, then right); lines and gratings
repeat after half a turn, so their tuning is read over doubled angles (``period`` 180).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from torch import nn

from circuitatlas.analysis.tuning import ReceptiveField, TuningResult, model_device, radial_tuning, receptive_field
from circuitatlas.errors import InvalidInput

__all__ = ["Probe", "PROBES", "FULL_TURN", "ProbeBattery", "probe_score", "measure_probes", "field_size", "period_of",
           "battery_records", "battery_from_records"]

SELECTIVE = 0.3  # vector strength from which a unit counts as selective in the battery's summary


@dataclass(frozen=True)
class Probe:
    """A stimulus of :mod:`circuitatlas.analysis.stimuli`, its period, and its parameters as a
    function of the receptive field's size in pixels."""

    stimulus: str
    period: float
    sized: Callable[[float], dict]


def _stroke(rf: float) -> float:
    return max(1.5, rf / 12)


PROBES: dict[str, Probe] = {
    "edge": Probe("edge", 360.0, lambda rf: {}),
    "line": Probe("line", 180.0, lambda rf: {"length": 0.8 * rf, "width": _stroke(rf)}),
    "curve_small": Probe("curve", 360.0, lambda rf: {"radius": max(2.0, rf / 6), "width": _stroke(rf)}),
    "curve_large": Probe("curve", 360.0, lambda rf: {"radius": max(3.0, rf / 3), "width": _stroke(rf)}),
    "grating": Probe("grating", 180.0, lambda rf: {"frequency": float(np.clip(2.0 / rf, 0.03, 0.3))}),
    "color_contrast": Probe("color_contrast", 360.0, lambda rf: {}),
}

FULL_TURN = tuple(name for name, probe in PROBES.items() if probe.period == 360.0)  # probes with a direction


def probe_score(tuning: TuningResult) -> float:
    """How selective a layer's units are under one probe: the mean vector strength over units,
    a unit that never responds counting 0."""
    responds = tuning.responses.max(axis=0) > 0
    return float(np.where(responds, tuning.selectivity, 0.0).mean()) if responds.size else 0.0


@dataclass
class ProbeBattery:
    """Tuning of one layer under every probe measured; ``best`` is the most selective probe."""

    layer: str
    field_px: float
    results: dict[str, TuningResult] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, float]:
        return {name: probe_score(t) for name, t in self.results.items()}

    def best(self, among: Sequence[str] | None = None) -> str:
        """The most selective probe (of ``among``, default all measured; the first on a tie)."""
        scores = {n: s for n, s in self.scores.items() if among is None or n in among}
        if not scores:
            raise InvalidInput(f"none of the probes {list(among or [])} was measured on {self.layer}")
        return max(scores, key=lambda name: (scores[name], -list(scores).index(name)))

    def summary(self, among: Sequence[str] | None = None) -> dict:
        """JSON-serialisable: the chosen probe, each probe's score and number of selective units."""
        return {"probe": self.best(among), "field_px": self.field_px,
                "scores": {n: round(s, 4) for n, s in self.scores.items()},
                "selective_units": {n: int((t.selectivity >= SELECTIVE).sum()) for n, t in self.results.items()}}


def field_size(field: ReceptiveField) -> float:
    """The side (pixels) of a receptive field's box, at least 3."""
    top, left, bottom, right = field.box
    return float(max(3, min(bottom - top, right - left)))


def period_of(stimulus: str) -> float:
    """The period (degrees) of a named stimulus: 180 for those that repeat after half a turn."""
    return 180.0 if any(p.stimulus == stimulus and p.period == 180.0 for p in PROBES.values()) else 360.0


def measure_probes(model: nn.Module, layer: str, size: int, probes: Sequence[str] | None = None,
                   n_angles: int = 32, channels: Sequence[int] | None = None, **tuning_params) -> ProbeBattery:
    """Every probe of ``probes`` (default: all of :data:`PROBES`) on ``layer``, sized to its
    receptive field; ``tuning_params`` go to :func:`~circuitatlas.analysis.tuning.radial_tuning`."""
    chosen = list(PROBES) if probes is None else list(probes)
    unknown = [p for p in chosen if p not in PROBES]
    if unknown or not chosen:
        raise InvalidInput(f"unknown probe(s) {unknown}; choose among {sorted(PROBES)}")
    model = model.eval()
    field = receptive_field(model, layer, size, model_device(tuning_params.get("device"), model))  # once for all
    rf = field_size(field)
    battery = ProbeBattery(layer, rf)
    for name in chosen:
        probe = PROBES[name]
        result = radial_tuning(model, layer, channels, stimulus=probe.stimulus, n_angles=n_angles, size=size,
                               period=probe.period, field=field, **probe.sized(rf), **tuning_params)
        result.params["probe"] = name
        battery.results[name] = result
    return battery


def battery_records(battery: ProbeBattery) -> tuple[dict, dict[int, dict[str, list[float]]]]:
    """What is stored of a battery: the layer's part (field size, each probe's angles, period and
    stimulus parameters) and each channel's responses per probe."""
    layer = {"field_px": battery.field_px, "probes": {
        name: {"angles": [float(a) for a in t.angles], "period": t.period, "params": t.params, "stimulus": t.stimulus}
        for name, t in battery.results.items()}}
    first = next(iter(battery.results.values()))
    channels = {int(c): {name: [float(v) for v in t.responses[:, i]] for name, t in battery.results.items()}
                for i, c in enumerate(first.channels)}
    return layer, channels


def battery_from_records(layer_name: str, layer: dict, channels: dict[int, dict[str, list[float]]]) -> ProbeBattery:
    """The battery :func:`battery_records` stored (preferred angles and selectivity recomputed)."""
    from circuitatlas.analysis.tuning import circular_mean

    battery = ProbeBattery(layer_name, float(layer["field_px"]))
    order = sorted(channels)
    for name, info in layer["probes"].items():
        angles, period = np.asarray(info["angles"], dtype=np.float64), float(info["period"])
        responses = np.asarray([channels[c][name] for c in order], dtype=np.float64).T
        preferred, strength = circular_mean(angles * 360.0 / period, responses)
        battery.results[name] = TuningResult(layer_name, order, angles, responses, preferred * period / 360.0,
                                             strength, info["stimulus"], dict(info["params"]), period)
    return battery
