"""The figures each page draws from its data (:mod:`.pages`), as SVG text (:mod:`.drawing`)."""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

import numpy as np

from circuitatlas.web import drawing, pages

__all__ = ["FIGURES", "circuit_figure", "inline_image"]

KERNEL_CELL = 12


def _layer(data: dict[str, Any]) -> dict[str, Any]:
    return {"rgb": {u["channel"]: drawing.rgb_kernel_svg(np.asarray(u["rgb_kernel"]))
                    for u in data["units"] if u.get("rgb_kernel") is not None}}


def _neuron(data: dict[str, Any]) -> dict[str, Any]:
    kernels = {}
    for side in ("inputs", "outputs"):
        for kind, rows in data[side].items():
            if rows:
                scale = max(float(np.abs(np.asarray(r["kernel"])).max()) for r in rows) or 1.0
                for r in rows:
                    kernels[(side, kind, r["uid"])] = drawing.kernel_svg(r["kernel"], KERNEL_CELL, scale)
    tuning = data["tuning"]
    polar = (drawing.polar_svg(tuning["angles"], tuning["responses"], preferred=tuning["orientation"])
             if tuning else None)
    return {"kernels": kernels, "polar": polar}


def circuit_figure(data: dict[str, Any], image_url: Callable[[Any], str | None] | None = None) -> str:
    """The layered diagram of a circuit page's data; ``image_url`` maps a node's feature
    visualisation URL to what the SVG should reference (default: the URL itself)."""
    nodes = {n["uid"]: {**n, "featurevis": n["featurevis_url"]} for n in data["nodes"]}
    layout = drawing.layout_circuit(nodes, [(e["source"], e["target"]) for e in data["edges"]], data["layer_order"])
    return drawing.circuit_svg(nodes, data["edges"], layout, image_url or (lambda url: url),
                               lambda uid: nodes[uid]["url"], targets=data["targets"])


def inline_image(url: Any) -> str | None:
    """A ``/files/`` URL as a ``data:`` URI of the file (for an SVG that stands alone), None when
    the file is not under the artifacts folder."""
    file = pages.url_file(url)
    if file is None:
        return None
    return "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode()


def _circuit(data: dict[str, Any]) -> dict[str, Any]:
    """The diagram, and the edges as JSON for the page's script (kernels rounded to 6 decimals)."""
    edges = [{"source": e["source"], "target": e["target"], "sum": e["sum"], "rel_in": e["rel_in"],
              "kernel": np.asarray(e["kernel"], dtype=np.float32).round(6).tolist() if e.get("kernel") is not None
              else None} for e in data["edges"]]
    blob = json.dumps({"edges": edges}, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    return {"diagram": circuit_figure(data), "edges_json": blob}


def _motif(data: dict[str, Any]) -> dict[str, Any]:
    m = data["matrix"]
    if not m:
        return {}
    def label(uid: str, degrees: float | None) -> str:
        channel = uid.rpartition(":")[2]
        return f"{channel} ({degrees:.0f}°)" if degrees is not None else channel

    rows = [label(u, d) for u, d in zip(m["rows"], m["row_orientations"])]
    cols = [label(u, d) for u, d in zip(m["cols"], m["col_orientations"])]
    return {"matrix": drawing.matrix_svg(np.asarray(m["values"]), rows, cols, row_title="downstream unit",
                                         col_title="upstream unit")}


def _svd(data: dict[str, Any]) -> dict[str, Any]:
    plots = {}
    for side in ("input", "output"):
        members = [(c["index"], m) for c in data["clusters"] if c["side"] == side for m in c["members"]
                   if m.get("coords")]
        if members:
            plots[side] = drawing.scatter_svg(np.array([m["coords"][:2] for _, m in members]),
                                              [i for i, _ in members], [m["uid"] for _, m in members],
                                              [m["url"] for _, m in members])
    return {"scatter": plots}


FIGURES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "layer": _layer, "neuron": _neuron, "circuit": _circuit, "motif": _motif, "svd": _svd}
