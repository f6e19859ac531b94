"""Feature-visualisation benchmark: one image per channel of a layer, batched against
one-at-a-time, measured side by side in one run. Prints JSON.

    python bench/featurevis.py [--model curves] [--layer features.11] [--size 64] [--steps 256] [--sample 4]

On a GPU machine pass --model googlenet --layers inception3a,...,inception5b --size 128 --steps 512.
--whole-job also renders every layer's channels as one job (render_units: batches of one size in
network order, a batch may span two layers) and reports it side by side with the per-layer total.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from circuitatlas.analysis.featurevis import channel, pick_device, render, render_channels, render_units
from circuitatlas.analysis.hooks import run_to_layers
from circuitatlas.benchmarking import machine
from circuitatlas.ingest.sources import load_model


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="curves", help="a zoo or torchvision name")
    parser.add_argument("--layers", default="features.11")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--sample", type=int, default=4, help="channels rendered one at a time")
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--no-fold-bn", dest="fold_bn", action="store_false")
    parser.add_argument("--check-bf16", type=int, default=0, metavar="N",
                        help="also render N channels of the first layer in fp32 and compare (CUDA)")
    parser.add_argument("--whole-job", action="store_true",
                        help="also render all the layers as one job in batches of one size, side by side")
    parser.add_argument("--compare-fold", action="store_true",
                        help="also render the first layer batched without BatchNorm folding, side by side")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args()


def _timed(device: torch.device, work) -> float:
    """Seconds ``work()`` takes, the GPU's queue included."""
    began = time.monotonic()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.monotonic() - began


def _one_layer(model, layer: str, args, device: torch.device) -> dict:
    """A whole layer batched against a sample of its channels one at a time."""
    n = _channels(model, layer, args.size, device)
    common = {"size": args.size, "steps": args.steps, "device": device, "channels_last": args.channels_last,
              "fold_bn": args.fold_bn}
    batched_s = _timed(device, lambda: render_channels(model, layer, list(range(n)), chunk=args.chunk, **common))
    sample = list(range(min(args.sample, n)))
    if not sample:
        raise SystemExit("--sample must be at least 1 (the one-at-a-time reference)")
    single_s = _timed(device, lambda: [render(model, channel(layer, c), **common) for c in sample]) / len(sample)
    return {"layer": layer, "channels": n, "batched_s": round(batched_s, 2),
            "batched_image_steps_per_s": round(n * args.steps / batched_s, 1),
            "single_s_per_channel": round(single_s, 3), "single_image_steps_per_s": round(args.steps / single_s, 1),
            "speedup_per_channel": round(single_s / (batched_s / n), 2)}


def _totals(result: dict, device: torch.device) -> None:
    total_batched = sum(row["batched_s"] for row in result["layers"])
    total_single = sum(row["single_s_per_channel"] * row["channels"] for row in result["layers"])
    result["total_batched_s"] = round(total_batched, 1)
    result["total_channels"] = sum(row["channels"] for row in result["layers"])
    result["one_at_a_time_estimate_s"] = round(total_single, 1)
    result["speedup_per_channel"] = round(total_single / total_batched, 1)
    if device.type == "cpu":
        result["target"] = "a 64-channel zoo layer at 64 px and 256 steps in under 60 s on this CPU"
        result["meets_target"] = total_batched < 60
    else:
        result["target"] = "GoogLeNet inception3a..inception5b at 512 steps, 128 px in <= 180 s, >= 100x one-at-a-time"
        result["meets_target"] = total_batched <= 180 and total_single / total_batched >= 100


def _whole_job(model, result: dict, args, device: torch.device) -> dict:
    """Every layer's units as one job in batches of one size, against the per-layer total."""
    units = [(row["layer"], c) for row in result["layers"] for c in range(row["channels"])]
    whole_s = _timed(device, lambda: render_units(model, units, chunk=args.chunk, size=args.size, steps=args.steps,
                                                  device=device, channels_last=args.channels_last,
                                                  fold_bn=args.fold_bn))
    report = {"channels": len(units), "seconds": round(whole_s, 1), "per_layer_total_s": result["total_batched_s"],
              "speedup_over_per_layer": round(result["total_batched_s"] / whole_s, 3)}
    if device.type == "cuda":
        report["meets_target"] = whole_s <= 180
    return report


def main() -> None:
    args = _arguments()
    device = pick_device()
    model = load_model(args.model).module.to(device).eval()
    result = {"benchmark": "featurevis", "model": args.model, "size": args.size, "steps": args.steps,
              "device": str(device), "machine": machine(),
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "layers": []}
    for layer in args.layers.split(","):
        result["layers"].append(_one_layer(model, layer, args, device))
        print(json.dumps(result["layers"][-1]), file=sys.stderr, flush=True)
        if args.out is not None:  # partial results survive a time limit
            args.out.write_text(json.dumps(result, indent=2))
    _totals(result, device)
    if args.whole_job:
        result["whole_job"] = _whole_job(model, result, args, device)
    if args.compare_fold:
        result["fold_bn_vs_unfolded"] = _compare_fold(model, result["layers"][0], args, device)
    if args.check_bf16 and device.type == "cuda":
        result["bf16_vs_fp32"] = _compare_precision(model, args.layers.split(",")[0], args.check_bf16, args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


def _compare_precision(model, layer: str, n: int, args) -> dict:
    """Render the same channels with and without bf16 autocast: do the images agree?"""
    channels = list(range(n))
    kwargs = dict(size=args.size, steps=args.steps, seed=0)
    low = render_channels(model, layer, channels, mixed_precision=True, **kwargs)
    full = render_channels(model, layer, channels, mixed_precision=False, **kwargs)
    diff = (low.images - full.images).abs()
    corr = [float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
            for a, b in zip(low.images, full.images)]
    objective = channel(layer, channels)
    device = next(model.parameters()).device
    with torch.no_grad():  # each image scored in fp32 by its own unit
        scores = [objective(run_to_layers(model.float(), [layer], r.images.to(device))) for r in (low, full)]
    return {"layer": layer, "channels": n, "mean_abs_pixel_diff": round(float(diff.mean()), 4),
            "median_pixel_correlation": round(float(sorted(corr)[len(corr) // 2]), 3),
            "fp32_score_of_bf16_images": float(f"{float(scores[0].mean()):.4g}"),
            "fp32_score_of_fp32_images": float(f"{float(scores[1].mean()):.4g}")}


def _compare_fold(model, row: dict, args, device) -> dict:
    """Batched render of the layer of ``row`` (a per-layer result) with and without BatchNorm
    folding, timed back to back."""
    layer, n = row["layer"], row["channels"]
    seconds = {}
    for fold in (True, False):
        began = time.monotonic()
        render_channels(model, layer, list(range(n)), chunk=args.chunk, size=args.size, steps=args.steps,
                        device=device, channels_last=args.channels_last, fold_bn=fold)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds[fold] = time.monotonic() - began
    return {"layer": layer, "channels": n, "folded_s": round(seconds[True], 2),
            "unfolded_s": round(seconds[False], 2), "speedup": round(seconds[False] / seconds[True], 3)}


def _channels(model, layer: str, size: int, device) -> int:
    with torch.no_grad():
        return int(run_to_layers(model, [layer], torch.zeros(1, 3, size, size, device=device))[layer].shape[1])


if __name__ == "__main__":
    main()
