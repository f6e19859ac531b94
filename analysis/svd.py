"""SVD of |W| between two layers: co-clustering of input and output units (branch specialization).

Following the Circuits thread's lecture notes, the weights between two layers are summarised as
``M = sum over kernel positions of |W|`` (in x out), and the leading singular vectors of M lay the
units out so that units wired to the same partners land together.

**Default normalisation** (``normalize="bistochastic"``): ``M`` is scaled to
``D_in^-1/2 M D_out^-1/2`` (row and column sums), as in correspondence analysis and Dhillon's
spectral co-clustering. The first singular vector of a non-negative matrix is almost entirely
overall magnitude (how strongly each unit is connected at all): after this scaling that trivial
direction has singular value 1 and is skipped, so the coordinates show *who connects to whom*
rather than *how much*. ``normalize="none"`` keeps the raw ``M`` (and its magnitude direction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from circuitatlas.errors import InvalidInput

__all__ = ["SvdResult", "svd_clusters", "kmeans", "branch_contingency", "BranchReport"]


@dataclass
class SvdResult:
    """What :func:`svd_clusters` found. Coordinates skip the trivial magnitude direction when
    normalised; ``k`` is the number of clusters (given, or chosen from the spectral gap)."""

    singular_values: np.ndarray  # all singular values of the (normalised) matrix, descending
    input_coords: np.ndarray  # (in, d) principal coordinates, d = max(k - 1, 2) when normalised
    output_coords: np.ndarray  # (out, d)
    input_clusters: np.ndarray  # (in,) ints in [0, k)
    output_clusters: np.ndarray  # (out,)
    k: int
    normalize: str
    params: dict = field(default_factory=dict)


def kmeans(points: np.ndarray, k: int, iters: int = 100, restarts: int = 8, seed: int = 0) -> np.ndarray:
    """Deterministic k-means (k-means++ seeding from a fixed seed, best of ``restarts``).

    >>> kmeans(np.array([[0.0], [0.1], [5.0], [5.1]]), 2).tolist()
    [0, 0, 1, 1]
    """
    if k < 1 or k > len(points):
        raise InvalidInput(f"k must be in [1, {len(points)}], got {k}")
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(restarts):
        centers = [points[rng.integers(len(points))]]
        for _ in range(1, k):
            d2 = np.min(((points[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
            probs = d2 / d2.sum() if d2.sum() > 0 else np.full(len(points), 1 / len(points))
            centers.append(points[rng.choice(len(points), p=probs)])
        centers = np.array(centers)
        for _ in range(iters):
            labels = np.argmin(((points[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
            new = np.array([points[labels == c].mean(0) if np.any(labels == c) else centers[c] for c in range(k)])
            if np.allclose(new, centers):
                break
            centers = new
        cost = ((points - centers[labels]) ** 2).sum()
        if cost < best_cost - 1e-12:
            best, best_cost = labels, cost
    # canonical labels: clusters numbered by their first member
    order = {c: i for i, c in enumerate(dict.fromkeys(best.tolist()))}
    return np.array([order[c] for c in best.tolist()])


def _choose_k(singular_values: np.ndarray, k_max: int) -> int:
    """The number of leading singular values before the largest gap (at least 2)."""
    s = singular_values[: k_max + 1]
    if len(s) < 3:
        return 2
    gaps = s[:-1] - s[1:]
    return int(np.argmax(gaps[1:]) + 2)  # gap after the i-th value -> i clusters; never 1


def svd_clusters(
    W: np.ndarray,
    k: int | None = None,
    normalize: str = "bistochastic",
    k_max: int = 12,
    seed: int = 0,
) -> SvdResult:
    """Co-cluster the input and output units of weights ``W`` (out, in, kh, kw) or (out, in).

    Returns coordinates of input units on the left singular vectors and of output units on the
    right ones, and a joint k-means clustering of both (k given, or chosen from the spectral gap).

    >>> W = np.kron(np.eye(2), np.ones((3, 4)))[:, :, None, None]   # 2 blocks: 6 out x 8 in
    >>> r = svd_clusters(W)
    >>> r.k, r.input_clusters.tolist(), r.output_clusters.tolist()
    (2, [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1])
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 2:
        W = W[:, :, None, None]
    if W.ndim != 4:
        raise ValueError(f"W must be (out, in, kh, kw) or (out, in), got shape {W.shape}")
    if not np.isfinite(W).all():
        raise ValueError("W has NaN or infinite values")
    M = np.abs(W).sum(axis=(2, 3)).T  # (in, out)
    n_in, n_out = M.shape
    if min(n_in, n_out) < 2:
        raise InvalidInput(f"need at least 2 input and 2 output units, got {n_in} x {n_out}")
    if normalize == "bistochastic":
        r, c = M.sum(1), M.sum(0)
        r_inv = np.where(r > 0, 1 / np.sqrt(np.maximum(r, 1e-300)), 0.0)
        c_inv = np.where(c > 0, 1 / np.sqrt(np.maximum(c, 1e-300)), 0.0)
        A = r_inv[:, None] * M * c_inv[None, :]
    elif normalize == "none":
        A = M
    else:
        raise InvalidInput(f"normalize must be 'bistochastic' or 'none', not {normalize!r}")
    U, S, Vt = np.linalg.svd(A, full_matrices=False)
    # fix signs so that results are deterministic: largest |entry| of each left vector positive
    signs = np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])])
    signs[signs == 0] = 1
    U, Vt = U * signs, Vt * signs[:, None]
    if k is None:
        k = _choose_k(S, min(k_max, len(S) - 1))
    if not 1 <= k <= min(n_in, n_out):
        raise InvalidInput(f"k must be in [1, {min(n_in, n_out)}], got {k}")
    skip = 1 if normalize == "bistochastic" else 0
    d = max(k - 1, 2) if skip else max(k, 2)
    d = min(d, len(S) - skip)
    # principal coordinates: each direction scaled by its singular value, so weak (noise)
    # directions count little; the clustering uses the k - 1 (at least 1) leading ones
    sv = S[skip:skip + d]
    if skip:
        x_in, x_out = r_inv[:, None] * U[:, skip:skip + d] * sv, c_inv[:, None] * Vt[skip:skip + d].T * sv
    else:
        x_in, x_out = U[:, :d] * sv, Vt[:d].T * sv
    used = max(k - skip, 1)
    joint = np.vstack([x_in[:, :used], x_out[:, :used]])
    labels = kmeans(joint, k, seed=seed)
    return SvdResult(S, x_in, x_out, labels[:n_in], labels[n_in:], k, normalize,
                     {"k_requested": k, "normalize": normalize, "seed": seed})


@dataclass
class BranchReport:
    """Cluster x branch contingency with one-sided hypergeometric p-values (enrichment)."""

    clusters: list[int]
    branches: list[str]
    counts: np.ndarray  # (clusters, branches)
    p_values: np.ndarray  # P(X >= count) for a cluster of that size drawn at random

    def strongest(self) -> tuple[int, str, int, float]:
        """(cluster, branch, count, p) of the most significant cell."""
        i, j = np.unravel_index(np.argmin(self.p_values), self.p_values.shape)
        return self.clusters[i], self.branches[j], int(self.counts[i, j]), float(self.p_values[i, j])


def branch_contingency(clusters: np.ndarray, branches: list[str] | np.ndarray) -> BranchReport:
    """How clusters fall into branches, as in the Branch Specialization article: for each cell,
    the probability that a random cluster of the same size holds at least that many units of
    the branch (hypergeometric, one-sided).

    >>> rep = branch_contingency(np.array([0, 0, 0, 1, 1, 1]), ["a", "a", "a", "b", "b", "b"])
    >>> rep.counts.tolist(), round(float(rep.p_values[0, 0]), 3)
    ([[3, 0], [0, 3]], 0.05)
    """
    clusters = np.asarray(clusters)
    branches = np.asarray(branches)
    if clusters.shape != branches.shape:
        raise ValueError("clusters and branches must label the same units")
    cl = sorted(set(clusters.tolist()))
    br = sorted(set(branches.tolist()))
    counts = np.array([[np.sum((clusters == c) & (branches == b)) for b in br] for c in cl])
    N = len(clusters)
    sizes, totals = counts.sum(1), counts.sum(0)
    from scipy import stats  # seconds to import: only where a p-value is computed

    p = np.array([[stats.hypergeom.sf(counts[i, j] - 1, N, totals[j], sizes[i]) for j in range(len(br))]
                  for i in range(len(cl))])
    return BranchReport(cl, br, counts, p)
