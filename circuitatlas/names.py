"""Names defined once: the uids of layers, neurons, motifs and clusters (built and parsed here
only), the edge kinds and their relationship types, and the motif kinds with their layer counts.

A layer is its dotted ``named_modules()`` path (or an fx node's name) and a model id is a short
word; neither holds ``/`` or ``:``, so every uid parses back without ambiguity, and either can
name a file under the artifacts folder without leaving it (see :data:`MODEL_ID_RULE`):

>>> neuron_uid("demo", "block1.branch2.0", 3)
'demo/block1.branch2.0:3'
>>> parse_neuron_uid("demo/block1.branch2.0:3")
('demo', 'block1.branch2.0', 3)
>>> parse_unit("mid:7")
('mid', 7)
"""

from __future__ import annotations

import re
from typing import Sequence

from circuitatlas.errors import InvalidInput

__all__ = [
    "layer_uid", "neuron_uid", "edit_uid", "unit", "parse_unit", "parse_neuron_uid", "motif_uid", "cluster_uid",
    "REL_TYPES", "EDGE_TYPES", "rel_type", "MOTIF_LAYERS", "MOTIF_KINDS", "check_motif_layers",
    "MODEL_ID_RULE", "check_model_id", "check_layer_name",
]

MODEL_ID_MAX = 100
MODEL_ID_RULE = (f"1 to {MODEL_ID_MAX} characters: letters, digits and . _ - + @, starting with a letter or digit")
_MODEL_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+@-]{{0,{MODEL_ID_MAX - 1}}}")
_LAYER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")


def check_model_id(model: object) -> str:
    """``model`` when it is a valid model id (:data:`MODEL_ID_RULE`), else InvalidInput.

    >>> check_model_id("resnet50-seed.1")
    'resnet50-seed.1'
    """
    if not isinstance(model, str) or not _MODEL_ID.fullmatch(model):
        raise InvalidInput(f"model id {_shown(model)} is not valid: use {MODEL_ID_RULE}")
    return model


def check_layer_name(layer: str) -> str:
    """``layer`` when it is a name a layer can have (letters, digits, ``_ . + -``, no ``..``)."""
    if not _LAYER_NAME.fullmatch(layer) or ".." in layer:
        raise InvalidInput(f"layer name {_shown(layer)} is not valid: use letters, digits and _ . + - (no '..')")
    return layer


def _shown(value: object) -> str:
    """``repr(value)`` cut to 60 characters, for an error message about a hostile name."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def layer_uid(model: str, layer: str) -> str:
    """``"<model>/<layer>"``."""
    return f"{model}/{layer}"


def neuron_uid(model: str, layer: str, channel: int) -> str:
    """``"<model>/<layer>:<channel>"``."""
    return f"{model}/{layer}:{int(channel)}"


def edit_uid(model: str, name: str) -> str:
    """``"<model>/edit:<name>"``; an edit name follows the model id rule."""
    try:
        check_model_id(name)
    except InvalidInput:
        raise InvalidInput(f"edit name {_shown(name)} is not valid: use {MODEL_ID_RULE}") from None
    return f"{model}/edit:{name}"


def unit(layer: str, channel: int) -> str:
    """A unit within one model, as the analyses name motif members: ``"<layer>:<channel>"``."""
    return f"{layer}:{int(channel)}"


def parse_unit(name: str) -> tuple[str, int]:
    """``"<layer>:<channel>"`` (or a whole neuron uid) -> ``(layer, channel)``."""
    layer, sep, channel = name.rpartition(":")
    if not sep or not channel.isdigit():
        raise InvalidInput(f"{name!r} is not '<layer>:<channel>'")
    return layer.rpartition("/")[2], int(channel)


def parse_neuron_uid(uid: str) -> tuple[str, str, int]:
    """``"<model>/<layer>:<channel>"`` -> ``(model, layer, channel)``."""
    model, sep, _ = uid.rpartition("/")
    if not sep:
        raise InvalidInput(f"{uid!r} is not '<model>/<layer>:<channel>'")
    layer, channel = parse_unit(uid)
    return model, layer, channel


def motif_uid(model: str, run: str, index: int) -> str:
    """One finding of one detector run: ``"<model>/motif/<run>/<index>"``."""
    return f"{model}/motif/{run}/{index}"


def cluster_uid(model: str, analysis: str, side: str, index: int) -> str:
    """One cluster of one side of an analysis: ``"<model>/<analysis>/<side>/<index>"``."""
    return f"{model}/{analysis}/{side}/{int(index)}"


# edge kinds as the API names them -> relationship types in the graph
REL_TYPES = {"direct": "WEIGHT", "expanded": "EXPANDED"}
EDGE_TYPES = tuple(REL_TYPES.values())


def rel_type(kind: str) -> str:
    """The relationship type of an edge kind ("direct" -> WEIGHT, "expanded" -> EXPANDED)."""
    if kind not in REL_TYPES:
        raise InvalidInput(f"kind must be one of {', '.join(REL_TYPES)}, not {kind!r}")
    return REL_TYPES[kind]


# motif kind -> the number of layers it takes (flip_equivariance: a chain of at least that many)
MOTIF_LAYERS = {"rotation_equivariance": 2, "flip_equivariance": 2, "union_over_cases": 3, "superposition": 2}
MOTIF_KINDS = tuple(MOTIF_LAYERS)
_CHAINS = {"flip_equivariance"}


def check_motif_layers(kind: str, layers: Sequence[str]) -> None:
    """Raise InvalidInput unless ``kind`` is a motif kind and ``layers`` has as many layers as it takes."""
    if kind not in MOTIF_LAYERS:
        raise InvalidInput(f"unknown motif kind {kind!r}; choose one of {', '.join(MOTIF_KINDS)}")
    needed = MOTIF_LAYERS[kind]
    if len(layers) == needed or (kind in _CHAINS and len(layers) > needed):
        return
    more = " or more" if kind in _CHAINS else ""
    raise InvalidInput(f"{kind} takes {needed} layers{more}, got {len(layers)}")
