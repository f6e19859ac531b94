"""Stimuli, tuning and planted networks: measured back by independent means."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from scipy import ndimage

import circuitatlas.analysis.planted as planted_module
import circuitatlas.analysis.stimuli as stimuli_module
import circuitatlas.analysis.tuning as tuning_module
from circuitatlas.analysis import stimuli
from circuitatlas.analysis.planted import build
from circuitatlas.analysis.tuning import radial_tuning


def _moments_orientation(img: np.ndarray) -> tuple[float, float]:
    """(axis angle mod 180 of the principal axis, skewness-signed normal direction) from image
    moments, with y up: written here from the definitions, independently of the drawing code."""
    mass = img[..., 0].astype(np.float64)
    rows, cols = np.mgrid[0:mass.shape[0], 0:mass.shape[1]]
    x, y = cols.astype(float), -rows.astype(float)
    m = mass.sum()
    mx, my = (mass * x).sum() / m, (mass * y).sum() / m
    dx, dy = x - mx, y - my
    cxx, cyy, cxy = (mass * dx * dx).sum() / m, (mass * dy * dy).sum() / m, (mass * dx * dy).sum() / m
    axis = 0.5 * np.degrees(np.arctan2(2 * cxy, cxx - cyy)) % 180
    normal = np.deg2rad(axis + 90)
    u = dx * np.cos(normal) + dy * np.sin(normal)
    skew = (mass * u**3).sum() / m
    # mass piles up at the arc's midpoint (the convex side) with a tail towards the ends
    direction = (np.degrees(normal) + (0 if skew < 0 else 180)) % 360
    return axis, direction


def _angle_diff(a: float, b: float, period: float = 360.0) -> float:
    return abs((a - b + period / 2) % period - period / 2)


@pytest.mark.parametrize("orientation", [0, 30, 90, 135, 200, 290])
@pytest.mark.parametrize("radius", [8, 14])
def test_curve_orientation_measured_back_from_moments(orientation, radius):
    img = stimuli.curve(orientation, radius=radius, size=64, span=120, width=2)
    _, direction = _moments_orientation(img)
    assert _angle_diff(direction, orientation) < 3


@pytest.mark.parametrize("orientation", [0, 20, 45, 100, 170])
def test_line_orientation_measured_back(orientation):
    axis, _ = _moments_orientation(stimuli.line(orientation, size=64, length=40))
    assert _angle_diff(axis, orientation, 180) < 1


def test_grating_frequency_and_edge_side():
    img = stimuli.grating(frequency=0.125, orientation=0, size=64)[..., 0]
    spectrum = np.abs(np.fft.rfft(img[32] - img[32].mean()))
    assert np.argmax(spectrum) == 64 * 0.125
    e = stimuli.edge(0, size=32)[..., 0]
    assert e[:, -1].mean() == 1.0 and e[:, 0].mean() == 0.0  # bright side to the right
    cc = stimuli.color_contrast(90, color_a=(1, 0, 0), color_b=(0, 0, 1), size=32)
    assert cc[0, 0].tolist() == [1, 0, 0] and cc[-1, 0].tolist() == [0, 0, 1]  # colour a above


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [4, 8])
def test_radial_tuning_recovers_planted_orientations(seed, k):
    net = build("equivariance", seed=seed, k=k, noise=0.05)
    for layer, role in (("mid", "early_curve"), ("high", "curve")):
        result = radial_tuning(net.module, layer, size=33, radius=5, width=1.5)
        planted = {int(uid.split(":")[1]): v["orientation"] for uid, v in net.truth["units"].items()
                   if v.get("role") == role}
        assert len(planted) == k
        for channel, orientation in planted.items():
            assert _angle_diff(result.preferred_deg[channel], orientation) < 5
            assert result.selectivity[channel] > 0.5


@pytest.mark.parametrize("radius", [4, 5, 6])
def test_planted_curve_units_peak_at_their_orientation(radius):
    # the circular mean hides a tuning curve with two peaks either side of the planted angle (as
    # cosine weights from early curves gave: peaks about 20 degrees off); the maximum must sit there
    net = build("equivariance", k=8)
    result = radial_tuning(net.module, "high", size=33, radius=radius, width=1.5, n_angles=360)
    for channel in range(8):
        peak = result.angles[np.argmax(result.responses[:, channel])]
        assert _angle_diff(peak, channel * 45.0) <= 3


def test_untuned_units_have_low_selectivity_and_bad_stimuli_are_refused():
    net = build("superposition")
    # units that read one line detector through a 1x1 kernel: a curve rotating by 360 degrees
    # passes every line orientation twice, so the response has no single preferred direction
    result = radial_tuning(net.module, "mid", size=33, radius=5, width=1.5)
    assert np.all(result.selectivity < 0.35)
    with pytest.raises(ValueError, match="no orientation"):
        radial_tuning(net.module, "mid", stimulus="circle", size=33)
    with pytest.raises(ValueError, match="'edge' takes no radius"):
        radial_tuning(net.module, "mid", stimulus="edge", size=33, radius=5)


def test_planted_kernels_are_rotated_copies():
    k, n_lines = 8, 8
    net = build("equivariance", k=k, n_lines=n_lines)
    W = net.module.mid.weight.detach().numpy()  # (k, n_lines, 11, 11)
    shift = int(round((360 / k) / (180 / n_lines)))  # line channels per family step
    for unit in range(k):
        # rotate unit's kernel by one family step (counter-clockwise as seen with rows down)
        rotated = np.stack([ndimage.rotate(W[unit, c], 360 / k, reshape=False, order=1) for c in range(n_lines)])
        rotated = np.roll(rotated, shift, axis=0)
        neighbour = W[(unit + 1) % k]
        corr = np.corrcoef(rotated.ravel(), neighbour.ravel())[0, 1]
        assert corr > 0.9
    V = net.module.high.weight.detach().numpy()  # circulant: weight depends on orientation difference
    sums = V.sum(axis=(2, 3))
    for j in range(k):
        assert np.allclose(np.roll(sums[j], -j), sums[0], atol=1e-6)
    assert sums[0, 0] > 0 and sums[0, k // 2] < 0  # similar excites, opposite inhibits


def test_union_unit_answers_both_cases_and_pathways_inhibit_each_other():
    net = build("union_over_cases", orientation=30)
    members = net.truth["motifs"][0]["members"]
    result = radial_tuning(net.module, "top", size=33, radius=5, width=1.5, n_angles=72)
    response = result.responses[:, 0]
    at = {a: response[int(a / 5)] for a in (30, 150, 90, 270)}
    assert at[30] > 0 and at[150] > 0 and min(at[30], at[150]) > 2 * max(at[90], at[270])
    high = net.module.high.weight.detach().numpy().sum(axis=(2, 3))
    path, mirror = (int(u.split(":")[1]) for u, v in members.items() if v["role"].startswith("pathway"))
    case, case_m = (int(u.split(":")[1]) for u, v in members.items() if v["role"].startswith("case"))
    assert high[path, case] > 0 > high[path, case_m] and high[mirror, case_m] > 0 > high[mirror, case]


def test_superposition_truth_matches_weights():
    net = build("superposition", n_targets=5, seed=3)
    motif = net.truth["motifs"][0]
    feature = next(int(u.split(":")[1]) for u, v in motif["members"].items() if v["role"] == "feature")
    targets = [int(u.split(":")[1]) for u, v in motif["members"].items() if v["role"] == "carrier"]
    out = net.module.high.weight.detach().numpy()[:, feature].sum(axis=(1, 2))
    assert sorted(np.flatnonzero(out > 0).tolist()) == sorted(targets)
    assert np.allclose(out[targets], out[targets][0])  # no dominant target
    for target, other in motif["other_features"].items():
        t, o = int(target.split(":")[1]), int(other.split(":")[1])
        assert net.module.high.weight.detach().numpy()[t, o].sum() > out[t]


def test_mixed_network_holds_every_motif_and_distractors():
    net = build("mixed", seed=1)
    kinds = [m["kind"] for m in net.truth["motifs"]]
    assert kinds == ["rotation_equivariance", "union_over_cases", "superposition"]
    roles = [v["role"] for v in net.truth["units"].values()]
    assert roles.count("distractor") == 4 * 3
    channels = {layer: getattr(net.module, layer).out_channels for layer in net.truth["layers"]}
    listed = {layer: sum(1 for u in net.truth["units"] if u.startswith(layer + ":")) for layer in channels}
    assert listed == channels  # every unit of every layer has a role


def test_hooks_are_removed_even_on_error():
    net = build("equivariance")
    radial_tuning(net.module, "high", size=33)
    with pytest.raises(ValueError):
        radial_tuning(net.module, "no_such_layer", size=33)
    with pytest.raises(Exception):
        radial_tuning(net.module, "high", size=33, radius="not a number")
    assert all(not m._forward_hooks for m in net.module.modules())


def test_doctests():
    for module in (stimuli_module, tuning_module, planted_module):
        assert doctest.testmod(module).failed == 0
