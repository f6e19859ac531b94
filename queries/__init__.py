"""Cypher for circuitatlas: every query text lives in :mod:`circuitatlas.queries.cypher`."""
