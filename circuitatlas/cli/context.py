"""The CLI's context object and its error handling: connection options from the group, the
Atlas opened on first use (closed at exit), and the project's own errors as one line."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from typing import Any

import click

from circuitatlas.config import ConnectionSettings
from circuitatlas.errors import CircuitAtlasError
from circuitatlas.localserver import LocalServer

__all__ = ["CliContext", "ProjectErrors"]


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

            fields = {f.name: self.options[f.name] for f in dataclasses.fields(ConnectionSettings)}
            self._atlas = self._ctx.with_resource(Atlas.connect(settings=ConnectionSettings(**fields)))
            _cancel_on_interrupt(self._ctx, self._atlas.store)
        return self._atlas


def _cancel_on_interrupt(ctx: click.Context, store: Any) -> None:
    """Ctrl-C ends the command's running transactions on the server first (the driver would
    otherwise wait for a long query to finish before the command could exit); a second Ctrl-C
    interrupts at once. The previous handler is back when the command ends."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    ctx.call_on_close(lambda: signal.signal(signal.SIGINT, previous))

    def interrupted(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with contextlib.suppress(Exception):
            store.cancel_running()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)


class ProjectErrors(click.Group):
    """Prints circuitatlas errors as one line with exit code 1 (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CircuitAtlasError as exc:  # the project's own errors; any other keeps its traceback
            if ctx.obj is not None and ctx.obj.options.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None
