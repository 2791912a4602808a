"""The match step: distances from a feature cache, evaluated, written as results.

For one cache file (one dataset, checkpoint and preprocessing) and one
:class:`~reid_eval.experiments.record.MatchParams`:

1. read the ids of the complete ``query`` and ``gallery`` splits (never
   their pyramid features as a whole);
2. compute the [P, G] float32 distance matrix — ``fpr`` / ``dsr`` with
   :func:`reid_eval.matching.streaming.fpr_distances_from_cache` (the
   engine of :func:`reid_eval.matching.fpr_distances`, blocks read from the
   cache within ``--memory-budget``, finished tiles committed so that an
   interrupted run resumes, optionally on Dask; see :class:`MatchExecution`),
   ``weighted`` True / False, ``euclidean`` / ``cosine`` with
   :func:`reid_eval.matching.global_distances` on the global features; with
   ``shortlist=K`` only the K nearest gallery images by the shortlist metric
   are reconstructed (the authors' later code; the paper's tables are exact
   all-pairs); with ``fuse=λ`` the matrix is (1−λ)·global + λ·FPR (or DSR),
   the global part by ``fuse_global``, λ given by the user and never tuned
   on the test set;
3. store it in the cache as ``distances/<params.distance_name>`` with its
   parameters; a stored matrix of the same distance identity, made from the
   same features, is reused instead (``recompute=True`` forces step 2; the
   rules live in :mod:`reid_eval.experiments.stored`);
4. evaluate it (:func:`reid_eval.experiments.scores.score_matrix`: one
   :func:`reid_eval.evaluation.query_stats` pass gives CMC/mAP/mINP, the
   identity-bootstrap intervals, TPR at FPR and the per-query records
   written beside the results file as ``<results stem>.queries.csv``) under the
   dataset's protocol (Market-1501 junk rules; the occluded sets' manifests
   already give query and gallery different cameras; CUHK03 classic's single
   gallery shot from the dataset spec);
5. write ``<results_dir>/<params.results_file_name(dataset)>`` (a
   :class:`~reid_eval.experiments.record.MatchResult`).

The refined share (how many of the exact matrix's (probe location, gallery
image) entries the engine recomputed in float64) is part of the provenance:
``refined_entries``, ``computed_entries`` and ``refined_share`` (see
:meth:`reid_eval.matching.streaming.StreamResult.provenance`; matrices of
older versions may add ``tiles_without_counts``), in the results JSON's
params and in the stored matrix's attributes; a reused matrix reports what
its attributes recorded. :func:`refinement_line` words it for the log, and
:func:`tile_check_line` the committed tiles that failed their check and were
computed again.

Which cache a dataset is matched with is decided by :func:`select_cache`
alone (the report uses it too).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.datasets import get_spec
from reid_eval.errors import ReidEvalError
from reid_eval.experiments.foreground import state_of as foreground_state_of
from reid_eval.features.cache import MODEL_NAME_ATTR
from reid_eval.evaluation import records_path, write_query_records
from reid_eval.experiments.record import GLOBAL_METRICS, MatchParams, MatchResult
from reid_eval.experiments.reranking import rerank_with_aux, rerank_with_global_aux, stored_rows
from reid_eval.experiments.scores import format_interval, score_matrix
from reid_eval.experiments.stored import (
    QUERY_GALLERY,
    check_writable,
    discard_tiles,
    match_lock,
    matrix_name,
    remove_stale_tiles,
    reusable,
    store_matrix,
    stored_matrix,
    tile_folder,
)
from reid_eval.features import (
    iter_cache_files,
    read_attrs,
    read_distances,
    read_split_index,
    split_complete,
    split_status,
)
from reid_eval.features.cache import read_global_block
from reid_eval.matching import EngineSettings, global_distances
from reid_eval.matching.streaming import MatchProgress, fpr_distances_from_cache, fpr_shortlist_from_cache

#: Provenance fields of the refined share (StreamResult.provenance), copied from a reused matrix's attributes.
REFINEMENT_FIELDS: tuple[str, ...] = ("refined_entries", "computed_entries", "refined_share", "tiles_without_counts")


def _recorded_refinement(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The refinement fields a stored matrix's attributes recorded (none for one stored before they were)."""
    return {k: attrs[k] for k in REFINEMENT_FIELDS if k in attrs}


def refinement_line(provenance: Mapping[str, Any]) -> str | None:
    """``refined in float64: 12 of 5.28e+05 entries (share 2.27e-05)`` for the match log; None without counts.

    ``provenance``: a results file's provenance. Entries are (probe location,
    gallery image) residuals; tiles committed without counts (by an older
    version, then resumed) are named, as the numbers leave them out.
    """
    if "refined_entries" not in provenance or "computed_entries" not in provenance:
        return None  # global metrics, the shortlist path, matrices stored before the counts were recorded
    try:
        refined, entries = int(provenance["refined_entries"]), int(provenance["computed_entries"])
        share = float(provenance.get("refined_share", refined / entries if entries else 0.0))
        missing = int(provenance.get("tiles_without_counts") or 0)
    except (TypeError, ValueError):
        return None  # a hand-edited or damaged record: no line rather than a traceback
    line = f"refined in float64: {refined} of {entries:.3g} entries (share {share:.2e})"
    if missing:
        line += f"; {missing} resumed tile(s) committed without counts are not included"
    if "reused_matrix" in provenance:
        line += f", as recorded with the stored matrix {provenance['reused_matrix']}"
    return line


def tile_check_line(provenance: Mapping[str, Any]) -> str | None:
    """``2 committed tile(s) failed their check and were computed again (first: <file>: checksum mismatch)``.

    None when every resumed tile passed (or nothing was resumed).
    """
    failed = provenance.get("tiles_failed_check")
    if not isinstance(failed, int) or failed <= 0:
        return None
    return (f"{failed} committed tile(s) failed their check and were computed again "
            f"(first: {provenance.get('tile_check_failure', '?')})")


class NoCacheError(ReidEvalError):
    """No cache fits the request (none, or none made with the checkpoint asked for)."""


#: The splits a cache needs before it can be matched.
MATCH_SPLITS: tuple[str, ...] = ("query", "gallery")


@dataclass
class MatchOutcome:
    """What one match run produced: the results file, its content, the summary line and the [P, G] matrix."""

    results_file: Path
    result: MatchResult
    summary: str
    distances: np.ndarray


@dataclass(frozen=True)
class MatchExecution:
    """How the matrix is computed — never what it is: recorded as provenance, not named.

    memory_budget_bytes: working memory of the tiles in flight (None:
    :func:`reid_eval.matching.memory.default_memory_budget`); workers: a Dask LocalCluster of
    that many single-thread workers; scheduler: address of an existing Dask
    cluster; recompute: ignore a stored matrix and finished tiles; progress:
    called with a :class:`~reid_eval.matching.streaming.MatchProgress` after
    every tile; notice: called with a line worth telling the user while the
    run goes on (waiting for another match of the same cache).

    The matrix depends on the tile plan only (the blocks, chosen from the
    budget when a computation starts; see reid_eval.matching.plan): for a
    given plan it is bit-identical whatever the workers or scheduler, and an
    interrupted run resumes with its recorded plan. Another budget gives
    other blocks and can move a distance by GEMM rounding (within the
    engine's 1e-5 of the float64 definition), so the budget is provenance:
    a finished matrix is reused whatever budget is given now.
    """

    memory_budget_bytes: int | None = None
    workers: int | None = None
    scheduler: str | None = None
    recompute: bool = False
    progress: Callable[[MatchProgress], None] | None = None
    notice: Callable[[str], None] | None = None


def _global_distances(cache_file: Path, probe_split: str, gallery_split: str, n_q: int, n_g: int, metric: str) -> np.ndarray:
    try:
        return global_distances(read_global_block(cache_file, probe_split, 0, n_q),
                                read_global_block(cache_file, gallery_split, 0, n_g), metric=metric)
    except ValueError as exc:  # NaN, infinite or (cosine) all-zero features: name the file they came from
        raise ReidEvalError(f"cache {cache_file}: {exc}") from None


def engine_settings(params: MatchParams) -> EngineSettings:
    """The engine settings of a reconstruction metric's ``params`` (FPR weighted, DSR not): derived here only."""
    return EngineSettings(beta=params.beta, weighted=params.metric == "fpr", backend=params.backend)


def compute_distances(
    cache_file: str | os.PathLike,
    params: MatchParams,
    execution: MatchExecution | None = None,
    splits: tuple[str, str] = QUERY_GALLERY,
) -> tuple[np.ndarray, dict[str, Any]]:
    """[P, G] float32 distances (smaller = more similar) between a cache's query and gallery under ``params``.

    Returns the matrix and how it was computed (tile plan, resumed tiles,
    runner). FPR/DSR read blocks of the pyramid features from the cache;
    finished tiles of the exact matrix wait in their tile folder
    (:func:`reid_eval.experiments.stored.tile_folder`) until the matrix is
    stored (:func:`match_cache` then removes them). ``splits``: (probe,
    gallery) splits. With ``params.rerank`` the matrix is the re-ranked one,
    its base and auxiliary matrices stored in the cache
    (:mod:`reid_eval.experiments.reranking`).
    """
    return _compute(Path(cache_file).resolve(), params.validate(), execution or MatchExecution(), splits)


def _compute(cache_file: Path, params: MatchParams, execution: MatchExecution,
             splits: tuple[str, str]) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`compute_distances` of checked ``params``."""
    if params.rerank is not None:
        return _reranked(cache_file, params, execution)
    probe_split, gallery_split = splits
    n_q = len(read_split_index(cache_file, probe_split).pids)
    n_g = len(read_split_index(cache_file, gallery_split).pids)
    if params.metric in GLOBAL_METRICS:
        D = _global_distances(cache_file, probe_split, gallery_split, n_q, n_g, params.metric)
        return np.asarray(D, np.float32), {}
    exact = dataclasses.replace(params, fuse=None)
    reused = None
    if params.fuse is not None and not execution.recompute and splits == QUERY_GALLERY:  # the FPR part may be stored already
        reused = stored_matrix(cache_file, exact, (n_q, n_g))
    if reused is not None:
        local, how = reused[0], {"reused_matrix": exact.distance_name, **_recorded_refinement(reused[1])}
    else:
        if execution.recompute:
            discard_tiles(cache_file, exact, splits)
        engine = dict(settings=engine_settings(params), memory_budget_bytes=execution.memory_budget_bytes,
                      progress=execution.progress, resume_dir=tile_folder(cache_file, exact, splits))
        if params.shortlist is not None:
            if execution.workers is not None or execution.scheduler is not None:
                raise ReidEvalError("--shortlist runs in one process; leave out --workers and --scheduler")
            streamed = fpr_shortlist_from_cache(cache_file, params.shortlist, params.shortlist_metric, probe_split,
                                                gallery_split, **engine)
        else:
            streamed = fpr_distances_from_cache(cache_file, probe_split, gallery_split, workers=execution.workers,
                                                scheduler=execution.scheduler, **engine)
        local, how = np.asarray(streamed.distances, np.float32), streamed.provenance()
        if params.shortlist is not None and params.shortlist_fill is not None:
            local = fill_outside_shortlist(local, params.shortlist, params.shortlist_fill)
        if params.fuse is not None and splits == QUERY_GALLERY:  # a plain run of the FPR part reuses it
            store_matrix(cache_file, exact, local, how)
            how = {**how, "stored_matrix": exact.distance_name}
    if params.fuse is not None:
        glob = _global_distances(cache_file, probe_split, gallery_split, n_q, n_g, params.fuse_global)
        local = ((1.0 - params.fuse) * np.asarray(glob, np.float32) + params.fuse * local).astype(np.float32)
    return local, how


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


def _kept_or_stored(cache_file: Path, params: MatchParams, execution: MatchExecution,
                    splits: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    """Name of ``params``' matrix between ``splits`` in the cache: the stored one when reusable, else computed and stored."""
    if not execution.recompute and reusable(cache_file, params, splits):
        return matrix_name(params, splits), {"reused": True}
    t0 = time.perf_counter()
    matrix, how = _compute(cache_file, params, execution, splits)
    name = store_matrix(cache_file, params, matrix, {"splits": ",".join(splits),
                                                     "seconds": round(time.perf_counter() - t0, 3)}, splits)
    return name, {"reused": False, **how}


def _reranked(cache_file: Path, params: MatchParams, execution: MatchExecution) -> tuple[np.ndarray, dict[str, Any]]:
    """The re-ranked query–gallery matrix of ``params`` and how it was made (:mod:`reid_eval.experiments.reranking`).

    The matrix before re-ranking is stored under its own name, so a plain run
    of it reuses it (and vice versa); for ``rerank="same"`` so are the
    query–query and gallery–gallery matrices, read back a block of rows at a time.
    """
    base = dataclasses.replace(params, rerank=None)
    qg_name, how = _kept_or_stored(cache_file, base, execution, QUERY_GALLERY)
    qg = read_distances(cache_file, qg_name)[0]
    t0 = time.perf_counter()
    info: dict[str, Any] = {"base_matrix": f"{qg_name} ({'reused' if how.get('reused') else 'computed'})",
                            **{k: v for k, v in how.items() if k != "reused"}}
    if params.rerank == "same":
        qq_name, qq_how = _kept_or_stored(cache_file, base, execution, ("query", "query"))
        gg_name, gg_how = _kept_or_stored(cache_file, base, execution, ("gallery", "gallery"))
        info["rerank_aux"] = ", ".join(
            f"{n} ({'reused' if h.get('reused') else 'computed'})" for n, h in ((qq_name, qq_how), (gg_name, gg_how)))
        with stored_rows(cache_file, qq_name) as qq, stored_rows(cache_file, gg_name) as gg:
            D = rerank_with_aux(qg, qq[...], gg, params)
    else:
        n_q = len(read_split_index(cache_file, "query").pids)
        n_g = len(read_split_index(cache_file, "gallery").pids)
        D = rerank_with_global_aux(qg, params, read_global_block(cache_file, "query", 0, n_q),
                                   read_global_block(cache_file, "gallery", 0, n_g))
    info["rerank_seconds"] = round(time.perf_counter() - t0, 3)
    return D, info


def _matrix_and_provenance(cache_file: Path, params: MatchParams, execution: MatchExecution, attrs: Mapping[str, Any],
                           query: Any, gallery: Any, kept: tuple[np.ndarray, dict[str, Any]] | None,
                           ) -> tuple[np.ndarray, dict[str, Any]]:
    """Steps 2-3 of the module docstring: the matrix (``kept``, or computed and stored) and the run's provenance.

    Called holding the cache's match lock when it computes.
    """
    t0 = time.perf_counter()
    if kept is not None:
        D, engine = kept[0], {"reused_matrix": params.distance_name, **_recorded_refinement(kept[1])}
    else:
        D, engine = _compute(cache_file, params, execution, QUERY_GALLERY)
    seconds = time.perf_counter() - t0
    stored = str(attrs["dataset"])
    single_gallery_shot = bool(getattr(get_spec(stored), "single_gallery_shot", False))
    reconstructs = params.metric not in GLOBAL_METRICS
    provenance: dict[str, Any] = {
        "cache_file": str(cache_file),
        "weighted": (params.metric == "fpr") if reconstructs else None,
        "normalize": True if reconstructs else None,
        "single_gallery_shot": single_gallery_shot,
        "resize": attrs["settings"]["preprocessing"]["resize"],
        # a module's cache (features.module) has no model config: its identity and input size stand in
        "backbone": attrs["settings"].get("model", {}).get("backbone", attrs.get("checkpoint_file")),
        "input_size": attrs["settings"].get("model", {}).get("input_size") or attrs["settings"]["preprocessing"].get("size"),
        "model_name": attrs.get(MODEL_NAME_ATTR),
        "foreground": foreground_state_of(attrs) if params.metric == "fpr" else None,
        "skipped_query": len(query.skipped),
        "skipped_gallery": len(gallery.skipped),
        "matching_seconds": round(seconds, 3),
        **engine,
    }
    if kept is None:
        store_matrix(cache_file, params, D, provenance)  # and its finished tiles are removed
    return D, provenance


def match_cache(
    cache_file: str | os.PathLike,
    params: MatchParams,
    results_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    execution: MatchExecution | None = None,
) -> MatchOutcome:
    """Run steps 1-5 of the module docstring on one cache file.

    ``params.checkpoint_sha256`` is taken from the cache (a different one
    given is an error, as is a cache of another ``dataset`` than asked).
    ``execution``: memory budget, Dask, recompute and progress (:class:`MatchExecution`).
    """
    execution = execution or MatchExecution()
    params.validate()
    cache_file = Path(cache_file).resolve()
    attrs = read_attrs(cache_file)
    stored = str(attrs["dataset"])
    if dataset is not None and stored != dataset:
        raise ReidEvalError(f"cache {cache_file} holds dataset {stored}, not {dataset} (--dataset)")
    sha = str(attrs["checkpoint_sha256"])
    if params.checkpoint_sha256 and params.checkpoint_sha256 != sha:
        raise ReidEvalError(f"cache {cache_file} was made with checkpoint {sha[:12]}, not {params.checkpoint_sha256[:12]} (--checkpoint)")
    params = dataclasses.replace(params, checkpoint_sha256=sha)
    query, gallery = read_split_index(cache_file, "query"), read_split_index(cache_file, "gallery")
    name = params.distance_name
    shape = (len(query.pids), len(gallery.pids))
    with ExitStack() as held:
        kept = None if execution.recompute else stored_matrix(cache_file, params, shape)
        if kept is None:  # compute under the cache's match lock; another match may store it while this one waits
            check_writable(cache_file)
            held.enter_context(match_lock(cache_file, execution.notice))
            remove_stale_tiles(cache_file)
            kept = None if execution.recompute else stored_matrix(cache_file, params, shape)
        elif os.access(cache_file.parent, os.W_OK) and held.enter_context(match_lock(cache_file, wait=False)):
            remove_stale_tiles(cache_file)
        D, provenance = _matrix_and_provenance(cache_file, params, execution, attrs, query, gallery, kept)
    single_gallery_shot = bool(provenance["single_gallery_shot"])
    scores = score_matrix(D, query.pids, gallery.pids, query.camids, gallery.camids, list(query.paths), params,
                          single_gallery_shot=single_gallery_shot)
    r = scores.ranking
    records_file = records_path(Path(results_dir) / params.results_file_name(stored))
    write_query_records(scores.records, records_file)
    result = MatchResult(
        dataset=stored,
        params=params,
        cmc=tuple(float(v) for v in np.asarray(r.cmc)),
        mAP=float(r.mAP),
        mINP=float(r.mINP),
        num_query=int(len(query.paths)),
        num_valid_query=int(np.count_nonzero(r.valid)),
        num_gallery=int(len(gallery.paths)),
        provenance=provenance,
        created=MatchResult.now(),
        intervals=scores.intervals,
        verification=scores.verification,
        query_records=records_file.name,
    )
    out = result.write(results_dir)
    cmc = result.cmc
    r5 = cmc[min(4, len(cmc) - 1)]
    flavour = "" if params.ap == "standard" else f" (AP {params.ap})"
    ci = scores.intervals or {}
    cmc_ci = ci.get("cmc_ci") or [None] * len(cmc)
    summary = (
        f"{stored} {name}{flavour}: R1 {format_interval(cmc[0], cmc_ci[0])} R5 {format_interval(r5, cmc_ci[min(4, len(cmc) - 1)])} "
        f"mAP {format_interval(result.mAP, ci.get('mAP_ci'))} mINP {100 * result.mINP:.2f}% "
        f"({result.num_valid_query}/{result.num_query} queries, "
        f"{result.num_gallery} gallery, checkpoint {sha[:8]}) -> {out}"
    )
    return MatchOutcome(out, result, summary, D)


def _incomplete_text(path: Path) -> str:
    status = split_status(path)
    parts = [f"{s} {status[s][0]}/{status[s][1]}" if s in status else f"no {s}" for s in MATCH_SPLITS]
    return ", ".join(parts)


def select_cache(
    cache_dir: str | os.PathLike,
    dataset: str,
    checkpoint_sha256: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """The one cache file that `match` (and `report`, for its figures) uses for ``dataset``.

    Candidates are ``<cache_dir>/<dataset>/*.h5``. Rules, each failure a
    ReidEvalError naming the file(s):

    * a cache whose stored dataset is not ``dataset`` is an error naming both;
    * a damaged or unreadable cache is an error naming it, unless
      ``checkpoint_sha256`` selects another cache (never a silent fallback:
      ``warn`` is then told which file was passed over);
    * with ``checkpoint_sha256`` only caches made with that checkpoint count;
    * a cache counts only when its query and gallery are complete
      (:func:`reid_eval.features.split_complete`); when the newest cache is
      incomplete and no checkpoint was given, that is an error (an older
      cache would silently stand in for it);
    * among the complete ones the newest (``created`` attribute, then file time) wins.
    """
    damaged: list[str] = []
    usable: list[tuple[str, float, Path]] = []
    unfinished: list[tuple[str, float, Path]] = []
    for path in iter_cache_files(cache_dir, dataset):
        try:
            attrs = read_attrs(path)
            complete = all(split_complete(path, s) for s in MATCH_SPLITS)
        except (ReidEvalError, OSError, KeyError) as exc:
            damaged.append(str(exc) if str(path) in str(exc) else f"cannot read feature cache {path} ({exc})")
            continue
        stored = str(attrs.get("dataset", ""))
        if stored != dataset:
            raise ReidEvalError(f"cache {path} holds dataset {stored}, not {dataset}; move it to {Path(cache_dir) / stored}")
        if checkpoint_sha256 and str(attrs["checkpoint_sha256"]) != checkpoint_sha256:
            continue
        item = (str(attrs.get("created", "")), path.stat().st_mtime, path)
        (usable if complete else unfinished).append(item)
    if damaged and not (checkpoint_sha256 and usable):
        more = "" if len(damaged) == 1 else f" ({len(damaged) - 1} more damaged cache(s) in {Path(cache_dir) / dataset})"
        raise ReidEvalError(f"{damaged[0]}{more}; or choose another cache of {dataset} with --checkpoint")
    if damaged and warn is not None:
        for message in damaged:
            warn(f"passed over (--checkpoint selects another cache of {dataset}): {message}")
    newest_unfinished = max(unfinished, default=None)
    if newest_unfinished and not checkpoint_sha256 and (not usable or newest_unfinished[:2] > max(usable)[:2]):
        path = newest_unfinished[2]
        raise ReidEvalError(
            f"the newest cache for {dataset}, {path}, is incomplete ({_incomplete_text(path)}); "
            "finish it with `reid-eval extract`, or choose another cache with --checkpoint"
        )
    if not usable:
        ck = " made with that --checkpoint" if checkpoint_sha256 else ""
        raise NoCacheError(
            f"no complete feature cache{ck} for dataset {dataset} under {cache_dir}; run `reid-eval extract` first"
        )
    return max(usable)[2]


def select_caches(
    cache_dir: str | os.PathLike,
    dataset: str | None = None,
    checkpoint_sha256: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """{dataset: :func:`select_cache`} for ``dataset``, or for every dataset folder under ``cache_dir``.

    Without ``dataset``, a folder holding only caches of another checkpoint
    (when one is given) is left out; an error in any other folder stops
    everything, naming it. Raises ReidEvalError when nothing is left.
    """
    if dataset is not None:
        return {dataset: select_cache(cache_dir, dataset, checkpoint_sha256, warn)}
    base = Path(cache_dir)
    if base.exists() and not base.is_dir():
        raise ReidEvalError(f"--cache-dir {base} is not a folder")
    names = sorted({p.parent.name for p in iter_cache_files(base)})
    chosen: dict[str, Path] = {}
    for name in names:
        try:
            chosen[name] = select_cache(base, name, checkpoint_sha256, warn)
        except NoCacheError:
            if checkpoint_sha256:
                continue  # this dataset has no cache of that checkpoint
            raise
    if not chosen:
        ck = " made with that --checkpoint" if checkpoint_sha256 else ""
        raise NoCacheError(f"no complete feature cache{ck} for any dataset under {cache_dir}; run `reid-eval extract` first")
    return chosen
