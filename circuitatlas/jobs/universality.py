"""Universality between two stored models: match the units of layer pairs over a shared probe
set (:mod:`circuitatlas.analysis.universality`), against random-init networks of B's architecture,
align their equivariant families, and store what beats the null as ANALOGOUS and SIMILAR edges."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from torch import nn

from circuitatlas import artifacts, checks, names
from circuitatlas.analysis.examples import load_images
from circuitatlas.analysis.plots import cka_heatmap, matched_pairs, stacked
from circuitatlas.analysis.probes import field_size
from circuitatlas.analysis.tuning import model_device, receptive_field
from circuitatlas.analysis.universality import (
    MAX_GRID,
    FamilyMatch,
    LayerMatch,
    ProbeSet,
    align_families,
    battery_probes,
    image_probes,
    match_layers,
    random_init,
)
from circuitatlas.errors import InvalidInput
from circuitatlas.jobs.network import network
from circuitatlas.queries.aliases import resolve_layer
from circuitatlas.queries.models import (
    featurevis_paths,
    input_size,
    layer_info,
    list_motifs,
    model_layers,
    model_meta,
)
from circuitatlas.queries.universality import layer_similarity, replace_comparison
from circuitatlas.store import Store

__all__ = ["CompareSettings", "Comparison", "compare", "every_pair", "parse_layer_pairs", "similarity_figure"]

METHOD = "probe-correlation"
FAMILY_KINDS = ("rotation_equivariance",)  # motifs whose members carry an orientation
MAX_NULL_MODELS = 64


def null_count(settings: "CompareSettings", smallest_layer: int) -> int:
    """How many random-init networks: as set, or enough that ``smallest_layer`` units pooled over
    them give ``2 / alpha`` null scores (a p-value can then reach ``alpha / 2``), at least 2."""
    if settings.null_models is not None:
        return settings.null_models
    return int(min(MAX_NULL_MODELS, max(2, math.ceil((2.0 / settings.alpha) / max(1, smallest_layer)))))


@dataclass(frozen=True)
class CompareSettings:
    """How two models are compared: ``n_angles`` orientations per probe, ``null_models``
    random-init networks of B's architecture (None: enough that the smaller layer's pooled null
    can give a p-value of ``alpha / 2``, at least 2), matches stored at p < ``alpha``, at most
    ``image_limit`` images of the folder, ``featurevis`` adds both layers' stored renders as probes
    (off by default: a render drives its own model's unit far harder than any image, so the few
    renders dominate the correlations; measured on two zoo seeds, CKA fell from 0.87 to 0.51),
    ``cka_samples`` samples and ``n_perm`` permutations for CKA's null, ``seed``."""

    n_angles: int = 16
    null_models: int | None = None
    alpha: float = 0.01
    image_limit: int | None = 2000
    featurevis: bool = False
    max_grid: int = MAX_GRID
    cka_samples: int = 2000
    n_perm: int = 200
    batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        checks.whole("n_angles", self.n_angles, 2)
        if self.null_models is not None:
            checks.whole("null_models", self.null_models, 1, MAX_NULL_MODELS)
        checks.real("alpha", self.alpha, 0.0, 1.0, above=True)
        if self.image_limit is not None:
            checks.whole("image_limit", self.image_limit, 1)
        checks.whole("max_grid", self.max_grid, 1)
        checks.whole("cka_samples", self.cka_samples, 10)
        checks.whole("n_perm", self.n_perm, 0)
        checks.whole("batch", self.batch, 1)


@dataclass
class Comparison:
    """The result of :func:`compare`: per layer pair its :class:`LayerMatch`, the channels of
    both layers, the family alignments and what was stored."""

    model_a: str
    model_b: str
    settings: CompareSettings
    probes: dict[str, int]
    matches: list[LayerMatch]
    analyses: list[str]
    families: list[list[dict[str, Any]]] = field(default_factory=list)
    null_models: int = 0

    def pairs(self, index: int = 0) -> list[dict[str, Any]]:
        """Every best match of layer pair ``index`` with both units' uids, ``stored`` when it
        beat the null."""
        m = self.matches[index]
        rows = []
        for row in m.pairs():
            rows.append({"unit_a": names.neuron_uid(self.model_a, m.layer_a, row["a"]),
                         "unit_b": names.neuron_uid(self.model_b, m.layer_b, row["b"]),
                         **{k: row[k] for k in ("score", "p_value", "mutual", "best_for")},
                         "stored": bool(row["p_value"] < self.settings.alpha)})
        return rows

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable: per layer pair CKA with its nulls, how many units matched, every
        best match (stored or not) and the family alignments."""
        layers = []
        for i, m in enumerate(self.matches):
            pairs = self.pairs(i)
            layers.append({
                "analysis": self.analyses[i], "layer_a": m.layer_a, "layer_b": m.layer_b, "cka": _num(m.cka),
                "cka_p": _num(m.cka_p), "cka_random": _num(float(np.mean(m.cka_random))) if m.cka_random else None,
                "samples": m.samples, "grid": m.grid, "units_a": len(m.live_a), "units_b": len(m.live_b),
                "silent_a": int((~m.live_a).sum()), "silent_b": int((~m.live_b).sum()),
                "null_q99": _num(m.null_quantile(0.99)), "null_samples": int(m.null_ab.size + m.null_ba.size),
                "stored": sum(p["stored"] for p in pairs),
                "mutual_stored": sum(p["stored"] and p["mutual"] for p in pairs),
                "pairs": pairs, "families": self.families[i] if i < len(self.families) else []})
        return {"model_a": self.model_a, "model_b": self.model_b, "method": METHOD, "probes": self.probes,
                "alpha": self.settings.alpha, "null_models": self.null_models, "layers": layers}


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def every_pair(store: Store, model_a: str, model_b: str) -> list[tuple[str, str]]:
    """Every observation layer of ``model_a`` with every one of ``model_b`` (the CKA heatmap)."""
    layers_b = model_layers(store, model_b, True)
    return [(a["name"], b["name"]) for a in model_layers(store, model_a, True) for b in layers_b]


def parse_layer_pairs(text: str) -> list[tuple[str, str]]:
    """``"LA:LB[,LA2:LB2]"`` -> [(LA, LB), ...]."""
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        a, sep, b = part.partition(":")
        if not sep or not a or not b:
            raise InvalidInput(f"layer pair {part!r} is not LAYER_A:LAYER_B")
        pairs.append((a, b))
    if not pairs:
        raise InvalidInput("name at least one layer pair LAYER_A:LAYER_B")
    return pairs


def _featurevis_probes(store: Store, model: str, layer: str, size: int) -> ProbeSet:
    images, labels = [], []
    for channel, path in sorted(featurevis_paths(store, model, layer).items()):
        if artifacts.image_problem(path) is not None:
            continue
        with Image.open(artifacts.stored_path(path)) as img:
            images.append(np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), np.uint8))
        labels.append(f"featurevis:{names.neuron_uid(model, layer, channel)}")
    return image_probes(np.stack(images), labels) if images else ProbeSet(np.zeros((0, size, size, 3), np.uint8),
                                                                           np.zeros(0, bool), [])


def _families(motifs: list[dict[str, Any]], layer: str) -> dict[tuple[str, float], dict[str, dict[int, float]]]:
    """(probe, period) -> uid -> {channel: orientation} of each equivariant family of ``motifs``
    (a model's, as stored) with members in ``layer``: families measured under one probe share a
    frame of orientations."""
    out: dict[tuple[str, float], dict[str, dict[int, float]]] = {}
    for motif in motifs:
        if motif["kind"] not in FAMILY_KINDS:
            continue
        params = json.loads(motif["params"]) if isinstance(motif.get("params"), str) else (motif.get("params") or {})
        frame = (str(params.get("probe")), float(params.get("period", 360.0)))
        members = {}
        for member in motif["members"]:
            if member.get("uid") and member.get("orientation") is not None:
                _, mlayer, channel = names.parse_neuron_uid(member["uid"])
                if mlayer == layer:
                    members[channel] = float(member["orientation"])
        if len(members) >= 3:
            out.setdefault(frame, {})[motif["uid"]] = members
    return out


def _family_rows(found: list[FamilyMatch], match: LayerMatch, model_a: str, model_b: str,
                 null_level: float) -> list[dict[str, Any]]:
    rows = []
    for f in found:
        rows.append({"family_a": f.family_a, "family_b": f.family_b, "score": _num(f.score),
                     "orientation_corr": _num(f.orientation_corr), "offset_deg": _num(f.offset_deg),
                     "beats_null": bool(f.score > null_level),
                     "pairs": [{"unit_a": names.neuron_uid(model_a, match.layer_a, i),
                                "unit_b": names.neuron_uid(model_b, match.layer_b, j), "score": _num(s),
                                "orientation_a": oa, "orientation_b": ob} for i, j, s, oa, ob in f.pairs]})
    return rows


def compare(store: Store, model_a: str, model_b: str, layers_a: Sequence[str], layers_b: Sequence[str],
            images: str | Path | None = None, settings: CompareSettings = CompareSettings(),
            modules: tuple[nn.Module | None, nn.Module | None] = (None, None),
            progress: Callable[[int], None] | None = None) -> Comparison:
    """Match the units of each ``layers_a[i]`` of ``model_a`` with ``layers_b[i]`` of ``model_b``
    and store the matches that beat the random-init null (re-running a pair replaces it)."""
    if model_a == model_b:
        raise InvalidInput("compare two different models (a model matches itself trivially)")
    layers_a, layers_b = list(layers_a), list(layers_b)
    if not layers_a or len(layers_a) != len(layers_b):
        raise InvalidInput(f"name as many layers of {model_a} as of {model_b}, at least one "
                           f"(got {len(layers_a)} and {len(layers_b)})")
    meta_a, meta_b = model_meta(store, model_a), model_meta(store, model_b)
    pairs = [(resolve_layer(store, model_a, a), resolve_layer(store, model_b, b)) for a, b in zip(layers_a, layers_b)]
    if len(set(pairs)) != len(pairs):
        raise InvalidInput("a layer pair is named twice")
    if images is not None and not Path(images).is_dir():
        raise InvalidInput(f"--images {images} is not a folder")
    layers = list(dict.fromkeys([(model_a, la) for la, _ in pairs] + [(model_b, lb) for _, lb in pairs]))
    infos = {key: layer_info(store, *key) for key in layers}
    for (model, layer), info in infos.items():
        if len(info["shape"] or []) != 3:
            raise InvalidInput(f"{model}/{layer} has no spatial map (shape {info['shape']}): compare "
                               "convolutional layers")
    smallest = min(info["channels"] for info in infos.values())
    n_null = null_count(settings, smallest)
    if 1.0 / (1.0 + n_null * smallest) >= settings.alpha:
        raise InvalidInput(f"with {n_null} null networks and {smallest} units the smallest p-value is "
                           f"1/{1 + n_null * smallest}, not below alpha {settings.alpha}: nothing could be stored "
                           f"(raise --null-models or alpha)")
    net_a, net_b = network(store, model_a, modules[0]), network(store, model_b, modules[1])
    size_a, size_b = input_size(meta_a), input_size(meta_b)
    canvas = max(size_a, size_b)
    nets = {model_a: (net_a, size_a), model_b: (net_b, size_b)}
    fields = {field_size(receptive_field(nets[model][0], layer, nets[model][1], model_device(None, nets[model][0])))
              * canvas / nets[model][1] for model, layer in layers}
    probes = battery_probes(canvas, fields, settings.n_angles)
    if images is not None:
        pictures, paths = load_images(images, canvas, settings.image_limit, as_bytes=True)
        probes = probes + image_probes(pictures, [f"image:{p}" for p in paths])
    if settings.featurevis:
        for model, layer in layers:
            probes = probes + _featurevis_probes(store, model, layer, canvas)
    nulls = [random_init(net_b, settings.seed + 1 + k) for k in range(n_null)]
    matches = match_layers(net_a, net_b, pairs, probes, size_a=size_a, size_b=size_b, null_nets=nulls,
                           batch=settings.batch, max_grid=settings.max_grid, cka_samples=settings.cka_samples,
                           n_perm=settings.n_perm, seed=settings.seed, progress=progress)
    result = Comparison(model_a, model_b, settings, probes.counts(), matches, [], null_models=len(nulls))
    motifs = {model_a: list_motifs(store, model_a), model_b: list_motifs(store, model_b)}
    for i, m in enumerate(matches):
        frames_a, frames_b = _families(motifs[model_a], m.layer_a), _families(motifs[model_b], m.layer_b)
        found = [f for frame in frames_a.keys() & frames_b.keys()
                 for f in align_families(m, frames_a[frame], frames_b[frame], period=frame[1])]
        result.families.append(_family_rows(found, m, model_a, model_b, m.null_quantile(1 - settings.alpha)))
        stored = [p for p in result.pairs(i) if p["stored"]]
        similar = {"cka": _num(m.cka), "cka_p": _num(m.cka_p),
                   "cka_random": _num(float(np.mean(m.cka_random))) if m.cka_random else None,
                   "matched": len(stored), "method": METHOD, "samples": m.samples,
                   "params": json.dumps({"probes": result.probes, "alpha": settings.alpha,
                                         "null_models": len(nulls), "n_angles": settings.n_angles,
                                         "grid": m.grid, "seed": settings.seed})}
        rows = [{"a": p["unit_a"], "b": p["unit_b"],
                 "props": {"score": p["score"], "p_value": p["p_value"], "mutual": p["mutual"],
                           "best_for": p["best_for"], "method": METHOD}} for p in stored]
        families = [{"a": f["family_a"], "b": f["family_b"],
                     "props": {"score": f["score"], "orientation_corr": f["orientation_corr"],
                               "offset_deg": f["offset_deg"], "method": METHOD,
                               "pairs": json.dumps(f["pairs"])}}
                    for f in result.families[i] if f["beats_null"]]
        result.analyses.append(replace_comparison(store, model_a, m.layer_a, model_b, m.layer_b, similar, rows,
                                                  families))
    return result


class _Renders:
    """Each unit's usable feature-visualisation path, its layer's paths read once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.layers: dict[tuple[str, str], dict[int, str]] = {}

    def path(self, uid: str) -> str | None:
        model, layer, channel = names.parse_neuron_uid(uid)
        if (model, layer) not in self.layers:
            self.layers[(model, layer)] = featurevis_paths(self.store, model, layer)
        path = self.layers[(model, layer)].get(channel)
        return path if path is not None and artifacts.image_problem(path) is None else None

    def image(self, uid: str) -> Image.Image | None:
        path = self.path(uid)
        if path is None:
            return None
        with Image.open(artifacts.stored_path(path)) as img:
            return img.convert("RGB")


def similarity_figure(store: Store, models: Sequence[str], comparison: Comparison | None = None,
                      max_pairs: int = 16) -> Image.Image:
    """What corresponds between two ``models``: the layer x layer CKA heatmap of every stored
    comparison between them, in network order, with the random-init baseline, and for
    ``comparison`` its strongest stored unit pairs (those with feature visualisations first) with
    their renders side by side (grey where a unit has none)."""
    model_a, model_b = models
    rows = [r for r in layer_similarity(store, models) if (r["model_a"], r["model_b"]) == (model_a, model_b)]
    if not rows:
        raise InvalidInput(f"no stored comparison of {model_a} with {model_b}: run compare first")
    order_a = [l_["name"] for l_ in model_layers(store, model_a)]
    order_b = [l_["name"] for l_ in model_layers(store, model_b)]
    names_a = sorted({r["layer_a"] for r in rows}, key=order_a.index)
    names_b = sorted({r["layer_b"] for r in rows}, key=order_b.index)
    cka, baseline = np.full((len(names_a), len(names_b)), np.nan), np.full((len(names_a), len(names_b)), np.nan)
    for r in rows:
        i, j = names_a.index(r["layer_a"]), names_b.index(r["layer_b"])
        cka[i, j] = np.nan if r["cka"] is None else r["cka"]
        baseline[i, j] = np.nan if r["cka_random"] is None else r["cka_random"]
    parts = [cka_heatmap(names_a, names_b, cka, baseline, f"linear CKA, rows {model_a}, columns {model_b} "
                                                          "(random-init baseline in brackets)")]
    if comparison is not None:
        renders = _Renders(store)
        stored = [p for i in range(len(comparison.matches)) for p in comparison.pairs(i) if p["stored"]]
        stored.sort(key=lambda p: (renders.path(p["unit_a"]) is None or renders.path(p["unit_b"]) is None,
                                   -p["score"]))
        pairs = [(renders.image(p["unit_a"]), renders.image(p["unit_b"]),
                  f"{p['unit_a'].split('/', 1)[1]} ~ {p['unit_b'].split('/', 1)[1]}\n"
                  f"r={p['score']:.2f}{' mutual' if p['mutual'] else ''}") for p in stored[:max_pairs]]
        if pairs:
            parts.append(matched_pairs(pairs, f"strongest matches, {model_a} left, {model_b} right "
                                              "(feature visualisations; grey: none rendered)", cell=80))
    return stacked(parts)
