"""Optimise images to maximise an objective. ``render`` returns tensors; saving is the caller's."""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from circuitatlas import checks
from circuitatlas.analysis.featurevis.fusion import folded_for_layers
from circuitatlas.analysis.featurevis.objectives import INPUT, Objective, as_objective
from circuitatlas.analysis.featurevis.objectives import units as objective_units
from circuitatlas.analysis.featurevis.param import PARAMETERISATIONS
from circuitatlas.analysis.featurevis.quality import stimulus_starts
from circuitatlas.analysis.featurevis.settings import STARTS, RenderSettings
from circuitatlas.analysis.featurevis.transforms import Transform, compose, transforms_for
from circuitatlas.analysis.hooks import run_to_layers

__all__ = ["RenderResult", "render", "render_channels", "render_units", "pick_device"]


@dataclass
class RenderResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1], on the CPU
    activations: torch.Tensor  # (B,) the objective on the final, untransformed images
    history: torch.Tensor  # (n_recorded, B) the objective during optimisation (transformed images)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _frozen(model: nn.Module) -> "contextlib.AbstractContextManager[None]":
    """Parameters need no gradients while images are optimised; restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def _cudnn_autotune(enabled: bool) -> "contextlib.AbstractContextManager[None]":
    """Let cuDNN pick the fastest convolution algorithms (the shapes repeat every step); restored after."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _activations(model: nn.Module, layers: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The objective's layers; ``"input"`` is the (transformed) image itself."""
    inner = [layer for layer in layers if layer != INPUT]
    acts = run_to_layers(model, inner, x) if inner else {}
    if INPUT in layers:
        acts[INPUT] = x
    return acts


def render(
    model: nn.Module,
    objective: Objective | str,
    size: int = RenderSettings.size,
    batch: int = 1,
    steps: int = RenderSettings.steps,
    lr: float = RenderSettings.lr,
    param: str = RenderSettings.param,
    transforms: Sequence[Transform] | str = RenderSettings.transforms,
    seed: int = RenderSettings.seed,
    device: str | torch.device | None = None,
    mixed_precision: bool | None = None,
    record_every: int = 16,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    init_sd: float = 0.01,
    channels_last: bool = False,
    fold_bn: bool = True,
    dtype: torch.dtype | None = None,
    init: torch.Tensor | None = None,
) -> RenderResult:
    """Feature visualisation by gradient ascent on ``batch`` images of ``size`` px.

    The forward pass stops at the deepest layer the objective reads. Deterministic on the CPU
    given ``seed``; on CUDA, bf16 autocast unless ``mixed_precision=False``. A larger ``init_sd``
    helps networks whose units are all silent on a flat grey image. The model is moved
    to the device and left in eval mode; hooks are always removed. With ``fold_bn`` the
    optimisation runs on a copy with BatchNorm folded into the convolutions (used only where it
    leaves the objective's activations unchanged: :mod:`.fusion`). ``channels_last`` is off by
    default: on an H100 it made GoogLeNet renders slower (its max-pool backward). ``dtype`` (for
    example ``torch.float64``) runs the image and a copy of the model in that precision: slower,
    but a batch then equals one-at-a-time renders to that precision's rounding, whichever
    convolution kernels the library picks for each batch size. ``param`` names a
    parameterisation of :data:`~.param.PARAMETERISATIONS`; ``transforms`` a preset of
    :data:`~.transforms.TRANSFORMS` or a list of transforms; ``init`` (batch, 3, size, size) in
    [0, 1] gives starting images (the seeded noise is added to them).
    """
    objective = as_objective(objective)
    device = pick_device(device)
    on_cuda = device.type == "cuda"
    model = _prepared(model, objective, size, device, dtype, fold_bn, channels_last)
    generator = torch.Generator().manual_seed(seed)
    make = PARAMETERISATIONS[checks.choice("param", param, sorted(PARAMETERISATIONS))]
    params, image_fn = make(batch, size, sd=init_sd, generator=generator, device=device,
                            dtype=dtype or torch.float32, init=init)
    optimizer = torch.optim.Adam(params, lr=lr)
    transform = compose(transforms_for(transforms, size) if isinstance(transforms, str) else list(transforms))
    use_amp = on_cuda and mixed_precision is not False
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    history = []
    with _frozen(model), _cudnn_autotune(on_cuda):
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            x = transform(image_fn(), generator)
            if preprocess is not None:
                x = preprocess(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                acts = _activations(model, objective.layers, x)
            score = objective(_at_least_fp32(acts))
            (-score.sum()).backward()
            optimizer.step()
            if step % record_every == 0 or step == steps - 1:
                history.append(score.detach().float().cpu())
        with torch.no_grad():
            final_images = image_fn()
            x = preprocess(final_images) if preprocess is not None else final_images
            with autocast():
                acts = _activations(model, objective.layers, x)
            final = objective(_at_least_fp32(acts))
    keep = torch.float32 if dtype is None else dtype
    return RenderResult(final_images.detach().to(keep).cpu(), final.detach().cpu(), torch.stack(history))


def _prepared(model: nn.Module, objective: Objective, size: int, device: torch.device, dtype: torch.dtype | None,
              fold_bn: bool, channels_last: bool) -> nn.Module:
    """The model as the optimisation runs it: in ``dtype`` (a copy: the caller's model keeps its
    precision), on the device in eval mode, BatchNorm folded where that is exact, channels-last."""
    if dtype is not None and any(p.dtype != dtype for p in model.parameters()):
        model = copy.deepcopy(model).to(dtype)
    model = model.to(device).eval()
    if fold_bn:
        model = folded_for_layers(model, [layer for layer in objective.layers if layer != INPUT], size, device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _at_least_fp32(acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Activations for the objective: bf16/fp16 ones (autocast) in fp32, others as they are."""
    return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in acts.items()}


def render_channels(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    chunk: int | None = None,
    at_centre: bool = False,
    progress: Callable[[int], None] | None = None,
    on_chunk: Callable[[list[int], RenderResult], None] | None = None,
    **kwargs,
) -> RenderResult:
    """One image per channel of ``layer``, each optimising its own channel, many channels per
    batch: :func:`render_units` over one layer. ``on_chunk(channels, result)`` after each batch."""
    report = None if on_chunk is None else (lambda group, part: on_chunk([c for _, c in group], part))
    return render_units(model, [(layer, c) for c in channels], chunk=chunk, at_centre=at_centre, progress=progress,
                        on_chunk=report, **kwargs)


def render_units(
    model: nn.Module,
    units: Sequence[tuple[str, int]],
    chunk: int | None = None,
    at_centre: bool = False,
    progress: Callable[[int], None] | None = None,
    on_chunk: Callable[[list[tuple[str, int]], RenderResult], None] | None = None,
    start: str = RenderSettings.start,
    **kwargs,
) -> RenderResult:
    """One image per ``(layer, channel)`` unit, each optimising its own unit, many units per batch.

    ``chunk`` bounds the batch (default: :data:`CPU_CHUNK` on the CPU, where a smaller batch stays
    in cache: 64 channels of a zoo layer at 64 px took 48 s in chunks of 16, 63 s in 8 or 64; 512
    on CUDA); the units are split, in the order given, into equal chunks, so that no small
    remainder costs a whole optimisation of its own. A chunk may span layers (give the units in
    network order: its forward runs to the deepest of its layers), so a whole-model job renders in
    batches of one size. A chunk that runs out of device memory is retried as two halves, down to
    one unit. ``at_centre`` optimises centre neurons instead of channel means. After each chunk, ``on_chunk(units, result)`` (to save it
    before the next one starts), then ``progress(n)``. ``start="stimulus"`` starts each unit's
    image from its best synthetic stimulus (:func:`~.quality.stimulus_starts`) instead of noise.
    """
    units = [(layer, int(c)) for layer, c in units]
    device = pick_device(kwargs.get("device"))
    starts = None
    if checks.choice("start", start, STARTS) == "stimulus":  # on the render's device: the bank is a
        model.to(device)                                     # forward pass of ~570 images per layer
        starts = stimulus_starts(model, units, kwargs.get("size", RenderSettings.size))
    limit = (CUDA_CHUNK if device.type == "cuda" else CPU_CHUNK) if chunk is None else checks.whole("chunk", chunk, 1)
    parts: list[RenderResult] = []
    done = 0
    while done < len(units):
        rest = units[done:]
        group = rest[:_equal_chunk(len(rest), limit)]
        try:
            init = None if starts is None else starts[done:done + len(group)]
            part = render(model, objective_units(group, at_centre=at_centre), batch=len(group), init=init, **kwargs)
        except torch.OutOfMemoryError:
            if len(group) == 1:
                raise
            part = None  # retried below, once the exception (and the memory it holds) is gone
        if part is None:
            limit = len(group) // 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        parts.append(part)
        done += len(group)
        if on_chunk is not None:
            on_chunk(group, part)
        if progress is not None:
            progress(len(group))
    return RenderResult(torch.cat([p.images for p in parts]), torch.cat([p.activations for p in parts]),
                        torch.cat([p.history for p in parts], dim=1))


CPU_CHUNK, CUDA_CHUNK = 16, 512  # units per batch when the caller names no chunk


def _equal_chunk(n: int, limit: int) -> int:
    """The size of ``n`` items split into the fewest equal chunks of at most ``limit``."""
    return max(1, math.ceil(n / max(1, math.ceil(n / max(1, limit)))))
