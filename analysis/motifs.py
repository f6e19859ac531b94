"""Circuit motif detectors: pure functions over weights and neuron characterisations.

Each detector scores every candidate, and its p-value comes from a permutation null in which
the weights are shuffled within each layer pair (kernels reassigned to random unit pairs) while
the tuning stays: p = (1 + #{shuffles whose *best* candidate scores at least as high}) / (1 + n).
Comparing against the best candidate of each shuffle (a max-statistic test) keeps the chance of
any false report at ``alpha`` however many candidates were looked at.

Weights are (out, in, kh, kw) arrays; tuning is a :class:`Tuning` per layer (preferred angle,
selectivity and the response curve over angles, as from :func:`~circuitatlas.analysis.tuning.radial_tuning`).
Members are named ``"<layer>:<channel>"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Motif", "Tuning", "orientation_families", "rotation_equivariance", "kernel_rotation", "union_over_cases",
           "superposition", "flip_equivariance", "mirror_pairs", "mirror_similarity", "mirror_map", "mirror_map_from_tuning",
           "mirror_angle", "shuffle_weights"]


@dataclass
class Motif:
    kind: str
    members: dict[str, dict]  # "<layer>:<channel>" -> {"role": ..., "orientation": ...}
    score: float
    p_value: float
    params: dict = field(default_factory=dict)


@dataclass
class Tuning:
    """One layer's orientation tuning: ``responses`` (n_angles, C) over ``angles`` (degrees)."""

    angles: np.ndarray
    responses: np.ndarray
    preferred: np.ndarray  # (C,) degrees
    selectivity: np.ndarray  # (C,) vector strength in [0, 1]


def _wrap(deg: np.ndarray | float) -> np.ndarray:
    return (np.asarray(deg) + 180.0) % 360.0 - 180.0


def mirror_angle(deg: np.ndarray | float) -> np.ndarray:
    """The orientation of the horizontal mirror image (left-right flip): 180 - angle."""
    return (180.0 - np.asarray(deg)) % 360.0


def shuffle_weights(W: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kernels reassigned to random (out, in) pairs: the permutation null of every detector."""
    out, inp = W.shape[:2]
    flat = W.reshape(out * inp, *W.shape[2:])
    return flat[rng.permutation(out * inp)].reshape(W.shape)


def _shuffle_sums(sums: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kernel sums of :func:`shuffle_weights` (the detectors' statistics see only each
    kernel's sum, so shuffling the sums is the same null, without moving whole kernels)."""
    return rng.permutation(sums.ravel()).reshape(sums.shape)


def _p_value(observed: float, null_max: np.ndarray) -> float:
    return float((1 + np.sum(null_max >= observed - 1e-12)) / (1 + len(null_max)))


# -- rotation equivariance ---------------------------------------------------------------------
def orientation_families(tuning: Tuning, min_selectivity: float = 0.5, min_shape_corr: float = 0.8,
                         min_size: int = 4) -> list[list[int]]:
    """Groups of units that share one tuning shape up to rotation and cover the circle.

    Each tuned unit's curve is rotated so that its preferred angle sits at 0; units whose aligned,
    normalised curves correlate at least ``min_shape_corr`` with the group mean form a family; a
    family must have ``min_size`` units whose preferred angles spread around the circle.
    """
    n_angles = len(tuning.angles)
    step = 360.0 / n_angles
    tuned = [c for c in range(tuning.responses.shape[1]) if tuning.selectivity[c] >= min_selectivity
             and tuning.responses[:, c].max() > 0]
    aligned = {}
    for c in tuned:
        shift = int(round(tuning.preferred[c] / step)) % n_angles
        curve = np.roll(tuning.responses[:, c], -shift)
        curve = curve - curve.mean()
        norm = np.linalg.norm(curve)
        if norm > 0:
            aligned[c] = curve / norm
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
        spread = np.abs(np.exp(1j * np.deg2rad(tuning.preferred[members])).mean()) if members else 1.0
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


def rotation_equivariance(
    W: np.ndarray,
    tuning_in: Tuning,
    tuning_out: Tuning,
    layers: tuple[str, str] = ("A", "B"),
    n_bins: int = 8,
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
    **family_params,
) -> list[Motif]:
    """Orientation families in both layers whose family-to-family weights depend only on the
    orientation difference (a circulant), scored by R^2 of that dependence.

    Reports each family pair with p < ``alpha``: members with role ``upstream`` / ``downstream``
    and orientation, the excite-similar / inhibit-opposite profile (mean weight per difference
    bin), and how well kernels rotate with orientation (mean correlation of a kernel rotated by
    the orientation step with the matching kernel).
    """
    fam_in = orientation_families(tuning_in, **family_params)
    fam_out = orientation_families(tuning_out, **family_params)
    pairs = [(fi, fo) for fi in fam_in for fo in fam_out]
    if not pairs:
        return []
    sums = np.asarray(W.sum(axis=(2, 3)) if W.ndim == 4 else W, dtype=np.float64)

    def scores(summed: np.ndarray) -> list[float]:
        out = []
        for fi, fo in pairs:
            w = summed[np.ix_(fo, fi)].ravel()
            delta = (tuning_in.preferred[fi][None, :] - tuning_out.preferred[fo][:, None]).ravel()
            out.append(_circulant_score(w, delta, n_bins)[0])
        return out

    observed = scores(sums)
    rng = np.random.default_rng(seed)
    null = np.array([max(scores(_shuffle_sums(sums, rng))) for _ in range(n_perm)])
    motifs = []
    for (fi, fo), score in zip(pairs, observed):
        p = _p_value(score, null)
        if p >= alpha:
            continue
        w = sums[np.ix_(fo, fi)].ravel()
        delta = (tuning_in.preferred[fi][None, :] - tuning_out.preferred[fo][:, None]).ravel()
        _, profile = _circulant_score(w, delta, n_bins)
        members = {f"{layers[0]}:{c}": {"role": "upstream", "orientation": float(tuning_in.preferred[c])} for c in fi}
        members.update({f"{layers[1]}:{c}": {"role": "downstream", "orientation": float(tuning_out.preferred[c])}
                        for c in fo})
        motifs.append(Motif("rotation_equivariance", members, score, p, {
            "profile": [float(v) for v in profile], "bins_deg": [b * 360.0 / n_bins for b in range(n_bins)],
            "excite_similar": bool(profile[0] > 0), "inhibit_opposite": bool(profile[n_bins // 2] < 0),
            "kernel_rotation": kernel_rotation(W, fi, fo, tuning_in, tuning_out) if W.ndim == 4 else None,
            "n_perm": n_perm, "layers": list(layers)}))
    return motifs


def kernel_rotation(W: np.ndarray, fi: list[int], fo: list[int], t_in: Tuning, t_out: Tuning) -> float | None:
    """Mean correlation between kernel i->j rotated by (theta_j' - theta_j) and kernel i'->j',
    over pairs with the same orientation difference; None for 1x1 kernels."""
    if W.shape[2] < 3:
        return None
    from scipy import ndimage

    corrs = []
    for j in fo:
        for jj in fo:
            if j == jj:
                continue
            turn = float(_wrap(t_out.preferred[jj] - t_out.preferred[j]))
            for i in fi:
                target = t_in.preferred[i] + turn
                ii = min(fi, key=lambda c: abs(_wrap(t_in.preferred[c] - target)))
                if abs(_wrap(t_in.preferred[ii] - target)) > 360.0 / len(fi) / 3:
                    continue
                rotated = ndimage.rotate(W[j, i], turn, reshape=False, order=1)
                a, b = rotated.ravel(), W[jj, ii].ravel()
                if a.std() > 0 and b.std() > 0:
                    corrs.append(np.corrcoef(a, b)[0, 1])
    return float(np.mean(corrs)) if corrs else None


# -- flip equivariance ---------------------------------------------------------------------------
def mirror_map(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """The involution of ``n`` units that swaps each pair and leaves the others in place."""
    perm = np.arange(n)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def mirror_map_from_tuning(tuning: Tuning, min_selectivity: float = 0.3, tolerance: float = 15.0) -> np.ndarray:
    """A mirror map of a layer from orientation tuning alone: tuned units whose preferred angles
    are each other's horizontal mirror (within ``tolerance``, mutually nearest) swap; every other
    unit is taken to be its own mirror. Exact maps come from weights: chain
    :func:`flip_equivariance` from the input image, whose mirror map is the identity."""
    tuned = np.flatnonzero(tuning.selectivity >= min_selectivity)
    pref = tuning.preferred
    nearest = {}
    for a in tuned:
        err = np.abs(_wrap(pref[tuned] - mirror_angle(pref[a])))
        err[tuned == a] = np.inf
        if err.min() <= tolerance:
            nearest[int(a)] = int(tuned[int(np.argmin(err))])
    pairs = [(a, b) for a, b in nearest.items() if a < b and nearest.get(b) == a
             and abs(_wrap(pref[a] - mirror_angle(pref[a]))) > tolerance]
    return mirror_map(len(pref), pairs)


def _mirror(W: np.ndarray, input_mirror: np.ndarray) -> np.ndarray:
    """Each unit's weights as its horizontal mirror would have them: kernels flipped left-right,
    inputs swapped with their mirrors."""
    return W[:, input_mirror][..., ::-1]


def mirror_similarity(W: np.ndarray, input_mirror: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """S (out, out): cosine between unit k's weights and the mirror image of unit j's, and each
    unit's similarity to its own mirror (1 for a left-right symmetric unit). Symmetric, since
    mirroring is an isometry and an involution."""
    W = np.asarray(W, dtype=np.float32)
    if W.ndim == 2:
        W = W[:, :, None, None]
    perm = np.arange(W.shape[1]) if input_mirror is None else np.asarray(input_mirror)
    flat = W.reshape(W.shape[0], -1)
    mirrored = np.ascontiguousarray(_mirror(W, perm)).reshape(W.shape[0], -1)
    norms = np.linalg.norm(flat, axis=1)
    norms[norms == 0] = np.inf
    sim = (flat @ mirrored.T) / norms[:, None] / norms[None, :]
    return sim, np.diagonal(sim).copy()


def mirror_pairs(
    W: np.ndarray,
    input_mirror: np.ndarray | None = None,
    tuning_out: Tuning | None = None,
    min_similarity: float = 0.8,
    min_margin: float = 0.2,
    min_selectivity: float = 0.3,
    orientation_tolerance: float = 20.0,
) -> list[tuple[float, int, int]]:
    """Candidate mirror pairs (cosine, j, k), j < k, of a layer with weights ``W``: mutually most
    similar under :func:`mirror_similarity`, cosine at least ``min_similarity`` and at least
    ``min_margin`` above either unit's similarity to its own mirror (a symmetric unit is its own
    mirror, not half of a pair); when ``tuning_out`` is given and both units are tuned, their
    preferred angles must be mirrors within ``orientation_tolerance``. No significance test:
    these define the layer's mirror map for the next layer (:func:`mirror_map`)."""
    return _mirror_candidates(W, input_mirror, tuning_out, min_similarity, min_margin, min_selectivity,
                              orientation_tolerance)[0]


def _mirror_candidates(W: np.ndarray, input_mirror: np.ndarray | None, tuning_out: Tuning | None,
                       min_similarity: float = 0.8, min_margin: float = 0.2, min_selectivity: float = 0.3,
                       orientation_tolerance: float = 20.0) -> tuple[list[tuple[float, int, int]], np.ndarray]:
    """:func:`mirror_pairs`, and every unit's similarity to its own mirror."""
    sim, own = mirror_similarity(W, input_mirror)
    masked = sim.copy()
    np.fill_diagonal(masked, -np.inf)
    best = np.argmax(masked, axis=1)
    tuned = None if tuning_out is None else tuning_out.selectivity >= min_selectivity
    out = []
    for j, k in enumerate(best.tolist()):
        if j >= k or best[k] != j or sim[j, k] < min_similarity or sim[j, k] - max(own[j], own[k]) < min_margin:
            continue
        if tuned is not None and tuned[j] and tuned[k] and abs(
                _wrap(tuning_out.preferred[k] - mirror_angle(tuning_out.preferred[j]))) > orientation_tolerance:
            continue
        out.append((float(sim[j, k]), j, k))
    return out, own


def flip_equivariance(
    W: np.ndarray,
    input_mirror: np.ndarray | None = None,
    tuning_out: Tuning | None = None,
    layers: tuple[str, str] = ("A", "B"),
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
    **pair_params,
) -> list[Motif]:
    """Mirror pairs of layer B: units whose weights are each other's horizontal mirror image
    (kernels flipped left-right, inputs mapped by ``input_mirror``, the identity for the image),
    found by :func:`mirror_pairs` (``pair_params``) and kept where the permutation null gives
    p < ``alpha``. Score: the cosine. Members have roles ``unit`` and ``mirror`` (the lower
    channel is ``unit``), with orientations when ``tuning_out`` is given.

    A layer with very few kernels (a first layer over 3 colour channels) has a weak null: its
    shuffles often make exact mirror pairs by chance, so its true pairs may not reach ``alpha``.
    """
    W = np.asarray(W, dtype=np.float32)
    perm = np.arange(W.shape[1]) if input_mirror is None else np.asarray(input_mirror)
    if not np.array_equal(perm[perm], np.arange(len(perm))):
        raise ValueError("input_mirror must be an involution (each unit's mirror's mirror is itself)")
    found, own = _mirror_candidates(W, perm, tuning_out, **pair_params)
    if not found:
        return []
    rng = np.random.default_rng(seed)
    null = np.array([max((c[0] for c in mirror_pairs(shuffle_weights(W, rng), perm, tuning_out, **pair_params)),
                         default=0.0) for _ in range(n_perm)])
    motifs = []
    for score, j, k in found:
        p = _p_value(score, null)
        if p >= alpha:
            continue
        members = {f"{layers[1]}:{j}": {"role": "unit"}, f"{layers[1]}:{k}": {"role": "mirror"}}
        if tuning_out is not None:
            for c in (j, k):
                members[f"{layers[1]}:{c}"]["orientation"] = float(tuning_out.preferred[c])
        motifs.append(Motif("flip_equivariance", members, score, p, {
            "self_similarity": [float(own[j]), float(own[k])], "n_perm": n_perm, "layers": list(layers)}))
    return motifs


# -- union over cases ----------------------------------------------------------------------------
def _mirror_pairs(tuning: Tuning, min_selectivity: float, tolerance: float) -> list[tuple[int, int]]:
    tuned = [c for c in range(len(tuning.preferred)) if tuning.selectivity[c] >= min_selectivity]
    pairs = []
    for a in tuned:
        for b in tuned:
            if a < b and abs(_wrap(tuning.preferred[b] - mirror_angle(tuning.preferred[a]))) <= tolerance \
                    and abs(_wrap(tuning.preferred[a] - tuning.preferred[b])) > 2 * tolerance:
                pairs.append((a, b))
    return pairs


def union_over_cases(
    W_ab: np.ndarray,
    W_bc: np.ndarray,
    tuning_b: Tuning,
    layers: tuple[str, str, str] = ("A", "B", "C"),
    min_selectivity: float = 0.3,
    tolerance: float = 10.0,
    min_union: float = 0.5,
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
) -> list[Motif]:
    """Mirror-pair pathways (b, b') in layer B that inhibit each other's cases and both excite a
    unit u of layer C, each with at least ``min_union`` of u's strongest input. Score: the weaker of u's two inputs (relative to u's strongest input)
    times the weaker cross-inhibition (relative to each pathway's strongest input)."""
    s_ab = np.asarray(W_ab.sum(axis=(2, 3)) if W_ab.ndim == 4 else W_ab, dtype=np.float64)
    s_bc = np.asarray(W_bc.sum(axis=(2, 3)) if W_bc.ndim == 4 else W_bc, dtype=np.float64)
    pairs = _mirror_pairs(tuning_b, min_selectivity, tolerance)
    if not pairs:
        return []

    def candidates(ab: np.ndarray, bc: np.ndarray) -> list[tuple[float, int, int, int, int, int]]:
        out = []
        scale_c = np.abs(bc).max(axis=1) + 1e-12
        scale_b = np.abs(ab).max(axis=1) + 1e-12
        for b, bb in pairs:
            case, case_m = int(np.argmax(ab[b])), int(np.argmax(ab[bb]))
            if case == case_m:
                continue
            inhibit = min(-ab[b, case_m] / scale_b[b], -ab[bb, case] / scale_b[bb])
            if inhibit <= 0:
                continue
            union = np.minimum(bc[:, b], bc[:, bb]) / scale_c
            u = int(np.argmax(union))
            if union[u] >= min_union:
                out.append((float(union[u] * inhibit), b, bb, u, case, case_m))
        return out

    found = candidates(s_ab, s_bc)
    if not found:
        return []
    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_perm):
        null.append(max((c[0] for c in candidates(_shuffle_sums(s_ab, rng), _shuffle_sums(s_bc, rng))),
                        default=0.0))
    null = np.array(null)
    motifs = []
    for score, b, bb, u, case, case_m in found:
        p = _p_value(score, null)
        if p >= alpha:
            continue
        a_layer, b_layer, c_layer = layers
        members = {
            f"{a_layer}:{case}": {"role": "case"}, f"{a_layer}:{case_m}": {"role": "case_mirror"},
            f"{b_layer}:{b}": {"role": "pathway", "orientation": float(tuning_b.preferred[b])},
            f"{b_layer}:{bb}": {"role": "pathway_mirror", "orientation": float(tuning_b.preferred[bb])},
            f"{c_layer}:{u}": {"role": "union"},
        }
        motifs.append(Motif("union_over_cases", members, score, p, {"n_perm": n_perm, "layers": list(layers)}))
    return motifs


# -- superposition -------------------------------------------------------------------------------
def superposition(
    W: np.ndarray,
    class_responses: np.ndarray,
    layers: tuple[str, str] = ("A", "B"),
    min_targets: int = 3,
    dominance: float = 0.5,
    polysemantic_level: float = 0.25,
    secondary: float = 0.6,
    min_input_share: float = 0.15,
    class_responses_in: np.ndarray | None = None,
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
) -> list[Motif]:
    """A unit of layer A whose positive output spreads over several *carriers* in layer B with no
    dominant one. A carrier takes a clear part of the unit's output (at least 0.2 of its largest
    weight), at least ``min_input_share`` of the target's own excitatory input, and the unit is a
    secondary input there (at most ``secondary`` of the target's strongest). Carriers should be
    polysemantic: respond to at least two stimulus classes of ``class_responses`` (n_classes, C_B)
    at ``polysemantic_level`` of their maximum and, when ``class_responses_in`` (n_classes, C_A)
    is given, to the unit's own preferred class among them.

    Score: the participation ratio of the weights to the carriers, times the fraction of
    carriers that are polysemantic, times the squared fraction of the unit's outgoing weight that
    is excitatory. At least ``min_targets`` carriers.
    """
    sums = np.asarray(W.sum(axis=(2, 3)) if W.ndim == 4 else W, dtype=np.float64)  # (B, A)
    peak = class_responses.max(axis=0)
    responds = class_responses >= polysemantic_level * np.where(peak > 0, peak, np.inf)[None, :]  # (classes, B)
    poly = responds.sum(axis=0) >= 2
    carries = np.repeat(poly[:, None], sums.shape[1], axis=1)  # (B, A): target b can carry unit a's feature
    if class_responses_in is not None:  # ... and it responds to that feature's own class
        carries &= responds[np.argmax(class_responses_in, axis=0)].T

    def evaluate(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score of every unit of A (0 where it is no candidate) and the carrier mask (B, A)."""
        o = np.clip(s, 0, None)
        strongest_in = np.maximum(s.max(axis=1), 1e-12)[:, None]  # each target's strongest positive input
        # carriers: clear positive targets in which the unit is a secondary input
        input_share = o / np.maximum(o.sum(axis=1, keepdims=True), 1e-12)  # of the target's excitation
        carriers = (o >= 0.2 * o.max(axis=0)[None, :]) & (input_share >= min_input_share) & (o <= secondary * strongest_in)
        oc = np.where(carriers, o, 0.0)
        total = oc.sum(axis=0)
        n_carriers = carriers.sum(axis=0)
        ok = (total > 0) & (oc.max(axis=0) <= dominance * np.where(total > 0, total, np.inf)) & (n_carriers >= min_targets)
        pr = np.where(ok, total**2 / np.maximum((oc**2).sum(axis=0), 1e-300), 0.0)
        poly_frac = (carriers & carries).sum(axis=0) / np.maximum(n_carriers, 1)
        positive = o.sum(axis=0) / np.maximum(np.abs(s).sum(axis=0), 1e-300)  # excitation, not a mix of signs
        return np.where(ok, pr * poly_frac * positive**2, 0.0), carriers

    scores, target_mask = evaluate(sums)
    found = [(float(scores[f]), f, np.flatnonzero(target_mask[:, f]).tolist()) for f in np.flatnonzero(scores > 0)]
    if not found:
        return []
    rng = np.random.default_rng(seed)
    null = np.array([evaluate(_shuffle_sums(sums, rng))[0].max() for _ in range(n_perm)])
    motifs = []
    for score, f, targets in found:
        p = _p_value(score, null)
        if p >= alpha or score <= 0:
            continue
        members = {f"{layers[0]}:{f}": {"role": "feature"}}
        members.update({f"{layers[1]}:{t}": {"role": "carrier"} for t in targets})
        motifs.append(Motif("superposition", members, score, p, {
            "participation_ratio": float(np.clip(sums[:, f], 0, None).sum() ** 2
                                         / (np.clip(sums[:, f], 0, None) ** 2).sum()),
            "polysemantic_targets": int(poly[targets].sum()), "n_perm": n_perm, "layers": list(layers)}))
    return motifs
