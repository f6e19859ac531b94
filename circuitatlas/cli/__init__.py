"""The ``circuitatlas`` CLI: each command parses its options, calls one library function and
prints. The project's own errors print as one line (exit 1); anything else keeps its traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from circuitatlas import paths
from circuitatlas.cli import analyses, compare, db, edit, models, motifs, query, querying, serve
from circuitatlas.cli.context import CliContext, ProjectErrors

__all__ = ["main"]


@click.group(cls=ProjectErrors)
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
    ctx.with_resource(paths.state_dir_as(options["state_dir"]))  # --state-dir moves the artifacts too


# every command, registered here and nowhere else
for command in (db.db, models.models_cmd, models.layers_cmd, models.neuron_cmd, models.drop_cmd, models.ingest_cmd,
                models.zoo, analyses.analyze, analyses.annotate, analyses.featurevis_cmd, analyses.decompose_cmd,
                motifs.motifs,
                query.cypher_cmd, query.demo_cmd, querying.query, serve.serve_cmd, compare.compare_cmd,
                edit.edit):
    main.add_command(command)
