"""What each page of the viewer shows, as plain JSON-ready data: the page's ``/api/`` twin
returns exactly this, and the HTML page draws it. One function per page, each a few indexed
queries through :mod:`circuitatlas.queries`; files appear as URLs under ``/files/`` only when
the stored path lies inside the artifacts folder."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote, unquote, urlencode

import networkx as nx
import numpy as np

from circuitatlas import artifacts, checks, names, paths
from circuitatlas.analysis.svd import branch_contingency
from circuitatlas.errors import InvalidInput
from circuitatlas.queries import aliases, connectivity, editing, models, viewer
from circuitatlas.queries.connectivity import Truncated
from circuitatlas.queries.paths import circuit as circuit_graph
from circuitatlas.store import Store

__all__ = ["file_url", "artifact_file", "models_page", "model_page", "layer_page", "neuron_page", "circuit_page",
           "motif_page", "svd_page", "console_page", "CIRCUIT_DEFAULTS", "CONSOLE_LIMIT", "CONSOLE_TIMEOUT",
           "EQUIVARIANT_ROLES"]

CIRCUIT_DEFAULTS = {"depth": 2, "min_rel": 0.3, "kind": "auto", "limit": 300}  # as the Circuits figures
MAX_CIRCUIT_DEPTH = 4
CIRCUIT_MAX_EDGES = 5000  # edges of one circuit page at most (the default: CIRCUIT_DEFAULTS["limit"])
PARTNERS = 12  # inputs and outputs shown on a neuron page, per edge kind
CONSOLE_LIMIT, CONSOLE_MAX_LIMIT = 200, 5000  # rows
CONSOLE_TIMEOUT = 10.0  # seconds
PAGE_TIMEOUT = 10.0  # seconds for the query helpers a page calls
MODEL_FIELDS = ("id", "arch", "source", "weights", "status", "created", "completed", "input_size",
                "observation_layers", "ingest_path", "ingest_seconds")
NEURON_FIELDS = ("uid", "model", "layer", "channel", "branch", "bias", "orientation", "orientation_selectivity",
                 "featurevis_activation", "examples_activation", "cluster_in", "cluster_out")
EQUIVARIANT_ROLES = {"rotation_equivariance": ("upstream", "downstream")}


# -- files ----------------------------------------------------------------------------------------
FILES = "/files/"  # the route that serves the artifacts folder


def artifact_file(relative: str) -> Path | None:
    """The file under the artifacts folder that ``relative`` names, or None when it resolves
    outside the folder or is not a file (a graph is user data: its paths are not trusted)."""
    real = artifacts.stored_path(relative)
    return real if real is not None and real.is_file() else None


def file_url(path: Any) -> str | None:
    """``/files/<path relative to the artifacts folder>`` for a stored path inside that folder,
    else None (no file is opened here; the ``/files/`` route checks again)."""
    real = artifacts.stored_path(path) if isinstance(path, str) else None
    if real is None:
        return None
    return FILES + quote(real.relative_to(paths.artifacts_dir().resolve()).as_posix())


def url_file(url: Any) -> Path | None:
    """The file a :func:`file_url` URL names (None for any other URL, or a file not there)."""
    if not isinstance(url, str) or not url.startswith(FILES):
        return None
    return artifact_file(unquote(url[len(FILES):]))


# -- URLs of pages --------------------------------------------------------------------------------
def model_url(model: str) -> str:
    return f"/models/{quote(model, safe='')}"


def layer_url(model: str, layer: str) -> str:
    return f"{model_url(model)}/layers/{quote(layer, safe='')}"


def neuron_url(uid: str) -> str:
    model, layer, channel = names.parse_neuron_uid(uid)
    return f"{layer_url(model, layer)}/{int(channel)}"


def circuit_url(model: str, units: Sequence[str], **options: Any) -> str:
    query = {"units": ",".join(units), **{k: v for k, v in options.items() if v != CIRCUIT_DEFAULTS.get(k)}}
    return f"{model_url(model)}/circuit?{urlencode(query, safe=':,')}"


def motif_url(uid: str) -> str:
    return f"/motifs/{quote(uid, safe='/')}"


def svd_url(model: str, analysis: str) -> str:
    return f"{model_url(model)}/svd?{urlencode({'analysis': analysis})}"


def _plain(value: Any) -> Any:
    """Neo4j temporal values as ISO text, numpy values as Python numbers and lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "iso_format"):
        return value.iso_format()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- pages ----------------------------------------------------------------------------------------
def models_page(store: Store) -> dict[str, Any]:
    """Every model: status, counts, ingest path."""
    return {"models": [{**dataclasses.asdict(m), "url": model_url(m.id)} for m in store.models()]}


def model_page(store: Store, model: str) -> dict[str, Any]:
    """A model's layers in order (kind, channels, branches, contact sheet), its SVD analyses,
    motifs and detector runs."""
    meta = models.model_meta(store, model)
    branches = viewer.model_branches(store, model)
    layers = [{**layer, "branches": branches.get(layer["name"], []), "url": layer_url(model, layer["name"]),
               "sheet_url": file_url(layer["featurevis_sheet"])} for layer in models.model_layers(store, model)]
    analyses = [{**a, "url": svd_url(model, a["analysis"])} for a in viewer.model_analyses(store, model)]
    motifs = [{**m, "url": motif_url(m["uid"])} for m in models.list_motifs(store, model)]
    runs = [{k: r[k] for k in ("kind", "layers", "found", "at")} | {"reason": _reason(r["diagnostics"])}
            for r in models.motif_runs(store, model)]
    return _plain({"model": {k: meta.get(k) for k in MODEL_FIELDS}, "layers": layers, "analyses": analyses,
                   "motifs": motifs, "motif_runs": runs, "edits": edit_rows(store, model)})


def edit_rows(store: Store, model: str) -> list[dict[str, Any]]:
    """The model's edits, each with its measured effect in words (``circuitatlas edit effect``)."""
    rows = editing.list_edits(store, model)
    return [{**row, "effect": editing.summary_lines(row["effect_summary"]).split("\n") if row["effect_summary"] else [],
             "figure_url": file_url((row["effect_summary"] or {}).get("figure"))} for row in rows]


def _reason(diagnostics: dict) -> str | None:
    """The first ``reason`` a detector run's diagnostics give for finding nothing."""
    for layer in (diagnostics or {}).values() if isinstance(diagnostics, dict) else ():
        if isinstance(layer, dict) and layer.get("reason"):
            return str(layer["reason"])
    return diagnostics.get("reason") if isinstance(diagnostics, dict) else None


def layer_page(store: Store, model: str, layer: str) -> dict[str, Any]:
    """Every unit of a layer as a tile: its feature visualisation (or its RGB kernel for a layer
    that reads the image), branch, clusters, motifs, orientation and selectivity."""
    layers = models.model_layers(store, model)  # NotFound for an unknown model
    at = next((i for i, e in enumerate(layers) if layer == e["name"] or layer in e["aliases"]), None)
    if at is None:
        aliases.resolve_layer(store, model, layer)  # NotFound with the closest names
    layer = layers[at]["name"]
    kernels = viewer.image_kernels(store, model, layer)
    units = [{**unit, "url": neuron_url(unit["uid"]), "featurevis_url": file_url(unit["featurevis"]),
              "rgb_kernel": kernels.get(unit["channel"]), "cluster_keys": [_cluster_key(c) for c in unit["clusters"]]}
             for unit in viewer.layer_units(store, model, layer)]
    clusters = {_cluster_key(c): f"{c['index']} ({c['side']}, {c['analysis']})" for u in units for c in u["clusters"]}
    filters = {"branches": sorted({u["branch"] for u in units if u["branch"] is not None}),
               "clusters": [{"key": key, "label": clusters[key]} for key in sorted(clusters)],
               "motifs": sorted({m["kind"] for u in units for m in u["motifs"]})}
    info = {k: layers[at][k] for k in ("name", "kind", "channels", "shape", "order")}
    around = {"previous": layers[at - 1]["name"] if at > 0 else None,
              "next": layers[at + 1]["name"] if at + 1 < len(layers) else None}
    return _plain({"model": model, "layer": {**info, "featurevis_sheet": file_url(layers[at]["featurevis_sheet"]),
                                             **around}, "units": units, "filters": filters})


def _cluster_key(cluster: dict[str, Any]) -> str:
    """One cluster of one analysis as the layer page's filter names it."""
    return f"{cluster['analysis']}|{cluster['side']}|{cluster['index']}"


def neuron_page(store: Store, model: str, layer: str, channel: int, k: int = PARTNERS) -> dict[str, Any]:
    """One neuron: feature visualisation (and diverse renders), dataset examples, tuning curve,
    its ``k`` strongest inputs and outputs by edge kind with kernels, motifs, clusters and its
    analogues in other models (``circuitatlas compare``)."""
    uid = names.neuron_uid(model, layer, channel)
    props = models.neuron(store, uid)
    info = models.layer_info(store, model, layer)
    partners: dict[str, dict[str, list]] = {"inputs": {}, "outputs": {}}
    for side in partners:
        for kind in names.REL_TYPES:
            rows = connectivity.neighbours(store, uid, side, k=k, kind=kind, detail=True, timeout=PAGE_TIMEOUT)
            partners[side][kind] = [_partner(row, side) for row in rows]
    member = viewer.memberships(store, uid)
    tuning = None
    if props.get("tuning") and props.get("tuning_angles"):
        tuning = {"angles": props["tuning_angles"], "responses": props["tuning"],
                  "orientation": props.get("orientation"), "selectivity": props.get("orientation_selectivity")}
    return _plain({
        "neuron": {k_: props.get(k_) for k_ in NEURON_FIELDS}, "kind": info["kind"],
        "featurevis_url": file_url(props.get("featurevis")),
        "diverse_urls": [u for u in map(file_url, props.get("featurevis_diverse") or []) if u],
        "example_urls": [u for u in map(file_url, props.get("examples") or []) if u],
        "decomposed": {up: file_url(p) for up, p in _json_map(props.get("decomposed")).items()},
        "tuning": tuning, "inputs": partners["inputs"], "outputs": partners["outputs"],
        "motifs": [{**m, "url": motif_url(m["uid"])} for m in member["motifs"]],
        "clusters": [{**c, "url": svd_url(model, c["analysis"])} for c in member["clusters"]],
        "analogues": [{**a, "url": neuron_url(a["uid"]), "featurevis_url": file_url(a.get("featurevis"))}
                      for a in member.get("analogues", [])],
        "edits": _neuron_edits(store, uid),
        "circuit_url": circuit_url(model, units_of([uid])),
        "layer_url": layer_url(model, layer), "model_url": model_url(model)})


def _neuron_edits(store: Store, uid: str) -> list[dict[str, Any]]:
    """The stored edits that touch neuron ``uid``, each in a few words."""
    words = {"ABLATES": lambda r: f"ablated ({r['mode']})", "REPLACES": lambda r: "replaced by a hand-set unit",
             "EDITS_EDGE": lambda r: (f"input from {r['src']} scaled by {r['factor']:g}" if r["factor"] is not None
                                      else f"input from {r['src']} given a new kernel")}
    return [{"name": r["name"], "what": words[r["how"]](r)} for r in editing.neuron_edits(store, uid)]


def _json_map(text: Any) -> dict[str, Any]:
    """A stored JSON object as a dict (empty when absent or not an object)."""
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _partner(row: dict[str, Any], side: str) -> dict[str, Any]:
    """A neighbour row with its signed share of the strongest and the kernel as (kh, kw) rows."""
    sign = 1.0 if (row["sum"] or 0) >= 0 else -1.0
    kernel = np.asarray(row["kernel"] or [0.0], dtype=np.float64).reshape(row["kh"] or 1, row["kw"] or 1)
    return {"uid": row["uid"], "layer": row["layer"], "channel": row["channel"], "sum": row["sum"],
            "rel": sign * (row["rel_in"] if side == "inputs" else row["rel_out"]),
            "kernel": kernel, "url": neuron_url(row["uid"]), "featurevis_url": file_url(row["featurevis"])}


def units_of(uids: Sequence[str]) -> list[str]:
    """Neuron uids as ``<layer>:<channel>`` (the form a circuit URL takes)."""
    return [names.unit(*names.parse_neuron_uid(uid)[1:]) for uid in uids]


def parse_units(model: str, units: str) -> list[str]:
    """``"layer:channel,layer:channel"`` as neuron uids of ``model``."""
    found = [names.neuron_uid(model, *names.parse_unit(u.strip())) for u in units.split(",") if u.strip()]
    if not found:
        raise InvalidInput("name at least one unit as units=<layer>:<channel>")
    return found


def circuit_page(store: Store, model: str, units: str, depth: int = CIRCUIT_DEFAULTS["depth"],
                 min_rel: float = CIRCUIT_DEFAULTS["min_rel"], kind: str = CIRCUIT_DEFAULTS["kind"],
                 limit: int = CIRCUIT_DEFAULTS["limit"], kernels: bool = True) -> dict[str, Any]:
    """The upstream circuit of one or more units (``queries.paths.circuit`` of each, joined, at
    most ``limit`` edges per unit asked for, strongest first at each step; ``truncated`` says when
    that cut it): nodes with their layer, channel and feature visualisation, edges with sum,
    share of the target's strongest input and kernel; ``layer_order`` for drawing."""
    depth = checks.whole("depth", depth, 1, MAX_CIRCUIT_DEPTH)
    limit = checks.whole("limit", limit, 1, CIRCUIT_MAX_EDGES)
    order = {layer["name"]: layer["order"] for layer in models.model_layers(store, model)}  # NotFound: no model
    targets = parse_units(model, units)
    graph, truncated = nx.DiGraph(), False
    for uid in targets:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Truncated)
            graph = nx.compose(graph, circuit_graph(store, uid, depth=depth, min_rel=min_rel, kind=kind,
                                                    kernels=kernels, limit=limit, timeout=PAGE_TIMEOUT))
        truncated = truncated or any(issubclass(w.category, Truncated) for w in caught)
    nodes = [{"uid": uid, "layer": p.get("layer"), "channel": p.get("channel"), "depth": p.get("depth"),
              "branch": p.get("branch"), "featurevis_url": file_url(p.get("featurevis")), "url": neuron_url(uid)}
             for uid, p in graph.nodes(data=True)]
    edges = [{"source": a, "target": b, "sum": e["sum"], "rel_in": e["rel_in"], "kh": e["kh"], "kw": e["kw"],
              "kernel": e.get("kernel")} for a, b, e in graph.edges(data=True)]
    return _plain({"model": model, "targets": targets, "depth": depth, "min_rel": min_rel, "limit": limit,
                   "truncated": truncated, "kind": graph.graph.get("kind", kind), "nodes": nodes, "edges": edges,
                   "layer_order": {name: order.get(name, 0) for name in {n["layer"] for n in nodes}},
                   "svg_url": circuit_url(model, units_of(targets), depth=depth, min_rel=min_rel, kind=kind,
                                          limit=limit).replace("/circuit?", "/circuit.svg?"),
                   "model_url": model_url(model)})


def motif_page(store: Store, uid: str) -> dict[str, Any]:
    """One motif: its members by role, and for an equivariant family the family-to-family weight
    matrix (rows: downstream units, columns: upstream units, each ordered by orientation)."""
    found = viewer.motif(store, uid)
    members = [{**m, "url": neuron_url(m["uid"]), "featurevis_url": file_url(m["featurevis"])}
               for m in found.pop("members")]
    roles: dict[str, list] = {}
    for m in members:
        roles.setdefault(m["role"], []).append(m)
    matrix = None
    if found.get("kind") in EQUIVARIANT_ROLES:
        up, down = (sorted(roles.get(r, []), key=lambda m: (m["orientation"] is None, m["orientation"] or 0))
                    for r in EQUIVARIANT_ROLES[found["kind"]])
        if up and down:
            kind = connectivity.resolve_kind(store, [m["uid"] for m in down], "auto")
            rows, cols = [m["uid"] for m in down], [m["uid"] for m in up]
            table = connectivity.adjacency(store, cols, rows, kind=kind, timeout=PAGE_TIMEOUT)
            values = table.matrix("sum", targets=rows, sources=cols)[0]
            matrix = {"kind": kind, "rows": rows, "cols": cols,
                      "row_orientations": [m["orientation"] for m in down],
                      "col_orientations": [m["orientation"] for m in up], "values": values}
    return _plain({"motif": found, "roles": roles, "matrix": matrix, "model_url": model_url(found["model"])})


def svd_page(store: Store, model: str, analysis: str) -> dict[str, Any]:
    """One SVD analysis: its clusters with members and coordinates, and the cluster x branch table
    of each side."""
    models.model_meta(store, model)
    clusters = viewer.svd_analysis(store, model, analysis)
    tables = {}
    for side in sorted({c["side"] for c in clusters}):
        members = [(c["index"], m) for c in clusters if c["side"] == side for m in c["members"]]
        report = branch_contingency(np.array([i for i, _ in members]), [m["branch"] or "-" for _, m in members])
        tables[side] = {"branches": report.branches, "rows": [
            {"cluster": c, "counts": report.counts[i], "p_values": report.p_values[i]}
            for i, c in enumerate(report.clusters)]}
    for c in clusters:
        for m in c["members"]:
            m["url"], m["featurevis_url"] = neuron_url(m["uid"]), file_url(m["featurevis"])
    first = clusters[0]
    return _plain({"model": model, "analysis": analysis, "src": first["src"], "dst": first["dst"], "k": first["k"],
                   "params": first["params"], "clusters": clusters, "tables": tables, "model_url": model_url(model)})


def console_page(store: Store, query: str, limit: int = CONSOLE_LIMIT,
                 timeout: float = CONSOLE_TIMEOUT) -> dict[str, Any]:
    """A user's read-only Cypher: refused if it would write, at most ``limit`` rows, ended by the
    server after ``timeout`` seconds."""
    limit = checks.whole("limit", limit, 1, CONSOLE_MAX_LIMIT)
    if not query.strip():
        return {"query": query, "columns": [], "rows": [], "truncated": False, "limit": limit, "timeout": timeout}
    rows = store.query_read_only(query, limit=limit + 1, timeout=timeout)
    columns = list(rows[0]) if rows else []
    return _plain({"query": query, "columns": columns, "rows": rows[:limit], "truncated": len(rows) > limit,
                   "limit": limit, "timeout": timeout})

