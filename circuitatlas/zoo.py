"""Moved to :mod:`circuitatlas.ingest.zoo`; kept so that code and pickles naming
``circuitatlas.zoo`` (``ZooNet``) still load."""

from circuitatlas.ingest.zoo import *  # noqa: F401,F403
from circuitatlas.ingest.zoo import ZooNet  # noqa: F401
