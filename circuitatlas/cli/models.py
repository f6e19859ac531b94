"""`circuitatlas models | layers | drop | ingest | zoo ...`: the networks in the graph and where they come from."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import click

from circuitatlas.cli.context import CliContext, ProjectErrors
from circuitatlas.cli.output import ProgressBar, echo_json, echo_table
from circuitatlas.cli.ranges import FiniteRange


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def models_cmd(obj: CliContext, as_json: bool) -> None:
    """List the models in the graph with status and node/edge counts."""
    rows = [asdict(m) for m in obj.atlas.models()]
    echo_json(rows) if as_json else echo_table(rows)


@click.command("layers")
@click.argument("model")
@click.option("--observed", is_flag=True, help="Only the observation layers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def layers_cmd(obj: CliContext, model: str, observed: bool, as_json: bool) -> None:
    """List a model's layers in topological order."""
    rows = obj.atlas.layers(model, observed=observed)
    echo_json(rows) if as_json else echo_table(rows)


@click.command("neuron")
@click.argument("model")
@click.argument("unit")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def neuron_cmd(obj: CliContext, model: str, unit: str, as_json: bool) -> None:
    """One neuron's properties: UNIT is LAYER:CHANNEL with any name of the layer (3b:379) or a uid."""
    props = obj.atlas.neuron(model, unit)
    echo_json(props) if as_json else echo_table([{"property": k, "value": v} for k, v in sorted(props.items())])


@click.command("drop")
@click.argument("model")
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_obj
def drop_cmd(obj: CliContext, model: str, yes: bool) -> None:
    """Delete one model's subgraph (in batches)."""
    if not yes:
        click.confirm(f"Delete model {model!r} and all its neurons and edges?", abort=True)
    obj.atlas.drop(model)
    click.echo(f"dropped {model}")


def _ingest_summary(summary: Any, seconds: float) -> str:
    return (f"{summary.id}: {summary.status}, {summary.layers} layers, {summary.neurons} neurons, "
            f"{summary.weight_edges} WEIGHT and {summary.expanded_edges} EXPANDED edges in {seconds:.1f}s"
            + (" (bulk: offline neo4j-admin import)" if summary.ingest_path == "bulk" else ""))


def _plan_summary(plan: Any) -> str:
    gib = plan.store_bytes / 2**30
    return "\n".join([
        f"{plan.model} ({plan.arch} at {'x'.join(map(str, plan.input_size))}): dry run, nothing written",
        f"  {plan.layers} layers, {plan.neurons:,} neurons, {len(plan.observation_layers)} observation layers",
        f"  direct edges:   {plan.direct_edges:,} (weight pairs {plan.weight_pairs:,} + summand channels "
        f"{plan.summand_channels:,})",
        f"  expanded edges: at most {plan.expanded_edges:,}",
        f"  store: about {gib:.2f} GiB; time: about {plan.seconds['bulk']:,.0f} s by the bulk path, "
        f"{plan.seconds['online']:,.0f} s online (estimates from this machine's measured rates)"])


@click.command("ingest")
@click.argument("source")
@click.option("--name", required=True, help="Model id in the graph: letters, digits and . _ - + @ (at most 100).")
@click.option("--weights", help="torchvision/timm weights: DEFAULT, an enum name (IMAGENET1K_V1) or none (seeded "
              "random, the default). inceptionv1: the published weights (downloaded once, the default), none, or "
              "the path of a local copy.")
@click.option("--arch", help="Architecture of a state-dict checkpoint (torchvision, zoo, built-in name or inceptionv1).")
@click.option("--input-size", default="3,224,224", show_default=True, help="C,H,W traced.")
@click.option("--layers", help="Comma-separated observation layers for expanded weights (default: top-level blocks).")
@click.option("--replace", is_flag=True, help="Overwrite a model with this id.")
@click.option("--resume", is_flag=True, help="Finish an interrupted ingest of this id.")
@click.option("--lenient", is_flag=True, help="Skip unsupported ops with a warning instead of failing.")
@click.option("--no-direct", is_flag=True, help="Do not store direct WEIGHT edges.")
@click.option("--no-expanded", is_flag=True, help="Do not store EXPANDED edges.")
@click.option("--min-l2", default=0.0, type=FiniteRange(min=0.0), show_default=True,
              help="Drop edges whose kernel l2 norm is below this.")
@click.option("--top-k-per-neuron", type=click.IntRange(min=1),
              help="Keep only the k strongest inputs of each neuron (per source layer).")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling a whole module (runs code from the file).")
@click.option("--bulk", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Offline neo4j-admin import into an empty local server (auto: for 500k+ edges).")
@click.option("--force", is_flag=True, help="Trace an input size whose activations look larger than the memory "
              "available (refused otherwise).")
@click.option("--dry-run", is_flag=True, help="Print what would be stored (layers, neurons, edges, store size, "
              "time) and write nothing; needs no server.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def ingest_cmd(obj: CliContext, source: str, name: str, weights: str, arch: str | None, input_size: str,
               layers: str | None, replace: bool, resume: bool, lenient: bool, no_direct: bool, no_expanded: bool,
               min_l2: float, top_k_per_neuron: int | None, trust_pickle: bool, bulk: str, force: bool,
               dry_run: bool, as_json: bool) -> None:
    """Ingest a network: a torchvision name, inceptionv1, a checkpoint file, or a built-in architecture."""
    try:
        size = tuple(int(x) for x in input_size.split(","))
        assert len(size) == 3
    except (ValueError, AssertionError):
        raise click.BadParameter("expected C,H,W such as 3,224,224", param_hint="--input-size") from None
    from circuitatlas.errors import InvalidInput
    from circuitatlas.ingest.job import IngestJob

    try:  # settled before connecting: contradictory options are a usage error, whatever the server
        job = IngestJob.of(weights=weights, arch=arch, input_size=size, layers=layers.split(",") if layers else None,
                           replace=replace, resume=resume, lenient=lenient, direct=not no_direct,
                           expanded=not no_expanded, min_l2=min_l2, top_k_per_neuron=top_k_per_neuron,
                           trust_pickle=trust_pickle, bulk=bulk, force=force)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    if dry_run:
        from circuitatlas.jobs.ingest import dry_run as plan_of

        plan = plan_of(source, name, job)
        echo_json(plan.summary()) if as_json else click.echo(_plan_summary(plan))
        return
    bar = ProgressBar()
    began = time.monotonic()
    try:
        summary = obj.atlas.ingest(source, name, job=job, progress=bar)
    finally:
        bar.close()
    echo_json(asdict(summary)) if as_json else click.echo(_ingest_summary(summary, time.monotonic() - began))


@click.group(cls=ProjectErrors)
def zoo() -> None:
    """Small CNNs trained here on generated tasks (cached)."""


@zoo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def zoo_list(as_json: bool) -> None:
    """The zoo's models, whether each is built, and its test accuracy."""
    from circuitatlas.ingest import zoo as zoo_module

    rows = zoo_module.list_models()
    echo_json(rows) if as_json else echo_table(
        [{k: r[k] for k in ("name", "task", "arch", "seed", "built", "accuracy", "description")} for r in rows])


@zoo.command("build")
@click.argument("name")
@click.option("--retrain", is_flag=True, help="Train again even if cached.")
def zoo_build(name: str, retrain: bool) -> None:
    """Train (or load from the cache) one zoo model; prints its accuracy and file."""
    from circuitatlas.ingest import zoo as zoo_module

    built = zoo_module.build(name, progress=lambda line: click.echo(line, err=True), retrain=retrain)
    click.echo(f"{name}: test accuracy {built.accuracy:.3f}, trained in {built.train_seconds:.0f}s, {built.path}")
