"""The CLI's context object and its error handling: connection options from the group, the
Atlas opened on first use (closed at exit), and the project's own errors as one line."""

from __future__ import annotations

import dataclasses
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
        return self._atlas


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
