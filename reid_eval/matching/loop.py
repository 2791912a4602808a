"""The one loop of matching: the tiles of a plan, read from a block source, run by a runner, into a sink.

Every driver computes its matrix here (:func:`run_tiles`): the in-memory
engine (:func:`reid_eval.matching.fpr_distances`), the streamed one
(:func:`reid_eval.matching.streaming.fpr_distances_from_cache`) and its Dask
workers. They differ only in what they hand in:

* a *block source*: :class:`MemorySource` (two in-memory splits) or
  :class:`CacheSource` (two splits of the HDF5 cache, read block by block;
  small and picklable, so Dask workers read their own blocks);
* a *runner*: :class:`SequentialRunner` (this thread, the caller's BLAS
  threads), :class:`ThreadRunner` (tile tasks on threads, one BLAS thread
  each) or :class:`~reid_eval.matching.dask_tiles.DaskRunner`;
* a *sink* for finished tiles, owned by the driver: :class:`MatrixSink` (into
  the ``[P, G]`` array) or a :class:`~reid_eval.matching.tile_store.TileStore`
  (committed files, so an interrupted run resumes).

Bit identity. A tile task (:func:`run_tile_task`) prepares its gallery block
once and each probe block as its tile comes, all split along one centre
(:func:`shared_centre`). A tile depends only on its two blocks, the settings
and, through GEMM rounding, the BLAS thread count; so any two runs with the
same plan and one BLAS thread per GEMM give the same bits, whatever the
source, runner or number of threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reid_eval.errors import ReidEvalError
from reid_eval.features.cache import open_cache, read_spatial_block
from reid_eval.features.spatial import SpatialFeatures
from reid_eval.matching.kernel import (
    RefinementStats,
    TileWorkspace,
    fpr_tile,
    prepare_gallery,
    prepare_probes,
    probe_centre,
    single_blas_thread,
    to_numpy,
)
from reid_eval.matching.kernel.backend import return_freed_blocks_to_the_os
from reid_eval.matching.plan import ShortlistPlan, TilePlan, operand_bytes
from reid_eval.matching.settings import EngineSettings

__all__ = [
    "BlockReader",
    "MemorySource",
    "CacheSource",
    "TileJob",
    "shared_centre",
    "KeptProbes",
    "probe_room",
    "prepare_probe_block",
    "prepare_gallery_block",
    "run_tile_task",
    "MatrixSink",
    "MatchProgress",
    "ProgressCounter",
    "SequentialRunner",
    "ThreadRunner",
    "task_groups",
    "tile_work",
    "run_tiles",
]

#: ``commit(gallery block, probe block, tile [p, g] host array, its own refinement counts)``.
Commit = Callable[[int, int, np.ndarray, RefinementStats], None]


class BlockReader(Protocol):
    """An open block source: the spatial features of a range of probe or gallery images."""

    def probes(self, start: int, stop: int) -> SpatialFeatures: ...

    def gallery(self, start: int, stop: int) -> SpatialFeatures: ...


@dataclass(frozen=True)
class MemorySource:
    """Two splits in memory; bad input raises the kernel's ValueError as it is."""

    probe_features: SpatialFeatures
    gallery_features: SpatialFeatures

    @contextmanager
    def open(self) -> Iterator[BlockReader]:
        yield self

    def probes(self, start: int, stop: int) -> SpatialFeatures:
        return self.probe_features[start:stop]

    def gallery(self, start: int, stop: int) -> SpatialFeatures:
        return self.gallery_features[start:stop]


@dataclass(frozen=True)
class CacheSource:
    """Two splits of an HDF5 feature cache, read block by block (picklable: sent to Dask workers).

    cache_file: absolute path, reachable by whoever runs a task. A bad input
    (a NaN, a zero row, a foreground summing to 0) becomes one ReidEvalError
    naming the file.
    """

    cache_file: str
    probe_split: str
    gallery_split: str

    @contextmanager
    def open(self) -> Iterator[BlockReader]:
        try:
            with open_cache(self.cache_file) as f:
                yield _CacheReader(f, self.probe_split, self.gallery_split)
        except ValueError as exc:
            raise ReidEvalError(f"cache {Path(self.cache_file)}: {exc}") from None


@dataclass(frozen=True)
class _CacheReader:
    f: Any
    probe_split: str
    gallery_split: str

    def probes(self, start: int, stop: int) -> SpatialFeatures:
        return read_spatial_block(self.f, self.probe_split, start, stop)

    def gallery(self, start: int, stop: int) -> SpatialFeatures:
        return read_spatial_block(self.f, self.gallery_split, start, stop)


@dataclass(frozen=True)
class TileJob:
    """Everything a tile task needs besides its block indices (small and picklable).

    source: :class:`MemorySource` or :class:`CacheSource`; settings: resolved
    :class:`~reid_eval.matching.settings.EngineSettings`; plan: the blocks;
    centre: host float64 ``[d]`` every probe block is split along, or None
    (:func:`shared_centre`).
    """

    source: Any
    settings: EngineSettings
    plan: TilePlan | ShortlistPlan
    centre: np.ndarray | None = field(default=None, compare=False)


def shared_centre(source: Any, settings: EngineSettings, plan: TilePlan | ShortlistPlan) -> np.ndarray | None:
    """The centre every probe block of a run is split along: its first probe block's own, or None.

    Shared only with float32 (or tf32x3) operands and several probe blocks (a single
    block takes its own, the same one, in the pass that prepares it).
    Sharing it lets each gallery block compute its centre terms once for all
    its tiles, and every driver takes it from here, so they get the same bits.
    """
    if settings.precision == "float64" or len(plan.probe_blocks) < 2:
        return None
    a, b = plan.probe_blocks[0]
    with source.open() as reader:
        centre = probe_centre(reader.probes(a, b), normalize=settings.normalize, backend=settings.xp)
    return np.asarray(to_numpy(centre), dtype=np.float64)


class KeptProbes:
    """Prepared probe blocks kept between the tiles of one executor (a thread pool, a Dask worker), within a room.

    ``capacity_bytes``: the bytes the kept blocks may take together
    (:func:`probe_room`). Blocks are kept first come, first kept, never
    evicted: with a plan's blocks taken in order, the first ones that fit
    are read and prepared once and the others once per tile. Shared by
    the executor's threads (a kept block is only read by tiles).
    """

    def __init__(self, capacity_bytes: float) -> None:
        self.capacity, self.used = float(capacity_bytes), 0
        self._blocks: dict[int, Any] = {}
        self._lock = threading.Lock()

    def get(self, pi: int) -> Any:
        """Prepared probe block ``pi``, or None when it is not kept (or is being prepared by another thread)."""
        with self._lock:
            return self._blocks.get(pi)

    def reserve(self, pi: int, nbytes: int) -> bool:
        """Whether block ``pi`` of ``nbytes`` is to be kept: True (and its room taken) when it fits and is not kept yet."""
        with self._lock:
            if pi in self._blocks or self.used + nbytes > self.capacity:
                return False
            self._blocks[pi] = None
            self.used += int(nbytes)
            return True

    def put(self, pi: int, probes: Any) -> None:
        """Block ``pi``, reserved before, prepared in memory of its own."""
        with self._lock:
            self._blocks[pi] = probes

    def kept(self) -> list[int]:
        """The probe blocks kept (or reserved), in the order they came."""
        with self._lock:
            return list(self._blocks)


def probe_room(plan: TilePlan, tiles_at_once: int) -> int:
    """Bytes of ``plan``'s budget left free by ``tiles_at_once`` tiles in one process (0 when they take it all).

    The plan's blocks fit ``concurrent_tiles`` tile tasks in the budget, so a
    process running fewer at once (a single-thread Dask worker: one) has the
    rest of its budget for :class:`KeptProbes`.
    """
    share = plan.memory_budget_bytes / max(1, plan.concurrent_tiles)
    return max(0, int(plan.memory_budget_bytes - tiles_at_once * share))


def prepared_probe_bytes(rows: int, dim: int, precision: str) -> int:
    """Bytes a prepared probe block of ``rows`` locations × ``dim`` holds: the rows read, the GEMM operand and
    five float64 scalars per row (:class:`~reid_eval.matching.kernel.probes.ProbeBlock`)."""
    return int(rows) * (int(dim) * (4 + operand_bytes(precision)) + 40)


def prepare_probe_block(job: TileJob, reader: BlockReader, pi: int, workspace: TileWorkspace | None = None,
                        kept: KeptProbes | None = None) -> Any:
    """Probe block ``pi`` of the job's plan, prepared (into ``workspace``'s probe slot when given).

    ``kept``: a block kept there is returned as it is; one that fits its room
    is prepared in memory of its own (a workspace slot is overwritten by the
    next block) and kept. Either way the same arithmetic, so the same bits.
    """
    block = None if kept is None else kept.get(pi)
    if block is not None:
        return block
    s, (a, b) = job.settings, job.plan.probe_blocks[pi]
    features = reader.probes(a, b)
    keep = kept is not None and kept.reserve(pi, prepared_probe_bytes(*features.local.shape, s.precision))
    block = prepare_probes(features, weighted=s.weighted, normalize=s.normalize, precision=s.precision,
                           backend=s.xp, index_base=a, centre=job.centre, workspace=None if keep else workspace)
    if keep:
        kept.put(pi, block)
    return block


def prepare_gallery_block(job: TileJob, reader: BlockReader, gi: int) -> Any:
    """Gallery block ``gi`` of the job's plan, prepared."""
    s, (a, b) = job.settings, job.plan.gallery_blocks[gi]
    return prepare_gallery(reader.gallery(a, b), beta=s.beta, normalize=s.normalize, precision=s.precision,
                           backend=s.xp, index_base=a)


def run_tile_task(job: TileJob, gallery_index: int, probe_indices: Sequence[int], commit: Commit,
                  stop: threading.Event | None = None, workspace: TileWorkspace | None = None,
                  kept: KeptProbes | None = None) -> int:
    """Compute tiles ``(gallery_index, pi)`` for ``pi`` in ``probe_indices`` and ``commit`` each as it is done.

    Prepares the gallery block once and each probe block when its tile comes
    (host → device as read on CuPy). ``commit`` gets each ``[p, g]`` host
    tile with its own :class:`~reid_eval.matching.kernel.RefinementStats`
    (counted per tile, so a resumed run sums the counts of tiles an earlier
    run committed). Stops early (between tiles) when ``stop`` is set.
    ``workspace``: the buffers reused by this thread's tiles (a fresh one
    when None). ``kept``: prepared probe blocks kept between tiles and tasks
    (:class:`KeptProbes`; those that fit its room are read and prepared
    once). Returns the number of tiles committed.
    """
    done = 0
    workspace = workspace if workspace is not None else TileWorkspace()
    with job.source.open() as reader:
        basis = prepare_gallery_block(job, reader, gallery_index)
        for pi in probe_indices:
            if stop is not None and stop.is_set():
                break
            probes = prepare_probe_block(job, reader, pi, workspace, kept)
            counts = RefinementStats()
            tile = np.asarray(to_numpy(fpr_tile(probes, basis, float32_atol=job.settings.float32_atol, stats=counts,
                                                workspace=workspace)))
            commit(gallery_index, int(pi), tile, counts)
            done += 1
    return done


class MatrixSink:
    """Finished tiles written into the ``[P, G]`` matrix ``out``; their counts added to ``stats`` (when given)."""

    def __init__(self, plan: TilePlan, out: np.ndarray, stats: RefinementStats | None = None) -> None:
        self.plan, self.out, self.stats = plan, out, stats
        self._lock = threading.Lock()

    def commit(self, gi: int, pi: int, tile: np.ndarray, counts: RefinementStats) -> None:
        (pa, pb), (ga, gb) = self.plan.probe_blocks[pi], self.plan.gallery_blocks[gi]
        self.out[pa:pb, ga:gb] = tile
        if self.stats is not None:
            with self._lock:
                self.stats.merge(counts)


@dataclass(frozen=True)
class MatchProgress:
    """Where a match stands (passed to the ``progress`` callback).

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


class ProgressCounter:
    """Counts units of work (tiles, or shortlist units) resumed and computed, from any thread, and reports them."""

    def __init__(self, tiles_total: int, pairs_total: int,
                 callback: Callable[[MatchProgress], None] | None = None) -> None:
        self.tiles_total, self.pairs_total, self.callback = int(tiles_total), int(pairs_total), callback
        self._lock = threading.Lock()
        self.resumed = self.done = self.pairs_done = self.pairs_computed = 0
        self.flops = 0.0
        self.t0 = time.perf_counter()

    def add_resumed(self, pairs: int) -> None:
        """One unit found committed by an earlier run (not reported: call :meth:`report` after a batch)."""
        with self._lock:
            self.resumed += 1
            self.done += 1
            self.pairs_done += int(pairs)

    def add_computed(self, pairs: int, flops: float) -> None:
        """One unit computed now, of ``pairs`` distances and ``flops`` multiply-adds ×2; reported at once."""
        with self._lock:
            self.done += 1
            self.pairs_done += int(pairs)
            self.pairs_computed += int(pairs)
            self.flops += float(flops)
            self.report()

    def report(self) -> None:
        if self.callback is not None:
            self.callback(self.snapshot())

    def snapshot(self) -> MatchProgress:
        return MatchProgress(
            tiles_done=self.done, tiles_total=self.tiles_total, tiles_resumed=self.resumed,
            pairs_done=self.pairs_done, pairs_total=self.pairs_total, pairs_computed=self.pairs_computed,
            flops_computed=self.flops, seconds=time.perf_counter() - self.t0,
        )


def task_groups(pending: Sequence[tuple[int, int]], parallel: int) -> list[tuple[int, list[int]]]:
    """``[(gallery block, [probe blocks])]``: one task per gallery block, split when there are too few to go round.

    A task prepares its gallery basis once, so fewer, longer tasks cost less;
    but every runner of ``parallel`` tasks at once should get at least two.
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


# A runner has ``name`` (provenance: "threads:N", ...), ``run(job, pending, sink, done)`` (compute the
# pending tiles, commit each to ``sink`` and call ``done(gi, pi)`` in this process) and, for the
# shortlist, ``mapper()`` (a context giving the ``map`` its calls run on).


class SequentialRunner:
    """Tiles one after another on this thread, with the caller's BLAS threads (the in-memory engine).

    One task per gallery block, in order; one workspace for all of them; a
    plan's only probe block is prepared once.
    """

    name = "sequential"

    @contextmanager
    def mapper(self) -> Iterator[Callable[..., Any]]:
        """The ``map`` that runs a shortlist pass's calls: Python's own."""
        yield map

    def run(self, job: TileJob, pending: Sequence[tuple[int, int]], sink: Any, done: Callable[[int, int], None]) -> None:
        workspace = TileWorkspace()
        kept = KeptProbes(math.inf) if len(job.plan.probe_blocks) == 1 else None

        def commit(gi: int, pi: int, tile: np.ndarray, counts: RefinementStats) -> None:
            sink.commit(gi, pi, tile, counts)
            done(gi, pi)

        for gi, pis in _in_order(pending):
            run_tile_task(job, gi, pis, commit, workspace=workspace, kept=kept)


def _in_order(pending: Sequence[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """``[(gallery block, [probe blocks])]`` in the order of ``pending``, one group per gallery block."""
    by_gallery: dict[int, list[int]] = {}
    for gi, pi in pending:
        by_gallery.setdefault(gi, []).append(pi)
    return list(by_gallery.items())


class ThreadRunner:
    """Tile tasks on ``threads`` threads of this process, each GEMM on one BLAS thread (``"threads:N"``)."""

    def __init__(self, threads: int) -> None:
        self.threads = int(threads)
        self.name = f"threads:{self.threads}"

    @contextmanager
    def mapper(self) -> Iterator[Callable[..., Any]]:
        """The ``map`` that runs a shortlist pass's calls: a pool of ``threads``, one BLAS thread each."""
        return_freed_blocks_to_the_os()
        with single_blas_thread(), ThreadPoolExecutor(max_workers=self.threads) as pool:
            yield pool.map

    def run(self, job: TileJob, pending: Sequence[tuple[int, int]], sink: Any, done: Callable[[int, int], None]) -> None:
        return_freed_blocks_to_the_os()
        stop = threading.Event()

        def commit(gi: int, pi: int, tile: np.ndarray, counts: RefinementStats) -> None:
            sink.commit(gi, pi, tile, counts)
            done(gi, pi)

        kept = KeptProbes(probe_room(job.plan, self.threads))  # room only when fewer threads than the plan's tiles

        def task(gi: int, pis: list[int]) -> int:
            with single_blas_thread():
                return run_tile_task(job, gi, pis, commit, stop, kept=kept)

        pool = ThreadPoolExecutor(max_workers=self.threads)
        futures = [pool.submit(task, gi, pis) for gi, pis in task_groups(pending, self.threads)]
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


def tile_work(plan: TilePlan, probe_offsets: np.ndarray, gallery_offsets: np.ndarray,
              dim: int) -> Callable[[int, int], tuple[int, float]]:
    """``work(gi, pi) -> (pairs, flops)`` of a tile of ``plan`` (``*_offsets``: the splits' ``[n+1]`` rows)."""
    def work(gi: int, pi: int) -> tuple[int, float]:
        (pa, pb), (ga, gb) = plan.probe_blocks[pi], plan.gallery_blocks[gi]
        rows_p = int(probe_offsets[pb] - probe_offsets[pa])
        rows_g = int(gallery_offsets[gb] - gallery_offsets[ga])
        return (pb - pa) * (gb - ga), 2.0 * dim * rows_g * rows_p

    return work


def run_tiles(job: TileJob, pending: Sequence[tuple[int, int]], sink: Any, runner: Any,
              progress: ProgressCounter | None = None,
              work: Callable[[int, int], tuple[int, float]] | None = None) -> None:
    """Compute the ``pending`` tiles ``(gi, pi)`` of ``job`` on ``runner``, each committed to ``sink``.

    ``progress``: counts each tile as it is done, with its pairs and flops
    from ``work(gi, pi)`` (:func:`tile_work`).
    """
    def done(gi: int, pi: int) -> None:
        if progress is not None and work is not None:
            progress.add_computed(*work(gi, pi))

    runner.run(job, list(pending), sink, done)
