"""The main job end to end (``circuitatlas demo``): the built-in ``tiny`` network, the ``curves``
zoo model and a planted network ingested, every analysis run, and where to look."""

from __future__ import annotations

from circuitatlas import artifacts, names
from circuitatlas.analysis.motifs.runs import explain
from circuitatlas.ingest import zoo
from circuitatlas.ingest.builtin import TinyNet, _Block  # noqa: F401  (pickles of the demo net name this module)

DEMO_QUERIES = (
    ("the strongest direct inputs of one first-layer neuron",
     "MATCH (a:Neuron)-[w:WEIGHT]->(b:Neuron {uid: $uid}) RETURN a.uid AS src, w.l2 AS l2, w.kernel AS kernel "
     "ORDER BY w.l2 DESC LIMIT 5"),
    ("the strongest expanded weights between observation layers",
     "MATCH (a:Neuron {model: $model})-[e:EXPANDED]->(b:Neuron) "
     "RETURN a.uid AS src, b.uid AS dst, e.sum AS sum ORDER BY abs(e.sum) DESC LIMIT 5"),
    ("the motifs found, with their members and roles",
     "MATCH (n:Neuron)-[r:IN_MOTIF]->(m:Motif) RETURN m.model AS model, m.kind AS kind, m.p_value AS p, "
     "collect(r.role + ' ' + n.uid)[..6] AS members ORDER BY p"),
    ("the SVD clusters of the first layer, with their members",
     "MATCH (n:Neuron)-[:IN_CLUSTER]->(c:Cluster {model: $model, side: 'input'}) "
     "RETURN c.analysis AS analysis, c.index AS cluster, collect(n.channel) AS channels ORDER BY cluster"),
)


def _run_detectors(atlas, model: str, runs: list, echo) -> list[dict]:
    """Every detector with its default settings; the diagnostics printed where one finds nothing."""
    report = []
    for kind, layers in runs:
        found = atlas.find_motifs(kind, model, layers)
        best = min((m.p_value for m in found), default=None)
        size = max((len(m.members) for m in found), default=0)
        echo(f"  {kind} on {model} {' -> '.join(layers)}: {len(found)} found"
             + (f" (best p = {best:.3g}, largest has {size} units)" if found else ""))
        if not found:
            for line in explain(found.diagnostics):
                echo(f"    {line}")
        report.append({"model": model, "kind": kind, "layers": layers, "found": len(found), "best_p": best,
                       "diagnostics": found.diagnostics})
    return report


def run_demo(atlas, name: str = "demo", echo=lambda message: None, progress=None) -> dict:
    """Ingest the tiny network as ``name`` (replacing an older copy) and report where to look.

    ``echo`` receives human-readable lines; the returned dict holds the same facts as data.
    """
    summary = atlas.ingest("tiny", name, input_size=(3, 32, 32), replace=True, progress=progress)
    if progress is not None and hasattr(progress, "close"):
        progress.close()
    echo(f"ingested {summary.id}: {summary.layers} layers, {summary.neurons} neurons, "
         f"{summary.weight_edges} WEIGHT and {summary.expanded_edges} EXPANDED edges")
    plot = artifacts.inside(name, "svd-stem.0-block1.png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    svd = atlas.analyze_svd(name, "stem.0", "block1", plot=str(plot))
    echo(f"SVD of |expanded W| stem.0 -> block1: k={svd.k}, input cluster sizes "
         f"{[int((svd.result.input_clusters == c).sum()) for c in range(svd.k)]}; written as svd_in/svd_out, "
         f"cluster_in/cluster_out and (:Cluster) nodes")
    echo(f"  plot: {plot}")
    curves = f"{name}-curves"
    echo("building the `curves` zoo model (trained once, then cached) ...")
    built = zoo.build("curves", progress=echo)
    echo(f"  test accuracy {built.accuracy:.3f} ({built.path})")
    summary_c = atlas.ingest("zoo:curves", curves, input_size=(3, 32, 32), replace=True)
    echo(f"ingested {curves}: {summary_c.neurons} neurons, {summary_c.weight_edges} WEIGHT and "
         f"{summary_c.expanded_edges} EXPANDED edges")
    tuning = atlas.annotate_tuning(curves, "features.7", radius=8.0)
    tuned = int((tuning.selectivity > 0.5).sum())
    echo(f"radial tuning of {curves}/features.7: {tuned} of {len(tuning.channels)} units are orientation-selective "
         f"(vector strength > 0.5); stored as orientation, orientation_selectivity, tuning")
    fv = atlas.featurevis_layers(curves, ["features.7", "features.11"], steps=128, size=48)[-1]
    echo(f"feature visualisation of {curves}/features.11 (last conv, {len(fv['channels'])} channels; "
         f"{fv['rendered']} rendered, {fv['skipped']} already done): contact sheet {fv['sheet']}")
    motif_report = _run_detectors(atlas, curves, [
        ("rotation_equivariance", ["features.7", "features.11"]),
        ("union_over_cases", ["features.3", "features.7", "features.11"]),
        ("superposition", ["features.7", "features.11"]),
        ("flip_equivariance", ["input", "features.0", "features.3", "features.7", "features.11"])], echo)
    universality = _universality(atlas, name, curves, echo)
    planted = f"{name}-planted"
    atlas.ingest("planted:mixed", planted, input_size=(3, 33, 33), expanded=False, replace=True)
    echo(f"ingested {planted}: a hand-built network with every planted motif and distractor units")
    atlas.featurevis_layers(planted, ["edges", "mid", "high", "top"], steps=128, size=33)
    echo(f"feature visualisation of {planted}: edges, mid, high and top")
    decomposed = atlas.decomposed(planted, "mid", 0, "edges", steps=256)
    echo(f"decomposed feature visualisation of {planted}/mid:0 (an early-curve unit) over its line detectors: "
         f"{decomposed['rendered']} positions, each a line along the curve's tangent: {decomposed['grid']}")
    motif_report += _run_detectors(atlas, planted, [
        ("rotation_equivariance", ["mid", "high"]), ("union_over_cases", ["mid", "high", "top"]),
        ("superposition", ["mid", "high"]), ("flip_equivariance", ["input", "edges", "mid", "high"])], echo)
    editing = _edit_curves(atlas, planted, echo)
    params = {"uid": names.neuron_uid(name, "stem.0", 0), "model": name}
    echo("try:")
    for title, query in DEMO_QUERIES:
        shown = query.replace("$uid", repr(params["uid"])).replace("$model", repr(name))
        echo(f"  # {title}\n  circuitatlas cypher \"{shown}\"")
    echo(f"  # the most orientation-selective curve-model units\n  circuitatlas cypher \"MATCH (n:Neuron "
         f"{{model: '{curves}', layer: 'features.7'}}) RETURN n.channel AS unit, n.orientation AS preferred, "
         f"n.orientation_selectivity AS selectivity ORDER BY selectivity DESC LIMIT 8\"")
    pages = viewer_pages(atlas, curves, planted)
    echo("look at the circuits: `circuitatlas serve` (read-only viewer on http://127.0.0.1:8765/), then open")
    for title, url in pages.items():
        echo(f"  {title}: http://127.0.0.1:8765{url}")
    return {"model": summary.id, "neurons": summary.neurons, "weight_edges": summary.weight_edges,
            "expanded_edges": summary.expanded_edges, "svd_k": svd.k, "svd_plot": str(plot),
            "curves_model": curves, "curves_accuracy": built.accuracy, "tuned_units": tuned,
            "featurevis_sheet": fv["sheet"], "decomposed_grid": decomposed["grid"], "motifs": motif_report,
            "universality": universality, "editing": editing,
            "queries": [q for _, q in DEMO_QUERIES], "viewer_pages": pages}


EARLY_TO_CURVE_NEGATIVE = (
    "w.sum < 0 AND EXISTS { (a)-[:IN_MOTIF {role: 'upstream'}]->(m:Motif {kind: 'rotation_equivariance'})"
    "<-[:IN_MOTIF {role: 'downstream'}]-(b) }")


def _edit_curves(atlas, planted: str, echo) -> dict:
    """The Curve Circuits edit in small: the negative weights from early curves into curves of
    the planted family removed (selected by Cypher), the echo it brings measured against random
    removals of as many weights; and the family's faithfulness."""
    stimulus = {"stimulus": "curve", "radius": 5.0}
    motif = next((m for m in atlas.motifs(planted) if m["kind"] == "rotation_equivariance"), None)
    if motif is None:
        echo("circuit editing skipped: no curve family was found in the planted network")
        return {}
    made = atlas.create_edit(planted, "no-opposite-inhibition", edges_where=EARLY_TO_CURVE_NEGATIVE, scale=0.0,
                             description="negative weights from early curves into curves removed")
    result = atlas.edit_effect(planted, "no-opposite-inhibition", stimulus_params=stimulus, n_control=3)
    s = result.summary
    plot = artifacts.inside(planted, "edit-no-opposite-inhibition.png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    result.figure().save(plot)
    echo(f"circuit edit on {planted}: {made['edges']} negative early-curve -> curve weights removed (Cypher "
         f"predicate); echo at preferred + 180 deg: {s['echo_mean_before']:.3f} -> {s['echo_mean']:.3f} "
         f"(3 random removals of as many weights: {s['echo_mean_control']:.3f}); stored on (:Edit); "
         f"tuning curves before and after: {plot}")
    faithful = atlas.faithfulness(planted, motif=motif["uid"], stimulus_params=stimulus)
    echo(f"faithfulness of the curve family (early curves kept, {faithful['ablated_units']} other mid units "
         f"mean-ablated): {faithful['faithfulness']:.3f}; stored on the Motif")
    echo(f"  circuitatlas edit list {planted}; circuitatlas edit effect {planted} no-opposite-inhibition --radius 5")
    return {"edges": made["edges"], **{k: s[k] for k in ("echo_mean_before", "echo_mean", "echo_mean_control")},
            "faithfulness": faithful["faithfulness"], "plot": str(plot)}


def _universality(atlas, name: str, curves: str, echo) -> dict:
    """The curves model's second seed trained, ingested and rendered, and its last conv layer
    matched with the first seed's over 500 task images; the figure saved."""
    from circuitatlas.jobs.universality import similarity_figure

    other = f"{name}-curves-seed1"
    echo("building the `curves-seed1` zoo model (the same task, another seed) ...")
    zoo.build("curves-seed1", progress=echo)
    atlas.ingest("zoo:curves-seed1", other, input_size=(3, 32, 32), expanded=False, replace=True)
    atlas.featurevis_layers(other, ["features.11"], steps=128, size=48)
    images = zoo.save_task_images("curves", artifacts.inside(name, "curves-task-images"), 500, seed=4242)
    result = atlas.compare(curves, other, "features.11", "features.11", images=images)
    layer = result.summary()["layers"][0]
    plot = artifacts.inside(name, "universality-curves.png")
    similarity_figure(atlas.store, [curves, other], result).save(plot)
    echo(f"universality {curves} ~ {other} (features.11, battery + 500 task images): CKA {layer['cka']:.2f} "
         f"(random-init networks {layer['cka_random']:.2f}); {layer['stored']} of {len(layer['pairs'])} best matches "
         f"beat the null ({layer['mutual_stored']} mutual), stored as ANALOGOUS edges\n  plot: {plot}")
    return {"model": other, "cka": layer["cka"], "cka_random": layer["cka_random"], "stored": layer["stored"],
            "plot": str(plot)}


def viewer_pages(atlas, curves: str, planted: str) -> dict[str, str]:
    """The viewer's most telling pages for the demo's models: the curve model's most orientation-
    selective unit and its circuit, its unit with the strongest mutual analogue in the second seed,
    the planted curve family's motif and the circuit above one of its curve units."""
    from circuitatlas.web import pages

    found = {"models": "/"}
    best = atlas.cypher("MATCH (n:Neuron {model: $model, layer: 'features.7'}) "
                        "WHERE n.orientation_selectivity IS NOT NULL "
                        "RETURN n.uid AS uid ORDER BY n.orientation_selectivity DESC LIMIT 1", model=curves)
    if best:
        found["the curve model's most orientation-selective unit"] = pages.neuron_url(best[0]["uid"])
        found["its circuit"] = pages.circuit_url(curves, pages.units_of([best[0]["uid"]]))
    analogue = atlas.cypher("MATCH (a:Neuron {model: $model})-[r:ANALOGOUS {mutual: true}]->(b:Neuron) "
                            "RETURN a.uid AS uid ORDER BY r.score DESC LIMIT 1", model=curves)
    if analogue:
        found["a curve-model unit and its analogue in the second seed"] = pages.neuron_url(analogue[0]["uid"])
    family = [m for m in atlas.motifs(planted) if m["kind"] == "rotation_equivariance"]
    if family:
        found["the planted curve family (rotation equivariance)"] = pages.motif_url(family[0]["uid"])
        member = next((x["uid"] for x in family[0]["members"] if x["role"] == "downstream"), None)
        if member:
            found["the circuit above one planted curve unit"] = pages.circuit_url(planted, pages.units_of([member]))
    return found
