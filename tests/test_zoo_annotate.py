"""Zoo models, model rebuilding from the graph, tuning and dataset-example annotations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from circuitatlas.analysis import stimuli
from circuitatlas.cli import main
from circuitatlas.ingest import zoo


@pytest.mark.parametrize("name", list(zoo.SPECS))
def test_zoo_models_learn_their_task(name):
    built = zoo.build(name)
    again = zoo.build(name)  # cached: the same file, not retrained
    assert again.path == built.path and again.train_seconds == built.train_seconds
    spec = zoo.SPECS[name]
    x, y = zoo.task_data(spec.task, 600, seed=9999, size=spec.size)  # fresh data, never seen
    with torch.no_grad():
        accuracy = float((built.module(x).argmax(1) == y).float().mean())
    assert accuracy >= 0.95


def _truth(atlas, model: str) -> dict:
    return json.loads(atlas.model_meta(model)["truth"])


def test_tuning_annotation_recovers_planted_orientations(atlas):
    atlas.ingest("planted:equivariance", "pl", input_size=(3, 33, 33), expanded=False)
    truth = _truth(atlas, "pl")
    atlas.annotate_tuning("pl", "high", radius=5.0, width=1.5)  # the network is rebuilt from the graph
    rows = atlas.cypher("MATCH (n:Neuron {model: 'pl', layer: 'high'}) "
                        "RETURN n.channel AS c, n.orientation AS o, n.orientation_selectivity AS s, "
                        "size(n.tuning) AS n ORDER BY c")
    for row in rows:
        planted = truth["units"][f"high:{row['c']}"]["orientation"]
        assert abs((row["o"] - planted + 180) % 360 - 180) < 5 and row["s"] > 0.5 and row["n"] == 64


def test_dataset_examples_of_a_curve_unit_are_curves_of_its_orientation(atlas, tmp_path):
    if "pl" not in {m.id for m in atlas.models()}:
        atlas.ingest("planted:equivariance", "pl", input_size=(3, 33, 33), expanded=False)
    truth = _truth(atlas, "pl")
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 360, 200)
    images = np.stack([stimuli.curve(a, radius=5, size=33, width=1.5,
                                     position=tuple(rng.uniform(10, 22, 2))) for a in angles])
    found = atlas.annotate_examples("pl", "high", images, k=9, out_dir=str(tmp_path))
    for channel, examples in found.items():
        planted = truth["units"][f"high:{channel}"]["orientation"]
        for ex in examples:
            assert abs((angles[ex.image_index] - planted + 180) % 360 - 180) < 35
    stored = atlas.cypher("MATCH (n:Neuron {uid: 'pl/high:2'}) RETURN n.examples AS e, n.examples_activation AS a")[0]
    assert len(stored["e"]) == 9 and all((tmp_path / "2").exists() for _ in stored["e"])
    assert stored["a"] == sorted(stored["a"], reverse=True)


def test_zoo_model_rebuilt_from_the_graph_has_the_same_weights(atlas):
    atlas.ingest("zoo:curves", "zc", input_size=(3, 32, 32), expanded=False)
    rebuilt = atlas.module("zc")
    original = zoo.build("curves").module
    for a, b in zip(rebuilt.state_dict().values(), original.state_dict().values()):
        assert torch.equal(a, b)
    assert atlas.model_meta("zc")["source"] == "zoo"


def test_module_ingested_from_python_cannot_be_rebuilt(atlas):
    from circuitatlas.errors import IngestError

    atlas.ingest(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)), "pyobj", input_size=(3, 8, 8))
    with pytest.raises(IngestError, match="Python object"):
        atlas.module("pyobj")


def test_cli_zoo_and_annotate(atlas, cli_env):
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["zoo", "list", "--json"], env=cli_env).output)
    assert {row["name"] for row in listed} == set(zoo.SPECS)
    if "pl" not in {m.id for m in atlas.models()}:
        atlas.ingest("planted:equivariance", "pl", input_size=(3, 33, 33), expanded=False)
    result = runner.invoke(main, ["annotate", "tuning", "pl", "--layer", "mid", "--radius", "5", "--json"],
                           env=cli_env)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 8 + 0 and all(r["selectivity"] > 0.5 for r in rows)
    bad = runner.invoke(main, ["annotate", "tuning", "pl", "--layer", "nope"], env=cli_env)
    assert bad.exit_code == 1 and "no layer" in bad.output and "Traceback" not in bad.output
