"""The public Python API: :class:`Atlas`, one connection to a circuit graph."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    import networkx as nx

    from circuitatlas.analysis.examples import Example
    from circuitatlas.analysis.motifs import Motif
    from circuitatlas.analysis.svd import SvdResult
    from circuitatlas.analysis.tuning import TuningResult
    from circuitatlas.ingest.writer import Progress

from circuitatlas.config import resolve_connection
from circuitatlas.store import ModelSummary, Store


class Atlas:
    """A circuit graph in Neo4j.

    Open one with :meth:`connect` and use it as a context manager::

        with Atlas.connect() as atlas:          # NEO4J_* settings, else the local server
            atlas.cypher("MATCH (m:Model) RETURN m.id AS id")
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def connect(
        cls,
        uri: str | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        state_dir: str | Path | None = None,
    ) -> "Atlas":
        """Connect with explicit settings, else NEO4J_URI/USER/PASSWORD/DATABASE, else the
        local server started by ``circuitatlas db start`` (its password is read for you)."""
        return cls(Store.open(resolve_connection(uri, user, password, database, state_dir)))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Atlas":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def init_schema(self) -> None:
        """Create circuitatlas's constraints and indexes; safe to repeat."""
        self.store.ensure_schema()

    def cypher(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """Run a read-only Cypher query with parameters; a query that would write is refused."""
        return self.store.query_read_only(query, params)

    def execute(self, query: str, **params: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Run a Cypher query that may write; returns ``(rows, update counters)``."""
        return self.store.query_write(query, params)

    def models(self) -> list[ModelSummary]:
        """Every model in the graph with its status and node and edge counts."""
        return self.store.models()

    def drop(self, model: str) -> None:
        """Delete one model's subgraph (in batches; raises NotFound for an unknown id)."""
        self.store.drop_model(model)

    def ingest(
        self,
        source: "str | nn.Module",
        name: str,
        weights: str | None = None,
        arch: str | None = None,
        input_size: tuple[int, int, int] = (3, 224, 224),
        layers: Iterable[str] | None = None,
        *,
        replace: bool = False,
        resume: bool = False,
        lenient: bool = False,
        direct: bool = True,
        expanded: bool = True,
        min_l2: float = 0.0,
        top_k_per_neuron: int | None = None,
        trust_pickle: bool = False,
        progress: "Progress | None" = None,
        bulk: str = "auto",
    ) -> ModelSummary:
        """Ingest a network as model ``name``.

        ``source`` is a torchvision model name (``weights``: "DEFAULT", an enum name or "none"),
        a checkpoint path (a state dict needs ``arch``; a pickled module needs ``trust_pickle``),
        a built-in architecture name, or an ``nn.Module``. ``layers`` picks the observation
        layers for expanded weights (default: the top-level blocks). An existing id is refused
        unless ``replace``; ``resume`` finishes an interrupted ingest without duplicates.
        ``bulk``: "auto" writes a large model into an empty local server by an offline
        ``neo4j-admin`` import (restarting it), "always" insists on that, "never" writes online.
        """
        from circuitatlas.ingest.pipeline import ingest
        from circuitatlas.ingest.writer import IngestOptions

        if replace and resume:
            raise ValueError("replace and resume exclude each other")
        mode = "replace" if replace else "resume" if resume else "fresh"
        options = IngestOptions(direct, expanded, min_l2, top_k_per_neuron)
        return ingest(self.store, source, name, weights, arch, tuple(input_size), layers, mode=mode,
                      lenient=lenient, options=options, trust_pickle=trust_pickle, progress=progress, bulk=bulk)

    def weights(self, model: str, src_layer: str, dst_layer: str, kind: str = "direct") -> "np.ndarray":
        """The (out, in, kh, kw) kernels from ``src_layer`` to ``dst_layer``, read from the graph.
        ``kind`` is "direct" (WEIGHT edges) or "expanded" (EXPANDED edges)."""
        from circuitatlas.queries.weights import read_weights

        return read_weights(self.store, model, src_layer, dst_layer, kind)

    def subgraph(
        self, model: str, layers: Iterable[str], kind: str = "expanded", min_l2: float = 0.0,
        top_k: int | None = None,
    ) -> "nx.DiGraph":
        """Neurons of ``layers`` and the ``kind`` ("expanded" or "direct") edges among them, with
        neuron properties on nodes and kernels as numpy arrays on edges (strongest ``top_k`` per
        target when given)."""
        from circuitatlas.queries.subgraph import subgraph

        return subgraph(self.store, model, layers, kind, min_l2, top_k)

    def analyze_svd(
        self, model: str, src_layer: str, dst_layer: str, k: int | None = None, kind: str = "auto",
        plot: str | None = None,
    ) -> "SvdResult":
        """SVD co-clustering of |W| from ``src_layer`` to ``dst_layer`` (expanded weights when
        stored, else direct), written back as ``svd_in``/``svd_out`` coordinates and
        ``cluster_in``/``cluster_out`` ids on the neurons plus ``(:Cluster)`` nodes joined by
        ``IN_CLUSTER``. Layers made of branches get a cluster x branch report in
        ``result.branch_reports``. ``plot`` saves a PNG of both sides. Re-running replaces."""
        from circuitatlas.analysis.svd import branch_contingency, svd_clusters
        from circuitatlas.errors import NotFound
        from circuitatlas.queries import cypher
        from circuitatlas.queries.weights import read_abs_sums
        from circuitatlas.queries.writeback import svd_analysis_key, write_clusters

        kinds = ["expanded", "direct"] if kind == "auto" else [kind]
        for i, candidate in enumerate(kinds):
            try:
                W = read_abs_sums(self.store, model, src_layer, dst_layer, candidate)
                kind = candidate
                break
            except NotFound:
                if i == len(kinds) - 1:
                    raise
        result = svd_clusters(W, k)
        result.params.update({"kind": kind, "src": src_layer, "dst": dst_layer})
        sides = {}
        for side, layer, labels, coords in (("input", src_layer, result.input_clusters, result.input_coords),
                                            ("output", dst_layer, result.output_clusters, result.output_coords)):
            neurons = self.store.read(cypher.LAYER_NEURONS, model=model, layer=layer)
            sides[side] = ([n["uid"] for n in neurons], labels, coords)
            branches = [n["branch"] for n in neurons]
            if all(branches) and len(set(branches)) > 1:
                result.branch_reports[side] = branch_contingency(labels, branches)
        analysis = svd_analysis_key(src_layer, dst_layer, kind, k)
        write_clusters(self.store, model, analysis, "svd", src_layer, dst_layer, result.k, sides, result.params)
        result.params["analysis"] = analysis
        if plot:
            from circuitatlas.analysis.plots import svd_scatter

            thumbs = [self._first_layer_thumbnails(model, layer) for layer in (src_layer, dst_layer)]
            svd_scatter(result, f"{model}: {src_layer} -> {dst_layer} ({kind})", *thumbs).save(plot)
        return result

    def _first_layer_thumbnails(self, model: str, layer: str) -> dict | None:
        """RGB pictures of a layer's filters when it reads the image directly, else None."""
        from circuitatlas.analysis.plots import rgb_thumbnail
        from circuitatlas.errors import NotFound
        from circuitatlas.queries.weights import read_weights

        try:
            W = read_weights(self.store, model, "input", layer)
        except NotFound:
            return None
        return {unit: rgb_thumbnail(W[unit]) for unit in range(W.shape[0])} if W.shape[1] == 3 else None

    def model_meta(self, model: str) -> dict:
        """The Model node's properties (raises NotFound for an unknown id)."""
        from circuitatlas.errors import NotFound
        from circuitatlas.queries import cypher

        rows = self.store.read(cypher.MODEL_META, model=model)
        if not rows:
            raise NotFound(f"no model {model!r} in the graph (see `circuitatlas models`)")
        return rows[0]["meta"]

    def _network(self, model: str, module: "nn.Module | None") -> "nn.Module":
        """``module`` (checked to hold the weights ingested) if given, else the rebuilt network."""
        from circuitatlas.ingest.sources import check_fingerprint

        return self.module(model) if module is None else check_fingerprint(module, self.model_meta(model))

    def layers(self, model: str, observed: bool = False) -> list[dict[str, Any]]:
        """The model's layers in topological order (``name``, ``kind``, ``channels``, ``shape``,
        ``observed``, ``featurevis_sheet``); with ``observed`` only the observation layers."""
        from circuitatlas.queries import cypher

        self.model_meta(model)  # NotFound for an unknown model
        return self.store.read(cypher.MODEL_LAYERS, model=model, observed=observed)

    def module(self, model: str, trust_pickle: bool = False) -> "nn.Module":
        """Rebuild the network of a stored model from what ingest recorded (source, arch, weights),
        checked against the fingerprint of the weights ingested."""
        from circuitatlas.ingest.sources import rebuild

        return rebuild(self.model_meta(model), trust_pickle=trust_pickle)

    def _check_layer(self, model: str, layer: str) -> dict[str, Any]:
        """The layer's ``channels``, ``kind`` and ``shape``; NotFound when the model has no such layer."""
        from circuitatlas.errors import NotFound
        from circuitatlas.queries import cypher

        rows = self.store.read(cypher.LAYER_INFO, uid=f"{model}/{layer}")
        if not rows:
            raise NotFound(f"no layer {layer!r} in model {model!r}")
        return rows[0]

    def _set_neuron_properties(self, model: str, layer: str, props_by_channel: dict[int, dict]) -> None:
        from circuitatlas.queries import cypher

        rows = [{"uid": f"{model}/{layer}:{c}", "props": props} for c, props in props_by_channel.items()]
        self.store.write(cypher.SET_NEURON_PROPERTIES, rows=rows)

    def annotate_tuning(
        self, model: str, layer: str, channels: Iterable[int] | None = None, stimulus: str = "curve",
        n_angles: int = 64, module: "nn.Module | None" = None, **stimulus_params,
    ) -> "TuningResult":
        """Radial tuning of a layer's units, stored on each neuron as ``orientation`` (preferred
        angle, degrees), ``orientation_selectivity`` (vector strength) and ``tuning`` (responses
        over ``tuning_angles``). The network is rebuilt from the graph unless ``module`` is given."""
        import json

        from circuitatlas.analysis.tuning import radial_tuning

        self._check_layer(model, layer)
        net = self._network(model, module)
        size = int((self.model_meta(model).get("input_size") or [3, 64, 64])[1])
        result = radial_tuning(net, layer, channels, stimulus=stimulus, n_angles=n_angles, size=size,
                               **stimulus_params)
        params = json.dumps({"stimulus": stimulus, **{k: v for k, v in result.params.items()}}, default=str)
        self._set_neuron_properties(model, layer, {
            c: {"orientation": float(result.preferred_deg[i]), "orientation_selectivity": float(result.selectivity[i]),
                "tuning": [float(v) for v in result.responses[:, i]], "tuning_angles": [float(a) for a in result.angles],
                "tuning_params": params}
            for i, c in enumerate(result.channels)})
        return result

    def annotate_examples(
        self, model: str, layer: str, images, channels: Iterable[int] | None = None, k: int = 9,
        module: "nn.Module | None" = None, out_dir: str | None = None,
    ) -> "dict[int, list[Example]]":
        """Top-``k`` dataset examples of each unit over ``images`` (a folder, or an (N, H, W, 3)
        array such as a stimulus sweep), saved as PNG crops; each neuron gets ``examples`` (paths)
        and ``examples_activation``."""
        from pathlib import Path

        import numpy as np
        from PIL import Image

        from circuitatlas import paths
        from circuitatlas.analysis.examples import load_images, top_examples

        self._check_layer(model, layer)
        net = self._network(model, module)
        size = int((self.model_meta(model).get("input_size") or [3, 64, 64])[1])
        if isinstance(images, (str, Path)):
            images, _ = load_images(images, size)
        found = top_examples(net, layer, np.asarray(images, dtype=np.float32), channels, k)
        root = Path(out_dir) if out_dir else paths.artifacts_dir() / model / "examples" / layer
        props = {}
        for channel, examples in found.items():
            folder = root / str(channel)
            folder.mkdir(parents=True, exist_ok=True)
            files = []
            for rank, ex in enumerate(examples):
                path = folder / f"{rank:02d}-img{ex.image_index}.png"
                Image.fromarray((np.clip(ex.crop, 0, 1) * 255).astype(np.uint8)).resize(
                    (max(32, ex.crop.shape[1] * 2), max(32, ex.crop.shape[0] * 2)), Image.NEAREST).save(path)
                files.append(str(path))
            props[channel] = {"examples": files, "examples_activation": [ex.activation for ex in examples]}
        self._set_neuron_properties(model, layer, props)
        return found

    def featurevis(
        self, model: str, layer: str, channels: Iterable[int] | None = None, steps: int = 512, size: int = 128,
        lr: float = 0.05, seed: int = 0, device: str | None = None, chunk: int | None = None,
        module: "nn.Module | None" = None, progress=None,
    ) -> dict:
        """Render one image per channel of ``layer``: :meth:`featurevis_layers` for one layer."""
        return self.featurevis_layers(model, [layer], channels, steps=steps, size=size, lr=lr, seed=seed,
                                      device=device, chunk=chunk, module=module, progress=progress)[0]

    def featurevis_layers(
        self, model: str, layers: Iterable[str], channels: Iterable[int] | None = None, steps: int = 512,
        size: int = 128, lr: float = 0.05, seed: int = 0, device: str | None = None, chunk: int | None = None,
        module: "nn.Module | None" = None, progress=None,
    ) -> list[dict]:
        """Render one image per channel of each layer (``channels``: the same ones in every layer;
        default all), save PNGs under a content-addressed artifacts dir, set each neuron's
        ``featurevis`` (path), ``featurevis_activation`` and ``featurevis_key``, and write a contact
        sheet per layer (the Layer's ``featurevis_sheet``). Every layer and channel is checked before
        anything renders. The artifacts are addressed by the ingested weights' fingerprint, layer,
        channel and settings: a neuron rendered that way before, under this model id or another
        with the same weights, is skipped (and linked to the image, if it is not yet). The layers'
        channels are batched together in network order (a batch may span two layers), so a whole
        model renders in batches of one size; each batch is stored as soon as it is rendered, so an
        interrupted run loses only the batch in progress. ``progress(n)`` counts channels done.
        Returns one report per layer, in network order (``rendered``, ``skipped``, of which
        ``linked``, ``sheet``, ``channels``)."""
        import hashlib
        import json
        from pathlib import Path

        import numpy as np
        import torch
        from PIL import Image

        from circuitatlas import paths
        from circuitatlas.analysis.featurevis import render_units
        from circuitatlas.errors import NotFound, RenderError
        from circuitatlas.queries import cypher

        known = {row["name"]: row for row in self.layers(model)}
        layers = list(dict.fromkeys(layers))
        for layer in layers:
            if layer not in known:
                raise NotFound(f"no layer {layer!r} in model {model!r} (see `circuitatlas layers {model}`)")
        layers.sort(key=lambda layer: known[layer]["order"])
        chosen = None if channels is None else [int(c) for c in channels]  # read once: it may be a generator
        wanted = {layer: list(range(known[layer]["channels"])) if chosen is None else list(chosen)
                  for layer in layers}
        for layer, listed in wanted.items():
            bad = [c for c in listed if not 0 <= c < known[layer]["channels"]]
            if bad:
                raise ValueError(f"channel {bad[0]} is not in {layer} ({known[layer]['channels']} channels)")
        settings = {"steps": steps, "size": size, "lr": lr, "seed": seed, "param": "fft", "objective": "channel",
                    "version": 1}
        meta = self.model_meta(model)
        identity = {k: meta.get(k) for k in ("source", "arch", "weights", "plan", "weights_sha256")}

        def key(layer: str, channel: int) -> str:
            spec = json.dumps([identity, layer, channel, settings], sort_keys=True, default=str)
            return hashlib.sha256(spec.encode()).hexdigest()[:24]

        root = paths.artifacts_dir() / "featurevis"

        def stored(layer: str, c: int) -> dict | None:
            """The neuron's properties from an earlier render with the same key (its PNG and the
            JSON beside it, written last), if there is one."""
            k = key(layer, c)
            png, side = root / f"{k}.png", root / f"{k}.json"
            if not (png.exists() and side.exists()):
                return None
            return {"featurevis": str(png), "featurevis_key": k,
                    "featurevis_activation": json.loads(side.read_text())["activation"]}

        todo, linked = {}, {}
        for layer, listed in wanted.items():
            linked_here = {row["c"]: row["k"] for row in self.store.read(cypher.FEATUREVIS_KEYS, model=model,
                                                                            layer=layer)}
            found = {c: stored(layer, c) for c in listed}
            todo[layer] = [c for c in listed if found[c] is None]
            relink = {c: props for c, props in found.items()
                      if props is not None and linked_here.get(c) != props["featurevis_key"]}
            if relink:  # rendered before (another ingest of the same weights): linked, not rendered again
                self._set_neuron_properties(model, layer, relink)
            linked[layer] = len(relink)
        units = [(layer, c) for layer in layers for c in todo[layer]]
        if units:
            net = self._network(model, module)
            root.mkdir(parents=True, exist_ok=True)

            def save(group: list[tuple[str, int]], part) -> None:  # each batch is kept as soon as it is done
                props: dict[str, dict] = {}
                for i, (layer, c) in enumerate(group):
                    k = key(layer, c)
                    image = (part.images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
                    Image.fromarray(image).save(root / f"{k}.png")
                    activation = float(part.activations[i])
                    (root / f"{k}.json").write_text(json.dumps({"activation": activation, "layer": layer,
                                                                "channel": c, "settings": settings}))
                    props.setdefault(layer, {})[c] = {"featurevis": str(root / f"{k}.png"), "featurevis_key": k,
                                                      "featurevis_activation": activation}
                for layer, by_channel in props.items():
                    self._set_neuron_properties(model, layer, by_channel)

            try:
                render_units(net, units, chunk=chunk, progress=progress, on_chunk=save, size=size, steps=steps,
                             lr=lr, seed=seed, device=device)
            except torch.OutOfMemoryError:
                raise RenderError(f"out of device memory rendering one channel at a time at {size} px: "
                                  "try a smaller --size or --device cpu") from None
        elif progress is not None:
            progress(0)
        reports = []
        for layer in layers:
            sheet_rows = self.store.read(cypher.FEATUREVIS_PATHS, model=model, layer=layer)
            sheet = Path(paths.artifacts_dir()) / model / f"featurevis-{layer}.png"
            _contact_sheet([Path(r["path"]) for r in sheet_rows], sheet)
            self.store.write(cypher.SET_LAYER_SHEET, uid=f"{model}/{layer}", sheet=str(sheet))
            reports.append({"layer": layer, "rendered": len(todo[layer]),
                            "skipped": len(wanted[layer]) - len(todo[layer]), "linked": linked[layer],
                            "sheet": str(sheet), "channels": wanted[layer]})
        return reports

    MOTIF_KINDS = ("rotation_equivariance", "union_over_cases", "superposition")

    def _layer_weights(self, model: str, src: str, dst: str, kernels: bool = False) -> "np.ndarray":
        """Kernel sums (out, in) between two layers, or whole kernels (out, in, kh, kw) with
        ``kernels``: direct weights when the layers are directly connected, else expanded."""
        from circuitatlas.errors import NotFound
        from circuitatlas.queries.weights import read_edge_stat, read_weights

        for kind in ("direct", "expanded"):
            try:
                if kernels:
                    return read_weights(self.store, model, src, dst, kind)
                return read_edge_stat(self.store, model, src, dst, kind, "sum")
            except NotFound:
                if kind == "expanded":
                    raise
        raise AssertionError("unreachable")

    def _layer_tuning(self, model: str, layer: str, net, stimulus_params: dict):
        """Tuning stored on the neurons when every one has it, else measured (and stored) now."""
        import numpy as np

        from circuitatlas.analysis.motifs import Tuning
        from circuitatlas.queries import cypher

        rows = self.store.read(cypher.LAYER_TUNING, model=model, layer=layer)
        if rows and all(r["tuning"] for r in rows) and not stimulus_params:
            return Tuning(np.asarray(rows[0]["angles"]), np.asarray([r["tuning"] for r in rows]).T,
                          np.asarray([r["orientation"] for r in rows]), np.asarray([r["selectivity"] for r in rows]))
        r = self.annotate_tuning(model, layer, module=net(), **stimulus_params)
        return Tuning(r.angles, r.responses, r.preferred_deg, r.selectivity)

    def find_motifs(
        self, kind: str, model: str, layers: Iterable[str], *, n_perm: int = 200, alpha: float = 0.01,
        seed: int = 0, stimulus_params: dict | None = None, module: "nn.Module | None" = None, **params,
    ) -> "list[Motif]":
        """Run a motif detector of :mod:`circuitatlas.analysis.motifs` on stored weights and write
        each finding as ``(:Motif {uid, kind, model, score, p_value, params, layers})`` with
        ``(:Neuron)-[:IN_MOTIF {role, orientation}]->(:Motif)``; re-running the same kind, layers
        and parameters replaces the earlier result. Kinds and layers:
        ``rotation_equivariance`` [A, B], ``union_over_cases`` [cases, pathways, union],
        ``superposition`` [A, B], ``flip_equivariance`` [A, B, ...] (a chain: each layer's mirror
        pairs map its units for the next; start it at ``input``, whose mirror map is the identity,
        else the first layer's map comes from its tuning). Neuron tuning is read from the graph or
        measured with curve stimuli (``stimulus_params``, e.g. ``{"radius": 5}``). Members come
        back as neuron uids."""
        import hashlib
        import json

        from circuitatlas.analysis import motifs as M
        from circuitatlas.analysis.tuning import radial_tuning
        from circuitatlas.queries import cypher

        layers = list(layers)
        needed = {"rotation_equivariance": 2, "union_over_cases": 3, "superposition": 2, "flip_equivariance": 2}
        if kind not in needed:
            raise ValueError(f"unknown motif kind {kind!r}; choose one of {', '.join(needed)}")
        if len(layers) != needed[kind] and not (kind == "flip_equivariance" and len(layers) > 2):
            raise ValueError(f"{kind} takes {needed[kind]} layers{' or more' if kind == 'flip_equivariance' else ''}, "
                             f"got {len(layers)}")
        layer_info = {layer: self._check_layer(model, layer) for layer in layers}
        stimulus_params = dict(stimulus_params or {})
        cache: dict = {}

        def net():
            if "net" not in cache:
                cache["net"] = self._network(model, module)
            return cache["net"]

        common = {"n_perm": n_perm, "alpha": alpha, "seed": seed, **params}
        if kind == "rotation_equivariance":
            t_in = self._layer_tuning(model, layers[0], net, stimulus_params)
            t_out = self._layer_tuning(model, layers[1], net, stimulus_params)
            found = M.rotation_equivariance(self._layer_weights(model, *layers), t_in, t_out, tuple(layers), **common)
            if found:  # whole kernels only now: do they rotate with orientation?
                kernels = self._layer_weights(model, *layers, kernels=True)
                for motif in found:
                    fi = [int(n.split(":")[1]) for n, i in motif.members.items() if i["role"] == "upstream"]
                    fo = [int(n.split(":")[1]) for n, i in motif.members.items() if i["role"] == "downstream"]
                    motif.params["kernel_rotation"] = M.kernel_rotation(kernels, fi, fo, t_in, t_out)
        elif kind == "flip_equivariance":
            found = self._flip_chain(model, layers, layer_info[layers[0]]["kind"] == "input", net, stimulus_params,
                                     common)
        elif kind == "union_over_cases":
            found = M.union_over_cases(self._layer_weights(model, layers[0], layers[1]),
                                       self._layer_weights(model, layers[1], layers[2]),
                                       self._layer_tuning(model, layers[1], net, stimulus_params),
                                       tuple(layers), **common)
        else:
            size = int((self.model_meta(model).get("input_size") or [3, 64, 64])[1])
            lines = [radial_tuning(net(), layer, stimulus="line", n_angles=16, size=size, length=size / 3,
                                   width=1.5).responses[:8] for layer in layers]
            found = M.superposition(self._layer_weights(model, *layers), lines[1], tuple(layers),
                                    class_responses_in=lines[0], **common)
        run = f"{kind}:{','.join(layers)}:{json.dumps({**common, **stimulus_params}, sort_keys=True)}"
        for motif in found:
            motif.members = {f"{model}/{name}": info for name, info in motif.members.items()}
        run_id = hashlib.sha256(run.encode()).hexdigest()[:12]
        rows = [{"uid": f"{model}/motif/{run_id}/{i}", "kind": m.kind, "score": float(m.score),
                 "p_value": float(m.p_value), "params": json.dumps(m.params, default=float), "layers": layers,
                 "members": [{"uid": uid, "role": info["role"], "orientation": info.get("orientation")}
                             for uid, info in m.members.items()]} for i, m in enumerate(found)]
        self.store.write(cypher.DELETE_MOTIFS, model=model, run=run)
        if rows:
            self.store.write(cypher.CREATE_MOTIFS, rows=rows, model=model, run=run)
        return found

    def _flip_chain(self, model: str, layers: list[str], from_image: bool, net, stimulus_params: dict,
                    common: dict) -> "list[Motif]":
        """:func:`~circuitatlas.analysis.motifs.flip_equivariance` along consecutive layers, each
        layer's candidate pairs giving the mirror map of its units for the next; the image's map
        is the identity, any other first layer's comes from its tuning."""
        from circuitatlas.analysis import motifs as M

        mirror = None
        if not from_image:
            mirror = M.mirror_map_from_tuning(self._layer_tuning(model, layers[0], net, stimulus_params))
        pair_keys = ("min_similarity", "min_margin", "min_selectivity", "orientation_tolerance")
        pair_params = {k: v for k, v in common.items() if k in pair_keys}
        found = []
        for src, dst in zip(layers, layers[1:]):
            kernels = self._layer_weights(model, src, dst, kernels=True)
            tuning = self._layer_tuning(model, dst, net, stimulus_params)
            found += M.flip_equivariance(kernels, mirror, tuning, (src, dst), **common)
            pairs = M.mirror_pairs(kernels, mirror, tuning, **pair_params)
            mirror = M.mirror_map(kernels.shape[0], [(j, k) for _, j, k in pairs])
        return found

    def motifs(self, model: str) -> list[dict]:
        """Stored motifs of a model with members, roles, scores and p-values."""
        from circuitatlas.queries import cypher

        return self.store.read(cypher.LIST_MOTIFS, model=model)

    def search(self, pattern: "dict | str", model: str, kind: str = "direct") -> list[dict[str, str]]:
        """Matches of a signed pattern (a dict, or a name in ``queries.patterns.PATTERNS``):
        one dict pattern-node -> neuron uid per match. See :mod:`circuitatlas.queries.patterns`."""
        from circuitatlas.queries.patterns import search

        return search(self.store, pattern, model, kind)


def _contact_sheet(images: "list", path, columns: int = 16, cell: int = 64) -> None:
    """All images in a grid, ``cell`` px each, saved to ``path``."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = max(1, (len(images) + columns - 1) // columns)
    sheet = Image.new("RGB", (min(columns, max(1, len(images))) * cell, rows * cell), "white")
    for i, file in enumerate(images):
        with Image.open(file) as img:
            sheet.paste(img.convert("RGB").resize((cell, cell)), ((i % columns) * cell, (i // columns) * cell))
    sheet.save(path)
