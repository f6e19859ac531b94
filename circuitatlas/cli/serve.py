"""`circuitatlas serve`: the viewer and JSON service over the graph the CLI uses."""

from __future__ import annotations

import os

import click

from circuitatlas.cli.context import CliContext

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


@click.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on; any other than loopback needs --token.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", envvar="CIRCUITATLAS_SERVE_TOKEN",
              help="Every request must carry it (?token= once, or 'Authorization: Bearer'); "
                   "env CIRCUITATLAS_SERVE_TOKEN.")
@click.pass_obj
def serve_cmd(obj: CliContext, host: str, port: int, token: str | None) -> None:
    """Serve the circuit viewer and its JSON API (read-only) until Ctrl-C."""
    import uvicorn

    from circuitatlas.web.app import create_app, freeze_startup_objects, is_loopback

    if not is_loopback(host) and not token:
        raise click.UsageError(f"--host {host} is reachable from other machines: pass --token (or set "
                               "CIRCUITATLAS_SERVE_TOKEN) so that every request must carry it")
    app = create_app(obj.atlas.store, token=token or None)
    freeze_startup_objects()
    shown = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    click.echo(f"circuitatlas viewer on {shown}{'?token=...' if token else ''} (read-only; Ctrl-C stops it)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("CIRCUITATLAS_SERVE_LOG", "warning"))
