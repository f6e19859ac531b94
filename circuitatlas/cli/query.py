"""`circuitatlas cypher` and `circuitatlas demo`."""

from __future__ import annotations

import json
from typing import Any

import click

from circuitatlas.cli.context import CliContext
from circuitatlas.cli.db import db_start
from circuitatlas.cli.output import ProgressBar, echo_json, echo_table


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not key=value", param_hint="-p")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


@click.command("cypher")
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
    echo_json(rows) if as_json else echo_table(rows)





@click.command("demo")
@click.option("--name", default="demo", show_default=True, help="Model id for the demo network.")
@click.pass_context
def demo_cmd(ctx: click.Context, name: str) -> None:
    """The main job: local Neo4j (unless NEO4J_URI is set), the demo network, ingest, analyses."""
    from circuitatlas.demo import run_demo

    obj: CliContext = ctx.obj
    if not (obj.options["uri"]):
        ctx.invoke(db_start)
    run_demo(obj.atlas, name, echo=click.echo, progress=ProgressBar())
