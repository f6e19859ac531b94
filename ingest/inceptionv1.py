"""InceptionV1 as the Circuits thread studied it: the ``inception5h`` graph trained at Google and
published in Lucid's model zoo, with its own layer names and its unit numbering.

Not torchvision's ``googlenet`` (a different network, retrained in PyTorch with BatchNorm). The
architecture follows the published definitions (Lucid's graph as converted by ProGamerGov, used by
Lucent and by Captum's optim module); the module tree uses the articles' names:

- ``conv2d0`` (7x7, stride 2, TensorFlow "SAME" padding), ``maxpool0``, ``localresponsenorm0``,
  ``conv2d1`` (1x1), ``conv2d2`` (3x3), ``localresponsenorm1``, ``maxpool1``;
- ``mixed3a`` ... ``mixed5b``, each with the children ``1x1``, ``3x3_bottleneck``, ``3x3``,
  ``5x5_bottleneck``, ``5x5``, ``pool`` and ``pool_reduce``; a block's output concatenates the
  ReLU'd ``1x1``, ``3x3``, ``5x5`` and ``pool_reduce`` outputs in that order, so ``mixed3b:379`` is
  channel 379 of that concatenation (``mixed3b`` = 128 + 192 + 96 + 64 = 480 channels, and 379 lies
  in the ``5x5`` branch);
- ``avgpool0`` and ``softmax2_pre_activation`` (the 1008 logits; no softmax is applied).

The child names are not Python identifiers; they are added with ``add_module``, trace with
torch.fx, and are what ingest gives a block's neurons as their ``branch``. A weight layer is
its module path (``mixed3b.5x5``); :data:`LAYER_ALIASES` lists the other names a reader of the
articles or of Lucid/Lucent types (``3b``, ``mixed3b_5x5``, ``mixed3b_5x5_pre_relu_conv``).

Preprocessing is part of the module: :meth:`InceptionV1.forward` takes RGB images in [0, 1] and
maps them to what the converted weights expect (``x * 255 - 117``: the 0-255 range less the mean
117, RGB order), so stimuli and feature visualisation work unchanged. Padding is TensorFlow's
"SAME" for even input sizes (224 included), which is what the converted definitions hard-code.

Weights: the converted file ``inception5h.pth`` is downloaded once from :data:`PRETRAINED`'s URL
(the one Lucent uses) into the cache and checked against the git blob id its repository
publishes (no SHA-256 is published for it); every file, downloaded or local, must have exactly
one of the published key/shape layouts (:data:`LAYOUTS`: Lucent's flat names, or Captum's module
names) before anything is loaded.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from circuitatlas import paths
from circuitatlas.errors import IngestError

__all__ = ["NAME", "InceptionV1", "Mixed", "MIXED", "BRANCHES", "EARLY_CONVS", "IMAGE_SCALE", "IMAGE_MEAN",
           "LAYER_ALIASES", "LAYOUTS", "WeightsFile", "PRETRAINED", "PRETRAINED_LABELS", "converted_keys",
           "native_state_dict", "read_converted", "fetch_weights", "git_blob_id", "load"]

NAME = "inceptionv1"

# [0, 1] RGB -> the converted weights' input: x * IMAGE_SCALE - IMAGE_MEAN (RGB, not BGR)
IMAGE_SCALE = 255.0
IMAGE_MEAN = 117.0

# TensorFlow's LRN in the graph: depth_radius 5, bias 2, alpha 1e-4, beta 0.5 (sum over 11 channels);
# torch divides alpha by the window size, hence 11 * alpha
_LRN = {"size": 11, "alpha": 11 * 9.999999747378752e-05, "beta": 0.5, "k": 2.0}

# block -> (in, 1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5, pool_reduce) channels
MIXED: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
# a block's weight layers, in the order of its definition
_BLOCK_CONVS = ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")
# the branches whose outputs a block concatenates, in that order
BRANCHES = ("1x1", "3x3", "5x5", "pool_reduce")
EARLY_CONVS = ("conv2d0", "conv2d1", "conv2d2")
_LOGITS = "softmax2_pre_activation"


class Mixed(nn.Module):
    """One inception block: ``cat(relu(1x1(x)), relu(3x3(relu(3x3_bottleneck(x)))),
    relu(5x5(relu(5x5_bottleneck(x)))), relu(pool_reduce(pool(x))))`` along channels."""

    def __init__(self, c_in: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        children = {
            "1x1": nn.Conv2d(c_in, c1, 1),
            "3x3_bottleneck": nn.Conv2d(c_in, c3r, 1),
            "3x3": nn.Conv2d(c3r, c3, 3, padding=1),
            "5x5_bottleneck": nn.Conv2d(c_in, c5r, 1),
            "5x5": nn.Conv2d(c5r, c5, 5, padding=2),
            "pool": nn.MaxPool2d(3, stride=1, padding=1),  # max-pooling pads with -inf, as the graph does
            "pool_reduce": nn.Conv2d(c_in, cp, 1),
        }
        for name, child in children.items():
            self.add_module(name, child)  # the articles' names, not identifiers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self._modules
        return torch.cat([
            torch.relu(m["1x1"](x)),
            torch.relu(m["3x3"](torch.relu(m["3x3_bottleneck"](x)))),
            torch.relu(m["5x5"](torch.relu(m["5x5_bottleneck"](x)))),
            torch.relu(m["pool_reduce"](m["pool"](x))),
        ], dim=1)


def _stride2_pool() -> nn.MaxPool2d:
    # "SAME" 3x3/2 max-pooling of an even-sized map pads one -inf row and column at the end: ceil mode
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


class InceptionV1(nn.Module):
    """InceptionV1 (``inception5h``): (N, 3, H, W) RGB in [0, 1] -> (N, 1008) logits.

    Exact for even H and W (224 as trained); see the module docstring for names and numbering.
    """

    def __init__(self, classes: int = 1008) -> None:
        super().__init__()
        self.conv2d0_pad = nn.ZeroPad2d((2, 3, 2, 3))  # "SAME" for a 7x7 stride-2 conv on an even size
        self.conv2d0 = nn.Conv2d(3, 64, 7, stride=2)
        self.maxpool0 = _stride2_pool()
        self.localresponsenorm0 = nn.LocalResponseNorm(**_LRN)
        self.conv2d1 = nn.Conv2d(64, 64, 1)
        self.conv2d2 = nn.Conv2d(64, 192, 3, padding=1)
        self.localresponsenorm1 = nn.LocalResponseNorm(**_LRN)
        self.maxpool1 = _stride2_pool()
        self.mixed3a = Mixed(*MIXED["mixed3a"])
        self.mixed3b = Mixed(*MIXED["mixed3b"])
        self.maxpool4 = _stride2_pool()
        self.mixed4a = Mixed(*MIXED["mixed4a"])
        self.mixed4b = Mixed(*MIXED["mixed4b"])
        self.mixed4c = Mixed(*MIXED["mixed4c"])
        self.mixed4d = Mixed(*MIXED["mixed4d"])
        self.mixed4e = Mixed(*MIXED["mixed4e"])
        self.maxpool10 = _stride2_pool()
        self.mixed5a = Mixed(*MIXED["mixed5a"])
        self.mixed5b = Mixed(*MIXED["mixed5b"])
        self.avgpool0 = nn.AdaptiveAvgPool2d(1)
        self.softmax2_pre_activation = nn.Linear(1024, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mul(IMAGE_SCALE).add(-IMAGE_MEAN)  # add, not sub: the tracer follows add
        x = self.localresponsenorm0(self.maxpool0(torch.relu(self.conv2d0(self.conv2d0_pad(x)))))
        x = torch.relu(self.conv2d1(x))
        x = self.maxpool1(self.localresponsenorm1(torch.relu(self.conv2d2(x))))
        x = self.maxpool4(self.mixed3b(self.mixed3a(x)))
        x = self.mixed4e(self.mixed4d(self.mixed4c(self.mixed4b(self.mixed4a(x)))))
        x = self.mixed5b(self.mixed5a(self.maxpool10(x)))
        return self.softmax2_pre_activation(torch.flatten(self.avgpool0(x), 1))


def _weight_layers() -> list[str]:
    """Module paths of the weight layers, in network order."""
    return [*EARLY_CONVS, *(f"{block}.{conv}" for block in MIXED for conv in _BLOCK_CONVS), _LOGITS]


def _aliases(layer: str) -> tuple[str, ...]:
    """The names Lucid, Lucent and the articles give ``layer`` (``mixed3b.5x5`` -> ``mixed3b_5x5``...)."""
    if layer in MIXED:
        return (layer.removeprefix("mixed"),)
    if layer == _LOGITS:
        return ("softmax2", f"{_LOGITS}_matmul")
    flat = layer.replace(".", "_")
    found = [flat, f"{flat}_pre_relu", f"{flat}_pre_relu_conv"]
    if layer.startswith("mixed"):
        found.append(flat.removeprefix("mixed"))
    return tuple(n for n in found if n != layer)


# canonical layer name -> the other names it answers to (stored on its Layer node at ingest)
LAYER_ALIASES: dict[str, tuple[str, ...]] = {layer: _aliases(layer) for layer in [*_weight_layers(), *MIXED]}


# -- the converted files' layouts -----------------------------------------------------------------
def _lucent_name(layer: str) -> str:
    """Lucent / ProGamerGov's ``inception5h.pth``: flat names after the graph's ops."""
    if layer == _LOGITS:
        return f"{_LOGITS}_matmul"
    return layer.replace(".", "_") + "_pre_relu_conv"


_CAPTUM_CONVS = {"1x1": "conv_1x1", "3x3_bottleneck": "conv_3x3_reduce", "3x3": "conv_3x3",
                 "5x5_bottleneck": "conv_5x5_reduce", "5x5": "conv_5x5", "pool_reduce": "pool_proj"}
_CAPTUM_TOP = {"conv2d0": "conv1", "conv2d1": "conv2", "conv2d2": "conv3", _LOGITS: "fc"}


def _captum_name(layer: str) -> str:
    """Captum's optim ``inception5h.pth`` (``InceptionV1(aux_logits=False)``): its module names."""
    block, _, conv = layer.partition(".")
    return f"{block}.{_CAPTUM_CONVS[conv]}" if conv else _CAPTUM_TOP[layer]


# layout -> how it names one of this module's weight layers
LAYOUTS: dict[str, Callable[[str], str]] = {"lucent": _lucent_name, "captum": _captum_name}


def converted_keys(layout: str) -> dict[str, str]:
    """This module's state-dict keys -> the keys of the converted file in ``layout``."""
    rename = LAYOUTS[layout]
    return {f"{layer}.{p}": f"{rename(layer)}.{p}" for layer in _weight_layers() for p in ("weight", "bias")}


def _native_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only, no memory and no init
        return {k: tuple(v.shape) for k, v in InceptionV1().state_dict().items()}


def _layout_of(state: dict[str, torch.Tensor], where: str) -> str:
    """The published layout ``state`` has exactly (keys and shapes), else an error saying how it differs."""
    shapes = _native_shapes()
    best, best_overlap = "lucent", -1
    for layout in LAYOUTS:
        keys = converted_keys(layout)
        expected = {keys[k]: s for k, s in shapes.items()}
        overlap = len(expected.keys() & state.keys())
        if overlap > best_overlap:
            best, best_overlap = layout, overlap
        if expected.keys() == state.keys() and all(tuple(state[k].shape) == s for k, s in expected.items()):
            return layout
    keys = converted_keys(best)
    expected = {keys[k]: s for k, s in shapes.items()}
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    bad = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing:
        why = f"lacks {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    elif extra:
        why = f"has {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "") + " besides its weights"
    else:
        why = f"has {bad[0]!r} of shape {tuple(state[bad[0]].shape)}, not {expected[bad[0]]}"
    raise IngestError(f"{where} is not the converted InceptionV1 ({best} layout): it {why}")


def _looks_converted(state: dict[str, torch.Tensor]) -> bool:
    return any(state.keys() & (set(converted_keys(layout).values()) - set(converted_keys(layout)))
               for layout in LAYOUTS)


def native_state_dict(state: dict[str, torch.Tensor], where: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """``state`` in this module's keys: a converted file (either layout, checked exactly) is
    renamed; a state dict saved from :class:`InceptionV1` itself is returned as it is."""
    if not _looks_converted(state):
        return state
    keys = converted_keys(_layout_of(state, where))
    return {native: state[converted] for native, converted in keys.items()}


def read_converted(path: Path) -> dict[str, torch.Tensor]:
    """The weights in a converted ``inception5h.pth`` (either layout), in this module's keys."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
        raise IngestError(f"cannot read {path}: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IngestError(f"{path} holds no state dict (found {type(state).__name__})")
    keys = converted_keys(_layout_of(state, str(path)))
    return {native: state[converted] for native, converted in keys.items()}


# -- download, cache, checksum ----------------------------------------------------------------------
@dataclass(frozen=True)
class WeightsFile:
    """A published weights file: where it is and the checksum a download must match."""

    url: str
    filename: str
    git_blob: str  # the file's git object id in its repository: SHA-1 of b"blob <size>\0" + bytes


# The file Lucent downloads (ProGamerGov/pytorch-old-tensorflow-models, master, Lucid's LRN fixed);
# no SHA-256 is published, but the repository's tree publishes this git blob id for it.
PRETRAINED = WeightsFile(
    url="https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth",
    filename="inception5h.pth",
    git_blob="119f77db85c8352960933e025312b507d9a96ed7",
)
# what ``weights`` may say for the published weights (None and "" too)
PRETRAINED_LABELS = ("inception5h", "default", "DEFAULT", "pretrained")


def git_blob_id(path: Path) -> str:
    """The git object id of a file's bytes (what ``git ls-tree`` / ``git hash-object`` print)."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_hint(spec: WeightsFile) -> str:
    return (f"download {spec.url} elsewhere and pass the file as a checkpoint: "
            f"circuitatlas ingest {NAME} --weights /path/to/{spec.filename} (or --weights none for random weights)")


def fetch_weights(spec: WeightsFile = PRETRAINED, cache_dir: Path | None = None, timeout: float = 60.0) -> Path:
    """The weights file, from the cache or downloaded into it once; a file whose git blob id is
    not ``spec.git_blob`` is refused (and not kept). Beside it, ``<file>.sha256`` records the
    SHA-256 of the verified bytes."""
    folder = (cache_dir or paths.cache_dir()) / "models" / NAME
    target = folder / spec.filename
    if target.is_file():
        found = git_blob_id(target)
        if found == spec.git_blob:
            return target
        raise IngestError(f"the cached {target} does not match its published checksum (git blob {spec.git_blob}, "
                          f"found {found}); delete it to download it again")
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        try:
            with urllib.request.urlopen(spec.url, timeout=timeout) as response, part.open("wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:  # IncompleteRead too
            reason = getattr(exc, "reason", None) or exc
            raise IngestError(f"cannot download the {NAME} weights ({reason}); {_offline_hint(spec)}") from None
        found = git_blob_id(part)
        if found != spec.git_blob:
            raise IngestError(f"the download from {spec.url} does not match its published checksum (git blob "
                              f"{spec.git_blob}, got {found}); nothing was cached")
        read_converted(part)  # the exact layout, before the file is taken into the cache
        digest = _sha256(part)
        os.replace(part, target)
        (folder / f"{spec.filename}.sha256").write_text(f"{digest}  {spec.filename}\n")
    finally:
        part.unlink(missing_ok=True)
    return target


def load(weights: str | None, seed: int = 0, cache_dir: Path | None = None) -> tuple[InceptionV1, str]:
    """The network and the label of its weights: ``"none"`` (random, seeded), the published weights
    (None, ``inception5h``, ``DEFAULT``: downloaded once, cached, checked), or a local copy of the
    converted file (either layout; the label is its path)."""
    torch.manual_seed(seed)
    module = InceptionV1().eval()
    if weights in ("none", "None"):
        return module, "none"
    if weights in (None, "", *PRETRAINED_LABELS):
        path, label = fetch_weights(PRETRAINED, cache_dir), "inception5h"
    else:
        path = Path(weights).expanduser().resolve()  # stored whole: a rebuild from elsewhere finds it
        label = str(path)
        if not path.is_file():
            raise IngestError(f"no weights file {path}; --weights takes none, inception5h (downloaded) or the path "
                              "of a converted inception5h.pth")
    module.load_state_dict(read_converted(path))
    return module, label
