"""Tile plans for matching at scale: blocks of images sized to a memory budget, and the tile task.

A *tile* is the distance block between a range of probe images and a range
of gallery images. :class:`TilePlan` cuts both splits into ranges of at most
``block_rows`` locations (:func:`reid_eval.matching.fpr.plan_blocks`), so a
tile's working memory is bounded whatever the split sizes. One *tile task*
(:func:`run_tile_task`) reads a gallery block from the HDF5 cache, prepares
its basis once, and computes the tiles of that gallery block with a list of
probe blocks, each probe block read as it is needed.

Bit-identical tiles. A tile is a deterministic function of its two blocks
and the parameters, *given one BLAS thread*: OpenBLAS's float32 GEMM rounds
differently with a different thread count (measured here: 1 vs 2 threads
differ in the last bit) and with a different tile shape. So every tile runs
its GEMM on one BLAS thread (:func:`single_blas_thread`), and parallelism
comes from running several tiles at once (threads in one process, or Dask
workers). The result then depends only on the plan's blocks (and the BLAS
library and CPU kind), not on how many threads, processes or machines ran
it. A different memory budget gives other blocks and may change a distance
in the last bit (always within the engine's ``float32_atol`` of the float64
definition); the plan is therefore recorded with the tiles, and an
interrupted run resumes with its recorded plan.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.errors import ReidEvalError
from reid_eval.features.cache import open_cache, read_spatial_block
from reid_eval.matching.backend import blas_threads, get_array_module, to_numpy
from reid_eval.matching.fpr import (
    GalleryBasis,
    RefinementStats,
    TileWorkspace,
    fpr_tile,
    plan_blocks,
    prepare_gallery,
    prepare_probes,
    shared_probe_centre,
)

__all__ = [
    "TilePlan",
    "TileSource",
    "plan_tiles",
    "tile_task_bytes",
    "run_tile_task",
    "single_blas_thread",
    "run_probe_centre",
    "MEMORY_BUDGET_ENV",
]

#: Environment variable holding the default ``--memory-budget`` (bytes).
MEMORY_BUDGET_ENV = "REID_EVAL_MEMORY_BUDGET"
# prepare_gallery works in batches of about 2048 rows per CPU thread; per row
# of a batch: float64 rows (8 d), the basis product (4 d), a gathered copy (4 d).
_PREP_BATCH_ROWS = 2048


@dataclass(frozen=True)
class TilePlan:
    """How two splits are cut into tiles.

    block_rows: at most this many locations per block (a larger single image
        gets a block of its own); probe_blocks / gallery_blocks: ``(start,
        stop)`` image ranges covering each split; precision: the GEMM operand
        type. memory_budget_bytes and concurrent_tiles (tiles in flight in one
        process, the budget is shared by them) are how block_rows was chosen:
        provenance, not part of a tile's value.
    """

    block_rows: int
    probe_blocks: tuple[tuple[int, int], ...]
    gallery_blocks: tuple[tuple[int, int], ...]
    precision: str
    memory_budget_bytes: int
    concurrent_tiles: int

    @property
    def num_tiles(self) -> int:
        return len(self.probe_blocks) * len(self.gallery_blocks)

    def tiles(self) -> list[tuple[int, int]]:
        """Every tile as ``(gallery block index, probe block index)``, gallery block by gallery block."""
        return [(gi, pi) for gi in range(len(self.gallery_blocks)) for pi in range(len(self.probe_blocks))]

    def same_tiles(self, other: TilePlan) -> bool:
        """Whether ``other`` cuts the splits into the same blocks (so gives the same bits)."""
        return (self.probe_blocks, self.gallery_blocks, self.precision) == (
            other.probe_blocks, other.gallery_blocks, other.precision
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["probe_blocks"] = [list(b) for b in self.probe_blocks]
        d["gallery_blocks"] = [list(b) for b in self.gallery_blocks]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TilePlan:
        return cls(
            block_rows=int(d["block_rows"]),
            probe_blocks=tuple((int(a), int(b)) for a, b in d["probe_blocks"]),
            gallery_blocks=tuple((int(a), int(b)) for a, b in d["gallery_blocks"]),
            precision=str(d["precision"]),
            memory_budget_bytes=int(d["memory_budget_bytes"]),
            concurrent_tiles=int(d["concurrent_tiles"]),
        )


def tile_task_bytes(block_rows: int, dim: int, max_locations: int, min_locations: int, precision: str = "float32") -> int:
    """Bytes one tile task can hold at once with blocks of ``block_rows`` locations.

    Per row of the gallery block: its float32 rows read from the cache (4 d),
    the basis operand (4 d, or 8 d in float64), its factor (8 M) and row
    scales; per row of the probe block: the rows read (4 d) and the GEMM
    operand (4 or 8 d); per entry of the ``[R, R]`` product: 4 (or 8) bytes
    plus the float64 epilogue arrays ``[g, R]`` (squared sums, e², the
    refinement threshold, e: about 33 bytes per gallery image and probe
    location, so 33 / M per entry); plus the batch temporaries of
    ``prepare_gallery`` (16 d per row of a 2048-row batch per CPU thread,
    at most the block's rows).
    """
    op = 4 if precision == "float32" else 8
    per_row = 2 * (4 + op) * dim + 8 * max_locations + 48
    per_entry = op + 33.0 / max(1, min_locations)
    prep = 16 * dim * min(block_rows, _PREP_BATCH_ROWS * (os.cpu_count() or 1))
    return int(per_row * block_rows + per_entry * block_rows * block_rows + prep)


def plan_tiles(
    probe_offsets: np.ndarray,
    gallery_offsets: np.ndarray,
    dim: int,
    *,
    memory_budget_bytes: int,
    concurrent_tiles: int,
    precision: str = "float32",
) -> TilePlan:
    """The largest square blocks such that ``concurrent_tiles`` tile tasks fit in ``memory_budget_bytes``.

    ``probe_offsets`` / ``gallery_offsets``: ``[n+1]`` row boundaries of the
    two splits (:func:`reid_eval.features.cache.read_split_offsets`).
    Raises ReidEvalError (naming --memory-budget) when not even a block of
    the largest image fits.
    """
    if not memory_budget_bytes > 0:
        raise ReidEvalError(f"--memory-budget must be positive, got {memory_budget_bytes}")
    counts = np.concatenate([np.diff(probe_offsets), np.diff(gallery_offsets)])
    m_max = int(counts.max()) if counts.size else 1
    m_min = int(counts.min()) if counts.size else 1
    per_task = memory_budget_bytes / max(1, concurrent_tiles)

    def fits(rows: int) -> bool:
        return tile_task_bytes(rows, dim, m_max, m_min, precision) <= per_task

    if not fits(m_max):
        need = concurrent_tiles * tile_task_bytes(m_max, dim, m_max, m_min, precision)
        raise ReidEvalError(
            f"--memory-budget {memory_budget_bytes} is too small for one image of {m_max} locations × {dim} "
            f"({concurrent_tiles} tile(s) at once); give at least {need}"
        )
    lo, hi = m_max, max(m_max, int(counts.sum()) if counts.size else m_max)
    while lo < hi:  # largest rows that fit (tile_task_bytes grows with rows)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return TilePlan(
        block_rows=lo,
        probe_blocks=tuple(plan_blocks(np.diff(probe_offsets), lo)),
        gallery_blocks=tuple(plan_blocks(np.diff(gallery_offsets), lo)),
        precision=precision,
        memory_budget_bytes=int(memory_budget_bytes),
        concurrent_tiles=int(concurrent_tiles),
    )


_blas_lock = threading.Lock()
_blas_users = 0
_blas_context: Any = None


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run NumPy's BLAS on one thread while any caller in this process is inside.

    Reference-counted: OpenBLAS's thread count is global to the process, so
    several tile threads entering and leaving must not restore the old count
    while another is still computing.
    """
    global _blas_users, _blas_context
    with _blas_lock:
        if _blas_users == 0:
            _blas_context = blas_threads(1)
            _blas_context.__enter__()
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_context.__exit__(None, None, None)
                _blas_context = None


_malloc_tuned = False


def return_freed_blocks_to_the_os() -> None:
    """Make glibc give every large freed buffer back to the OS at once (no-op elsewhere).

    glibc raises its mmap threshold each time a large buffer is freed (up to
    32 MB), after which block-sized arrays come from per-thread arenas that
    keep freed memory: measured, peak RSS then grew by about 110 MB from 2,000
    to 8,000 gallery images. A fixed 4 MiB threshold keeps every tile buffer
    in its own mapping, so peak memory stays flat whatever the tile count.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class TileSource:
    """Everything a tile task needs besides its block indices (small, picklable: sent to Dask workers).

    cache_file: absolute path of the HDF5 cache, reachable by whoever runs
    the task; probe_split / gallery_split: split names; the FPR parameters of
    :func:`reid_eval.matching.fpr_distances`; backend: ``"numpy"`` or
    ``"cupy"`` (already resolved, so every worker computes the same way);
    probe_center: host float64 ``[d]``, the centre every probe block is
    split along (:func:`run_probe_centre`), or None (each block its own).
    """

    cache_file: str
    probe_split: str
    gallery_split: str
    beta: float
    weighted: bool
    normalize: bool
    precision: str
    float32_atol: float
    backend: str
    probe_center: np.ndarray | None = field(default=None, compare=False)


def run_probe_centre(f: Any, src: TileSource, plan: TilePlan) -> np.ndarray | None:
    """:func:`~reid_eval.matching.fpr.shared_probe_centre` of ``plan``'s probe blocks in the open cache ``f`` (host float64).

    Sharing it lets each gallery block compute its centre terms once for all
    its tiles (:meth:`~reid_eval.matching.fpr.GalleryBasis.centre_terms`) and
    gives the tiles the bits of :func:`~reid_eval.matching.fpr.fpr_distances`.
    """
    a, b = plan.probe_blocks[0]
    try:
        center = shared_probe_centre(lambda: read_spatial_block(f, src.probe_split, a, b), len(plan.probe_blocks),
                                     src.precision, normalize=src.normalize, backend=get_array_module(src.backend))
    except ValueError as exc:
        raise ReidEvalError(f"cache {Path(src.cache_file)}: {exc}") from None
    return None if center is None else np.asarray(to_numpy(center), dtype=np.float64)


def _gallery_basis(src: TileSource, f: Any, block: tuple[int, int], xp: Any) -> GalleryBasis:
    a, b = block
    return prepare_gallery(
        read_spatial_block(f, src.gallery_split, a, b), beta=src.beta, normalize=src.normalize,
        precision=src.precision, backend=xp, index_base=a,
    )


def _tile(src: TileSource, f: Any, basis: GalleryBasis, block: tuple[int, int], xp: Any,
          workspace: TileWorkspace) -> tuple[np.ndarray, RefinementStats]:
    """The ``[p, g]`` host tile of probe images ``block`` against ``basis``, and its own refinement counts."""
    a, b = block
    probes = prepare_probes(
        read_spatial_block(f, src.probe_split, a, b), weighted=src.weighted, normalize=src.normalize,
        precision=src.precision, backend=xp, index_base=a, center=src.probe_center, workspace=workspace,
    )
    # counts per tile, not per task: they are committed with the tile, so a
    # resumed run sums the counts of tiles an earlier run computed too
    stats = RefinementStats()
    tile = np.asarray(to_numpy(fpr_tile(probes, basis, float32_atol=src.float32_atol, stats=stats, workspace=workspace)))
    return tile, stats


def run_tile_task(
    src: TileSource,
    plan: TilePlan,
    gallery_index: int,
    probe_indices: Sequence[int],
    commit: Callable[[int, int, np.ndarray, RefinementStats], None],
    stop: threading.Event | None = None,
) -> int:
    """Compute tiles ``(gallery_index, pi)`` for ``pi`` in ``probe_indices`` and ``commit`` each as it is done.

    Reads the gallery block once and each probe block when its tile comes
    (host → device as read on CuPy). ``commit(gi, pi, tile, counts)``
    receives the ``[p, g]`` host array and the tile's own
    :class:`~reid_eval.matching.fpr.RefinementStats` (entries: ``g`` × the
    probe block's locations; refined: of them recomputed in float64). Returns the number of tiles committed; stops early
    (between tiles) when ``stop`` is set. A FPR input error (e.g. a probe
    whose foreground sums to 0) becomes ReidEvalError naming the cache.
    """
    xp = get_array_module(src.backend)
    return_freed_blocks_to_the_os()
    done = 0
    with single_blas_thread(), open_cache(src.cache_file) as f:
        try:
            basis = _gallery_basis(src, f, plan.gallery_blocks[gallery_index], xp)
            workspace = TileWorkspace()  # this task's tiles reuse one product buffer
            for pi in probe_indices:
                if stop is not None and stop.is_set():
                    break
                tile, counts = _tile(src, f, basis, plan.probe_blocks[pi], xp, workspace)
                commit(gallery_index, int(pi), tile, counts)
                done += 1
        except ValueError as exc:
            raise ReidEvalError(f"cache {Path(src.cache_file)}: {exc}") from None
    return done
