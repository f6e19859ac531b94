"""SVD co-clustering of |W| between two layers, written back as coordinates, cluster ids and
``(:Cluster)`` nodes, with a cluster x branch report for layers made of branches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from circuitatlas.analysis.plots import rgb_thumbnail, svd_scatter
from circuitatlas.analysis.svd import BranchReport, SvdResult, branch_contingency, svd_clusters
from circuitatlas.errors import NotFound
from circuitatlas.queries.aliases import resolve_layer
from circuitatlas.queries.models import layer_neurons
from circuitatlas.queries.weights import read_abs_sums, read_weights
from circuitatlas.queries.writeback import svd_analysis_key, write_clusters
from circuitatlas.store import Store

__all__ = ["SvdAnalysis", "run_svd"]


@dataclass
class SvdAnalysis:
    """One stored SVD analysis: the pure result and what the job adds (which weights, its key,
    the branch reports of sides made of branches)."""

    result: SvdResult
    src: str
    dst: str
    kind: str  # "expanded" or "direct": the weights used
    analysis: str  # the key its Cluster nodes and neuron properties carry
    branch_reports: dict[str, BranchReport] = field(default_factory=dict)  # side -> report

    @property
    def k(self) -> int:
        return self.result.k

    def summary(self) -> dict[str, Any]:
        """Plain data (for ``--json`` and the demo)."""
        r = self.result
        reports = {}
        for side, rep in self.branch_reports.items():
            cluster, branch, count, p = rep.strongest()
            reports[side] = {"cluster": cluster, "branch": branch, "count": count, "p_value": p,
                             "branches": rep.branches, "counts": rep.counts.tolist(), "p_values": rep.p_values.tolist()}
        return {
            "kind": self.kind, "analysis": self.analysis, "k": r.k,
            "singular_values": [float(v) for v in r.singular_values[:20]],
            "input_clusters": r.input_clusters.tolist(), "output_clusters": r.output_clusters.tolist(),
            "input_cluster_sizes": np.bincount(r.input_clusters, minlength=r.k).tolist(),
            "output_cluster_sizes": np.bincount(r.output_clusters, minlength=r.k).tolist(),
            "branch_reports": reports,
        }


def _abs_sums(store: Store, model: str, src: str, dst: str, kind: str):
    """(|W| summed over positions, the kind used): expanded weights when stored, else direct."""
    kinds = ["expanded", "direct"] if kind == "auto" else [kind]
    for candidate in kinds[:-1]:
        try:
            return read_abs_sums(store, model, src, dst, candidate), candidate
        except NotFound:
            pass
    return read_abs_sums(store, model, src, dst, kinds[-1]), kinds[-1]


def run_svd(store: Store, model: str, src: str, dst: str, k: int | None = None, kind: str = "auto",
            plot: str | None = None) -> SvdAnalysis:
    """Cluster, write back (replacing an earlier run with the same key) and optionally plot;
    ``src`` and ``dst`` may be any name of their layers."""
    src, dst = resolve_layer(store, model, src), resolve_layer(store, model, dst)
    W, kind = _abs_sums(store, model, src, dst, kind)
    result = svd_clusters(W, k)
    analysis = SvdAnalysis(result, src, dst, kind, svd_analysis_key(src, dst, kind, k))
    sides = {}
    for side, layer, labels, coords in (("input", src, result.input_clusters, result.input_coords),
                                        ("output", dst, result.output_clusters, result.output_coords)):
        neurons = layer_neurons(store, model, layer)
        sides[side] = ([n["uid"] for n in neurons], labels, coords)
        branches = [n["branch"] for n in neurons]
        if all(branches) and len(set(branches)) > 1:
            analysis.branch_reports[side] = branch_contingency(labels, branches)
    params = {**result.params, "kind": kind, "src": src, "dst": dst}
    write_clusters(store, model, analysis.analysis, "svd", src, dst, result.k, sides, params)
    if plot:
        thumbs = [_first_layer_thumbnails(store, model, layer) for layer in (src, dst)]
        svd_scatter(result, f"{model}: {src} -> {dst} ({kind})", *thumbs).save(plot)
    return analysis


def _first_layer_thumbnails(store: Store, model: str, layer: str) -> dict | None:
    """RGB pictures of a layer's filters when it reads the image directly, else None."""
    try:
        W = read_weights(store, model, "input", layer)
    except NotFound:
        return None
    return {unit: rgb_thumbnail(W[unit]) for unit in range(W.shape[0])} if W.shape[1] == 3 else None
