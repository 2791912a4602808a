"""FPR / DSR distances straight from the HDF5 cache: bounded memory, resumable, observable, distributable.

:func:`fpr_distances_from_cache` is :func:`reid_eval.matching.fpr_distances`
for two splits of a cache file that are never loaded whole:

* a :class:`~reid_eval.matching.plan.TilePlan` cuts both splits into image
  ranges sized so that the tiles in flight fit in ``memory_budget_bytes``;
  peak memory is that budget, plus the ``[P, G]`` result, plus a constant
  (the interpreter, NumPy, h5py), whatever the split sizes;
* each finished tile is committed to a :class:`~reid_eval.matching.tile_store.TileStore`
  folder; with ``resume_dir`` set, a rerun after Ctrl-C or ``kill -9``
  recomputes none of them and ends with the same bits;
* ``progress`` receives a :class:`~reid_eval.matching.loop.MatchProgress`
  after every tile (tiles done / total, pairs and GFLOP per second, ETA);
* ``workers=N`` runs the tiles on a Dask ``LocalCluster`` of N single-thread
  worker processes, ``scheduler="tcp://host:port"`` on an existing Dask
  cluster (:mod:`reid_eval.matching.dask_tiles`); without either, tiles run
  on ``threads`` threads of this process.

The tiles are computed by the loop every driver shares
(:mod:`reid_eval.matching.loop`), each GEMM on one BLAS thread, so the matrix
depends only on the tile plan, not on threads, workers or machines.
:func:`fpr_shortlist_from_cache` is the shortlist path
(:mod:`reid_eval.matching.shortlist`), streamed the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.errors import ReidEvalError
from reid_eval.features.cache import (
    open_cache,
    read_attrs,
    read_global_block,
    read_split_offsets,
    split_fingerprint,
)
from reid_eval.matching.kernel import RefinementStats
from reid_eval.matching.loop import (
    CacheSource,
    MatchProgress,
    ProgressCounter,
    ThreadRunner,
    TileJob,
    run_tiles,
    shared_centre,
    tile_work,
)
from reid_eval.matching.memory import check_workers_fit, default_memory_budget
from reid_eval.matching.plan import ShortlistPlan, TilePlan, plan_shortlist, plan_tiles, shortlist_chunk_rows
from reid_eval.matching.settings import EngineSettings
from reid_eval.matching.shortlist import behind_the_shortlist, pick_shortlist, run_shortlist
from reid_eval.matching.tile_store import TileStore

__all__ = ["MatchProgress", "StreamResult", "fpr_distances_from_cache", "fpr_shortlist_from_cache"]


@dataclass(frozen=True)
class StreamResult:
    """A streamed matrix and how it was made.

    distances: ``[P, G]`` float32 (float64 with ``precision="float64"``);
    plan: the tile plan (recorded with the tiles; resume keeps it), or the
    shortlist's plan; tiles_resumed / tiles_computed: tiles (or shortlist
    units) found committed / computed now; seconds: wall time of this call;
    runner: ``"threads:N"``, ``"dask-local:N"`` or ``"dask:<address>"``.
    refinement: the (probe location, gallery image) entries of the whole
    matrix and how many were recomputed in float64, summed over every tile,
    resumed ones included (read back from the tile records); None when the
    path that made the matrix does not count them.
    tiles_rejected: ``"<tile file>: <reason>"`` of the committed tiles that
    failed their check (checksum, dtype, shape, finite values; see
    :mod:`~reid_eval.matching.tile_store`) and were computed again; they are
    not among ``tiles_resumed``.
    """

    distances: np.ndarray
    plan: TilePlan | ShortlistPlan
    tiles_resumed: int
    tiles_computed: int
    seconds: float
    runner: str
    refinement: RefinementStats | None = None
    tiles_rejected: tuple[str, ...] = ()

    def provenance(self) -> dict[str, Any]:
        """How the matrix was computed (not what it is): for the stored attributes and the results.

        With counts: ``refined_entries`` (entries recomputed in float64),
        ``computed_entries`` (entries counted) and ``refined_share`` (their
        ratio). ``tiles_failed_check``: how many committed tiles failed their
        check and were computed again, with the first one's reason in
        ``tile_check_failure`` (only when there were any).
        """
        how: dict[str, Any] = {**self.plan.provenance(), "tiles_resumed": self.tiles_resumed, "runner": self.runner}
        if self.refinement is not None:
            how.update(refined_entries=self.refinement.refined, computed_entries=self.refinement.entries,
                       refined_share=self.refinement.refined_share)
        if self.tiles_rejected:
            how.update(tiles_failed_check=len(self.tiles_rejected), tile_check_failure=self.tiles_rejected[0])
        return how


def _settings(engine: dict[str, Any]) -> EngineSettings:
    """The engine settings of a streamed match, checked once (ReidEvalError on a bad value)."""
    try:
        return EngineSettings(**engine).resolved()
    except ValueError as exc:
        raise ReidEvalError(str(exc)) from None


def _identity(source: CacheSource, settings: EngineSettings) -> dict[str, Any]:
    """What a tile folder's tiles are made from: the cache's key, the two splits' fingerprints and the
    engine settings. Recorded in the folder's manifest; tiles are resumed only under an equal identity."""
    cache_file = Path(source.cache_file)
    return {
        "cache_key": str(read_attrs(cache_file).get("cache_key", "")), "probe_split": source.probe_split,
        "gallery_split": source.gallery_split,
        "features": [split_fingerprint(cache_file, source.probe_split), split_fingerprint(cache_file, source.gallery_split)],
        **settings.identity(),
    }


def _open_store(resume_dir: str | os.PathLike | None, cache_file: Path) -> tuple[TileStore, bool]:
    """The tile store of a run: ``resume_dir``, or a temporary folder beside the cache (True: remove it at the end)."""
    if resume_dir is not None:
        return TileStore(resume_dir), False
    return TileStore(tempfile.mkdtemp(prefix=".tiles-", dir=cache_file.parent)), True


def _read_geometry(cache_file: Path, probe_split: str, gallery_split: str,
                   weighted: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(probe ``[P+1]`` and gallery ``[G+1]`` row offsets, d) of two splits, checked against each other."""
    with open_cache(cache_file) as f:
        poff = read_split_offsets(f, probe_split)
        goff = read_split_offsets(f, gallery_split)
        dim = int(f[probe_split]["local"].shape[1])
        if int(f[gallery_split]["local"].shape[1]) != dim:
            raise ReidEvalError(f"cache {cache_file}: {probe_split} features have d={dim}, {gallery_split} d={f[gallery_split]['local'].shape[1]}")
        if weighted and probe_split in f and "foreground" not in f[probe_split]:
            raise ReidEvalError(f"cache {cache_file} has no foreground probabilities for FPR; use --metric dsr or re-extract")
    return poff, goff, dim


def _threads(threads: int | None, settings: EngineSettings) -> int:
    """Tiles in flight in this process: ``threads``, or by default the CPU count (1 on a GPU)."""
    if threads is not None:
        return int(threads)
    return 1 if settings.backend == "cupy" else (os.cpu_count() or 1)


def _runner(threads: int, workers: int | None, scheduler: str | None, dask_processes: bool, budget: int) -> Any:
    """The runner of a streamed match: this process's threads, or Dask (``workers`` / ``scheduler``).

    Local workers must fit the machine: ``workers`` × ``budget`` within its memory.
    """
    if workers is not None and scheduler is not None:
        raise ReidEvalError("--workers and --scheduler cannot be combined: --workers starts a cluster, --scheduler uses one")
    if workers is not None and workers < 1:
        raise ReidEvalError(f"--workers must be at least 1, got {workers}")
    if workers is not None and dask_processes:
        check_workers_fit(workers, budget)
    if workers is None and scheduler is None:
        return ThreadRunner(threads)
    from reid_eval.matching.dask_tiles import DaskRunner

    return DaskRunner(workers=workers, scheduler=scheduler, parallel=workers or threads, processes=dask_processes)


def fpr_distances_from_cache(
    cache_file: str | os.PathLike,
    probe_split: str = "query",
    gallery_split: str = "gallery",
    *,
    memory_budget_bytes: int | None = None,
    threads: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume_dir: str | os.PathLike | None = None,
    progress: Callable[[MatchProgress], None] | None = None,
    block_rows: int | None = None,
    dask_processes: bool = True,
    settings: EngineSettings | None = None,
    **engine: Any,
) -> StreamResult:
    """FPR (``weighted=True``) or DSR distances of every ``probe_split`` image to every ``gallery_split`` image.

    The splits are read block by block from ``cache_file`` (see the module
    docstring). ``settings`` (:class:`~reid_eval.matching.settings.EngineSettings`),
    or its fields as keywords (``beta``, ``weighted``, ``normalize``,
    ``precision``, ``float32_atol``, ``backend``; keywords override
    ``settings``): what the matrix is computed with.

    memory_budget_bytes:
        bound on the working memory of the tiles in flight in this process
        (and in each Dask worker); default
        :func:`~reid_eval.matching.memory.default_memory_budget`.
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
    settings = _settings({**(asdict(settings) if settings is not None else {}), **engine})
    threads = _threads(threads, settings)
    budget = default_memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
    runner = _runner(threads, workers, scheduler, dask_processes, budget)
    cache_file = Path(cache_file).resolve()
    source = CacheSource(str(cache_file), probe_split, gallery_split)
    poff, goff, dim = _read_geometry(cache_file, probe_split, gallery_split, settings.weighted)
    n_probe, n_gallery = len(poff) - 1, len(goff) - 1
    if block_rows is not None:
        plan = TilePlan.of_rows(poff, goff, int(block_rows), settings.precision, budget, threads)
    else:
        plan = plan_tiles(poff, goff, dim, memory_budget_bytes=budget, concurrent_tiles=threads,
                          precision=settings.precision)
    if n_probe == 0 or n_gallery == 0:
        return StreamResult(np.zeros((n_probe, n_gallery), settings.out_dtype), plan, 0, 0,
                            time.perf_counter() - t_start, runner.name, refinement=RefinementStats())

    identity = {**_identity(source, settings), "num_probe": n_probe, "num_gallery": n_gallery}
    store, temporary = _open_store(resume_dir, cache_file)
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
        # the centre of the plan the tiles are made with (inside the try: a bad first block leaves no folder)
        job = TileJob(source, settings, plan, shared_centre(source, settings, plan))
        done = _compute(job, store, runner, poff, goff, dim, n_probe, n_gallery, progress)
    finally:
        if temporary:
            store.remove()
    return StreamResult(done.distances, plan, done.resumed, done.computed, time.perf_counter() - t_start, runner.name,
                        refinement=done.refinement, tiles_rejected=tuple(store.rejected))


@dataclass(frozen=True)
class _Assembled:
    """What :func:`_compute` returns: the ``[P, G]`` matrix, tile counts and the summed refinement counts."""

    distances: np.ndarray
    resumed: int
    computed: int
    refinement: RefinementStats


def _compute(job: TileJob, store: TileStore, runner: Any, poff: np.ndarray, goff: np.ndarray, dim: int,
             n_probe: int, n_gallery: int, progress: Callable[[MatchProgress], None] | None) -> _Assembled:
    """The tiles not yet in ``store`` computed into it, the matrix assembled from the store's checked tiles.

    A committed tile counts as resumed only when it passes its record
    (:meth:`TileStore.load`); one that fails is computed with the others.
    The counts come from the records too, so tiles that Dask workers
    committed are counted like this run's own.
    """
    plan = job.plan
    work = tile_work(plan, poff, goff, dim)
    out = np.empty((n_probe, n_gallery), dtype=job.settings.out_dtype)
    refinement = RefinementStats()
    counter = ProgressCounter(plan.num_tiles, n_probe * n_gallery, progress)

    def take(gi: int, pi: int) -> bool:
        (pa, pb), (ga, gb) = plan.probe_blocks[pi], plan.gallery_blocks[gi]
        tile = store.load(gi, pi, (pb - pa, gb - ga), out.dtype)
        if tile is None:
            return False
        out[pa:pb, ga:gb] = tile.values
        refinement.merge(tile.counts)
        return True

    committed = store.done()
    pending = [t for t in plan.tiles() if not (t in committed and take(*t))]
    resumed = plan.num_tiles - len(pending)
    for t in set(plan.tiles()) - set(pending):
        counter.add_resumed(work(*t)[0])
    counter.report()
    computed = 0
    for _attempt in range(2):
        if not pending:
            return _Assembled(out, resumed, computed, refinement)
        run_tiles(job, pending, store, runner, counter, work)
        computed += len(pending)
        # this run's tiles pass through the same check; one that does not read back is computed again
        pending = [t for t in pending if not take(*t)]
    last = f" (last: {store.rejected[-1]})" if store.rejected else ""
    raise ReidEvalError(f"tiles in {store.directory} could not be written and read back{last}; check the disk")


def fpr_shortlist_from_cache(
    cache_file: str | os.PathLike,
    shortlist: int,
    shortlist_metric: str = "euclidean",
    probe_split: str = "query",
    gallery_split: str = "gallery",
    *,
    memory_budget_bytes: int | None = None,
    threads: int | None = None,
    resume_dir: str | os.PathLike | None = None,
    progress: Callable[[MatchProgress], None] | None = None,
    settings: EngineSettings | None = None,
    **engine: Any,
) -> StreamResult:
    """The ``shortlist`` path of :func:`reid_eval.matching.fpr_distances`, streamed from the cache.

    Same output (:mod:`reid_eval.matching.shortlist`): FPR for each probe's
    K nearest gallery images by ``shortlist_metric`` on the global features,
    and for the others ``max(shortlisted FPR) + 1 + r``. The global features
    of both splits are read whole (1/110 of the local features at the
    paper's geometry); the probes are read and prepared in passes and the
    gallery streamed in small blocks (:func:`~reid_eval.matching.plan.plan_shortlist`),
    on ``threads`` threads. ``settings`` / engine keywords, budget and
    ``progress``: as for :func:`fpr_distances_from_cache`. The result's
    ``refinement`` counts the entries refined in float64.

    Resume: each finished unit (a probe pass against a gallery block) is
    committed to the :class:`~reid_eval.matching.tile_store.TileStore` at
    ``resume_dir`` (as for :func:`fpr_distances_from_cache`: kept when they
    belong to the same computation and the very same shortlist, then only the
    other units are computed; left in place for the caller to remove; None: a
    temporary folder removed at the end).
    """
    t_start = time.perf_counter()
    settings = _settings({**(asdict(settings) if settings is not None else {}), **engine})
    threads = _threads(threads, settings)
    runner = ThreadRunner(threads)
    cache_file = Path(cache_file).resolve()
    source = CacheSource(str(cache_file), probe_split, gallery_split)
    budget = default_memory_budget() if memory_budget_bytes is None else int(memory_budget_bytes)
    poff, goff, dim = _read_geometry(cache_file, probe_split, gallery_split, settings.weighted)
    n_probe, n_gallery = len(poff) - 1, len(goff) - 1
    with open_cache(cache_file) as f:
        pglob = read_global_block(f, probe_split, 0, n_probe)
        gglob = read_global_block(f, gallery_split, 0, n_gallery)
    k = min(int(shortlist), n_gallery)
    plan = plan_shortlist(poff, goff, dim, memory_budget_bytes=budget, concurrent_tiles=threads,
                          precision=settings.precision)
    out = np.empty((n_probe, n_gallery), dtype=settings.out_dtype)
    if n_probe == 0 or n_gallery == 0:
        return StreamResult(out, plan, 0, 0, time.perf_counter() - t_start, runner.name)
    # 1. the shortlist, probe rows in chunks: the rest's rank among the rest goes into `out` for now
    short = pick_shortlist(pglob, gglob, k, shortlist_metric, shortlist_chunk_rows(budget, n_gallery), out)
    del pglob, gglob
    # 2. the exact distances of the shortlisted pairs, unit by unit (probe pass × gallery block);
    # each finished unit is committed to the tile store, so an interrupted run resumes
    exact = np.empty((n_probe, k), dtype=np.float64)
    identity = {
        **_identity(source, settings), "shortlist": k, "shortlist_metric": shortlist_metric,
        # the units are lists of pairs: resume only onto the very same shortlist
        "shortlist_sha256": hashlib.sha256(np.ascontiguousarray(short).tobytes()).hexdigest(),
    }
    store, temporary = _open_store(resume_dir, cache_file)
    recorded = store.manifest()
    if recorded is None or recorded.get("identity") != identity or not ShortlistPlan.from_dict(recorded["plan"]).same_tiles(plan):
        store.start({"identity": identity, "plan": plan.to_dict()})
    counter = ProgressCounter(plan.num_tiles, n_probe * k, progress)
    try:
        job = TileJob(source, settings, plan)  # every pass shares the first pass's centre (run_shortlist)
        refinement, resumed = run_shortlist(job, short, exact, runner, store, counter)
    finally:
        if temporary:
            store.remove()
    # 3. the rest behind the shortlist: (max + 1) + r
    behind_the_shortlist(out, short, exact)
    return StreamResult(out, plan, resumed, plan.num_tiles - resumed, time.perf_counter() - t_start, runner.name,
                        refinement=refinement, tiles_rejected=tuple(store.rejected))
