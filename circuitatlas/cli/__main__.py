"""``python -m circuitatlas.cli``."""

from circuitatlas.cli import main

main()
