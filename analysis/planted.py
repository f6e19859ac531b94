"""Hand-built networks with planted circuits: weights set by code, not training, in the spirit of
the Curve Circuits article's "artificial artificial neural network". Each comes with its ground
truth, so that tuning and motif detectors can be checked across seeds and sizes.

Layer names and ``truth`` members use ``"<layer>:<channel>"``; prefix the model id for uids.
Orientations follow :mod:`circuitatlas.analysis.stimuli` (degrees, counter-clockwise, 0 = right;
a curve's orientation is the direction its convex side faces, a line's is its direction mod 180).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from circuitatlas.analysis.stimuli import along_across, arc_polar, pixel_grid

__all__ = ["PlantedNetwork", "build", "KINDS", "line_kernel", "arc_kernel", "orientation_profile"]


@dataclass
class PlantedNetwork:
    """``module`` maps (N, 3, H, W) images to its last layer; ``truth`` is JSON-serialisable."""

    module: nn.Module
    truth: dict = field(default_factory=dict)


class _Stack(nn.Module):
    """Named conv layers, each followed by ReLU (the last one too, so units are rectified)."""

    def __init__(self, layers: dict[str, nn.Conv2d]) -> None:
        super().__init__()
        self.names = list(layers)
        for name, conv in layers.items():
            setattr(self, name, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = torch.relu(getattr(self, name)(x))
        return x


def line_kernel(orientation: float, size: int = 7, sigma_across: float = 0.8, sigma_along: float = 2.0
                ) -> np.ndarray:
    """A zero-mean detector of a bright line along ``orientation`` (size x size)."""
    along, across = along_across(*pixel_grid(size), orientation)
    k = np.exp(-across**2 / (2 * sigma_across**2) - along**2 / (2 * sigma_along**2))
    envelope = np.exp(-along**2 / (2 * sigma_along**2)) * np.exp(-across**2 / (2 * (3 * sigma_across) ** 2))
    k = k - envelope * k.sum() / envelope.sum()
    return k / np.abs(k).sum()


def arc_kernel(orientation: float, line_orientations: np.ndarray, radius: float, size: int, span: float = 150.0,
               sigma: float = 0.9) -> np.ndarray:
    """Weights (n_lines, size, size) from line detectors to a curve detector: positive where a
    line of the arc's tangent orientation lies on an arc (convex side towards ``orientation``,
    midpoint at the kernel centre), negative for the orthogonal line there."""
    rho, theta, off, _ = arc_polar(*pixel_grid(size), orientation, radius)
    weight = np.exp(-(rho - radius) ** 2 / (2 * sigma**2)) * (np.abs(off) <= span / 2)
    tangent = theta + 90
    match = np.cos(2 * np.deg2rad(line_orientations[:, None, None] - tangent[None]))
    return weight[None] * match


_SIZES = {"mid": 11, "high": 5, "top": 5}


class _Plan:
    """Channels of each stage (mid, high, top) handed out to motifs, then one conv per stage."""

    def __init__(self, n_lines: int) -> None:
        self.lines = np.arange(n_lines) * 180.0 / n_lines
        self.blocks: dict[str, list[tuple[int, int, np.ndarray, np.ndarray]]] = {s: [] for s in _SIZES}
        self.count = {"edges": n_lines, "mid": 0, "high": 0, "top": 0}
        self.motifs: list[dict] = []
        self.units: dict[str, dict] = {f"edges:{i}": {"role": "line", "orientation": float(t)}
                                       for i, t in enumerate(self.lines)}

    def new(self, stage: str, n: int) -> list[int]:
        first = self.count[stage]
        self.count[stage] += n
        return list(range(first, first + n))

    def connect(self, stage: str, out_ch: int, in_ch: int, kernel: np.ndarray) -> None:
        self.blocks[stage].append((out_ch, in_ch, kernel, np.zeros(0)))

    def modules(self, rng: np.random.Generator, noise: float) -> dict[str, nn.Conv2d]:
        edges = nn.Conv2d(3, len(self.lines), 7, padding=3)
        with torch.no_grad():
            w = np.stack([line_kernel(t) for t in self.lines])[:, None].repeat(3, 1) / 3.0
            edges.weight.copy_(torch.from_numpy(w).float())
            edges.bias.fill_(-0.02)
        layers = {"edges": edges}
        prev = "edges"
        for stage, size in _SIZES.items():
            if self.count[stage] == 0:
                break
            w = np.zeros((self.count[stage], self.count[prev], size, size))
            for out_ch, in_ch, kernel, _ in self.blocks[stage]:
                pad = (size - kernel.shape[-1]) // 2
                w[out_ch, in_ch] += np.pad(kernel, pad) if pad else kernel
            if noise:
                w += noise * rng.normal(0, np.abs(w[w != 0]).std() if np.any(w) else 1.0, w.shape)
            conv = nn.Conv2d(self.count[prev], self.count[stage], size, padding=size // 2)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w).float())
                conv.bias.fill_(-0.02 if stage == "mid" else 0.0)
            layers[stage] = conv
            prev = stage
        return layers

    def add_motif(self, motif: dict) -> None:
        self.motifs.append(motif)
        self.units.update(motif["members"])


def orientation_profile(difference_deg: np.ndarray | float, sigma: float = 25.0, opposite: float = 1.0
                        ) -> np.ndarray:
    """Weight from an early curve to a curve ``difference_deg`` apart: a Gaussian bump for similar
    orientations, a negative one for opposite orientations, about zero at 90 degrees (the Curve
    Circuits article's pattern). A cosine, which we used first, excites so broadly that the curve
    units responded most to curves about 20 degrees off their own orientation.

    >>> np.round(orientation_profile(np.array([0.0, 45.0, 90.0, 180.0])), 2).tolist()
    [1.0, 0.2, 0.0, -1.0]
    """
    d = np.abs((np.asarray(difference_deg, dtype=np.float64) + 180) % 360 - 180)
    return np.exp(-d**2 / (2 * sigma**2)) - opposite * np.exp(-(d - 180) ** 2 / (2 * sigma**2))


def _plant_equivariance(plan: _Plan, rng: np.random.Generator, k: int = 8, radius: float = 5.0) -> None:
    """K early-curve units (arc templates over the line detectors: lines along the arc excite,
    the opposite arc inhibits), then K curve units whose kernels are rotated copies: excited by
    early curves of similar orientation, inhibited by opposite ones (:func:`orientation_profile`)."""
    orients = np.arange(k) * 360.0 / k
    early, curves = plan.new("mid", k), plan.new("high", k)
    for unit, o in zip(early, orients):
        w = arc_kernel(o, plan.lines, radius, 11) - 0.6 * arc_kernel(o + 180, plan.lines, radius, 11)
        w = w / np.abs(w).sum() * 8.0
        for line_ch in range(len(plan.lines)):
            plan.connect("mid", unit, line_ch, w[line_ch])
    x, y = pixel_grid(5)
    for j, oj in zip(curves, orients):
        along, across = along_across(x, y, oj + 90)  # an elongated blob along the tangent of unit j's curve
        blob = np.exp(-along**2 / (2 * 1.5**2) - across**2 / (2 * 0.6**2))
        blob = blob / blob.sum() * 4.0 / k * 2
        for i, oi in zip(early, orients):
            plan.connect("high", j, i, float(orientation_profile(oi - oj)) * blob)
    plan.add_motif({
        "kind": "rotation_equivariance", "family_step": 360.0 / k, "layers": ["mid", "high"],
        "members": {**{f"mid:{u}": {"role": "early_curve", "orientation": float(o)} for u, o in zip(early, orients)},
                    **{f"high:{u}": {"role": "curve", "orientation": float(o)} for u, o in zip(curves, orients)}},
    })


def _plant_union(plan: _Plan, rng: np.random.Generator, orientation: float = 30.0, radius: float = 5.0) -> None:
    """Two mirror cases (a curve and its horizontal mirror) -> two pathways that inhibit each
    other -> one unit excited by both: the union over cases."""
    mirror = (180.0 - orientation) % 360
    cases, paths, union = plan.new("mid", 2), plan.new("high", 2), plan.new("top", 1)
    for unit, o in zip(cases, (orientation, mirror)):
        w = arc_kernel(o, plan.lines, radius, 11)
        w = w / np.abs(w).sum() * 8.0
        for line_ch in range(len(plan.lines)):
            plan.connect("mid", unit, line_ch, w[line_ch])
    centre = np.zeros((5, 5))
    centre[2, 2] = 1.0
    x, y = pixel_grid(5)
    spot = np.exp(-(x**2 + y**2) / 2.0)
    for p, c, other in ((paths[0], cases[0], cases[1]), (paths[1], cases[1], cases[0])):
        plan.connect("high", p, c, 1.0 * spot / spot.sum() * 3)
        plan.connect("high", p, other, -1.0 * spot / spot.sum() * 3)
    for p in paths:
        plan.connect("top", union[0], p, centre * 1.5)
    plan.add_motif({
        "kind": "union_over_cases", "layers": ["mid", "high", "top"],
        "members": {f"mid:{cases[0]}": {"role": "case", "orientation": orientation},
                    f"mid:{cases[1]}": {"role": "case_mirror", "orientation": mirror},
                    f"high:{paths[0]}": {"role": "pathway", "orientation": orientation},
                    f"high:{paths[1]}": {"role": "pathway_mirror", "orientation": mirror},
                    f"top:{union[0]}": {"role": "union"}},
    })


def _plant_superposition(plan: _Plan, rng: np.random.Generator, n_targets: int = 4, weight: float = 0.35) -> None:
    """A feature unit (one line orientation) spread with moderate weights over ``n_targets``
    downstream units, each of which also carries another, unrelated feature strongly."""
    n_lines = len(plan.lines)
    feats = plan.new("mid", n_targets + 1)
    targets = plan.new("high", n_targets)
    picks = rng.choice(n_lines, size=n_targets + 1, replace=False)
    centre = np.zeros((1, 1)) + 1.0
    for unit, line_ch in zip(feats, picks):
        plan.connect("mid", unit, int(line_ch), centre * 1.0)
    spread, others = feats[0], feats[1:]
    for target, other in zip(targets, others):
        plan.connect("high", target, spread, centre * weight)
        plan.connect("high", target, other, centre * 1.0)
    plan.add_motif({
        "kind": "superposition", "layers": ["mid", "high"],
        "members": {f"mid:{spread}": {"role": "feature", "orientation": float(plan.lines[picks[0]])},
                    **{f"high:{t}": {"role": "carrier"} for t in targets}},
        "other_features": {f"high:{t}": f"mid:{o}" for t, o in zip(targets, others)},
    })
    for unit, line_ch in zip(others, picks[1:]):
        plan.units[f"mid:{unit}"] = {"role": "other_feature", "orientation": float(plan.lines[line_ch])}


def _plant_distractors(plan: _Plan, rng: np.random.Generator, n: int = 4) -> None:
    """Units with random weights on every stage in use: the noise a detector must ignore."""
    prev = "edges"
    for stage, size in _SIZES.items():
        if plan.count[stage] == 0:
            break
        for unit in plan.new(stage, n):
            for in_ch in range(plan.count[prev]):
                plan.connect(stage, unit, in_ch, rng.normal(0, 0.05, (size, size)))
            plan.units[f"{stage}:{unit}"] = {"role": "distractor"}
        prev = stage


def _compose(rng: np.random.Generator, motifs: list[str], n_lines: int = 8, noise: float = 0.0,
             distractors: int = 0, **sizes) -> PlantedNetwork:
    plan = _Plan(n_lines)
    planters = {"equivariance": _plant_equivariance, "union_over_cases": _plant_union,
                "superposition": _plant_superposition}
    for name in motifs:
        params = {k: v for k, v in sizes.items() if k in planters[name].__code__.co_varnames}
        planters[name](plan, rng, **params)
    if distractors:
        _plant_distractors(plan, rng, distractors)
    layers = plan.modules(rng, noise)
    truth = {"kind": "+".join(motifs), "layers": list(layers), "motifs": plan.motifs, "units": plan.units,
             "input_size": [3, 32, 32], "noise": noise}
    return PlantedNetwork(_Stack(layers), json.loads(json.dumps(truth)))


def build(kind: str, seed: int = 0, **sizes) -> PlantedNetwork:
    """Build a planted network on top of ``n_lines`` oriented line detectors (layer ``edges``),
    with layers ``mid``, ``high`` (and ``top`` for union over cases). Kinds:

    * ``"equivariance"`` (``k`` orientations, ``radius``): early curves in ``mid``, curves in ``high``;
    * ``"union_over_cases"`` (``orientation``, ``radius``);
    * ``"superposition"`` (``n_targets``, ``weight``);
    * ``"mixed"``: all three plus ``distractors`` random units per layer (default 4).

    Every kind takes ``noise`` (relative Gaussian noise on all weights) and ``distractors``.

    >>> net = build("equivariance", k=8)
    >>> net.module(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 8, 32, 32])
    >>> sorted({m["kind"] for m in build("mixed").truth["motifs"]})
    ['rotation_equivariance', 'superposition', 'union_over_cases']
    """
    if kind not in KINDS:
        raise ValueError(f"unknown planted kind {kind!r}; choose one of {sorted(KINDS)}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    if kind == "mixed":
        sizes.setdefault("distractors", 4)
    return _compose(rng, KINDS[kind], **sizes)


KINDS = {"equivariance": ["equivariance"], "union_over_cases": ["union_over_cases"],
         "superposition": ["superposition"], "mixed": ["equivariance", "union_over_cases", "superposition"]}
