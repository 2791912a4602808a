"""All-pairs FPR / DSR distances: one matrix product per tile (NumPy or CuPy).

The engine uses the basis form of :mod:`reid_eval.matching.definition`: for a
gallery image with rows Y ``[M, d]`` and G = Y Yᵀ (float64, M×M), the factor
Fᵀ of :func:`~reid_eval.matching.definition.basis_factor` and
``Bt = Fᵀ Y`` ``[M, d]`` give, for every probe location x,
``e² = ‖x‖² − ‖Bt x‖²`` (this holds for M > d too, where G is singular). The Bt of the images of a
gallery block are stacked ``[ΣM, d]``, the probe locations of a probe block
``[ΣN, d]``; a tile is then

1. one GEMM  ``C = Bt_stack @ X_stackᵀ``  ``[ΣM, ΣN]``,
2. ``C *= C`` and a sum over each gallery image's M rows ``-> S [g, ΣN]``,
3. ``e² = ‖x‖² − S``, refinement (below), clamp at 0, square root,
4. a sum over each probe's N columns weighted by h̃ ``-> [p, g]``.

On a CPU, steps 2-4 and the error bounds run a few gallery images at a
time on the threads that make their sums, while those rows are in cache
(:func:`_tile_distances`); the product is read from memory once.

Float32 accuracy. ‖x‖² − S cancels when the residual is small, and the square
root amplifies the error, so the float32 path is built to keep the error of S
small and to know a bound on it for every entry:

* Centring. CNN features (non-negative, post-ReLU) share a dominant
  direction: the locations of random-init ResNets lie within ~15° of their
  mean. The probe blocks are split along μ, the direction of the sum of the
  normalised rows of a run's first probe block (:func:`probe_centre`;
  every block of a run shares it, so each gallery block forms its centre
  terms once): x = a·μ + x' (a = x·μ in float64). The GEMM runs on x'
  (float32), and S = ‖Bt x'‖² + 2a·(w·x') + a²‖β‖² with β = Bt μ and
  w = Btᵀ β formed per gallery image in float64 from the factor (one extra
  float32 GEMM row per gallery image for w·x'). Every float32 rounding then
  multiplies ‖x'‖ instead of ‖x‖: on ResNet features the error of S drops
  5-20 fold. Bt itself is formed in float64 and rounded once.
* Error bound of S. ``δs = κ·u·(0.7·√d + √M + 7)·‖x‖·‖x'‖`` (u = 2⁻²⁴;
  GEMM accumulation, rounding of the operands, the float32 cross term,
  squares and their pairwise float32 sums (at most 3u, see
  :data:`_SUM_LEVELS`); ‖x'‖ floored at 1e-4·‖x‖ for the float64 rounding that remains).
  With κ = :data:`ERROR_KAPPA` = 1.5 the bound is at least 1.7 times the
  worst error measured over d = 1..2048, M = 1..110 on Gaussian, ReLU and
  strongly coherent non-negative features, self matches, exact and
  near-duplicate locations and non-negative mixtures in the gallery's span
  (``python benchmarks/bench_matching.py --calibrate`` reruns that sweep).
* Error of a distance. From |ê² − e²| ≤ δs, the error of an entry's e is at
  most δe = δs / (ê + √(ê² − δs)) (no bound when ê² ≤ δs), and a pair's
  distance Σ h̃ e errs by at most Σ h̃ δe. A pair whose sum is within
  ``float32_atol`` (default 9e-6, so every distance is within 1e-5 of the
  float64 definition after its own float32 rounding) keeps its float32
  entries; in the other pairs the entries with the largest h̃ δe are
  recomputed in float64, as few as bring the sum of the rest within
  ``float32_atol``: one float64 product per gallery image over its refined
  locations, spread over threads. When more than
  :data:`TILE_FLOAT64_SHARE` (0.5) of a tile's entries need it, the whole
  tile is recomputed by one float64 GEMM instead. Which entries are refined,
  and whether a tile goes float64, depends only on the tile's data, never on
  timing: the same blocks give the same bits.
  :class:`RefinementStats` counts them (the refined share).

Memory. Tiles are sized so that operands, the tile product and the epilogue
stay within ``memory_budget_bytes`` (default 1.5 GB, whatever P and G are;
the [P, G] result is extra). A tile is a pure function
:func:`fpr_tile` of a prepared probe block (:func:`prepare_probes`) and a
prepared gallery block (:func:`prepare_gallery`), so tiles can be scheduled
anywhere.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from reid_eval.features.spatial import SpatialFeatures
from reid_eval.matching.backend import blas_threads, get_array_module, large_empty, segment_sum, to_numpy
from reid_eval.matching.definition import DEFAULT_BETA, basis_factor
from reid_eval.matching.global_distance import global_distances

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "ERROR_KAPPA",
    "TILE_FLOAT64_SHARE",
    "AUTO_FLOAT64_RATIO",
    "float64_slowdown",
    "resolve_precision",
    "precision_for_slowdown",
    "ProbeBlock",
    "GalleryBasis",
    "RefinementStats",
    "TileWorkspace",
    "prepare_probes",
    "probe_centre",
    "shared_probe_centre",
    "prepare_gallery",
    "fpr_tile",
    "fpr_pairs",
    "fpr_shortlist_pass",
    "shortlist_units",
    "fpr_distances",
    "dsr_distances",
    "plan_blocks",
]

#: Default bound on the working memory of the engine, in bytes.
DEFAULT_MEMORY_BUDGET = 1_500_000_000
#: Constant of the float32 error model of S (see module docstring).
ERROR_KAPPA = 1.5
#: Share of a float32 tile's entries to refine above which the whole tile is
#: recomputed by one float64 GEMM instead (after its float32 GEMM, so the
#: choice depends only on the tile's data). Per-entry refinement costs about a
#: float64 GEMM row per entry plus each image's basis rebuild; 0.5 keeps a
#: tile within ~1.5× the float64 path at worst on a CPU, where a float32 GEMM
#: costs half a float64 one.
TILE_FLOAT64_SHARE = 0.5
#: Default absolute accuracy of each e (and so of each distance) in float32.
DEFAULT_FLOAT32_ATOL = 9e-6
_U32 = 2.0**-24
_ACROSS_FLOOR = 1e-4
_PRECISIONS = ("float32", "float64")
# Guards GalleryBasis centre-term caches: the threads of a shortlist pass share one basis.
_centre_lock = threading.Lock()


@dataclass(frozen=True)
class ProbeBlock:
    """Prepared probe images (arrays on the backend's module).

    x: ``[R, d]`` GEMM operand. float64: the normalised rows. float32:
        r = y − α·μ for the input rows y, the part of each row across the
        block's ``center`` μ (module docstring, "Centring").
    local: ``[R, d]`` float32 input rows (float64 rows are rebuilt from them
        for refinement).
    inv_norm: ``[R]`` float64 scale of each row (1/‖row‖, or 1).
    sqnorm: ``[R]`` float64 ‖x‖² of the exact (float64) normalised rows.
    weights: ``[R]`` float64 h̃, summing to 1 over each image.
    offsets: host int64 ``[p+1]`` image boundaries in the rows.
    center: ``[d]`` float64 unit vector μ (zeros if the rows sum to 0), or
        None (float64 operands).
    along: ``[R]`` float64 α ≈ y·μ (float32 operands; else None).
    across: ``[R]`` float64 ‖x − ι·α·μ‖ = ι·‖r‖, ι = ``inv_norm`` (float32
        operands; else None).
    row_map: None, or host int64 ``[R]`` for a selection of another block's
        images (:meth:`take_images`): row i of this block is row
        ``row_map[i]`` of ``x`` and ``local``, which stay the other block's
        (no copy); the per-row arrays and ``offsets`` are this block's own.
    """

    x: Any
    local: Any
    inv_norm: Any
    sqnorm: Any
    weights: Any
    offsets: np.ndarray
    center: Any = None
    along: Any = None
    across: Any = None
    row_map: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def num_rows(self) -> int:
        """R, the number of probe locations of this block."""
        return int(self.offsets[-1])

    def rows64(self, rows: Any) -> Any:
        """``[k, d]`` float64 normalised rows ``rows`` (for refinement)."""
        source = rows
        if self.row_map is not None:
            xp = _module_of(self.inv_norm)
            source = xp.asarray(self.row_map)[rows]
        return self.local[source].astype(self.inv_norm.dtype) * self.inv_norm[rows][:, None]

    def take_images(self, images: np.ndarray) -> ProbeBlock:
        """Probe images ``images`` (host int array, in that order) as a block that shares ``x`` and ``local``.

        Only the per-row arrays ``[R']`` are gathered; the GEMM operand and
        the input rows are reached through ``row_map`` (see the class
        docstring), so selecting the same probes for many gallery images
        copies no feature rows. Consumed by :func:`fpr_pairs`.
        """
        if self.row_map is not None:
            raise ValueError("take_images of a selection: select from the original block")
        xp = _module_of(self.inv_norm)
        rows, offsets = _gather_segments(self.offsets, np.asarray(images, dtype=np.int64))
        rows_x = xp.asarray(rows)

        def pick(a: Any) -> Any:
            return None if a is None else a[rows_x]

        return ProbeBlock(
            x=self.x, local=self.local, inv_norm=pick(self.inv_norm), sqnorm=pick(self.sqnorm),
            weights=pick(self.weights), offsets=offsets, center=self.center, along=pick(self.along),
            across=pick(self.across), row_map=rows,
        )


@dataclass(frozen=True)
class GalleryBasis:
    """Prepared gallery images: the stacked basis rows Bt of every image.

    bt: ``[R, d]`` GEMM operand (float32 or float64).
    local: ``[R, d]`` float32 input rows; inv_norm: ``[R]`` float64 row scales.
    factor: ``[Σ M², ]`` float64 Fᵀ of each image (Bt = Fᵀ Y of the
        normalised rows), flattened image by image (``factor_offsets``
        ``[g+1]`` host); the float64 Bt rebuilt from it refines small residuals.
    offsets: host int64 ``[g+1]`` image boundaries in the rows.
    """

    bt: Any
    local: Any
    inv_norm: Any
    factor: Any
    factor_offsets: np.ndarray
    offsets: np.ndarray
    _centre_cache: dict[bytes, tuple[Any, Any]] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def centre_terms(self, center: Any) -> tuple[Any, Any]:
        """``(w [g, d] float32, ‖β‖² [g] float64)`` of every image for the probe centre ``center`` ``[d]``.

        β = Bt μ and w = Btᵀ β (module docstring, "Centring"), from the
        float64 factor and rows. Kept for the last centre asked for: the
        probe blocks of one run share their centre (:func:`prepare_probes`),
        so a gallery block computes them once for all its tiles.
        """
        key = to_numpy(center).tobytes()
        with _centre_lock:
            terms = self._centre_cache.get(key)
            if terms is None:
                terms = _centre_terms(_module_of(self.bt), self, center)
                self._centre_cache.clear()
                self._centre_cache[key] = terms
        return terms

    def image(self, g: int) -> GalleryBasis:
        """The basis of image ``g`` alone, as views of this one's arrays (no copy)."""
        a, b = int(self.offsets[g]), int(self.offsets[g + 1])
        fa, fb = int(self.factor_offsets[g]), int(self.factor_offsets[g + 1])
        return GalleryBasis(
            bt=self.bt[a:b], local=self.local[a:b], inv_norm=self.inv_norm[a:b], factor=self.factor[fa:fb],
            factor_offsets=np.array([0, fb - fa], dtype=np.int64), offsets=np.array([0, b - a], dtype=np.int64),
        )

    def basis64(self, g: int) -> Any:
        """``[M, d]`` float64 rows of Bt of image ``g`` (for refinement)."""
        a, b = int(self.offsets[g]), int(self.offsets[g + 1])
        m = b - a
        y = self.local[a:b].astype(self.inv_norm.dtype) * self.inv_norm[a:b][:, None]
        factor = self.factor[int(self.factor_offsets[g]) : int(self.factor_offsets[g + 1])].reshape(m, m)
        return factor @ y


@dataclass
class RefinementStats:
    """How many float32 entries the engine recomputed in float64 (mutable counters).

    An entry is one (probe location, gallery image) residual e; a tile of p
    probe images with ΣN locations and g gallery images has g·ΣN entries.
    Pass an instance as ``stats=`` to :func:`fpr_distances` or :func:`fpr_tile`
    and read it afterwards; instances from separate tiles or workers add up
    with :meth:`merge`.

    entries: entries computed; refined: of them recomputed in float64;
    tiles: tiles computed.
    """

    entries: int = 0
    refined: int = 0
    tiles: int = 0

    @property
    def refined_share(self) -> float:
        """refined / entries (0.0 before any entry)."""
        return self.refined / self.entries if self.entries else 0.0

    def record(self, entries: int, refined: int) -> None:
        """Count one tile of ``entries`` entries, ``refined`` of them refined."""
        self.entries += int(entries)
        self.refined += int(refined)
        self.tiles += 1

    def merge(self, other: RefinementStats) -> None:
        """Add the counts of ``other`` (another tile or worker) to this one."""
        self.entries += other.entries
        self.refined += other.refined
        self.tiles += other.tiles

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts: ``{"entries", "refined", "tiles", "refined_share"}``."""
        return {"entries": self.entries, "refined": self.refined, "tiles": self.tiles, "refined_share": self.refined_share}


class TileWorkspace:
    """Reusable buffers for the tiles computed one after another by one thread.

    Slots: ``"product"``, the ``[ΣM + g, ΣN]`` tile product;
    ``"operand"``, the gallery rows with the centre rows w stacked below;
    ``"probes"``, the probe operand of :func:`prepare_probes`; ``"e2"``, the
    tile's float64 residuals ``[g, ΣN]``. A tile's
    product and operands are hundreds of MB; allocated afresh for every
    tile, their pages are faulted in and zeroed by the kernel each time
    (glibc maps every large block anew): measured, 25 ms to fault in 194 MB
    against a 290 ms GEMM of that output at d = 512, about 8%, and on a
    virtual machine that hands freed memory back to its host, several times
    that. Pass one workspace to consecutive :func:`prepare_probes` and
    :func:`fpr_tile` calls of one thread (never share it between threads);
    each slot grows to the largest tile and is freed with the workspace.
    Buffers come from :func:`~reid_eval.matching.backend.large_empty`
    (huge pages advised on Linux).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}

    def array(self, xp: ModuleType, shape: tuple[int, int], dtype: Any, slot: str = "product") -> Any:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` on ``xp``, in the reused buffer ``slot``."""
        nbytes = int(shape[0]) * int(shape[1]) * np.dtype(dtype).itemsize
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.nbytes < nbytes or _module_of(buffer) is not xp:
            self._buffers.pop(slot, None)  # free the old one first: never two at once
            buffer = self._buffers[slot] = large_empty(xp, (max(nbytes, 1),), xp.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)


def _gather_segments(offsets: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of segments ``indices`` of ``offsets``, and the new offsets."""
    counts = np.diff(offsets)[indices]
    new = np.zeros(indices.size + 1, dtype=np.int64)
    np.cumsum(counts, out=new[1:])
    rows = np.repeat(offsets[indices] - new[:-1], counts) + np.arange(int(new[-1]))
    return rows, new


def _module_of(a: Any) -> ModuleType:
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy


def _image_of_row(offsets: np.ndarray, row: int) -> int:
    return int(np.searchsorted(offsets, row, side="right") - 1)


_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _cpu_pool() -> ThreadPoolExecutor:
    """The engine's CPU threads, one per core, started once per process (again after a fork).

    Starting threads for every pass cost ~1.5% of a tile. The tasks run on
    them never wait for other tasks of this pool, so callers from several
    threads can share it without deadlock.
    """
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="reid-eval-fpr")
            _pool_pid = os.getpid()
        return _pool


def _parallel(fn: Any, calls: Sequence[tuple[Any, ...]]) -> None:
    """``fn(*args)`` for every ``args`` of ``calls`` on :func:`_cpu_pool` (inline for one call).

    Waits for all of them before re-raising the first error, so that no
    task still writes into the caller's arrays afterwards.
    """
    if len(calls) <= 1:
        for args in calls:
            fn(*args)
        return
    futures = [_cpu_pool().submit(fn, *args) for args in calls]
    wait(futures)
    for future in futures:
        future.result()


def _over_row_ranges(n_rows: int, fn: Any) -> None:
    """Call ``fn(a, b)`` on consecutive row ranges covering ``n_rows``, one per CPU thread.

    For NumPy passes over large operands: NumPy releases the GIL in ufunc and
    einsum loops, so a pass over probe rows uses every core. The boundaries
    fall on multiples of :data:`_CHUNK_ROWS`, so a pass that keeps one
    partial result per chunk gets the same chunks whatever the thread count.
    """
    n_chunks = -(-n_rows // _CHUNK_ROWS)
    workers = max(1, min(os.cpu_count() or 1, n_rows // 1024, n_chunks))
    cuts = (np.linspace(0, n_chunks, workers + 1).round().astype(int) * _CHUNK_ROWS).clip(max=n_rows)
    _parallel(fn, [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a])


def _row_sqnorms(xp: ModuleType, rows: Any) -> Any:
    """``[L]`` float64 squared norms of float32 rows ``[L, d]`` (float64 accumulation)."""
    if xp is np:
        out = np.empty(rows.shape[0], dtype=np.float64)

        def run(a: int, b: int) -> None:
            # einsum casts in cache-sized chunks: no [L, d] float64 temporary.
            np.einsum("ij,ij->i", rows[a:b], rows[a:b], dtype=np.float64, out=out[a:b])

        _over_row_ranges(rows.shape[0], run)
        return out
    rows64 = rows.astype(xp.float64)
    return (rows64 * rows64).sum(axis=1)


def _check_rows(
    xp: ModuleType, sq: Any, row0: int, features: SpatialFeatures, role: str, index_base: int, normalize: bool
) -> None:
    """Raise ValueError for a non-finite (or, when normalising, zero) squared norm.

    ``sq`` holds the squared norms of rows ``row0 ...`` of ``features``; the
    message names ``role``, the image (``index_base`` + local index) and the
    location.
    """
    bad = ~xp.isfinite(sq)
    if normalize:
        bad |= sq == 0
    if bool(bad.any()):
        k = int(xp.flatnonzero(bad)[0])
        row = row0 + k
        i = _image_of_row(features.offsets, row)
        loc = row - int(features.offsets[i])
        what = "contains NaN or infinity" if not math.isfinite(float(sq[k])) else "is all zero and cannot be L2-normalised"
        raise ValueError(f"{role} image {index_base + i}, location {loc} {what}")


def _check_gathered(
    xp: ModuleType, sq: Any, batch: np.ndarray, m: int, features: SpatialFeatures, index_base: int, normalize: bool
) -> None:
    """:func:`_check_rows` for the rows of the images ``batch`` (``m`` each)."""
    for j, i in enumerate(batch.tolist()):
        _check_rows(xp, sq[j * m : (j + 1) * m], int(features.offsets[i]), features, "gallery", index_base, normalize)


def _check_counts(features: SpatialFeatures, role: str, index_base: int) -> None:
    counts = features.counts
    if np.any(counts == 0):
        i = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"{role} image {index_base + i} has no locations")


def prepare_probes(
    features: SpatialFeatures,
    *,
    weighted: bool = True,
    normalize: bool = True,
    precision: str = "float32",
    backend: str | ModuleType = "auto",
    index_base: int = 0,
    center: Any = None,
    workspace: TileWorkspace | None = None,
) -> ProbeBlock:
    """Normalise and weight probe images for :func:`fpr_tile`.

    ``weighted=True`` uses the foreground probabilities (FPR, Eq. 5; they must
    be present, non-negative, with a positive sum per image); ``False`` gives
    every location of an image the same weight (DSR, Eq. 4). ``index_base``
    only shifts the image indices quoted in error messages.

    ``center`` (float32 operands only): the ``[d]`` direction μ to split the
    rows along (module docstring, "Centring"), e.g. the first block's
    ``center`` or :func:`probe_centre`. Blocks that share it share their
    gallery blocks' centre terms (:meth:`GalleryBasis.centre_terms`, then
    computed once per gallery block instead of once per tile), and take one
    pass over their rows instead of two. None: the block's own. Accuracy does
    not depend on it (the error bound uses each row's own ‖x − a·μ‖), only
    how many entries need float64 refinement.

    ``workspace``: the GEMM operand ``x`` is written into its ``"probes"``
    slot (:class:`TileWorkspace`) instead of fresh memory, so the block is
    valid only until the next call with the same workspace: for blocks
    prepared, used and dropped one after another. A fresh operand of
    hundreds of MB is faulted in page by page: measured at d = 2048, that
    made the preparation 2-3 times slower than the arithmetic.
    """
    xp = backend if isinstance(backend, ModuleType) else get_array_module(backend)
    _check_precision(precision)
    _check_counts(features, "probe", index_base)
    local = xp.asarray(features.local)
    along = across = None
    if precision == "float32":
        out = None if workspace is None else workspace.array(xp, local.shape, xp.float32, slot="probes")
        sq, inv_norm, x, center, along, across = _centred_rows(xp, local, normalize, features, index_base, center, out)
    else:
        center = None
        sq, inv_norm = _row_scales(xp, local, normalize, features, index_base)
        x = large_empty(xp, local.shape, xp.float64) if workspace is None else workspace.array(
            xp, local.shape, xp.float64, slot="probes")
        xp.multiply(local, inv_norm[:, None], out=x)
    sqnorm = sq * inv_norm * inv_norm  # ‖x‖² of the exact normalised rows
    counts = features.counts
    if weighted:
        if features.foreground is None:
            raise ValueError("weighted=True (FPR) needs the probe foreground probabilities; use weighted=False for DSR")
        h = features.foreground.astype(np.float64)
        if np.any(h < 0):
            row = int(np.flatnonzero(h < 0)[0])
            raise ValueError(f"probe image {index_base + _image_of_row(features.offsets, row)} has a negative foreground probability")
        totals = np.add.reduceat(h, features.offsets[:-1])
        if np.any(~(totals > 0)):
            i = int(np.flatnonzero(~(totals > 0))[0])
            raise ValueError(f"probe image {index_base + i} has foreground probabilities summing to 0")
        w = h / np.repeat(totals, counts)
    else:
        w = np.repeat(1.0 / counts, counts)
    return ProbeBlock(
        x=x, local=local, inv_norm=inv_norm, sqnorm=sqnorm, weights=xp.asarray(w), offsets=features.offsets.copy(),
        center=center, along=along, across=across,
    )


_CHUNK_ROWS = 256


def _round_to_bits(xp: ModuleType, v: Any, bits: int) -> Any:
    """``v`` (float32) rounded to ``bits`` significant bits, as float32."""
    mantissa, exponent = xp.frexp(v.astype(xp.float64))
    return xp.ldexp(xp.rint(mantissa * 2.0**bits) / 2.0**bits, exponent).astype(xp.float32)


def _centred_rows(
    xp: ModuleType, local: Any, normalize: bool, features: SpatialFeatures, index_base: int, center: Any = None,
    out: Any = None,
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """The float32 probe operand from the input rows y ``[R, d]`` (into ``out`` when given).

    Returns ‖y‖² ``[R]`` (float64 accumulation), the row scales ι ``[R]``
    (1/‖y‖, or 1 without ``normalize``), r = y − α·μ (float32 ``[R, d]``),
    the centre μ ``[d]``, α ``[R]`` and ‖x − a·μ‖ = ι‖r‖ ``[R]`` (float64)
    for the normalised rows x = ι·y, a = ι·α. Raises ValueError (naming the
    image and location) for a NaN, infinite or, with ``normalize``, zero row.

    μ: ``center`` rounded to 12 significant bits, or when None the direction
    of the sum of the normalised rows (:func:`_row_scales_and_centre`, one
    more pass). μ and α ≈ y·μ are rounded to 12 significant bits, so every
    product α·μ is exact in float32 and r is rounded once, by at most u·|r|:
    the split y = α·μ + r is exact up to a rounding proportional to |r|,
    whatever μ is. ι is applied to the tile's sums, not to r.

    On a CPU the pass runs over fixed chunks of :data:`_CHUNK_ROWS` rows
    spread over threads, so each chunk is read from memory once and worked
    on in cache.
    """
    n_rows, d = local.shape
    if center is None:
        sq, inv_norm, center32 = _row_scales_and_centre(xp, local, normalize, features, index_base)
    else:
        center = xp.asarray(center)
        if center.shape != (d,):
            raise ValueError(f"probe centre has shape {tuple(center.shape)}, expected ({d},)")
        if not bool(xp.isfinite(center).all()):
            raise ValueError("probe centre contains NaN or infinity")
        center32 = _round_to_bits(xp, center.astype(xp.float32), 12)
        sq = inv_norm = None  # in the same pass as the centring
    if xp is not np:
        if sq is None:
            sq, inv_norm = _row_scales(xp, local, normalize, features, index_base)
        alpha32 = _round_to_bits(xp, local @ center32, 12)
        r = large_empty(xp, local.shape, local.dtype) if out is None else out
        xp.multiply(alpha32[:, None], center32[None, :], out=r)
        xp.subtract(local, r, out=r)
        across = xp.sqrt((r.astype(xp.float64) ** 2).sum(axis=1))
    else:
        fused = sq is None
        if fused:
            sq = np.empty(n_rows, dtype=np.float64)
            inv_norm = np.ones(n_rows, dtype=np.float64)
        r = large_empty(np, local.shape, local.dtype) if out is None else out
        alpha32 = np.empty(n_rows, dtype=np.float32)
        across = np.empty(n_rows, dtype=np.float32)

        def centre(start: int, stop: int) -> None:
            for a in range(start, stop, _CHUNK_ROWS):
                b = min(stop, a + _CHUNK_ROWS)
                if fused:
                    _chunk_scales(local[a:b], normalize, sq[a:b], inv_norm[a:b])
                rows = r[a:b]
                alpha32[a:b] = _round_to_bits(np, local[a:b] @ center32, 12)
                np.multiply.outer(alpha32[a:b], center32, out=rows)  # exact products
                np.subtract(local[a:b], rows, out=rows)
                np.einsum("ij,ij->i", rows, rows, out=across[a:b])

        # A zero or non-finite row only makes NaNs here; it is reported below.
        with np.errstate(invalid="ignore", over="ignore"):
            _over_row_ranges(n_rows, centre)
        if fused:
            _check_rows(np, sq, 0, features, "probe", index_base, normalize)
        across = np.sqrt(across.astype(np.float64))
    return sq, inv_norm, r, center32.astype(xp.float64), alpha32.astype(xp.float64), across * inv_norm


def _chunk_scales(rows: np.ndarray, normalize: bool, sq: np.ndarray, inv_norm: np.ndarray) -> None:
    """‖y‖² (float64 accumulation) and ι of a chunk of float32 rows, into ``sq`` and ``inv_norm``."""
    # einsum casts in cache-sized pieces: no float64 copy of the rows.
    np.einsum("ij,ij->i", rows, rows, dtype=np.float64, out=sq)
    if normalize:
        # A zero or non-finite row is reported by the caller.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            np.divide(1.0, np.sqrt(sq), out=inv_norm)


def _row_scales(xp: ModuleType, local: Any, normalize: bool, features: SpatialFeatures, index_base: int) -> tuple[Any, Any]:
    """(‖y‖² ``[R]``, ι ``[R]``) of float32 rows ``[R, d]``, checked (see :func:`_centred_rows`)."""
    sq = _row_sqnorms(xp, local)
    _check_rows(xp, sq, 0, features, "probe", index_base, normalize)
    return sq, (1.0 / xp.sqrt(sq) if normalize else xp.ones_like(sq))


def _row_scales_and_centre(
    xp: ModuleType, local: Any, normalize: bool, features: SpatialFeatures, index_base: int
) -> tuple[Any, Any, Any]:
    """(‖y‖² ``[R]``, ι ``[R]``, μ ``[d]`` float32): a block's own centre, in one pass over its rows.

    μ is the direction of the sum of the normalised rows, rounded to 12
    significant bits (zeros if they sum to 0). On a CPU the partial sums are
    kept per chunk of :data:`_CHUNK_ROWS` rows and added in chunk order, so
    μ's bits do not depend on the thread count.
    """
    n_rows, d = local.shape
    if xp is not np:
        sq, inv_norm = _row_scales(xp, local, normalize, features, index_base)
        total = (inv_norm.astype(xp.float32) @ local).astype(xp.float64)
    else:
        sq = np.empty(n_rows, dtype=np.float64)
        inv_norm = np.ones(n_rows, dtype=np.float64)
        starts = list(range(0, n_rows, _CHUNK_ROWS))
        partial = np.empty((len(starts), d), dtype=np.float32)

        def norms(start: int, stop: int) -> None:
            for a in range(start, stop, _CHUNK_ROWS):
                b = min(stop, a + _CHUNK_ROWS)
                _chunk_scales(local[a:b], normalize, sq[a:b], inv_norm[a:b])
                with np.errstate(invalid="ignore", over="ignore"):
                    np.matmul(inv_norm[a:b].astype(np.float32), local[a:b], out=partial[a // _CHUNK_ROWS])

        _over_row_ranges(n_rows, norms)
        _check_rows(np, sq, 0, features, "probe", index_base, normalize)
        total = partial.sum(axis=0, dtype=np.float64)
    norm = float(xp.sqrt((total * total).sum()))
    center32 = _round_to_bits(xp, (total / norm).astype(xp.float32), 12) if norm > 0 else xp.zeros(d, dtype=xp.float32)
    return sq, inv_norm, center32


def probe_centre(
    features: SpatialFeatures, *, normalize: bool = True, backend: str | ModuleType = "auto", index_base: int = 0
) -> Any:
    """``[d]`` float64 centre μ that :func:`prepare_probes` would choose for ``features`` on its own.

    Pass it as ``center`` to the other probe blocks of a run (from its first
    block, so that every way of running the tiles gets the same bits); one
    pass over the rows.
    """
    xp = backend if isinstance(backend, ModuleType) else get_array_module(backend)
    _check_counts(features, "probe", index_base)
    return _row_scales_and_centre(xp, xp.asarray(features.local), normalize, features, index_base)[2].astype(xp.float64)


def shared_probe_centre(
    first_block: Callable[[], SpatialFeatures], num_blocks: int, precision: str, *, normalize: bool = True,
    backend: str | ModuleType = "auto",
) -> Any:
    """The centre every probe block of a run is split along: the first block's own, or None.

    ``first_block()`` returns the features of the run's first probe block;
    it is called only when the centre is shared: float32 operands and
    several blocks (a single block takes its own, the same one). Every way of
    running the tiles (in memory, streamed, on Dask) takes it from here, so
    they get the same bits.
    """
    if precision != "float32" or num_blocks < 2:
        return None
    return probe_centre(first_block(), normalize=normalize, backend=backend)


def _over_chunks(n: int, fn: Any) -> None:
    """``fn(i)`` for i < n, spread over the CPU threads (each call one BLAS thread)."""
    workers = min(n, os.cpu_count() or 1)
    with blas_threads(1):
        if workers <= 1:
            for i in range(n):
                fn(i)
            return
        _parallel(fn, [(i,) for i in range(n)])


def prepare_gallery(
    features: SpatialFeatures,
    *,
    beta: float = DEFAULT_BETA,
    normalize: bool = True,
    precision: str = "float32",
    backend: str | ModuleType = "auto",
    index_base: int = 0,
) -> GalleryBasis:
    """Compute the stacked basis rows Bt of every gallery image (float64 factor).

    Images with the same number of locations M are processed in batches:
    Gram ``Y Yᵀ`` ``[k, M, M]``, its factor Fᵀ (:func:`basis_factor`),
    ``Bt = Fᵀ Y``, all in float64 but the last product, done in the operand
    precision.
    """
    xp = backend if isinstance(backend, ModuleType) else get_array_module(backend)
    _check_precision(precision)
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    _check_counts(features, "gallery", index_base)
    local = xp.asarray(features.local)
    n_rows, d = local.shape
    dtype = xp.float32 if precision == "float32" else xp.float64
    bt = large_empty(xp, (n_rows, d), dtype)
    inv_norm = xp.empty(n_rows, dtype=xp.float64)
    counts = features.counts
    factor_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts * counts, out=factor_offsets[1:])
    factor = xp.empty(int(factor_offsets[-1]), dtype=xp.float64)
    starts = features.offsets[:-1]
    workers = min(len(counts), os.cpu_count() or 1) if xp is np else 1
    jobs: list[tuple[int, np.ndarray]] = []
    for m in np.unique(counts):
        members = np.flatnonzero(counts == m)
        # Equal batches of at most ~2048 rows, their number a multiple of the
        # workers, so that no thread is left with a short last batch.
        n_batches = workers * math.ceil(members.size * int(m) / (2048 * workers))
        per_batch = max(1, math.ceil(members.size / n_batches))
        jobs += [(int(m), members[b0 : b0 + per_batch]) for b0 in range(0, members.size, per_batch)]

    def run(job: tuple[int, np.ndarray]) -> None:
        m, batch = job
        k = batch.size
        if batch[-1] - batch[0] == k - 1:  # consecutive images: a slice, no gather
            rows = slice(int(starts[batch[0]]), int(starts[batch[0]]) + k * m)
        else:
            rows = xp.asarray((starts[batch][:, None] + np.arange(m)[None, :]).reshape(-1))
        y_in = local[rows].reshape(k, m, d)
        y64 = y_in.astype(xp.float64)
        raw = y64 @ y64.transpose(0, 2, 1)  # Gram of the raw rows, float64
        sq = xp.diagonal(raw, axis1=1, axis2=2).reshape(-1)
        if isinstance(rows, slice):
            _check_rows(xp, sq, rows.start, features, "gallery", index_base, normalize)
        else:
            _check_gathered(xp, sq, batch, m, features, index_base, normalize)
        inv = (1.0 / xp.sqrt(sq) if normalize else xp.ones_like(sq)).reshape(k, m)
        # Gram of the normalised rows, its factor Fᵀ, and
        # Bt = Fᵀ diag(inv) Y_raw, all in float64; the float32 operand is
        # Bt rounded once (a relative u/2 per element whatever M and the
        # size of Fᵀ; a float32 product here would add an error growing
        # with M that the error model of S does not cover).
        factor_t = basis_factor(xp, raw * inv[:, :, None] * inv[:, None, :], beta)  # [k, M, M]
        coef = factor_t * inv[:, None, :]
        bt[rows] = (coef @ y64).reshape(-1, d)
        inv_norm[rows] = inv.reshape(-1)
        frows = (factor_offsets[batch][:, None] + np.arange(m * m)[None, :]).reshape(-1)
        factor[xp.asarray(frows)] = factor_t.reshape(-1)

    # Many small products and factorisations: one BLAS thread each,
    # and on a CPU the batches spread over Python threads (NumPy releases
    # the GIL in BLAS, LAPACK and ufunc loops). Batches write disjoint rows.
    with blas_threads(1):
        workers = min(workers, len(jobs))
        if workers > 1:
            _parallel(run, [(job,) for job in jobs])
        else:
            for job in jobs:
                run(job)
    return GalleryBasis(
        bt=bt, local=local, inv_norm=inv_norm, factor=factor, factor_offsets=factor_offsets,
        offsets=features.offsets.copy(),
    )


def _centre_terms(xp: ModuleType, gallery: GalleryBasis, center: Any) -> tuple[Any, Any]:
    """``w`` ``[g, d]`` float32 and ‖β‖² ``[g]`` float64 of every gallery image for probe centre μ.

    β = Bt μ ``[M]`` and w = Btᵀ β ``[d]``, from the float64 factor and rows
    (Bt = Fᵀ Y): then ‖Bt x‖² = ‖Bt x'‖² + 2a·(w·x') + a²‖β‖² for x = aμ + x'.
    """
    g, d = len(gallery), gallery.local.shape[1]
    counts = np.diff(gallery.offsets)
    w = xp.empty((g, d), dtype=xp.float64)
    beta_sq = xp.empty(g, dtype=xp.float64)
    jobs: list[np.ndarray] = []
    for m in np.unique(counts):
        members = np.flatnonzero(counts == m)
        per = max(1, _CHUNK_ROWS // int(m))
        jobs += [members[i : i + per] for i in range(0, members.size, per)]

    def run(i: int) -> None:
        batch = jobs[i]
        m = int(counts[batch[0]])
        k = batch.size
        rows = xp.asarray((gallery.offsets[batch][:, None] + np.arange(m)[None, :]).reshape(-1))
        y = gallery.local[rows].astype(xp.float64) * gallery.inv_norm[rows][:, None]  # [kM, d]
        frows = xp.asarray((gallery.factor_offsets[batch][:, None] + np.arange(m * m)[None, :]).reshape(-1))
        factor_t = gallery.factor[frows].reshape(k, m, m)  # Fᵀ
        beta = (factor_t @ (y @ center).reshape(k, m, 1))  # [k, M, 1]
        v = factor_t.swapaxes(1, 2) @ beta  # F β
        w[xp.asarray(batch)] = (v.reshape(k, 1, m) @ y.reshape(k, m, d)).reshape(k, d)
        beta_sq[xp.asarray(batch)] = (beta * beta).sum(axis=(1, 2))

    if xp is np:
        _over_chunks(len(jobs), run)
    else:
        for i in range(len(jobs)):
            run(i)
    return w.astype(xp.float32), beta_sq


def _bound_factors(d: int, gallery_counts: np.ndarray) -> np.ndarray:
    """``[g]`` host float64 κ·u·(0.7·√d + √M + 7): the per-gallery-image factor of δs (module docstring)."""
    return ERROR_KAPPA * _U32 * (0.7 * math.sqrt(d) + np.sqrt(gallery_counts) + 7.0)


def _bound_scale(xp: ModuleType, probes: ProbeBlock) -> Any:
    """``[R]`` float64 per-location factor of δs: ‖x‖·‖x'‖ (‖x'‖ floored), or ‖x‖² uncentred."""
    if probes.across is None:
        return probes.sqnorm
    # ‖x‖·‖x'‖, floored for rows along μ (x' = 0), where only float64 rounding remains.
    norm = xp.sqrt(probes.sqnorm)
    return norm * xp.maximum(probes.across, _ACROSS_FLOOR * norm)


def _error_bound_s(xp: ModuleType, probes: ProbeBlock, gallery_counts: np.ndarray) -> Any:
    """``[g, R]`` float64 δs: bound on |float32 S − exact S| of each entry (module docstring)."""
    return xp.asarray(_bound_factors(probes.x.shape[1], gallery_counts))[:, None] * _bound_scale(xp, probes)[None, :]


def _weighted_error_bounds(xp: ModuleType, e2: Any, e: Any, ds: Any, weights: Any) -> Any:
    """h̃·δe ``[k, R]`` of float32 entries e² ``[k, R]`` (ê = ``e``), given δs ``ds`` ``[k, R]`` (overwritten: the result).

    With δs the bound on the error of e² and ê the float32 e, the error of e
    is at most δe = δs / (ê + √(ê² − δs)) (from |ê − e| = |ê² − e²| / (ê + e)
    and e ≥ √(ê² − δs)); entries with ê² ≤ δs have no such bound (inf).
    """
    # In place: fresh [k, R] arrays per step would each be faulted in.
    low = e2 - ds
    unbounded = low <= 0  # ê² ≤ δs (for finite floats, a − b > 0 exactly when a > b)
    xp.maximum(low, 0.0, out=low)
    xp.sqrt(low, out=low)
    low += e
    with np.errstate(divide="ignore", invalid="ignore"):
        xp.divide(ds, low, out=ds)
    del low
    ds[unbounded] = xp.inf
    with np.errstate(invalid="ignore"):
        ds *= weights[None, :]
    # A location of foreground weight 0 adds nothing to the distance, however
    # large its error (inf · 0 would make the pair's sum NaN and hide the rest).
    weightless = weights == 0
    if bool(weightless.any()):
        ds[:, weightless] = 0.0
    return ds


def _residuals(xp: ModuleType, e2: Any) -> Any:
    """ê = √max(e², 0) of float64 residuals ``e2`` ``[k, R]``: a new ``[k, R]`` array."""
    e = xp.maximum(e2, 0.0)
    xp.sqrt(e, out=e)
    return e


def _weighted_sums(xp: ModuleType, e: Any, probes: ProbeBlock) -> Any:
    """``[k, p]`` Σ h̃·e over each probe's locations of residuals ``e`` ``[k, R]`` (``e`` is overwritten)."""
    e *= probes.weights[None, :]
    return segment_sum(xp, e, probes.offsets, axis=1)


def _entries_to_refine(xp: ModuleType, e2: Any, pair: Any, probes: ProbeBlock, gallery: GalleryBasis, atol: float) -> Any:
    """``[g, R]`` bool: the entries of float32 ``e2`` ``[g, R]`` to recompute in float64.

    ``pair`` ``[g, p]``: each distance's error bound Σ h̃ δe
    (:func:`_weighted_error_bounds`), some above ``atol``. Pairs within
    ``atol`` keep every float32 entry; in the others the entries with the
    largest h̃ δe are refined, as few as leave the sum of the rest within
    ``atol``.
    """
    e = _residuals(xp, e2)
    contrib = _weighted_error_bounds(xp, e2, e, _error_bound_s(xp, probes, np.diff(gallery.offsets)), probes.weights)
    del e
    fg, fp = xp.nonzero(pair > atol)
    # Failing pairs: their entries' contributions padded with zeros to [F, n_max],
    # sorted; the smallest are kept while their running sum stays within atol,
    # and every entry at least as large as the first one not kept is refined.
    counts = xp.asarray(np.diff(probes.offsets))
    starts = xp.asarray(probes.offsets[:-1])
    n_max = int(np.diff(probes.offsets).max())
    cols = starts[fp][:, None] + xp.arange(n_max)[None, :]  # [F, n_max]
    real = xp.arange(n_max)[None, :] < counts[fp][:, None]
    # Padding points at the pair's own first column, so that every write
    # below to a column comes from the pair owning it.
    cols = xp.where(real, cols, starts[fp][:, None])
    part = xp.where(real, contrib[fg[:, None], cols], 0.0)
    ordered = xp.sort(part, axis=1)
    kept = (xp.cumsum(ordered, axis=1) <= atol).sum(axis=1)  # < n_max: the pair's sum exceeds atol
    first_refined = ordered[xp.arange(ordered.shape[0]), kept]  # [F]
    threshold = xp.full(contrib.shape, xp.inf)
    threshold[fg[:, None], cols] = first_refined[:, None]
    return contrib >= threshold


def fpr_tile(
    probes: ProbeBlock,
    gallery: GalleryBasis,
    *,
    float32_atol: float = DEFAULT_FLOAT32_ATOL,
    stats: RefinementStats | None = None,
    workspace: TileWorkspace | None = None,
) -> Any:
    """Distances of every probe of ``probes`` to every image of ``gallery``.

    A pure function of its two prepared blocks. Returns a ``[p, g]`` array on
    the backend's module: float32 when the operands are float32 (each value
    within ``float32_atol`` of the float64 definition, plus the float32
    rounding of the value itself), float64 when they are float64.
    ``stats``, when given, is updated in place with this tile's entry and
    refinement counts (:class:`RefinementStats`). ``workspace``: where the
    tile's product goes (:class:`TileWorkspace`; the same bits either way).
    """
    xp = _module_of(probes.x)
    _check_pair(probes, gallery)
    if probes.row_map is not None:
        raise ValueError("fpr_tile needs a prepared block, not a selection of one (see fpr_pairs)")
    return _tile_distances(xp, *_tile_product(xp, probes, gallery, workspace), probes, gallery, float32_atol, stats,
                           workspace)


def _tile_product(xp: ModuleType, probes: ProbeBlock, gallery: GalleryBasis,
                  workspace: TileWorkspace | None) -> tuple[Any, Any, Any]:
    """(c = Bt Xᵀ ``[ΣM, ΣN]``, cross = W Rᵀ ``[g, ΣN]`` or None, ‖β‖² ``[g]`` or None): the tile's one GEMM."""
    operand, beta_sq = gallery.bt, None
    n_rows = gallery.bt.shape[0]
    if probes.center is not None:
        # the g rows w ride along in the one GEMM (cheaper than a GEMM of their own over the probe rows)
        w32, beta_sq = gallery.centre_terms(probes.center)
        shape = (n_rows + w32.shape[0], gallery.bt.shape[1])
        stacked = None if workspace is None else workspace.array(xp, shape, gallery.bt.dtype, slot="operand")
        operand = xp.concatenate([gallery.bt, w32], out=stacked)
    out = None if workspace is None else workspace.array(xp, (operand.shape[0], probes.x.shape[0]), probes.x.dtype)
    c = xp.matmul(operand, probes.x.T, out=out)  # [ΣM (+ g), ΣN], the one big GEMM
    return c[:n_rows], (None if beta_sq is None else c[n_rows:]), beta_sq


def fpr_pairs(
    probes: ProbeBlock,
    gallery: GalleryBasis,
    gallery_index: int,
    images: np.ndarray,
    *,
    float32_atol: float = DEFAULT_FLOAT32_ATOL,
    stats: RefinementStats | None = None,
) -> Any:
    """Distances ``[k]`` of probe images ``images`` of ``probes`` to gallery image ``gallery_index`` of ``gallery``.

    The shortlist's unit of work: one gallery image against the probes that
    shortlist it. The same arithmetic and accuracy as :func:`fpr_tile` on
    those images (same entries, same error bound and refinement), but the
    probes' rows are multiplied where they lie in ``probes``: one small GEMM
    per probe image, ``[N, d] @ [d, M(+1)]``, and nothing is gathered but
    per-location scalars; the centre terms come from ``gallery``'s cache
    (:meth:`GalleryBasis.centre_terms`), computed once for the many calls
    that share the two blocks. On a CPU call it under one BLAS thread and
    spread gallery images over threads.
    """
    xp = _module_of(probes.x)
    _check_pair(probes, gallery)
    images = np.asarray(images, dtype=np.int64)
    selection = probes.take_images(images)
    g = int(gallery_index)
    one = gallery.image(g)
    operand = one.bt
    beta_sq = None
    if probes.center is not None:
        w, beta_sq_all = gallery.centre_terms(probes.center)
        operand = xp.concatenate([operand, w[g : g + 1]])
        beta_sq = beta_sq_all[g : g + 1]
    product_t = xp.empty((selection.num_rows, operand.shape[0]), dtype=probes.x.dtype)  # [ΣN, M(+1)]
    for k, i in enumerate(images.tolist()):
        pa, pb = int(probes.offsets[i]), int(probes.offsets[i + 1])
        sa = int(selection.offsets[k])
        if xp is np:
            np.matmul(probes.x[pa:pb], operand.T, out=product_t[sa : sa + pb - pa])
        else:
            product_t[sa : sa + pb - pa] = probes.x[pa:pb] @ operand.T
    product = product_t.T  # [M(+1), ΣN]
    m = one.bt.shape[0]
    cross = None if beta_sq is None else product[m:]
    return _tile_distances(xp, product[:m], cross, beta_sq, selection, one, float32_atol, stats)[:, 0]


def _check_pair(probes: ProbeBlock, gallery: GalleryBasis) -> None:
    if probes.x.dtype != gallery.bt.dtype:
        raise ValueError("probe and gallery blocks were prepared with different precisions")
    if probes.x.shape[1] != gallery.bt.shape[1]:
        raise ValueError(f"probe dimension {probes.x.shape[1]} differs from gallery dimension {gallery.bt.shape[1]}")


def _tile_distances(xp: ModuleType, c: Any, cross: Any, beta_sq: Any, probes: ProbeBlock, gallery: GalleryBasis,
                    atol: float, stats: RefinementStats | None, workspace: TileWorkspace | None = None) -> Any:
    """``[p, g]`` distances of a tile from its product ``c`` = Bt Xᵀ ``[ΣM, ΣN]`` (module docstring, steps 2-4).

    ``cross`` ``[g, ΣN]`` (W Rᵀ) and ``beta_sq`` ``[g]``: the centre terms
    of a centred (float32) block, else None. Every gallery image's rows are
    finished where its sums are made (:func:`_squared_segment_sum`): e²,
    ê, each pair's error bound (float32) and the weighted sums, on ``[k, ΣN]``
    rows that stay in cache. Only when some pair's bound exceeds ``atol``
    are entries chosen (:func:`_entries_to_refine`) and recomputed in
    float64 (:func:`_refine`, or one float64 GEMM for the whole tile past
    :data:`TILE_FLOAT64_SHARE`), and the distances summed again. e² goes
    into ``workspace``'s ``"e2"`` slot when one is given.
    """
    g, p, n_cols = len(gallery), len(probes), probes.num_rows
    checked = probes.x.dtype == xp.float32
    e2 = xp.empty((g, n_cols), dtype=xp.float64) if workspace is None else workspace.array(
        xp, (g, n_cols), xp.float64, slot="e2")
    dist = xp.empty((g, p), dtype=xp.float64)
    pair = xp.empty((g, p), dtype=xp.float64) if checked else None
    if checked:
        factors = xp.asarray(_bound_factors(probes.x.shape[1], np.diff(gallery.offsets)))
        scale = _bound_scale(xp, probes)

    def finish_rows(a: int, b: int) -> None:
        s = e2[a:b]
        _e2_in_place(xp, s, None if cross is None else cross[a:b], None if beta_sq is None else beta_sq[a:b], probes)
        e = _residuals(xp, s)
        if checked:
            contrib = _weighted_error_bounds(xp, s, e, factors[a:b, None] * scale[None, :], probes.weights)
            pair[a:b] = segment_sum(xp, contrib, probes.offsets, axis=1)
            del contrib
        dist[a:b] = _weighted_sums(xp, e, probes)

    _squared_segment_sum(xp, c, gallery.offsets, out=e2, then=finish_rows)
    refined = 0
    if checked and bool((pair > atol).any()):
        flagged = _entries_to_refine(xp, e2, pair, probes, gallery, atol)
        refined = int(flagged.sum())
        if refined > TILE_FLOAT64_SHARE * flagged.size:
            e2 = _float64_e2(xp, probes, gallery)
            refined = int(flagged.size)
        else:
            _refine(xp, e2, flagged, probes, gallery)
        del flagged
        dist = _weighted_sums(xp, _residuals(xp, e2), probes)
    if stats is not None:
        stats.record(g * n_cols, refined)
    return dist.T.astype(probes.x.dtype)


def _e2_in_place(xp: ModuleType, s: Any, cross: Any, beta_sq: Any, probes: ProbeBlock) -> None:
    """e² = ‖x‖² − S ``[k, ΣN]`` in place of the sums of squares ``s`` of k gallery images' product rows.

    Uncentred (``beta_sq`` None): S = ``s``. Centred, the probes split
    along μ, y = α·μ + r, x = ι·y, with ``cross`` = W Rᵀ ``[k, ΣN]``:
    S = ι²·(‖Bt r‖² + 2α·(w·r) + α²‖β‖²).
    """
    if beta_sq is not None:
        t = cross.astype(xp.float64)
        t *= 2.0 * probes.along[None, :]
        s += t
        del t
        s += beta_sq[:, None] * (probes.along * probes.along)[None, :]
        s *= (probes.inv_norm * probes.inv_norm)[None, :]
    xp.subtract(probes.sqnorm[None, :], s, out=s)


def _unrefined_e2(xp: ModuleType, probes: ProbeBlock, gallery: GalleryBasis) -> Any:
    """``[g, ΣN]`` float64 e² of every entry of a tile before refinement: what δs bounds (tests, calibration)."""
    c, cross, beta_sq = _tile_product(xp, probes, gallery, None)
    e2 = _squared_segment_sum(xp, c, gallery.offsets)
    _e2_in_place(xp, e2, cross, beta_sq, probes)
    return e2


def _float64_e2(xp: ModuleType, probes: ProbeBlock, gallery: GalleryBasis) -> Any:
    """``[g, ΣN]`` e² of every entry from one float64 GEMM of the rebuilt float64 operands."""
    x64 = probes.rows64(xp.arange(probes.num_rows))
    bt64 = xp.concatenate([gallery.basis64(g) for g in range(len(gallery))])
    c = bt64 @ x64.T
    del x64, bt64
    return probes.sqnorm[None, :] - _squared_segment_sum(xp, c, gallery.offsets)


#: Bytes of float64 rows ``[k, ΣN]`` that :func:`_squared_segment_sum` hands to ``then`` at once: with
#: their temporaries they stay in cache; measured on a d = 512 tile, 1 MiB took 10-20% less time
#: than 128-256 KiB (fewer NumPy calls) and no more than 4 MiB.
_ROWS_IN_CACHE_BYTES = 1 << 20


#: Levels of pairwise float32 adds before the float64 sum of each image's squared rows
#: (:func:`_add_halves`): each partial sum gathers at most 2**3 = 8 squares, with an error of at
#: most 3u of their sum (non-negative terms), which the error model of S covers. Casting every row
#: to float64 was the costly part of the pass; measured on a d = 512 tile with M = 58, the pass
#: took 35% less time with 3 levels than with none.
_SUM_LEVELS = 3


def _add_halves(rows: np.ndarray, levels: int) -> int:
    """Add the second half of ``rows`` ``[n, N]`` onto the first, ``levels`` times, in place; returns the rows left.

    Afterwards row j of the first ``ceil(n / 2**levels)`` holds the sum of at
    most ``2**levels`` of the original rows, added pairwise (depth ``levels``).
    """
    n = rows.shape[0]
    for _ in range(levels):
        if n <= 1:
            break
        half = (n + 1) // 2
        np.add(rows[: n - half], rows[half:n], out=rows[: n - half])
        n = half
    return n


def _squared_segment_sum(xp: ModuleType, c: Any, offsets: np.ndarray, out: Any = None,
                         then: Callable[[int, int], None] | None = None) -> Any:
    """Sum of squares of each gallery image's rows of ``c`` ``[ΣM, ΣN]``: ``[g, ΣN]`` float64 (into ``out``).

    On a CPU each image's ``[M, ΣN]`` rows are squared into a small scratch
    buffer that stays in cache and summed from there (float32 pairwise over
    :data:`_SUM_LEVELS` levels, then float64), so the product is read
    from memory once; the images are split over threads (NumPy releases the
    GIL in ufunc loops), so this memory-bound pass uses every core like the
    GEMM before it, and ``c`` is left unchanged. ``then(a, b)``, when given,
    is called on the same thread as soon as the sums of images a..b are
    made (a few images at a time, while their rows are in cache), to finish
    those rows. On a GPU ``c`` is squared in place (no second product-sized
    buffer), summed by segment, and ``then(0, g)`` follows.
    """
    g = offsets.shape[0] - 1
    if out is None:
        out = xp.empty((g, c.shape[1]), dtype=xp.float64)
    if xp is not np:
        c *= c
        out[...] = segment_sum(xp, c, offsets, axis=0)
        if then is not None:
            then(0, g)
        return out
    workers = min(g, os.cpu_count() or 1)
    cuts = np.linspace(0, g, workers + 1).round().astype(int)
    per_call = max(1, _ROWS_IN_CACHE_BYTES // (8 * max(1, c.shape[1])))

    def run(a: int, b: int) -> None:
        scratch = np.empty((int(np.diff(offsets[a : b + 1]).max()), c.shape[1]), dtype=c.dtype)
        for i0 in range(a, b, per_call):
            i1 = min(b, i0 + per_call)
            for i in range(i0, i1):
                rows = c[offsets[i] : offsets[i + 1]]
                squares = scratch[: rows.shape[0]]
                np.multiply(rows, rows, out=squares)
                n = _add_halves(squares, _SUM_LEVELS)
                np.add.reduce(squares[:n], axis=0, dtype=np.float64, out=out[i])
            if then is not None:
                then(i0, i1)

    if workers <= 1:
        run(0, g)
        return out
    _parallel(run, [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a])
    return out


def _refine(xp: ModuleType, e2: Any, flagged: Any, probes: ProbeBlock, gallery: GalleryBasis) -> int:
    """Recompute the flagged entries of ``e2`` ``[g, R]`` in float64, in place; returns their number.

    One float64 product per gallery image with flagged entries,
    ``[k, d] @ [d, M]`` over its k flagged probe locations (plus the
    rebuild of its float64 basis, ``[M, M] @ [M, d]``); on a CPU the images
    are spread over threads, each with one BLAS thread. Every image's entries
    are computed the same way whatever the thread count.
    """
    gi, ni = xp.nonzero(flagged)
    n = int(gi.shape[0])
    if n == 0:
        return 0
    gi_host = to_numpy(gi)
    cuts = np.flatnonzero(np.diff(gi_host)) + 1
    bounds = np.concatenate([[0], cuts, [n]])

    def run(a: int, b: int) -> None:
        g = int(gi_host[a])
        cols = ni[a:b]
        x64 = probes.rows64(cols)  # [k, d]
        z = x64 @ gallery.basis64(g).T  # [k, M]
        e2[g, cols] = (x64 * x64).sum(axis=1) - (z * z).sum(axis=1)

    pieces = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    workers = min(len(pieces), os.cpu_count() or 1) if xp is np else 1
    with blas_threads(1):
        if workers > 1:
            _parallel(run, pieces)
        else:
            for a, b in pieces:
                run(a, b)
    return n


def _check_precision(precision: str) -> None:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")


#: ``precision="auto"`` computes in float64 on a device whose float64 GEMM
#: takes at most this many times the float32 one (H100/H200-class GPUs,
#: ~1×): there the float32 path's error bound and refinement cost more than
#: they save. CPUs and most GPUs (2× to 64×) get float32.
AUTO_FLOAT64_RATIO = 1.3
_slowdowns: dict[tuple[str, int], float] = {}


def float64_slowdown(xp: ModuleType) -> float:
    """Time of a float64 GEMM over that of a float32 GEMM of the same shape, measured once per device.

    Square GEMMs of 1024 (CPU) or 4096 (GPU), best of three after a
    warm-up; the ratio of the device's rates, about 2 on x86 CPUs and 1 on
    GPUs with full-rate float64.
    """
    key = ("numpy", 0) if xp is np else ("cupy", int(xp.cuda.Device().id))
    if key not in _slowdowns:
        n = 1024 if xp is np else 4096
        sync = (lambda: None) if xp is np else xp.cuda.Device().synchronize
        best = {}
        for dtype in (xp.float32, xp.float64):
            a = xp.ones((n, n), dtype=dtype)
            times = []
            for _ in range(4):  # the first is a warm-up
                sync()
                t0 = time.perf_counter()
                a @ a
                sync()
                times.append(time.perf_counter() - t0)
            best[dtype] = min(times[1:])
        _slowdowns[key] = best[xp.float64] / max(best[xp.float32], 1e-9)
    return _slowdowns[key]


def precision_for_slowdown(slowdown: float) -> str:
    """The precision ``"auto"`` picks on a device whose float64 GEMM takes ``slowdown`` times the float32 one."""
    return "float64" if slowdown <= AUTO_FLOAT64_RATIO else "float32"


def resolve_precision(precision: str, xp: ModuleType) -> str:
    """``"float32"`` or ``"float64"``: ``precision`` itself, or for ``"auto"`` the faster on this device.

    On a GPU (CuPy) from the measured :func:`float64_slowdown`; on a CPU
    always float32, without timing anything: CPU vector units run float64 at
    half the float32 rate, and a timing on a shared machine could flip the
    choice (and with it the bits of a resumed matrix) at random.
    """
    if precision == "auto":
        return "float32" if xp is np else precision_for_slowdown(float64_slowdown(xp))
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be 'float32', 'float64' or 'auto', got {precision!r}")
    return precision


def plan_blocks(counts: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Split images into consecutive ranges of at most ``max_rows`` locations.

    A single image larger than ``max_rows`` gets a range of its own.
    Returns ``[(start, stop), ...]`` image index ranges covering all images.
    """
    blocks: list[tuple[int, int]] = []
    start, rows = 0, 0
    for i, c in enumerate(np.asarray(counts).tolist()):
        if rows and rows + c > max_rows:
            blocks.append((start, i))
            start, rows = i, 0
        rows += c
    if len(counts):
        blocks.append((start, len(counts)))
    return blocks


def _max_tile_rows(d: int, budget: int, precision: str) -> int:
    """Rows per block R (probe and gallery alike) so that one tile fits ``budget``.

    Per row of either block: its GEMM operand (4 or 8 bytes × d) plus room for
    the float64 batch temporaries of the gallery preparation, 16·d bytes
    budgeted. Per entry of the [R, R] product: 4 bytes (float32) plus the
    float64 running sum of CuPy's ragged segment sum, 12 bytes budgeted
    (16 in float64 precision). The inputs themselves are the caller's.
    """
    per_row = 16 * d
    per_entry = 12 if precision == "float32" else 16
    r = (-2 * per_row + math.sqrt((2 * per_row) ** 2 + 4 * per_entry * budget)) / (2 * per_entry)
    return max(1, int(r))


def fpr_distances(
    probe: SpatialFeatures,
    gallery: SpatialFeatures,
    beta: float = DEFAULT_BETA,
    weighted: bool = True,
    backend: str = "auto",
    normalize: bool = True,
    precision: str = "float32",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    shortlist: int | None = None,
    probe_global: np.ndarray | None = None,
    gallery_global: np.ndarray | None = None,
    shortlist_metric: str = "euclidean",
    float32_atol: float = DEFAULT_FLOAT32_ATOL,
    stats: RefinementStats | None = None,
) -> np.ndarray:
    """FPR (``weighted=True``) or DSR (``weighted=False``) distance of every probe to every gallery image.

    Parameters
    ----------
    probe, gallery:
        the images' spatial features; the probe's foreground is needed for FPR.
    beta:
        ridge parameter β (0.01 in the paper).
    backend:
        ``"numpy"``, ``"cupy"`` or ``"auto"`` (CuPy when a GPU is present).
    normalize:
        L2-normalise each location first (the authors' code does).
    precision:
        ``"float32"`` (GEMM in float32, every distance within ``float32_atol``
        of the float64 definition), ``"float64"``, or ``"auto"``: float64 on
        a device where it is about as fast (:func:`resolve_precision`).
    memory_budget_bytes:
        bound on the engine's working memory (tile size); results do not
        depend on it beyond GEMM rounding (BLAS may pick other kernels for
        other tile shapes).
    shortlist:
        ``K``: compute FPR only for each probe's K nearest gallery images by
        ``shortlist_metric`` on ``probe_global`` ``[P, d']`` /
        ``gallery_global`` ``[G, d']`` (the authors' code re-ranks K = 100).
        The other entries of that probe's row hold
        ``max(its shortlisted FPR) + 1 + r`` where r = 0, 1, ... is their rank
        by global distance, so every row ranks the shortlist by FPR first and
        the rest in global order behind it; those values are ranks, not
        distances.
    float32_atol:
        bound on the float32 error of each distance before its own float32
        rounding (default 9e-6, so every distance is within 1e-5 of the
        float64 definition); entries are refined in float64 as needed.
    stats:
        a :class:`RefinementStats` updated in place with the number of
        (probe location, gallery image) entries computed and refined in
        float64 (``stats.refined_share``), for the match log and results.

    Returns
    -------
    ``[P, G]`` host NumPy array, float32 (float64 with ``precision="float64"``).
    The distance is not symmetric: probes are reconstructed from gallery images.
    """
    if not isinstance(probe, SpatialFeatures) or not isinstance(gallery, SpatialFeatures):
        raise ValueError("probe and gallery must be SpatialFeatures")
    if probe.dim != gallery.dim:
        raise ValueError(f"probe features have d={probe.dim}, gallery features d={gallery.dim}")
    if weighted and probe.foreground is None:
        raise ValueError("weighted=True (FPR) needs the probe foreground probabilities; use weighted=False for DSR")
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not memory_budget_bytes > 0:
        raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
    if not float32_atol > 0:
        raise ValueError(f"float32_atol must be positive, got {float32_atol}")
    xp = get_array_module(backend)
    precision = resolve_precision(precision, xp)
    n_probe, n_gallery = len(probe), len(gallery)
    out_dtype = np.float32 if precision == "float32" else np.float64
    if n_probe == 0 or n_gallery == 0:
        return np.zeros((n_probe, n_gallery), dtype=out_dtype)
    opts = dict(normalize=normalize, precision=precision, backend=xp)
    max_rows = _max_tile_rows(probe.dim, int(memory_budget_bytes), precision)
    probe_blocks = plan_blocks(probe.counts, max_rows)
    gallery_blocks = plan_blocks(gallery.counts, max_rows)
    workspace = TileWorkspace()
    # Every block is split along the first block's centre (as the streamed tiles are).
    first = probe_blocks[0]
    center = shared_probe_centre(lambda: probe[first[0] : first[1]], len(probe_blocks), precision,
                                 normalize=normalize, backend=xp)

    def probe_block(a: int, b: int) -> ProbeBlock:
        # Prepared again for every gallery block, into the memory of the previous one: a
        # pass over its rows costs about 1.5% of its tile's GEMM (9 ms for 8,800 rows at
        # d = 512), while keeping every prepared block would take fresh memory, whose
        # first touch cost more than the passes it saved on this project's VM.
        return prepare_probes(probe[a:b], weighted=weighted, index_base=a, center=center, workspace=workspace, **opts)

    def gallery_block(a: int, b: int) -> GalleryBasis:
        return prepare_gallery(gallery[a:b], beta=beta, index_base=a, **opts)

    if shortlist is not None and shortlist < n_gallery:
        return _shortlisted(
            probe_block, gallery_block, probe_blocks, gallery_blocks, n_probe, n_gallery, shortlist,
            probe_global, gallery_global, shortlist_metric, float32_atol, out_dtype, stats,
        )
    out = np.empty((n_probe, n_gallery), dtype=out_dtype)
    single = probe_block(*probe_blocks[0]) if len(probe_blocks) == 1 else None
    for ga, gb in gallery_blocks:
        basis = gallery_block(ga, gb)
        for pa, pb in probe_blocks:
            block = single if single is not None else probe_block(pa, pb)
            tile = fpr_tile(block, basis, float32_atol=float32_atol, stats=stats, workspace=workspace)
            out[pa:pb, ga:gb] = to_numpy(tile)
    return out


def _shortlisted(
    probe_block, gallery_block, probe_blocks, gallery_blocks, n_probe, n_gallery, k,
    probe_global, gallery_global, metric, atol, out_dtype, stats,
) -> np.ndarray:
    """Shortlist path of :func:`fpr_distances` (see its docstring)."""
    if k < 1:
        raise ValueError(f"shortlist must be at least 1, got {k}")
    if probe_global is None or gallery_global is None:
        raise ValueError("shortlist needs probe_global and gallery_global features")
    probe_global = np.asarray(probe_global)
    gallery_global = np.asarray(gallery_global)
    if probe_global.shape[0] != n_probe or gallery_global.shape[0] != n_gallery:
        raise ValueError(
            f"global features have {probe_global.shape[0]} probe / {gallery_global.shape[0]} gallery rows, "
            f"expected {n_probe} / {n_gallery}"
        )
    order = np.argsort(global_distances(probe_global, gallery_global, metric=metric), axis=1, kind="stable")
    short = order[:, :k]  # [P, K] gallery indices
    exact = np.empty((n_probe, k), dtype=np.float64)
    for pa, pb in probe_blocks:
        fpr_shortlist_pass(probe_block(pa, pb), pa, short, gallery_blocks, gallery_block, exact,
                           float32_atol=atol, stats=stats)
    out = np.empty((n_probe, n_gallery), dtype=np.float64)
    rest = order[:, k:]
    behind = exact.max(axis=1, keepdims=True) + 1.0 + np.arange(rest.shape[1])[None, :]
    np.put_along_axis(out, short, exact, axis=1)
    np.put_along_axis(out, rest, behind, axis=1)
    return out.astype(out_dtype)


def shortlist_units(shortlist: np.ndarray, probe_start: int, n_probes: int,
                    gallery_blocks: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """The pairs of probes ``probe_start ... probe_start + n_probes`` per gallery range: one array per range.

    shortlist: host int ``[P, K]`` gallery indices per probe. Each array
    holds flat indices into ``shortlist.reshape(-1)`` (pair = probe·K + slot)
    of the pairs whose gallery image lies in that range, gallery-major and
    probes ascending: the unit of work (and of resume) of
    :func:`fpr_shortlist_pass`.
    """
    k = shortlist.shape[1]
    g_of = shortlist.reshape(-1)
    flat = np.arange(probe_start * k, (probe_start + n_probes) * k)
    by_gallery = flat[np.argsort(g_of[flat], kind="stable")]
    starts = np.array([a for a, _ in gallery_blocks])
    bounds = np.searchsorted(g_of[by_gallery], starts)  # by_gallery is sorted by gallery index
    bounds = np.append(bounds, by_gallery.size)
    return [by_gallery[bounds[i] : bounds[i + 1]] for i in range(len(gallery_blocks))]


def fpr_shortlist_pass(
    probes: ProbeBlock,
    probe_start: int,
    shortlist: np.ndarray,
    gallery_blocks: Sequence[tuple[int, int]],
    gallery_basis: Callable[[int, int], GalleryBasis],
    exact: np.ndarray,
    *,
    float32_atol: float = DEFAULT_FLOAT32_ATOL,
    stats: RefinementStats | None = None,
    map_fn: Callable[..., Any] = map,
    blocks: Sequence[int] | None = None,
    block_done: Callable[[int, np.ndarray, float, RefinementStats], None] | None = None,
) -> None:
    """Exact distances of one pass of probes to the gallery images that shortlist them, into ``exact``.

    probes: the prepared probe images ``probe_start ... probe_start + p``;
    shortlist: host int ``[P, K]`` gallery indices per probe (every probe);
    gallery_blocks: ``[(start, stop)]`` image ranges covering the gallery;
    gallery_basis(start, stop): the prepared basis of one range (called at
    most once per range, only for ranges some probe of the pass shortlists);
    exact: float64 ``[P, K]``, the pass's pairs filled in place.
    Each gallery image meets the probes of the pass that shortlist it in one
    :func:`fpr_pairs` call; ``map_fn`` (e.g. a thread pool's ``map``, each
    thread on one BLAS thread) runs those calls. ``blocks``: the indices of
    the ranges to compute (default all; the others are left alone, e.g.
    restored by a resume). ``block_done(index, pairs, flops, counts)`` is
    called after each range with its pairs (:func:`shortlist_units`), the
    multiply-adds ×2 and its own refinement counts (also added to ``stats``).
    """
    k = shortlist.shape[1]
    g_of = shortlist.reshape(-1)
    units = shortlist_units(shortlist, probe_start, len(probes), gallery_blocks)
    rows = np.diff(probes.offsets)
    lock = threading.Lock()
    for bi in range(len(gallery_blocks)) if blocks is None else blocks:
        ga, gb = gallery_blocks[bi]
        pairs = units[bi]
        counts = RefinementStats()
        flops = 0.0
        if pairs.size:
            basis = gallery_basis(ga, gb)
            if probes.center is not None:
                basis.centre_terms(probes.center)  # once, before the threads share the basis
            groups = np.split(pairs, np.flatnonzero(np.diff(g_of[pairs])) + 1)

            def run(group: np.ndarray) -> float:
                g = int(g_of[group[0]]) - ga
                images = group // k - probe_start
                mine = RefinementStats()
                exact.reshape(-1)[group] = to_numpy(fpr_pairs(probes, basis, g, images,
                                                              float32_atol=float32_atol, stats=mine))
                with lock:
                    counts.merge(mine)
                m = int(basis.offsets[g + 1] - basis.offsets[g])
                return 2.0 * probes.x.shape[1] * m * float(rows[images].sum())

            flops = float(sum(map_fn(run, groups)))
            del basis
        if stats is not None:
            stats.merge(counts)
        if block_done is not None:
            block_done(bi, pairs, flops, counts)


def dsr_distances(probe: SpatialFeatures, gallery: SpatialFeatures, **kwargs: Any) -> np.ndarray:
    """DSR distances (Eq. 4): :func:`fpr_distances` with ``weighted=False``."""
    return fpr_distances(probe, gallery, weighted=False, **kwargs)
