"""`circuitatlas db ...`: the local Neo4j server (no Docker needed) and the schema."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from circuitatlas.cli.context import CliContext, ProjectErrors
from circuitatlas.cli.output import echo_json, human_bytes
from circuitatlas.cli.ranges import FiniteRange
from circuitatlas.localserver import DEFAULT_HEAP, DEFAULT_PAGECACHE


@click.group(cls=ProjectErrors)
def db() -> None:
    """The local Neo4j server (no Docker needed) and the schema."""


@db.command("start")
@click.option("--port", type=click.IntRange(1, 65535), envvar="CIRCUITATLAS_NEO4J_PORT",
              help="Bolt port (default 7687, or a free one).")
@click.option("--heap", default=DEFAULT_HEAP, envvar="CIRCUITATLAS_NEO4J_HEAP", show_default=True, help="JVM heap.")
@click.option("--pagecache", default=DEFAULT_PAGECACHE, envvar="CIRCUITATLAS_NEO4J_PAGECACHE", show_default=True,
              help="Neo4j page cache.")
@click.option("--timeout", default=180.0, type=FiniteRange(min=1.0), show_default=True,
              help="Seconds to wait until Bolt answers.")
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
        echo_json(asdict(status))
        return
    state = "running" if status.running else "stopped"
    where = f" on {status.uri} (pid {status.pid})" if status.running else ""
    click.echo(f"Neo4j {status.version} {state}{where}")
    click.echo(f"state dir: {status.state_dir}, store {human_bytes(status.store_bytes)}")


@db.command("reset-password")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for each start of Neo4j.")
@click.pass_obj
def db_reset_password(obj: CliContext, timeout: float) -> None:
    """Give the local store a new password, keeping its data, and start it."""
    server = obj.server
    click.echo("restarting Neo4j with auth disabled (127.0.0.1 only) to set a new password...", err=True)
    state = server.reset_password(timeout=timeout)
    click.echo(f"new password kept in {server.state_file}; Neo4j running on {state.uri}")


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
