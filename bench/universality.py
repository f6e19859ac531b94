"""Universality benchmark: match every unit of GoogLeNet's inception3a (256 channels, 28 x 28)
with every unit of ResNet-50's layer2 (512 channels, 28 x 28), random weights, over 2,000 probe
images at 224 px (the stimulus battery at both layers' receptive-field sizes, then smooth random
images up to 2,000), with one random-init ResNet-50 as the null. Time and peak memory, streamed,
beside what holding every image's two maps would take. Prints JSON.

    python bench/universality.py [--images 2000] [--null-models 1] [--out bench/results/universality-2core.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from circuitatlas.analysis.probes import field_size
from circuitatlas.analysis.tuning import receptive_field
from circuitatlas.analysis.universality import as_bytes, battery_probes, image_probes, match_layers, random_init
from circuitatlas.benchmarking import machine

SIZE = 224


def smooth_images(n: int, seed: int, chunk: int = 100) -> np.ndarray:
    """Random images with a natural-looking 1/f-ish spectrum (noise upsampled from four scales),
    as bytes, made ``chunk`` at a time."""
    gen = torch.Generator().manual_seed(seed)
    return np.concatenate([_smooth(min(chunk, n - i), gen) for i in range(0, n, chunk)] or
                          [np.zeros((0, SIZE, SIZE, 3), np.uint8)])


def _smooth(n: int, gen: torch.Generator) -> np.ndarray:
    out = torch.zeros(n, 3, SIZE, SIZE)
    for side in (4, 14, 56, 224):
        out += F.interpolate(torch.rand(n, 3, side, side, generator=gen), size=SIZE, mode="bilinear",
                             align_corners=False) * (side ** -0.5)
    out = (out - out.amin(dim=(1, 2, 3), keepdim=True)) / (out.amax(dim=(1, 2, 3), keepdim=True)
                                                           - out.amin(dim=(1, 2, 3), keepdim=True))
    return as_bytes(out.permute(0, 2, 3, 1).numpy())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--null-models", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.manual_seed(0)
    a = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    b = torchvision.models.resnet50(weights=None).eval()
    la, lb = "inception3a", "layer2"
    fields = [field_size(receptive_field(a, la, SIZE)), field_size(receptive_field(b, lb, SIZE))]
    probes = battery_probes(SIZE, fields, n_angles=16)
    extra = max(0, args.images - len(probes))
    probes = probes + image_probes(smooth_images(extra, 1), ["smooth noise"] * extra)
    nulls = [random_init(b, 1 + k) for k in range(args.null_models)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began = time.monotonic()
    (match,) = match_layers(a, b, [(la, lb)], probes, size_a=SIZE, size_b=SIZE, null_nets=nulls)
    seconds = time.monotonic() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    held = len(probes) * (256 + 512) * 28 * 28 * 4 / 2**20  # both layers' full maps for every image, float32
    result = {
        "benchmark": "universality_match", "machine": machine(), "torch_threads": torch.get_num_threads(),
        "model_a": "googlenet (random init)", "layer_a": la, "model_b": "resnet50 (random init)", "layer_b": lb,
        "probes": probes.counts(), "null_models": args.null_models, "samples": match.samples, "grid": match.grid,
        "units": [int(match.live_a.size), int(match.live_b.size)], "seconds": round(seconds, 1),
        "seconds_per_image": round(seconds / len(probes), 4),
        "peak_rss_mib": round(peak), "rss_before_match_mib": round(rss_before),
        "probe_images_mib": round(probes.images.nbytes / 2**20),  # held as bytes
        "all_maps_held_would_take_mib": round(held), "cka": round(match.cka, 4),
        "stored_at_0.01": int(sum(p["p_value"] < 0.01 for p in match.pairs())),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
