"""Universality: units matched across models, checked against oracles that do not use the code under
test: a channel-permuted copy (the permutation is the answer), numpy's own correlation and CKA,
two zoo seeds whose curve units have independently measured orientations, and random-init copies
(whose matches must stay at the chance rate the p-values promise)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from scipy import stats

from circuitatlas.analysis import universality as U
from circuitatlas.cli import main
from circuitatlas.errors import CircuitAtlasError
from circuitatlas.ingest import zoo

CONVS = ("features.0", "features.3", "features.7", "features.11")  # the small zoo architecture's convolutions
ALPHA = 0.01


# -- the arithmetic ---------------------------------------------------------------------------------
def test_streamed_moments_equal_numpy_on_uneven_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * [1, 2, 3, 4, 5, 6] + 1000.0  # a large offset: the shift must keep precision
    y = np.hstack([x[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(500, 4)), np.full((500, 1), 7.0)])
    moments = U.CrossMoments()
    for lo, hi in ((0, 1), (1, 77), (77, 300), (300, 500)):
        moments.add(x[lo:hi], y[lo:hi])
    expected = np.corrcoef(x.T, y[:, :4].T)[:6, 6:]
    corr = moments.correlation()
    assert np.allclose(corr[:, :4], expected, atol=1e-9)
    assert np.all(corr[:, 4] == 0) and moments.live()[1].tolist() == [True] * 4 + [False]  # a constant unit
    assert moments.cka() == pytest.approx(U.cka_from_samples(x, y), abs=1e-9)


def test_cka_is_one_under_rotation_and_scaling_and_small_for_independent_samples():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert U.cka_from_samples(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-12)
    independent = U.cka_from_samples(x, rng.normal(size=(400, 8)))
    assert independent < 0.1  # E ~ p/n for independent Gaussians: 8/400 per dimension pair
    cka, p = U.cka_permutation_p(x, x @ q, 30, rng)
    assert cka == pytest.approx(1.0) and p == pytest.approx(1 / 31)


def test_p_values_count_the_null_scores_at_least_as_high():
    rng = np.random.default_rng(2)
    null, scores = rng.uniform(size=300), np.array([0.2, 0.5, 0.99, 1.5, np.nan])
    expected = [(1 + np.sum(null >= s)) / 301 for s in scores[:4]]
    got = U._p_values(scores, null)
    assert np.allclose(got[:4], expected) and np.isnan(got[4])


def test_circular_correlation_reads_turning_with_and_against():
    a = np.array([0, 40, 100, 170, 230, 300.0])
    assert U.circular_correlation(a, (a + 40) % 360) == pytest.approx(1.0)
    assert U.circular_correlation(a, (-a) % 360) == pytest.approx(-1.0)
    assert np.isnan(U.circular_correlation(a[:2], a[:2]))


def test_random_init_changes_every_weight_but_not_the_original_or_the_global_rng():
    net = zoo.build("curves").module  # trained: its BatchNorm statistics are not the defaults
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    fresh, again = U.random_init(net, 1), U.random_init(net, 1)
    assert torch.equal(torch.rand(3), expected_next)  # the global generator did not move
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
        assert torch.equal(fresh.state_dict()[key], again.state_dict()[key])
    for name, param in net.named_parameters():
        assert not torch.equal(fresh.get_parameter(name), param), name
    assert not torch.equal(net.features[1].running_var, torch.ones(16))
    assert torch.equal(fresh.features[1].running_var, torch.ones(16))  # BatchNorm statistics reset too


def test_battery_blocks_hold_one_probe_at_one_scale_and_polarity():
    probes = U.battery_probes(32, [7.0, 13.0], n_angles=8)
    assert probes.images.shape[1:] == (32, 32, 3) and not probes.grid.any()
    for block in np.unique(probes.block):
        labels = [probes.labels[i] for i in np.flatnonzero(probes.block == block)]
        stems = {label.split("@")[0] + label.split("/")[-1] for label in labels}
        assert len(stems) == 1, labels
    strokes = [i for i, label in enumerate(probes.labels) if label.startswith(("line", "curve"))]
    assert np.all(probes.images[strokes, 0, 0] == 128)  # bright and dark strokes on the same grey (0.5)


# -- oracles through the graph ----------------------------------------------------------------------
def _permuted_copy(net: torch.nn.Module, rng: np.random.Generator) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    """The small zoo net with each convolution's output channels permuted (its BatchNorm and the next
    layer's inputs with them): the same function; ``perm[layer][j]`` is the original channel of j."""
    import copy

    out = copy.deepcopy(net)
    perms, previous = {}, None
    modules = dict(out.named_modules())
    for conv in CONVS:
        index = int(conv.split(".")[1])
        c = modules[conv].out_channels
        perm = rng.permutation(c)
        perms[conv] = perm
        p = torch.from_numpy(perm)
        with torch.no_grad():
            weight = modules[conv].weight[p]
            modules[conv].weight.copy_(weight[:, previous] if previous is not None else weight)
            bn = modules[f"features.{index + 1}"]
            for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                tensor.copy_(tensor[p])
        previous = p
    with torch.no_grad():
        out.fc.weight.copy_(out.fc.weight[:, previous])
    return out.eval(), perms


@pytest.fixture(scope="module")
def zoo_models(atlas, tmp_path_factory):
    """Zoo curves (two seeds), a channel-permuted copy and a random-init copy, each ingested."""
    folder = tmp_path_factory.mktemp("nets")
    net = zoo.build("curves").module
    permuted, perms = _permuted_copy(net, np.random.default_rng(11))
    x, _ = zoo.task_data("curves", 64, seed=5)
    with torch.no_grad():
        assert torch.allclose(permuted(x), net(x), atol=1e-5)  # the permutation keeps the function
    torch.save(permuted.state_dict(), folder / "permuted.pt")
    torch.save(U.random_init(net, 4321).state_dict(), folder / "random.pt")
    atlas.ingest("zoo:curves", "uc", input_size=(3, 32, 32), expanded=False)
    atlas.ingest("zoo:curves-seed1", "uc1", input_size=(3, 32, 32), expanded=False)
    atlas.ingest(str(folder / "permuted.pt"), "uc-perm", arch="curves", input_size=(3, 32, 32), expanded=False)
    atlas.ingest(str(folder / "random.pt"), "uc-random", arch="curves", input_size=(3, 32, 32), expanded=False)
    return perms


@pytest.fixture(scope="module")
def task_images(tmp_path_factory):
    """1000 fresh images of the curves task as PNG files: the models' own kind of natural image."""
    return zoo.save_task_images("curves", tmp_path_factory.mktemp("task"), 1000, seed=4242)


def _edges(atlas, analysis: str) -> set[tuple[str, str]]:
    rows = atlas.cypher("MATCH (a)-[r:ANALOGOUS {analysis: $k}]->(b) RETURN a.uid AS a, b.uid AS b", k=analysis)
    return {(r["a"], r["b"]) for r in rows}


def test_a_permuted_copy_is_matched_unit_for_unit(atlas, zoo_models):
    perms = zoo_models
    result = atlas.compare("uc", "uc-perm", ["features.3", "features.11"], ["features.3", "features.11"])
    for i, match in enumerate(result.matches):
        original = perms[match.layer_a]
        live = np.flatnonzero(match.live_a)
        assert len(live) >= 0.9 * len(match.live_a)  # the few silent units are reported, not matched
        for a in live:
            b = int(match.best_ab[a])
            assert original[b] == a and match.corr[a, b] > 1 - 1e-9  # its own copy, exactly
        summary = result.summary()["layers"][i]
        assert summary["stored"] == summary["mutual_stored"] == len(live)
        assert summary["cka"] == pytest.approx(1.0, abs=1e-9)
        expected = {(f"uc/{match.layer_a}:{a}", f"uc-perm/{match.layer_b}:{int(np.flatnonzero(original == a)[0])}")
                    for a in live}
        assert _edges(atlas, result.analyses[i]) == expected
    similar = atlas.layer_similarity(["uc", "uc-perm"])
    assert {(r["layer_a"], r["layer_b"]) for r in similar} >= {("features.3", "features.3"),
                                                               ("features.11", "features.11")}
    again = atlas.compare("uc", "uc-perm", "features.11", "features.11")  # re-running replaces
    assert _edges(atlas, again.analyses[0]) == _edges(atlas, result.analyses[1])
    assert len(atlas.cypher("MATCH (:Layer {uid: 'uc/features.11'})-[s:SIMILAR]->() RETURN s")) == 1


def test_two_seeds_share_their_curve_units_well_above_the_random_init_null(atlas, zoo_models, task_images):
    result = atlas.compare("uc", "uc1", "features.11", "features.11", images=task_images)
    layer = result.summary()["layers"][0]
    assert layer["stored"] >= 0.75 * layer["units_a"]
    assert layer["cka"] > layer["cka_random"] + 0.4
    # curve families read off each model's own tuning (measured, not the matcher's): units tuned to
    # curve orientation, and whether the matched units prefer the same orientation
    families = {}
    for model in ("uc", "uc1"):
        tuning = atlas.annotate_tuning(model, "features.11", stimulus="curve", radius=9.0, width=2.0, n_angles=32)
        families[model] = {"curves": {c: float(tuning.preferred_deg[i]) for i, c in enumerate(tuning.channels)
                                      if tuning.selectivity[i] > 0.5}}
    assert min(len(f["curves"]) for f in families.values()) >= 20
    (aligned,) = U.align_families(result.matches[0], families["uc"], families["uc1"])
    turn = np.abs((np.array([p[4] - p[3] for p in aligned.pairs]) + 180) % 360 - 180)
    assert aligned.orientation_corr > 0.6 and np.median(turn) < 20  # 8 classes lie 45 degrees apart
    assert aligned.score > result.matches[0].null_quantile(0.99)
    random_copy = atlas.compare("uc", "uc-random", "features.11", "features.11", images=task_images)
    assert random_copy.summary()["layers"][0]["stored"] < layer["stored"] / 10


def test_a_random_init_copy_matches_no_more_than_the_chance_rate(atlas, zoo_models):
    result = atlas.compare("uc", "uc-random", ["features.3", "features.7"], ["features.3", "features.7"])
    for i, match in enumerate(result.matches):
        pairs = result.pairs(i)
        stored = sum(p["stored"] for p in pairs)
        # p-values are valid: under the null at most ALPHA of the tests come out below ALPHA;
        # the bound is the binomial's 99.9% quantile over this layer's tests
        assert stored <= stats.binom.ppf(0.999, len(pairs), ALPHA), (match.layer_a, stored, len(pairs))
        assert len(_edges(atlas, result.analyses[i])) == stored


def test_equivariant_families_are_aligned_and_stored(atlas):
    for model, source in (("pe0", "planted:equivariance"), ("pe1", "planted:equivariance@1")):
        atlas.ingest(source, model, input_size=(3, 33, 33), expanded=False)
        assert len(atlas.find_motifs("rotation_equivariance", model, ["mid", "high"])) == 1
    result = atlas.compare("pe0", "pe1", "high", "high")
    (family,) = result.summary()["layers"][0]["families"]
    assert family["orientation_corr"] == pytest.approx(1.0) and family["beats_null"]
    stored = atlas.family_analogues(["pe0", "pe1"])
    assert len(stored) == 1 and stored[0]["match"]["orientation_corr"] == pytest.approx(1.0)
    assert len(stored[0]["match"]["pairs"]) == 8


def test_cli_compare_json_plot_and_bad_input(atlas, zoo_models, cli_env, tmp_path):
    runner = CliRunner()
    plot = tmp_path / "compare.png"
    ok = runner.invoke(main, ["compare", "uc", "uc-perm", "--layers", "features.7:features.7", "--json",
                              "--plot", str(plot)], env=cli_env)
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output[ok.output.index("{"):])
    (layer,) = data["layers"]
    assert layer["stored"] == sum(p["stored"] for p in layer["pairs"]) and data["null_models"] >= 2
    with Image.open(plot) as picture:
        assert picture.width > 200 and picture.height > 100
    count = "MATCH ()-[r:ANALOGOUS|SIMILAR]->() RETURN count(r) AS n"
    before = atlas.cypher(count)[0]["n"]
    for args, message in ((["uc", "uc", "--layers", "features.7:features.7"], "two different models"),
                          (["uc", "uc-perm", "--layers", "features.7"], "LAYER_A:LAYER_B"),
                          (["uc", "uc-perm", "--layers", "nope:features.7"], "no layer"),
                          (["uc", "missing", "--layers", "features.7:features.7"], "missing"),
                          (["uc", "uc-perm", "--layers", "fc:fc"], "no spatial map"),
                          (["uc", "uc-perm", "--layers", "features.0:features.0", "--null-models", "2",
                            "--alpha", "0.001"], "smallest p-value")):
        bad = runner.invoke(main, ["compare", *args], env=cli_env)
        assert bad.exit_code == 1 and message in bad.output and "Traceback" not in bad.output, bad.output
    assert atlas.cypher(count)[0]["n"] == before
    with pytest.raises(CircuitAtlasError):
        atlas.compare("uc", "uc-perm", ["features.7"], ["features.7", "features.11"])


def test_viewer_lists_analogues_and_drop_removes_them(atlas, zoo_models):
    from starlette.testclient import TestClient

    from circuitatlas.web.app import create_app

    result = atlas.compare("uc", "uc-perm", "features.0", "features.0")
    unit, partner = sorted(_edges(atlas, result.analyses[0]))[0]
    client = TestClient(create_app(atlas.store))
    page = client.get("/api/models/uc/layers/features.0/" + unit.rsplit(":", 1)[1]).json()
    assert partner in {a["uid"] for a in page["analogues"]}
    html = client.get("/models/uc/layers/features.0/" + unit.rsplit(":", 1)[1]).text
    assert "Analogues in other models" in html
    assert f"/models/uc-perm/layers/features.0/{partner.rsplit(':', 1)[1]}" in html
    assert atlas.analogues("features.0:" + unit.rsplit(":", 1)[1], model="uc")[0]["uid"] == partner
    atlas.drop("uc-perm")
    assert not atlas.cypher("MATCH ()-[r:ANALOGOUS|SIMILAR]-() WHERE r.analysis CONTAINS 'uc-perm' RETURN r")
