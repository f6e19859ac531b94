"""Ingest: a network -> rows -> Neo4j.

``sources`` (the one registry of where networks come from, fingerprint, rebuild) -> ``layergraph``
(trace with torch.fx; ``tracestate`` hands each node to its ``handlers`` entry, which returns its
channels' ``provenance``) -> ``expanded`` (expanded weights by autograd) -> ``rows`` -> ``writer``
(online transactions) or ``bulk`` (offline import); ``pipeline.ingest`` runs it all for one
:class:`~circuitatlas.ingest.job.IngestJob`, ``plan`` says what it would store without running it.
"""
