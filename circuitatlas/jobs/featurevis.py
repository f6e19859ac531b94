"""Feature visualisation of whole layers: one image per unit, rendered in batches across
layers, saved content-addressed (model source, weights fingerprint, plan, unit, settings) so that
a re-ingest of the same weights links the images again instead of rendering them, each batch
stored as soon as it is done, and a contact sheet per layer."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from circuitatlas import artifacts, checks
from circuitatlas.analysis.featurevis import RenderSettings, render_units
from circuitatlas.analysis.featurevis.diverse import render_diverse
from circuitatlas.analysis.featurevis.quality import best_stimuli, stimulus_bank
from circuitatlas.errors import InvalidInput, RenderError
from circuitatlas.jobs.network import network
from circuitatlas.queries.aliases import resolve_layers
from circuitatlas.queries.models import featurevis_keys, featurevis_paths, model_layers, model_meta
from circuitatlas.queries.writeback import set_layer_sheet, set_neuron_properties
from circuitatlas.store import Store

__all__ = ["featurevis"]

Unit = tuple[str, int]


class _Keys:
    """The content key of each unit's image: what was rendered, from which weights, and how."""

    def __init__(self, meta: dict[str, Any], settings: RenderSettings) -> None:
        self.identity = {k: meta.get(k) for k in ("source", "arch", "weights", "plan", "weights_sha256")}
        self.settings = settings.identity()

    def __call__(self, layer: str, channel: int, *variant: Any) -> str:
        return artifacts.content_key([self.identity, layer, channel, self.settings, *variant])


def _checked(store: Store, model: str, layers: Iterable[str],
             channels: Iterable[int] | None) -> tuple[list[str], dict[str, list[int]]]:
    """Layers (any of their names) in network order and the channels wanted of each; a bad name
    or channel is refused before anything renders."""
    known = {row["name"]: row for row in model_layers(store, model)}
    layers = list(dict.fromkeys(resolve_layers(store, model, layers)))
    layers.sort(key=lambda layer: known[layer]["order"])
    chosen = None if channels is None else [int(c) for c in channels]  # read once: it may be a generator
    wanted = {layer: list(range(known[layer]["channels"])) if chosen is None else list(chosen) for layer in layers}
    for layer, listed in wanted.items():
        bad = [c for c in listed if not 0 <= c < known[layer]["channels"]]
        if bad:
            raise InvalidInput(f"channel {bad[0]} is not in {layer} ({known[layer]['channels']} channels)")
    return layers, wanted


def _props(key: str, png: Any, activation: float) -> dict[str, Any]:
    return {"featurevis": str(png), "featurevis_key": key, "featurevis_activation": activation}


def _link_earlier(store: Store, model: str, layer: str, listed: list[int], key: _Keys) -> tuple[list[int], int]:
    """Link units whose image exists from an earlier render (another ingest of the same weights),
    and units whose stored path is not that image's (stale or foreign: never read); returns the
    channels still to render and how many were linked."""
    linked_now, stored = featurevis_keys(store, model, layer), featurevis_paths(store, model, layer)
    todo, relink = [], {}
    for c in listed:
        k = key(layer, c)
        found = artifacts.load_render(k)
        if found is None:
            todo.append(c)
        elif linked_now.get(c) != k or stored.get(c) != str(found[0]):
            relink[c] = _props(k, found[0], found[1]["activation"])
    set_neuron_properties(store, model, layer, relink)
    return todo, len(relink)


def _store_batch(store: Store, model: str, key: _Keys, settings: RenderSettings) -> Callable:
    """``on_chunk`` for render_units: each batch's images saved and linked as soon as it is done."""

    def save(group: list[Unit], part: Any) -> None:
        props: dict[str, dict[int, dict]] = {}
        for i, (layer, c) in enumerate(group):
            k, activation = key(layer, c), float(part.activations[i])
            png = artifacts.save_render(k, part.images[i].permute(1, 2, 0).numpy(),
                                        {"activation": activation, "layer": layer, "channel": c,
                                         "settings": settings.identity()})
            props.setdefault(layer, {})[c] = _props(k, png, activation)
        for layer, by_channel in props.items():
            set_neuron_properties(store, model, layer, by_channel)

    return save


def featurevis(store: Store, model: str, layers: Iterable[str], channels: Iterable[int] | None = None,
               settings: RenderSettings = RenderSettings(), device: str | None = None, chunk: int | None = None,
               module: nn.Module | None = None, progress: Callable[[int], None] | None = None,
               diversity: int = 0) -> list[dict]:
    """Render the units of ``layers`` that have no image for these settings yet; returns one
    report per layer in network order (``layer``, ``rendered``, ``skipped`` of which ``linked``,
    ``sheet``, ``channels``, ``left_out``: channel -> why its stored image is not on the sheet).
    ``progress(n)`` counts units done. With ``diversity`` N > 1, each unit also gets N images
    that differ (:func:`~circuitatlas.analysis.featurevis.diverse.render_diverse`, diversity
    measured in the observation layer below), stored as ``featurevis_diverse`` (PNG paths) and
    ``featurevis_diverse_activation``; the report adds ``diverse`` (units given them)."""
    diversity = checks.whole("diversity", diversity, 0)
    chunk = None if chunk is None else checks.whole("chunk", chunk, 1)
    layers, wanted = _checked(store, model, layers, channels)
    key = _Keys(model_meta(store, model), settings)
    todo, linked = {}, {}
    for layer in layers:
        todo[layer], linked[layer] = _link_earlier(store, model, layer, wanted[layer], key)
    units = [(layer, c) for layer in layers for c in todo[layer]]
    if units:
        net = network(store, model, module)
        try:
            render_units(net, units, chunk=chunk, progress=progress, on_chunk=_store_batch(store, model, key, settings),
                         device=device, **settings.render_kwargs())
        except torch.OutOfMemoryError:
            raise RenderError(f"out of device memory rendering one channel at a time at {settings.size} px: "
                              "try a smaller --size or --device cpu") from None
    elif progress is not None:
        progress(0)
    diverse = _diverse(store, model, layers, wanted, key, settings, diversity, module) if diversity > 1 else {}
    reports = []
    for layer in layers:
        images, left_out = _usable_images(featurevis_paths(store, model, layer))
        sheet = artifacts.save_contact_sheet(images, artifacts.contact_sheet_path(model, layer))
        set_layer_sheet(store, model, layer, str(sheet))
        reports.append({"layer": layer, "rendered": len(todo[layer]), "skipped": len(wanted[layer]) - len(todo[layer]),
                        "linked": linked[layer], "sheet": str(sheet), "channels": wanted[layer], "left_out": left_out,
                        "diverse": diverse.get(layer, 0)})
    return reports


def _diverse(store: Store, model: str, layers: list[str], wanted: dict[str, list[int]], key: _Keys,
             settings: RenderSettings, n: int, module: nn.Module | None) -> dict[str, int]:
    """``n`` diverse images for each wanted unit (earlier ones with the same key reused), linked
    on its neuron; returns the number of units per layer."""
    observed = [row["name"] for row in model_layers(store, model) if row["observed"] and row["kind"] != "input"]
    options = {k: v for k, v in settings.render_kwargs().items() if k != "start"}
    net = None
    bank = None
    done = {}
    for layer in layers:
        earlier = observed[:observed.index(layer)] if layer in observed else []
        below = earlier[-1] if earlier else layer
        props, scales = {}, None
        for c in wanted[layer]:
            keys = [key(layer, c, "diverse", n, below, k) for k in range(n)]
            found = [artifacts.load_render(k) for k in keys]
            if any(f is None for f in found):
                net = net or network(store, model, module)
                if scales is None:  # every wanted unit's best-stimulus activation, in one pass over the bank
                    bank = bank or stimulus_bank(settings.size)
                    found_best = best_stimuli(net, layer, wanted[layer], bank).activations
                    scales = dict(zip(wanted[layer], found_best))
                result = render_diverse(net, layer, c, n, below=below, scale=float(scales[c]), **options)
                found = [(artifacts.save_render(k, result.images[i].permute(1, 2, 0).numpy(),
                                                {"activation": float(result.activations[i]), "layer": layer,
                                                 "channel": c, "diverse": n, "below": below}),
                          {"activation": float(result.activations[i])}) for i, k in enumerate(keys)]
            props[c] = {"featurevis_diverse": [str(png) for png, _ in found],
                        "featurevis_diverse_activation": [float(side["activation"]) for _, side in found]}
        set_neuron_properties(store, model, layer, props)
        done[layer] = len(props)
    return done


def _usable_images(stored: dict[int, str]) -> tuple[list[str], dict[int, str]]:
    """The stored images that may be read (inside the artifacts folder, images), by channel, and
    channel -> why each other one may not (units this call did not render keep their paths)."""
    problems = {c: artifacts.image_problem(path) for c, path in stored.items()}
    return ([path for c, path in stored.items() if problems[c] is None],
            {c: problem for c, problem in problems.items() if problem is not None})
