"""Flip equivariance: units whose weights are each other's horizontal mirror image, and the mirror
maps (which unit is which unit's mirror) that chain the test from one layer to the next."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from circuitatlas.analysis.motifs.common import (
    Findings,
    Motif,
    _p_value,
    mirror_angle,
    null_summary,
    permutation_null,
)
from circuitatlas.names import unit

if TYPE_CHECKING:
    from circuitatlas.analysis.tuning import TuningResult

__all__ = ["mirror_map", "mirror_map_from_tuning", "mirror_similarity", "mirror_pairs", "flip_equivariance"]


def mirror_map(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """The involution of ``n`` units that swaps each pair and leaves the others in place.

    >>> mirror_map(4, [(0, 2)]).tolist()
    [2, 1, 0, 3]
    """
    perm = np.arange(n)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def mirror_map_from_tuning(tuning: TuningResult, min_selectivity: float = 0.3, tolerance: float = 15.0
                           ) -> np.ndarray:
    """A mirror map of a layer from orientation tuning alone.

    Tuned units whose preferred angles are each other's horizontal mirror (within ``tolerance``
    degrees, mutually nearest) swap; every other unit is taken to be its own mirror. Exact maps
    come from weights: chain :func:`flip_equivariance` from the input image, whose mirror map is
    the identity. Returns the permutation (C,).
    """
    tuned = np.flatnonzero(tuning.selectivity >= min_selectivity)
    pref = tuning.preferred_deg
    nearest = {}
    for a in tuned:
        err = _mirror_error(pref[tuned], pref[a], tuning.period)
        err[tuned == a] = np.inf
        if err.min() <= tolerance:
            nearest[int(a)] = int(tuned[int(np.argmin(err))])
    pairs = [(a, b) for a, b in nearest.items() if a < b and nearest.get(b) == a
             and _mirror_error(pref[a], pref[a], tuning.period) > tolerance]
    return mirror_map(len(pref), pairs)


def _mirror_error(deg: np.ndarray | float, of: float, period: float = 360.0) -> np.ndarray:
    """How far (degrees) ``deg`` is from the mirror image of angle ``of``, on a circle of ``period``."""
    diff = np.asarray(deg, dtype=np.float64) - mirror_angle(of)
    return np.abs((diff + period / 2) % period - period / 2)


def _mirror(W: np.ndarray, input_mirror: np.ndarray) -> np.ndarray:
    """Each unit's weights as its horizontal mirror would have them: kernels flipped left-right,
    inputs swapped with their mirrors."""
    return W[:, input_mirror][..., ::-1]


def mirror_similarity(W: np.ndarray, input_mirror: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """S (out, out): cosine between unit k's weights and the mirror image of unit j's, and each
    unit's similarity to its own mirror (out,), 1 for a left-right symmetric unit.

    ``W`` is (out, in, kh, kw) or (out, in); ``input_mirror`` (in,) maps each input to its mirror
    (None: the identity). S is symmetric, since mirroring is an isometry and an involution.
    """
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
    tuning_out: TuningResult | None = None,
    min_similarity: float = 0.8,
    min_margin: float = 0.2,
    min_selectivity: float = 0.3,
    orientation_tolerance: float = 20.0,
) -> list[tuple[float, int, int]]:
    """Candidate mirror pairs (cosine, j, k), j < k, of a layer with weights ``W``.

    Pairs are mutually most similar under :func:`mirror_similarity`, with cosine at least
    ``min_similarity`` and at least ``min_margin`` above either unit's similarity to its own
    mirror (a symmetric unit is its own mirror, not half of a pair); when ``tuning_out`` is given
    and both units are tuned, their preferred angles must be mirrors within
    ``orientation_tolerance``. No significance test: these define the layer's mirror map for the
    next layer (:func:`mirror_map`).
    """
    return _mirror_candidates(W, input_mirror, tuning_out, min_similarity, min_margin, min_selectivity,
                              orientation_tolerance)[0]


def _mirror_candidates(W: np.ndarray, input_mirror: np.ndarray | None, tuning_out: TuningResult | None,
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
        if tuned is not None and tuned[j] and tuned[k] and _mirror_error(
                tuning_out.preferred_deg[k], tuning_out.preferred_deg[j], tuning_out.period) > orientation_tolerance:
            continue
        out.append((float(sim[j, k]), j, k))
    return out, own


def flip_equivariance(
    W: np.ndarray,
    input_mirror: np.ndarray | None = None,
    tuning_out: TuningResult | None = None,
    layers: tuple[str, str] = ("A", "B"),
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
    **pair_params,
) -> Findings:
    """Mirror pairs of layer B: units whose weights are each other's horizontal mirror image.

    Kernels are flipped left-right and inputs mapped by ``input_mirror`` (the identity for the
    image); pairs are found by :func:`mirror_pairs` (``pair_params``) and kept where the
    permutation null gives p < ``alpha``. Score: the cosine. Members have roles ``unit`` and
    ``mirror`` (the lower channel is ``unit``), with orientations when ``tuning_out`` is given.
    Tuning labels the pairs and does not select them: a unit's tuning follows its weights, so a
    check of mirrored preferred angles would hold for pairs in the weights and fail for pairs
    made by a shuffle, and so bias the null.

    A layer with very few kernels (a first layer over 3 colour channels) has a weak null: its
    shuffles often make exact mirror pairs by chance, so its true pairs may not reach ``alpha``.
    Exact pairs score 1 only up to float32 rounding, and a null pair that ties with an observed
    one counts against it (:data:`~.common.TIE`): which one a rounding bit favours decides nothing.
    """
    W = np.asarray(W, dtype=np.float32)
    perm = np.arange(W.shape[1]) if input_mirror is None else np.asarray(input_mirror)
    if not np.array_equal(perm[perm], np.arange(len(perm))):
        raise ValueError("input_mirror must be an involution (each unit's mirror's mirror is itself)")
    found, own = _mirror_candidates(W, perm, None, **pair_params)
    diagnostics = {"stage": "candidates", "candidates": len(found),
                   "best_mirror_cosine": _best_mirror_cosine(W, perm)}
    if not found:
        return Findings([], {**diagnostics, "reason": "no two units are each other's mirror image closely enough "
                                                      "(min_similarity, min_margin)"})

    def best(shuffled: np.ndarray) -> float:
        return max((c[0] for c in mirror_pairs(shuffled, perm, None, **pair_params)), default=0.0)

    observed = [c[0] for c in found]
    null = permutation_null(best, [W], n_perm, np.random.default_rng(seed))
    diagnostics.update(stage="null", **null_summary(observed, null))
    motifs = []
    for (score, j, k) in found:
        p = _p_value(score, null)
        if p >= alpha:
            continue
        members = {unit(layers[1], j): {"role": "unit"}, unit(layers[1], k): {"role": "mirror"}}
        if tuning_out is not None:
            for c in (j, k):
                members[unit(layers[1], c)]["orientation"] = float(tuning_out.preferred_deg[c])
        motifs.append(Motif("flip_equivariance", members, score, p, {
            "self_similarity": [float(own[j]), float(own[k])], "n_perm": n_perm, "layers": list(layers)}))
    if not motifs:
        diagnostics["reason"] = f"no mirror pair beats the shuffled weights' best at p < {alpha}"
    return Findings(motifs, diagnostics)


def _best_mirror_cosine(W: np.ndarray, perm: np.ndarray) -> float | None:
    """The highest cosine between one unit's weights and another's mirror image."""
    if W.shape[0] < 2:
        return None
    sim, _ = mirror_similarity(W, perm)
    np.fill_diagonal(sim, -np.inf)
    return float(sim.max())
