"""The memory model of matching: a budget turned into blocks of images, for tiles and for the shortlist.

One model, :func:`tile_task_bytes`, says what one tile task holds at once;
:func:`plan_tiles` picks the largest square blocks for which the tasks in
flight fit the budget, for every driver (in memory, streamed from the cache,
on Dask). The shortlist works in other units (a pass of probes against small
gallery blocks) and has its own plan, :class:`ShortlistPlan`
(:func:`plan_shortlist`).

Why a plan is recorded. A tile is a deterministic function of its two blocks
given one BLAS thread, but another tile shape may round a GEMM differently
(always within the engine's ``float32_atol`` of the float64 definition). So
the plan is recorded with the tiles (:mod:`reid_eval.matching.tile_store`)
and an interrupted run resumes with its recorded plan.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reid_eval.errors import ReidEvalError

__all__ = ["plan_blocks", "TilePlan", "tile_task_bytes", "block_rows_for", "plan_tiles", "ShortlistPlan", "plan_shortlist",
           "shortlist_chunk_rows", "shortlist_gather_rows"]

# prepare_gallery works in batches of about 2048 rows per CPU thread; per row
# of a batch: float64 rows (8 d), the basis product (4 d), a gathered copy (4 d).
_PREP_BATCH_ROWS = 2048

#: Most probe rows one shortlist call gathers for one GEMM (a hub gallery image that every probe
#: shortlists is met in chunks of this many rows).
GATHER_MAX_ROWS = 8192


def plan_blocks(counts: np.ndarray, max_rows: int) -> list[tuple[int, int]]:
    """Split images (``counts`` ``[n]`` locations each) into consecutive ranges of at most ``max_rows`` locations.

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


def _block_pairs(d: Mapping[str, Any], key: str) -> tuple[tuple[int, int], ...]:
    return tuple((int(a), int(b)) for a, b in d[key])


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

    @classmethod
    def of_rows(cls, probe_offsets: np.ndarray, gallery_offsets: np.ndarray, block_rows: int, precision: str,
                memory_budget_bytes: int, concurrent_tiles: int) -> TilePlan:
        """The plan with blocks of at most ``block_rows`` locations (``*_offsets``: ``[n+1]`` row boundaries)."""
        return cls(int(block_rows), tuple(plan_blocks(np.diff(probe_offsets), block_rows)),
                   tuple(plan_blocks(np.diff(gallery_offsets), block_rows)), precision, int(memory_budget_bytes),
                   int(concurrent_tiles))

    @property
    def num_tiles(self) -> int:
        return len(self.probe_blocks) * len(self.gallery_blocks)

    def tiles(self) -> list[tuple[int, int]]:
        """Every tile as ``(gallery block index, probe block index)``, gallery block by gallery block."""
        return [(gi, pi) for gi in range(len(self.gallery_blocks)) for pi in range(len(self.probe_blocks))]

    def same_tiles(self, other: TilePlan | ShortlistPlan) -> bool:
        """Whether ``other`` cuts the splits into the same blocks (so gives the same bits)."""
        return (self.probe_blocks, self.gallery_blocks, self.precision) == (
            other.probe_blocks, other.gallery_blocks, other.precision
        )

    def provenance(self) -> dict[str, Any]:
        """The plan's fields in a results file's provenance."""
        return {"precision": self.precision, "tile_block_rows": self.block_rows, "tile_count": self.num_tiles,
                "memory_budget_bytes": self.memory_budget_bytes}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["probe_blocks"] = [list(b) for b in self.probe_blocks]
        d["gallery_blocks"] = [list(b) for b in self.gallery_blocks]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TilePlan:
        return cls(
            block_rows=int(d["block_rows"]),
            probe_blocks=_block_pairs(d, "probe_blocks"),
            gallery_blocks=_block_pairs(d, "gallery_blocks"),
            precision=str(d["precision"]),
            memory_budget_bytes=int(d["memory_budget_bytes"]),
            concurrent_tiles=int(d["concurrent_tiles"]),
        )


def operand_bytes(precision: str) -> int:
    """Bytes per feature element of a prepared GEMM operand: 4 (float32), 8 (float64), or for tf32x3 its three
    float32 parts and the float32 row they are split from (16)."""
    return {"float64": 8, "tf32x3": 16}.get(precision, 4)


def tile_task_bytes(block_rows: int, dim: int, max_locations: int, min_locations: int, precision: str = "float32") -> int:
    """Bytes one tile task can hold at once with blocks of ``block_rows`` locations.

    Per row of the gallery block: its float32 rows read from the cache (4 d),
    the basis operand (:func:`operand_bytes` per element), its factor (8 M)
    and row scales; per row of the probe block: the rows read (4 d) and the
    GEMM operand; per entry of the ``[R, R]`` product: 4 (or 8) bytes
    plus the float64 epilogue arrays ``[g, R]`` (squared sums, e², the
    refinement threshold, e: about 33 bytes per gallery image and probe
    location, so 33 / M per entry); plus the batch temporaries of
    ``prepare_gallery`` (16 d per row of a 2048-row batch per CPU thread,
    at most the block's rows).
    """
    op, product = operand_bytes(precision), 8 if precision == "float64" else 4
    per_row = 2 * (4 + op) * dim + 8 * max_locations + 48
    per_entry = product + 33.0 / max(1, min_locations)
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
    strict: bool = True,
) -> TilePlan:
    """The largest square blocks such that ``concurrent_tiles`` tile tasks fit in ``memory_budget_bytes``.

    ``probe_offsets`` / ``gallery_offsets``: ``[n+1]`` row boundaries of the
    two splits (:func:`reid_eval.features.cache.read_split_offsets`). When
    not even a block of the largest image fits, ``strict`` raises
    ReidEvalError naming --memory-budget (a streamed match promises the
    bound); otherwise every block holds a single image (the in-memory engine,
    whose inputs are in memory already).
    """
    if not memory_budget_bytes > 0:
        raise ReidEvalError(f"--memory-budget must be positive, got {memory_budget_bytes}")
    counts = np.concatenate([np.diff(probe_offsets), np.diff(gallery_offsets)])
    m_max = int(counts.max()) if counts.size else 1
    m_min = int(counts.min()) if counts.size else 1
    rows = block_rows_for(dim, m_max, m_min, memory_budget_bytes, concurrent_tiles, precision,
                          most=max(m_max, int(counts.sum()) if counts.size else m_max))
    if rows is None:
        if strict:
            need = concurrent_tiles * tile_task_bytes(m_max, dim, m_max, m_min, precision)
            raise ReidEvalError(
                f"--memory-budget {memory_budget_bytes} is too small for one image of {m_max} locations × {dim} "
                f"({concurrent_tiles} tile(s) at once); give at least {need}"
            )
        rows = 1  # one image per block
    return TilePlan.of_rows(probe_offsets, gallery_offsets, rows, precision, memory_budget_bytes, concurrent_tiles)


def block_rows_for(dim: int, max_locations: int, min_locations: int, memory_budget_bytes: int, concurrent_tiles: int,
                   precision: str = "float32", most: int | None = None) -> int | None:
    """The largest block (in locations, at least ``max_locations``, at most ``most``) for which
    ``concurrent_tiles`` tile tasks fit ``memory_budget_bytes``; None when not even ``max_locations`` fits."""
    per_task = memory_budget_bytes / max(1, concurrent_tiles)

    def fits(rows: int) -> bool:
        return tile_task_bytes(rows, dim, max_locations, min_locations, precision) <= per_task

    if not fits(max_locations):
        return None
    lo = max_locations
    hi = most if most is not None else max(lo, int(per_task))  # tile_task_bytes > rows: a safe upper end
    while lo < hi:  # largest rows that fit (tile_task_bytes grows with rows)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


@dataclass(frozen=True)
class ShortlistPlan:
    """How the shortlist path cuts the splits: probe passes against small gallery blocks.

    probe_rows / gallery_rows: at most this many locations per probe pass /
    gallery block; probe_blocks / gallery_blocks: ``(start, stop)`` image
    ranges; a unit of work (and of resume) is one probe pass against one
    gallery block. precision, memory_budget_bytes, concurrent_tiles: as in
    :class:`TilePlan`. gather_rows: the most probe rows multiplied by one
    GEMM (:func:`~reid_eval.matching.kernel.fpr_pairs`; part of the plan
    because the GEMM's row count can change its last bit).
    """

    probe_rows: int
    gallery_rows: int
    probe_blocks: tuple[tuple[int, int], ...]
    gallery_blocks: tuple[tuple[int, int], ...]
    precision: str
    memory_budget_bytes: int
    concurrent_tiles: int
    gather_rows: int = GATHER_MAX_ROWS

    @property
    def num_tiles(self) -> int:
        """Units of work: probe passes × gallery blocks."""
        return len(self.probe_blocks) * len(self.gallery_blocks)

    def same_tiles(self, other: TilePlan | ShortlistPlan) -> bool:
        """Whether ``other`` cuts the splits into the same units and gathers the same rows (the same bits)."""
        return (self.probe_blocks, self.gallery_blocks, self.precision, self.gather_rows) == (
            other.probe_blocks, other.gallery_blocks, other.precision, getattr(other, "gather_rows", None)
        )

    def provenance(self) -> dict[str, Any]:
        """The plan's fields in a results file's provenance (``tile_block_rows``: the gallery blocks' rows)."""
        return {"precision": self.precision, "tile_block_rows": self.gallery_rows, "tile_count": self.num_tiles,
                "memory_budget_bytes": self.memory_budget_bytes}

    def to_dict(self) -> dict[str, Any]:
        """As recorded in a tile folder's manifest (``block_rows``: the gallery blocks' rows, as ever)."""
        return {"block_rows": self.gallery_rows, "probe_rows": self.probe_rows,
                "probe_blocks": [list(b) for b in self.probe_blocks],
                "gallery_blocks": [list(b) for b in self.gallery_blocks], "precision": self.precision,
                "memory_budget_bytes": self.memory_budget_bytes, "concurrent_tiles": self.concurrent_tiles,
                "gather_rows": self.gather_rows}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShortlistPlan:
        """The plan recorded by :meth:`to_dict` (``gather_rows`` 0 when an older run did not record it: its
        products were one GEMM per probe image, so no resume onto it)."""
        return cls(probe_rows=int(d.get("probe_rows", 0)), gallery_rows=int(d["block_rows"]),
                   probe_blocks=_block_pairs(d, "probe_blocks"), gallery_blocks=_block_pairs(d, "gallery_blocks"),
                   precision=str(d["precision"]), memory_budget_bytes=int(d["memory_budget_bytes"]),
                   concurrent_tiles=int(d["concurrent_tiles"]), gather_rows=int(d.get("gather_rows", 0)))


#: Rows of the gallery batches prepared at once by all CPU threads (see :func:`tile_task_bytes`).
_PREP_ROWS = _PREP_BATCH_ROWS * (os.cpu_count() or 1)

#: Shares of a shortlist's budget: a gallery block, the global-distance chunks, the probe rows one
#: call gathers per thread; the probe pass takes the rest. The gallery is read and prepared once per
#: pass, by far the largest cost after the products, so the pass takes nearly everything: a gallery
#: block only has to hold a few preparation batches, a chunk of global distances a few hundred rows.
SHORTLIST_GALLERY_SHARE = 0.08
SHORTLIST_GLOBAL_SHARE = 0.04
SHORTLIST_GATHER_SHARE = 0.03

def plan_shortlist(probe_offsets: np.ndarray, gallery_offsets: np.ndarray, dim: int, *, memory_budget_bytes: int,
                   concurrent_tiles: int, precision: str = "float32") -> ShortlistPlan:
    """The shortlist's passes and gallery blocks for ``memory_budget_bytes``.

    A probe pass holds, per probe location, the rows read (4 d), the
    prepared operand (:func:`operand_bytes` per element) and its float64
    scalars. The gallery is read and prepared once per pass, so a pass
    takes what the other parts leave (:data:`SHORTLIST_GALLERY_SHARE` for a
    gallery block: rows, basis, factor and the preparation's batches;
    :data:`SHORTLIST_GLOBAL_SHARE` for the global-distance chunks that pick
    the shortlist, :func:`shortlist_chunk_rows`;
    :data:`SHORTLIST_GATHER_SHARE` for the probe rows each thread gathers,
    :func:`shortlist_gather_rows`), and the passes are of equal size (as
    few as fit; one when the probe split fits). A block always holds at
    least the largest image.
    """
    counts = np.concatenate([np.diff(probe_offsets), np.diff(gallery_offsets)])
    m_max = int(counts.max()) if counts.size else 1
    op = operand_bytes(precision)
    budget = int(memory_budget_bytes)
    rest = 1.0 - SHORTLIST_GALLERY_SHARE - SHORTLIST_GLOBAL_SHARE - SHORTLIST_GATHER_SHARE
    most_rows = max(m_max, int(rest * budget // ((4 + op) * dim + 72)))
    total_rows = int(probe_offsets[-1]) if len(probe_offsets) else 0
    passes = max(1, -(-total_rows // most_rows))
    probe_rows = max(m_max, -(-total_rows // passes))  # equal passes: no short last one
    gallery_rows = max(m_max, int((SHORTLIST_GALLERY_SHARE * budget - 16 * dim * _PREP_ROWS)
                                  // ((4 + op) * dim + 8 * m_max + 48)))
    probe_blocks = plan_blocks(np.diff(probe_offsets), probe_rows)
    if len(probe_blocks) > passes:  # image boundaries pushed a few rows over: fall back to the largest passes
        probe_blocks = plan_blocks(np.diff(probe_offsets), most_rows)
        probe_rows = most_rows
    return ShortlistPlan(probe_rows, gallery_rows, tuple(probe_blocks),
                         tuple(plan_blocks(np.diff(gallery_offsets), gallery_rows)), precision, budget,
                         int(concurrent_tiles),
                         shortlist_gather_rows(budget, int(concurrent_tiles), dim, m_max, precision))


def shortlist_chunk_rows(memory_budget_bytes: int, n_gallery: int) -> int:
    """Probe rows of global distances ``[rows, G]`` (and their argsort) per chunk (:data:`SHORTLIST_GLOBAL_SHARE`)."""
    return max(1, int(SHORTLIST_GLOBAL_SHARE * memory_budget_bytes // (24 * n_gallery)))


def shortlist_gather_rows(memory_budget_bytes: int, threads: int, dim: int, max_locations: int,
                          precision: str = "float32") -> int:
    """Probe rows one thread of a shortlist pass gathers for one product (:data:`SHORTLIST_GATHER_SHARE`).

    Per row: the gathered operand row (:func:`operand_bytes` per element),
    its product with one gallery image's M (+1) basis rows, and the float64
    residuals and bounds of the epilogue. At least the largest image, at
    most :data:`GATHER_MAX_ROWS`.
    """
    per_row = operand_bytes(precision) * dim + 12 * (max_locations + 1) + 64
    rows = int(SHORTLIST_GATHER_SHARE * memory_budget_bytes / max(1, threads) // per_row)
    return max(int(max_locations), min(GATHER_MAX_ROWS, rows))
