"""FPR / DSR distances straight from the HDF5 cache: bounded memory, resumable, observable, distributable.

:func:`fpr_distances_from_cache` is :func:`reid_eval.matching.fpr_distances`
for two splits of a cache file that are never loaded whole:

* a :class:`~reid_eval.matching.tiles.TilePlan` cuts both splits into image
  ranges sized so that the tiles in flight fit in ``memory_budget_bytes``;
  peak memory is that budget, plus the ``[P, G]`` float32 result, plus a
  constant (the interpreter, NumPy, h5py), whatever the split sizes;
* each finished tile is committed to a :class:`~reid_eval.matching.tile_store.TileStore`
  folder; with ``resume_dir`` set, a rerun after Ctrl-C or ``kill -9``
  recomputes none of them and ends with the same bits;
* ``progress`` receives a :class:`MatchProgress` after every tile (tiles
  done / total, pairs and GFLOP per second, ETA);
* ``workers=N`` runs the tiles on a Dask ``LocalCluster`` of N single-thread
  worker processes, ``scheduler="tcp://host:port"`` on an existing Dask
  cluster (see :mod:`reid_eval.matching.dask_tiles`); without either, tiles
  run on ``threads`` threads of this process.

Every tile runs its GEMM on one BLAS thread, so the matrix depends only on
the tile plan (see :mod:`reid_eval.matching.tiles`), not on threads, workers
or machines.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.errors import ReidEvalError
from reid_eval.features.cache import (
    open_cache,
    read_attrs,
    read_global_block,
    read_spatial_block,
    read_split_offsets,
    split_fingerprint,
)
from reid_eval.matching.backend import get_array_module
from reid_eval.matching.definition import DEFAULT_BETA
from reid_eval.matching.fpr import (
    DEFAULT_FLOAT32_ATOL,
    DEFAULT_MEMORY_BUDGET,
    GalleryBasis,
    RefinementStats,
    fpr_shortlist_pass,
    plan_blocks,
    prepare_gallery,
    prepare_probes,
    resolve_precision,
    shortlist_units,
)
from reid_eval.matching.global_distance import global_distances
from reid_eval.matching.tile_store import TileStore
from reid_eval.matching.tiles import (
    MEMORY_BUDGET_ENV,
    TilePlan,
    TileSource,
    plan_tiles,
    return_freed_blocks_to_the_os,
    run_tile_task,
    run_probe_centre,
    single_blas_thread,
)

__all__ = ["MatchProgress", "StreamResult", "fpr_distances_from_cache", "fpr_shortlist_from_cache", "default_memory_budget"]


def default_memory_budget() -> int:
    """``REID_EVAL_MEMORY_BUDGET`` (bytes) when set, else 1.5 GB."""
    raw = os.environ.get(MEMORY_BUDGET_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MEMORY_BUDGET
    try:
        value = int(float(raw))
    except ValueError:
        raise ReidEvalError(f"{MEMORY_BUDGET_ENV}={raw!r} is not a number of bytes") from None
    if value <= 0:
        raise ReidEvalError(f"{MEMORY_BUDGET_ENV}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class MatchProgress:
    """Where a streamed match stands (passed to the ``progress`` callback).

    tiles_done includes tiles_resumed (committed by an earlier run); the
    rates count only tiles computed by this run, over ``seconds`` since it
    started computing.
    """

    tiles_done: int
    tiles_total: int
    tiles_resumed: int
    pairs_done: int
    pairs_total: int
    pairs_computed: int
    flops_computed: float
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_computed / self.seconds if self.seconds > 0 else 0.0

    @property
    def gflops(self) -> float:
        return self.flops_computed / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        rate = self.pairs_per_second
        return (self.pairs_total - self.pairs_done) / rate if rate > 0 else None

    def rates(self) -> str:
        """``(1 resumed) 1.2e+05 pairs/s, 95.3 GFLOP/s, ETA 0:01:07`` (what a progress bar shows beside done/total)."""
        eta = self.eta_seconds
        eta_text = "?" if eta is None else _clock(eta)
        resumed = f"({self.tiles_resumed} resumed) " if self.tiles_resumed else ""
        return f"{resumed}{self.pairs_per_second:.3g} pairs/s, {self.gflops:.1f} GFLOP/s, ETA {eta_text}"

    def line(self) -> str:
        """``tiles 3/40 (1 resumed) 1.2e+05 pairs/s, 95.3 GFLOP/s, ETA 0:01:07``."""
        return f"tiles {self.tiles_done}/{self.tiles_total} {self.rates()}"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(frozen=True)
class StreamResult:
    """A streamed matrix and how it was made.

    distances: ``[P, G]`` float32 (float64 with ``precision="float64"``);
    plan: the tile plan (recorded with the tiles; resume keeps it);
    tiles_resumed / tiles_computed: tiles found committed / computed now;
    seconds: wall time of this call; runner: ``"threads:N"``,
    ``"dask-local:N"`` or ``"dask:<address>"``.
    refinement: the (probe location, gallery image) entries of the whole
    matrix and how many were recomputed in float64, summed over every tile,
    resumed ones included (read back from the tile store); None when the
    path that made the matrix does not count them.
    tiles_without_counts: tiles whose counts are unknown (committed by a
    version that did not record them); ``refinement`` then covers only the
    other tiles, and :meth:`provenance` says so.
    """

    distances: np.ndarray
    plan: TilePlan
    tiles_resumed: int
    tiles_computed: int
    seconds: float
    runner: str
    refinement: RefinementStats | None = None
    tiles_without_counts: int = 0

    def provenance(self) -> dict[str, Any]:
        """How the matrix was computed (not what it is): for the stored attributes and the results.

        With counts: ``refined_entries`` (entries recomputed in float64),
        ``computed_entries`` (entries counted), ``refined_share`` (their
        ratio) and ``tiles_without_counts`` (tiles left out of both: when
        nonzero, the first three cover only the other tiles).
        """
        how: dict[str, Any] = {
            "precision": self.plan.precision,
            "tile_block_rows": self.plan.block_rows,
            "tile_count": self.plan.num_tiles,
            "memory_budget_bytes": self.plan.memory_budget_bytes,
            "tiles_resumed": self.tiles_resumed,
            "runner": self.runner,
        }
        if self.refinement is not None:
            how.update(refined_entries=self.refinement.refined, computed_entries=self.refinement.entries,
                       refined_share=self.refinement.refined_share, tiles_without_counts=self.tiles_without_counts)
        return how


class _Tracker:
    """Counts finished tiles (from any thread) and reports them to the callback."""

    def __init__(self, plan: TilePlan, pcounts: np.ndarray, gcounts: np.ndarray, pimg: np.ndarray,
                 gimg: np.ndarray, dim: int, done: set, callback: Callable[[MatchProgress], None] | None) -> None:
        self.plan, self.pcounts, self.gcounts, self.pimg, self.gimg, self.dim = plan, pcounts, gcounts, pimg, gimg, dim
        self.callback = callback
        self.lock = threading.Lock()
        self.resumed = len(done)
        self.done = len(done)
        self.pairs_total = int(pimg.sum() * gimg.sum())
        self.pairs_done = sum(self._pairs(t) for t in done)
        self.pairs_computed = 0
        self.flops = 0.0
        self.t0 = time.perf_counter()

    def _pairs(self, tile: tuple[int, int]) -> int:
        gi, pi = tile
        return int(self.gimg[gi] * self.pimg[pi])

    def tile_done(self, gi: int, pi: int) -> None:
        with self.lock:
            self.done += 1
            pairs = self._pairs((gi, pi))
            self.pairs_done += pairs
            self.pairs_computed += pairs
            self.flops += 2.0 * self.dim * float(self.gcounts[gi]) * float(self.pcounts[pi])
            self.report()

    def report(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot())

    def snapshot(self) -> MatchProgress:
        return MatchProgress(
            tiles_done=self.done, tiles_total=self.plan.num_tiles, tiles_resumed=self.resumed,
            pairs_done=self.pairs_done, pairs_total=self.pairs_total, pairs_computed=self.pairs_computed,
            flops_computed=self.flops, seconds=time.perf_counter() - self.t0,
        )


def _task_groups(pending: list[tuple[int, int]], parallel: int) -> list[tuple[int, list[int]]]:
    """``[(gallery block, [probe blocks])]``: one task per gallery block, split when there are too few to go round.

    A task prepares its gallery basis once, so fewer, longer tasks cost less;
    but every runner should get at least two tasks.
    """
    by_gallery: dict[int, list[int]] = {}
    for gi, pi in pending:
        by_gallery.setdefault(gi, []).append(pi)
    parts = max(1, math.ceil(2 * parallel / max(1, len(by_gallery))))
    groups = []
    for gi, pis in by_gallery.items():
        size = max(1, math.ceil(len(pis) / parts))
        groups += [(gi, pis[k : k + size]) for k in range(0, len(pis), size)]
    return groups


def _run_threads(src: TileSource, plan: TilePlan, groups, store: TileStore, tracker: _Tracker, threads: int) -> None:
    stop = threading.Event()

    def commit(gi: int, pi: int, tile: np.ndarray, counts: RefinementStats) -> None:
        store.commit(gi, pi, tile, counts)  # the counts are summed from the store when the matrix is assembled
        tracker.tile_done(gi, pi)

    pool = ThreadPoolExecutor(max_workers=threads)
    futures = [pool.submit(run_tile_task, src, plan, gi, pis, commit, stop) for gi, pis in groups]
    try:
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished:
                fut.result()  # re-raise a task's error here
    except BaseException:
        # Ctrl-C or a failed tile: the threads stop after the tile they are on
        # (it is committed; nothing else is lost) and the error propagates.
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _source(cache_file: Path, probe_split: str, gallery_split: str, beta: float, weighted: bool, normalize: bool,
            precision: str, float32_atol: float, backend: str) -> TileSource:
    xp = get_array_module(backend)
    return TileSource(
        cache_file=str(cache_file), probe_split=probe_split, gallery_split=gallery_split, beta=float(beta),
        weighted=bool(weighted), normalize=bool(normalize), precision=precision, float32_atol=float(float32_atol),
        backend="numpy" if xp is np else "cupy",
    )


def _identity(src: TileSource, attrs: dict[str, Any]) -> dict[str, Any]:
    """What a tile folder's tiles are made from: the cache's key and the two splits' fingerprints
    (``attrs``: the cache's attributes), and the FPR parameters of ``src``. Recorded in the folder's
    manifest; tiles are resumed only under an equal identity."""
    cache_file = Path(src.cache_file)
    return {
        "cache_key": str(attrs.get("cache_key", "")), "probe_split": src.probe_split, "gallery_split": src.gallery_split,
        "features": [split_fingerprint(cache_file, src.probe_split), split_fingerprint(cache_file, src.gallery_split)],
        "beta": src.beta, "weighted": src.weighted, "normalize": src.normalize, "precision": src.precision,
        "float32_atol": src.float32_atol, "backend": src.backend,
    }


def fpr_distances_from_cache(
    cache_file: str | os.PathLike,
    probe_split: str = "query",
    gallery_split: str = "gallery",
    *,
    beta: float = DEFAULT_BETA,
    weighted: bool = True,
    normalize: bool = True,
    precision: str = "auto",
    float32_atol: float = DEFAULT_FLOAT32_ATOL,
    backend: str = "auto",
    memory_budget_bytes: int | None = None,
    threads: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume_dir: str | os.PathLike | None = None,
    progress: Callable[[MatchProgress], None] | None = None,
    block_rows: int | None = None,
    dask_processes: bool = True,
) -> StreamResult:
    """FPR (``weighted=True``) or DSR distances of every ``probe_split`` image to every ``gallery_split`` image.

    The splits are read block by block from ``cache_file`` (see the module
    docstring); the parameters ``beta`` ... ``float32_atol`` and ``backend``
    mean what they mean for :func:`reid_eval.matching.fpr_distances`.

    memory_budget_bytes:
        bound on the working memory of the tiles in flight in this process
        (and in each Dask worker); default :func:`default_memory_budget`.
    threads:
        tiles computed at once in this process, one BLAS thread each
        (default: the CPU count; 1 on a GPU). The budget is shared by them.
    workers / scheduler:
        run the tiles on a Dask LocalCluster of ``workers`` single-thread
        processes, or on the cluster at ``scheduler``; mutually exclusive.
        Needs ``pip install "reid-eval[dask]"``.
    resume_dir:
        tile folder (:func:`reid_eval.matching.tile_store.tile_dir`). When it
        holds tiles of the same computation, they are kept and only the
        others are computed, with the recorded plan; tiles of another
        computation are discarded. The folder is left in place (the caller
        removes it once the matrix is stored). None: a temporary folder
        beside the cache, removed at the end.
    block_rows:
        force the blocks' size in locations instead of deriving it from the
        budget (tests, benchmarks).
    """
    t_start = time.perf_counter()
    if workers is not None and scheduler is not None:
        raise ReidEvalError("--workers and --scheduler cannot be combined: --workers starts a cluster, --scheduler uses one")
    if workers is not None and workers < 1:
        raise ReidEvalError(f"--workers must be at least 1, got {workers}")
    if not beta > 0:
        raise ReidEvalError(f"--beta must be positive, got {beta}")
    precision = resolve_precision(precision, get_array_module(backend))
    cache_file = Path(cache_file).resolve()
    src = _source(cache_file, probe_split, gallery_split, beta, weighted, normalize, precision, float32_atol, backend)
    budget = default_memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
    if threads is None:
        threads = 1 if src.backend == "cupy" else (os.cpu_count() or 1)
    with open_cache(cache_file) as f:
        poff = read_split_offsets(f, probe_split)
        goff = read_split_offsets(f, gallery_split)
        dim = int(f[probe_split]["local"].shape[1])
        if int(f[gallery_split]["local"].shape[1]) != dim:
            raise ReidEvalError(f"cache {cache_file}: {probe_split} features have d={dim}, {gallery_split} d={f[gallery_split]['local'].shape[1]}")
        if weighted and probe_split in f and "foreground" not in f[probe_split]:
            raise ReidEvalError(f"cache {cache_file} has no foreground probabilities for FPR; use --metric dsr or re-extract")
    n_probe, n_gallery = len(poff) - 1, len(goff) - 1
    out_dtype = np.float32 if precision == "float32" else np.float64
    if block_rows is not None:
        plan = TilePlan(int(block_rows), tuple(plan_blocks(np.diff(poff), block_rows)),
                        tuple(plan_blocks(np.diff(goff), block_rows)), precision, budget, threads)
    else:
        plan = plan_tiles(poff, goff, dim, memory_budget_bytes=budget, concurrent_tiles=threads, precision=precision)
    runner = f"threads:{threads}" if workers is None and scheduler is None else (
        f"dask-local:{workers}" if workers is not None else f"dask:{scheduler}")
    if n_probe == 0 or n_gallery == 0:
        return StreamResult(np.zeros((n_probe, n_gallery), out_dtype), plan, 0, 0, time.perf_counter() - t_start, runner,
                            refinement=RefinementStats())

    attrs = read_attrs(cache_file)
    identity = {**_identity(src, attrs), "num_probe": n_probe, "num_gallery": n_gallery}
    temporary = resume_dir is None
    store = TileStore(resume_dir if resume_dir is not None else tempfile.mkdtemp(prefix=".tiles-", dir=cache_file.parent))
    recorded = store.manifest()
    if recorded is not None and recorded.get("identity") == identity:
        # Resume with the plan the tiles were made with: other blocks could change the last bits.
        old = TilePlan.from_dict(recorded["plan"])
        if not old.same_tiles(plan):
            if block_rows is not None:
                store.start({"identity": identity, "plan": plan.to_dict()})
            elif old.block_rows > plan.block_rows:
                raise ReidEvalError(
                    f"the interrupted match in {store.directory} was started with --memory-budget "
                    f"{old.memory_budget_bytes} (blocks of {old.block_rows} locations); resume with that budget, "
                    f"or pass --recompute to start over"
                )
            else:
                plan = old
    else:
        store.start({"identity": identity, "plan": plan.to_dict()})
    try:
        with open_cache(cache_file) as f:
            src = replace(src, probe_center=run_probe_centre(f, src, plan))  # of the plan the tiles are made with
        done = _compute(src, plan, store, poff, goff, dim, n_probe, n_gallery, out_dtype, progress,
                        threads, workers, scheduler, dask_processes)
    finally:
        if temporary:
            store.remove()
    return StreamResult(done.distances, plan, done.resumed, done.computed, time.perf_counter() - t_start, runner,
                        refinement=done.refinement, tiles_without_counts=done.without_counts)


@dataclass(frozen=True)
class _Assembled:
    """What :func:`_compute` returns: the ``[P, G]`` matrix, tile counts and the summed refinement counts."""

    distances: np.ndarray
    resumed: int
    computed: int
    refinement: RefinementStats
    without_counts: int


def _compute(src, plan, store, poff, goff, dim, n_probe, n_gallery, out_dtype, progress, threads, workers, scheduler,
             dask_processes) -> _Assembled:
    pcounts = np.array([poff[b] - poff[a] for a, b in plan.probe_blocks], dtype=np.int64)
    gcounts = np.array([goff[b] - goff[a] for a, b in plan.gallery_blocks], dtype=np.int64)
    pimg = np.array([b - a for a, b in plan.probe_blocks], dtype=np.int64)
    gimg = np.array([b - a for a, b in plan.gallery_blocks], dtype=np.int64)
    done = store.done() & set(plan.tiles())
    resumed = len(done)
    tracker = _Tracker(plan, pcounts, gcounts, pimg, gimg, dim, done, progress)
    tracker.report()
    out = np.empty((n_probe, n_gallery), dtype=out_dtype)
    computed = 0
    for _attempt in range(2):
        pending = [t for t in plan.tiles() if t not in done]
        if pending:
            groups = _task_groups(pending, workers or threads)
            if workers is None and scheduler is None:
                _run_threads(src, plan, groups, store, tracker, threads)
            else:
                from reid_eval.matching.dask_tiles import run_on_dask

                run_on_dask(src, plan, groups, store, tracker, workers=workers, scheduler=scheduler,
                            processes=dask_processes)
            computed += len(pending)
        # Assemble from the committed tiles; one that does not read back is computed again.
        # The counts come from the store too, so resumed tiles and tiles that
        # Dask workers committed are counted like this run's own.
        done = set()
        refinement, without_counts = RefinementStats(), 0
        for gi, pi in plan.tiles():
            (pa, pb), (ga, gb) = plan.probe_blocks[pi], plan.gallery_blocks[gi]
            tile = store.load(gi, pi, (pb - pa, gb - ga))
            if tile is not None:
                out[pa:pb, ga:gb] = tile
                done.add((gi, pi))
                counts = store.counts(gi, pi)
                if counts is None:
                    without_counts += 1
                else:
                    refinement.merge(counts)
        if len(done) == plan.num_tiles:
            return _Assembled(out, resumed, computed, refinement, without_counts)
    raise ReidEvalError(f"tiles in {store.directory} could not be written and read back; check the disk")


_PREP_ROWS = 2048 * (os.cpu_count() or 1)


def fpr_shortlist_from_cache(
    cache_file: str | os.PathLike,
    shortlist: int,
    shortlist_metric: str = "euclidean",
    probe_split: str = "query",
    gallery_split: str = "gallery",
    *,
    beta: float = DEFAULT_BETA,
    weighted: bool = True,
    normalize: bool = True,
    precision: str = "auto",
    float32_atol: float = DEFAULT_FLOAT32_ATOL,
    backend: str = "auto",
    memory_budget_bytes: int | None = None,
    threads: int | None = None,
    resume_dir: str | os.PathLike | None = None,
    progress: Callable[[MatchProgress], None] | None = None,
) -> StreamResult:
    """The ``shortlist`` path of :func:`reid_eval.matching.fpr_distances`, streamed from the cache.

    Same output: FPR for each probe's K nearest gallery images by
    ``shortlist_metric`` on the global features, and for the others
    ``max(shortlisted FPR) + 1 + r`` (r = their rank by global distance).
    The global features of both splits are read whole (1/110 of the local
    features at the paper's geometry). The probes are read and prepared in
    passes of about 3/4 of the budget (a pass holds the rows read and the
    GEMM operand, twice the features; one pass when they fit, since the
    gallery is read and prepared once per pass: Market-1501's 3 GB of query
    features take six passes at 1.5 GB, three at 4 GB, one from 8.2 GB), the gallery is streamed in
    small blocks, and each gallery image reconstructs the probes of the pass
    that shortlist it where their rows lie
    (:func:`~reid_eval.matching.fpr.fpr_pairs`: one small GEMM per pair, no
    copies), on ``threads`` threads. The result's ``refinement`` counts the
    entries refined in float64.

    Resume: the unit of work is one probe pass against one gallery block
    (:func:`~reid_eval.matching.fpr.shortlist_units`); each finished unit's
    distances are committed to the :class:`~reid_eval.matching.tile_store.TileStore`
    at ``resume_dir`` (as for :func:`fpr_distances_from_cache`: kept when
    they belong to the same computation and the very same shortlist, then
    only the other units are computed; left in place for the caller to
    remove; None: a temporary folder removed at the end).
    """
    t_start = time.perf_counter()
    return_freed_blocks_to_the_os()
    cache_file = Path(cache_file).resolve()
    precision = resolve_precision(precision, get_array_module(backend))
    src = _source(cache_file, probe_split, gallery_split, beta, weighted, normalize, precision, float32_atol, backend)
    xp = get_array_module(src.backend)
    budget = default_memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
    threads = (1 if src.backend == "cupy" else (os.cpu_count() or 1)) if threads is None else threads
    with open_cache(cache_file) as f:
        poff = read_split_offsets(f, probe_split)
        goff = read_split_offsets(f, gallery_split)
        dim = int(f[probe_split]["local"].shape[1])
        n_probe, n_gallery = len(poff) - 1, len(goff) - 1
        pglob = read_global_block(f, probe_split, 0, n_probe)
        gglob = read_global_block(f, gallery_split, 0, n_gallery)
    out_dtype = np.float32 if precision == "float32" else np.float64
    k = min(int(shortlist), n_gallery)
    counts = np.concatenate([np.diff(poff), np.diff(goff)])
    m_max = int(counts.max()) if counts.size else 1
    op = 4 if precision == "float32" else 8
    # probe pass: raw rows (4 d + foreground) and the prepared operand (4 or 8 d + per-row scalars);
    # gallery block: rows, basis, factor, prepare's batches
    probe_rows = max(m_max, int(0.75 * budget // ((4 + op) * dim + 72)))
    gallery_rows = max(m_max, int((0.15 * budget - 16 * dim * _PREP_ROWS) // ((4 + op) * dim + 8 * m_max + 48)))
    plan = TilePlan(gallery_rows, tuple(plan_blocks(np.diff(poff), probe_rows)), tuple(plan_blocks(np.diff(goff), gallery_rows)),
                    precision, budget, threads)
    runner = f"threads:{threads}"
    out = np.empty((n_probe, n_gallery), dtype=out_dtype)
    if n_probe == 0 or n_gallery == 0:
        return StreamResult(out, plan, 0, 0, time.perf_counter() - t_start, runner)
    # 1. the shortlist, probe rows in chunks: the rest's rank among the rest goes into `out` for now
    short = np.empty((n_probe, k), dtype=np.int64)
    chunk = max(1, int(0.1 * budget // (24 * n_gallery)))
    rest_rank = np.arange(n_gallery - k, dtype=out_dtype)
    for a in range(0, n_probe, chunk):
        b = min(n_probe, a + chunk)
        order = np.argsort(global_distances(pglob[a:b], gglob, metric=shortlist_metric), axis=1, kind="stable")
        short[a:b] = order[:, :k]
        np.put_along_axis(out[a:b], order[:, k:], np.broadcast_to(rest_rank, (b - a, n_gallery - k)), axis=1)
        del order
    del pglob, gglob
    # 2. the exact distances of the shortlisted pairs, unit by unit (probe pass × gallery block);
    # each finished unit is committed to the tile store, so an interrupted run resumes
    exact = np.empty((n_probe, k), dtype=np.float64)
    flat_exact = exact.reshape(-1)
    units = len(plan.probe_blocks) * len(plan.gallery_blocks)
    identity = {
        **_identity(src, read_attrs(cache_file)), "shortlist": k, "shortlist_metric": shortlist_metric,
        # the units are lists of pairs: resume only onto the very same shortlist
        "shortlist_sha256": hashlib.sha256(np.ascontiguousarray(short).tobytes()).hexdigest(),
    }
    temporary = resume_dir is None
    store = TileStore(resume_dir if resume_dir is not None else tempfile.mkdtemp(prefix=".tiles-", dir=cache_file.parent))
    recorded = store.manifest()
    if recorded is None or recorded.get("identity") != identity or not TilePlan.from_dict(recorded["plan"]).same_tiles(plan):
        store.start({"identity": identity, "plan": plan.to_dict()})
    committed = store.done()
    tracker = _Tracker(plan, np.zeros(len(plan.probe_blocks)), np.zeros(len(plan.gallery_blocks)),
                       np.array([b - a for a, b in plan.probe_blocks]), np.array([b - a for a, b in plan.gallery_blocks]),
                       dim, set(), progress)
    tracker.pairs_total = n_probe * k
    refinement, without_counts, resumed = RefinementStats(), 0, 0
    opts = dict(normalize=normalize, precision=precision, backend=xp)
    try:
        with single_blas_thread(), open_cache(cache_file) as f, ThreadPoolExecutor(max_workers=threads) as pool:

            def gallery_basis(ga: int, gb: int) -> GalleryBasis:
                return prepare_gallery(read_spatial_block(f, gallery_split, ga, gb), beta=beta, index_base=ga, **opts)

            center = run_probe_centre(f, src, plan)  # every pass is split along the first one's centre

            for pi, (pa, pb) in enumerate(plan.probe_blocks):
                pass_units = shortlist_units(short, pa, pb - pa, plan.gallery_blocks)
                todo = []
                for gi, pairs in enumerate(pass_units):
                    values = store.load(gi, pi, (pairs.size,)) if (gi, pi) in committed else None
                    if values is None:
                        todo.append(gi)
                        continue
                    flat_exact[pairs] = values
                    resumed += 1
                    unit_counts = store.counts(gi, pi)
                    if unit_counts is None:
                        without_counts += 1
                    else:
                        refinement.merge(unit_counts)
                    with tracker.lock:
                        tracker.done += 1
                        tracker.resumed += 1
                        tracker.pairs_done += int(pairs.size)
                tracker.report()
                if not todo:
                    continue

                def unit_done(gi: int, pairs: np.ndarray, flops: float, counts: RefinementStats, pi: int = pi) -> None:
                    store.commit(gi, pi, flat_exact[pairs], counts)
                    with tracker.lock:
                        tracker.done += 1
                        tracker.pairs_done += int(pairs.size)
                        tracker.pairs_computed += int(pairs.size)
                        tracker.flops += flops
                        tracker.report()

                # The pass's probes are prepared once; each gallery image then meets the
                # probes that shortlist it where their rows lie (fpr_pairs: no copies).
                try:
                    probes = prepare_probes(read_spatial_block(f, probe_split, pa, pb), weighted=weighted,
                                            index_base=pa, center=center, **opts)
                    fpr_shortlist_pass(probes, pa, short, plan.gallery_blocks, gallery_basis, exact,
                                       float32_atol=float32_atol, stats=refinement, map_fn=pool.map, blocks=todo,
                                       block_done=unit_done)
                except ValueError as exc:  # a NaN, zero or foreground-less image: name the file
                    raise ReidEvalError(f"cache {cache_file}: {exc}") from None
                del probes
    finally:
        if temporary:
            store.remove()
    # 3. the rest behind the shortlist, in the in-memory engine's arithmetic: (max + 1) + r
    top = exact.max(axis=1) + 1.0
    for p in range(n_probe):
        out[p] = (top[p] + out[p].astype(np.float64)).astype(out_dtype)
    np.put_along_axis(out, short, exact.astype(out_dtype), axis=1)
    return StreamResult(out, plan, resumed, units - resumed, time.perf_counter() - t_start, runner,
                        refinement=refinement, tiles_without_counts=without_counts)
