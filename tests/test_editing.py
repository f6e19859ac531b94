"""Circuit editing on the real graph: edits stored as data, the edited network, effects with a
random control, faithfulness, and the Curve Circuits replications in small."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from circuitatlas.analysis.planted import orientation_profile
from circuitatlas.errors import InvalidInput, NotFound, QueryError

CURVES = {"stimulus": "curve", "radius": 5.0}
EARLY_TO_CURVE = ("EXISTS { (a)-[:IN_MOTIF {role: 'upstream'}]->(m:Motif {kind: 'rotation_equivariance'})"
                  "<-[:IN_MOTIF {role: 'downstream'}]-(b) }")


@pytest.fixture(scope="module")
def family(atlas):
    atlas.ingest("planted:equivariance", "eq", input_size=(3, 33, 33), expanded=False)
    found = atlas.find_motifs("rotation_equivariance", "eq", ["mid", "high"], stimulus_params=CURVES)
    assert len(found) == 1
    return atlas.motifs("eq")[0]


def test_removing_inhibition_from_opposite_curves_raises_the_echo(atlas, family):
    made = atlas.create_edit("eq", "no-opposite-inhibition", edges_where=f"w.sum < 0 AND {EARLY_TO_CURVE}",
                             scale=0.0, description="negative weights from early curves into curves removed")
    assert made["edges"] > 0 and made["ablations"] == 0
    before = {r["uid"]: r for r in atlas.cypher("MATCH (a)-[w:WEIGHT]->(b:Neuron {model: 'eq', layer: 'high'}) "
                                                "RETURN a.uid + '>' + b.uid AS uid, w.kernel AS kernel")}
    result = atlas.edit_effect("eq", "no-opposite-inhibition", stimulus_params=CURVES, n_control=3)
    s = result.summary
    # removing only negative weights cannot lower a response: each curve unit now answers the
    # opposite curve (an echo), which the same number of random removals does not bring about
    rises = [u["echo_after"] - u["echo_before"] for u in result.units]
    control_rises = [c["echo_mean"] - c["echo_mean_before"] for c in result.control]
    assert len(rises) == 8 and min(rises) > 0.05
    # the control removes as many of the other early-curve -> curve weights, none of them
    # negative (the edit took all 24): removing excitation cannot raise a rectified echo
    assert len(control_rises) == 3 and max(control_rises) <= 1e-6
    assert {u["role"] for u in result.units} == {"edge target"}
    figure = result.figure()
    assert figure.width > 600 and figure.height > 2 * 110  # 8 units, 4 a row
    from starlette.testclient import TestClient

    from circuitatlas.web.app import create_app

    page = TestClient(create_app(atlas.store)).get("/models/eq").text  # the viewer shows the edit and its figure
    assert "no-opposite-inhibition" in page and "echo: 0 -&gt; 0.11" in page
    with Image.open(s["figure"]) as saved:
        assert saved.size == figure.size
    # the stored weights never change
    after = {r["uid"]: r for r in atlas.cypher("MATCH (a)-[w:WEIGHT]->(b:Neuron {model: 'eq', layer: 'high'}) "
                                               "RETURN a.uid + '>' + b.uid AS uid, w.kernel AS kernel")}
    assert after == before
    stored = atlas.edits("eq")
    assert stored[0]["name"] == "no-opposite-inhibition" and stored[0]["edges"] == made["edges"]
    assert stored[0]["effect_summary"]["echo_mean"] == pytest.approx(s["echo_mean"])


def _save_labelled(folder, task: str, n: int, seed: int):
    from PIL import Image

    from circuitatlas import zoo

    x, y = zoo.task_data(task, n, seed=seed)
    for i, (image, label) in enumerate(zip(x.permute(0, 2, 3, 1).numpy(), y.tolist())):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image.clip(0, 1) * 255).round().astype(np.uint8)).save(folder / str(label) / f"{i:04d}.png")
    return folder


def _handset_curve_units(atlas, model: str, family: list[int], images: np.ndarray) -> dict:
    """Hand-set replacements for curve units of features.11: the planted network's recipe over
    the model's own tuned features.7 units (excite similar orientations, inhibit opposite ones,
    :func:`orientation_profile`), one gain and bias per unit fitted to the unit it replaces."""
    from circuitatlas.analysis.hooks import capture

    early = atlas.cypher("MATCH (n:Neuron {model: $m, layer: 'features.7'}) RETURN n.channel AS c, "
                         "n.orientation AS o, n.orientation_selectivity AS s ORDER BY c", m=model)
    curves = {r["c"]: r["o"] for r in atlas.cypher("MATCH (n:Neuron {model: $m, layer: 'features.11'}) "
                                                    "RETURN n.channel AS c, n.orientation AS o", m=model)}
    net = atlas.module(model)
    with torch.no_grad(), capture(net, ["features.10", "features.12"], stop=False) as seen:
        net(torch.from_numpy(images).permute(0, 3, 1, 2))
    inputs, target = seen["features.10"], seen["features.12"]
    out = {}
    for j in family:
        kernel = np.zeros((len(early), 3, 3))
        for row in early:
            if row["s"] >= 0.5:
                kernel[row["c"]] = float(orientation_profile(row["o"] - curves[j])) * row["s"] / 9.0
        drive = torch.nn.functional.conv2d(inputs, torch.from_numpy(kernel).float()[None], padding=1)[:, 0]
        design = torch.stack([drive.flatten(), torch.ones(drive.numel())], 1).double()
        gain, bias = torch.linalg.lstsq(design, target[:, j].flatten()[:, None].double()).solution[:, 0].tolist()
        out[f"features.11:{j}"] = (kernel * gain, bias)
    return out


def test_curve_family_surgery_on_the_curves_model(atlas, tmp_path):
    """Ablating the curves model's curve family costs loss on its task; hand-set units in its
    place (the planted recipe over the model's own early curves) win part of it back."""
    from circuitatlas.analysis.examples import load_images
    from circuitatlas.analysis.motifs.equivariance import orientation_families

    atlas.ingest("zoo:curves", "zc", input_size=(3, 32, 32), expanded=False)
    images = _save_labelled(tmp_path / "task", "curves", 400, seed=4242)
    atlas.annotate_tuning("zc", "features.7", stimulus="curve", radius=8.0)
    tuning = atlas.annotate_tuning("zc", "features.11", stimulus="curve", radius=8.0)
    family = sorted(max(orientation_families(tuning), key=len))
    assert len(family) >= 16
    units = [f"features.11:{c}" for c in family]
    atlas.create_edit("zc", "no-curves", ablate=units, mode="mean", images=images)
    ablated = atlas.edit_effect("zc", "no-curves", images, n_control=3, stimulus_params={"radius": 8.0})
    s = ablated.summary
    assert s["images"] == 400 and s["accuracy_before"] > 0.95
    assert s["loss"] > s["loss_before"] + 0.05
    fit_images, _ = load_images(_save_labelled(tmp_path / "fit", "curves", 200, seed=77), 32)
    handset = _handset_curve_units(atlas, "zc", family, fit_images)
    atlas.create_edit("zc", "handset-curves", replace=handset)
    replaced = atlas.edit_effect("zc", "handset-curves", images, n_control=0, stimulus_params={"radius": 8.0})
    r = replaced.summary
    recovered = (s["loss"] - r["loss"]) / (s["loss"] - s["loss_before"])
    print(json.dumps({"ablated": s, "replaced": r, "recovered": recovered}, indent=1))
    assert 0.05 < recovered < 1.0


def test_faithfulness_of_a_planted_motif_is_high_and_of_random_units_low(atlas):
    atlas.ingest("planted:mixed", "fm", input_size=(3, 33, 33), expanded=False)
    atlas.find_motifs("rotation_equivariance", "fm", ["mid", "high"], stimulus_params=CURVES)
    motif = next(m for m in atlas.motifs("fm") if m["kind"] == "rotation_equivariance")
    result = atlas.faithfulness("fm", motif=motif["uid"], stimulus_params=CURVES)
    members = atlas.cypher("MATCH (n:Neuron)-[r:IN_MOTIF]->(:Motif {uid: $u}) RETURN n.layer AS layer, "
                           "n.channel AS channel", u=motif["uid"])
    kept = [f"mid:{m['channel']}" for m in members if m["layer"] == "mid"]
    targets = [f"high:{m['channel']}" for m in members if m["layer"] == "high"]
    mid = atlas.layers("fm")
    n_mid = next(layer["channels"] for layer in mid if layer["name"] == "mid")
    assert result["ablated_units"] == n_mid - len(kept) > 0
    assert result["faithfulness"] > 0.8
    stored = atlas.cypher("MATCH (m:Motif {uid: $u}) RETURN m.faithfulness AS f", u=motif["uid"])
    assert stored[0]["f"] == pytest.approx(result["faithfulness"])
    rng = np.random.default_rng(5)
    others = [c for c in range(n_mid) if f"mid:{c}" not in kept]
    scores = []
    for _ in range(3):
        random_kept = [f"mid:{c}" for c in rng.choice(others, len(kept), replace=False)]
        scores.append(atlas.faithfulness("fm", random_kept + targets, targets=targets,
                                         stimulus_params=CURVES)["faithfulness"])
    assert max(scores) < 0.3, scores


def test_the_edited_network_and_bad_edits(atlas, family):
    base = atlas.module("eq")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    atlas.create_edit("eq", "zero-two", ablate=["high:0", "high:1"])
    edited = atlas.module("eq", edit="zero-two")
    x = torch.rand(2, 3, 33, 33)
    with torch.no_grad():
        out_base, out_edit = base(x), edited(x)
    assert torch.all(out_edit[:, :2] == 0) and torch.equal(out_edit[:, 2:], out_base[:, 2:])
    assert all(torch.equal(v, before[k]) for k, v in atlas.module("eq").state_dict().items())

    count = "MATCH (e:Edit) RETURN count(e) AS n"
    n = atlas.cypher(count)[0]["n"]
    bad = [
        dict(name="zero-two", ablate=["high:3"]),  # the name exists
        dict(name="w1", edges_where="true) DETACH DELETE a WITH a MATCH (b) WHERE (true"),
        dict(name="w2", edges_where="w.sum < 0 // comment"),
        dict(name="w3", edges_where="w.sum < 0 RETURN 1"),
        dict(name="w4", edges_where="EXISTS { MATCH (a) SET a.hit = 1 }"),
        dict(name="w4b", edges_where="a.`\\` IS NULL) WITH a, w, b MATCH (x) SET x.hit = 1 WITH a, w, b WHERE (true"),
        dict(name="w4c", edges=[("mid:0", "high:0", np.ones((3, 3)))]),  # the kernels there are 5x5
        dict(name="w5", ablate=["high:99"]),
        dict(name="w6", ablate=["nolayer:0"]),
        dict(name="w7", edges=[("edges:0", "high:0")]),  # no direct edge: high reads mid
        dict(name="w8", edges_where="a.layer = 'nowhere'"),  # selects nothing: changes nothing
        dict(name="bad name/", ablate=["high:3"]),
        dict(name="w9", ablate=["high:3"], mode="noise"),
    ]
    for case in bad:
        name = case.pop("name")
        with pytest.raises((InvalidInput, NotFound, QueryError)) as info:
            atlas.create_edit("eq", name, **case)
        assert "\n" not in str(info.value).strip(), str(info.value)
    with pytest.raises(NotFound):
        atlas.create_edit("no-such-model", "x", ablate=["high:0"])
    assert atlas.cypher(count)[0]["n"] == n
    assert atlas.cypher("MATCH (n:Neuron {model: 'eq'}) WHERE n.hit IS NOT NULL RETURN count(n) AS c")[0]["c"] == 0
    atlas.delete_edit("eq", "zero-two")
    with pytest.raises(NotFound):
        atlas.module("eq", edit="zero-two")


def test_cli_edit_create_effect_list_faithfulness_and_drop(atlas, family, cli_env, tmp_path):
    from click.testing import CliRunner

    from circuitatlas.cli import main

    runner = CliRunner()
    ok = runner.invoke(main, ["edit", "create", "eq", "cli-cut", "--edges", "mid:0>high:4,mid:1>high:5", "--scale",
                              "0.5", "--json"], env=cli_env)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["edges"] == 2
    plot = tmp_path / "effect.png"
    eff = runner.invoke(main, ["edit", "effect", "eq", "cli-cut", "--control", "1", "--radius", "5", "--json",
                               "--plot", str(plot)], env=cli_env)
    assert eff.exit_code == 0, eff.output
    data = json.loads(eff.output[eff.output.index("{"):])
    with Image.open(plot) as picture:  # two panels of tuning curves
        assert picture.width > 300 and picture.height > 100
    assert {u["unit"] for u in data["units"]} == {"high:4", "high:5"} and len(data["control"]) == 1
    listed = runner.invoke(main, ["edit", "list", "eq", "--json"], env=cli_env)
    assert "cli-cut" in {row["name"] for row in json.loads(listed.output)}
    faithful = runner.invoke(main, ["edit", "faithfulness", "eq", "--motif", family["uid"], "--radius", "5"],
                             env=cli_env)
    assert faithful.exit_code == 0 and "faithfulness" in faithful.output, faithful.output
    for args, message in ((["create", "eq", "cli-cut", "--ablate", "high:0"], "already has an edit"),
                          (["create", "eq", "x", "--edges-where", "w.sum < 0) OR (true"], "brackets"),
                          (["create", "eq", "x", "--edges", "mid:0-high:1"], "SOURCE>TARGET"),
                          (["effect", "eq", "missing"], "no edit"),
                          (["faithfulness", "eq"], "--motif or --units")):
        bad = runner.invoke(main, ["edit", *args], env=cli_env)
        assert bad.exit_code != 0 and message in bad.output and "Traceback" not in bad.output, bad.output
    atlas.drop("eq")
    assert atlas.cypher("MATCH (e:Edit {model: 'eq'}) RETURN count(e) AS n")[0]["n"] == 0
