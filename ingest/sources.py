"""Where a network comes from: a torchvision name, a checkpoint file, or an ``nn.Module``."""

from __future__ import annotations

import difflib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from circuitatlas.errors import IngestError

__all__ = ["LoadedModel", "load_model", "build_arch", "register_arch", "weights_fingerprint"]

# Extra architectures by name (the demo network, the zoo): name -> builder(seed) -> nn.Module
_ARCHS: dict[str, Callable[[], nn.Module]] = {}


def register_arch(name: str, builder: Callable[[], nn.Module]) -> None:
    """Make ``name`` usable as ``--arch`` and as an ingest source (built with random weights)."""
    _ARCHS[name] = builder


@dataclass
class LoadedModel:
    module: nn.Module
    arch: str
    source: str  # "torchvision", "checkpoint", "module", "builtin", "zoo" or "planted"
    weights: str  # "none", a torchvision weights enum, a file path, or "code"
    truth: dict | None = None  # planted networks: what was planted


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_arch(name: str, weights: str | None = None, seed: int = 0) -> tuple[nn.Module, str]:
    """Build architecture ``name``; ``weights`` is "none"/None (seeded random init), "DEFAULT"
    or a torchvision weights enum name (downloaded by torchvision, so it needs internet)."""
    import circuitatlas.demo  # noqa: F401  registers the built-in architectures
    from circuitatlas import zoo

    if name in zoo.SPECS:  # an untrained zoo architecture (for --arch with a state dict)
        torch.manual_seed(seed)
        return zoo.make_net(zoo.SPECS[name]), "none"
    if name in _ARCHS:
        torch.manual_seed(seed)
        return _ARCHS[name](), "none"
    import torchvision

    names = _torchvision_names()
    if name not in names:
        close = difflib.get_close_matches(name, names + sorted(_ARCHS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (`torchvision.models.list_models()` lists them)"
        raise IngestError(f"unknown model {name!r}{hint}")
    kwargs: dict[str, Any] = {}
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True  # silences torchvision's warning; pretrained weights override it
    weight_name = "none" if weights in (None, "", "none", "None") else weights
    if weight_name == "none":
        torch.manual_seed(seed)
        return torchvision.models.get_model(name, weights=None, **kwargs), "none"
    try:
        enum = torchvision.models.get_model_weights(name)
        chosen = enum.DEFAULT if weight_name == "DEFAULT" else enum[weight_name.split(".")[-1]]
    except KeyError:
        options = ", ".join(w.name for w in torchvision.models.get_model_weights(name))
        raise IngestError(f"{name} has no weights {weight_name!r}; choose DEFAULT, none or one of: {options}") from None
    kwargs.pop("init_weights", None)
    try:
        return torchvision.models.get_model(name, weights=chosen), f"{type(chosen).__name__}.{chosen.name}"
    except Exception as exc:  # network errors come in many types
        raise IngestError(f"could not load {name} weights {chosen.name}: {str(exc).splitlines()[0]}") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor] | None:
    """The state dict inside ``path``, or None when the file holds something else (a module)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise IngestError(f"cannot read {path}: not a valid safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "Unsupported global" in str(exc):
            return None  # a pickled module (or other objects): needs --trust-pickle
        lines = str(exc).splitlines() or [type(exc).__name__]
        reason = next((line for line in lines if "Error" in line), lines[0])
        raise IngestError(f"cannot read checkpoint {path}: {reason.strip()[:200]}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    raise IngestError(f"{path} holds no state dict (found {type(obj).__name__})")


def _load_checkpoint(path: Path, arch: str | None, trust_pickle: bool) -> LoadedModel:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("constants.pkl") for name in archive.namelist()):
                raise IngestError(
                    f"{path} is TorchScript, which torch.fx cannot trace; save the model's state_dict and pass --arch"
                )
    state = _read_state_dict(path)
    if state is None:
        if not trust_pickle:
            raise IngestError(
                f"{path} is a pickled module; unpickling runs code from the file, so pass --trust-pickle "
                "only if you trust it (or save a state_dict and pass --arch)"
            )
        module = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(module, nn.Module):
            raise IngestError(f"{path} holds a {type(module).__name__}, not an nn.Module")
        return LoadedModel(module, type(module).__name__, "checkpoint", str(path))
    if not arch:
        raise IngestError(f"{path} is a state dict: pass --arch NAME (a torchvision model or a zoo model)")
    module, _ = build_arch(arch)
    expected = module.state_dict()
    for key, value in state.items():
        if key not in expected:
            raise IngestError(f"checkpoint key {key!r} is not in {arch}; is --arch right?")
        if tuple(expected[key].shape) != tuple(value.shape):
            raise IngestError(
                f"checkpoint {key!r} has shape {tuple(value.shape)}, {arch} expects {tuple(expected[key].shape)}"
            )
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise IngestError(f"checkpoint lacks {missing[0]!r} (and {len(missing) - 1} more) that {arch} needs")
    module.load_state_dict(state, strict=False)
    return LoadedModel(module, arch, "checkpoint", str(path))


def _zoo_or_planted(source: str) -> LoadedModel | None:
    from circuitatlas import zoo
    from circuitatlas.analysis import planted

    name = source.removeprefix("zoo:")
    if source.startswith("zoo:") or name in zoo.SPECS:
        built = zoo.build(name)
        return LoadedModel(built.module, name, "zoo", str(built.path))
    if source.startswith("planted:"):
        kind, _, seed = source.removeprefix("planted:").partition("@")
        try:
            net = planted.build(kind, seed=int(seed or 0))
        except ValueError as exc:
            raise IngestError(str(exc)) from None
        return LoadedModel(net.module, source, "planted", "code", net.truth)
    return None


def weights_fingerprint(module: nn.Module) -> str:
    """A short SHA-256 of the module's parameters and buffers (names, dtypes, shapes, bytes): equal
    for equal weights, whatever file or code they came from."""
    import hashlib

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


def rebuild(meta: dict, trust_pickle: bool = False) -> nn.Module:
    """The network a Model node describes (its ``source``, ``arch`` and ``weights``), rebuilt so
    that a model in the graph can be analysed later without the user keeping Python objects;
    checked against the fingerprint of the weights ingested (a checkpoint file may have changed)."""
    source, arch, weights = meta.get("source"), meta.get("arch"), meta.get("weights")
    if source in ("zoo", "planted"):
        module = _zoo_or_planted(arch if source == "planted" else f"zoo:{arch}").module.eval()
    elif source in ("torchvision", "builtin"):
        module = build_arch(arch, weights)[0].eval()
    elif source == "checkpoint":
        known = arch in _ARCHS or arch in _torchvision_names()
        module = load_model(weights, arch=arch if known else None, trust_pickle=trust_pickle).module
    else:
        raise IngestError(
            f"model {meta.get('id')!r} was ingested from a Python object and cannot be rebuilt; pass the module itself"
        )
    return check_fingerprint(module, meta)


def load_model(
    source: str | nn.Module,
    weights: str | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
) -> LoadedModel:
    """Resolve ``source``: an ``nn.Module``, a checkpoint path (.pt/.pth/.safetensors), a
    registered architecture or a torchvision model name."""
    if isinstance(source, nn.Module):
        return LoadedModel(source.eval(), arch or type(source).__name__, "module", "module")
    special = _zoo_or_planted(str(source))
    if special is not None:
        return special
    path = Path(source)
    if path.suffix in (".pt", ".pth", ".safetensors", ".bin", ".ckpt") or path.exists():
        if not path.is_file():
            raise IngestError(f"no checkpoint file {path}")
        loaded = _load_checkpoint(path, arch, trust_pickle)
    else:
        module, weights_used = build_arch(str(source), weights)
        loaded = LoadedModel(module, str(source), "builtin" if source in _ARCHS else "torchvision", weights_used)
    loaded.module.eval()
    return loaded
