"""A second planted network, written independently of :mod:`circuitatlas.analysis.planted`: odd
Gabor edge detectors with polarity, an inverted-residual bottleneck, and a union layer, with kernel
sizes, unit counts and directions drawn per seed. Its ``truth`` has the same format as ``planted``'s.

Directions are in degrees, counter-clockwise, 0 = towards +x (columns increasing), 90 = up (rows
decreasing); an edge unit's direction is the one its bright side faces. The family's directions
are ``offset + i * 360 / K`` with ``offset = 90 + j * 180 / K``, so the set is closed under the
left-right mirror ``theta -> 180 - theta`` and mirror pairs always exist in ``edges``.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import torch
from torch import nn

from circuitatlas.analysis.planted import PlantedNetwork

__all__ = ["GaborNet", "build", "shuffled", "gabor_edge", "direction_profile", "LAYERS"]

LAYERS = ["edges", "expand", "depthwise", "project", "top"]


class GaborNet(nn.Module):
    """edges -> expand -> depthwise -> project -> top, each conv followed by ReLU."""

    def __init__(self, convs: dict[str, nn.Conv2d]) -> None:
        super().__init__()
        self.edges, self.expand, self.depthwise = convs["edges"], convs["expand"], convs["depthwise"]
        self.project, self.top = convs["project"], convs["top"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.edges(x))
        x = torch.relu(self.expand(x))
        x = torch.relu(self.depthwise(x))
        x = torch.relu(self.project(x))
        return torch.relu(self.top(x))


def _xy(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from the centre: x to the right, y upwards."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    return cols - size // 2, size // 2 - rows


def gabor_edge(direction: float, size: int, ratio: float = 4.0) -> np.ndarray:
    """Odd-phase Gabor (size, size) whose positive lobe faces ``direction``; zero-mean, unit norm.

    ``ratio`` is the wavelength in units of the across-edge envelope width ``size / 5``.
    """
    x, y = _xy(size)
    t = np.deg2rad(direction)
    across, along = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    sigma = size / 5.0
    k = np.exp(-across**2 / (2 * sigma**2) - along**2 / (2 * (1.5 * sigma) ** 2)) * np.sin(
        2 * np.pi * across / (ratio * sigma))
    k = k - k.mean()
    return k / np.linalg.norm(k)


def direction_profile(diff_deg: np.ndarray | float, kappa: float, opposite: float) -> np.ndarray:
    """Von-Mises bump ``exp(kappa (cos d - 1)) - opposite * exp(kappa (cos(d - 180) - 1))``."""
    c = np.cos(np.deg2rad(np.asarray(diff_deg, dtype=np.float64)))
    return np.exp(kappa * (c - 1)) - opposite * np.exp(kappa * (-c - 1))


def _circ(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _spread(rng: np.random.Generator, n: int, gap: float) -> list[float]:
    """``n`` random directions at least ``gap`` degrees apart."""
    out: list[float] = []
    while len(out) < n:
        d = float(rng.uniform(0, 360))
        if all(_circ(d, o) >= gap for o in out):
            out.append(d)
    return out


def _pattern(rng: np.random.Generator, size: int, n_blobs: int = 5) -> np.ndarray:
    """A random smooth (3, size, size) pattern of coloured blobs, made mostly left-right
    antisymmetric (antisymmetric part : symmetric part = 1 : 0.3 in norm); zero-mean, unit norm."""
    x, y = _xy(size)
    q = np.zeros((3, size, size))
    for _ in range(n_blobs):
        cx, cy = rng.uniform(-size / 2, size / 2, 2)
        colour = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0, 3)
        q += colour[:, None, None] * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (size / 6) ** 2))
    anti, sym = (q - q[..., ::-1]) / 2, (q + q[..., ::-1]) / 2
    sym = sym - sym.mean()
    p = anti / np.linalg.norm(anti) + 0.3 * sym / np.linalg.norm(sym)
    return p / np.linalg.norm(p)


def _noisy(w: np.ndarray, rel: float, rng: np.random.Generator) -> np.ndarray:
    """``w`` plus Gaussian noise of std ``rel`` x (std of its non-zero entries)."""
    return w + rel * w[w != 0].std() * rng.standard_normal(w.shape)  # drawn even at rel 0: same layout


def _conv(w: np.ndarray, bias: float, groups: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[-1], padding=w.shape[-1] // 2, groups=groups)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)).float())
        conv.bias.fill_(bias)
    return conv


def build(seed: int = 0, *, noise: float = 0.15, n_directions: int | None = None, size: int = 40) -> PlantedNetwork:
    """Planted network with rotation-equivariance, union-over-cases, superposition and flip motifs.

    Parameters
    ----------
    seed : int
        Seeds numpy and torch; kernel sizes, unit counts and directions are drawn from it.
    noise : float
        Relative Gaussian weight noise on ``project`` and ``top`` (a third of it on ``edges``).
    n_directions : int, optional
        Size K of the edge family (default: drawn from 6, 8, 12).
    size : int
        Input images are (N, 3, size, size) in [0, 1].

    Returns
    -------
    PlantedNetwork
        The :class:`GaborNet` module and its JSON-serialisable ``truth``.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    ka, kd, kc, m = (int(rng.choice(c)) for c in ([5, 7, 9], [3, 5, 7], [3, 5], [1, 2]))
    k = int(n_directions or rng.choice([6, 8, 12]))
    n_t, d_a, d_b = (int(rng.choice(c)) for c in ([3, 4, 5], [4, 5, 6], [4, 5, 6]))
    kappa, opposite, ratio = float(rng.uniform(3, 6)), float(rng.uniform(0.6, 1.0)), float(rng.uniform(3.5, 5))
    offset = (90.0 + 180.0 / k * int(rng.integers(2 * k))) % 360
    fam = [float((offset + i * 360.0 / k) % 360) for i in range(k)]
    feats = _spread(rng, n_t + 1, 30.0)
    dis = [float(d) for d in rng.uniform(0, 360, d_a)]
    # --- edges, logical order: family, case, mirror, features, gabor distractors, 2 random ---
    def lum(d: float) -> np.ndarray:  # luminance: the same kernel on all 3 colour channels
        return np.repeat(gabor_edge(d, ka, ratio)[None], 3, 0) / np.sqrt(3)

    pat = _pattern(rng, ka)
    kernels = [lum(d) for d in fam] + [pat, pat[..., ::-1]] + [lum(d) for d in feats + dis]
    kernels += [_pattern(rng, ka) for _ in range(2)]
    i_case, i_feat, i_dis = k, k + 2, k + 3 + n_t
    n_a = len(kernels)
    gabor = {i: d for i, d in enumerate(fam)} | {i_feat + i: d for i, d in enumerate(feats + dis)}
    pairs = [(i_case, i_case + 1)] + [(a, b) for a in gabor for b in gabor
                                      if a < b and _circ(gabor[b], 180.0 - gabor[a]) < 1e-6]
    w_a = np.stack(kernels)
    noise_a = noise / 3 * w_a[w_a != 0].std() * rng.standard_normal(w_a.shape)
    for a, b in pairs:  # keep mirror pairs exact: the planted kernels and their noise are mirrored
        w_a[b], noise_a[b] = w_a[a][..., ::-1], noise_a[a][..., ::-1]
    w_a = w_a + noise_a
    # --- project, logical order: family, 2 pathways, carriers, driven distractors, 2 random ---
    n_b = k + 2 + n_t + d_b + 2
    pm = np.zeros((n_b, n_a))
    pm[:k, :k] = direction_profile(np.subtract.outer(fam, fam).T, kappa, opposite)
    for p, (own, other) in enumerate(((i_case, i_case + 1), (i_case + 1, i_case))):
        pm[k + p, own], pm[k + p, other] = rng.uniform(0.8, 1.2), -rng.uniform(0.6, 1.0)
    carriers = list(range(k + 2, k + 2 + n_t))
    for t, c in enumerate(carriers):
        pm[c, i_feat], pm[c, i_feat + 1 + t] = rng.uniform(0.3, 0.45), 1.0
    drivers = [int(d) for d in rng.choice(list(range(k)) + list(range(i_dis, i_dis + d_a)), d_b)]
    for u, drv in enumerate(drivers):
        row = k + 2 + n_t + u
        pm[row] = rng.normal(0, 0.3, n_a)
        pm[row, drv] = 1.0
    pm[-2:] = rng.normal(0, 0.3, (2, n_a))
    pm = _noisy(pm, noise, rng)
    # --- top: union of both pathways, 3 random ---
    x, y = _xy(kc)
    tm = np.zeros((4, n_b, kc, kc))
    tm[0, k:k + 2] = np.exp(-(x**2 + y**2) / (2 * (kc / 3) ** 2))
    tm[1:] = rng.normal(0, 0.1, (3, n_b, kc, kc))
    tm = _noisy(tm, noise, rng)
    # --- shuffle channels: logical unit l of a layer sits at channel pos[l] ---
    pos_a, pos_b, pos_c = rng.permutation(n_a), rng.permutation(n_b), rng.permutation(4)
    w_edges, p_ch, w_top = np.empty_like(w_a), np.empty_like(pm), np.empty_like(tm)
    w_edges[pos_a] = w_a
    p_ch[np.ix_(pos_b, pos_a)] = pm
    w_top[np.ix_(pos_c, pos_b)] = tm
    blob = np.exp(-(_xy(kd)[0] ** 2 + _xy(kd)[1] ** 2) / (2 * (kd / 6) ** 2))
    convs = {"edges": _conv(w_edges, -0.01),
             "expand": _conv(np.repeat(np.eye(n_a), m, 0)[..., None, None], 0.0),
             "depthwise": _conv(np.repeat((blob / blob.sum())[None, None], n_a * m, 0), 0.0, groups=n_a * m),
             "project": _conv(np.repeat(p_ch, m, 1)[..., None, None] / m, -0.01),
             "top": _conv(w_top, 0.0)}

    def ea(i: int) -> str:
        return f"edges:{pos_a[i]}"

    def pb(i: int) -> str:
        return f"project:{pos_b[i]}"

    rot = {ea(i): {"role": "upstream", "orientation": d} for i, d in enumerate(fam)}
    rot |= {pb(i): {"role": "downstream", "orientation": d} for i, d in enumerate(fam)}
    union = {ea(i_case): {"role": "case"}, ea(i_case + 1): {"role": "case_mirror"},
             pb(k): {"role": "pathway"}, pb(k + 1): {"role": "pathway_mirror"}, f"top:{pos_c[0]}": {"role": "union"}}
    sup = {ea(i_feat): {"role": "feature", "orientation": feats[0]}} | {pb(c): {"role": "carrier"} for c in carriers}
    motifs = [
        {"kind": "rotation_equivariance", "layers": ["edges", "project"], "family_step": 360.0 / k, "members": rot},
        {"kind": "union_over_cases", "layers": ["edges", "project", "top"], "members": union},
        {"kind": "superposition", "layers": ["edges", "project"], "members": sup,
         "other_features": {pb(c): ea(i_feat + 1 + t) for t, c in enumerate(carriers)}},
        {"kind": "flip_equivariance", "layers": ["input", "edges"], "pairs": [[ea(a), ea(b)] for a, b in pairs]}]
    units = rot | union | sup
    units |= {ea(i_feat + 1 + t): {"role": "other_feature", "orientation": d} for t, d in enumerate(feats[1:])}
    units |= {ea(i_dis + i): {"role": "distractor", "orientation": d} for i, d in enumerate(dis)}
    units |= {ea(n_a - 1 - i): {"role": "distractor"} for i in range(2)}
    units |= {pb(k + 2 + n_t + u): {"role": "distractor", "driver": ea(drv)} for u, drv in enumerate(drivers)}
    units |= {pb(n_b - 1 - i): {"role": "distractor"} for i in range(2)}
    units |= {f"top:{pos_c[i]}": {"role": "distractor"} for i in range(1, 4)}
    truth = {"generator": "planted_gabor", "seed": seed, "layers": LAYERS, "input_size": [3, size, size],
             "noise": noise, "motifs": motifs, "units": units,
             "detector_layers": {"rotation_equivariance": ["edges", "project"],
                                 "union_over_cases": ["edges", "project", "top"],
                                 "superposition": ["edges", "project"], "flip_equivariance": ["edges"]},
             "params": {"k_edges": ka, "k_depthwise": kd, "k_top": kc, "expansion": m, "n_directions": k,
                        "n_targets": n_t, "kappa": kappa, "opposite": opposite, "offset": offset}}
    return PlantedNetwork(GaborNet(convs), json.loads(json.dumps(truth, default=_plain)))


def _plain(obj: object) -> object:
    """JSON fallback for numpy scalars."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def shuffled(net: PlantedNetwork, seed: int) -> PlantedNetwork:
    """Permutation null: a deep copy whose ``edges``, ``project`` and ``top`` kernels are reassigned
    to random (out, in) pairs; ``truth`` is copied with ``"shuffled": True``."""
    out = copy.deepcopy(net)
    rng = np.random.default_rng(seed)
    for name in ("edges", "project", "top"):
        conv = getattr(out.module, name)
        w = conv.weight.detach()
        flat = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])
        with torch.no_grad():
            conv.weight.copy_(flat[torch.from_numpy(rng.permutation(flat.shape[0]))].reshape(w.shape))
    out.truth["shuffled"] = True
    return out
