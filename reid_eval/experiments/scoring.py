"""Scoring a match run's matrix: ranking, intervals, verification, per-query records, re-ranking.

:func:`score_matrix` is step 4 of :mod:`reid_eval.experiments.match`: one pass
of :func:`reid_eval.evaluation.query_stats` (with each query's top-k gallery
images) gives the CMC, mAP and mINP, the per-query table written beside the
results file, and the per-query columns that the identity bootstrap resamples
(:mod:`reid_eval.evaluation.bootstrap`); TPR at FPR 1e-4, 1e-3, 1e-2 comes
from :mod:`reid_eval.evaluation.verification`.

:func:`rerank_from_cache` applies k-reciprocal re-ranking
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
  multiplied by ``median(metric qg) / median(global qg)``. Much cheaper; on
  occluded sets the global feature is what FPR improves on, so the
  neighbourhoods may be worse than with ``same`` (not measured on a real
  occluded set).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
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


def rerank_with_global_aux(qg: np.ndarray, params: MatchParams, q_global: np.ndarray, g_global: np.ndarray) -> np.ndarray:
    """``rerank="global"``: re-ranked [Q, G] float32 distances with global-feature aux matrices.

    ``q_global`` [Q, d], ``g_global`` [G, d]: the global features. For a
    global metric the aux matrices are that metric; otherwise the euclidean
    distance, scaled by ``median(qg) / median(global qg)`` so that both
    metrics sit on one scale in the neighbourhoods (module docstring).
    """
    from reid_eval.matching import global_distances

    metric = params.metric if params.metric in ("euclidean", "cosine") else "euclidean"
    qq = global_distances(q_global, q_global, metric=metric)
    gg = global_distances(g_global, g_global, metric=metric)
    if metric != params.metric or params.fuse is not None or params.shortlist is not None:
        scale = float(np.median(qg)) / max(float(np.median(global_distances(q_global, g_global, metric=metric))), 1e-12)
        qq *= scale
        gg *= scale
    return k_reciprocal_rerank(qg, qq, gg, k1=params.rerank_k1, k2=params.rerank_k2, lambda_value=params.rerank_lambda)


@contextlib.contextmanager
def stored_rows(cache_file: Any, name: str) -> Iterator[Any]:
    """The cached matrix ``distances/<name>`` as an ``h5py.Dataset`` (row slices read on demand)."""
    from reid_eval.features.cache import open_cache

    f = open_cache(cache_file, "r")
    try:
        yield f["distances"][name]
    finally:
        f.close()


def fill_outside_shortlist(distances: np.ndarray, shortlist: int, fill: float) -> np.ndarray:
    """Replace every entry outside each row's shortlist by ``fill`` (fast-reid: 100); [P, G] float32.

    The shortlist engine puts ``max(shortlisted) + 1 + rank`` outside the
    shortlist, so each row's ``shortlist`` smallest entries are exactly the
    reconstructed ones.
    """
    d = np.asarray(distances, np.float32)
    if shortlist >= d.shape[1]:
        return d
    keep = np.argpartition(d, shortlist - 1, axis=1)[:, :shortlist]
    out = np.full_like(d, np.float32(fill))
    np.put_along_axis(out, keep, np.take_along_axis(d, keep, axis=1), axis=1)
    return out


def aux_name(base: MatchParams, probe_split: str, gallery_split: str) -> str:
    """Cache name of ``base``'s matrix between two splits: its distance name for query–gallery,
    ``<distance name>__aux-<probe>-<gallery>`` for the re-ranking aux matrices."""
    if (probe_split, gallery_split) == ("query", "gallery"):
        return base.distance_name
    return f"{base.distance_name}__aux-{probe_split}-{gallery_split}"


def _fingerprint(cache_file: Path, splits: tuple[str, str]) -> str:
    from reid_eval.features.cache import split_fingerprint

    return "-".join(split_fingerprint(cache_file, s) for s in splits)


def cached_matrix(
    cache_file: Path,
    base: MatchParams,
    execution: Any,
    compute: Callable[..., tuple[np.ndarray, dict[str, Any]]],
    splits: tuple[str, str],
) -> tuple[str, dict[str, Any]]:
    """Name of ``distances/<aux_name(...)>`` in the cache, computed with ``compute`` and stored unless already there.

    A stored matrix counts when it has the same distance identity and was made
    from the same features (fingerprints of both splits).
    """
    from reid_eval.features import list_distances, write_distances

    name = aux_name(base, *splits)
    fingerprint = _fingerprint(cache_file, splits)
    stored = list_distances(cache_file).get(name)
    if (stored is not None and not getattr(execution, "recompute", False)
            and stored.get("features_fingerprint") == fingerprint
            and MatchParams.from_json(stored).identity("distance") == base.identity("distance")):
        return name, {"reused": True}
    t0 = time.perf_counter()
    matrix, how = compute(cache_file, base, execution, splits=splits)
    write_distances(cache_file, name, matrix, {**base.to_json(), "distance_name": name, "features_fingerprint": fingerprint,
                                               "splits": ",".join(splits), "seconds": round(time.perf_counter() - t0, 3)})
    del matrix
    # stored: the resumable tiles compute_distances kept for it are done with (its naming: the unfused name + suffix)
    from reid_eval.matching.tile_store import TileStore, tile_dir

    TileStore(tile_dir(cache_file, aux_name(dataclasses.replace(base, fuse=None), *splits))).remove()
    return name, {"reused": False, **how}


def rerank_from_cache(
    cache_file: Path,
    params: MatchParams,
    execution: Any,
    compute: Callable[..., tuple[np.ndarray, dict[str, Any]]],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The re-ranked query–gallery matrix of ``params`` and how it was made (module docstring).

    ``compute`` is :func:`reid_eval.experiments.match.compute_distances`
    (passed in, as it calls back here): the query–gallery matrix without
    re-ranking and, for ``rerank="same"``, the query–query and gallery–gallery
    matrices of the same metric, which are stored in the cache and read back
    a block of rows at a time.
    """
    from reid_eval.features import read_split_index
    from reid_eval.features.cache import read_global_block

    from reid_eval.features import read_distances

    base = dataclasses.replace(params, rerank=None)
    # the matrix before re-ranking is stored under its own name, so a plain run of it reuses it (and vice versa)
    qg_name, how = cached_matrix(cache_file, base, execution, compute, ("query", "gallery"))
    qg = read_distances(cache_file, qg_name)[0]
    t0 = time.perf_counter()
    info: dict[str, Any] = {"base_matrix": f"{qg_name} ({'reused' if how.get('reused') else 'computed'})",
                            **{k: v for k, v in how.items() if k != "reused"}}
    kwargs = dict(k1=params.rerank_k1, k2=params.rerank_k2, lambda_value=params.rerank_lambda)
    if params.rerank == "same":
        qq_name, qq_how = cached_matrix(cache_file, base, execution, compute, ("query", "query"))
        gg_name, gg_how = cached_matrix(cache_file, base, execution, compute, ("gallery", "gallery"))
        info["rerank_aux"] = ", ".join(
            f"{n} ({'reused' if h.get('reused') else 'computed'})" for n, h in ((qq_name, qq_how), (gg_name, gg_how)))
        with stored_rows(cache_file, qq_name) as qq, stored_rows(cache_file, gg_name) as gg:
            D = k_reciprocal_rerank(qg, qq[...], gg, **kwargs)
    else:
        n_q = len(read_split_index(cache_file, "query").pids)
        n_g = len(read_split_index(cache_file, "gallery").pids)
        D = rerank_with_global_aux(qg, params, read_global_block(cache_file, "query", 0, n_q),
                                   read_global_block(cache_file, "gallery", 0, n_g))
    info["rerank_seconds"] = round(time.perf_counter() - t0, 3)
    return D, info
