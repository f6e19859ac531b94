"""Universality: do two networks hold the same features?

Each unit of a layer of network A and of a layer of network B is shown one shared probe set:
the stimulus battery (every probe of :mod:`circuitatlas.analysis.probes` turned through a full
circle, both polarities, at each network's receptive-field scale), plus natural images and
feature visualisations when there are some. A unit's *response profile* is its activation at
matched receptive-field positions: for a centred stimulus the unit at the centre of the map,
less the unit's mean over the stimulus's block (one probe at one scale and polarity, over its
angles: what counts is how the response turns with the stimulus, not how hard that probe drives
the unit, which any random filter shares); for a natural image every cell of a grid that both
maps are pooled onto (the same patch of the image in both networks). Two units match as well as
their profiles correlate (Pearson). Natural images are much the richer probe: a tuning curve
over one stimulus is nearly a sinusoid, which the best of many random units fits well.

Activations are streamed: each batch of probes adds to running first and second moments
(:class:`CrossMoments`), so memory grows with channels squared, never with the number of
images. Linear CKA of the two layers comes from the same moments.

**The null.** A match is only worth storing when it beats what a network that learnt nothing
gives: the same comparison against ``null_models`` random-initialisations of B's architecture
yields, for every unit of A, its best correlation with a random unit (A -> B), and for every
random unit its best correlation with A (B -> A). A match's p-value is the fraction of these
null best scores at least as high, ``(1 + #>=) / (1 + n)``. CKA gets a permutation null (the
samples of B shuffled against A on a fixed subsample) and the random networks' CKA beside it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from circuitatlas.analysis import stimuli
from circuitatlas.analysis.hooks import run_to_layers
from circuitatlas.analysis.probes import PROBES
from circuitatlas.analysis.tuning import circular_mean, model_device
from circuitatlas.errors import InvalidInput

__all__ = ["ProbeSet", "as_bytes", "battery_probes", "image_probes", "CrossMoments", "random_init", "LayerMatch",
           "match_layers", "circular_correlation", "FamilyMatch", "align_families", "MAX_GRID"]

MAX_GRID = 4  # natural images: each map is pooled onto at most a 4 x 4 grid of matched positions
_WHITE, _GREY, _BLACK = (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0)
_SILENT = 1e-10  # a unit whose variance is below this share of its mean square never varies: unmatched


@dataclass
class ProbeSet:
    """Probe images (N, S, S, 3) as bytes (0..255: a quarter of the memory of floats, and
    finer than any stimulus's anti-aliasing needs); ``grid[i]`` samples image i on the matched
    grid (natural images), else at the centre of the map only (centred stimuli); a label each;
    ``block[i]`` the stimulus block (-1 for images)."""

    images: np.ndarray
    grid: np.ndarray
    labels: list[str]
    block: np.ndarray | None = None  # a stimulus's block (probe, scale, polarity): -1 for images

    def __post_init__(self) -> None:
        self.images = as_bytes(self.images)
        if self.block is None:
            self.block = np.where(self.grid, -1, 0)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __add__(self, other: "ProbeSet") -> "ProbeSet":
        if len(other) and len(self) and other.size != self.size:
            other = other.resized(self.size)
        parts = [p for p in (self, other) if len(p)]
        if not parts:
            return self
        blocks, offset = [], 0
        for p in parts:  # block ids stay distinct across the parts
            blocks.append(np.where(p.block >= 0, p.block + offset, -1))
            offset += int(p.block.max(initial=-1)) + 1
        return ProbeSet(np.concatenate([p.images for p in parts]), np.concatenate([p.grid for p in parts]),
                        [label for p in parts for label in p.labels], np.concatenate(blocks))

    def resized(self, size: int) -> "ProbeSet":
        x = torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return ProbeSet(x.permute(0, 2, 3, 1).clamp(0, 1).numpy(), self.grid, self.labels, self.block)

    def counts(self) -> dict[str, int]:
        return {"stimuli": int((~self.grid).sum()), "images": int(self.grid.sum())}


def battery_probes(size: int, fields_px: Iterable[float], n_angles: int = 16) -> ProbeSet:
    """Every probe of the battery at each receptive-field size in ``fields_px`` (pixels of a
    ``size`` canvas), centred, over ``n_angles`` orientations of its period; lines and curves
    bright and dark on grey, gratings in both phases; bright and dark spots on grey."""
    n_angles = int(n_angles)
    if n_angles < 2:
        raise InvalidInput(f"n_angles must be at least 2, not {n_angles}")
    images, labels, blocks = [], [], []

    def add(image: np.ndarray, label: str) -> None:
        images.append(image)
        labels.append(label)
        blocks.append(re.sub(r"@[0-9.]+", "", label))  # the label less its angle

    for rf in sorted({round(float(f), 1) for f in fields_px}):
        for name, probe in PROBES.items():
            params = {"size": size, **probe.sized(rf)}
            fn = stimuli.STIMULI[probe.stimulus]
            for angle in np.arange(n_angles) * probe.period / n_angles:
                if probe.stimulus in ("line", "curve"):  # bright and dark strokes on the same grey
                    for polarity, colour in (("bright", _WHITE), ("dark", _BLACK)):
                        add(fn(orientation=float(angle), color=colour, background=_GREY, **params),
                            f"{name}-{polarity}@{angle:g}/rf{rf:g}")
                    continue
                img = fn(orientation=float(angle), **params)
                add(img, f"{name}@{angle:g}/rf{rf:g}")
                if probe.stimulus == "grating":  # the other phase: the same mean luminance
                    add(1.0 - img, f"{name}-inverted@{angle:g}/rf{rf:g}")
        for radius in (rf / 6, rf / 3):
            for polarity, centre in (("on", _WHITE), ("off", _BLACK)):
                add(stimuli.center_surround(max(1.0, radius), centre, _GREY, size=size),
                    f"center_surround-{polarity}@{radius:.1f}/rf{rf:g}")
    ids = {name: i for i, name in enumerate(dict.fromkeys(blocks))}
    return ProbeSet(np.stack(images), np.zeros(len(images), bool), labels,
                    np.array([ids[b] for b in blocks]))


def as_bytes(images: np.ndarray) -> np.ndarray:
    """Images as uint8: kept when they are, else floats in [0, 1] rounded to 0..255."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return (np.clip(images, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def image_probes(images: np.ndarray, labels: Sequence[str]) -> ProbeSet:
    """Natural images (or feature visualisations; floats in [0, 1] or bytes), each sampled on the
    matched grid."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise InvalidInput(f"probe images must be (N, S, S, 3), not {images.shape}")
    return ProbeSet(images, np.ones(len(images), bool), list(labels), np.full(len(images), -1))


class CrossMoments:
    """Running moments of paired samples x (m, p) and y (m, q), in float64 about a shift (the
    first batch's means) for stability: correlations between every column of x and of y, and
    linear CKA between the two sets of columns."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if self.n == 0:
            self.shift_x, self.shift_y = x.mean(0), y.mean(0)
            p, q = x.shape[1], y.shape[1]
            self.sx, self.sy = np.zeros(p), np.zeros(q)
            self.sxx, self.syy, self.sxy = np.zeros((p, p)), np.zeros((q, q)), np.zeros((p, q))
        x, y = x - self.shift_x, y - self.shift_y
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.sxx += x.T @ x
        self.syy += y.T @ y
        self.sxy += x.T @ y

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cov xx, cov yy, cov xy), each divided by n."""
        mx, my = self.sx / self.n, self.sy / self.n
        return (self.sxx / self.n - np.outer(mx, mx), self.syy / self.n - np.outer(my, my),
                self.sxy / self.n - np.outer(mx, my))

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """Columns of x and of y that vary over the samples."""
        cxx, cyy, _ = self.covariances()
        return (_varies(np.diag(cxx), self.shift_x + self.sx / self.n),
                _varies(np.diag(cyy), self.shift_y + self.sy / self.n))

    def correlation(self) -> np.ndarray:
        """(p, q) Pearson correlations; 0 where a column never varies."""
        cxx, cyy, cxy = self.covariances()
        live_x, live_y = self.live()
        sx = np.sqrt(np.where(live_x, np.diag(cxx), 1.0))
        sy = np.sqrt(np.where(live_y, np.diag(cyy), 1.0))
        corr = cxy / np.outer(sx, sy)
        corr[~live_x] = 0.0
        corr[:, ~live_y] = 0.0
        return np.clip(corr, -1.0, 1.0)

    def cka(self) -> float:
        """Linear CKA: ||Cxy||_F^2 / (||Cxx||_F ||Cyy||_F) over centred samples."""
        cxx, cyy, cxy = self.covariances()
        denominator = np.linalg.norm(cxx) * np.linalg.norm(cyy)
        return float((cxy ** 2).sum() / denominator) if denominator > 0 else 0.0


def _varies(variance: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Relative to the unit's own scale (its mean square), so that a deep random network's tiny
    activations still count and a large constant's rounding noise does not."""
    return variance > _SILENT * (variance + mean ** 2)


def cka_from_samples(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two sample matrices (rows paired), the textbook formula."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(x.T @ y) ** 2 / denominator) if denominator > 0 else 0.0


def cka_permutation_p(x: np.ndarray, y: np.ndarray, n_perm: int, rng: np.random.Generator) -> tuple[float, float]:
    """(CKA, permutation p-value) on paired samples, the rows of ``y`` shuffled ``n_perm`` times
    (Gram-matrix form: each permutation costs n^2)."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    k, l_ = x @ x.T, y @ y.T
    scale = np.linalg.norm(k) * np.linalg.norm(l_)
    if scale == 0:
        return 0.0, 1.0
    observed = float((k * l_).sum() / scale)
    beats = 0
    for _ in range(n_perm):
        perm = rng.permutation(len(x))
        beats += float((k * l_[np.ix_(perm, perm)]).sum() / scale) >= observed
    return observed, (1 + beats) / (1 + n_perm)


def random_init(module: nn.Module, seed: int) -> nn.Module:
    """A copy of ``module`` with fresh random weights: every submodule's ``reset_parameters``
    (BatchNorm's running statistics reset with it), seeded; a parameter owned by a module
    without one is shuffled (its values kept, their places random). The global RNG is untouched."""
    net = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset = set()
        for sub in net.modules():
            if callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()
                reset.update(id(p) for p in sub.parameters(recurse=False))
        with torch.no_grad():
            for p in net.parameters():
                if id(p) not in reset:
                    flat = p.view(-1)
                    flat.copy_(flat[torch.randperm(flat.numel(), device=flat.device)])
    return net.eval()


@dataclass
class LayerMatch:
    """Unit matching between ``layer_a`` of A and ``layer_b`` of B.

    ``corr[i, j]``: correlation of A's unit i with B's unit j (channel numbers); ``best_ab[i]``
    the index of A-unit i's best match in B (-1 when silent) and ``p_ab`` its p-value against
    the null; ``best_ba``/``p_ba`` the other way. ``null_ab``/``null_ba`` the null best scores,
    pooled over the layer's units: the p-values are calibrated for the layer as a whole (under
    the null, at most alpha of its units pass), not unit by unit (a unit that any random filter
    matches, such as a luminance detector, passes more easily than a selective one)."""

    layer_a: str
    layer_b: str
    corr: np.ndarray
    live_a: np.ndarray
    live_b: np.ndarray
    null_ab: np.ndarray
    null_ba: np.ndarray
    cka: float
    cka_p: float
    cka_random: list[float]
    samples: int
    grid: int
    best_ab: np.ndarray = field(init=False)
    best_ba: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        masked = np.where(self.live_a[:, None] & self.live_b[None, :], self.corr, -np.inf)
        self.best_ab = np.where(self.live_a & self.live_b.any(), masked.argmax(1), -1)
        self.best_ba = np.where(self.live_b & self.live_a.any(), masked.argmax(0), -1)

    @property
    def score_ab(self) -> np.ndarray:
        return np.where(self.best_ab >= 0, self.corr[np.arange(len(self.best_ab)), self.best_ab], np.nan)

    @property
    def score_ba(self) -> np.ndarray:
        return np.where(self.best_ba >= 0, self.corr[self.best_ba, np.arange(len(self.best_ba))], np.nan)

    @property
    def p_ab(self) -> np.ndarray:
        return _p_values(self.score_ab, self.null_ab)

    @property
    def p_ba(self) -> np.ndarray:
        return _p_values(self.score_ba, self.null_ba)

    def pairs(self) -> list[dict]:
        """Every best match, either way, once per pair: indices ``a`` and ``b``, ``score``,
        ``p_value`` (the larger of the two directions' when it is best both ways), ``mutual``."""
        out: dict[tuple[int, int], dict] = {}
        p_ab, p_ba = self.p_ab, self.p_ba
        for i, j in enumerate(self.best_ab):
            if j >= 0:
                out[(i, int(j))] = {"a": i, "b": int(j), "score": float(self.corr[i, j]), "p_value": float(p_ab[i]),
                                    "best_for": "a"}
        for j, i in enumerate(self.best_ba):
            if i >= 0:
                row = out.get((int(i), j))
                if row is None:
                    out[(int(i), j)] = {"a": int(i), "b": j, "score": float(self.corr[i, j]),
                                        "p_value": float(p_ba[j]), "best_for": "b"}
                else:
                    row.update(best_for="both", p_value=max(row["p_value"], float(p_ba[j])))
        for row in out.values():
            row["mutual"] = row["best_for"] == "both"
        return sorted(out.values(), key=lambda r: (r["a"], r["b"]))

    def null_quantile(self, q: float) -> float:
        """The ``q`` quantile of the null best scores (both directions pooled)."""
        pooled = np.concatenate([self.null_ab, self.null_ba])
        return float(np.quantile(pooled, q)) if pooled.size else float("nan")


def _p_values(scores: np.ndarray, null: np.ndarray) -> np.ndarray:
    if null.size == 0:
        return np.full(scores.shape, np.nan)
    ordered = np.sort(null)
    at_least = ordered.size - np.searchsorted(ordered, np.nan_to_num(scores, nan=np.inf), side="left")
    return np.where(np.isnan(scores), np.nan, (1.0 + at_least) / (1.0 + ordered.size))


def _samples(acts: torch.Tensor, stimuli_block: bool, g: int) -> np.ndarray:
    """Samples (m, C) of one batch of maps: for one block of stimuli the centre cell of each,
    less the block's mean (what is compared is each unit's profile over the block's angles,
    not how strongly the probe drives it overall); for images the g x g pooled cells of each."""
    if stimuli_block:
        centre = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2].double()
        return (centre - centre.mean(0, keepdim=True)).cpu().numpy()
    pooled = F.adaptive_avg_pool2d(acts, g)
    return pooled.permute(0, 2, 3, 1).reshape(-1, acts.shape[1]).double().cpu().numpy()


class _Sampled:
    """:func:`_samples` of one batch, each (network's outputs, layer, grid) computed once."""

    def __init__(self, stimuli_block: bool) -> None:
        self.stimuli_block = stimuli_block
        self.done: dict[tuple[int, str, int], np.ndarray] = {}

    def __call__(self, outputs: dict[str, torch.Tensor], layer: str, g: int) -> np.ndarray:
        key = (id(outputs), layer, g)
        if key not in self.done:
            self.done[key] = _samples(outputs[layer], self.stimuli_block, g)
        return self.done[key]


def _batches(probes: "ProbeSet", batch: int) -> list[np.ndarray]:
    """Index batches: each block of stimuli whole, then the images ``batch`` at a time."""
    out = [np.flatnonzero(probes.block == b) for b in dict.fromkeys(probes.block[~probes.grid].tolist())]
    images = np.flatnonzero(probes.grid)
    out += [images[i:i + batch] for i in range(0, len(images), batch)]
    return out


def _as_input(images: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def match_layers(net_a: nn.Module, net_b: nn.Module, pairs: Sequence[tuple[str, str]], probes: ProbeSet, *,
                 size_a: int, size_b: int, null_nets: Sequence[nn.Module] = (), batch: int = 64,
                 max_grid: int = MAX_GRID, cka_samples: int = 2000, n_perm: int = 200, seed: int = 0,
                 progress: Callable[[int], None] | None = None) -> list[LayerMatch]:
    """Match the units of each (layer of A, layer of B) in ``pairs`` over ``probes``, streamed in
    batches; ``null_nets`` are random initialisations of B's architecture (the null of every
    score). ``progress(n)`` counts probe images."""
    if not pairs:
        raise InvalidInput("name at least one pair of layers to compare")
    if not len(probes):
        raise InvalidInput("the probe set is empty")
    net_a, net_b = net_a.eval(), net_b.eval()
    nulls = [n.eval() for n in null_nets]
    device_a, device_b = model_device(None, net_a), model_device(None, net_b)
    layers_a = sorted({a for a, _ in pairs})
    layers_b = sorted({b for _, b in pairs})
    moments = {pair: CrossMoments() for pair in pairs}
    null_moments = {(pair, k): CrossMoments() for pair in pairs for k in range(len(nulls))}
    rng = np.random.default_rng(seed)
    grids: dict[tuple[str, str], int] = {}
    kept: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {pair: [] for pair in pairs}
    chosen: dict[tuple[str, str], np.ndarray] = {}
    seen: dict[tuple[str, str], int] = dict.fromkeys(pairs, 0)
    with torch.no_grad():
        for index in _batches(probes, batch):
            images, is_block = probes.images[index], not probes.grid[index[0]]
            out_a = run_to_layers(net_a, layers_a, _as_input(images, size_a, device_a))
            x_b = _as_input(images, size_b, device_b)
            out_b = run_to_layers(net_b, layers_b, x_b)
            out_nulls = [run_to_layers(n, layers_b, x_b) for n in nulls]
            sampled = _Sampled(is_block)  # a layer in several pairs is sampled once a batch
            for pair in pairs:
                la, lb = pair
                if pair not in grids:
                    ha, hb = out_a[la].shape[2:], out_b[lb].shape[2:]
                    grids[pair] = int(max(1, min(max_grid, *ha, *hb)))
                    total = int((~probes.grid).sum()) + int(probes.grid.sum()) * grids[pair] ** 2
                    chosen[pair] = np.sort(rng.choice(total, size=min(cka_samples, total), replace=False))
                g = grids[pair]
                xa, xb = sampled(out_a, la, g), sampled(out_b, lb, g)
                moments[pair].add(xa, xb)
                for k, out_n in enumerate(out_nulls):
                    null_moments[(pair, k)].add(xa, sampled(out_n, lb, g))
                lo = seen[pair]
                take = chosen[pair][(chosen[pair] >= lo) & (chosen[pair] < lo + len(xa))] - lo
                kept[pair].append((xa[take], xb[take]))
                seen[pair] = lo + len(xa)
            if progress:
                progress(len(images))
    results = []
    for pair in pairs:
        m = moments[pair]
        live_a, live_b = m.live()
        null_ab, null_ba, cka_random = [], [], []
        for k in range(len(nulls)):
            nm = null_moments[(pair, k)]
            corr = nm.correlation()
            _, live_r = nm.live()
            if live_a.any() and live_r.any():
                sub = corr[np.ix_(live_a, live_r)]
                null_ab.append(sub.max(1))
                null_ba.append(sub.max(0))
            cka_random.append(nm.cka())
        xs = np.concatenate([x for x, _ in kept[pair]])
        ys = np.concatenate([y for _, y in kept[pair]])
        _, cka_p = cka_permutation_p(xs, ys, n_perm, rng) if n_perm else (None, float("nan"))
        results.append(LayerMatch(pair[0], pair[1], m.correlation(), live_a, live_b,
                                  np.concatenate(null_ab) if null_ab else np.zeros(0),
                                  np.concatenate(null_ba) if null_ba else np.zeros(0),
                                  m.cka(), float(cka_p), cka_random, m.n, grids[pair]))
    return results


def circular_correlation(a_deg: np.ndarray, b_deg: np.ndarray, period: float = 360.0) -> float:
    """Circular correlation of paired angles (Jammalamadaka and SenGupta): 1 when b turns with a,
    -1 when it turns against a (a mirror image), about 0 when unrelated; NaN under 3 pairs."""
    a = np.deg2rad(np.asarray(a_deg, np.float64) * 360.0 / period)
    b = np.deg2rad(np.asarray(b_deg, np.float64) * 360.0 / period)
    if a.size < 3:
        return float("nan")
    sa = np.sin(a - np.angle(np.exp(1j * a).mean()))
    sb = np.sin(b - np.angle(np.exp(1j * b).mean()))
    denominator = np.sqrt((sa ** 2).sum() * (sb ** 2).sum())
    return float((sa * sb).sum() / denominator) if denominator > 0 else float("nan")


@dataclass
class FamilyMatch:
    """The family of B whose members best match a family of A: ``pairs`` (A unit index, B unit
    index, score, A orientation, B orientation), the mean ``score``, the circular correlation of
    the paired orientations and the mean turn from A's orientation to B's."""

    family_a: str
    family_b: str
    pairs: list[tuple[int, int, float, float, float]]
    score: float
    orientation_corr: float
    offset_deg: float


def align_families(match: LayerMatch, families_a: dict[str, dict[int, float]],
                   families_b: dict[str, dict[int, float]], period: float = 360.0) -> list[FamilyMatch]:
    """For each family of A (id -> {unit index in the layer: orientation}), the family of B whose
    members its members match best (each A member paired with its best-correlated B member);
    orientations of both measured in one frame (the same probe), repeating after ``period``."""
    out = []
    for fa, members_a in families_a.items():
        best: FamilyMatch | None = None
        for fb, members_b in families_b.items():
            idx_b = np.array(sorted(members_b))
            if not len(members_a) or not len(idx_b):
                continue
            pairs = []
            for i, angle_a in sorted(members_a.items()):
                j = int(idx_b[int(np.argmax(match.corr[i, idx_b]))])
                pairs.append((i, j, float(match.corr[i, j]), float(angle_a), float(members_b[j])))
            score = float(np.mean([p[2] for p in pairs]))
            if best is None or score > best.score:
                a_deg = np.array([p[3] for p in pairs])
                b_deg = np.array([p[4] for p in pairs])
                turn, _ = circular_mean((b_deg - a_deg) * 360.0 / period, np.ones((len(pairs), 1)))
                offset = float(turn[0]) * period / 360.0
                best = FamilyMatch(fa, fb, pairs, score, circular_correlation(a_deg, b_deg, period), offset)
        if best is not None:
            out.append(best)
    return out
