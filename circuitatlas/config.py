"""Connection settings: explicit arguments, then NEO4J_* environment, then the local server."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from circuitatlas.errors import ConfigError
from circuitatlas.localserver import LocalServer

# Bolt only: the driver's http(s) schemes are a preview that needs aiohttp
URI_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
# a word (a URI, with or without its scheme) up to its last "@": its userinfo, or what may be one
_USERINFO = re.compile(r"((?:^|(?<=[\s'\"(]))(?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^\s'\"]*@")


def redact_uri(text: str) -> str:
    """``text`` with the user and password of every URI in it masked: ``bolt://***@host:7687``
    (it errs on the side of masking: whatever comes before an ``@`` in a word goes)."""
    return _USERINFO.sub(r"\1***@", text)


def check_uri(uri: str) -> None:
    """ConfigError (the URI's userinfo masked) unless ``uri`` is a Bolt URI without user or password."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in URI_SCHEMES:
        raise ConfigError(f"Neo4j URI {redact_uri(uri)!r} is not supported: use one of "
                          f"{', '.join(s + '://' for s in URI_SCHEMES)}")
    if "@" in rest:
        raise ConfigError(f"Neo4j URI {redact_uri(uri)!r} holds a user or password: pass them with "
                          "--user/--password or NEO4J_USER/NEO4J_PASSWORD")


@dataclass(frozen=True)
class Connection:
    """Where and how to reach Neo4j. ``database=None`` means the server's default database.
    The URI is checked when made (:func:`check_uri`): a Bolt scheme, no userinfo."""

    uri: str
    user: str
    password: str
    database: str | None
    origin: str  # "arguments", "environment" or "local server"
    state_dir: str | None = None  # the local server's state dir, when origin is "local server"

    def __post_init__(self) -> None:
        check_uri(self.uri)

    def __repr__(self) -> str:  # never print the password
        return (f"Connection(uri={redact_uri(self.uri)!r}, user={self.user!r}, database={self.database!r}, "
                f"origin={self.origin!r})")


@dataclass(frozen=True)
class ConnectionSettings:
    """What a caller asked for, each None when not given: the CLI's connection options, the
    keywords of ``Atlas.connect``; :func:`resolve_connection` settles the rest."""

    uri: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed
    database: str | None = None
    state_dir: str | Path | None = None


def settled(given: Any, make: Callable[..., Any], fields: dict[str, Any]) -> Any:
    """A settings object: the one given, or one made from its fields as keywords, not both."""
    if given is not None and fields:
        raise TypeError(f"pass settings or their fields as keywords, not both ({', '.join(fields)})")
    return given if given is not None else make(**fields)


def resolve_connection(settings: ConnectionSettings | None = None, **fields: str | Path | None) -> Connection:
    """Settle the connection: ``settings`` (or its fields as keywords) win, then
    NEO4J_URI/USER/PASSWORD/DATABASE, then the local server's state file (``circuitatlas db start``)."""
    asked = settled(settings, ConnectionSettings, fields)
    uri, user, password, database, state_dir = (asked.uri, asked.user, asked.password, asked.database,
                                                 asked.state_dir)
    database = database or os.environ.get("NEO4J_DATABASE") or None
    if uri:
        origin = "arguments"
    elif os.environ.get("NEO4J_URI"):
        uri, origin = os.environ["NEO4J_URI"], "environment"
    else:
        server = LocalServer(state_dir)
        state = server.running_state()
        if state is None or state.uri is None:
            raise ConfigError(
                f"no Neo4j to talk to: the local server ({server.state_dir}) is not running; "
                "start it with `circuitatlas db start`, or set NEO4J_URI"
            )
        return Connection(state.uri, user or state.user, password or state.password, database, "local server",
                          str(server.state_dir))
    check_uri(uri)
    user = user or os.environ.get("NEO4J_USER") or "neo4j"
    password = password if password is not None else os.environ.get("NEO4J_PASSWORD")
    if password is None:
        raise ConfigError(f"no password for {redact_uri(uri)}: set NEO4J_PASSWORD or pass --password")
    return Connection(uri, user, password, database, origin)
