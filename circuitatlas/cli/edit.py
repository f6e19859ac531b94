"""`circuitatlas edit ...`: circuit edits stored as data, their measured effect, and the
faithfulness of a circuit."""

from __future__ import annotations

import sys

import click

from circuitatlas.cli.context import CliContext
from circuitatlas.cli.output import echo_json, echo_table
from circuitatlas.cli.ranges import SEED
from circuitatlas.queries.editing import summary_lines

__all__ = ["edit"]


def _pairs(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return []
    out = []
    for item in text.split(","):
        src, sep, dst = item.partition(">")
        if not sep or not src.strip() or not dst.strip():
            raise click.BadParameter(f"{item!r}: give SOURCE>TARGET units, e.g. mid:0>high:3", param_hint="--edges")
        out.append((src.strip(), dst.strip()))
    return out


def _units(text: str | None) -> list[str]:
    return [u.strip() for u in (text or "").split(",") if u.strip()]


@click.group("edit")
def edit() -> None:
    """Circuit edits: ablate units, scale or remove edges, replace units; measure what changes."""


@edit.command("create")
@click.argument("model")
@click.argument("name")
@click.option("--ablate", help="Units to ablate: LAYER:CHANNEL[,LAYER:CHANNEL...].")
@click.option("--ablate-where", help="A Cypher predicate over (n) choosing units to ablate, e.g. "
                                     "\"n.layer = 'high' AND n.orientation_selectivity > 0.5\".")
@click.option("--mode", type=click.Choice(["zero", "mean"]), default="zero", show_default=True,
              help="Ablate to zero, or to each unit's mean map over --images (else the stimulus battery).")
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="The probe set of mean ablation.")
@click.option("--edges", help="Direct edges SOURCE>TARGET[,...] to scale by --scale.")
@click.option("--edges-where", help="A Cypher predicate over (a)-[w]->(b) choosing direct edges to scale, e.g. "
                                    "\"w.sum < 0 AND a.layer = 'mid' AND b.layer = 'high'\".")
@click.option("--scale", default=0.0, show_default=True, type=float, help="Factor for the chosen edges (0 removes).")
@click.option("--replace-from", "replace_from", multiple=True, metavar="UNIT=UID",
              help="Replace UNIT's incoming weights with another model's unit (its neuron uid); repeatable.")
@click.option("--description", default="", help="What the edit is for.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def create_cmd(obj: CliContext, model: str, name: str, ablate: str | None, ablate_where: str | None, mode: str,
               images: str | None, edges: str | None, edges_where: str | None, scale: float,
               replace_from: tuple[str, ...], description: str, as_json: bool) -> None:
    """Store edit NAME of MODEL (checked against the network first; the stored weights never change)."""
    sources = {}
    for item in replace_from:
        unit, sep, uid = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: give UNIT=UID", param_hint="--replace-from")
        sources[unit.strip()] = uid.strip()
    made = obj.atlas.create_edit(model, name, ablate=_units(ablate), ablate_where=ablate_where, mode=mode,
                                 images=images, edges=_pairs(edges), edges_where=edges_where, scale=scale,
                                 replace_from=sources, description=description)
    if as_json:
        echo_json(made)
        return
    click.echo(f"stored edit {made['uid']}: {made['ablations']} units ablated, {made['edges']} edges edited, "
               f"{made['replacements']} units replaced")


@edit.command("effect")
@click.argument("model")
@click.argument("name")
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="Images (subfolders named by class index make them labelled: accuracy and loss).")
@click.option("--limit", type=click.IntRange(1), help="At most this many images.")
@click.option("--control", "n_control", default=5, show_default=True, type=click.IntRange(0, 100),
              help="Random edits of the same size to compare with.")
@click.option("--stimulus", default="curve", show_default=True, help="The rotated stimulus of the tuning curves.")
@click.option("--radius", type=click.FloatRange(0, min_open=True), help="Curve radius (px).")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--plot", type=click.Path(dir_okay=False), help="Save the tuning curves before and after (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole effect as JSON.")
@click.pass_obj
def effect_cmd(obj: CliContext, model: str, name: str, images: str | None, limit: int | None, n_control: int,
               stimulus: str, radius: float | None, seed: int, plot: str | None, as_json: bool) -> None:
    """Measure and store what edit NAME of MODEL changes, against random edits of the same size."""
    from tqdm import tqdm

    params = {"stimulus": stimulus, **({"radius": radius} if radius else {})}
    with tqdm(total=2 + n_control, file=sys.stderr, disable=None, desc="networks measured") as bar:
        result = obj.atlas.edit_effect(model, name, images, n_control=n_control, stimulus_params=params, seed=seed,
                                       limit=limit, progress=lambda _msg: bar.update())
    if plot:
        result.figure().save(plot)
    if as_json:
        echo_json({**result.to_dict(), **({"plot": plot} if plot else {})})
        return
    click.echo(summary_lines(result.summary))
    if plot:
        click.echo(f"plot: {plot}")
    echo_table([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                 if k in ("unit", "mean_before", "mean_after", "top_before", "top_after", "echo_before", "echo_after")}
                for row in result.units])


@edit.command("list")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_cmd(obj: CliContext, model: str, as_json: bool) -> None:
    """The stored edits of MODEL."""
    rows = obj.atlas.edits(model)
    if as_json:
        echo_json(rows)
        return
    echo_table([{k: v for k, v in row.items() if k not in ("uid", "effect_summary")} for row in rows])


@edit.command("delete")
@click.argument("model")
@click.argument("name")
@click.pass_obj
def delete_cmd(obj: CliContext, model: str, name: str) -> None:
    """Delete edit NAME of MODEL."""
    obj.atlas.delete_edit(model, name)
    click.echo(f"deleted edit {name!r} of {model!r}")


@edit.command("faithfulness")
@click.argument("model")
@click.option("--motif", help="A stored motif's uid (its faithfulness is stored on it).")
@click.option("--units", help="Or the circuit's units LAYER:CHANNEL[,...]; the deepest layer's are the targets.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="Probe images (default: the battery).")
@click.option("--stimulus", default="curve", show_default=True)
@click.option("--radius", type=click.FloatRange(0, min_open=True))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def faithfulness_cmd(obj: CliContext, model: str, motif: str | None, units: str | None, images: str | None,
                     stimulus: str, radius: float | None, as_json: bool) -> None:
    """Keep a circuit, mean-ablate the rest of its layers: how much of its targets' activation survives."""
    if bool(motif) == bool(units):
        raise click.UsageError("give --motif or --units")
    params = {"stimulus": stimulus, **({"radius": radius} if radius else {})}
    result = obj.atlas.faithfulness(model, _units(units) if units else None, motif=motif, images=images,
                                    stimulus_params=params)
    if as_json:
        echo_json(result)
        return
    score = result["faithfulness"]
    click.echo(f"faithfulness {'n/a' if score is None else f'{score:.3f}'}: {len(result['kept'])} units kept, "
               f"{result['ablated_units']} mean-ablated in {', '.join(result['ablated_layers'])}")
    echo_table([{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()} for row in result["targets"]])
