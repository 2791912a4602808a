"""k-reciprocal re-ranking of a match run's matrix: which auxiliary distances it uses, and the re-ranking itself.

Re-ranking (:mod:`reid_eval.evaluation.rerank`) needs the query–query and
gallery–gallery distances (the "aux" matrices) beside the query–gallery one:

* ``rerank="same"``: the run's own metric. For FPR/DSR that is a
  gallery–gallery reconstruction matrix (Market-1501: 15,913², as costly as
  four query–gallery matrices, 1 GB in float32). It is computed and stored in
  the feature cache like any other matrix (:mod:`reid_eval.experiments.stored`,
  ``distances/<name>__aux-gallery-gallery``) and read back a block of rows at
  a time (:func:`stored_rows`), so re-ranking never holds it in memory.
* ``rerank="global"``: the Baseline's euclidean distance between global
  features, whatever the metric (:func:`rerank_with_global_aux`): nearly free,
  but the neighbourhoods that re-ranking builds mix two metrics (query–gallery
  rows by FPR, the rest by the global feature). To put the two on one scale
  the aux distances are multiplied by ``median(metric qg) / median(global qg)``.
  On occluded sets the global feature is what FPR improves on, so the
  neighbourhoods may be worse than with ``same`` (not measured on a real
  occluded set).

Which matrices are computed or reused is decided by
:func:`reid_eval.experiments.match.compute_distances`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from reid_eval.evaluation import k_reciprocal_rerank
from reid_eval.experiments.record import MatchParams
from reid_eval.features.cache import open_cache
from reid_eval.matching import global_distances

__all__ = ["rerank_with_aux", "rerank_with_global_aux", "stored_rows"]


def rerank_with_aux(qg: np.ndarray, qq: Any, gg: Any, params: MatchParams) -> np.ndarray:
    """``rerank="same"``: re-ranked [Q, G] distances from ``qg`` and the aux matrices ``qq`` [Q, Q], ``gg`` [G, G]
    (arrays, or row-sliceable stored matrices: :func:`stored_rows`), with ``params``' k1, k2 and λ."""
    return k_reciprocal_rerank(qg, qq, gg, k1=params.rerank_k1, k2=params.rerank_k2, lambda_value=params.rerank_lambda)


def rerank_with_global_aux(qg: np.ndarray, params: MatchParams, q_global: np.ndarray, g_global: np.ndarray) -> np.ndarray:
    """``rerank="global"``: re-ranked [Q, G] float32 distances with global-feature aux matrices.

    ``q_global`` [Q, d], ``g_global`` [G, d]: the global features. For a
    global metric the aux matrices are that metric; otherwise the euclidean
    distance, scaled by ``median(qg) / median(global qg)`` so that both
    metrics sit on one scale in the neighbourhoods (module docstring).
    """
    metric = params.metric if params.metric in ("euclidean", "cosine") else "euclidean"
    qq = global_distances(q_global, q_global, metric=metric)
    gg = global_distances(g_global, g_global, metric=metric)
    if metric != params.metric or params.fuse is not None or params.shortlist is not None:
        scale = float(np.median(qg)) / max(float(np.median(global_distances(q_global, g_global, metric=metric))), 1e-12)
        qq *= scale
        gg *= scale
    return rerank_with_aux(qg, qq, gg, params)


@contextlib.contextmanager
def stored_rows(cache_file: Any, name: str) -> Iterator[Any]:
    """The cached matrix ``distances/<name>`` as an ``h5py.Dataset`` (row slices read on demand)."""
    f = open_cache(cache_file, "r")
    try:
        yield f["distances"][name]
    finally:
        f.close()
