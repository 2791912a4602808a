"""Scoring a match run's matrix: ranking, intervals, verification, per-query records, re-ranking.

:func:`score_matrix` is step 4 of :mod:`reid_eval.experiments.match`: one pass
of :func:`reid_eval.evaluation.query_stats` (with each query's top-k gallery
images) gives the CMC, mAP and mINP, the per-query table written beside the
results file, and the per-query columns that the identity bootstrap resamples
(:mod:`reid_eval.evaluation.bootstrap`); TPR at FPR 1e-4, 1e-3, 1e-2 comes
from :mod:`reid_eval.evaluation.verification`.

:func:`rerank_matrix` applies k-reciprocal re-ranking
(:mod:`reid_eval.evaluation.rerank`) to a query–gallery matrix. It needs the
query–query and gallery–gallery distances (the "aux" matrices):

* ``rerank="same"``: the run's own metric. For FPR/DSR that is a
  gallery–gallery reconstruction matrix (Market-1501: 15,913², as costly as
  four query–gallery matrices, 1 GB in float32). It is computed and cached in
  the feature cache like any other matrix (``distances/<name>__aux-gallery-gallery``),
  and read back a block of rows at a time, so re-ranking never holds it in memory.
* ``rerank="global"``: the Baseline's euclidean distance between global
  features, whatever the metric: nearly free, but the neighbourhoods that
  re-ranking builds mix two metrics (query–gallery rows by FPR, the rest by
  the global feature). To put the two on one scale the aux distances are
  multiplied by ``median(metric qg) / median(global qg)``. Cheaper, and
  usually a little weaker than ``same`` on occluded sets, where the global
  feature is what FPR improves on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from reid_eval.evaluation import (
    DEFAULT_TOP_K,
    RankingResult,
    bootstrap_means,
    interval_record,
    k_reciprocal_rerank,
    per_query_values,
    query_records,
    query_stats,
    summarize,
    tpr_at_fpr,
)
from reid_eval.experiments.record import MatchParams


@dataclass(frozen=True)
class Scores:
    """What :func:`score_matrix` found: the ranking result and the issue-15 result fields."""

    ranking: RankingResult
    intervals: dict[str, Any] | None
    verification: dict[str, Any] | None
    records: pd.DataFrame


def score_matrix(
    distances: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    q_paths: list[str],
    params: MatchParams,
    single_gallery_shot: bool = False,
    top_k: int = DEFAULT_TOP_K,
) -> Scores:
    """Evaluate a [Q, G] matrix under ``params`` (AP flavour, max rank, bootstrap settings)."""
    stats = query_stats(distances, q_pids, g_pids, q_camids, g_camids, single_gallery_shot=single_gallery_shot, top_k=top_k)
    ranking = summarize(stats, num_gallery=np.shape(distances)[1], ap=params.ap, max_rank=params.max_rank)
    intervals = None
    if params.resamples > 0:
        values, valid = per_query_values(stats, ap=params.ap, max_rank=params.max_rank)
        boot = bootstrap_means(values, np.asarray(q_pids)[valid], resamples=params.resamples, seed=params.ci_seed)
        intervals = interval_record(boot, params.max_rank)
    try:
        verification: dict[str, Any] | None = tpr_at_fpr(distances, q_pids, g_pids, q_camids, g_camids).as_record()
    except ValueError:
        verification = None  # no negative pair (a gallery of one identity): nothing to verify against
    table = query_records(stats, q_paths, q_pids, q_camids, ap=params.ap)
    return Scores(ranking, intervals, verification, table)


def format_interval(value: float, interval: list[float] | tuple[float, float] | None) -> str:
    """``45.00% [38.12, 51.20]`` (percentages), or ``45.00%`` without an interval."""
    if interval is None:
        return f"{100 * value:.2f}%"
    return f"{100 * value:.2f}% [{100 * interval[0]:.2f}, {100 * interval[1]:.2f}]"


def rerank_matrix(
    qg: np.ndarray,
    params: MatchParams,
    aux: Callable[[str, str], Any],
    q_global: np.ndarray | None = None,
    g_global: np.ndarray | None = None,
) -> np.ndarray:
    """Re-ranked [Q, G] float32 distances (module docstring).

    ``aux(probe_split, gallery_split)`` returns the run's own (pre-re-ranking)
    distances between two splits (``"query", "query"`` and ``"gallery",
    "gallery"``), any array-like readable a row block at a time; used for
    ``rerank="same"``. ``q_global``, ``g_global`` [n, d]: global features,
    for ``rerank="global"``.
    """
    from reid_eval.matching import global_distances

    if params.rerank is None:
        return qg
    kwargs = dict(k1=params.rerank_k1, k2=params.rerank_k2, lambda_value=params.rerank_lambda)
    if params.rerank == "same":
        return k_reciprocal_rerank(qg, aux("query", "query"), aux("gallery", "gallery"), **kwargs)
    if q_global is None or g_global is None:
        raise ValueError("--rerank-aux global needs the global features")
    metric = params.metric if params.metric in ("euclidean", "cosine") else "euclidean"
    qq = global_distances(q_global, q_global, metric=metric)
    gg = global_distances(g_global, g_global, metric=metric)
    if metric != params.metric or params.fuse is not None or params.shortlist is not None:
        scale = float(np.median(qg)) / max(float(np.median(global_distances(q_global, g_global, metric=metric))), 1e-12)
        qq *= scale
        gg *= scale
    return k_reciprocal_rerank(qg, qq, gg, **kwargs)


@contextlib.contextmanager
def stored_rows(cache_file: Any, name: str) -> Iterator[Any]:
    """The cached matrix ``distances/<name>`` as an ``h5py.Dataset`` (row slices read on demand)."""
    from reid_eval.features.cache import open_cache

    f = open_cache(cache_file, "r")
    try:
        yield f["distances"][name]
    finally:
        f.close()
