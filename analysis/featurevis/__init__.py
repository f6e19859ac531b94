"""Feature visualisation: parameterisations (:mod:`.param`), transforms (:mod:`.transforms`),
objectives (:mod:`.objectives`), rendering (:mod:`.render`) and its settings (:mod:`.settings`)."""

from circuitatlas.analysis.featurevis.objectives import (
    Objective,
    as_objective,
    channel,
    contrast_penalty,
    direction,
    diversity,
    neuron,
    units,
)
from circuitatlas.analysis.featurevis.render import RenderResult, pick_device, render, render_channels, render_units
from circuitatlas.analysis.featurevis.settings import RenderSettings

__all__ = ["Objective", "as_objective", "channel", "neuron", "units", "direction", "diversity", "contrast_penalty",
           "render", "render_channels", "render_units", "RenderResult", "pick_device",
           "RenderSettings"]
