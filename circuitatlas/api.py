"""The public Python API: :class:`Atlas`, one connection to a circuit graph, a thin facade over
the store, the ingest pipeline, the query helpers and the analysis jobs (:mod:`circuitatlas.jobs`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import networkx as nx
import numpy as np

from circuitatlas import names
from circuitatlas.analysis.motifs import Findings
from circuitatlas.config import ConnectionSettings, resolve_connection, settled
from circuitatlas.lifecycle import drop_model
from circuitatlas.queries import aliases, connectivity, models, paths, patterns, subgraph, weights
from circuitatlas.queries import editing as edits
from circuitatlas.queries import universality as analogues
from circuitatlas.queries.connectivity import Adjacency
from circuitatlas.queries.criteria import Units, UnitsLike
from circuitatlas.store import Closing, ModelSummary, Store

# The jobs that run networks (ingest, SVD, tuning, examples, feature visualization, motifs,
# comparisons, edits) import torch, which takes seconds: each method imports its job on first use,
# so that reading the graph (the query helpers, `circuitatlas query`, `models`, `serve`) never waits for it.
if TYPE_CHECKING:
    from torch import nn

    from circuitatlas.analysis.examples import Example
    from circuitatlas.analysis.featurevis import RenderSettings
    from circuitatlas.analysis.tuning import TuningResult
    from circuitatlas.ingest.job import IngestJob
    from circuitatlas.ingest.plan import IngestPlan
    from circuitatlas.ingest.writer import Progress
    from circuitatlas.jobs.editing import EditEffect
    from circuitatlas.jobs.svd import SvdAnalysis
    from circuitatlas.jobs.universality import CompareSettings, Comparison

__all__ = ["Atlas"]


class Atlas(Closing):
    """A circuit graph in Neo4j.

    Open one with :meth:`connect` and use it as a context manager::

        with Atlas.connect() as atlas:          # NEO4J_* settings, else the local server
            atlas.cypher("MATCH (m:Model) RETURN m.id AS id")

    Every argument that names a layer or a unit takes any of its names: the canonical module
    path or an alias stored at ingest (InceptionV1: ``3b`` and ``mixed3b``, ``3b:379``).
    """

    MOTIF_KINDS = names.MOTIF_KINDS

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def connect(cls, uri: str | None = None, *, settings: ConnectionSettings | None = None,
                **fields: str | Path | None) -> "Atlas":
        """Connect with explicit settings (``uri``, a ConnectionSettings, or its other fields ``user``,
        ``password``, ``database``, ``state_dir`` as keywords), else NEO4J_URI/USER/PASSWORD/DATABASE,
        else the local server started by ``circuitatlas db start`` (its password is read for you)."""
        if uri is not None:
            fields["uri"] = uri
        return cls(Store.open(resolve_connection(settings, **fields)))

    def close(self) -> None:
        self.store.close()

    # -- the graph --------------------------------------------------------------------------
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

    def model_meta(self, model: str) -> dict:
        """The Model node's properties (raises NotFound for an unknown id)."""
        return models.model_meta(self.store, model)

    def layers(self, model: str, observed: bool = False) -> list[dict[str, Any]]:
        """The model's layers in topological order (``name``, ``kind``, ``channels``, ``shape``,
        ``observed``, ``featurevis_sheet``); with ``observed`` only the observation layers."""
        return models.model_layers(self.store, model, observed)

    def resolve_layer(self, model: str, name: str) -> str:
        """The canonical name of layer ``name`` (itself, or the layer it is an alias of, e.g.
        ``3b`` -> ``mixed3b``); NotFound with the closest names otherwise."""
        return aliases.resolve_layer(self.store, model, name)

    def neuron(self, model: str, unit: str) -> dict[str, Any]:
        """One neuron's properties (``uid``, ``layer``, ``channel``, ``branch``, annotations) by
        unit, ``"<layer>:<channel>"`` with any name of the layer (``3b:379``), or by uid."""
        return models.neuron(self.store, aliases.resolve_unit(self.store, model, unit))

    def drop(self, model: str) -> None:
        """Delete one model's subgraph (in batches; raises NotFound for an unknown id)."""
        drop_model(self.store, model)

    # -- networks ----------------------------------------------------------------------------
    def ingest(self, source: str | nn.Module, name: str, *, job: IngestJob | None = None,
               progress: Progress | None = None, **settings: Any) -> ModelSummary:
        """Ingest a network as model ``name``.

        ``source`` is a torchvision model name, ``inceptionv1`` (Lucid's InceptionV1: ``weights``
        None downloads the published weights, ``"none"`` is random, or a local copy's path),
        ``timm:NAME``, a checkpoint path, ``zoo:NAME``, ``planted:KIND[@SEED]``, a built-in
        architecture name, or an ``nn.Module``. The settings
        are an :class:`~circuitatlas.ingest.job.IngestJob`, or its fields as keywords
        (``weights``, ``arch``, ``input_size``, ``layers``, ``replace``, ``resume``, ``lenient``,
        ``trust_pickle``, ``bulk``) with the edge options (``direct``, ``expanded``, ``min_l2``,
        ``top_k_per_neuron``). An existing id is refused unless ``replace``; ``resume`` finishes
        an interrupted ingest without duplicates; ``bulk="auto"`` writes a large model into an
        empty local server by an offline ``neo4j-admin`` import. The layer aliases of the
        architecture are stored on its layers.
        """
        from circuitatlas.ingest.job import IngestJob
        from circuitatlas.jobs.ingest import ingest as run_ingest

        return run_ingest(self.store, source, name, settled(job, IngestJob.of, settings), progress)

    @staticmethod
    def dry_run(source: str | nn.Module, name: str, *, job: IngestJob | None = None, **settings: Any) -> IngestPlan:
        """What :meth:`ingest` with the same arguments would store (layers, neurons, direct edges
        exactly, expanded edges as an upper bound, store size and time estimates); writes nothing
        and needs no server."""
        from circuitatlas.ingest.job import IngestJob
        from circuitatlas.jobs.ingest import dry_run

        return dry_run(source, name, settled(job, IngestJob.of, settings))

    def module(self, model: str, trust_pickle: bool = False, edit: str | None = None) -> nn.Module:
        """Rebuild the network of a stored model from what ingest recorded (source, arch, weights),
        checked against the fingerprint of the weights ingested; with ``edit`` the stored edit of
        that name applied to a copy (:meth:`create_edit`)."""
        from circuitatlas.jobs import editing

        return editing.edited_network(self.store, model, edit, trust_pickle=trust_pickle)

    # -- reading weights ---------------------------------------------------------------------
    def weights(self, model: str, src_layer: str, dst_layer: str, kind: str = "direct") -> np.ndarray:
        """The (out, in, kh, kw) kernels from ``src_layer`` to ``dst_layer``, read from the graph.
        ``kind`` is "direct" (WEIGHT edges) or "expanded" (EXPANDED edges)."""
        src_layer, dst_layer = aliases.resolve_layers(self.store, model, [src_layer, dst_layer])
        return weights.read_weights(self.store, model, src_layer, dst_layer, kind)

    def subgraph(self, model: str, layers: Iterable[str], kind: str = "expanded", min_l2: float = 0.0,
                 top_k: int | None = None) -> nx.DiGraph:
        """Neurons of ``layers`` and the ``kind`` edges among them, with neuron properties on nodes
        and kernels as numpy arrays on edges (strongest ``top_k`` per target when given)."""
        return subgraph.subgraph(self.store, model, aliases.resolve_layers(self.store, model, layers), kind,
                                 min_l2, top_k)

    def search(self, pattern: dict | str, model: str, kind: str = "direct", *, layers: Iterable[str] | None = None,
               limit: int | None = None, timeout: float | None = patterns.SEARCH_TIMEOUT) -> list[dict[str, str]]:
        """Matches of a signed pattern (a dict, or a name in ``queries.patterns.PATTERNS``):
        one dict pattern-node -> neuron uid per match; nodes the pattern pins to no layer are
        looked for in ``layers`` (all when None); the first ``limit`` matches; a one-line error
        after ``timeout`` seconds. See :mod:`circuitatlas.queries.patterns`."""
        if layers is not None:
            layers = aliases.resolve_layers(self.store, model, layers)
        return patterns.search(self.store, aliases.resolve_pattern(self.store, model, pattern), model, kind,
                               layers, limit, timeout)

    def count_matches(self, pattern: dict | str, model: str, kind: str = "direct", *,
                      layers: Iterable[str] | None = None, timeout: float | None = patterns.SEARCH_TIMEOUT) -> int:
        """How many matches :meth:`search` would return, counted in the server."""
        if layers is not None:
            layers = aliases.resolve_layers(self.store, model, layers)
        return patterns.count_matches(self.store, aliases.resolve_pattern(self.store, model, pattern), model, kind,
                                      layers, timeout)

    # -- analyses (each written back onto the graph) -----------------------------------------
    def analyze_svd(self, model: str, src_layer: str, dst_layer: str, k: int | None = None, kind: str = "auto",
                    plot: str | None = None) -> SvdAnalysis:
        """SVD co-clustering of |W| from ``src_layer`` to ``dst_layer`` (expanded weights when
        stored, else direct), written back as ``svd_in``/``svd_out`` coordinates and
        ``cluster_in``/``cluster_out`` ids plus ``(:Cluster)`` nodes joined by ``IN_CLUSTER``;
        a cluster x branch report for sides made of branches; ``plot`` saves a PNG."""
        from circuitatlas.jobs import svd

        return svd.run_svd(self.store, model, src_layer, dst_layer, k, kind, plot)

    def annotate_tuning(self, model: str, layer: str, channels: Iterable[int] | None = None,
                        stimulus: str | None = None, n_angles: int = 64, module: nn.Module | None = None,
                        **stimulus_params) -> TuningResult:
        """Radial tuning of a layer's units, stored on each neuron as ``orientation`` (preferred
        angle, degrees), ``orientation_selectivity`` (vector strength) and ``tuning`` (responses
        over ``tuning_angles``). With no ``stimulus``, stimulus sizes or channels named, the probe
        battery (:mod:`circuitatlas.analysis.probes`, 32 angles) is measured and stored on the layer
        (``probe``, ``probe_battery``) and its neurons (``probe_responses``), and the most selective
        probe's tuning is stored. The network is rebuilt from the graph unless ``module`` is given."""
        from circuitatlas.jobs import tuning

        return tuning.annotate_tuning(self.store, model, layer, channels, stimulus, n_angles, module,
                                      **stimulus_params)

    def annotate_examples(self, model: str, layer: str, images: str | Path | np.ndarray,
                          channels: Iterable[int] | None = None, k: int = 9, module: nn.Module | None = None,
                          out_dir: str | None = None) -> dict[int, list[Example]]:
        """Top-``k`` dataset examples of each unit over ``images`` (a folder, or an (N, H, W, 3)
        array such as a stimulus sweep), saved as PNG crops; each neuron gets ``examples`` (paths)
        and ``examples_activation``."""
        from circuitatlas.jobs import examples

        return examples.annotate_examples(self.store, model, layer, images, channels, k, module, out_dir)

    def featurevis(self, model: str, layer: str, channels: Iterable[int] | None = None, **options: Any) -> dict:
        """Render one image per channel of ``layer``: :meth:`featurevis_layers` for one layer."""
        return self.featurevis_layers(model, [layer], channels, **options)[0]

    def featurevis_layers(self, model: str, layers: Iterable[str], channels: Iterable[int] | None = None, *,
                          settings: RenderSettings | None = None, device: str | None = None,
                          chunk: int | None = None, module: nn.Module | None = None,
                          progress: Callable[[int], None] | None = None, diversity: int = 0,
                          **render: Any) -> list[dict]:
        """One image per channel of each layer (``settings``, or its fields ``steps``, ``size``,
        ``lr``, ``seed``, ``param``, ``transforms``, ``start`` as keywords; ``diversity`` N adds
        N differing images per unit as ``featurevis_diverse``), stored as ``featurevis`` (PNG path),
        ``featurevis_activation`` and ``featurevis_key`` on each neuron, and a contact sheet per
        layer. Units already rendered with these settings and weights are skipped (or linked
        again); each batch is stored as soon as it is rendered. ``progress(n)`` counts channels.
        Returns one report per layer, in network order (``rendered``, ``skipped``, of which
        ``linked``, ``sheet``, ``channels``)."""
        from circuitatlas.analysis.featurevis import RenderSettings
        from circuitatlas.jobs import featurevis

        return featurevis.featurevis(self.store, model, layers, channels, settled(settings, RenderSettings, render),
                                     device, chunk, module, progress, diversity)

    def decomposed(self, model: str, layer: str, channel: int, upstream: str, *, min_share: float = 0.1,
                   settings: RenderSettings | None = None, module: nn.Module | None = None, **render: Any) -> dict:
        """Decomposed feature visualisation of ``layer:channel`` over ``upstream``: one image per
        position of its expanded weights, each maximising the dot product with the weight vector
        there; saved as a grid and linked on the neuron as ``decomposed`` (JSON: upstream -> path)."""
        from circuitatlas.analysis.featurevis import RenderSettings
        from circuitatlas.jobs import decomposed

        return decomposed.decomposed(self.store, model, layer, channel, upstream,
                                     settled(settings, RenderSettings, render), min_share, module)

    def find_motifs(self, kind: str, model: str, layers: Iterable[str], *, n_perm: int = 200, alpha: float = 0.01,
                    seed: int = 0, stimulus_params: dict | None = None, module: nn.Module | None = None,
                    **params) -> Findings:
        """Run a motif detector of :mod:`circuitatlas.analysis.motifs` on stored weights and write
        each finding as ``(:Motif {uid, kind, model, score, p_value, params, layers})`` with
        ``(:Neuron)-[:IN_MOTIF {role, orientation}]->(:Motif)``; re-running the same kind, layers
        and parameters replaces the earlier result. Kinds and layers:
        ``rotation_equivariance`` [A, B], ``union_over_cases`` [cases, pathways, union],
        ``superposition`` [A, B], ``flip_equivariance`` [A, B, ...] (a chain: each layer's mirror
        pairs map its units for the next; start it at ``input``, whose mirror map is the identity,
        else the first layer's map comes from its tuning). Tuning comes from each layer's probe
        battery (stored, or measured and stored now): the most selective probe, of those with a
        direction for ``rotation_equivariance``; ``stimulus_params`` name a stimulus instead
        (``{"stimulus": "edge"}``, ``{"radius": 5}`` for curves). Members come back as neuron
        uids. The result's ``diagnostics`` say how far each stage got (also stored on a
        ``(:MotifRun)`` node, :meth:`motif_runs`)."""
        from circuitatlas.jobs import motifs

        return motifs.find_motifs(self.store, kind, model, layers, n_perm=n_perm, alpha=alpha, seed=seed,
                                  stimulus_params=stimulus_params, module=module, **params)

    def motifs(self, model: str) -> list[dict]:
        """Stored motifs of a model with members, roles, scores and p-values."""
        return models.list_motifs(self.store, model)

    def motif_runs(self, model: str) -> list[dict]:
        """Detector runs of a model, newest first: kind, layers, number found and diagnostics."""
        return models.motif_runs(self.store, model)

    # -- universality: units and families matched across models --------------------------
    def compare(self, model_a: str, model_b: str, layer_a: str | Iterable[str], layer_b: str | Iterable[str],
                images: str | Path | None = None, *, settings: CompareSettings | None = None,
                modules: tuple[nn.Module | None, nn.Module | None] = (None, None),
                progress: Callable[[int], None] | None = None, **options: Any) -> Comparison:
        """Match the units of ``layer_a`` of ``model_a`` with those of ``layer_b`` of ``model_b``
        (or each pair of two equally long lists) by the correlation of their responses to a
        shared probe set: the stimulus battery and the images under ``images`` (``featurevis=True``:
        both layers' stored renders too). Each unit's best match either way gets a p-value against
        random-init networks of B's architecture; those under ``alpha`` are stored as
        ``(:Neuron)-[:ANALOGOUS {score, p_value, mutual, best_for, method, analysis}]->(:Neuron)``,
        the layers' linear CKA as ``(:Layer)-[:SIMILAR {cka, cka_p, cka_random, matched}]->(:Layer)``
        and stored equivariant families aligned as ``(:Motif)-[:ANALOGOUS]->(:Motif)``. Re-running
        a layer pair replaces it. ``settings`` is a :class:`~circuitatlas.jobs.universality.CompareSettings`
        or its fields as keywords (``null_models``, ``alpha``, ``n_angles``, ``image_limit``...)."""
        layers_a = [layer_a] if isinstance(layer_a, str) else list(layer_a)
        layers_b = [layer_b] if isinstance(layer_b, str) else list(layer_b)
        from circuitatlas.jobs import universality
        from circuitatlas.jobs.universality import CompareSettings

        return universality.compare(self.store, model_a, model_b, layers_a, layers_b, images,
                                    settled(settings, CompareSettings, options), modules, progress)

    def analogues(self, unit: str, model: str | None = None) -> list[dict[str, Any]]:
        """The units of other models stored as ANALOGOUS to ``unit`` (a uid, or ``layer:channel``
        of ``model``), best score first."""
        uid = unit if model is None else aliases.resolve_unit(self.store, model, unit)
        return analogues.analogues(self.store, uid)

    def layer_similarity(self, models: Iterable[str]) -> list[dict[str, Any]]:
        """Every stored layer-to-layer CKA between ``models`` (SIMILAR edges)."""
        return analogues.layer_similarity(self.store, list(models))

    def family_analogues(self, models: Iterable[str]) -> list[dict[str, Any]]:
        """Every stored family-to-family match between ``models`` with its unit pairs."""
        return analogues.family_analogues(self.store, list(models))

    # -- circuit editing: edits as data, applied to a copy of the network -----------------------
    def create_edit(self, model: str, name: str, *, ablate: Iterable[str] = (), ablate_where: str | None = None,
                    mode: str = "zero", images: str | Path | None = None, edges: Iterable[tuple] = (),
                    edges_where: str | None = None, scale: float = 0.0, kernels: dict | None = None,
                    replace: dict[str, tuple[np.ndarray, float]] | None = None,
                    replace_from: dict[str, str] | None = None, params: dict | None = None,
                    description: str = "", module: nn.Module | None = None) -> dict[str, Any]:
        """Store a named edit of ``model`` as ``(:Edit {uid, name, model, ...})`` with
        ``-[:ABLATES {mode, mean}]->``, ``-[:EDITS_EDGE {src, factor | kernel}]->`` and
        ``-[:REPLACES {kernel, bias, source}]->`` its neurons. Units to ablate: ``ablate``
        (``layer:channel`` or uids) and/or ``ablate_where``, a read-only Cypher predicate over ``n``;
        ``mode`` "zero" or "mean" (each unit's mean map over ``images``, else the stimulus
        battery). Edges (direct WEIGHT edges, the real weights): ``edges`` as (source, target)
        pairs, scaled by ``scale``, or (source, target, kernel); ``kernels`` {(source, target):
        kernel}; ``edges_where`` a predicate over ``(a)-[w]->(b)`` (``params`` in scope):
        ``"w.sum < 0 AND a.layer = 'mid'"``. ``replace`` {unit: (kernel (in, kh, kw), bias)} or
        ``replace_from`` {unit: another model's neuron uid}: a hand-set unit. Checked against the
        network first: a bad edit writes nothing; an existing name is refused. The stored
        weights never change."""
        from circuitatlas.jobs import editing

        return editing.create_edit(self.store, model, name, ablate=ablate, ablate_where=ablate_where, mode=mode,
                                   images=images, edges=edges, edges_where=edges_where, scale=scale, kernels=kernels,
                                   replace=replace, replace_from=replace_from, params=params,
                                   description=description, module=module)

    def edit_effect(self, model: str, name: str, images: str | Path | None = None, *, n_control: int = 5,
                    stimulus_params: dict | None = None, seed: int = 0, k: int = 9, downstream: int = 16,
                    limit: int | None = None, module: nn.Module | None = None,
                    progress: Callable[[str], None] | None = None) -> EditEffect:
        """Measure and store what edit ``name`` changes (:class:`~circuitatlas.jobs.editing.EditEffect`):
        per unit read (edge targets, replaced and ablated units, and the ``downstream`` units the
        ablated ones feed most) the tuning before and after (``stimulus_params``, default a curve)
        with the echo at preferred + 180 degrees and its activation on ``images`` (or the stimulus
        battery) and on its top ``k`` examples; per image the top-5 classes before and after,
        accuracy and loss when subfolders are class indices; the same under ``n_control`` random
        edits of the same size (mean and range in the summary). Stored on the Edit as ``effect``
        (JSON) and ``effect_summary``; ``.figure()`` draws the tuning curves."""
        from circuitatlas.jobs import editing

        return editing.effect(self.store, model, name, images, stimulus_params=stimulus_params,
                              n_control=n_control, seed=seed, k=k, downstream=downstream, limit=limit,
                              module=module, progress=progress)

    def edits(self, model: str) -> list[dict[str, Any]]:
        """The model's stored edits with what each touches and its effect summary."""
        self.model_meta(model)
        return edits.list_edits(self.store, model)

    def edit(self, model: str, name: str) -> dict[str, Any]:
        """One stored edit: its properties and every ablation, edge edit and replacement."""
        return edits.read_edit(self.store, model, name)

    def delete_edit(self, model: str, name: str) -> None:
        """Delete a stored edit (nothing else changes)."""
        edits.delete_edit(self.store, model, name)

    def faithfulness(self, model: str, units: Iterable[str] | None = None, *, motif: str | None = None,
                     **options: Any) -> dict[str, Any]:
        """Keep a circuit's units (or a stored motif's), mean-ablate the rest of their layers and
        measure the share of its targets' activation that survives on their top examples and
        preferred stimuli (``targets``, ``layers``, ``images``, ``stimulus_params``, ``k``); stored
        on the motif as ``faithfulness``. See :func:`circuitatlas.jobs.editing.faithfulness`."""
        from circuitatlas.jobs import editing

        return editing.faithfulness(self.store, model, units, motif=motif, **options)

    # -- querying without Cypher (circuitatlas.queries.connectivity) -------------------------
    # Units: a Units criteria object, one neuron uid or a list of uids. Every helper has a
    # ``timeout`` (seconds for the whole call) and a ``limit`` (rows; Truncated warns when hit).
    def units(self, criteria: UnitsLike | None = None, *, limit: int = connectivity.DEFAULT_LIMIT,
              timeout: float | None = connectivity.DEFAULT_TIMEOUT, **fields: Any) -> list[dict[str, Any]]:
        """Neurons by criteria: a :class:`~circuitatlas.queries.criteria.Units`, uid(s), or its
        fields as keywords (``atlas.units(model="m", layers="inception3b", min_selectivity=0.5)``)."""
        return connectivity.units(self.store, settled(criteria, Units, fields), limit, timeout)

    def adjacency(self, sources: UnitsLike, targets: UnitsLike, kind: str = "direct", **options: Any) -> Adjacency:
        """Edges from ``sources`` to ``targets`` as three tables (``min_rel``, ``min_abs``, ``sign``,
        ``kernels``, ``limit``, ``timeout``); see :func:`circuitatlas.queries.connectivity.adjacency`."""
        return connectivity.adjacency(self.store, sources, targets, kind, **options)

    def paths(self, source: str, target: str, max_len: int = 3, k: int = 10, **options: Any) -> list[dict[str, Any]]:
        """The ``k`` strongest paths of at most ``max_len`` edges (``kind``, ``weight`` "product" or
        "sum", ``min_len``, ``min_rel``, ``limit``, ``timeout``); see :func:`circuitatlas.queries.paths.paths`."""
        return paths.paths(self.store, source, target, max_len, k, **options)

    def common_inputs(self, units: UnitsLike, min_rel: float = 0.0, **options: Any) -> list[dict[str, Any]]:
        """Neurons feeding all (or ``min_shared``) of ``units``, each edge over ``min_rel`` of that unit's strongest input."""
        return connectivity.common_inputs(self.store, units, min_rel, **options)

    def common_outputs(self, units: UnitsLike, min_rel: float = 0.0, **options: Any) -> list[dict[str, Any]]:
        """Neurons fed by all (or ``min_shared``) of ``units``, each edge over ``min_rel`` of that unit's strongest output."""
        return connectivity.common_outputs(self.store, units, min_rel, **options)

    def neighbours(self, unit: str, side: str = "inputs", k: int | None = 10, **options: Any) -> list[dict[str, Any]]:
        """``unit``'s ``k`` strongest inputs or outputs (``min_rel``, ``kind``, ``sign``, ``timeout``);
        see :func:`circuitatlas.queries.connectivity.neighbours`."""
        return connectivity.neighbours(self.store, unit, side, k, **options)

    def similar_units(self, unit: str, by: str = "inputs", k: int = 10, **options: Any) -> list[dict[str, Any]]:
        """The ``k`` units of ``unit``'s layer with the most similar ``by`` profile ("inputs",
        "outputs", "kernels"; cosine over aligned partners)."""
        return connectivity.similar_units(self.store, unit, by, k, **options)

    def circuit(self, target: str, depth: int = 2, min_rel: float = 0.3, **options: Any) -> nx.DiGraph:
        """The upstream circuit of ``target``: inputs over ``min_rel`` of each unit's strongest,
        ``depth`` steps back, as a networkx graph with kernels."""
        return paths.circuit(self.store, target, depth, min_rel, **options)
