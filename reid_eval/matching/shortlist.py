"""The shortlist path: exact distances for each probe's K nearest gallery images by a global metric.

For each probe, FPR is computed only for the K gallery images nearest by
``shortlist_metric`` on the global features (the authors' code re-ranks
K = 100); every other entry of its row holds ``max(its shortlisted FPR) + 1 + r``
where r = 0, 1, ... is its rank by global distance among the rest, so every row
ranks the shortlist by FPR first and the rest in global order behind it
(those values are ranks, not distances).

The unit of work (and of resume) is one probe pass of a
:class:`~reid_eval.matching.plan.ShortlistPlan` against one gallery block
(:func:`shortlist_units`): each gallery image meets the probes of the pass
that shortlist it where their rows lie (:func:`~reid_eval.matching.kernel.fpr_pairs`,
no copies). :func:`run_shortlist` is the loop both drivers use, in memory
and streamed from the cache.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from reid_eval.matching.global_distance import global_distances
from reid_eval.matching.kernel import GalleryBasis, ProbeBlock, RefinementStats, TileWorkspace, fpr_pairs, to_numpy
from reid_eval.matching.kernel.accuracy import DEFAULT_FLOAT32_ATOL
from reid_eval.matching.loop import ProgressCounter, TileJob, prepare_gallery_block, prepare_probe_block, shared_centre
from reid_eval.matching.plan import GATHER_MAX_ROWS
from reid_eval.matching.tile_store import TileStore

__all__ = ["pick_shortlist", "shortlist_units", "fpr_shortlist_pass", "run_shortlist", "behind_the_shortlist"]


def pick_shortlist(probe_global: np.ndarray, gallery_global: np.ndarray, k: int, metric: str, chunk_rows: int,
                   rest_rank: np.ndarray) -> np.ndarray:
    """``[P, K]`` gallery indices of each probe's K nearest by ``metric``; the rest's ranks into ``rest_rank``.

    ``probe_global`` ``[P, d']``, ``gallery_global`` ``[G, d']``; ``rest_rank``
    ``[P, G]`` (float32 or float64) receives, at each gallery image outside
    a probe's shortlist, its rank r among the rest (0, 1, ...), and 0 in the
    shortlisted slots (every entry is written: ``rest_rank`` may come from
    ``np.empty``). Probe rows are
    taken ``chunk_rows`` at a time (distances and their argsort are
    ``[chunk_rows, G]``).
    """
    n_probe, n_gallery = probe_global.shape[0], gallery_global.shape[0]
    short = np.empty((n_probe, k), dtype=np.int64)
    ranks = np.arange(n_gallery - k, dtype=rest_rank.dtype)
    for a in range(0, n_probe, chunk_rows):
        b = min(n_probe, a + chunk_rows)
        order = np.argsort(global_distances(probe_global[a:b], gallery_global, metric=metric), axis=1, kind="stable")
        short[a:b] = order[:, :k]
        np.put_along_axis(rest_rank[a:b], order[:, k:], np.broadcast_to(ranks, (b - a, n_gallery - k)), axis=1)
        # The shortlisted slots get their exact distances later, but behind_the_shortlist reads whole
        # rows first: uninitialised bytes there (a signalling NaN) would raise a spurious cast warning.
        np.put_along_axis(rest_rank[a:b], order[:, :k], 0, axis=1)
        del order
    return short


def behind_the_shortlist(out: np.ndarray, short: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """The finished ``[P, G]`` matrix from ``out`` holding the rest's ranks (:func:`pick_shortlist`), in place.

    ``short`` ``[P, K]``, ``exact`` float64 ``[P, K]``: the shortlisted
    distances. Every rank r becomes ``max(exact of its row) + 1 + r`` (in
    float64, then the matrix's dtype), and the shortlist its exact distances.
    """
    top = exact.max(axis=1) + 1.0
    for p in range(out.shape[0]):
        out[p] = (top[p] + out[p].astype(np.float64)).astype(out.dtype)
    np.put_along_axis(out, short, exact.astype(out.dtype), axis=1)
    return out


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
    gather_rows: int = GATHER_MAX_ROWS,
) -> None:
    """Exact distances of one pass of probes to the gallery images that shortlist them, into ``exact``.

    probes: the prepared probe images ``probe_start ... probe_start + p``;
    shortlist: host int ``[P, K]`` gallery indices per probe (every probe);
    gallery_blocks: ``[(start, stop)]`` image ranges covering the gallery;
    gallery_basis(start, stop): the prepared basis of one range (called at
    most once per range, only for ranges some probe of the pass shortlists);
    exact: float64 ``[P, K]``, the pass's pairs filled in place.
    Each gallery image meets the probes of the pass that shortlist it in one
    :func:`fpr_pairs` call (at most ``gather_rows`` probe rows per GEMM,
    gathered into a workspace of the calling thread's own); ``map_fn`` (e.g.
    a thread pool's ``map``, each thread on one BLAS thread) runs those
    calls. ``blocks``: the indices of
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
    local = threading.local()  # one workspace per thread of map_fn, reused by its calls

    def workspace() -> TileWorkspace:
        if not hasattr(local, "workspace"):
            local.workspace = TileWorkspace()
        return local.workspace
    for bi in range(len(gallery_blocks)) if blocks is None else blocks:
        ga, gb = gallery_blocks[bi]
        pairs = units[bi]
        counts = RefinementStats()
        flops = 0.0
        if pairs.size:
            basis = gallery_basis(ga, gb)
            if probes.centre is not None:
                basis.centre_terms(probes.centre)  # once, before the threads share the basis
            groups = np.split(pairs, np.flatnonzero(np.diff(g_of[pairs])) + 1)

            def run(group: np.ndarray) -> float:
                g = int(g_of[group[0]]) - ga
                images = group // k - probe_start
                mine = RefinementStats()
                exact.reshape(-1)[group] = to_numpy(fpr_pairs(probes, basis, g, images, float32_atol=float32_atol,
                                                              stats=mine, workspace=workspace(),
                                                              gather_rows=gather_rows))
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


def run_shortlist(job: TileJob, short: np.ndarray, exact: np.ndarray, runner: Any, store: TileStore | None,
                  progress: ProgressCounter | None = None) -> tuple[RefinementStats, int]:
    """The exact distances of every shortlisted pair of ``job``'s plan into ``exact`` ``[P, K]`` float64.

    Pass by pass: each probe pass is prepared once, its units already
    committed to ``store`` are restored, the others computed by
    :func:`fpr_shortlist_pass` on ``runner``'s ``mapper`` and committed to
    ``store`` (None: in memory, nothing committed). Returns (the refinement
    counts of every unit, units restored). A committed unit is restored only
    when it passes its record (:meth:`TileStore.load`); one that fails is
    computed with the others. Every pass is split along one centre
    (:func:`~reid_eval.matching.loop.shared_centre`): ``job.centre`` when
    given, else the first pass's own, taken from its preparation (read
    separately only when that pass is restored whole).
    """
    plan = job.plan
    several = len(plan.probe_blocks) > 1 and job.settings.precision != "float64"
    flat_exact = exact.reshape(-1)
    committed = store.done() if store is not None else set()
    refinement, resumed = RefinementStats(), 0
    with runner.mapper() as map_fn, job.source.open() as reader:

        def gallery_basis(ga: int, gb: int) -> GalleryBasis:
            return prepare_gallery_block(job, reader, plan.gallery_blocks.index((ga, gb)))

        for pi, (pa, pb) in enumerate(plan.probe_blocks):
            todo = []
            for gi, pairs in enumerate(shortlist_units(short, pa, pb - pa, plan.gallery_blocks)):
                unit = store.load(gi, pi, (pairs.size,), exact.dtype) if (gi, pi) in committed else None
                if unit is None:
                    todo.append(gi)
                    continue
                flat_exact[pairs] = unit.values
                resumed += 1
                refinement.merge(unit.counts)
                if progress is not None:
                    progress.add_resumed(int(pairs.size))
            if progress is not None:
                progress.report()
            if not todo:
                continue

            def unit_done(gi: int, pairs: np.ndarray, flops: float, counts: RefinementStats, pi: int = pi) -> None:
                if store is not None:
                    store.commit(gi, pi, flat_exact[pairs], counts)
                if progress is not None:
                    progress.add_computed(int(pairs.size), flops)

            if several and job.centre is None and pi > 0:  # the first pass was restored whole
                job = replace(job, centre=shared_centre(job.source, job.settings, plan))
            probes = prepare_probe_block(job, reader, pi)
            if several and job.centre is None:  # the first pass, on its own centre: every pass shares it
                job = replace(job, centre=np.asarray(to_numpy(probes.centre), dtype=np.float64))
            fpr_shortlist_pass(probes, pa, short, plan.gallery_blocks, gallery_basis, exact,
                               float32_atol=job.settings.float32_atol, stats=refinement, map_fn=map_fn, blocks=todo,
                               block_done=unit_done, gather_rows=plan.gather_rows)
            del probes
    return refinement, resumed
