"""Circuit motif detectors: pure functions over weights and neuron characterisations.

Each detector scores every candidate, and its p-value comes from a permutation null in which
the weights are shuffled within each layer pair (kernels reassigned to random unit pairs) while
the tuning stays: p = (1 + #{shuffles whose *best* candidate scores at least as high}) / (1 + n).
Comparing against the best candidate of each shuffle (a max-statistic test) keeps the chance of
any false report at ``alpha`` however many candidates were looked at.

Weights are (out, in, kh, kw) arrays; tuning is a
:class:`~circuitatlas.analysis.tuning.TuningResult` per layer (preferred angle, selectivity and
the response curve over angles, as from :func:`~circuitatlas.analysis.tuning.radial_tuning`).
Members are named ``"<layer>:<channel>"``.

One module per family: :mod:`.common` (:class:`Motif`, the null), :mod:`.equivariance`,
:mod:`.flip`, :mod:`.union`, :mod:`.superposition`.
"""

from circuitatlas.analysis.motifs.common import Findings, Motif, mirror_angle, shuffle_inputs, shuffle_weights
from circuitatlas.analysis.motifs.equivariance import (
    kernel_rotation,
    orientation_families,
    predicted_tuning,
    rotation_equivariance,
)
from circuitatlas.analysis.motifs.flip import (
    flip_equivariance,
    mirror_map,
    mirror_map_from_tuning,
    mirror_pairs,
    mirror_similarity,
)
from circuitatlas.analysis.motifs.superposition import superposition
from circuitatlas.analysis.motifs.union import union_candidates, union_over_cases

__all__ = ["Motif", "Findings", "orientation_families", "predicted_tuning", "rotation_equivariance",
           "kernel_rotation", "union_over_cases", "union_candidates", "superposition", "flip_equivariance",
           "mirror_pairs", "mirror_similarity", "mirror_map", "mirror_map_from_tuning", "mirror_angle",
           "shuffle_weights", "shuffle_inputs"]
