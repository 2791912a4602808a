"""matching stage: FPR / DSR distances between spatial features, global distances.

Where each part lives:

* :mod:`~reid_eval.matching.definition`: the FPR definition and its constants (β);
  :mod:`~reid_eval.matching.reference`: the float64 one-pair oracle;
  :mod:`~reid_eval.matching.torch_fpr`: the differentiable form for training;
* :mod:`~reid_eval.matching.kernel`: one tile's math (block preparation, the
  tile and its epilogue, the float32 accuracy model, CPU threads, array module);
* :mod:`~reid_eval.matching.settings`: the engine settings, one frozen value;
  :mod:`~reid_eval.matching.memory`: the memory budget's default, variable and parser;
  :mod:`~reid_eval.matching.plan`: the memory model (budget to blocks);
* :mod:`~reid_eval.matching.loop`: the one loop every driver runs (block
  sources, runners, progress); :mod:`~reid_eval.matching.shortlist`: the shortlist's;
* drivers: :mod:`~reid_eval.matching.in_memory` (:func:`fpr_distances`),
  :mod:`~reid_eval.matching.streaming` (from the HDF5 cache, resumable),
  :mod:`~reid_eval.matching.dask_tiles` (a Dask runner);
  :mod:`~reid_eval.matching.tile_store`: committed tiles.
"""

from reid_eval.matching.definition import DEFAULT_BETA
from reid_eval.matching.global_distance import global_distances
from reid_eval.matching.in_memory import dsr_distances, fpr_distances
from reid_eval.matching.kernel import (
    BACKENDS,
    GalleryBasis,
    ProbeBlock,
    RefinementStats,
    fpr_tile,
    get_array_module,
    prepare_gallery,
    prepare_probes,
    probe_centre,
)
from reid_eval.matching.memory import DEFAULT_MEMORY_BUDGET
from reid_eval.matching.reference import fpr_distance_reference
from reid_eval.matching.settings import EngineSettings
from reid_eval.matching.torch_fpr import fpr_distance_matrix_torch

__all__ = [
    "BACKENDS",
    "DEFAULT_BETA",
    "DEFAULT_MEMORY_BUDGET",
    "EngineSettings",
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
