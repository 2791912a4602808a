"""Scoring a match run's matrix: ranking, intervals, verification, per-query records.

:func:`score_matrix` is step 4 of :mod:`reid_eval.experiments.match`: one pass
of :func:`reid_eval.evaluation.query_stats` (with each query's top-k gallery
images) gives the CMC, mAP and mINP, the per-query table written beside the
results file, and the per-query columns that the identity bootstrap resamples
(:mod:`reid_eval.evaluation.bootstrap`); TPR at FPR 1e-4, 1e-3, 1e-2 comes
from :mod:`reid_eval.evaluation.verification`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from reid_eval.evaluation import (
    DEFAULT_TOP_K,
    RankingResult,
    bootstrap_means,
    interval_record,
    per_query_values,
    query_records,
    query_stats,
    summarize,
    tpr_at_fpr,
)
from reid_eval.experiments.record import MatchParams


@dataclass(frozen=True)
class Scores:
    """What :func:`score_matrix` found: the ranking, the intervals, the verification rates and the per-query table."""

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
