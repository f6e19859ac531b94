"""Rotation equivariance: orientation families whose family-to-family weights depend only on the
orientation difference (a circulant), and whether kernels rotate with orientation."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from circuitatlas.analysis.motifs.common import (
    Findings,
    Motif,
    _p_value,
    _wrap,
    kernel_sums,
    null_summary,
    permutation_null,
)
from circuitatlas.names import unit

if TYPE_CHECKING:
    from circuitatlas.analysis.tuning import TuningResult

__all__ = ["orientation_families", "predicted_tuning", "rotation_equivariance", "kernel_rotation"]


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
    family must have ``min_size`` units whose preferred angles spread around the circle (of the
    tuning's period).

    Returns
    -------
    list of list of int
        Channel indices of each family (column indices of ``tuning.responses``), sorted.
    """
    aligned = _aligned_curves(tuning, min_selectivity)
    if not aligned:
        return []
    units = np.array(sorted(aligned))
    curves = np.stack([aligned[c] for c in units])
    similar = curves @ curves.T
    left = np.ones(len(units), dtype=bool)
    families: list[list[int]] = []
    while left.any():
        seed = int(np.argmax(np.where(left, (similar * left[None, :]).sum(axis=1), -np.inf)))
        members = left & (similar[seed] >= min_shape_corr)
        mean = curves[members].mean(axis=0)
        mean /= np.linalg.norm(mean) or 1.0
        members = left & (curves @ mean >= min_shape_corr)
        left &= ~members
        left[seed] = False
        chosen = units[members].tolist()
        if len(chosen) >= min_size and _spread(tuning.preferred_deg[chosen], tuning.period) < 0.5:
            families.append(sorted(chosen))
    return families


def _spread(preferred_deg: np.ndarray, period: float) -> float:
    """Vector strength of preferred angles on the circle of ``period``: 0 = spread all round."""
    return float(np.abs(np.exp(2j * np.pi * np.asarray(preferred_deg) / period).mean())) if len(preferred_deg) else 1.0


def _bins(delta: np.ndarray, n_bins: int, period: float) -> np.ndarray:
    return np.floor((delta % period) / (period / n_bins) + 0.5).astype(int) % n_bins


def _circulant_score(w: np.ndarray, bins: np.ndarray, n_bins: int) -> tuple[float, np.ndarray]:
    """R^2 of w explained by its orientation-difference bin, and the mean weight per bin."""
    profile = np.array([w[bins == b].mean() if np.any(bins == b) else 0.0 for b in range(n_bins)])
    total = ((w - w.mean()) ** 2).sum()
    if total <= 0:
        return 0.0, profile
    residual = ((w - profile[bins]) ** 2).sum()
    return float(1 - residual / total), profile


class _PairFit:
    """The weights (out, in) from family ``fi`` to family ``fo`` against their orientation
    differences: the circulant R^2, and each member's leave-one-out fit."""

    def __init__(self, sums: np.ndarray, fi: list[int], fo: list[int], t_in: TuningResult, t_out: TuningResult,
                 n_bins: int) -> None:
        period = t_out.period if t_out.period == t_in.period else 360.0
        self.fi, self.fo, self.n_bins = list(fi), list(fo), n_bins
        self.w = sums[np.ix_(fo, fi)]
        self.bins = _bins(t_in.preferred_deg[fi][None, :] - t_out.preferred_deg[fo][:, None], n_bins, period)

    def score(self) -> tuple[float, np.ndarray]:
        return _circulant_score(self.w.ravel(), self.bins.ravel(), self.n_bins)

    def explained(self, whole: _PairFit) -> float:
        """The share of the variance of ``whole``'s weights (the pair before pruning) that this
        pair's circulant explains: the weights of dropped members count as unexplained, so that
        pruning a shuffled family down to a few lucky units scores little."""
        total = ((whole.w - whole.w.mean()) ** 2).sum()
        if total <= 0:
            return 0.0
        r2, _ = self.score()
        return float(r2 * ((self.w - self.w.mean()) ** 2).sum() / total)

    def member_fits(self) -> tuple[np.ndarray, np.ndarray]:
        """Each upstream unit's (a column's) and each downstream unit's (a row's) fit: the
        correlation of its weights with the profile of every *other* column (row), the same
        without its strongest input (``rest``), and the fit's p-value against the unit's own
        weights permuted. A look-alike that follows the profile only through one strong input
        (driven by one family member) has a low ``rest`` fit, or a high p.
        Returns (upstream, downstream), each a (3, members) array of (fit, rest, p)."""
        onehot = np.eye(self.n_bins)[self.bins]  # (out, in, bins)
        sums, counts = (onehot * self.w[..., None]).sum(axis=(0, 1)), onehot.sum(axis=(0, 1))

        def fits(axis: int) -> np.ndarray:
            own_sums, own_counts = (onehot * self.w[..., None]).sum(axis=axis), onehot.sum(axis=axis)
            profile = (sums - own_sums) / np.maximum(counts - own_counts, 1)  # (units, bins) leave-one-out
            w = self.w if axis == 1 else self.w.T
            bins = self.bins if axis == 1 else self.bins.T
            predicted = _centred(np.take_along_axis(profile, bins, axis=1))  # (units, n)
            fit = np.einsum("un,un->u", _centred(w), predicted)
            orders = _permutations(w.shape[1])
            r_perm = np.einsum("upn,un->up", _centred(w[:, orders]), predicted)
            p = (1 + (r_perm >= fit[:, None] - 1e-12).sum(axis=1)) / (1 + orders.shape[0])
            if w.shape[1] < 3:
                return np.stack([fit, fit, p])
            rest = np.ones(w.shape, dtype=bool)
            rest[np.arange(len(w)), np.argmax(np.abs(w), axis=1)] = False
            w_rest, p_rest = w[rest].reshape(len(w), -1), predicted[rest].reshape(len(w), -1)
            return np.stack([fit, np.einsum("un,un->u", _centred(w_rest), _centred(p_rest)), p])

        return fits(0), fits(1)

    def pruned(self, min_fit: float, min_size: int, member_alpha: float) -> _PairFit | None:
        """Members dropped, the worst first (the profile recomputed each time), until each has a
        fit, and a fit without its strongest input, of at least ``min_fit``, the fit at p <=
        ``member_alpha`` (asked of members with 5 or more weights in the pair); None when either
        family falls under ``min_size``."""
        fit = self
        while True:
            if len(fit.fi) < min_size or len(fit.fo) < min_size:
                return None
            up, down = fit.member_fits()
            bad = [_badness(up, len(fit.fo), min_fit, member_alpha), _badness(down, len(fit.fi), min_fit, member_alpha)]
            if not np.isfinite(bad[0]).any() and not np.isfinite(bad[1]).any():
                return fit
            keep_in, keep_out = list(range(len(fit.fi))), list(range(len(fit.fo)))
            if bad[0].max() >= bad[1].max():
                keep_in.pop(int(np.argmax(bad[0])))
            else:
                keep_out.pop(int(np.argmax(bad[1])))
            fit = fit._subset(keep_in, keep_out)

    def _subset(self, keep_in: list[int], keep_out: list[int]) -> _PairFit:
        sub = object.__new__(_PairFit)
        sub.fi, sub.fo, sub.n_bins = [self.fi[i] for i in keep_in], [self.fo[j] for j in keep_out], self.n_bins
        sub.w, sub.bins = self.w[np.ix_(keep_out, keep_in)], self.bins[np.ix_(keep_out, keep_in)]
        return sub


_MEMBER_PERMS = 200  # permutations of each member's own weights
PREDICTED_MIN_SELECTIVITY = 0.3  # selectivity a weight-predicted tuning curve needs to join a family


_MIN_PERMUTED = 5  # a member with fewer weights in the pair has too few orders for a p-value (4! = 24)


def _badness(side: np.ndarray, n_weights: int, min_fit: float, member_alpha: float) -> np.ndarray:
    """How badly each member (a column of a (fit, rest, p) array) with ``n_weights`` weights in
    the pair fails; -inf where it passes."""
    fit, rest, p = side
    p = p if n_weights >= _MIN_PERMUTED else np.zeros_like(p)
    failing = (fit < min_fit) | (rest < min_fit) | (p > member_alpha)
    return np.where(failing, 1 - np.minimum(fit, rest) + p, -np.inf)


def _centred(x: np.ndarray) -> np.ndarray:
    """Rows (last axis) centred and scaled to unit length (all-zero rows stay zero)."""
    x = x - x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _permutations(n: int) -> np.ndarray:
    """_MEMBER_PERMS random orders of n items, the same on every call (a fixed generator): a
    member's p-value must not depend on how many were computed before it."""
    rng = np.random.default_rng(n)
    return np.argsort(rng.random((_MEMBER_PERMS, n)), axis=1)


def predicted_tuning(sums: np.ndarray, tuning_in: TuningResult) -> TuningResult:
    """The tuning a layer's units would get from their weights ``sums`` (out, in) over units
    whose tuning is ``tuning_in``: each unit's response to each angle the weighted sum of its
    inputs' responses (a linear reading of the layer, kernels summed over positions), rectified
    at its mean over angles (as a unit's bias would threshold it)."""
    from circuitatlas.analysis.tuning import circular_mean

    drive = tuning_in.responses @ sums.T  # (angles, out)
    responses = np.clip(drive - drive.mean(axis=0, keepdims=True), 0.0, None)  # a threshold at the mean drive
    preferred, strength = circular_mean(tuning_in.angles * 360.0 / tuning_in.period, responses)
    return replace(tuning_in, layer="predicted", channels=list(range(sums.shape[0])), responses=responses,
                   preferred_deg=preferred * tuning_in.period / 360.0, selectivity=strength)


def rotation_equivariance(
    W: np.ndarray,
    tuning_in: TuningResult,
    tuning_out: TuningResult | None = None,
    layers: tuple[str, str] = ("A", "B"),
    n_bins: int = 8,
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
    min_member_fit: float = 0.6,
    member_alpha: float = 0.05,
    downstream: str = "weights",
    **family_params,
) -> Findings:
    """Orientation families in both layers whose family-to-family weights depend only on the
    orientation difference (a circulant).

    Upstream families come from ``tuning_in`` (:func:`orientation_families`, ``family_params``).
    Downstream tuning is, with ``downstream="weights"`` (the default), the tuning the weights give
    (:func:`predicted_tuning`) and is predicted again from each shuffle of the null: a unit's
    measured tuning follows its strongest inputs whatever they are, which alone would make any
    network look excite-similar. ``downstream="measured"`` uses ``tuning_out`` instead.

    Each member must then follow the family's profile with its own weights: its leave-one-out fit
    (the correlation of its weights with the profile of the other members) at least
    ``min_member_fit``, also without its strongest input, the fit at p <= ``member_alpha`` against
    its own weights permuted (for members with 5 or more weights in the pair; a family of 4 has
    too few orders); the worst unit is dropped first. Units with look-alike tuning and
    unrelated weights, or driven by one family member alone, so stay out. Score: the share of the
    whole family pair's weight variance that the members' circulant explains (R^2 over the
    members, times their share of the variance). The null (weights shuffled) goes through the
    same steps.

    ``W`` is (out, in, kh, kw) or kernel sums (out, in). Reports each family pair with p <
    ``alpha``: members with role ``upstream`` / ``downstream``, orientation and ``fit``, the
    excite-similar / inhibit-opposite profile (mean weight per difference bin), and how well
    kernels rotate with orientation (:func:`kernel_rotation`, None for kernel sums).
    ``diagnostics`` say how far it got.
    """
    if downstream not in ("weights", "measured") or (downstream == "measured" and tuning_out is None):
        raise ValueError("downstream is 'weights', or 'measured' with tuning_out given")
    min_size = family_params.get("min_size", 4)
    min_sel = family_params.get("min_selectivity", 0.5)
    sums = kernel_sums(W)
    fam_in = orientation_families(tuning_in, **family_params)

    # a linear reading is broader than a unit's own tuning: its families need less selectivity
    out_params = family_params if downstream == "measured" else {
        **family_params, "min_selectivity": min(min_sel, PREDICTED_MIN_SELECTIVITY)}

    def downstream_tuning(summed: np.ndarray) -> TuningResult:
        return predicted_tuning(summed, tuning_in) if downstream == "weights" else tuning_out

    def fitted(summed: np.ndarray) -> list[tuple[_PairFit, float]]:
        """Each family pair pruned to the members that follow the profile, scored by the share
        of the whole pair's weight variance it explains."""
        t_out = downstream_tuning(summed)
        out = []
        for fo in orientation_families(t_out, **out_params) if fam_in else []:
            for fi in fam_in:
                whole = _PairFit(summed, fi, fo, tuning_in, t_out, n_bins)
                kept = whole.pruned(min_member_fit, min_size, member_alpha)
                if kept is not None:
                    out.append((kept, kept.explained(whole)))
        return out

    t_out = downstream_tuning(sums)
    fam_out = orientation_families(t_out, **out_params)
    diagnostics = {"stage": "families", "probe": tuning_in.stimulus, "downstream_tuning": downstream,
                   "selective_units": [int((tuning_in.selectivity >= min_sel).sum()),
                                       int((t_out.selectivity >= out_params.get("min_selectivity", min_sel)).sum())],
                   "families": [[len(f) for f in fam_in], [len(f) for f in fam_out]]}
    if not fam_in or not fam_out:
        side = "upstream" if not fam_in else "downstream"
        return Findings([], {**diagnostics, "reason": f"no orientation family of {min_size}+ units in the {side} "
                                                      f"layer under its probe"})

    def best(summed: np.ndarray) -> float:
        return max((score for _, score in fitted(summed)), default=0.0)

    scored = fitted(sums)
    diagnostics.update(stage="member_fit", family_pairs=len(fam_in) * len(fam_out), pairs_after_fit=len(scored))
    if not scored:
        return Findings([], {**diagnostics, "reason": "no family pair keeps min_size members whose own weights "
                                                      "follow the orientation profile"})
    null = permutation_null(best, [sums], n_perm, np.random.default_rng(seed))
    diagnostics.update(stage="null", **null_summary([score for _, score in scored], null))
    motifs = []
    for fit, score in scored:
        p = _p_value(score, null)
        if p >= alpha:
            continue
        r2, profile = fit.score()
        members: dict[str, dict] = {}
        up, down = fit.member_fits()
        for role, layer, family, side, tuning in (("upstream", layers[0], fit.fi, up, tuning_in),
                                                  ("downstream", layers[1], fit.fo, down, t_out)):
            members.update({unit(layer, c): {"role": role, "orientation": float(tuning.preferred_deg[c]),
                                             "fit": float(f), "fit_without_strongest": float(r), "fit_p": float(q)}
                            for c, (f, r, q) in zip(family, side.T)})
        motifs.append(Motif("rotation_equivariance", members, score, p, {
            "profile": [float(v) for v in profile], "bins_deg": [b * t_out.period / n_bins for b in range(n_bins)],
            "excite_similar": bool(profile[0] > 0), "inhibit_opposite": bool(profile[n_bins // 2] < 0),
            "kernel_rotation": kernel_rotation(W, fit.fi, fit.fo, tuning_in, t_out) if W.ndim == 4 else None,
            "r2_members": r2, "probe": tuning_in.stimulus, "downstream_tuning": downstream,
            "period": t_out.period, "n_perm": n_perm, "layers": list(layers)}))
    if not motifs:
        diagnostics["reason"] = f"the best family pair does not beat the shuffled weights' best at p < {alpha}"
    return Findings(motifs, diagnostics)


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
