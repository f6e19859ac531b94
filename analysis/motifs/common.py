"""What every motif detector shares: the :class:`Motif` finding, angle helpers, and the
permutation null (kernels reassigned to random unit pairs, max statistic over candidates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["Motif", "Findings", "mirror_angle", "shuffle_weights", "shuffle_inputs", "kernel_sums", "permutation_null",
           "permutation_p_values", "null_summary"]


@dataclass
class Motif:
    """One finding of a detector.

    Attributes
    ----------
    kind : str
        The detector, e.g. ``"rotation_equivariance"``.
    members : dict
        ``"<layer>:<channel>"`` -> ``{"role": ..., "orientation": ...}`` (orientation where known).
    score : float
        The detector's statistic for this candidate (larger is stronger).
    p_value : float
        From the permutation null, see :func:`permutation_p_values`.
    params : dict
        Detector-specific details (profiles, ``n_perm``, ``layers``); JSON-serialisable.
    """

    kind: str
    members: dict[str, dict]
    score: float
    p_value: float
    params: dict = field(default_factory=dict)


class Findings(list):
    """The motifs a detector reports (a list of :class:`Motif`), and ``diagnostics``: how far each
    stage got, so that "no motif here" can be told from "the probe did not fit" (JSON-serialisable;
    ``stage`` names the last stage reached, ``reason`` says why nothing was reported)."""

    def __init__(self, motifs: Sequence[Motif] = (), diagnostics: dict | None = None) -> None:
        super().__init__(motifs)
        self.diagnostics: dict = dict(diagnostics or {})


def _wrap(deg: np.ndarray | float) -> np.ndarray:
    """Angles wrapped into [-180, 180) degrees."""
    return (np.asarray(deg) + 180.0) % 360.0 - 180.0


def mirror_angle(deg: np.ndarray | float) -> np.ndarray:
    """The orientation of the horizontal mirror image (left-right flip): 180 - angle, in [0, 360).

    >>> mirror_angle(np.array([0.0, 30.0, 90.0, 200.0])).tolist()
    [180.0, 150.0, 90.0, 340.0]
    """
    return (180.0 - np.asarray(deg)) % 360.0


def shuffle_weights(W: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kernels of ``W`` (out, in, ...) reassigned to random (out, in) pairs: the permutation null
    of every detector. On kernel sums (out, in) it permutes the entries."""
    out, inp = W.shape[:2]
    flat = W.reshape(out * inp, *W.shape[2:])
    return flat[rng.permutation(out * inp)].reshape(W.shape)


def shuffle_inputs(W: np.ndarray, rng: np.random.Generator, strata: np.ndarray | None = None) -> np.ndarray:
    """Each target's kernels reassigned among its inputs, independently per target (out, in, ...):
    a null that keeps every target's own distribution of input weights (how many strong inputs
    it has, their signs and sizes) and breaks only which units they come from. With ``strata``
    (out, in) booleans, a target's kernels move only among the inputs of the same stratum (those
    marked, and the rest), so that whatever the marks stand for keeps its link to the weights."""
    out, inp = W.shape[:2]
    marked = np.zeros((out, inp), dtype=bool) if strata is None else np.asarray(strata, dtype=bool)
    order = np.argsort(rng.random((out, inp)) + 2.0 * marked, axis=1)  # the rest first, then the marked
    places = np.argsort(marked, axis=1, kind="stable")  # each stratum's positions, in the same order
    rows = np.arange(out)[:, None]
    shuffled = np.empty_like(W)
    shuffled[rows, places] = W[rows, order]
    return shuffled


def kernel_sums(W: np.ndarray) -> np.ndarray:
    """Each kernel's sum (out, in) as float64, from (out, in, kh, kw) kernels or (out, in) sums."""
    return np.asarray(W.sum(axis=(2, 3)) if W.ndim == 4 else W, dtype=np.float64)


# Scores within this relative distance are ties. Cosines and relative weights are computed in
# float32, whose rounding moves a sum of n products by about sqrt(n) x 1.2e-7: 1e-5 covers kernels
# of up to ~7,000 values. Two exact mirror pairs score 1.0000001 or 0.99999994 by summation order
# alone; without this, that last bit decided whether a first layer's pairs beat its null.
TIE = 1e-5


def _p_value(observed: float, null_max: np.ndarray) -> float:
    """(1 + the null's best scores that tie with or beat ``observed``) / (1 + the null's size)."""
    return float((1 + np.sum(null_max >= observed - TIE * max(1.0, abs(observed)))) / (1 + len(null_max)))


def permutation_null(statistic: Callable[..., float], weights: Sequence[np.ndarray], n_perm: int,
                     rng: np.random.Generator,
                     shuffle: Callable[[np.ndarray, np.random.Generator], np.ndarray] = shuffle_weights) -> np.ndarray:
    """The best candidate's score in each of ``n_perm`` shuffles of ``weights`` (each shuffled with
    ``shuffle``, :func:`shuffle_weights` unless given, in order): the null distribution of the max
    statistic."""
    return np.array([statistic(*(shuffle(w, rng) for w in weights)) for _ in range(n_perm)])


def null_summary(observed: Sequence[float], null_max: np.ndarray) -> dict:
    """Diagnostics of a max-statistic test: the best observed score, the null's 95th and 99th
    percentiles, and the smallest p reached (None where there was no candidate)."""
    best = max(observed, default=None)
    return {"best_score": None if best is None else float(best),
            "null_p95": float(np.percentile(null_max, 95)) if len(null_max) else None,
            "null_p99": float(np.percentile(null_max, 99)) if len(null_max) else None,
            "min_p": None if best is None or not len(null_max) else _p_value(best, null_max)}


def permutation_p_values(
    observed: Sequence[float],
    statistic: Callable[..., float],
    weights: Sequence[np.ndarray],
    n_perm: int,
    rng: np.random.Generator,
) -> list[float]:
    """Max-statistic permutation p-values of the ``observed`` candidate scores.

    Parameters
    ----------
    observed : sequence of float
        Score of each candidate found in the real weights.
    statistic : callable
        ``statistic(*shuffled)``: the best candidate's score in shuffled weights (0 if none).
    weights : sequence of arrays
        The weight arrays (out, in, ...) to shuffle, each with :func:`shuffle_weights`, in order.
    n_perm : int
        Number of shuffles.
    rng : numpy.random.Generator
        The only source of randomness.

    Returns
    -------
    list of float
        p = (1 + #{shuffles whose best score is at least the candidate's}) / (1 + n_perm).

    >>> rng = np.random.default_rng(0)
    >>> permutation_p_values([9.0], lambda w: float(w[0, 0]), [np.arange(4.0).reshape(2, 2)], 9, rng)
    [0.1]
    """
    null = permutation_null(statistic, weights, n_perm, rng)
    return [_p_value(score, null) for score in observed]
