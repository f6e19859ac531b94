"""Jobs: one module per workflow behind :class:`circuitatlas.Atlas` (and so behind the CLI).

Each job reads through :mod:`circuitatlas.queries`, calls a pure analysis of
:mod:`circuitatlas.analysis`, writes its results back through
:mod:`circuitatlas.queries.writeback` and saves files through :mod:`circuitatlas.artifacts`.
Jobs take a :class:`~circuitatlas.store.Store` and hold no state of their own.
"""
