"""Are the permutation nulls calibrated? How often the flip and superposition tests report
anything at ``alpha`` on weights with no structure left: it should be about ``alpha``, not more.
Prints JSON (``--out`` also writes it).

    python bench/null_calibration.py [--out bench/results/null-calibration-2core.json]

- flip_equivariance: the ``edges`` layer of ``planted_gabor`` networks after ``planted_gabor.shuffled``
  (seeds 1000-1499: outside the detector benchmark's development and held-out ranges), tested
  from the image (one step of the chain);
- superposition, weights only: the kernel sums between the two detector layers of each
  generator's development networks (seeds 0-9), every entry shuffled, 25 times a network; the
  probe responses of the network's own units are kept (so the tuning mask is a real network's,
  though no longer caused by these weights);
- superposition, whole networks: each generator's networks at seeds 1000-1199 with every planted
  layer shuffled (as ``bench/detectors.py`` does), probe responses measured again on the
  shuffled network, so that tuning follows the shuffled weights as it would in a real one; with
  the default null and with ``stratify_null``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from circuitatlas.analysis import motifs as M
from circuitatlas.analysis import planted, planted_gabor
from circuitatlas.analysis.motifs.common import kernel_sums
from circuitatlas.analysis.motifs.runs import run_detector, superposition_inputs
from circuitatlas.benchmarking import emit, machine
from circuitatlas.jobs.motifs import ModuleInputs

ALPHA, N_PERM = 0.01, 200


def flip_runs(seeds: range) -> dict:
    reporting = 0
    for seed in seeds:
        shuffled = planted_gabor.shuffled(planted_gabor.build(seed), 10_000 + seed).module
        weights = dict(shuffled.named_modules())["edges"].weight.detach().numpy()
        found = M.flip_equivariance(weights, None, None, ("input", "edges"), n_perm=N_PERM, alpha=ALPHA, seed=seed)
        reporting += bool(found)
    return {"networks": f"planted_gabor {seeds.start}-{seeds.stop - 1}, shuffled", "runs": len(seeds),
            "reporting": reporting, "rate": reporting / len(seeds)}


def _network(name: str, seed: int) -> tuple[planted.PlantedNetwork, list[str]]:
    """A development-style network of generator ``name`` and the two layers superposition is run on."""
    if name == "planted":
        return planted.build("mixed", seed=seed, noise=0.05), ["mid", "high"]
    return planted_gabor.build(seed), ["edges", "project"]


def superposition_runs(seeds: range, shuffles: int) -> dict:
    reporting = runs = 0
    for name in ("planted", "planted_gabor"):
        for seed in seeds:
            net, layers = _network(name, seed)
            inputs = ModuleInputs(net.module, tuple(net.truth["input_size"]))
            weights, classes, classes_in = superposition_inputs(inputs, layers)
            sums = kernel_sums(weights)
            rng = np.random.default_rng(5_000 + seed)
            for i in range(shuffles):
                found = M.superposition(M.shuffle_weights(sums, rng), classes, tuple(layers),
                                        class_responses_in=classes_in, n_perm=N_PERM, alpha=ALPHA, seed=100 * seed + i)
                reporting += bool(found)
                runs += 1
    return {"networks": f"planted and planted_gabor {seeds.start}-{seeds.stop - 1}, {shuffles} shuffles each",
            "runs": runs, "reporting": reporting, "rate": reporting / runs}


def superposition_module_runs(seeds: range, **options: object) -> dict:
    from detectors import shuffled_network  # bench/detectors.py, beside this file

    reporting = runs = 0
    for name in ("planted", "planted_gabor"):
        for seed in seeds:
            net, layers = _network(name, seed)
            inputs = ModuleInputs(shuffled_network(name, net.module, seed), tuple(net.truth["input_size"]))
            found = run_detector("superposition", inputs, layers, n_perm=N_PERM, alpha=ALPHA, seed=seed, **options)
            reporting += bool(found)
            runs += 1
    return {"networks": f"planted and planted_gabor {seeds.start}-{seeds.stop - 1}, shuffled, tuning measured again",
            "options": options, "runs": runs, "reporting": reporting, "rate": reporting / runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    began = time.monotonic()
    result = {"benchmark": "null_calibration", "machine": machine(), "alpha": ALPHA, "n_perm": N_PERM,
              "flip_equivariance": flip_runs(range(1000, 1500)),
              "superposition": superposition_runs(range(10), 25),
              "superposition_shuffled_networks": superposition_module_runs(range(1000, 1200)),
              "superposition_shuffled_networks_stratified": superposition_module_runs(range(1000, 1200),
                                                                                      stratify_null=True)}
    result["total_s"] = round(time.monotonic() - began, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
