"""Toy Models of Superposition: the measures against hand-made geometries, and the phenomena
(no superposition when dense, superposition when sparse, the two-feature phases) on small runs."""

from __future__ import annotations

import numpy as np

from circuitatlas.analysis import toy_superposition as T


def _polygon(k: int) -> np.ndarray:
    angles = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(angles), np.sin(angles)])  # (2, k): k features on a regular polygon


def test_dimensionality_of_known_geometries():
    # one model: a dedicated feature, an antipodal pair, a triangle and a pentagon in separate dims
    W = np.zeros((1, 1 + 1 + 2 + 2, 1 + 2 + 3 + 5))
    W[0, 0, 0] = 1.0
    W[0, 1, 1:3] = [1.0, -1.0]
    W[0, 2:4, 3:6] = _polygon(3)
    W[0, 4:6, 6:11] = _polygon(5)
    dims = T.feature_dimensionality(W)[0]
    assert np.allclose(dims, [1, 0.5, 0.5] + [2 / 3] * 3 + [0.4] * 5)
    # the tetrahedron: 4 features in 3 dims, 3/4 each
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float).T / np.sqrt(3)
    assert np.allclose(T.feature_dimensionality(tetra[None]), 0.75)
    assert np.allclose(T.dimensions_per_feature(W), 6 / 11)
    assert T.feature_dimensionality(np.zeros((1, 2, 3))).sum() == 0  # unrepresented features: 0


def test_dense_features_get_dimensions_and_sparse_ones_share_them():
    result = T.sparsity_sweep(n_features=20, n_hidden=5, n_densities=3, min_density=0.03, steps=1500,
                              batch=256, importance_decay=0.9)
    dense, sparse = result.dimensions_per_feature[0], result.dimensions_per_feature[-1]
    assert dense > 0.8  # no superposition: about m features, one dimension each
    assert sparse < 0.6  # more features than dimensions
    represented = (result.norms >= 0.5).sum(axis=1)
    assert represented[0] <= 6 and represented[-1] > 6
    # when dense, the represented features are the most important ones
    assert set(np.flatnonzero(result.norms[0] >= 0.5)) <= set(range(7))


def test_two_feature_phase_diagram():
    d = T.two_feature_phases(n_importance=3, n_density=3, steps=1500, batch=512, restarts=4)
    # rows: density 1, 0.1, 0.01; columns: importance of feature 2 = 0.1, 1, 10
    names = np.array(T.PHASES)[d.phase]
    assert names[0, 0] == "not_represented" and names[0, 2] == "dedicated"
    assert names[2, 1] == "superposition"
    w = d.W[2, 1]
    assert w[0] * w[1] < 0  # antipodal


def test_plots_are_images():
    result = T.sparsity_sweep(n_features=6, n_hidden=2, n_densities=2, steps=50, batch=32)
    assert T.plot_sweep(result).size == (720, 420)
    d = T.two_feature_phases(n_importance=2, n_density=2, steps=20, batch=32, restarts=1)
    assert T.plot_phases(d).mode == "RGB"


def test_cli_reports_and_saves_plots(tmp_path):
    import json

    from click.testing import CliRunner

    from circuitatlas.cli import main

    result = CliRunner().invoke(main, ["analyze", "toy-superposition", "--features", "12", "--hidden", "3",
                                       "--densities", "3", "--steps", "200", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data["d_star"]) == 3 and set(data["fractions"]) == set(T.FRACTIONS)
    assert all((tmp_path / name).stat().st_size > 0 for name in ("toy-sweep.png", "toy-phases.png"))
