"""Ingest: a network -> rows -> Neo4j.

``sources`` (the one registry of where networks come from, fingerprint, rebuild) -> ``layergraph``
(trace with torch.fx; ``provenance`` holds one handler per traced op) -> ``expanded`` (expanded
weights by autograd) -> ``rows`` -> ``writer`` (online transactions) or ``bulk`` (offline import);
``pipeline.ingest`` runs it all for one :class:`~circuitatlas.ingest.job.IngestJob`.
"""
