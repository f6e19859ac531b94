"""Queries: every Cypher text lives in :mod:`circuitatlas.queries.cypher`; the other modules
read (``models``, ``weights``, ``subgraph``, ``patterns``) and write analysis results back
(``writeback``) through a :class:`~circuitatlas.store.Store`."""
