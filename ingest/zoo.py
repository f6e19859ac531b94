"""A zoo of small CNNs trained here, on procedurally generated tasks, with fixed seeds.

Each model trains in a few minutes on 2 CPU cores and is cached on disk under a content hash
of its specification (task, architecture, seed, training settings, code version) and of the
torch version that trains it, so building it twice costs nothing, a changed recipe never returns
a stale model, and a machine with an older cache trains what a fresh machine would (a new torch
can train the same seed to other weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from circuitatlas import paths
from circuitatlas.analysis import stimuli
from circuitatlas.errors import IngestError
from circuitatlas.paths import file_lock

__all__ = ["ZooSpec", "ZooModel", "SPECS", "build", "list_models", "make_net", "task_data", "save_task_images"]

RECIPE_VERSION = 1  # bump when data or training code changes meaning


@dataclass(frozen=True)
class ZooSpec:
    name: str
    task: str  # "curves" or "shape_color"
    arch: str  # "small" or "wide"
    seed: int
    size: int = 32
    train: int = 9000
    test: int = 1000
    epochs: int = 3
    batch: int = 64
    lr: float = 3e-3
    description: str = ""


SPECS: dict[str, ZooSpec] = {s.name: s for s in (
    ZooSpec("curves", "curves", "small", 0, description="orientation of a curve in noise, 8 classes"),
    ZooSpec("curves-seed1", "curves", "small", 1, description="the curves task, second seed"),
    # these two only need to learn their task (cross-architecture and cross-task checks): a third of
    # the data of the curve models trains them in a third of the time, above 0.95 on fresh data
    ZooSpec("curves-wide", "curves", "wide", 0, train=3000, description="the curves task, second architecture"),
    ZooSpec("shape-color", "shape_color", "small", 0, train=3000,
            description="shape (disc, ring, stripes) x colour (red, green, blue), 9 classes"),
)}

CURVE_CLASSES = 8
_COLORS = {"red": (0.9, 0.15, 0.1), "green": (0.15, 0.8, 0.2), "blue": (0.15, 0.3, 0.95)}
_SHAPES = ("disc", "ring", "stripes")


def _curve_sample(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    orientation = label * 360.0 / CURVE_CLASSES + rng.uniform(-10, 10)
    jitter = rng.uniform(-4, 4, 2)
    img = stimuli.curve(orientation, radius=rng.uniform(6, 12), size=size, span=rng.uniform(90, 150),
                        position=((size - 1) / 2 + jitter[0], (size - 1) / 2 + jitter[1]),
                        width=rng.uniform(1.5, 2.5), color=(rng.uniform(0.6, 1.0),) * 3)
    return np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1).astype(np.float32)


def _shape_color_sample(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    shape, color = _SHAPES[label // 3], list(_COLORS.values())[label % 3]
    jitter = rng.uniform(-3, 3, 2)
    position = ((size - 1) / 2 + jitter[0], (size - 1) / 2 + jitter[1])
    background = (rng.uniform(0.0, 0.35),) * 3
    radius = rng.uniform(6, 10)
    if shape == "disc":
        img = stimuli.center_surround(radius, color, background, size, position)
    elif shape == "ring":
        img = stimuli.circle(radius, size, rng.uniform(1.5, 2.5), position, color, background)
    else:
        stripes = stimuli.grating(rng.uniform(0.15, 0.3), rng.uniform(0, 180), rng.uniform(0, 360), size)[..., :1]
        mask = stimuli.center_surround(radius + 2, (1, 1, 1), (0, 0, 0), size, position)[..., :1]
        img = background + (np.asarray(color) * stripes - np.asarray(background)) * mask
    return np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)


_TASKS: dict[str, tuple[int, Callable[[np.random.Generator, int, int], np.ndarray]]] = {
    "curves": (CURVE_CLASSES, _curve_sample),
    "shape_color": (len(_SHAPES) * len(_COLORS), _shape_color_sample),
}


def task_data(task: str, n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 3, size, size) and labels, balanced over classes, deterministic in ``seed``."""
    classes, sample = _TASKS[task]
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = np.stack([sample(rng, int(label), size) for label in labels])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long()


def save_task_images(task: str, folder: Path, n: int, seed: int, size: int = 32) -> Path:
    """``n`` fresh images of ``task`` as PNG files in ``folder`` (created), named by index: the
    zoo models' own kind of natural image, for dataset examples and cross-model comparison."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x, _ = task_data(task, n, seed=seed, size=size)
    for i, image in enumerate(x.permute(0, 2, 3, 1).numpy()):
        Image.fromarray((image.clip(0, 1) * 255).round().astype(np.uint8)).save(folder / f"{i:05d}.png")
    return folder


class ZooNet(nn.Module):
    """conv-BN-ReLU stages with max-pooling, global average pooling and a linear classifier."""

    def __init__(self, widths: tuple[int, ...], kernels: tuple[int, ...], classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, (w, k) in enumerate(zip(widths, kernels)):
            layers += [nn.Conv2d(in_ch, w, k, padding=k // 2, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i in (1, 2):
                layers.append(nn.MaxPool2d(2))
            in_ch = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


_ARCHS = {"small": ((16, 32, 32, 64), (5, 3, 3, 3)), "wide": ((24, 48, 64), (7, 5, 3))}


def make_net(spec: ZooSpec) -> ZooNet:
    widths, kernels = _ARCHS[spec.arch]
    return ZooNet(widths, kernels, _TASKS[spec.task][0])


@dataclass
class ZooModel:
    spec: ZooSpec
    module: ZooNet
    accuracy: float
    path: Path
    train_seconds: float


def _key(spec: ZooSpec) -> str:
    return hashlib.sha256(json.dumps([asdict(spec), RECIPE_VERSION, torch.__version__]).encode()).hexdigest()[:12]


def cache_path(spec: ZooSpec) -> Path:
    return paths.cache_dir() / "zoo" / f"{spec.name}-{_key(spec)}.pt"


def _train(spec: ZooSpec, progress: Callable[[str], None] | None) -> tuple[ZooNet, float]:
    torch.manual_seed(spec.seed)
    x_train, y_train = task_data(spec.task, spec.train, seed=1000 + spec.seed, size=spec.size)
    x_test, y_test = task_data(spec.task, spec.test, seed=2000 + spec.seed, size=spec.size)
    net = make_net(spec)
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    steps = spec.epochs * ((spec.train + spec.batch - 1) // spec.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(spec.seed)
    accuracy = 0.0
    for epoch in range(spec.epochs):
        net.train()
        for idx in torch.randperm(spec.train, generator=gen).split(spec.batch):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x_train[idx]), y_train[idx]).backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
        if progress:
            progress(f"{spec.name}: epoch {epoch + 1}/{spec.epochs}, test accuracy {accuracy:.3f}")
    return net.eval(), accuracy


def build(name: str, progress: Callable[[str], None] | None = None, retrain: bool = False) -> ZooModel:
    """The trained zoo model ``name``, from the cache or trained now (minutes, seeded)."""
    if name not in SPECS:
        raise IngestError(f"no zoo model {name!r}; choose one of {', '.join(SPECS)}")
    spec = SPECS[name]
    path = cache_path(spec)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if path.exists() and not retrain:
        return _load(spec, path)
    with file_lock(path.with_suffix(".lock")):  # two processes asking at once: one trains, the other waits
        if path.exists() and not retrain:
            return _load(spec, path)
        began = time.monotonic()
        net, accuracy = _train(spec, progress)
        seconds = time.monotonic() - began
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"state_dict": net.state_dict(), "accuracy": accuracy, "train_seconds": seconds,
                    "spec": asdict(spec)}, tmp)
        tmp.replace(path)
    return ZooModel(spec, net, accuracy, path, seconds)


def _load(spec: ZooSpec, path: Path) -> ZooModel:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = make_net(spec)
    net.load_state_dict(saved["state_dict"])
    return ZooModel(spec, net.eval(), saved["accuracy"], path, saved["train_seconds"])


def list_models() -> list[dict]:
    """Every zoo model with its task and whether (and how well) it is built."""
    out = []
    for spec in SPECS.values():
        path = cache_path(spec)
        row = {"name": spec.name, "task": spec.task, "arch": spec.arch, "seed": spec.seed,
               "description": spec.description, "built": path.exists(), "accuracy": None, "path": str(path)}
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            row.update(accuracy=saved["accuracy"], train_seconds=round(saved["train_seconds"], 1))
        out.append(row)
    return out
