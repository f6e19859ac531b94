"""Hostile and malformed input (#17): each is refused with the project's own one-line error, or
handled, never a traceback: pickles of classes that are gone, numeric options out of range or
NaN, malformed search patterns, unknown models, image paths on neurons that point elsewhere; and
user queries keep what relationships, nodes and paths carry."""

from __future__ import annotations

import doctest
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from circuitatlas import checks, records
from circuitatlas.analysis.examples import top_examples
from circuitatlas.analysis.featurevis import RenderSettings, render_units
from circuitatlas.analysis.planted import build
from circuitatlas.analysis.toy_superposition import sparsity_sweep, train_toy_models
from circuitatlas.analysis.tuning import radial_tuning
from circuitatlas.cli import main
from circuitatlas.errors import IngestError, InvalidInput, NotFound
from circuitatlas.ingest.sources import load_model
from circuitatlas.queries.criteria import Units

NAN, INF = float("nan"), float("inf")


def _invoke(env, *args):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def _one_line_error(result) -> bool:
    text = result.output.strip()
    return result.exit_code == 1 and "Traceback" not in text and len(text.splitlines()) == 1


# -- 1. a pickled module whose class cannot be imported --------------------------------------------
_GHOST = """
import torch

class Ghost(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)
"""


@pytest.mark.parametrize("gone", ["module", "class"])
def test_pickled_module_of_a_class_that_is_gone(tmp_path, monkeypatch, gone):
    name = f"circuitatlas_ghost_{gone}"
    module = types.ModuleType(name)
    exec(_GHOST, module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    path = tmp_path / "ghost.pt"
    torch.save(module.Ghost(), path)
    if gone == "module":
        monkeypatch.delitem(sys.modules, name)
    else:  # the module is there, the class was renamed away
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    with pytest.raises(IngestError, match=rf"pickles {name}\.Ghost, which cannot be imported here"):
        load_model(str(path), trust_pickle=True)
    result = _invoke(None, "ingest", path, "--name", "ghost", "--trust-pickle", "--dry-run")
    assert _one_line_error(result) and f"{name}.Ghost" in result.output, result.output


# -- 2. numeric options: ranges in the CLI, the same checks in the library ---------------------------
BAD_OPTIONS = [
    ["featurevis", "m", "--layer", "x", "--size", "0"],
    ["featurevis", "m", "--layer", "x", "--steps", "-1"],
    ["featurevis", "m", "--layer", "x", "--lr", "nan"],
    ["featurevis", "m", "--layer", "x", "--lr", "0"],
    ["featurevis", "m", "--layer", "x", "--seed", "-1"],
    ["featurevis", "m", "--layer", "x", "--chunk", "0"],
    ["analyze", "toy-superposition", "--features", "0"],
    ["analyze", "toy-superposition", "--hidden", "0"],
    ["analyze", "toy-superposition", "--densities", "0"],
    ["analyze", "toy-superposition", "--steps", "0"],
    ["analyze", "toy-superposition", "--seed", "-3"],
    ["analyze", "svd", "m", "--from", "a", "--to", "b", "-k", "0"],
    ["annotate", "tuning", "m", "--layer", "a", "--angles", "0"],
    ["annotate", "tuning", "m", "--layer", "a", "--radius", "nan"],
    ["annotate", "tuning", "m", "--layer", "a", "--radius", "-2"],
    ["annotate", "examples", "m", "--layer", "a", "--images", ".", "-k", "0"],
    ["motifs", "find", "rotation_equivariance", "m", "--layers", "a,b", "--perm", "0"],
    ["motifs", "find", "rotation_equivariance", "m", "--layers", "a,b", "--alpha", "nan"],
    ["motifs", "find", "rotation_equivariance", "m", "--layers", "a,b", "--alpha", "0"],
    ["motifs", "find", "rotation_equivariance", "m", "--layers", "a,b", "--radius", "inf"],
    ["motifs", "search", "feed_forward_excitation", "m", "--timeout", "nan"],
    ["query", "units", "-m", "m", "--min-selectivity", "nan"],
    ["query", "units", "-m", "m", "--min-selectivity", "2"],
    ["query", "units", "-m", "m", "--limit", "0"],
    ["query", "units", "-m", "m", "--timeout", "0"],
    ["query", "units", "-m", "m", "--timeout", "inf"],
    ["query", "adjacency", "-m", "m", "--min-rel", "2"],
    ["query", "adjacency", "-m", "m", "--min-abs", "nan"],
    ["query", "adjacency", "-m", "m", "--min-abs", "-1"],
    ["query", "paths", "m/a:0", "m/b:0", "--max-len", "0"],
    ["query", "paths", "m/a:0", "m/b:0", "--min-len", "0"],
    ["query", "paths", "m/a:0", "m/b:0", "-k", "0"],
    ["query", "paths", "m/a:0", "m/b:0", "--min-rel", "nan"],
    ["query", "paths", "m/a:0", "m/b:0", "--limit", "-5"],
    ["query", "common", "-m", "m", "--min-shared", "0"],
    ["query", "common", "-m", "m", "--min-rel", "-0.1"],
    ["query", "similar", "m/a:0", "-k", "0"],
    ["query", "similar", "m/a:0", "--timeout", "-1"],
    ["query", "circuit", "m/a:0", "--depth", "0"],
    ["query", "circuit", "m/a:0", "--min-rel", "1.5"],
]


@pytest.mark.parametrize("args", BAD_OPTIONS, ids=[" ".join(a[:2] + a[-2:]) for a in BAD_OPTIONS])
def test_numeric_options_out_of_range_are_usage_errors(args):
    """Refused while the options are parsed: nothing connects, nothing runs."""
    result = _invoke({"NEO4J_URI": "bolt://127.0.0.1:9"}, *args)
    assert result.exit_code == 2 and "Invalid value" in result.output, result.output
    assert "Traceback" not in result.output


def _planted() -> torch.nn.Module:
    return build("equivariance").module


LIBRARY_CALLS = {
    "render size": lambda: RenderSettings(size=0),
    "render steps": lambda: RenderSettings(steps=-1),
    "render fractional steps": lambda: RenderSettings(steps=2.5),
    "render lr nan": lambda: RenderSettings(lr=NAN),
    "render lr inf": lambda: RenderSettings(lr=INF),
    "render seed": lambda: RenderSettings(seed=-1),
    "render chunk": lambda: render_units(torch.nn.Sequential(), [], chunk=0),
    "toy features": lambda: train_toy_models(0, 2, [1.0]),
    "toy steps": lambda: train_toy_models(4, 2, [1.0], steps=0),
    "toy densities": lambda: sparsity_sweep(4, 2, n_densities=0, steps=1),
    "toy min density nan": lambda: sparsity_sweep(4, 2, 2, min_density=NAN, steps=1),
    "tuning angles": lambda: radial_tuning(_planted(), "high", n_angles=0, size=33),
    "tuning radius": lambda: radial_tuning(_planted(), "high", n_angles=4, size=33, radius=NAN),
    "examples k": lambda: top_examples(_planted(), "high", np.zeros((2, 33, 33, 3), np.float32), k=0),
    "selectivity nan": lambda: Units(model="m", min_selectivity=NAN),
    "selectivity above 1": lambda: Units(model="m", min_selectivity=2),
    "orientation nan": lambda: Units(model="m", orientation=(NAN, 30)),
}


@pytest.mark.parametrize("call", LIBRARY_CALLS.values(), ids=LIBRARY_CALLS.keys())
def test_library_checks_the_same_ranges(call):
    with pytest.raises(InvalidInput):
        call()


def test_checks_doctests():
    assert doctest.testmod(checks).failed == 0


API_CALLS = {
    "units limit nan": lambda a: a.units(model="nomodel", limit=NAN),
    "units timeout nan": lambda a: a.units(model="nomodel", timeout=NAN),
    "units timeout 0": lambda a: a.units(model="nomodel", timeout=0),
    "adjacency min_abs nan": lambda a: a.adjacency(Units(model="nomodel"), Units(model="nomodel"), min_abs=NAN),
    "common min_shared 1.5": lambda a: a.common_inputs(Units(model="nomodel"), min_shared=1.5),
    "circuit depth nan": lambda a: a.circuit("nomodel/a:0", depth=NAN),
    "paths max_len 0": lambda a: a.paths("nomodel/a:0", "nomodel/b:0", max_len=0),
    "search timeout nan": lambda a: a.search("feed_forward_excitation", "nomodel", timeout=NAN),
    "search limit 0.5": lambda a: a.search("feed_forward_excitation", "nomodel", limit=0.5),
    "motifs alpha nan": lambda a: a.find_motifs("rotation_equivariance", "nomodel", ["a", "b"], alpha=NAN),
    "motifs n_perm 0": lambda a: a.find_motifs("rotation_equivariance", "nomodel", ["a", "b"], n_perm=0),
    "motifs radius 0": lambda a: a.find_motifs("rotation_equivariance", "nomodel", ["a", "b"],
                                               stimulus_params={"radius": 0}),
    "examples k 0": lambda a: a.annotate_examples("nomodel", "a", np.zeros((1, 8, 8, 3), np.float32), k=0),
    "featurevis seed": lambda a: a.featurevis("nomodel", "a", seed=-1),
    "featurevis chunk": lambda a: a.featurevis("nomodel", "a", chunk=0),
}


@pytest.mark.parametrize("call", API_CALLS.values(), ids=API_CALLS.keys())
def test_api_refuses_bad_numbers_before_anything_runs(atlas, call):
    """InvalidInput before the model is even looked up (it does not exist)."""
    with pytest.raises(InvalidInput):
        call(atlas)


# -- 3. malformed patterns ---------------------------------------------------------------------------
_AB = {"a": {}, "b": {}}
BAD_PATTERNS = {
    "min a list": ({"nodes": _AB, "edges": [{"src": "a", "dst": "b", "min": [1]}]}, "min must be a number"),
    "min text": ({"nodes": _AB, "edges": [{"src": "a", "dst": "b", "min": "high"}]}, "min must be a number"),
    "min nan": ({"nodes": _AB, "edges": [{"src": "a", "dst": "b", "min": NAN}]}, "min must be a finite number"),
    "relative min above 1": ({"nodes": _AB, "edges": [{"src": "a", "dst": "b", "min": 2, "relative": True}]},
                             "between 0 and 1"),
    "edge a number": ({"nodes": _AB, "edges": [1]}, "pattern edge 0 must be a dict"),
    "src a list": ({"nodes": _AB, "edges": [{"src": ["a"], "dst": "b"}]}, "src \\['a'\\] is not a node"),
    "relative text": ({"nodes": _AB, "edges": [{"src": "a", "dst": "b", "relative": "yes"}]},
                      "relative must be true or false"),
    "edge key typo": ({"nodes": _AB, "edges": [{"src": "a", "dst": "b", "minimum": 0.5}]}, "unknown keys"),
    "node a number": ({"nodes": {"a": 1}, "edges": []}, "pattern node 'a' must be a dict"),
    "layer a list": ({"nodes": {"a": {"layer": ["x"]}}, "edges": []}, "must be a layer name"),
    "node key typo": ({"nodes": {"a": {"layr": "x"}}, "edges": []}, "unknown keys"),
    "extra top-level key": ({"nodes": _AB, "edges": [], "edge": []}, "and nothing else"),
    "a list": ([{"nodes": _AB}], "a pattern is a dict"),
}


@pytest.mark.parametrize("pattern, message", BAD_PATTERNS.values(), ids=BAD_PATTERNS.keys())
def test_malformed_patterns_say_what_is_wrong(atlas, pattern, message):
    with pytest.raises(InvalidInput, match=message):
        atlas.search(pattern, "nomodel")
    with pytest.raises(InvalidInput, match=message):
        atlas.count_matches(pattern, "nomodel")


def test_cli_malformed_pattern_is_one_line(atlas, cli_env):
    result = _invoke(cli_env, "motifs", "search", '{"nodes": {"a": {}, "b": {}}, "edges": [{"src": "a", '
                     '"dst": "b", "min": [1]}]}', "nomodel")
    assert _one_line_error(result) and "pattern edge 0: min must be a number" in result.output, result.output


# -- 4. user queries keep relationships, nodes and paths ---------------------------------------------
_PROBE = ("CREATE (a:BadInputProbe {uid: 'probe/a:0', x: 1})-[:PROBE_LINK {w: 1.5, tag: 't'}]->"
          "(b:BadInputProbe:Second {uid: 'probe/b:0'})")
_READ = ("MATCH p = (a:BadInputProbe)-[r:PROBE_LINK]->(b) "
         "RETURN r, a, p, [r] AS rs, {inner: b} AS m, a.uid AS uid")


def _check_probe_row(row: dict) -> None:
    r, a, p = row["r"], row["a"], row["p"]
    assert {k: r[k] for k in ("_type", "w", "tag")} == {"_type": "PROBE_LINK", "w": 1.5, "tag": "t"}
    assert a == {"_labels": ["BadInputProbe"], "uid": "probe/a:0", "x": 1, "_element_id": a["_element_id"]}
    b = row["m"]["inner"]
    assert b["_labels"] == ["BadInputProbe", "Second"] and b["uid"] == "probe/b:0"
    assert (r["_start"], r["_end"]) == (a["_element_id"], b["_element_id"])
    assert [n["uid"] for n in p["nodes"]] == ["probe/a:0", "probe/b:0"] and p["relationships"] == [r]
    assert row["rs"] == [r] and row["uid"] == "probe/a:0"


@pytest.fixture()
def probe(atlas):
    atlas.execute(_PROBE)
    yield
    atlas.execute("MATCH (n:BadInputProbe) DETACH DELETE n")


def test_records_keep_relationship_properties(atlas, probe):
    with atlas.store.session(read=True) as session:
        rows = [records.row(record) for record in session.run(_READ)]
    assert len(rows) == 1
    _check_probe_row(rows[0])
    json.dumps(rows)  # plain data


def test_cli_cypher_json_keeps_relationship_properties(atlas, cli_env, probe):
    """Needs Store.query_read_only / query_write to build rows with records.row (store.py)."""
    for extra in ([], ["--write"]):
        result = _invoke(cli_env, "cypher", _READ, "--json", *extra)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)
        assert len(rows) == 1
        _check_probe_row(rows[0])


# -- 5. unknown models -------------------------------------------------------------------------------
def test_unknown_model_is_not_found(atlas, cli_env):
    with pytest.raises(NotFound, match="no model 'nomodel'"):
        atlas.motifs("nomodel")
    with pytest.raises(NotFound, match="no model 'nomodel'"):
        atlas.search("feed_forward_excitation", "nomodel")
    with pytest.raises(NotFound, match="no model 'nomodel'"):
        atlas.count_matches({"nodes": {"a": {}}, "edges": []}, "nomodel")
    for args in (["motifs", "list", "nomodel"], ["motifs", "search", "feed_forward_excitation", "nomodel"]):
        result = _invoke(cli_env, *args)
        assert _one_line_error(result) and "no model 'nomodel'" in result.output, result.output


def test_known_model_without_motifs_lists_none(atlas, cli_env):
    atlas.execute("MERGE (:Model {id: 'bare', status: 'complete'})")
    assert atlas.motifs("bare") == []
    assert atlas.search("feed_forward_excitation", "bare") == []
    result = _invoke(cli_env, "motifs", "list", "bare", "--json")
    assert result.exit_code == 0 and json.loads(result.output) == []
    atlas.execute("MATCH (m:Model {id: 'bare'}) DELETE m")


# -- 6. image paths stored on neurons ----------------------------------------------------------------
def _stored(atlas, model: str) -> dict[int, str]:
    rows = atlas.cypher("MATCH (n:Neuron {model: $m, layer: 'high'}) RETURN n.channel AS c, n.featurevis AS p",
                        m=model)
    return {r["c"]: r["p"] for r in rows}


def _plant_bad_paths(atlas, model: str, artifacts_dir: Path) -> dict[int, str]:
    text = artifacts_dir / "notes.txt"
    text.write_text("not a picture")
    bad = {0: "/etc/passwd", 1: str(artifacts_dir / "gone.png"), 2: str(text)}
    atlas.execute("UNWIND $rows AS r MATCH (n:Neuron {model: $m, layer: 'high', channel: r.c}) "
                  "SET n.featurevis = r.p", m=model, rows=[{"c": c, "p": p} for c, p in bad.items()])
    return bad


def test_featurevis_never_reads_foreign_or_broken_paths(atlas, cli_env, artifacts_dir):
    atlas.ingest("planted:equivariance", "fvbad", input_size=(3, 33, 33), expanded=False)
    render = {"steps": 4, "size": 33}
    first = atlas.featurevis("fvbad", "high", channels=[0, 1, 2, 3], **render)
    assert first["rendered"] == 4 and not first.get("left_out")
    good = _stored(atlas, "fvbad")
    bad = _plant_bad_paths(atlas, "fvbad", artifacts_dir)

    # units not asked for keep their paths, and are left off the sheet with the reason
    other = atlas.featurevis("fvbad", "high", channels=[3], **render)
    assert set(other["left_out"]) == {0, 1, 2} and Path(other["sheet"]).is_file()
    assert "outside the artifacts folder" in other["left_out"][0]
    assert "does not exist" in other["left_out"][1] and "not an image" in other["left_out"][2]
    cli = _invoke(cli_env, "featurevis", "fvbad", "--layer", "high", "--channels", "3", "--steps", 4, "--size", 33)
    assert cli.exit_code == 0 and "note: channel 0 left off the contact sheet" in cli.output, cli.output

    # units asked for are linked again to their renders (the paths were the only thing wrong)
    again = atlas.featurevis("fvbad", "high", channels=[0, 1, 2], **render)
    assert (again["rendered"], again["linked"], again["left_out"]) == (0, 3, {})
    assert {c: p for c, p in _stored(atlas, "fvbad").items() if c in bad} == {c: good[c] for c in bad}

    # a render whose sidecar or image is broken counts as missing: it is made again
    png = Path(good[1])
    png.with_suffix(".json").write_text("{not json")
    Path(good[2]).write_text("not a png either")
    redone = atlas.featurevis("fvbad", "high", channels=[1, 2], **render)
    assert redone["rendered"] == 2 and redone["left_out"] == {}
    assert json.loads(png.with_suffix(".json").read_text())["activation"] is not None
    assert math.isfinite(float(atlas.cypher("MATCH (n:Neuron {uid: 'fvbad/high:2'}) "
                                            "RETURN n.featurevis_activation AS a")[0]["a"]))
