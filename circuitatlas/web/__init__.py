"""The viewer and JSON service (`circuitatlas serve`)."""
