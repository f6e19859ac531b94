"""The ``circuitatlas`` admin CLI: each command parses, calls one library function, prints."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from circuitatlas.errors import CircuitAtlasError
from circuitatlas.localserver import DEFAULT_HEAP, DEFAULT_PAGECACHE, LocalServer


class CliContext:
    """Connection options from the group; the Atlas is opened on first use and closed at exit."""

    def __init__(self, ctx: click.Context, **options: Any) -> None:
        self._ctx = ctx
        self.options = options
        self._atlas = None

    @property
    def server(self) -> LocalServer:
        return LocalServer(self.options["state_dir"])

    @property
    def atlas(self):
        if self._atlas is None:
            from circuitatlas.api import Atlas

            opts = self.options
            self._atlas = self._ctx.with_resource(
                Atlas.connect(opts["uri"], opts["user"], opts["password"], opts["database"], opts["state_dir"])
            )
        return self._atlas


class _Group(click.Group):
    """Prints circuitatlas errors as one line with exit code 1 (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CircuitAtlasError, ValueError) as exc:  # ValueError: an analysis refused its input
            if ctx.obj is not None and ctx.obj.options.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _echo_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("(no rows)")
        return
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    click.echo("  ".join(col.ljust(w) for col, w in zip(columns, widths)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _cell(value: Any, limit: int = 60) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@click.group(cls=_Group)
@click.option("--uri", envvar="NEO4J_URI", help="Neo4j URI (bolt://, neo4j://, neo4j+s://); default: the local server.")
@click.option("--user", envvar="NEO4J_USER", help="Neo4j user (default neo4j).")
@click.option("--password", envvar="NEO4J_PASSWORD", help="Neo4j password (default: the local server's).")
@click.option("--database", envvar="NEO4J_DATABASE", help="Database name (default: the server's default).")
@click.option("--state-dir", envvar="CIRCUITATLAS_STATE_DIR", type=click.Path(path_type=Path),
              help="State dir of the local server (store, logs, credentials).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="circuitatlas")
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """circuitatlas: circuits of trained CNNs as a Neo4j graph."""
    ctx.obj = CliContext(ctx, **options)


# -- db --------------------------------------------------------------------------------------
@main.group(cls=_Group)
def db() -> None:
    """The local Neo4j server (no Docker needed) and the schema."""


@db.command("start")
@click.option("--port", type=int, envvar="CIRCUITATLAS_NEO4J_PORT", help="Bolt port (default 7687, or a free one).")
@click.option("--heap", default=DEFAULT_HEAP, envvar="CIRCUITATLAS_NEO4J_HEAP", show_default=True, help="JVM heap.")
@click.option("--pagecache", default=DEFAULT_PAGECACHE, envvar="CIRCUITATLAS_NEO4J_PAGECACHE", show_default=True,
              help="Neo4j page cache.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait until Bolt answers.")
@click.pass_obj
def db_start(obj: CliContext, port: int | None, heap: str, pagecache: str, timeout: float) -> None:
    """Start the local Neo4j (fetching its jars with Maven the first time)."""
    server = obj.server
    if not server.jars.ready():
        click.echo(f"fetching Neo4j {server.jars.version} jars with Maven into {server.jars.root} (once)...", err=True)
    began = time.monotonic()
    state, started = server.start(port=port, heap=heap, pagecache=pagecache, timeout=timeout)
    if started:
        click.echo(f"Neo4j started on {state.uri} in {time.monotonic() - began:.1f}s (state: {server.state_dir})")
    else:
        click.echo(f"Neo4j is already running on {state.uri} (pid {state.pid}); nothing to do")


@db.command("stop")
@click.pass_obj
def db_stop(obj: CliContext) -> None:
    """Stop the local Neo4j cleanly."""
    click.echo("Neo4j stopped" if obj.server.stop() else "Neo4j was not running")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def db_status(obj: CliContext, as_json: bool) -> None:
    """Running or stopped, version, URI and store size of the local Neo4j."""
    status = obj.server.status()
    if as_json:
        _echo_json(asdict(status))
        return
    state = "running" if status.running else "stopped"
    where = f" on {status.uri} (pid {status.pid})" if status.running else ""
    click.echo(f"Neo4j {status.version} {state}{where}")
    click.echo(f"state dir: {status.state_dir}, store {_human_bytes(status.store_bytes)}")


@db.command("wipe")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
def db_wipe(obj: CliContext, yes: bool) -> None:
    """Stop the local Neo4j and delete its whole store."""
    server = obj.server
    if not yes:
        click.confirm(f"Delete the local Neo4j store in {server.home}?", abort=True)
    server.wipe()
    click.echo(f"wiped {server.home}; `circuitatlas db start` makes a fresh store")


@db.command("init")
@click.pass_obj
def db_init(obj: CliContext) -> None:
    """Create the constraints and indexes (idempotent)."""
    obj.atlas.init_schema()
    click.echo("schema ready")


# -- models ----------------------------------------------------------------------------------
@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def models_cmd(obj: CliContext, as_json: bool) -> None:
    """List the models in the graph with status and node/edge counts."""
    rows = [asdict(m) for m in obj.atlas.models()]
    _echo_json(rows) if as_json else _echo_table(rows)


@main.command("layers")
@click.argument("model")
@click.option("--observed", is_flag=True, help="Only the observation layers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def layers_cmd(obj: CliContext, model: str, observed: bool, as_json: bool) -> None:
    """List a model's layers in topological order."""
    rows = obj.atlas.layers(model, observed=observed)
    _echo_json(rows) if as_json else _echo_table(rows)


@main.command("drop")
@click.argument("model")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
def drop_cmd(obj: CliContext, model: str, yes: bool) -> None:
    """Delete one model's subgraph (in batches)."""
    if not yes:
        click.confirm(f"Delete model {model!r} and all its neurons and edges?", abort=True)
    obj.atlas.drop(model)
    click.echo(f"dropped {model}")


class _Bar:
    """A tqdm progress bar over edges written (the library's Progress callbacks)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None

    def start(self, total_edges: int) -> None:
        self.bar = self._tqdm(total=total_edges, unit="edge", unit_scale=True, file=sys.stderr,
                              dynamic_ncols=True, disable=None)

    def part(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_description(name[:40])

    def edges(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _ingest_summary(summary: Any, seconds: float) -> str:
    return (f"{summary.id}: {summary.status}, {summary.layers} layers, {summary.neurons} neurons, "
            f"{summary.weight_edges} WEIGHT and {summary.expanded_edges} EXPANDED edges in {seconds:.1f}s"
            + (" (bulk: offline neo4j-admin import)" if summary.ingest_path == "bulk" else ""))


@main.command("ingest")
@click.argument("source")
@click.option("--name", required=True, help="Model id in the graph.")
@click.option("--weights", default="none", show_default=True,
              help="torchvision weights: DEFAULT, an enum name (IMAGENET1K_V1) or none (seeded random).")
@click.option("--arch", help="Architecture of a state-dict checkpoint (torchvision or built-in name).")
@click.option("--input-size", default="3,224,224", show_default=True, help="C,H,W traced.")
@click.option("--layers", help="Comma-separated observation layers for expanded weights (default: top-level blocks).")
@click.option("--replace", is_flag=True, help="Overwrite a model with this id.")
@click.option("--resume", is_flag=True, help="Finish an interrupted ingest of this id.")
@click.option("--lenient", is_flag=True, help="Skip unsupported ops with a warning instead of failing.")
@click.option("--no-direct", is_flag=True, help="Do not store direct WEIGHT edges.")
@click.option("--no-expanded", is_flag=True, help="Do not store EXPANDED edges.")
@click.option("--min-l2", default=0.0, show_default=True, help="Drop edges whose kernel l2 norm is below this.")
@click.option("--top-k-per-neuron", type=int, help="Keep only the k strongest inputs of each neuron (per source layer).")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling a whole module (runs code from the file).")
@click.option("--bulk", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Offline neo4j-admin import into an empty local server (auto: for 500k+ edges).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def ingest_cmd(obj: CliContext, source: str, name: str, weights: str, arch: str | None, input_size: str,
               layers: str | None, replace: bool, resume: bool, lenient: bool, no_direct: bool, no_expanded: bool,
               min_l2: float, top_k_per_neuron: int | None, trust_pickle: bool, bulk: str, as_json: bool) -> None:
    """Ingest a network: a torchvision name, a checkpoint file, or a built-in architecture."""
    try:
        size = tuple(int(x) for x in input_size.split(","))
        assert len(size) == 3
    except (ValueError, AssertionError):
        raise click.BadParameter("expected C,H,W such as 3,224,224", param_hint="--input-size") from None
    if replace and resume:
        raise click.UsageError("--replace and --resume exclude each other")
    bar = _Bar()
    began = time.monotonic()
    try:
        summary = obj.atlas.ingest(
            source, name, weights=weights, arch=arch, input_size=size,
            layers=layers.split(",") if layers else None, replace=replace, resume=resume, lenient=lenient,
            direct=not no_direct, expanded=not no_expanded, min_l2=min_l2, top_k_per_neuron=top_k_per_neuron,
            trust_pickle=trust_pickle, progress=bar, bulk=bulk,
        )
    finally:
        bar.close()
    _echo_json(asdict(summary)) if as_json else click.echo(_ingest_summary(summary, time.monotonic() - began))


@main.group(cls=_Group)
def analyze() -> None:
    """Analyses whose results are written back onto the graph."""


@analyze.command("toy-superposition")
@click.option("--features", default=200, show_default=True, help="Features n of the sparsity sweep.")
@click.option("--hidden", default=20, show_default=True, help="Hidden dimensions m.")
@click.option("--densities", default=24, show_default=True, help="Models in the sweep (density 1 to 0.005).")
@click.option("--steps", default=4000, show_default=True, help="Adam steps per model.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Save the two plots (PNG) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def analyze_toy_cmd(features: int, hidden: int, densities: int, steps: int, seed: int, out_dir: str | None,
                    as_json: bool) -> None:
    """Toy Models of Superposition: sparsity sweep (D*, fractions) and two-feature phase diagram."""
    from pathlib import Path

    from circuitatlas.analysis import toy_superposition as T

    if not as_json:
        click.echo(f"training {densities} toy models ({features} features in {hidden} dims) and the "
                   "two-feature phase diagram on the CPU ...")
    sweep = T.sparsity_sweep(features, hidden, densities, steps=steps, seed=seed)
    phases = T.two_feature_phases(steps=min(steps, 3000), seed=seed)
    data = T.summary(sweep, phases)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        data["plots"] = [str(Path(out_dir) / "toy-sweep.png"), str(Path(out_dir) / "toy-phases.png")]
        T.plot_sweep(sweep).save(data["plots"][0])
        T.plot_phases(phases).save(data["plots"][1])
    if as_json:
        _echo_json(data)
        return
    click.echo(f"D* = m/||W||_F^2 on the plateau at 1 for 1/density in {data['plateau_1']}, "
               f"at 1/2 for {data['plateau_half']}")
    click.echo("features at each fraction D_i: " + ", ".join(f"{k}: {v}" for k, v in data["fractions"].items()))
    for density, row in zip(data["phases"]["density"], data["phases"]["phase"]):
        click.echo(f"  density {density:<7} " + " ".join({"not_represented": ".", "dedicated": "D",
                                                           "superposition": "S"}[p] for p in row))
    click.echo("  (columns: importance of feature 2 from 0.1 to 10; . not represented, D dedicated, S superposition)")
    for path in data.get("plots", []):
        click.echo(f"  plot: {path}")


@analyze.command("svd")
@click.argument("model")
@click.option("--from", "src", required=True, help="Source layer (e.g. inception3a).")
@click.option("--to", "dst", required=True, help="Target layer (e.g. inception3b).")
@click.option("-k", "k", type=int, help="Number of clusters (default: from the spectral gap).")
@click.option("--kind", type=click.Choice(["auto", "expanded", "direct"]), default="auto", show_default=True,
              help="Which weights: expanded when stored, else direct.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Save a PNG of both sides' layout.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def analyze_svd_cmd(obj: CliContext, model: str, src: str, dst: str, k: int | None, kind: str, plot: str | None,
                    as_json: bool) -> None:
    """SVD co-clustering of |W| between two layers (branch specialization)."""
    result = obj.atlas.analyze_svd(model, src, dst, k=k, kind=kind, plot=plot)
    data = svd_summary(result)
    if as_json:
        _echo_json(data)
        return
    click.echo(f"{model}: {src} -> {dst} ({data['kind']} weights): k={data['k']}, "
               f"singular values {', '.join(f'{v:.3f}' for v in data['singular_values'][:6])}")
    for side in ("input", "output"):
        sizes = data[f"{side}_cluster_sizes"]
        click.echo(f"  {side} clusters: " + ", ".join(f"#{i}: {n} units" for i, n in enumerate(sizes)))
    for side, rep in data["branch_reports"].items():
        click.echo(f"  {side} branches: cluster {rep['cluster']} holds {rep['count']} units of {rep['branch']} "
                   f"(p = {rep['p_value']:.2g})")
    if plot:
        click.echo(f"  plot: {plot}")


def svd_summary(result: Any) -> dict[str, Any]:
    """An SvdResult as plain data (for --json and the demo)."""
    import numpy as np

    reports = {}
    for side, rep in result.branch_reports.items():
        cluster, branch, count, p = rep.strongest()
        reports[side] = {"cluster": cluster, "branch": branch, "count": count, "p_value": p,
                         "branches": rep.branches, "counts": rep.counts.tolist(), "p_values": rep.p_values.tolist()}
    return {
        "kind": result.params.get("kind"), "analysis": result.params.get("analysis"), "k": result.k,
        "singular_values": [float(v) for v in result.singular_values[:20]],
        "input_clusters": result.input_clusters.tolist(), "output_clusters": result.output_clusters.tolist(),
        "input_cluster_sizes": np.bincount(result.input_clusters, minlength=result.k).tolist(),
        "output_cluster_sizes": np.bincount(result.output_clusters, minlength=result.k).tolist(),
        "branch_reports": reports,
    }


@main.group(cls=_Group)
def zoo() -> None:
    """Small CNNs trained here on generated tasks (cached)."""


@zoo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def zoo_list(as_json: bool) -> None:
    """The zoo's models, whether each is built, and its test accuracy."""
    from circuitatlas import zoo as zoo_module

    rows = zoo_module.list_models()
    _echo_json(rows) if as_json else _echo_table(
        [{k: r[k] for k in ("name", "task", "arch", "seed", "built", "accuracy", "description")} for r in rows])


@zoo.command("build")
@click.argument("name")
@click.option("--retrain", is_flag=True, help="Train again even if cached.")
def zoo_build(name: str, retrain: bool) -> None:
    """Train (or load from the cache) one zoo model; prints its accuracy and file."""
    from circuitatlas import zoo as zoo_module

    built = zoo_module.build(name, progress=lambda line: click.echo(line, err=True), retrain=retrain)
    click.echo(f"{name}: test accuracy {built.accuracy:.3f}, trained in {built.train_seconds:.0f}s, {built.path}")


@main.group(cls=_Group)
def annotate() -> None:
    """Characterise neurons and store the result on them."""


@annotate.command("tuning")
@click.argument("model")
@click.option("--layer", required=True, help="Layer whose units are measured.")
@click.option("--stimulus", default="curve", show_default=True, help="A stimulus with an orientation.")
@click.option("--angles", "n_angles", default=64, show_default=True, help="Number of orientations.")
@click.option("--radius", type=float, help="Curve radius in pixels (curve stimulus).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def annotate_tuning_cmd(obj: CliContext, model: str, layer: str, stimulus: str, n_angles: int,
                        radius: float | None, as_json: bool) -> None:
    """Radial tuning: stores orientation, orientation_selectivity and tuning on each neuron."""
    params = {"radius": radius} if radius is not None else {}
    result = obj.atlas.annotate_tuning(model, layer, stimulus=stimulus, n_angles=n_angles, **params)
    rows = [{"channel": c, "orientation": round(float(result.preferred_deg[i]), 1),
             "selectivity": round(float(result.selectivity[i]), 3)} for i, c in enumerate(result.channels)]
    if as_json:
        _echo_json(rows)
        return
    _echo_table(rows)
    click.echo(f"stored on {len(rows)} neurons of {model}/{layer}")


@annotate.command("examples")
@click.argument("model")
@click.option("--layer", required=True)
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False), help="Image folder.")
@click.option("-k", "k", default=9, show_default=True, help="Examples per neuron.")
@click.pass_obj
def annotate_examples_cmd(obj: CliContext, model: str, layer: str, images: str, k: int) -> None:
    """Top-k dataset examples per neuron, saved as PNG crops and linked as `examples`."""
    found = obj.atlas.annotate_examples(model, layer, images, k=k)
    click.echo(f"stored {k} examples for each of {len(found)} neurons of {model}/{layer}; see the "
               "neurons' `examples` property")


@main.command("featurevis")
@click.argument("model")
@click.option("--layer", "layer_spec", required=True,
              help="Layer to render (one image per channel); several comma-separated, or 'observed' for all "
                   "observation layers.")
@click.option("--channels", help="Comma-separated channels (default: all).")
@click.option("--steps", default=512, show_default=True)
@click.option("--size", default=128, show_default=True, help="Image size in pixels.")
@click.option("--lr", default=0.05, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@click.option("--chunk", type=int, help="Channels per batch (default: 64 on CPU, 512 on CUDA).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def featurevis_cmd(obj: CliContext, model: str, layer_spec: str, channels: str | None, steps: int, size: int,
                   lr: float, seed: int, device: str | None, chunk: int | None, as_json: bool) -> None:
    """Render feature visualisations of layers and store them on their neurons."""
    from tqdm import tqdm

    chosen = [int(c) for c in channels.split(",")] if channels else None
    known = {r["name"]: r for r in obj.atlas.layers(model)}
    if layer_spec == "observed":
        names = [name for name, r in known.items() if r["observed"] and r["kind"] != "input"]
    else:
        names = [name.strip() for name in layer_spec.split(",") if name.strip()]
    total = sum(len(chosen) if chosen else known.get(name, {}).get("channels") or 0 for name in names)
    with tqdm(total=total, unit="channel", file=sys.stderr, disable=None) as bar:
        reports = obj.atlas.featurevis_layers(model, names, chosen, steps=steps, size=size, lr=lr, seed=seed,
                                              device=device, chunk=chunk, progress=bar.update)
    if as_json:
        _echo_json(reports[0] if len(reports) == 1 else reports)
        return
    for report in reports:
        click.echo(f"{model}/{report['layer']}: rendered {report['rendered']}, skipped {report['skipped']} already "
                   f"rendered; contact sheet: {report['sheet']}")


@main.group(cls=_Group)
def motifs() -> None:
    """Circuit motif detection and signed pattern search."""


@motifs.command("find")
@click.argument("kind", type=click.Choice(["rotation_equivariance", "flip_equivariance", "union_over_cases",
                                          "superposition"]))
@click.argument("model")
@click.option("--layers", required=True,
              help="Comma-separated layers (2; 3 for union_over_cases; a chain of 2 or more for flip_equivariance, "
                   "best started at 'input').")
@click.option("--radius", type=float, help="Curve radius of the tuning stimuli (when tuning is measured).")
@click.option("--perm", "n_perm", default=200, show_default=True, help="Permutations of the null.")
@click.option("--alpha", default=0.01, show_default=True, help="Report motifs with p below this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def motifs_find(obj: CliContext, kind: str, model: str, layers: str, radius: float | None, n_perm: int,
                alpha: float, as_json: bool) -> None:
    """Detect motifs of one kind and store them as (:Motif) nodes."""
    stim = {"radius": radius} if radius is not None else None
    found = obj.atlas.find_motifs(kind, model, layers.split(","), n_perm=n_perm, alpha=alpha, stimulus_params=stim)
    rows = [{"kind": m.kind, "score": m.score, "p_value": m.p_value, "members": m.members, "params": m.params}
            for m in found]
    if as_json:
        _echo_json(rows)
        return
    click.echo(f"{len(found)} {kind} motif(s) in {model} at p < {alpha}")
    for m in found:
        roles = {}
        for info in m.members.values():
            roles[info["role"]] = roles.get(info["role"], 0) + 1
        click.echo(f"  score {m.score:.3f}, p = {m.p_value:.3g}: " + ", ".join(f"{n} {r}" for r, n in roles.items()))


@motifs.command("list")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def motifs_list(obj: CliContext, model: str, as_json: bool) -> None:
    """Motifs stored for a model."""
    rows = obj.atlas.motifs(model)
    if as_json:
        _echo_json(rows)
        return
    _echo_table([{"kind": r["kind"], "score": round(r["score"], 4), "p_value": round(r["p_value"], 4),
                  "layers": ",".join(r["layers"]), "members": len(r["members"])} for r in rows])


@motifs.command("search")
@click.argument("pattern")
@click.argument("model")
@click.option("--kind", type=click.Choice(["direct", "expanded"]), default="direct", show_default=True)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def motifs_search(obj: CliContext, pattern: str, model: str, kind: str, limit: int, as_json: bool) -> None:
    """Signed pattern search: a shipped pattern name or a JSON pattern."""
    parsed = json.loads(pattern) if pattern.lstrip().startswith("{") else pattern
    matches = obj.atlas.search(parsed, model, kind)
    if as_json:
        _echo_json(matches[:limit])
        return
    click.echo(f"{len(matches)} match(es)")
    _echo_table(matches[:limit])


@main.command("demo")
@click.option("--name", default="demo", show_default=True, help="Model id for the demo network.")
@click.pass_context
def demo_cmd(ctx: click.Context, name: str) -> None:
    """The main job: local Neo4j (unless NEO4J_URI is set), the demo network, ingest, analyses."""
    from circuitatlas.demo import run_demo

    obj: CliContext = ctx.obj
    if not (obj.options["uri"]):
        ctx.invoke(db_start)
    run_demo(obj.atlas, name, echo=click.echo, progress=_Bar())


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not key=value", param_hint="-p")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


@main.command("cypher")
@click.argument("query")
@click.option("-p", "--param", "params", multiple=True, help="key=value (value parsed as JSON when it can be).")
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON.")
@click.option("--write", is_flag=True, help="Allow the query to change the graph.")
@click.pass_obj
def cypher_cmd(obj: CliContext, query: str, params: tuple[str, ...], as_json: bool, write: bool) -> None:
    """Run a Cypher query (read-only unless --write)."""
    parsed = dict(_parse_param(p) for p in params)
    if write:
        rows, counters = obj.atlas.execute(query, **parsed)
        if counters and not as_json:
            click.echo(", ".join(f"{k}: {v}" for k, v in counters.items()), err=True)
    else:
        rows = obj.atlas.cypher(query, **parsed)
    _echo_json(rows) if as_json else _echo_table(rows)



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
