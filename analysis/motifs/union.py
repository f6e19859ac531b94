"""Union over cases: two mirror-image pathways that inhibit each other's case and both excite
one downstream unit, which so responds to either case."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from circuitatlas.analysis.motifs.common import Motif, _wrap, kernel_sums, mirror_angle, permutation_p_values
from circuitatlas.names import unit

if TYPE_CHECKING:
    from circuitatlas.analysis.tuning import TuningResult

__all__ = ["union_over_cases"]


def _tuned_mirror_pairs(tuning: TuningResult, min_selectivity: float, tolerance: float) -> list[tuple[int, int]]:
    """Pairs (a, b), a < b, of tuned units with mirrored preferred angles (within ``tolerance``)
    that are not nearly the same angle."""
    pref = tuning.preferred_deg
    tuned = [c for c in range(len(pref)) if tuning.selectivity[c] >= min_selectivity]
    pairs = []
    for a in tuned:
        for b in tuned:
            if a < b and abs(_wrap(pref[b] - mirror_angle(pref[a]))) <= tolerance \
                    and abs(_wrap(pref[a] - pref[b])) > 2 * tolerance:
                pairs.append((a, b))
    return pairs


def _union_candidates(ab: np.ndarray, bc: np.ndarray, pairs: list[tuple[int, int]], min_union: float
                      ) -> list[tuple[float, int, int, int, int, int]]:
    """(score, b, b', u, case, case') for each mirror pair (b, b') of ``pairs`` that inhibits the
    other's case and shares a union unit u, from kernel sums ``ab`` (B, A) and ``bc`` (C, B)."""
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


def union_over_cases(
    W_ab: np.ndarray,
    W_bc: np.ndarray,
    tuning_b: TuningResult,
    layers: tuple[str, str, str] = ("A", "B", "C"),
    min_selectivity: float = 0.3,
    tolerance: float = 10.0,
    min_union: float = 0.5,
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
) -> list[Motif]:
    """Mirror-pair pathways (b, b') in layer B that inhibit each other's cases and both excite a
    unit u of layer C, each with at least ``min_union`` of u's strongest input.

    ``W_ab`` (B, A, kh, kw) and ``W_bc`` (C, B, kh, kw), or their kernel sums. Score: the weaker
    of u's two inputs (relative to u's strongest input) times the weaker cross-inhibition
    (relative to each pathway's strongest input). Members have roles ``case``, ``case_mirror``,
    ``pathway``, ``pathway_mirror`` (with orientations) and ``union``.
    """
    s_ab, s_bc = kernel_sums(W_ab), kernel_sums(W_bc)
    pairs = _tuned_mirror_pairs(tuning_b, min_selectivity, tolerance)
    if not pairs:
        return []
    found = _union_candidates(s_ab, s_bc, pairs, min_union)
    if not found:
        return []

    def best(ab: np.ndarray, bc: np.ndarray) -> float:
        return max((c[0] for c in _union_candidates(ab, bc, pairs, min_union)), default=0.0)

    p_values = permutation_p_values([c[0] for c in found], best, [s_ab, s_bc], n_perm, np.random.default_rng(seed))
    a_layer, b_layer, c_layer = layers
    motifs = []
    for (score, b, bb, u, case, case_m), p in zip(found, p_values):
        if p >= alpha:
            continue
        members = {
            unit(a_layer, case): {"role": "case"}, unit(a_layer, case_m): {"role": "case_mirror"},
            unit(b_layer, b): {"role": "pathway", "orientation": float(tuning_b.preferred_deg[b])},
            unit(b_layer, bb): {"role": "pathway_mirror", "orientation": float(tuning_b.preferred_deg[bb])},
            unit(c_layer, u): {"role": "union"},
        }
        motifs.append(Motif("union_over_cases", members, score, p, {"n_perm": n_perm, "layers": list(layers)}))
    return motifs
