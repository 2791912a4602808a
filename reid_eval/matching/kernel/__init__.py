"""The kernel of the matching stage: one tile's math, and nothing about files, plans or runners.

* :mod:`~reid_eval.matching.kernel.probes` / :mod:`~reid_eval.matching.kernel.gallery`:
  block preparation (:func:`prepare_probes`, :func:`prepare_gallery`);
* :mod:`~reid_eval.matching.kernel.tile`: the tile and its epilogue
  (:func:`fpr_tile`; :func:`fpr_pairs` for a selection of probes);
* :mod:`~reid_eval.matching.kernel.accuracy`: the float32 error model,
  refinement and precision policy (its docstring is their specification);
* :mod:`~reid_eval.matching.kernel.tf32`: the TF32 parts of ``"tf32x3"`` operands;
* :mod:`~reid_eval.matching.kernel.threads`: the CPU threads and BLAS thread count;
* :mod:`~reid_eval.matching.kernel.backend`: the array module (NumPy or CuPy)
  and large buffers; :mod:`~reid_eval.matching.kernel.workspace`: reused ones.

A tile is a pure function of its two prepared blocks, so the drivers
(:mod:`reid_eval.matching.loop`) can schedule tiles anywhere.
"""

from reid_eval.matching.kernel.accuracy import (
    DEFAULT_FLOAT32_ATOL,
    PRECISIONS,
    RefinementStats,
    check_precision,
    resolve_precision,
)
from reid_eval.matching.kernel.backend import BACKENDS, get_array_module, to_numpy
from reid_eval.matching.kernel.gallery import GalleryBasis, prepare_gallery
from reid_eval.matching.kernel.probes import ProbeBlock, prepare_probes, probe_centre
from reid_eval.matching.kernel.threads import single_blas_thread
from reid_eval.matching.kernel.tile import fpr_pairs, fpr_tile
from reid_eval.matching.kernel.workspace import TileWorkspace

__all__ = [
    "BACKENDS",
    "DEFAULT_FLOAT32_ATOL",
    "PRECISIONS",
    "GalleryBasis",
    "ProbeBlock",
    "RefinementStats",
    "TileWorkspace",
    "check_precision",
    "fpr_pairs",
    "fpr_tile",
    "get_array_module",
    "prepare_gallery",
    "prepare_probes",
    "probe_centre",
    "resolve_precision",
    "single_blas_thread",
    "to_numpy",
]
