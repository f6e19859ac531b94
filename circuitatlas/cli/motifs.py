"""`circuitatlas motifs find | list | search`: motif detection and signed pattern search."""

from __future__ import annotations

import json

import click

from circuitatlas.cli.context import CliContext, ProjectErrors
from circuitatlas.cli.output import echo_json, echo_table
from circuitatlas.cli.ranges import COUNT, POSITIVE, SECONDS, FiniteRange
from circuitatlas.names import MOTIF_KINDS


@click.group(cls=ProjectErrors)
def motifs() -> None:
    """Circuit motif detection and signed pattern search."""


@motifs.command("find")
@click.argument("kind", type=click.Choice(MOTIF_KINDS))
@click.argument("model")
@click.option("--layers", required=True,
              help="Comma-separated layers (2; 3 for union_over_cases; a chain of 2 or more for flip_equivariance, "
                   "best started at 'input').")
@click.option("--stimulus", help="Measure tuning with this stimulus (edge, line, curve...) instead of each layer's "
                                 "most selective probe of the battery.")
@click.option("--radius", type=POSITIVE, help="Curve radius of the tuning stimuli (a curve stimulus is then used).")
@click.option("--perm", "n_perm", default=200, show_default=True, type=COUNT, help="Permutations of the null.")
@click.option("--alpha", default=0.01, show_default=True, type=FiniteRange(0.0, 1.0, min_open=True),
              help="Report motifs with p below this.")
@click.option("--explain", is_flag=True, help="Say how far each stage got (always when nothing is found).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: motifs and diagnostics.")
@click.pass_obj
def motifs_find(obj: CliContext, kind: str, model: str, layers: str, stimulus: str | None, radius: float | None,
                n_perm: int, alpha: float, explain: bool, as_json: bool) -> None:
    """Detect motifs of one kind and store them as (:Motif) nodes."""
    stim = {**({"stimulus": stimulus} if stimulus else {}), **({"radius": radius} if radius is not None else {})}
    found = obj.atlas.find_motifs(kind, model, layers.split(","), n_perm=n_perm, alpha=alpha,
                                  stimulus_params=stim or None)
    rows = [{"kind": m.kind, "score": m.score, "p_value": m.p_value, "members": m.members, "params": m.params}
            for m in found]
    if as_json:
        echo_json({"motifs": rows, "diagnostics": found.diagnostics})
        return
    click.echo(f"{len(found)} {kind} motif(s) in {model} at p < {alpha}")
    for m in found:
        roles = {}
        for info in m.members.values():
            roles[info["role"]] = roles.get(info["role"], 0) + 1
        click.echo(f"  score {m.score:.3f}, p = {m.p_value:.3g}: " + ", ".join(f"{n} {r}" for r, n in roles.items()))
    if explain or not found:
        from circuitatlas.analysis.motifs.runs import explain as explain_lines  # torch: only once it is loaded

        for line in explain_lines(found.diagnostics):
            click.echo(f"  {line}")


@motifs.command("list")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def motifs_list(obj: CliContext, model: str, as_json: bool) -> None:
    """Motifs stored for a model."""
    rows = obj.atlas.motifs(model)
    if as_json:
        echo_json(rows)
        return
    echo_table([{"kind": r["kind"], "score": round(r["score"], 4), "p_value": round(r["p_value"], 4),
                  "layers": ",".join(r["layers"]), "members": len(r["members"])} for r in rows])


@motifs.command("search")
@click.argument("pattern")
@click.argument("model")
@click.option("--kind", type=click.Choice(["direct", "expanded"]), default="direct", show_default=True)
@click.option("--layers", help="Comma-separated layers for the pattern nodes that name none (default: all).")
@click.option("--limit", default=20, show_default=True, type=COUNT,
              help="Stop after this many matches.")
@click.option("--timeout", default=60.0, show_default=True, type=SECONDS,
              help="Seconds before the server ends the search.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def motifs_search(obj: CliContext, pattern: str, model: str, kind: str, layers: str | None, limit: int,
                  timeout: float, as_json: bool) -> None:
    """Signed pattern search: a shipped pattern name or a JSON pattern."""
    try:
        parsed = json.loads(pattern) if pattern.lstrip().startswith("{") else pattern
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="PATTERN") from None
    matches = obj.atlas.search(parsed, model, kind, layers=layers.split(",") if layers else None, limit=limit,
                               timeout=timeout)
    if as_json:
        echo_json(matches)
        return
    click.echo(f"{len(matches)} match(es)" + (f" (the first {limit})" if len(matches) == limit else ""))
    echo_table(matches)
