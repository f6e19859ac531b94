"""circuitatlas: circuits of trained convolutional networks as a queryable Neo4j graph."""

from circuitatlas.api import Atlas
from circuitatlas.errors import CircuitAtlasError

__all__ = ["Atlas", "CircuitAtlasError", "__version__"]
__version__ = "0.1.0"
