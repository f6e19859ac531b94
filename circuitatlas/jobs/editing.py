"""Circuit editing jobs: store a named edit of a model (units ablated, edges scaled or set, units
replaced), rebuild the network with it, measure its effect against a random control of the same
size, and measure how faithful a circuit is. See :mod:`circuitatlas.analysis.editing` for how an
edit reaches the weights; the stored weights are never changed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from circuitatlas import artifacts, names
from circuitatlas.analysis.editing import (
    Ablation,
    EdgeEdit,
    EditSpec,
    Replacement,
    edges_into,
    edited_module,
    mean_maps,
    random_like,
    unit_values,
    value_point,
)
from circuitatlas.analysis.examples import load_images
from circuitatlas.analysis.tuning import radial_tuning
from circuitatlas.analysis.universality import battery_probes
from circuitatlas.errors import InvalidInput
from circuitatlas.ingest.graphtypes import LayerGraph, Source
from circuitatlas.ingest.layergraph import build_layer_graph
from circuitatlas.jobs.network import network
from circuitatlas.queries import aliases
from circuitatlas.queries import editing as stored
from circuitatlas.queries.models import input_size, model_layers, model_meta
from circuitatlas.queries.viewer import motif as read_motif
from circuitatlas.store import Store

__all__ = ["EditEffect", "create_edit", "edit_spec", "edited_network", "effect", "faithfulness", "TOP_K",
           "IMAGES_STORED", "effect_figure"]

TOP_K = 5  # classes compared per image
IMAGES_STORED = 1000  # per-image rows kept in the stored effect (all are returned)
_N_ANGLES = 32


@dataclass
class EditEffect:
    """What an edit changed: per affected unit (tuning and echo before/after, activations on the
    probe set and on its top examples), per image (top-5 classes before/after), accuracy and loss
    when the images are labelled, and the same measures under ``n_control`` random edits of the
    same size (``control``, one dict per draw)."""

    model: str
    edit: str
    units: list[dict[str, Any]]
    images: list[dict[str, Any]]
    summary: dict[str, Any]
    control: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def figure(self, max_units: int = 16):
        """The touched units' tuning curves before (black) and after (red) the edit, random
        controls in grey, the echo angle dotted: a PIL image."""
        return effect_figure(self, max_units)


# -- the network and its layer graph --------------------------------------------------------------
def _opened(store: Store, model: str, module: nn.Module | None = None, trust_pickle: bool = False,
            meta: dict | None = None) -> tuple[nn.Module, LayerGraph, dict]:
    """The network (see :func:`~circuitatlas.jobs.network.network`), its layer graph and the
    Model node's properties, read once (``meta``: when the caller has read them)."""
    meta = model_meta(store, model) if meta is None else meta
    net = network(store, model, module, trust_pickle, meta=meta)
    return net, _graph(store, model, net, meta), meta


def _graph(store: Store, model: str, module: nn.Module, meta: dict) -> LayerGraph:
    """The network's layer graph as ingest built it (its input size and observation layers)."""
    observed = [layer["name"] for layer in model_layers(store, model, observed=True)]
    return build_layer_graph(module, tuple(meta.get("input_size") or (3, 64, 64)), observation_layers=observed,
                             lenient=bool(meta.get("lenient")))


def _probe_images(size: int, images: str | Path | np.ndarray | None,
                  limit: int | None = None) -> tuple[torch.Tensor, list[str], str]:
    """(N, 3, size, size) floats, their paths, and what they are: a folder's images, or the
    stimulus battery at a quarter of the input size."""
    if images is None:
        probes = battery_probes(size, [size / 4], n_angles=8)
        x = torch.from_numpy(probes.images.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
        return x, [], "battery"
    if isinstance(images, np.ndarray):
        return torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2).contiguous(), [], "array"
    arr, paths = load_images(images, size, limit)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), paths, str(Path(images).resolve())


def _unit(store: Store, model: str, unit: str) -> Source:
    _, layer, channel = names.parse_neuron_uid(aliases.resolve_unit(store, model, unit))
    return layer, channel


# -- creating an edit -----------------------------------------------------------------------------
def create_edit(store: Store, model: str, name: str, *, ablate: Iterable[str] = (), ablate_where: str | None = None,
                mode: str = "zero", images: str | Path | None = None, edges: Iterable[Sequence] = (),
                edges_where: str | None = None, scale: float = 0.0, kernels: dict | None = None,
                replace: dict[str, tuple[np.ndarray, float]] | None = None,
                replace_from: dict[str, str] | None = None, params: dict | None = None, description: str = "",
                module: nn.Module | None = None) -> dict[str, Any]:
    """Check an edit against the network and store it as ``(:Edit)``; nothing is written on bad
    input. Returns its uid and what it touches."""
    meta = model_meta(store, model)
    uid = stored.check_name_free(store, model, name)  # before any work
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise InvalidInput(f"scale must be a number, not {scale!r}") from None
    if not np.isfinite(scale):
        raise InvalidInput(f"scale must be a finite number, not {scale!r}")
    params = dict(params or {})
    units = [_unit(store, model, u) for u in ablate]
    if ablate_where:
        units += [(r["layer"], r["channel"]) for r in stored.units_where(store, model, ablate_where, **params)]
    pairs: list[tuple[Source, Source, np.ndarray | None]] = []
    for row in edges:
        if len(row) not in (2, 3):
            raise InvalidInput(f"an edge is (source, target[, kernel]), not {row!r}")
        pairs.append((_unit(store, model, row[0]), _unit(store, model, row[1]),
                      None if len(row) == 2 else np.asarray(row[2], np.float64)))
    for (src, dst), kernel in (kernels or {}).items():
        pairs.append((_unit(store, model, src), _unit(store, model, dst), np.asarray(kernel, np.float64)))
    if edges_where:
        pairs += [((r["src_layer"], r["src_channel"]), (r["dst_layer"], r["dst_channel"]), None)
                  for r in stored.edges_where(store, model, edges_where, **params)]
    net, graph, _ = _opened(store, model, module, meta=meta)
    reps = {}
    for unit, given in (replace or {}).items():
        if not isinstance(given, (tuple, list)) or len(given) != 2:
            raise InvalidInput(f"replace[{unit!r}] is (kernel, bias), not {type(given).__name__}")
        try:
            reps[_unit(store, model, unit)] = (np.asarray(given[0], np.float64), float(given[1]), "arrays")
        except (TypeError, ValueError):
            raise InvalidInput(f"replace[{unit!r}]: the kernel must be numbers and the bias a number") from None
    for target, source in (replace_from or {}).items():
        reps[_unit(store, model, target)] = _unit_from(store, source)
    if not units and not pairs and not reps:
        raise InvalidInput("the edit changes nothing: name units to ablate, edges to scale or set, or units to "
                           "replace (a predicate that selects nothing counts as none)")
    units = sorted(set(units))
    means: dict[Source, np.ndarray] = {}
    probe = None
    if mode == "mean" and units:
        x, _, probe = _probe_images(input_size(meta), images)
        means = mean_maps(net, graph, units, x)
    spec = EditSpec([Ablation(layer, c, mode, means.get((layer, c))) for layer, c in units],
                    [EdgeEdit(s, d, None if k is not None else scale, k) for s, d, k in _unique(pairs)],
                    [Replacement(layer, c, k, b) for (layer, c), (k, b, _) in sorted(reps.items())])
    edited_module(net, graph, spec)  # every part applies, or a one-line error before anything is stored
    for layer, _ in spec.units():  # and every unit it touches can be read for its effect
        value_point(net, graph, layer)
    neuron = lambda layer, c: names.neuron_uid(model, layer, c)  # noqa: E731
    props = {"description": description, "mode": mode if units else None, "probe": probe,
             "arch": meta.get("arch"), "weights_sha256": meta.get("weights_sha256")}
    stored.create_edit(
        store, model, name, {k: v for k, v in props.items() if v is not None},
        [{"uid": neuron(a.layer, a.channel), "props": {"mode": a.mode, **_array("mean", a.mean)}}
         for a in spec.ablations],
        [{"dst": neuron(*e.dst), "props": {"src": neuron(*e.src), **({"factor": e.factor} if e.kernel is None
                                                                       else _array("kernel", e.kernel))}}
         for e in spec.edges],
        [{"uid": neuron(r.layer, r.channel), "props": {"bias": r.bias, "source": reps[(r.layer, r.channel)][2],
                                                       **_array("kernel", r.kernel)}} for r in spec.replacements])
    return {"uid": uid, "name": name, "model": model, "ablations": len(spec.ablations), "edges": len(spec.edges),
            "replacements": len(spec.replacements), "units": [names.unit(*u) for u in spec.units()]}


def _unique(pairs: list[tuple[Source, Source, np.ndarray | None]]) -> list[tuple[Source, Source, np.ndarray | None]]:
    seen: dict[tuple[Source, Source], np.ndarray | None] = {}
    for src, dst, kernel in pairs:
        if (src, dst) not in seen or kernel is not None:
            seen[(src, dst)] = kernel
    return [(s, d, k) for (s, d), k in sorted(seen.items(), key=lambda item: (item[0][1], item[0][0]))]


def _array(key: str, value: np.ndarray | None) -> dict[str, Any]:
    if value is None:
        return {}
    value = np.asarray(value, np.float64)
    return {key: [float(v) for v in value.reshape(-1)], f"{key}_shape": list(value.shape)}


def _unit_from(store: Store, source: str) -> tuple[np.ndarray, float, str]:
    """The folded kernel and bias of ``<model>/<layer>:<channel>`` (another stored model's unit)."""
    model, layer, channel = names.parse_neuron_uid(source)
    uid = aliases.resolve_unit(store, model, f"{layer}:{channel}")
    _, layer, channel = names.parse_neuron_uid(uid)
    weight = _opened(store, model)[1].weight_layers.get(layer)
    if weight is None or weight.kind == "add":
        raise InvalidInput(f"{source!r} is not a unit of a conv or linear layer")
    return weight.weight[channel].astype(np.float64), float(weight.bias[channel]), uid


def edit_spec(store: Store, model: str, name: str) -> EditSpec:
    """The stored edit as an :class:`EditSpec`."""
    return _spec_of(stored.read_edit(store, model, name))


def _spec_of(row: dict[str, Any]) -> EditSpec:
    """An :class:`EditSpec` from a stored edit as :func:`~circuitatlas.queries.editing.read_edit` reads it."""

    def arr(props: dict, key: str) -> np.ndarray | None:
        return None if props.get(key) is None else np.asarray(props[key], np.float32).reshape(props[f"{key}_shape"])

    return EditSpec(
        [Ablation(r["layer"], r["channel"], r["props"]["mode"], arr(r["props"], "mean")) for r in row["ablations"]],
        [EdgeEdit(names.parse_neuron_uid(r["props"]["src"])[1:], (r["layer"], r["channel"]), r["props"].get("factor"),
                  arr(r["props"], "kernel")) for r in row["edges"]],
        [Replacement(r["layer"], r["channel"], arr(r["props"], "kernel"), r["props"]["bias"])
         for r in row["replacements"]])


def edited_network(store: Store, model: str, name: str | None, module: nn.Module | None = None,
                   trust_pickle: bool = False) -> nn.Module:
    """The model's network with edit ``name`` applied (the network itself for None)."""
    if name is None:
        return network(store, model, module, trust_pickle)
    spec = edit_spec(store, model, name)
    net, graph, _ = _opened(store, model, module, trust_pickle)
    return edited_module(net, graph, spec)


# -- measuring ------------------------------------------------------------------------------------
def _tuning(net: nn.Module, graph: LayerGraph, units: Sequence[Source], size: int,
            stimulus_params: dict) -> dict[Source, np.ndarray]:
    params = dict(stimulus_params)
    stimulus = params.pop("stimulus", "curve")
    out: dict[Source, np.ndarray] = {}
    by_point: dict[str, list[Source]] = {}
    for layer, c in units:
        if len(graph.layers[layer].shape) == 3:  # a spatial map: a unit at its centre
            by_point.setdefault(value_point(net, graph, layer), []).append((layer, c))
    for point, members in by_point.items():
        result = radial_tuning(net, point, [c for _, c in members], stimulus=stimulus, n_angles=_N_ANGLES, size=size,
                               **params)
        for j, unit in enumerate(members):
            out[unit] = result.responses[:, j]
    return out


def _echo(curve: np.ndarray, preferred: int, peak: float) -> float | None:
    """The response half a turn from the preferred angle (rectified), relative to ``peak``, the
    unedited unit's response at its preferred angle: the Curve Circuits article's echo, on one
    scale before and after; None for a unit that does not respond at its preferred angle."""
    if not peak > 0:
        return None
    return max(float(curve[(preferred + len(curve) // 2) % len(curve)]), 0.0) / peak


def _activations(net: nn.Module, graph: LayerGraph, units: Sequence[Source], x: torch.Tensor,
                 batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's activation per image (spatial maximum at its value point), and the logits."""
    acts, logits = [], []
    with torch.no_grad():
        for out, values in unit_values(net, graph, units, x, batch):
            row = [v.flatten(1).amax(1) if v.dim() > 1 else v for v in (values[u] for u in units)]
            acts.append(torch.stack(row, 1) if row else torch.zeros(len(out), 0))
            logits.append(out if out.dim() == 2 else out[:, :0].flatten(1))  # a map out: no classes
    return torch.cat(acts).double().numpy(), torch.cat(logits).double().numpy()


def _labels(paths: list[str], root: str) -> np.ndarray | None:
    """Class indices from subfolder names when every image sits in a folder named by an integer."""
    if not paths:
        return None
    parents = [Path(p).parent for p in paths]
    if any(p == Path(root) for p in parents) or not all(p.name.isdigit() for p in parents):
        return None
    return np.array([int(p.name) for p in parents])


def _outcome(logits: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Top-5 classes per image (none when the network's output is a map, not class scores),
    accuracy and loss when labelled."""
    if logits.shape[1] == 0:
        return {}
    top = np.argsort(-logits, axis=1)[:, :TOP_K]
    out: dict[str, Any] = {"top": top}
    if labels is not None and logits.shape[1] > labels.max():
        t = torch.from_numpy(logits)
        out["accuracy"] = float((top[:, 0] == labels).mean())
        out["loss"] = float(F.cross_entropy(t, torch.from_numpy(labels)).item())
    return out


def _measure(net: nn.Module, graph: LayerGraph, units: Sequence[Source], x: torch.Tensor, labels: np.ndarray | None,
             size: int, stimulus_params: dict) -> dict[str, Any]:
    acts, logits = _activations(net, graph, units, x)
    return {"acts": acts, "units": list(units), **_outcome(logits, labels),
            "tuning": _tuning(net, graph, units, size, stimulus_params)}


def _roles(spec: EditSpec, graph: LayerGraph, net: nn.Module, downstream: int) -> dict[Source, str]:
    """The units an effect reads, with why: ``edge target``, ``replaced``, ``ablated`` and, for
    ablations, the ``downstream`` units they feed most (total |kernel| from the ablated units)."""
    roles: dict[Source, str] = {e.dst: "edge target" for e in spec.edges}
    roles.update({(r.layer, r.channel): "replaced" for r in spec.replacements})
    ablated = {(a.layer, a.channel) for a in spec.ablations}
    roles.update({u: "ablated" for u in ablated})
    fed: dict[Source, float] = {}
    layers = {layer for layer, _ in ablated}
    for name, weight in graph.weight_layers.items():
        if not any(src[0] in layers for sources in weight.sources for src in sources):
            continue
        for b in range(weight.out_channels):
            total = sum(float(np.abs(weight.weight[b, i]).sum()) for src, i in edges_into(weight, b) if src in ablated)
            if total > 0 and (name, b) not in roles:
                fed[(name, b)] = total
    added = 0
    for unit in sorted(fed, key=fed.get, reverse=True):
        if added >= downstream:
            break
        try:
            value_point(net, graph, unit[0])
        except InvalidInput:  # a sum inside a forward: no module output to read it at
            continue
        roles[unit] = "downstream"
        added += 1
    return roles


def effect(store: Store, model: str, name: str, images: str | Path | None = None, *,
           stimulus_params: dict | None = None, n_control: int = 5, seed: int = 0, k: int = 9,
           downstream: int = 16, limit: int | None = None, module: nn.Module | None = None,
           progress: Callable[[str], None] | None = None) -> EditEffect:
    """Measure edit ``name`` (see :class:`EditEffect`) on ``images`` (a folder; its subfolders
    named by class index make them labelled) or the stimulus battery, against ``n_control``
    random edits of the same size (same layers, modes, factors and kernels; the edit's own units
    and edges left out where enough others remain), and store it on the edit. The units read are
    the edges' targets, the replaced units, the ablated units and the ``downstream`` units the
    ablated ones feed most; the summary's means leave the ablated units out (their own response
    is what the ablation set)."""
    if int(n_control) < 0:
        raise InvalidInput(f"n_control must be 0 or more, not {n_control!r}")
    row = stored.read_edit(store, model, name)
    spec, edit_row = _spec_of(row), row["edit"]
    net, graph, meta = _opened(store, model, module)
    size = input_size(meta)
    x, paths, probe_name = _probe_images(size, images, limit)
    labels = _labels(paths, probe_name) if paths else None
    roles = _roles(spec, graph, net, int(downstream))
    units = sorted(roles)
    stimulus_params = dict(stimulus_params or {})
    note = progress or (lambda _msg: None)
    note("measuring the network as it is")
    base = _measure(net, graph, units, x, labels, size, stimulus_params)
    note("measuring the edited network")
    after = _measure(edited_module(net, graph, spec), graph, units, x, labels, size, stimulus_params)
    rng = np.random.default_rng(seed)
    controls = []
    probe_set = None  # the edit's own probe set, loaded once, for the controls' mean maps
    for i in range(int(n_control)):
        note(f"control {i + 1} of {n_control}")
        draw = random_like(spec, graph, rng)
        if any(a.mode == "mean" for a in draw.ablations):  # the control's units' own means, same probe set
            if probe_set is None:
                probe = edit_row.get("probe")
                probe_set = x if probe == "array" else _probe_images(size, None if probe in (None, "battery")
                                                                     else probe)[0]
            means = mean_maps(net, graph, [(a.layer, a.channel) for a in draw.ablations], probe_set)
            draw.ablations = [Ablation(a.layer, a.channel, a.mode, means[(a.layer, a.channel)]) for a in draw.ablations]
        controls.append(_measure(edited_module(net, graph, draw), graph, units, x, labels, size, stimulus_params))

    unit_rows = []
    for j, (layer, c) in enumerate(units):
        row: dict[str, Any] = {"unit": names.unit(layer, c), "uid": names.neuron_uid(model, layer, c),
                               "role": roles[(layer, c)]}
        before_acts, after_acts = base["acts"][:, j], after["acts"][:, j]
        top = np.argsort(-before_acts)[:k]
        row.update(mean_before=float(before_acts.mean()), mean_after=float(after_acts.mean()),
                   top_examples=[paths[i] if paths else int(i) for i in top],
                   top_before=float(before_acts[top].mean()), top_after=float(after_acts[top].mean()),
                   top_control=[float(cn["acts"][top, j].mean()) for cn in controls])
        if (layer, c) in base["tuning"]:
            curve_b, curve_a = base["tuning"][(layer, c)], after["tuning"][(layer, c)]
            preferred = int(np.argmax(curve_b))
            peak = float(curve_b[preferred])
            row.update(preferred_deg=preferred * 360.0 / _N_ANGLES, tuning_before=curve_b.tolist(),
                       tuning_after=curve_a.tolist(), echo_before=_echo(curve_b, preferred, peak),
                       echo_after=_echo(curve_a, preferred, peak),
                       echo_control=[_echo(cn["tuning"][(layer, c)], preferred, peak) for cn in controls],
                       tuning_control=[cn["tuning"][(layer, c)].tolist() for cn in controls])
        unit_rows.append(row)
    image_rows = [{"image": paths[i] if paths else i, "top5_before": base["top"][i].tolist(),
                   "top5_after": after["top"][i].tolist(),
                   **({"label": int(labels[i])} if labels is not None else {})}
                  for i in range(len(x))] if "top" in base else []
    read = [j for j, u in enumerate(units) if roles[u] != "ablated"]
    control_rows = [_summary_of(cn, base, read, k) for cn in controls]
    summary = {"images": len(x), "probe": probe_name, "units": len(units), "n_control": int(n_control),
               "touched": len(spec.units()), "read": len(read), **_summary_of(after, base, read, k)}
    if control_rows:
        for key in ("changed_top1", "accuracy", "loss", "echo_mean", "top_mean"):
            values = [row[key] for row in control_rows if row.get(key) is not None]
            if values:
                summary[f"{key}_control"] = float(np.mean(values))
                summary[f"{key}_control_range"] = [float(min(values)), float(max(values))]
    result = EditEffect(model, name, unit_rows, image_rows, summary, control_rows)
    if any(u.get("tuning_before") for u in unit_rows):  # the figure, for the viewer
        figure = artifacts.inside(model, f"edit-{name}.png")
        figure.parent.mkdir(parents=True, exist_ok=True)
        result.figure().save(figure)
        summary["figure"] = str(figure)
    stored.store_effect(store, model, name, {**result.to_dict(), "images": image_rows[:IMAGES_STORED]}, summary)
    return result


def _summary_of(measured: dict, base: dict, read: Sequence[int], k: int) -> dict[str, Any]:
    """Top-1 changes, accuracy and loss, and over the read units (indices into the measured
    units) the mean echo and the mean activation on each unit's top ``k`` examples."""
    out: dict[str, Any] = {}
    if "top" in base:
        out["changed_top1"] = float((measured["top"][:, 0] != base["top"][:, 0]).mean())
    for key in ("accuracy", "loss"):
        if key in base:
            out[f"{key}_before"], out[key] = base[key], measured[key]
    echoes = []
    for j in read:
        unit = measured["units"][j]
        if unit not in measured["tuning"]:
            continue
        curve_b = base["tuning"][unit]
        preferred = int(np.argmax(curve_b))
        peak = float(curve_b[preferred])
        pair = (_echo(curve_b, preferred, peak), _echo(measured["tuning"][unit], preferred, peak))
        if None not in pair:
            echoes.append(pair)
    if echoes:
        out["echo_mean_before"], out["echo_mean"] = (float(np.mean(v)) for v in zip(*echoes))
    if len(read):
        top = {j: np.argsort(-base["acts"][:, j])[:k] for j in read}
        out["top_mean_before"] = float(np.mean([base["acts"][t, j].mean() for j, t in top.items()]))
        out["top_mean"] = float(np.mean([measured["acts"][t, j].mean() for j, t in top.items()]))
    return out


# -- faithfulness ---------------------------------------------------------------------------------
def faithfulness(store: Store, model: str, units: Iterable[str] | None = None, *, motif: str | None = None,
                 targets: Iterable[str] | None = None, layers: Iterable[str] | None = None,
                 images: str | Path | None = None, stimulus_params: dict | None = None, k: int = 9,
                 module: nn.Module | None = None) -> dict[str, Any]:
    """How much of the targets' activation a circuit carries: keep ``units`` (or a stored
    ``motif``'s members before its last layer), mean-ablate every other unit of their layers (or
    of ``layers``), and read each target (default: the units, or the motif's members, in the
    deepest layer) on its top ``k`` probe images and its preferred stimuli. Per target and image
    set, ``sum(kept - none) / sum(full - none)`` over the images: 1 when the kept units carry it
    all, 0 when they carry no more than their means (``none``: every unit of those layers
    mean-ablated); ``faithfulness`` is the median over targets and sets (``faithfulness_mean``
    beside it). Stored on the motif as ``faithfulness``."""
    net, graph, meta = _opened(store, model, module)
    if motif is not None:
        members = read_motif(store, motif)["members"]
        chosen = [(m["layer"], m["channel"]) for m in members]
    elif units is not None:
        chosen = [_unit(store, model, u) for u in units]
    else:
        raise InvalidInput("name the circuit: units or a motif uid")
    if not chosen:
        raise InvalidInput("the circuit has no units")
    order = {name: info.order for name, info in graph.layers.items()}
    deepest = max(chosen, key=lambda u: order[u[0]])[0]
    target_units = ([_unit(store, model, t) for t in targets] if targets is not None
                    else [u for u in chosen if u[0] == deepest])
    kept = [u for u in chosen if u not in target_units]
    ablate_layers = (aliases.resolve_layers(store, model, layers) if layers is not None
                     else sorted({layer for layer, _ in kept}))
    if not ablate_layers:
        raise InvalidInput("nothing upstream to ablate: the circuit needs units before its targets, or `layers`")
    size = input_size(meta)
    x, _, probe_name = _probe_images(size, images)
    stimulus_params = dict(stimulus_params or {})
    sweep = _sweep(stimulus_params, size)
    probe = torch.cat([x, sweep])
    everyone = [(layer, c) for layer in ablate_layers for c in range(graph.layers[layer].channels)]
    means = mean_maps(net, graph, everyone, probe)
    others = [u for u in everyone if u not in set(kept)]
    variants = {"full": EditSpec(),
                "kept": EditSpec([Ablation(*u, "mean", means[u]) for u in others]),
                "none": EditSpec([Ablation(*u, "mean", means[u]) for u in everyone])}
    acts = {key: _activations(edited_module(net, graph, spec), graph, target_units, probe)[0]
            for key, spec in variants.items()}
    rows = []
    for j, unit in enumerate(target_units):
        full = acts["full"][:, j]
        top = np.argsort(-full[:len(x)])[:k]  # top probe images
        preferred = len(x) + np.argsort(-full[len(x):])[:3]  # the sweep angles it likes most
        row = {"unit": names.unit(*unit)}
        for label, idx in (("top_examples", top), ("preferred_stimuli", preferred)):
            f, kk, nn_ = (acts[v][idx, j] for v in ("full", "kept", "none"))
            span = float((f - nn_).sum())  # pooled over the images: one image near its mean cannot dominate
            scale = float(np.abs(f).sum()) + float(np.abs(nn_).sum())
            row[label] = float((kk - nn_).sum()) / span if abs(span) > 1e-6 * max(scale, 1e-12) else None
            row[f"{label}_kept_raw"] = float(kk.sum() / f.sum()) if abs(float(f.sum())) > 1e-12 else None
        rows.append(row)
    scores = [v for r in rows for v in (r["top_examples"], r["preferred_stimuli"]) if v is not None]
    result = {"faithfulness": float(np.median(scores)) if scores else None,
              "faithfulness_mean": float(np.mean(scores)) if scores else None, "targets": rows,
              "kept": [names.unit(*u) for u in kept], "ablated_layers": ablate_layers,
              "ablated_units": len(others), "probe": probe_name, "motif": motif}
    if motif is not None and result["faithfulness"] is not None:
        stored.store_faithfulness(store, motif, result["faithfulness"], result)
    return result


def _sweep(stimulus_params: dict, size: int) -> torch.Tensor:
    from circuitatlas.analysis import stimuli

    params = dict(stimulus_params)
    name = params.pop("stimulus", "curve")
    angles = np.arange(_N_ANGLES) * 360.0 / _N_ANGLES
    images = np.stack([stimuli.STIMULI[name](orientation=float(a), size=size, **params) for a in angles])
    return torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def effect_figure(result: EditEffect, max_units: int = 16):
    """See :meth:`EditEffect.figure`."""
    from circuitatlas.analysis.plots import tuning_before_after

    shown = sorted((u for u in result.units if u.get("tuning_before")), key=lambda u: u["role"] == "ablated")
    panels = [{"title": f"{u['unit']} ({u['role']}) echo {_num(u['echo_before'])} -> {_num(u['echo_after'])}",
               "before": u["tuning_before"], "after": u["tuning_after"], "controls": u.get("tuning_control", []),
               "preferred": int(round(u["preferred_deg"] / 360.0 * len(u["tuning_before"])))}
              for u in shown][:max_units]
    if not panels:
        raise InvalidInput("no touched unit has a tuning curve (units of vector layers have none)")
    return tuning_before_after(panels, f"{result.model} edit {result.edit!r}: tuning before (black), after (red), "
                                       "random controls (grey); dotted: preferred + 180 deg")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
