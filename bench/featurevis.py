"""Feature-visualisation benchmark: one image per channel of a layer, batched against
one-at-a-time, measured side by side in one run. Prints JSON.

    python bench/featurevis.py [--model curves] [--layer features.11] [--size 64] [--steps 256] [--sample 4]

On a GPU machine pass --model googlenet --layers inception3a,...,inception5b --size 128 --steps 512.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from ingest import machine  # noqa: E402  (bench/ingest.py)

from circuitatlas.analysis.featurevis import channel, pick_device, render, render_channels  # noqa: E402
from circuitatlas.ingest.sources import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="curves", help="a zoo or torchvision name")
    parser.add_argument("--layers", default="features.11")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--sample", type=int, default=4, help="channels rendered one at a time")
    parser.add_argument("--chunk", type=int, default=None)
    args = parser.parse_args()
    device = pick_device()
    model = load_model(args.model).module.to(device).eval()
    result = {"benchmark": "featurevis", "model": args.model, "size": args.size, "steps": args.steps,
              "device": str(device), "machine": machine(),
              "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "layers": []}
    total_batched = total_images = 0.0
    for layer in args.layers.split(","):
        n = _channels(model, layer, args.size, device)
        began = time.monotonic()
        render_channels(model, layer, list(range(n)), chunk=args.chunk, size=args.size, steps=args.steps,
                        device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        batched_s = time.monotonic() - began
        sample = list(range(min(args.sample, n)))
        began = time.monotonic()
        for c in sample:
            render(model, channel(layer, c), size=args.size, steps=args.steps, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        single_s = (time.monotonic() - began) / len(sample)
        result["layers"].append({
            "layer": layer, "channels": n, "batched_s": round(batched_s, 2),
            "batched_image_steps_per_s": round(n * args.steps / batched_s, 1),
            "single_s_per_channel": round(single_s, 3),
            "single_image_steps_per_s": round(args.steps / single_s, 1),
            "speedup_per_channel": round(single_s / (batched_s / n), 2),
        })
        total_batched += batched_s
        total_images += n
    result["total_batched_s"] = round(total_batched, 1)
    result["total_channels"] = int(total_images)
    if device.type == "cpu":
        result["target"] = "a 64-channel zoo layer at 64 px and 256 steps in under 60 s on this CPU"
        result["meets_target"] = total_batched < 60
    print(json.dumps(result, indent=2))


def _channels(model, layer: str, size: int, device) -> int:
    from circuitatlas.analysis.hooks import run_to_layers

    with torch.no_grad():
        return int(run_to_layers(model, [layer], torch.zeros(1, 3, size, size, device=device))[layer].shape[1])


if __name__ == "__main__":
    main()
