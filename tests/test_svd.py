"""SVD co-clustering, branch specialization and write-back, against planted structure."""

from __future__ import annotations

import doctest
from itertools import combinations

import numpy as np
import pytest
import torch
from torch import nn

import circuitatlas.analysis.svd as svd_module
from circuitatlas.analysis.svd import branch_contingency, svd_clusters


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """ARI from pair counts (Hubert and Arabie), written out here independently of the code under test."""
    n = len(a)
    same_a = {(i, j) for i, j in combinations(range(n), 2) if a[i] == a[j]}
    same_b = {(i, j) for i, j in combinations(range(n), 2) if b[i] == b[j]}
    pairs = n * (n - 1) / 2
    both = len(same_a & same_b)
    expected = len(same_a) * len(same_b) / pairs
    best = (len(same_a) + len(same_b)) / 2
    return 1.0 if best == expected else (both - expected) / (best - expected)


def planted_blocks(k: int, n_out: int, n_in: int, seed: int, noise: float = 0.15, kernel: int = 3):
    """Weights (out, in, kh, kw) whose strong entries form k blocks, in shuffled unit order."""
    rng = np.random.default_rng(seed)
    out_labels = rng.permutation(np.arange(n_out) % k)
    in_labels = rng.permutation(np.arange(n_in) % k)
    W = rng.normal(0, noise, (n_out, n_in, kernel, kernel))
    block = out_labels[:, None] == in_labels[None, :]
    signs = rng.choice([-1.0, 1.0], size=W.shape)
    W[block] = signs[block] * rng.uniform(0.5, 1.5, size=W.shape)[block]
    return W, in_labels, out_labels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_planted_blocks_are_recovered(seed, k):
    W, in_labels, out_labels = planted_blocks(k, n_out=40, n_in=30, seed=seed)
    for requested in (k, None):
        result = svd_clusters(W, k=requested)
        assert result.k == k  # with k=None the spectral gap finds it
        assert adjusted_rand_index(result.input_clusters, in_labels) >= 0.95
        assert adjusted_rand_index(result.output_clusters, out_labels) >= 0.95
        assert result.input_coords.shape[0] == 30 and result.output_coords.shape[0] == 40


def test_clustering_is_deterministic_and_fails_on_noise():
    W, _, _ = planted_blocks(3, 30, 30, seed=1)
    a, b = svd_clusters(W, k=3), svd_clusters(W.copy(), k=3)
    assert np.array_equal(a.input_clusters, b.input_clusters)
    assert np.allclose(a.input_coords, b.input_coords)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(30, 30, 3, 3))
    _, in_labels, _ = planted_blocks(3, 30, 30, seed=1)
    assert adjusted_rand_index(svd_clusters(noise, k=3).input_clusters, in_labels) < 0.5


def test_default_normalisation_removes_the_magnitude_direction():
    # units differ a lot in overall strength but share one block structure
    W, in_labels, _ = planted_blocks(2, 30, 30, seed=3)
    strength = np.geomspace(0.1, 10, 30)
    W = W * strength[None, :, None, None]
    raw = svd_clusters(W, k=2, normalize="none")
    normed = svd_clusters(W, k=2)
    assert adjusted_rand_index(normed.input_clusters, in_labels) >= 0.95
    # the raw first singular vector tracks magnitude: it correlates with strength
    assert abs(np.corrcoef(raw.input_coords[:, 0], strength)[0, 1]) > 0.8


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        svd_clusters(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        svd_clusters(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="k must be"):
        svd_clusters(np.ones((4, 4)), k=9)


def test_branch_report_finds_planted_association_and_not_shuffled():
    rng = np.random.default_rng(0)
    branches = np.repeat(["branch1", "branch2", "branch3", "branch4"], 40)
    clusters = np.repeat([0, 1, 2, 3], 40)
    flip = rng.random(160) < 0.1  # 10% of units in a random cluster
    clusters[flip] = rng.integers(0, 4, flip.sum())
    report = branch_contingency(clusters, branches)
    cluster, branch, count, p = report.strongest()
    assert p < 1e-6 and count >= 30
    assert report.counts.sum() == 160
    for seed in range(5):
        shuffled = np.random.default_rng(seed).permutation(clusters)
        assert branch_contingency(shuffled, branches).p_values.min() > 1e-4


def test_doctests():
    assert doctest.testmod(svd_module).failed == 0


class _TwoLayers(nn.Module):
    """input -> a (12 ch) -> b (16 ch) with planted 3-block weights from a to b."""

    def __init__(self, W: np.ndarray) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, W.shape[1], 3, padding=1)
        self.b = nn.Conv2d(W.shape[1], W.shape[0], 3, padding=1)
        with torch.no_grad():
            self.b.weight.copy_(torch.from_numpy(W).float())

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_write_back_is_idempotent_and_subgraph_counts_match(atlas):
    torch.manual_seed(0)
    W, in_labels, out_labels = planted_blocks(3, n_out=16, n_in=12, seed=7)
    atlas.ingest(_TwoLayers(W), "svdnet", input_size=(3, 16, 16), expanded=False)
    for _ in range(2):
        run = atlas.analyze_svd("svdnet", "a", "b", k=3)
        assert run.kind == "direct" and run.analysis == "svd:direct:a->b:k=3"
        result = run.result
        clusters = atlas.cypher("MATCH (c:Cluster {model: 'svdnet'}) RETURN c.side AS side, c.size AS size")
        assert len(clusters) == 6 and sum(c["size"] for c in clusters) == 12 + 16
        members = atlas.cypher("MATCH (n:Neuron {model: 'svdnet'})-[r:IN_CLUSTER]->(:Cluster) RETURN count(r) AS n")
        assert members == [{"n": 28}]
    stored = atlas.cypher("MATCH (n:Neuron {model: 'svdnet', layer: 'a'}) RETURN n.channel AS c, n.cluster_in AS k "
                          "ORDER BY c")
    assert adjusted_rand_index(np.array([r["k"] for r in stored]), in_labels) >= 0.95
    assert np.array_equal([r["k"] for r in stored], result.input_clusters)
    # a different k is a different analysis; both stay, each complete
    atlas.analyze_svd("svdnet", "a", "b", k=2)
    assert atlas.cypher("MATCH (c:Cluster {model: 'svdnet'}) RETURN count(c) AS n") == [{"n": 6 + 4}]

    g = atlas.subgraph("svdnet", ["a", "b"], kind="direct")
    counts = atlas.cypher(
        "MATCH (n:Neuron {model: 'svdnet'}) WHERE n.layer IN ['a', 'b'] WITH count(n) AS nodes "
        "MATCH (:Neuron {model: 'svdnet', layer: 'a'})-[r:WEIGHT]->(:Neuron {layer: 'b'}) RETURN nodes, count(r) AS edges")
    assert (g.number_of_nodes(), g.number_of_edges()) == (counts[0]["nodes"], counts[0]["edges"]) == (28, 12 * 16)
    edge = g.edges["svdnet/a:0", "svdnet/b:0"]
    np.testing.assert_allclose(edge["kernel"], W[0, 0], rtol=1e-6)
    top = atlas.subgraph("svdnet", ["a", "b"], kind="direct", top_k=2)
    assert top.number_of_edges() == 16 * 2
    strongest = max(range(12), key=lambda i: np.linalg.norm(W[5, i]))
    assert top.has_edge(f"svdnet/a:{strongest}", "svdnet/b:5")
    atlas.drop("svdnet")
    assert atlas.cypher("MATCH (c:Cluster {model: 'svdnet'}) RETURN count(c) AS n") == [{"n": 0}]


def test_branch_specialization_on_a_stored_concat_layer(atlas):
    """Two branches of a concat block, wired to two disjoint groups of the next layer: the SVD
    clusters of the block's units line up with the branches."""

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.mix = _Mix()
            self.head = nn.Conv2d(16, 12, 1)
            with torch.no_grad():
                w = torch.randn(12, 16, 1, 1) * 0.05
                w[:6, :8] += torch.rand(6, 8, 1, 1) + 0.5
                w[6:, 8:] += torch.rand(6, 8, 1, 1) + 0.5
                self.head.weight.copy_(w)

        def forward(self, x):
            return self.head(self.mix(self.stem(x)))

    torch.manual_seed(0)
    atlas.ingest(Branchy(), "branchy", input_size=(3, 8, 8), layers=["stem", "mix", "head"])
    result = atlas.analyze_svd("branchy", "mix", "head", k=2)
    report = result.branch_reports["input"]
    assert report.branches == ["left", "right"]
    assert report.strongest()[3] < 1e-3 and report.counts.max() == 8


class _Mix(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Conv2d(8, 8, 1)
        self.right = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return torch.cat([self.left(x), self.right(x)], dim=1)
