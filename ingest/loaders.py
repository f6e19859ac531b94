"""How each kind of network source is loaded: torchvision and timm by name, checkpoint files
(state dicts and, when trusted, pickled modules), zoo models trained here and planted networks.
The registry in :mod:`circuitatlas.ingest.sources` calls these; each returns a ``LoadedModel``."""

from __future__ import annotations

import difflib
import importlib
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from circuitatlas.analysis import planted
from circuitatlas.errors import IngestError
from circuitatlas.ingest import zoo

__all__ = ["LoadedModel", "torchvision_names", "build_torchvision", "build_timm", "load_checkpoint",
           "load_zoo", "load_planted", "CHECKPOINT_SUFFIXES"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")

# architecture -> its auxiliary classifiers (submodules, None when built without them): they play
# no part in the circuits, and a fine-tuned checkpoint often has none
AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


@dataclass
class LoadedModel:
    module: nn.Module
    arch: str
    source: str  # "torchvision", "timm", "checkpoint", "module", "builtin", "zoo" or "planted"
    weights: str  # "none", a torchvision weights enum, a file path, or "code"
    truth: dict | None = None  # planted networks: what was planted


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision(name: str, weights: str | None, seed: int, known: list[str]) -> tuple[nn.Module, str]:
    """A torchvision classification model; ``weights`` "none"/None (seeded random init), "DEFAULT"
    or an enum name (downloaded by torchvision, so it needs internet). ``known``: other names,
    for the did-you-mean hint."""
    import torchvision

    names = torchvision_names()
    if name not in names:
        close = difflib.get_close_matches(name, names + known, n=3)
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


def build_timm(name: str, weights: str | None, seed: int) -> tuple[nn.Module, str]:
    """A timm model (``timm:NAME``): random init unless ``weights`` asks for the pretrained ones."""
    try:
        import timm
    except ImportError:
        raise IngestError(f"timm:{name} needs the optional timm package: pip install 'circuitatlas[timm]'") from None
    pretrained = weights not in (None, "", "none", "None")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise IngestError(f"timm has no model {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    torch.manual_seed(seed)
    try:
        return timm.create_model(name, pretrained=pretrained), "pretrained" if pretrained else "none"
    except Exception as exc:  # hub downloads fail in many ways
        raise IngestError(f"could not load timm:{name}: {str(exc).splitlines()[0]}") from None


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


def _drop_absent_aux_heads(state: dict[str, torch.Tensor], module: nn.Module, arch: str) -> list[str]:
    """Remove ``module``'s auxiliary classifiers when ``state`` has none of their weights (as
    building with ``aux_logits=False`` would); returns the heads removed. A checkpoint with some
    of them is left to the full check."""
    heads = [h for h in AUX_HEADS.get(arch, ()) if getattr(module, h, None) is not None]
    if not heads or any(k.split(".")[0] in heads for k in state):
        return []
    for head in heads:
        setattr(module, head, None)
    if hasattr(module, "aux_logits"):
        module.aux_logits = False
    return heads


def _check_state_dict(state: dict[str, torch.Tensor], module: nn.Module, arch: str) -> None:
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


def _unpickle(path: Path) -> Any:
    """The object pickled in ``path``; IngestError naming the class when one cannot be imported
    here (its module gone or renamed since the file was saved)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:
        missing = _missing_global(path) or str(exc).splitlines()[0]
        raise IngestError(f"{path} pickles {missing}, which cannot be imported here; make its module importable "
                          "or save a state_dict and pass --arch") from None
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:
        raise IngestError(f"cannot unpickle {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None


def _missing_global(path: Path) -> str | None:
    """The first class or function the pickle in ``path`` names that cannot be imported, or None."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
    try:
        listed = lister(path) if lister is not None else []
    except (RuntimeError, ValueError, pickle.UnpicklingError):
        return None
    for name in listed:
        module, _, attribute = name.rpartition(".")
        try:
            found: Any = importlib.import_module(module)
            for part in attribute.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError, ValueError):
            return name
    return None


def load_checkpoint(path: Path, arch: str | None, trust_pickle: bool, build_arch: Callable[[str], nn.Module],
                    adapt_state: Callable[[dict], dict] | None = None) -> LoadedModel:
    """A checkpoint file: a state dict for architecture ``arch`` (built by ``build_arch``; its keys
    renamed by ``adapt_state`` when the architecture has one), or a pickled module when
    ``trust_pickle``. TorchScript is refused (torch.fx cannot trace it). A googlenet or
    inception_v3 state dict without auxiliary classifiers builds the network without them."""
    if not path.is_file():
        raise IngestError(f"no checkpoint file {path}")
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
        module = _unpickle(path)
        if not isinstance(module, nn.Module):
            raise IngestError(f"{path} holds a {type(module).__name__}, not an nn.Module")
        return LoadedModel(module, type(module).__name__, "checkpoint", str(path))
    if not arch:
        raise IngestError(f"{path} is a state dict: pass --arch NAME (a torchvision model, a zoo model or inceptionv1)")
    module = build_arch(arch)
    if adapt_state is not None:
        state = adapt_state(state)
    dropped = _drop_absent_aux_heads(state, module, arch)
    _check_state_dict(state, module, arch)
    if dropped:
        warnings.warn(f"the checkpoint has no auxiliary classifiers ({', '.join(dropped)}): {arch} is built "
                      "without them (they play no part in the circuits)", stacklevel=2)
    module.load_state_dict(state, strict=False)
    return LoadedModel(module, arch, "checkpoint", str(path))


def load_zoo(name: str) -> LoadedModel:
    """A zoo model, trained here on first use and cached."""
    built = zoo.build(name)
    return LoadedModel(built.module, name, "zoo", str(built.path))


def load_planted(spec: str) -> LoadedModel:
    """A planted network, ``KIND[@SEED]``, with its ground truth."""
    kind, _, seed = spec.partition("@")
    try:
        net = planted.build(kind, seed=int(seed or 0))
    except ValueError as exc:
        raise IngestError(str(exc)) from None
    return LoadedModel(net.module, f"planted:{spec}", "planted", "code", net.truth)
