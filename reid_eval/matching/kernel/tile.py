"""One tile: the distances of a prepared probe block to a prepared gallery block.

The engine uses the basis form of :mod:`reid_eval.matching.definition`: for a
gallery image with rows Y ``[M, d]``, ``Bt = Fᵀ Y`` ``[M, d]`` gives, for
every probe location x, ``e² = ‖x‖² − ‖Bt x‖²``. The Bt of a gallery block's
images are stacked ``[ΣM, d]``, the probe locations of a probe block
``[ΣN, d]``; a tile (:func:`fpr_tile`) is then

1. one GEMM  ``C = Bt_stack @ X_stackᵀ``  ``[ΣM, ΣN]``,
2. ``C *= C`` and a sum over each gallery image's M rows ``-> S [g, ΣN]``,
3. ``e² = ‖x‖² − S``, refinement (:mod:`reid_eval.matching.kernel.accuracy`),
   clamp at 0, square root,
4. a sum over each probe's N columns weighted by h̃ ``-> [p, g]``.

On a CPU, steps 2-4 and the error bounds run a few gallery images at a time
on the threads that make their sums, while those rows are in cache
(:func:`_tile_distances`); the product is read from memory once.
:func:`fpr_pairs` is the same arithmetic for one gallery image against a
selection of probes (the shortlist's unit). With ``"tf32x3"`` operands
(:mod:`reid_eval.matching.kernel.tf32`) the same GEMM is 3d deep and runs on
tensor cores; the rest is the float32 path's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from reid_eval.matching.kernel.accuracy import (
    TILE_FLOAT64_SHARE,
    DEFAULT_FLOAT32_ATOL,
    RefinementStats,
    bound_factors,
    bound_scale,
    entries_to_refine,
    factor_bound_factors,
    refine,
    residuals,
    weighted_error_bounds,
)
from reid_eval.matching.kernel.backend import is_host, module_of, segment_sum
from reid_eval.matching.kernel.gallery import GalleryBasis
from reid_eval.matching.kernel.probes import ProbeBlock
from reid_eval.matching.kernel.tf32 import tensor_cores
from reid_eval.matching.kernel.threads import parallel
from reid_eval.matching.kernel.workspace import TileWorkspace
from reid_eval.matching.plan import GATHER_MAX_ROWS, plan_blocks

__all__ = ["fpr_tile", "fpr_pairs", "SUM_LEVELS"]


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
    xp = module_of(probes.x)
    _check_pair(probes, gallery)
    if probes.row_map is not None:
        raise ValueError("fpr_tile needs a prepared block, not a selection of one (see fpr_pairs)")
    return _tile_distances(xp, *_tile_product(xp, probes, gallery, workspace), probes, gallery, float32_atol, stats,
                           workspace)


def _tile_product(xp: ModuleType, probes: ProbeBlock, gallery: GalleryBasis,
                  workspace: TileWorkspace | None) -> tuple[Any, Any, Any]:
    """(c = Bt Xᵀ ``[ΣM, ΣN]``, cross = W Rᵀ ``[g, ΣN]`` or None, ‖z‖² ``[g]`` or None): the tile's one GEMM."""
    operand, z_sq = gallery.bt, None
    n_rows = gallery.bt.shape[0]
    if probes.centre is not None:
        # the g rows w ride along in the one GEMM (cheaper than a GEMM of their own over the probe rows)
        w32, z_sq = gallery.centre_terms(probes.centre)
        shape = (n_rows + w32.shape[0], gallery.bt.shape[1])
        stacked = None if workspace is None else workspace.array(xp, shape, gallery.bt.dtype, slot="operand")
        operand = xp.concatenate([gallery.bt, w32], out=stacked)
    out = None if workspace is None else workspace.array(xp, (operand.shape[0], probes.x.shape[0]), probes.x.dtype)
    with tensor_cores(xp, probes.tf32):
        c = xp.matmul(operand, probes.x.T, out=out)  # [ΣM (+ g), ΣN], the one big GEMM
    return c[:n_rows], (None if z_sq is None else c[n_rows:]), z_sq


def fpr_pairs(
    probes: ProbeBlock,
    gallery: GalleryBasis,
    gallery_index: int,
    images: np.ndarray,
    *,
    float32_atol: float = DEFAULT_FLOAT32_ATOL,
    stats: RefinementStats | None = None,
    workspace: TileWorkspace | None = None,
    gather_rows: int = GATHER_MAX_ROWS,
) -> Any:
    """Distances ``[k]`` of probe images ``images`` of ``probes`` to gallery image ``gallery_index`` of ``gallery``.

    The shortlist's unit of work: one gallery image against the probes that
    shortlist it. The same arithmetic and accuracy as :func:`fpr_tile` on
    those images (same entries, same error bound and refinement). The
    probes' rows are copied, whole images at a time and at most
    ``gather_rows`` rows (or one image) at once, into ``workspace``'s
    ``"gather"`` slot and multiplied there, one GEMM
    ``[rows, d] @ [d, M(+1)]`` per chunk (a GEMM per probe image would be too
    small to run near the GEMM rate); the centre terms come from
    ``gallery``'s cache (:meth:`GalleryBasis.centre_terms`), computed once
    for the many calls that share the two blocks. On a CPU call it under one
    BLAS thread and spread gallery images over threads, one workspace each.
    """
    xp = module_of(probes.x)
    _check_pair(probes, gallery)
    images = np.asarray(images, dtype=np.int64)
    selection = probes.take_images(images)
    g = int(gallery_index)
    one = gallery.image(g)
    operand = one.bt
    z_sq = None
    if probes.centre is not None:
        w, z_sq_all = gallery.centre_terms(probes.centre)
        operand = xp.concatenate([operand, w[g : g + 1]])
        z_sq = z_sq_all[g : g + 1]
    workspace = workspace if workspace is not None else TileWorkspace()
    product_t = xp.empty((selection.num_rows, operand.shape[0]), dtype=probes.x.dtype)  # [ΣN, M(+1)]
    counts = np.diff(probes.offsets)[images]
    width = int(probes.x.shape[1])
    with tensor_cores(xp, probes.tf32):
        for a, b in plan_blocks(counts, gather_rows):
            sa, sb = int(selection.offsets[a]), int(selection.offsets[b])
            rows = workspace.array(xp, (sb - sa, width), probes.x.dtype, slot="gather")
            for k in range(a, b):
                pa, pb = int(probes.offsets[images[k]]), int(probes.offsets[images[k] + 1])
                ka = int(selection.offsets[k]) - sa
                rows[ka : ka + pb - pa] = probes.x[pa:pb]
            xp.matmul(rows, operand.T, out=product_t[sa:sb])
    product = product_t.T  # [M(+1), ΣN]
    m = one.bt.shape[0]
    cross = None if z_sq is None else product[m:]
    return _tile_distances(xp, product[:m], cross, z_sq, selection, one, float32_atol, stats)[:, 0]


def _check_pair(probes: ProbeBlock, gallery: GalleryBasis) -> None:
    if probes.x.dtype != gallery.bt.dtype or probes.tf32 != gallery.tf32:
        raise ValueError("probe and gallery blocks were prepared with different precisions")
    if probes.local.shape[1] != gallery.local.shape[1]:
        raise ValueError(f"probe dimension {probes.local.shape[1]} differs from gallery dimension "
                         f"{gallery.local.shape[1]}")


def _tile_distances(xp: ModuleType, c: Any, cross: Any, z_sq: Any, probes: ProbeBlock, gallery: GalleryBasis,
                    atol: float, stats: RefinementStats | None, workspace: TileWorkspace | None = None) -> Any:
    """``[p, g]`` distances of a tile from its product ``c`` = Bt Xᵀ ``[ΣM, ΣN]`` (module docstring, steps 2-4).

    ``cross`` ``[g, ΣN]`` (W Rᵀ) and ``z_sq`` ``[g]``: the centre terms
    of a centred (float32) block, else None. Every gallery image's rows are
    finished where its sums are made (:func:`_squared_segment_sum`): e²,
    ê, each pair's error bound (the factor's rounding, and the operands' for
    float32) and the weighted sums, on ``[k, ΣN]`` rows that stay in cache.
    Only when some pair's bound exceeds ``atol`` are entries chosen
    (:func:`entries_to_refine`) and recomputed in float64 (:func:`refine`,
    or for a float32 tile past :data:`TILE_FLOAT64_SHARE` one float64 GEMM
    for the whole tile, then :func:`refine` where that still cancels), and
    the distances summed again. e² goes
    into ``workspace``'s ``"e2"`` slot when one is given.
    """
    g, p, n_cols = len(gallery), len(probes), probes.num_rows
    operand32 = probes.x.dtype == xp.float32
    e2 = xp.empty((g, n_cols), dtype=xp.float64) if workspace is None else workspace.array(
        xp, (g, n_cols), xp.float64, slot="e2")
    dist = xp.empty((g, p), dtype=xp.float64)
    pair = xp.empty((g, p), dtype=xp.float64)
    # δs of every entry: the factor's rounding (float64 too: it grows with the norms) + the operands' (float32)
    factors64 = factor_bound_factors(xp, gallery)
    if operand32:
        factors = xp.asarray(bound_factors(probes.local.shape[1], np.diff(gallery.offsets), probes.tf32))
        scale = bound_scale(xp, probes)

    def finish_rows(a: int, b: int) -> None:
        s = e2[a:b]
        _e2_in_place(xp, s, None if cross is None else cross[a:b], None if z_sq is None else z_sq[a:b], probes)
        e = residuals(xp, s)
        ds = factors64[a:b, None] * probes.sqnorm[None, :]
        if operand32:
            ds += factors[a:b, None] * scale[None, :]
        contrib = weighted_error_bounds(xp, s, e, ds, probes.weights)
        pair[a:b] = segment_sum(xp, contrib, probes.offsets, axis=1)
        del contrib, ds
        dist[a:b] = _weighted_sums(xp, e, probes)

    _squared_segment_sum(xp, c, gallery.offsets, out=e2, then=finish_rows)
    refined = 0
    if bool((pair > atol).any()):
        flagged = entries_to_refine(xp, e2, pair, probes, gallery, atol)
        refined = int(flagged.sum())
        if operand32 and refined > TILE_FLOAT64_SHARE * flagged.size:
            e2 = _float64_e2(xp, probes, gallery)
            refined = int(flagged.size)
            # a float64 product cancels too where the norms are large: its own bound decides what is left
            ds64 = factors64[:, None] * probes.sqnorm[None, :]
            again = segment_sum(xp, weighted_error_bounds(xp, e2, residuals(xp, e2), ds64.copy(), probes.weights),
                                probes.offsets, axis=1)
            if bool((again > atol).any()):
                refine(xp, e2, entries_to_refine(xp, e2, again, probes, gallery, atol, ds=ds64), probes, gallery)
        else:
            refine(xp, e2, flagged, probes, gallery)
        del flagged
        dist = _weighted_sums(xp, residuals(xp, e2), probes)
    if stats is not None:
        stats.record(g * n_cols, refined)
    return dist.T.astype(probes.x.dtype)


def _e2_in_place(xp: ModuleType, s: Any, cross: Any, z_sq: Any, probes: ProbeBlock) -> None:
    """e² = ‖x‖² − S ``[k, ΣN]`` in place of the sums of squares ``s`` of k gallery images' product rows.

    Uncentred (``z_sq`` None): S = ``s``. Centred, the probes split
    along μ, y = α·μ + r, x = ι·y, with ``cross`` = W Rᵀ ``[k, ΣN]``:
    S = ι²·(‖Bt r‖² + 2α·(w·r) + α²‖z‖²).
    """
    if z_sq is not None:
        t = cross.astype(xp.float64)
        t *= 2.0 * probes.along[None, :]
        s += t
        del t
        s += z_sq[:, None] * (probes.along * probes.along)[None, :]
        s *= (probes.inv_norm * probes.inv_norm)[None, :]
    xp.subtract(probes.sqnorm[None, :], s, out=s)


def _unrefined_e2(xp: ModuleType, probes: ProbeBlock, gallery: GalleryBasis) -> Any:
    """``[g, ΣN]`` float64 e² of every entry of a tile before refinement: what δs bounds (tests, calibration)."""
    c, cross, z_sq = _tile_product(xp, probes, gallery, None)
    e2 = _squared_segment_sum(xp, c, gallery.offsets)
    _e2_in_place(xp, e2, cross, z_sq, probes)
    return e2


def _float64_e2(xp: ModuleType, probes: ProbeBlock, gallery: GalleryBasis) -> Any:
    """``[g, ΣN]`` e² of every entry from one float64 GEMM of the rebuilt float64 operands."""
    x64 = probes.rows64(xp.arange(probes.num_rows))
    bt64 = xp.concatenate([gallery.basis64(g) for g in range(len(gallery))])
    c = bt64 @ x64.T
    del x64, bt64
    return probes.sqnorm[None, :] - _squared_segment_sum(xp, c, gallery.offsets)


def _weighted_sums(xp: ModuleType, e: Any, probes: ProbeBlock) -> Any:
    """``[k, p]`` Σ h̃·e over each probe's locations of residuals ``e`` ``[k, R]`` (``e`` is overwritten)."""
    e *= probes.weights[None, :]
    return segment_sum(xp, e, probes.offsets, axis=1)


#: Bytes of float64 rows ``[k, ΣN]`` that :func:`_squared_segment_sum` hands to ``then`` at once: with
#: their temporaries they stay in cache, and few enough NumPy calls are made (the size is tuned with
#: ``benchmarks/bench_matching.py --breakdown``).
_ROWS_IN_CACHE_BYTES = 1 << 20


#: Levels of pairwise float32 adds before the float64 sum of each image's squared rows
#: (:func:`_add_halves`): each partial sum gathers at most 2**3 = 8 squares, with an error of at
#: most 3u of their sum (non-negative terms), which the error model of S covers. Summing in float32
#: first avoids casting every row to float64, the costly part of the pass.
SUM_LEVELS = 3


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
    :data:`SUM_LEVELS` levels, then float64), so the product is read
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
    if not is_host(xp):
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
                n = _add_halves(squares, SUM_LEVELS)
                np.add.reduce(squares[:n], axis=0, dtype=np.float64, out=out[i])
            if then is not None:
                then(i0, i1)

    if workers <= 1:
        run(0, g)
        return out
    parallel(run, [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a])
    return out
