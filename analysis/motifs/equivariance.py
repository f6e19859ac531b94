"""Rotation equivariance: orientation families whose family-to-family weights depend only on the
orientation difference (a circulant), and whether kernels rotate with orientation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from circuitatlas.analysis.motifs.common import Motif, _wrap, kernel_sums, permutation_p_values
from circuitatlas.names import unit

if TYPE_CHECKING:
    from circuitatlas.analysis.tuning import TuningResult

__all__ = ["orientation_families", "rotation_equivariance", "kernel_rotation"]


def _aligned_curves(tuning: TuningResult, min_selectivity: float) -> dict[int, np.ndarray]:
    """Each tuned unit's response curve rotated so its preferred angle sits at 0, centred and
    normalised to unit length."""
    n_angles = len(tuning.angles)
    step = 360.0 / n_angles
    tuned = [c for c in range(tuning.responses.shape[1]) if tuning.selectivity[c] >= min_selectivity
             and tuning.responses[:, c].max() > 0]
    aligned = {}
    for c in tuned:
        shift = int(round(tuning.preferred_deg[c] / step)) % n_angles
        curve = np.roll(tuning.responses[:, c], -shift)
        curve = curve - curve.mean()
        norm = np.linalg.norm(curve)
        if norm > 0:
            aligned[c] = curve / norm
    return aligned


def orientation_families(tuning: TuningResult, min_selectivity: float = 0.5, min_shape_corr: float = 0.8,
                         min_size: int = 4) -> list[list[int]]:
    """Groups of units that share one tuning shape up to rotation and cover the circle.

    Each tuned unit's curve is rotated so that its preferred angle sits at 0; units whose aligned,
    normalised curves correlate at least ``min_shape_corr`` with the group mean form a family; a
    family must have ``min_size`` units whose preferred angles spread around the circle.

    Returns
    -------
    list of list of int
        Channel indices of each family (column indices of ``tuning.responses``), sorted.
    """
    aligned = _aligned_curves(tuning, min_selectivity)
    families: list[list[int]] = []
    left = set(aligned)
    while left:
        seed = max(left, key=lambda c: sum(aligned[c] @ aligned[d] for d in left))
        mean = aligned[seed]
        members = [c for c in left if aligned[c] @ mean >= min_shape_corr]
        mean = np.mean([aligned[c] for c in members], axis=0)
        mean /= np.linalg.norm(mean) or 1.0
        members = sorted(c for c in left if aligned[c] @ mean >= min_shape_corr)
        left -= set(members) | {seed}
        spread = np.abs(np.exp(1j * np.deg2rad(tuning.preferred_deg[members])).mean()) if members else 1.0
        if len(members) >= min_size and spread < 0.5:
            families.append(members)
    return families


def _circulant_score(w: np.ndarray, delta: np.ndarray, n_bins: int) -> tuple[float, np.ndarray]:
    """R^2 of w explained by its orientation-difference bin, and the mean weight per bin."""
    bins = np.floor((delta % 360.0) / (360.0 / n_bins) + 0.5).astype(int) % n_bins
    profile = np.array([w[bins == b].mean() if np.any(bins == b) else 0.0 for b in range(n_bins)])
    total = ((w - w.mean()) ** 2).sum()
    if total <= 0:
        return 0.0, profile
    residual = ((w - profile[bins]) ** 2).sum()
    return float(1 - residual / total), profile


def _family_pair_fit(sums: np.ndarray, fi: list[int], fo: list[int], tuning_in: TuningResult,
                     tuning_out: TuningResult, n_bins: int) -> tuple[float, np.ndarray]:
    """:func:`_circulant_score` of the weights (out, in) from family ``fi`` to family ``fo``."""
    w = sums[np.ix_(fo, fi)].ravel()
    delta = (tuning_in.preferred_deg[fi][None, :] - tuning_out.preferred_deg[fo][:, None]).ravel()
    return _circulant_score(w, delta, n_bins)


def rotation_equivariance(
    W: np.ndarray,
    tuning_in: TuningResult,
    tuning_out: TuningResult,
    layers: tuple[str, str] = ("A", "B"),
    n_bins: int = 8,
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
    **family_params,
) -> list[Motif]:
    """Orientation families in both layers whose family-to-family weights depend only on the
    orientation difference (a circulant), scored by R^2 of that dependence.

    ``W`` is (out, in, kh, kw) or kernel sums (out, in); ``family_params`` go to
    :func:`orientation_families`. Reports each family pair with p < ``alpha``: members with role
    ``upstream`` / ``downstream`` and orientation, the excite-similar / inhibit-opposite profile
    (mean weight per difference bin), and how well kernels rotate with orientation
    (:func:`kernel_rotation`, None for kernel sums).
    """
    fam_in = orientation_families(tuning_in, **family_params)
    fam_out = orientation_families(tuning_out, **family_params)
    pairs = [(fi, fo) for fi in fam_in for fo in fam_out]
    if not pairs:
        return []
    sums = kernel_sums(W)

    def scores(summed: np.ndarray) -> list[float]:
        return [_family_pair_fit(summed, fi, fo, tuning_in, tuning_out, n_bins)[0] for fi, fo in pairs]

    observed = scores(sums)
    p_values = permutation_p_values(observed, lambda s: max(scores(s)), [sums], n_perm, np.random.default_rng(seed))
    motifs = []
    for (fi, fo), score, p in zip(pairs, observed, p_values):
        if p >= alpha:
            continue
        _, profile = _family_pair_fit(sums, fi, fo, tuning_in, tuning_out, n_bins)
        members = {unit(layers[0], c): {"role": "upstream", "orientation": float(tuning_in.preferred_deg[c])}
                   for c in fi}
        members.update({unit(layers[1], c): {"role": "downstream", "orientation": float(tuning_out.preferred_deg[c])}
                        for c in fo})
        motifs.append(Motif("rotation_equivariance", members, score, p, {
            "profile": [float(v) for v in profile], "bins_deg": [b * 360.0 / n_bins for b in range(n_bins)],
            "excite_similar": bool(profile[0] > 0), "inhibit_opposite": bool(profile[n_bins // 2] < 0),
            "kernel_rotation": kernel_rotation(W, fi, fo, tuning_in, tuning_out) if W.ndim == 4 else None,
            "n_perm": n_perm, "layers": list(layers)}))
    return motifs


def kernel_rotation(W: np.ndarray, fi: list[int], fo: list[int], t_in: TuningResult,
                    t_out: TuningResult) -> float | None:
    """Mean correlation between kernel i->j rotated by (theta_j' - theta_j) and kernel i'->j',
    over pairs with the same orientation difference.

    ``W`` is (out, in, kh, kw); ``fi`` / ``fo`` are the upstream / downstream families. Returns
    None for kernels under 3x3 or when no pair matches.
    """
    if W.shape[2] < 3:
        return None
    from scipy import ndimage

    corrs = []
    for j in fo:
        for jj in fo:
            if j == jj:
                continue
            turn = float(_wrap(t_out.preferred_deg[jj] - t_out.preferred_deg[j]))
            for i in fi:
                target = t_in.preferred_deg[i] + turn
                ii = min(fi, key=lambda c: abs(_wrap(t_in.preferred_deg[c] - target)))
                if abs(_wrap(t_in.preferred_deg[ii] - target)) > 360.0 / len(fi) / 3:
                    continue
                rotated = ndimage.rotate(W[j, i], turn, reshape=False, order=1)
                a, b = rotated.ravel(), W[jj, ii].ravel()
                if a.std() > 0 and b.std() > 0:
                    corrs.append(np.corrcoef(a, b)[0, 1])
    return float(np.mean(corrs)) if corrs else None
