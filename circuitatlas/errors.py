"""Exceptions with one-line, actionable messages (the CLI prints them as they are)."""

from __future__ import annotations


class CircuitAtlasError(Exception):
    """Base class: anything the user can fix; its message is one line."""


class ConfigError(CircuitAtlasError):
    """Bad settings, a missing tool (Java, Maven) or an unusable state directory."""


class ServerError(CircuitAtlasError):
    """The local Neo4j server could not be started, stopped or reached."""


class ConnectionFailed(CircuitAtlasError):
    """Neo4j could not be reached or refused our credentials."""


class QueryError(CircuitAtlasError):
    """Neo4j rejected a query (syntax, constraint, a write in a read-only call)."""


class IngestError(CircuitAtlasError):
    """A model could not be loaded or turned into a graph."""


class NotFound(CircuitAtlasError):
    """A model, layer or neuron that is not in the graph."""


class RenderError(CircuitAtlasError):
    """Feature visualisation could not run (out of device memory even one channel at a time)."""


class InvalidInput(CircuitAtlasError, ValueError):
    """An argument the caller can fix (a motif kind, a layer count, a channel out of range); a
    ValueError too, so callers that caught ValueError before still do."""
