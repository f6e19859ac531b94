"""Union over cases: two pathways, each excited by its own case and inhibited by the other's, that
both excite one downstream unit, which so responds to either case (left- and right-facing heads,
a curve and its mirror). Found from signed weights alone: any two units can be the cases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from circuitatlas.analysis.motifs.common import (
    Findings,
    Motif,
    _p_value,
    kernel_sums,
    null_summary,
    permutation_null,
)
from circuitatlas.analysis.motifs.flip import mirror_similarity
from circuitatlas.names import unit

if TYPE_CHECKING:
    from circuitatlas.analysis.tuning import TuningResult

__all__ = ["union_over_cases", "union_candidates"]

_CHUNK = 4096  # pathway pairs scored at once (a (C, chunk) array)


def _cross_inhibition(ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pathway's case (its strongest excitatory input) and, for every pair of pathways (b, b'),
    how strongly each inhibits the other's case relative to its own strongest input (the weaker
    of the two; <= 0 where either does not inhibit, or where both share a case)."""
    case = np.argmax(ab, axis=1)
    scale = np.abs(ab).max(axis=1) + 1e-12
    cross = -ab[:, case] / scale[:, None]  # cross[b, b']: b's inhibition of the case of b'
    inhibit = np.minimum(cross, cross.T)
    excited = ab[np.arange(len(case)), case] > 0
    inhibit[(case[:, None] == case[None, :]) | ~excited[:, None] | ~excited[None, :]] = 0.0
    return case, inhibit


def union_candidates(ab: np.ndarray, bc: np.ndarray, min_union: float = 0.8
                     ) -> list[tuple[float, int, int, int, int, int]]:
    """(score, b, b', u, case, case') for every pair of pathways b < b' of layer B that inhibit each
    other's case and share a union unit u taking at least ``min_union`` of its strongest input from
    each, from kernel sums ``ab`` (B, A) and ``bc`` (C, B). Score: the weaker of u's two inputs
    (relative to u's strongest) times the weaker cross-inhibition."""
    case, inhibit = _cross_inhibition(ab)
    rows, cols = np.nonzero(np.triu(inhibit > 0, k=1))
    if not len(rows):
        return []
    rel = (bc / (np.abs(bc).max(axis=1, keepdims=True) + 1e-12)).astype(np.float32)  # (C, B)
    out = []
    for start in range(0, len(rows), _CHUNK):
        b, bb = rows[start:start + _CHUNK], cols[start:start + _CHUNK]
        both = np.minimum(rel[:, b], rel[:, bb])  # (C, pairs)
        u = np.argmax(both, axis=0)
        union = both[u, np.arange(len(b))]
        for k in np.flatnonzero(union >= min_union):
            out.append((float(union[k] * inhibit[b[k], bb[k]]), int(b[k]), int(bb[k]), int(u[k]),
                        int(case[b[k]]), int(case[bb[k]])))
    return out


def _mirror_cosine(W_ab: np.ndarray, b: int, bb: int, case: int, case_m: int) -> float | None:
    """Cosine between pathway b's kernels from (case, case') and the left-right mirror of pathway
    b''s kernels from (case', case): 1 when the two pathways are each other's mirror image."""
    if W_ab.ndim != 4:
        return None
    pair = np.stack([W_ab[b, [case, case_m]], W_ab[bb, [case, case_m]]])
    sim, _ = mirror_similarity(pair, np.array([1, 0]))
    return float(sim[0, 1])


def union_over_cases(
    W_ab: np.ndarray,
    W_bc: np.ndarray,
    tuning_b: TuningResult | None = None,
    layers: tuple[str, str, str] = ("A", "B", "C"),
    min_union: float = 0.8,
    n_perm: int = 200,
    alpha: float = 0.01,
    seed: int = 0,
    min_selectivity: float = 0.3,
) -> Findings:
    """Pathways (b, b') in layer B, each excited most by its own case in layer A and inhibiting
    the other's case, that both excite a unit u of layer C with at least ``min_union`` of u's
    strongest input (:func:`union_candidates`). Mirror-image cases need no orientation tuning:
    the pathways' kernels are compared with their mirror images (``params["mirror_cosine"]``).

    Candidates are reported strongest first, each only if it shares no pathway and no union unit
    with one reported before it (a pathway paired with a third unit is a variant, not a second
    motif). ``W_ab`` (B, A, kh, kw) and ``W_bc`` (C, B, kh, kw), or their kernel sums. Members have roles
    ``case``, ``case_mirror``, ``pathway``, ``pathway_mirror`` and ``union``; pathways carry their
    orientation when ``tuning_b`` is given and they are tuned (selectivity >= ``min_selectivity``).
    """
    s_ab, s_bc = kernel_sums(W_ab), kernel_sums(W_bc)
    _, inhibit = _cross_inhibition(s_ab)
    n_pairs = int(np.triu(inhibit > 0, k=1).sum())
    found = union_candidates(s_ab, s_bc, min_union)
    diagnostics = {"stage": "candidates", "inhibiting_pairs": n_pairs, "candidates": len(found)}
    if not found:
        why = ("no two units of the middle layer inhibit each other's strongest input" if not n_pairs else
               f"no mutually inhibiting pair shares a unit that takes {min_union}+ of its strongest input from each")
        return Findings([], {**diagnostics, "reason": why})

    def best(ab: np.ndarray, bc: np.ndarray) -> float:
        return max((c[0] for c in union_candidates(ab, bc, min_union)), default=0.0)

    observed = [c[0] for c in found]
    null = permutation_null(best, [s_ab, s_bc], n_perm, np.random.default_rng(seed))
    diagnostics.update(stage="null", **null_summary(observed, null))
    a_layer, b_layer, c_layer = layers
    motifs, taken = [], set()
    for score, b, bb, u, case, case_m in sorted(found, reverse=True):
        p = _p_value(score, null)
        if p >= alpha or {("B", b), ("B", bb), ("C", u)} & taken:
            continue  # a weaker variant of a motif reported already (a pathway or the union shared)
        taken |= {("B", b), ("B", bb), ("C", u)}
        members = {unit(a_layer, case): {"role": "case"}, unit(a_layer, case_m): {"role": "case_mirror"},
                   unit(b_layer, b): {"role": "pathway"}, unit(b_layer, bb): {"role": "pathway_mirror"},
                   unit(c_layer, u): {"role": "union"}}
        if tuning_b is not None:
            for c in (b, bb):
                if tuning_b.selectivity[c] >= min_selectivity:
                    members[unit(b_layer, c)]["orientation"] = float(tuning_b.preferred_deg[c])
        motifs.append(Motif("union_over_cases", members, score, p, {
            "mirror_cosine": _mirror_cosine(W_ab, b, bb, case, case_m), "n_perm": n_perm, "layers": list(layers)}))
    if not motifs:
        diagnostics["reason"] = f"the best candidate does not beat the shuffled weights' best at p < {alpha}"
    return Findings(motifs, diagnostics)
