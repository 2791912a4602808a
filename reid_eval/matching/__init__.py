"""matching stage: FPR / DSR distances between spatial features, global distances.

The FPR definition lives in :mod:`reid_eval.matching.definition`; the fast
all-pairs engine (NumPy or CuPy) in :mod:`reid_eval.matching.fpr`; the float64
one-pair oracle in :mod:`reid_eval.matching.reference`; the differentiable
torch form for training in :mod:`reid_eval.matching.torch_fpr`.
"""

from reid_eval.matching.backend import get_array_module
from reid_eval.matching.definition import DEFAULT_BETA
from reid_eval.matching.fpr import (
    DEFAULT_MEMORY_BUDGET,
    GalleryBasis,
    ProbeBlock,
    RefinementStats,
    dsr_distances,
    fpr_distances,
    fpr_tile,
    prepare_gallery,
    prepare_probes,
    probe_centre,
)
from reid_eval.matching.global_distance import global_distances
from reid_eval.matching.reference import fpr_distance_reference
from reid_eval.matching.torch_fpr import fpr_distance_matrix_torch

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_MEMORY_BUDGET",
    "GalleryBasis",
    "ProbeBlock",
    "RefinementStats",
    "dsr_distances",
    "fpr_distance_matrix_torch",
    "fpr_distance_reference",
    "fpr_distances",
    "fpr_tile",
    "get_array_module",
    "global_distances",
    "prepare_gallery",
    "prepare_probes",
    "probe_centre",
]
