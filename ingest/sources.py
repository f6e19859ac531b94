"""Where a network comes from: one registry of sources (zoo, planted, InceptionV1, timm,
checkpoint files, built-in architectures, torchvision), each registered explicitly in
:func:`default_registry` with how it loads a source string and how a stored model of it is
rebuilt; plus the weights fingerprint that ties a rebuilt or handed-over network to the weights
that were ingested.

A new source is one :class:`Source` added there (or to a registry of your own). An architecture
may bring a state-dict adapter (a published file's keys -> its own) and layer aliases (other names
of its layers, stored at ingest and accepted everywhere a layer is named)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from circuitatlas.errors import IngestError
from circuitatlas.ingest import builtin, inceptionv1, loaders, zoo
from circuitatlas.ingest.loaders import LoadedModel

__all__ = ["LoadedModel", "LoadRequest", "Source", "NetworkRegistry", "default_registry", "load_model",
           "build_arch", "register_arch", "layer_aliases", "rebuild", "weights_fingerprint", "check_fingerprint"]

StateAdapter = Callable[[dict], dict]  # a checkpoint's state dict -> the architecture's own keys
Aliases = Mapping[str, Sequence[str]]  # canonical layer name -> the other names it answers to


@dataclass(frozen=True)
class LoadRequest:
    """What a caller asks of a source besides its name."""

    weights: str | None = None  # torchvision/timm weights ("none", "DEFAULT", an enum name)
    arch: str | None = None  # the architecture of a state-dict checkpoint
    trust_pickle: bool = False  # allow unpickling a whole module (runs code from the file)


@dataclass(frozen=True)
class Source:
    """One kind of network source: which source strings it claims, how it loads one, and how a
    Model node it produced (``source``, ``arch``, ``weights``) is rebuilt."""

    name: str
    claims: Callable[[str], bool]
    load: Callable[[str, LoadRequest], LoadedModel]
    rebuild: Callable[[dict, LoadRequest], nn.Module]


class NetworkRegistry:
    """Sources in order of precedence (the first that claims a string loads it) and
    architectures built by name (for ``--arch`` and as sources of their own)."""

    def __init__(self) -> None:
        self._sources: dict[str, Source] = {}
        self._archs: dict[str, Callable[[], nn.Module]] = {}
        self._adapters: dict[str, StateAdapter] = {}
        self._aliases: dict[str, Aliases] = {}

    def add_source(self, source: Source) -> None:
        self._sources[source.name] = source

    def add_arch(self, name: str, builder: Callable[[], nn.Module], adapt_state: StateAdapter | None = None,
                 aliases: Aliases | None = None) -> None:
        """Make ``name`` buildable with random weights (seeded), as ``--arch`` and as a source;
        ``adapt_state`` renames a checkpoint's keys to the module's, ``aliases`` are other names
        of its layers."""
        self._archs[name] = builder
        if adapt_state is not None:
            self._adapters[name] = adapt_state
        if aliases is not None:
            self._aliases[name] = aliases

    def state_adapter(self, arch: str | None) -> StateAdapter | None:
        """How a checkpoint for ``arch`` is renamed to its module's keys (None: it is not)."""
        return self._adapters.get(arch or "")

    def layer_aliases(self, arch: str | None) -> Aliases:
        """Canonical layer name -> other names, for models of ``arch`` (empty for most)."""
        return self._aliases.get(arch or "", {})

    def has_arch(self, name: str | None) -> bool:
        return bool(name) and (name in self._archs or name.startswith("timm:") or name in loaders.torchvision_names())

    def is_registered(self, name: str) -> bool:
        """``name`` was added with :meth:`add_arch` (a built-in, not a torchvision name)."""
        return name in self._archs

    def build_arch(self, name: str, weights: str | None = None, seed: int = 0) -> tuple[nn.Module, str]:
        """Architecture ``name`` (registered, ``timm:NAME`` or torchvision) and the weights used."""
        if name in self._archs:
            torch.manual_seed(seed)
            return self._archs[name](), "none"
        if name.startswith("timm:"):
            return loaders.build_timm(name.removeprefix("timm:"), weights, seed)
        return loaders.build_torchvision(name, weights, seed, sorted(self._archs))

    def load(self, source: str | nn.Module, request: LoadRequest = LoadRequest()) -> LoadedModel:
        """Resolve ``source``: an ``nn.Module`` as it is, else the first source that claims it."""
        if isinstance(source, nn.Module):
            return LoadedModel(source.eval(), request.arch or type(source).__name__, "module", "module")
        text = str(source)
        found = next((s for s in self._sources.values() if s.claims(text)), None)
        if found is None:
            raise IngestError(f"no source knows {text!r}")
        loaded = found.load(text, request)
        loaded.module.eval()
        return loaded

    def rebuild(self, meta: dict, trust_pickle: bool = False) -> nn.Module:
        """The network a Model node describes, checked against its weights fingerprint."""
        source = self._sources.get(meta.get("source") or "")
        if source is None:
            raise IngestError(f"model {meta.get('id')!r} was ingested from a Python object and cannot be "
                              "rebuilt; pass the module itself")
        request = LoadRequest(meta.get("weights"), meta.get("arch"), trust_pickle)
        return check_fingerprint(source.rebuild(meta, request).eval(), meta)


def _looks_like_file(text: str) -> bool:
    return Path(text).suffix in loaders.CHECKPOINT_SUFFIXES or Path(text).exists()


def default_registry() -> NetworkRegistry:
    """The sources circuitatlas knows, registered here and nowhere else."""
    reg = NetworkRegistry()
    for name, builder in builtin.ARCHS.items():
        reg.add_arch(name, builder)
    for name, spec in zoo.SPECS.items():  # untrained zoo architectures, for a state dict's --arch
        reg.add_arch(name, functools.partial(zoo.make_net, spec))
    reg.add_arch(inceptionv1.NAME, inceptionv1.InceptionV1, adapt_state=inceptionv1.native_state_dict,
                 aliases=inceptionv1.LAYER_ALIASES)
    reg.add_source(Source(
        "zoo", lambda s: s.startswith("zoo:") or s in zoo.SPECS,
        lambda s, r: loaders.load_zoo(s.removeprefix("zoo:")),
        lambda meta, r: loaders.load_zoo(meta["arch"]).module))
    reg.add_source(Source(
        "planted", lambda s: s.startswith("planted:"),
        lambda s, r: loaders.load_planted(s.removeprefix("planted:")),
        lambda meta, r: loaders.load_planted(meta["arch"].removeprefix("planted:")).module))
    reg.add_source(Source(  # Lucid's InceptionV1 ("inception5h"): downloaded weights, "none" or a local copy
        inceptionv1.NAME, lambda s: s == inceptionv1.NAME,
        lambda s, r: _inceptionv1(r.weights),
        lambda meta, r: _inceptionv1(meta.get("weights")).module))
    reg.add_source(Source(
        "timm", lambda s: s.startswith("timm:"),
        lambda s, r: _built(reg, s, r, "timm"),
        lambda meta, r: reg.build_arch(meta["arch"], meta.get("weights"))[0]))
    reg.add_source(Source(
        "checkpoint", _looks_like_file,
        lambda s, r: loaders.load_checkpoint(Path(s), r.arch, r.trust_pickle, lambda a: reg.build_arch(a)[0],
                                             reg.state_adapter(r.arch)),
        lambda meta, r: loaders.load_checkpoint(Path(meta["weights"]), r.arch if reg.has_arch(r.arch) else None,
                                                r.trust_pickle, lambda a: reg.build_arch(a)[0],
                                                reg.state_adapter(r.arch)).module))
    reg.add_source(Source(
        "builtin", lambda s: reg.is_registered(s) and s not in zoo.SPECS,
        lambda s, r: _built(reg, s, r, "builtin"),
        lambda meta, r: reg.build_arch(meta["arch"], meta.get("weights"))[0]))
    reg.add_source(Source(  # last: every other name is a torchvision model (or an unknown one)
        "torchvision", lambda s: True,
        lambda s, r: _built(reg, s, r, "torchvision"),
        lambda meta, r: reg.build_arch(meta["arch"], meta.get("weights"))[0]))
    return reg


def _inceptionv1(weights: str | None) -> LoadedModel:
    module, label = inceptionv1.load(weights)
    return LoadedModel(module, inceptionv1.NAME, inceptionv1.NAME, label)


def _built(reg: NetworkRegistry, name: str, request: LoadRequest, source: str) -> LoadedModel:
    module, weights = reg.build_arch(name, request.weights)
    return LoadedModel(module, name, source, weights)


@functools.lru_cache(maxsize=1)
def registry() -> NetworkRegistry:
    """The process's registry: the default one, built on first use. The one process-wide mutable
    object of circuitatlas, on purpose: :func:`register_arch` adds to it, as a plugin would."""
    return default_registry()


def load_model(source: str | nn.Module, weights: str | None = None, arch: str | None = None,
               trust_pickle: bool = False) -> LoadedModel:
    """Resolve ``source``: an ``nn.Module``, a checkpoint path (.pt/.pth/.safetensors), ``zoo:NAME``,
    ``planted:KIND[@SEED]``, ``timm:NAME``, a built-in architecture or a torchvision model name."""
    return registry().load(source, LoadRequest(weights, arch, trust_pickle))


def build_arch(name: str, weights: str | None = None, seed: int = 0) -> tuple[nn.Module, str]:
    """Build architecture ``name`` with seeded random weights (or the named ``weights``)."""
    return registry().build_arch(name, weights, seed)


def register_arch(name: str, builder: Callable[[], nn.Module]) -> None:
    """Make ``name`` usable as ``--arch`` and as an ingest source (built with random weights)."""
    registry().add_arch(name, builder)


def layer_aliases(arch: str | None) -> Aliases:
    """Other names of the layers of architecture ``arch`` (canonical name -> aliases; mostly empty)."""
    return registry().layer_aliases(arch)


def rebuild(meta: dict, trust_pickle: bool = False) -> nn.Module:
    """The network a Model node describes (its ``source``, ``arch`` and ``weights``), rebuilt so
    that a model in the graph can be analysed later without the user keeping Python objects;
    checked against the fingerprint of the weights ingested (a checkpoint file may have changed)."""
    return registry().rebuild(meta, trust_pickle)


def weights_fingerprint(module: nn.Module) -> str:
    """A short SHA-256 of the module's parameters and buffers (names, dtypes, shapes, bytes): equal
    for equal weights, whatever file or code they came from."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:24]


def check_fingerprint(module: nn.Module, meta: dict) -> nn.Module:
    """``module`` when its weights are the ones ingested as ``meta`` (or none were recorded); else
    an error, rather than analyses of other weights annotating this model's neurons."""
    recorded = meta.get("weights_sha256")
    if recorded and weights_fingerprint(module) != recorded:
        where = f" ({meta.get('weights')})" if meta.get("source") == "checkpoint" else ""
        raise IngestError(f"the weights of model {meta.get('id')!r}{where} are not the ones ingested; "
                          "re-ingest it with --replace, or pass the module it was ingested from")
    return module
