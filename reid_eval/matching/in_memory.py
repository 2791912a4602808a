"""FPR / DSR distances of two splits held in memory: the loop of every driver, run on this thread.

:func:`fpr_distances` plans its tiles with the one memory model
(:func:`~reid_eval.matching.plan.plan_tiles`, one tile at a time) and runs
them through :func:`~reid_eval.matching.loop.run_tiles` with a
:class:`~reid_eval.matching.loop.SequentialRunner`, the caller's BLAS threads
and the ``[P, G]`` matrix as the sink; the shortlist goes through
:func:`~reid_eval.matching.shortlist.run_shortlist`. With the same plan and
one BLAS thread it gives the bits of the streamed engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reid_eval.features.spatial import SpatialFeatures
from reid_eval.matching.definition import DEFAULT_BETA
from reid_eval.matching.kernel import DEFAULT_FLOAT32_ATOL, RefinementStats
from reid_eval.matching.loop import MatrixSink, MemorySource, SequentialRunner, TileJob, run_tiles, shared_centre
from reid_eval.matching.memory import DEFAULT_MEMORY_BUDGET
from reid_eval.matching.plan import plan_shortlist, plan_tiles, shortlist_chunk_rows
from reid_eval.matching.settings import EngineSettings
from reid_eval.matching.shortlist import behind_the_shortlist, pick_shortlist, run_shortlist

__all__ = ["fpr_distances", "dsr_distances"]


def fpr_distances(
    probe: SpatialFeatures,
    gallery: SpatialFeatures,
    beta: float = DEFAULT_BETA,
    weighted: bool = True,
    backend: str = "auto",
    normalize: bool = True,
    precision: str = "auto",
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
    beta, weighted, backend, normalize, precision, float32_atol:
        the :class:`~reid_eval.matching.settings.EngineSettings` (ridge β,
        0.01 in the paper; FPR or DSR; ``"numpy"``, ``"cupy"`` or ``"auto"``;
        L2-normalise each location first, as the authors' code does;
        ``"float32"`` (every distance within ``float32_atol`` of the float64
        definition), ``"tf32x3"`` (the same contract, on TF32 tensor
        cores), ``"float64"`` or ``"auto"``, see
        :func:`~reid_eval.matching.kernel.accuracy.resolve_precision`).
    memory_budget_bytes:
        bound on the engine's working memory (tile size); results do not
        depend on it beyond GEMM rounding (BLAS may pick other kernels for
        other tile shapes).
    shortlist:
        ``K``: compute FPR only for each probe's K nearest gallery images by
        ``shortlist_metric`` on ``probe_global`` ``[P, d']`` /
        ``gallery_global`` ``[G, d']`` (:mod:`reid_eval.matching.shortlist`:
        the other entries of a row are ranks behind the shortlist, not
        distances).
    stats:
        a :class:`~reid_eval.matching.kernel.RefinementStats` updated in place
        with the number of (probe location, gallery image) entries computed
        and refined in float64 (``stats.refined_share``).

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
    if not memory_budget_bytes > 0:
        raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
    settings = EngineSettings(beta=beta, weighted=weighted, normalize=normalize, precision=precision,
                              float32_atol=float32_atol, backend=backend).resolved()
    n_probe, n_gallery = len(probe), len(gallery)
    if n_probe == 0 or n_gallery == 0:
        return np.zeros((n_probe, n_gallery), dtype=settings.out_dtype)
    source = MemorySource(probe, gallery)
    if shortlist is not None and shortlist < n_gallery:
        return _shortlisted(source, settings, int(memory_budget_bytes), shortlist, probe_global, gallery_global,
                            shortlist_metric, stats)
    plan = plan_tiles(probe.offsets, gallery.offsets, probe.dim, memory_budget_bytes=int(memory_budget_bytes),
                      concurrent_tiles=1, precision=settings.precision, strict=False)
    out = np.empty((n_probe, n_gallery), dtype=settings.out_dtype)
    job = TileJob(source, settings, plan, shared_centre(source, settings, plan))
    run_tiles(job, plan.tiles(), MatrixSink(plan, out, stats), SequentialRunner())
    return out


def _shortlisted(source: MemorySource, settings: EngineSettings, budget: int, k: int, probe_global: Any,
                 gallery_global: Any, metric: str, stats: RefinementStats | None) -> np.ndarray:
    """Shortlist path of :func:`fpr_distances` (see its docstring)."""
    probe, gallery = source.probe_features, source.gallery_features
    n_probe, n_gallery = len(probe), len(gallery)
    if k < 1:
        raise ValueError(f"shortlist must be at least 1, got {k}")
    if probe_global is None or gallery_global is None:
        raise ValueError("shortlist needs probe_global and gallery_global features")
    probe_global, gallery_global = np.asarray(probe_global), np.asarray(gallery_global)
    if probe_global.shape[0] != n_probe or gallery_global.shape[0] != n_gallery:
        raise ValueError(
            f"global features have {probe_global.shape[0]} probe / {gallery_global.shape[0]} gallery rows, "
            f"expected {n_probe} / {n_gallery}"
        )
    plan = plan_shortlist(probe.offsets, gallery.offsets, probe.dim, memory_budget_bytes=budget, concurrent_tiles=1,
                          precision=settings.precision)
    out = np.empty((n_probe, n_gallery), dtype=settings.out_dtype)
    short = pick_shortlist(probe_global, gallery_global, k, metric, shortlist_chunk_rows(budget, n_gallery), out)
    exact = np.empty((n_probe, k), dtype=np.float64)
    job = TileJob(source, settings, plan)  # every pass shares the first pass's centre (run_shortlist)
    refinement = run_shortlist(job, short, exact, SequentialRunner(), None)[0]
    if stats is not None:
        stats.merge(refinement)
    return behind_the_shortlist(out, short, exact)


def dsr_distances(probe: SpatialFeatures, gallery: SpatialFeatures, **kwargs: Any) -> np.ndarray:
    """DSR distances (Eq. 4): :func:`fpr_distances` with ``weighted=False``."""
    return fpr_distances(probe, gallery, weighted=False, **kwargs)
