"""Rows of a user's Cypher query as plain data that keep what the graph returned (the driver's
``record.data()`` turns a relationship into a ``(start, type, end)`` tuple and drops its
properties, and drops a node's labels).

A node is its properties plus ``_labels`` (sorted) and ``_element_id``; a relationship is its
properties plus ``_type``, ``_start`` and ``_end`` (the element ids of its end nodes) and
``_element_id``; a path is ``{"nodes": [...], "relationships": [...]}`` of those, in path order.
Lists and maps are converted inside; every other value is as the driver decodes it. No property
of the schema starts with ``_``: the added keys hide none of them."""

from __future__ import annotations

from typing import Any

import neo4j
from neo4j.graph import Node, Path, Relationship

__all__ = ["row", "plain"]


def row(record: neo4j.Record) -> dict[str, Any]:
    """One record as a dict of column -> :func:`plain` value, in the query's column order."""
    return {key: plain(value) for key, value in record.items()}


def plain(value: Any) -> Any:
    """``value`` with every node, relationship and path in it as plain dicts (see the module)."""
    if isinstance(value, Node):
        return {"_labels": sorted(value.labels), **_properties(value), "_element_id": value.element_id}
    if isinstance(value, Relationship):
        return {"_type": value.type, "_start": _element_id(value.start_node), "_end": _element_id(value.end_node),
                **_properties(value), "_element_id": value.element_id}
    if isinstance(value, Path):
        return {"nodes": [plain(n) for n in value.nodes], "relationships": [plain(r) for r in value.relationships]}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _properties(entity: Node | Relationship) -> dict[str, Any]:
    return {key: plain(v) for key, v in entity.items()}


def _element_id(node: Node | None) -> str | None:
    return None if node is None else node.element_id
