"""Toy Models of Superposition (Elhage et al., 2022), small enough to rerun on a CPU.

n sparse features are squeezed into m < n hidden dimensions and read back out:
``h = W x``, ``x' = ReLU(W^T h + b)``, trained to minimise the importance-weighted squared error.
Each feature is zero with probability ``1 - density`` and uniform in [0, 1] otherwise. Many
models (instances) train at once, one per (density, importance) setting, as one batched job.

What comes out:

* ``dimensions_per_feature``: D* = m / ||W||_F^2, how many hidden dimensions each learned feature
  gets on average (1 without superposition, 1/2 for antipodal pairs);
* ``feature_dimensionality``: D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 per feature, which
  clusters at the fractions of the uniform polytopes: 1 (a dimension of its own), 3/4
  (tetrahedron), 2/3 (triangle), 1/2 (antipodal pair), 2/5 (pentagon);
* ``two_feature_phases``: with two features in one dimension, which is represented (the more
  important, the other, or both in superposition) as importance and density vary.

Pure functions over torch tensors and numpy arrays; plots are Pillow images, saving is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from circuitatlas import checks

__all__ = ["ToyModels", "train_toy_models", "dimensions_per_feature", "feature_dimensionality", "sparsity_sweep",
           "fraction_counts", "two_feature_phases", "summary", "PhaseDiagram", "plot_sweep", "plot_phases", "FRACTIONS"]

FRACTIONS = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4}
PHASES = ("not_represented", "dedicated", "superposition")


@dataclass
class ToyModels:
    W: np.ndarray  # (instances, m, n)
    b: np.ndarray  # (instances, n)
    density: np.ndarray  # (instances,) probability that a feature is non-zero
    importance: np.ndarray  # (instances, n)
    loss: np.ndarray  # (instances,) final importance-weighted loss


def train_toy_models(
    n_features: int,
    n_hidden: int,
    density: np.ndarray | list[float],
    importance: np.ndarray | list[float] | None = None,
    steps: int = 4000,
    batch: int = 1024,
    lr: float = 1e-2,
    seed: int = 0,
    eval_batch: int | None = None,
) -> ToyModels:
    """Train one toy model per entry of ``density`` (with ``importance`` (n,) shared, or
    (instances, n) per model; default uniform), all at once. Seeded and CPU-friendly."""
    n_features, n_hidden = checks.whole("n_features", n_features, 1), checks.whole("n_hidden", n_hidden, 1)
    steps, batch = checks.whole("steps", steps, 1), checks.whole("batch", batch, 1)
    lr, seed = checks.real("lr", lr, 0.0, above=True), checks.whole("seed", seed, 0)
    generator = torch.Generator().manual_seed(seed)
    density_t = torch.as_tensor(np.asarray(density, dtype=np.float32))
    k = len(density_t)
    imp = np.ones(n_features, dtype=np.float32) if importance is None else np.asarray(importance, dtype=np.float32)
    imp_t = torch.as_tensor(np.broadcast_to(imp, (k, n_features)).copy())
    W = torch.empty(k, n_hidden, n_features)
    for i in range(k):
        W[i] = torch.randn(n_hidden, n_features, generator=generator) * (2.0 / (n_hidden + n_features)) ** 0.5
    W.requires_grad_(True)
    b = torch.zeros(k, n_features, requires_grad=True)
    optimizer = torch.optim.Adam([W, b], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        loss = _loss(W, b, _batch(k, batch, n_features, density_t, generator), imp_t)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        final = _loss(W, b, _batch(k, eval_batch or 4 * batch, n_features, density_t, generator), imp_t)
    return ToyModels(W.detach().numpy(), b.detach().numpy(), density_t.numpy(), imp_t.numpy(), final.numpy())


def _batch(k: int, batch: int, n: int, density: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    on = torch.rand(k, batch, n, generator=generator) < density[:, None, None]
    return torch.rand(k, batch, n, generator=generator) * on


def _loss(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    hidden = torch.einsum("kbn,kmn->kbm", x, W)
    out = torch.relu(torch.einsum("kbm,kmn->kbn", hidden, W) + b[:, None, :])
    return (importance[:, None, :] * (x - out) ** 2).sum(-1).mean(-1)


def dimensions_per_feature(W: np.ndarray) -> np.ndarray:
    """D* = m / ||W||_F^2 for each model of ``W`` (instances, m, n)."""
    W = np.asarray(W, dtype=np.float64)
    return W.shape[1] / np.maximum((W**2).sum(axis=(1, 2)), 1e-12)


def feature_dimensionality(W: np.ndarray) -> np.ndarray:
    """D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2 for every feature (instances, n); 0 for a
    feature the model does not represent (||W_i|| ~ 0)."""
    W = np.asarray(W, dtype=np.float64)
    norms = np.linalg.norm(W, axis=1)  # (k, n)
    unit = W / np.maximum(norms, 1e-12)[:, None, :]
    overlaps = np.einsum("kmi,kmj->kij", unit, W) ** 2  # (k, n, n)
    dim = norms**2 / np.maximum(overlaps.sum(axis=2), 1e-12)
    return np.where(norms > 1e-3, dim, 0.0)


@dataclass
class SweepResult:
    models: ToyModels
    dimensions_per_feature: np.ndarray  # (instances,)
    feature_dimensionality: np.ndarray  # (instances, n)
    norms: np.ndarray  # (instances, n) ||W_i||


def sparsity_sweep(n_features: int = 200, n_hidden: int = 20, n_densities: int = 24, min_density: float = 0.005,
                   steps: int = 4000, batch: int = 512, seed: int = 0, importance_decay: float = 1.0) -> SweepResult:
    """Models at log-spaced densities from 1 down to ``min_density`` (importance_i =
    ``importance_decay``**i; 1.0 is uniform, as in the paper's feature-dimensionality study)."""
    n_densities = checks.whole("n_densities", n_densities, 1)
    min_density = checks.real("min_density", min_density, 0.0, 1.0, above=True)
    importance_decay = checks.real("importance_decay", importance_decay, 0.0, above=True)
    density = np.geomspace(1.0, min_density, n_densities)
    importance = importance_decay ** np.arange(n_features)
    models = train_toy_models(n_features, n_hidden, density, importance, steps=steps, batch=batch, seed=seed)
    return SweepResult(models, dimensions_per_feature(models.W), feature_dimensionality(models.W),
                       np.linalg.norm(models.W, axis=1))


def fraction_counts(result: SweepResult, tolerance: float = 0.03, min_norm: float = 0.5) -> dict[str, int]:
    """How many represented features (||W_i|| >= ``min_norm``) sit within ``tolerance`` of each
    fraction of :data:`FRACTIONS`, over all models of a sweep."""
    dims = result.feature_dimensionality[result.norms >= min_norm]
    return {name: int(np.sum(np.abs(dims - value) <= tolerance)) for name, value in FRACTIONS.items()}


@dataclass
class PhaseDiagram:
    importance: np.ndarray  # (a,) relative importance of feature 2
    density: np.ndarray  # (d,)
    phase: np.ndarray  # (d, a) index into PHASES for feature 2
    W: np.ndarray  # (d, a, 2) the learned weights of the two features


def two_feature_phases(n_importance: int = 9, n_density: int = 9, steps: int = 3000, batch: int = 1024,
                       restarts: int = 4, lr: float = 1e-2, seed: int = 0) -> PhaseDiagram:
    """Two features in one hidden dimension: feature 1 has importance 1, feature 2 ``r`` from
    0.1 to 10; density from 1 to 0.01. Each setting trains ``restarts`` models and keeps the
    lowest loss (one hidden dimension has local minima). Phase of feature 2:
    ``not_represented`` (|w2| < 0.5), ``dedicated`` (it has the dimension to itself: |w1| < 0.5),
    else ``superposition`` (both represented, antipodal)."""
    importance = np.geomspace(0.1, 10.0, n_importance)
    density = np.geomspace(1.0, 0.01, n_density)
    dd, rr = np.meshgrid(density, importance, indexing="ij")
    imp = np.stack([np.ones(dd.size), rr.ravel()], axis=1)
    models = train_toy_models(2, 1, np.tile(dd.ravel(), restarts), np.tile(imp, (restarts, 1)), steps=steps,
                              batch=batch, lr=lr, seed=seed, eval_batch=32 * batch)
    best = models.loss.reshape(restarts, -1).argmin(axis=0)
    w = models.W[:, 0, :].reshape(restarts, -1, 2)[best, np.arange(dd.size)]  # (settings, 2)
    represented = np.abs(w) >= 0.5
    phase = np.where(~represented[:, 1], 0, np.where(~represented[:, 0], 1, 2))
    return PhaseDiagram(importance, density, phase.reshape(dd.shape), w.reshape(*dd.shape, 2))


def summary(sweep: SweepResult, phases: PhaseDiagram | None = None, tolerance: float = 0.03) -> dict:
    """The findings as data: D* per density, where it sits on the plateaus at 1 and 1/2, how
    many features sit at each fraction, and the phase of every two-feature setting."""
    inv = 1.0 / sweep.models.density
    d_star = sweep.dimensions_per_feature
    out = {
        "features": int(sweep.models.W.shape[2]), "hidden": int(sweep.models.W.shape[1]),
        "inverse_density": [round(float(v), 3) for v in inv], "d_star": [round(float(v), 4) for v in d_star],
        "plateau_1": [round(float(v), 3) for v in inv[np.abs(d_star - 1.0) <= tolerance]],
        "plateau_half": [round(float(v), 3) for v in inv[np.abs(d_star - 0.5) <= tolerance]],
        "fractions": fraction_counts(sweep, tolerance),
    }
    if phases is not None:
        out["phases"] = {"importance": [round(float(v), 3) for v in phases.importance],
                         "density": [round(float(v), 4) for v in phases.density],
                         "phase": [[PHASES[int(p)] for p in row] for row in phases.phase]}
    return out


def plot_sweep(result: SweepResult, size: tuple[int, int] = (720, 420)) -> Image.Image:
    """D* (line) and every represented feature's D_i (dots) against 1/density on a log axis,
    with the fractions marked."""
    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 20, 30, height - 40
    inv = 1.0 / result.models.density
    lo, hi = np.log10(inv.min()), np.log10(inv.max()) or 1.0

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (np.log10(x) - lo) / max(hi - lo, 1e-9) * (right - left), bottom - min(y, 1.1) / 1.1 * (bottom - top))

    for name, value in FRACTIONS.items():
        y = xy(inv.min(), value)[1]
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((8, y - 6), name, fill=(120, 120, 120))
    for k, x in enumerate(inv):
        for d, norm in zip(result.feature_dimensionality[k], result.norms[k]):
            if norm >= 0.5:
                px, py = xy(x, d)
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=(31, 119, 180))
    points = [xy(x, d) for x, d in zip(inv, result.dimensions_per_feature)]
    draw.line(points, fill=(0, 0, 0), width=2)
    draw.line([(left, bottom), (right, bottom)], fill="black")
    draw.line([(left, top), (left, bottom)], fill="black")
    draw.text((left, height - 30), f"1/density, {inv.min():.0f} to {inv.max():.0f} (log)   "
              "line: D* = m/||W||_F^2   dots: D_i", fill="black")
    draw.text((left, 8), f"toy model: {result.models.W.shape[2]} features in {result.models.W.shape[1]} dims",
              fill="black")
    return img


def plot_phases(diagram: PhaseDiagram, cell: int = 36) -> Image.Image:
    """The two-feature phase diagram: rows from dense (top) to sparse, columns from feature 2
    much less to much more important than feature 1."""
    colours = {0: (200, 200, 200), 1: (44, 160, 44), 2: (214, 39, 40)}
    rows, cols = diagram.phase.shape
    img = Image.new("RGB", (cols * cell + 120, rows * cell + 60), "white")
    draw = ImageDraw.Draw(img)
    for r in range(rows):
        for c in range(cols):
            x, y = 100 + c * cell, 10 + r * cell
            draw.rectangle([x, y, x + cell - 2, y + cell - 2], fill=colours[int(diagram.phase[r, c])])
        draw.text((8, 10 + r * cell + cell // 3), f"d={diagram.density[r]:.3g}", fill="black")
    draw.text((100, rows * cell + 16), f"importance of feature 2: {diagram.importance[0]:.2g} .. "
              f"{diagram.importance[-1]:.2g}", fill="black")
    draw.text((100, rows * cell + 32), "grey: not represented  green: dedicated  red: superposition", fill="black")
    return img
