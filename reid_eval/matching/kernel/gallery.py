"""Gallery blocks: the stacked basis rows Bt of every gallery image, and their centre terms.

:func:`prepare_gallery` builds a :class:`GalleryBasis` (the basis form of
:mod:`reid_eval.matching.definition`: Gram matrix, factor, ``Bt = Fᵀ Y`` in
float64, the operand rounded once).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from reid_eval.features.spatial import SpatialFeatures
from reid_eval.matching.definition import DEFAULT_BETA, basis_factor
from reid_eval.matching.kernel.accuracy import check_precision
from reid_eval.matching.kernel.backend import get_array_module, is_host, large_empty, module_of, to_numpy
from reid_eval.matching.kernel.checks import check_counts, check_gathered, check_rows
from reid_eval.matching.kernel.tf32 import GALLERY_PARTS, stack_operand
from reid_eval.matching.kernel.threads import CHUNK_ROWS, blas_threads, over_chunks, parallel
from reid_eval.matching.kernel.workspace import TileWorkspace

__all__ = ["GalleryBasis", "prepare_gallery"]

# Guards GalleryBasis centre-term caches: the threads of a shortlist pass share one basis.
_centre_lock = threading.Lock()


@dataclass(frozen=True)
class GalleryBasis:
    """Prepared gallery images: the stacked basis rows Bt of every image.

    bt: ``[R, d]`` GEMM operand (float32 or float64), or with ``tf32`` ``[R, 3d]``
        the TF32 parts of the float32 one (gallery order,
        :func:`~reid_eval.matching.kernel.tf32.stack_operand`).
    local: ``[R, d]`` float32 input rows; inv_norm: ``[R]`` float64 row scales.
    factor: ``[Σ M², ]`` float64 Fᵀ of each image (Bt = Fᵀ Y of the
        normalised rows), flattened image by image (``factor_offsets``
        ``[g+1]`` host); the float64 Bt rebuilt from it refines small residuals.
    offsets: host int64 ``[g+1]`` image boundaries in the rows.
    tf32: whether ``bt`` holds TF32 parts (precision ``"tf32x3"``).
    beta: the ridge β the factor was made with (the direct residual of
        :func:`~reid_eval.matching.kernel.accuracy.refine` needs it).
    traces: ``[g]`` float64 tr(G) = Σ‖y‖² of each image's rows as the basis
        was made from them (M when normalised), for the factor's error bound
        (:func:`~reid_eval.matching.kernel.accuracy.factor_bound_factors`).
    """

    bt: Any
    local: Any
    inv_norm: Any
    factor: Any
    factor_offsets: np.ndarray
    offsets: np.ndarray
    tf32: bool = False
    beta: float = DEFAULT_BETA
    traces: Any = None
    _centre_cache: dict[bytes, tuple[Any, Any]] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def centre_terms(self, centre: Any) -> tuple[Any, Any]:
        """``(w [g, d] float32, ‖z‖² [g] float64)`` of every image for the probe centre ``centre`` ``[d]``.

        With ``tf32``, w is ``[g, 3d]``: its TF32 parts, in the order of ``bt``.

        z = Bt μ and w = Btᵀ z (:mod:`~reid_eval.matching.kernel.accuracy`, "Centring"), from the
        float64 factor and rows. Kept for the last centre asked for: the
        probe blocks of one run share their centre (:func:`prepare_probes`),
        so a gallery block computes them once for all its tiles.
        """
        key = to_numpy(centre).tobytes()
        with _centre_lock:
            terms = self._centre_cache.get(key)
            if terms is None:
                terms = _centre_terms(module_of(self.bt), self, centre)
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
            tf32=self.tf32, beta=self.beta, traces=self.traces[g : g + 1],
        )

    def rows64(self, g: int) -> Any:
        """``[M, d]`` float64 rows Y of image ``g`` as the basis was made from them (normalised, or as given)."""
        a, b = int(self.offsets[g]), int(self.offsets[g + 1])
        return self.local[a:b].astype(self.inv_norm.dtype) * self.inv_norm[a:b][:, None]

    def basis64(self, g: int) -> Any:
        """``[M, d]`` float64 rows of Bt of image ``g`` (for refinement)."""
        a, b = int(self.offsets[g]), int(self.offsets[g + 1])
        m = b - a
        y = self.rows64(g)
        factor = self.factor[int(self.factor_offsets[g]) : int(self.factor_offsets[g + 1])].reshape(m, m)
        return factor @ y


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
    check_precision(precision)
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    check_counts(features, "gallery", index_base)
    local = xp.asarray(features.local)
    n_rows, d = local.shape
    dtype = xp.float64 if precision == "float64" else xp.float32
    tf32 = precision == "tf32x3"
    bt = large_empty(xp, (n_rows, 3 * d if tf32 else d), dtype)
    inv_norm = xp.empty(n_rows, dtype=xp.float64)
    counts = features.counts
    factor_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts * counts, out=factor_offsets[1:])
    factor = xp.empty(int(factor_offsets[-1]), dtype=xp.float64)
    traces = xp.empty(len(counts), dtype=xp.float64)
    starts = features.offsets[:-1]
    workers = min(len(counts), os.cpu_count() or 1) if is_host(xp) else 1
    jobs: list[tuple[int, np.ndarray]] = []
    for m in np.unique(counts):
        members = np.flatnonzero(counts == m)
        # Equal batches of at most ~2048 rows, their number a multiple of the
        # workers, so that no thread is left with a short last batch.
        n_batches = workers * math.ceil(members.size * int(m) / (2048 * workers))
        per_batch = max(1, math.ceil(members.size / n_batches))
        jobs += [(int(m), members[b0 : b0 + per_batch]) for b0 in range(0, members.size, per_batch)]

    scratch = threading.local()  # each thread's float64 batch buffers, reused by its batches

    def run(job: tuple[int, np.ndarray]) -> None:
        m, batch = job
        k = batch.size
        if not hasattr(scratch, "workspace"):
            scratch.workspace = TileWorkspace()
        if batch[-1] - batch[0] == k - 1:  # consecutive images: a slice, no gather
            rows = slice(int(starts[batch[0]]), int(starts[batch[0]]) + k * m)
        else:
            rows = xp.asarray((starts[batch][:, None] + np.arange(m)[None, :]).reshape(-1))
        y64 = scratch.workspace.array(xp, (k * m, d), xp.float64, slot="rows").reshape(k, m, d)
        y64[...] = local[rows].reshape(k, m, d)  # cast into warm memory: a fresh buffer per batch costs more
        raw = y64 @ y64.transpose(0, 2, 1)  # Gram of the raw rows, float64
        sq = xp.diagonal(raw, axis1=1, axis2=2).reshape(-1)
        if isinstance(rows, slice):
            check_rows(xp, sq, rows.start, features, "gallery", index_base, normalize)
        else:
            check_gathered(xp, sq, batch, m, features, index_base, normalize)
        inv = (1.0 / xp.sqrt(sq) if normalize else xp.ones_like(sq)).reshape(k, m)
        # Gram of the normalised rows, its factor Fᵀ, and
        # Bt = Fᵀ diag(inv) Y_raw, all in float64; the float32 operand is
        # Bt rounded once (a relative u/2 per element whatever M and the
        # size of Fᵀ; a float32 product here would add an error growing
        # with M that the error model of S does not cover).
        factor_t = basis_factor(xp, raw * inv[:, :, None] * inv[:, None, :], beta)  # [k, M, M]
        coef = factor_t * inv[:, None, :]
        basis = scratch.workspace.array(xp, (k * m, d), xp.float64, slot="basis")
        xp.matmul(coef, y64, out=basis.reshape(k, m, d))
        bt[rows] = stack_operand(xp, basis.astype(xp.float32), GALLERY_PARTS) if tf32 else basis
        inv_norm[rows] = inv.reshape(-1)
        traces[xp.asarray(batch)] = (sq.reshape(k, m) * inv * inv).sum(axis=1)
        frows = (factor_offsets[batch][:, None] + np.arange(m * m)[None, :]).reshape(-1)
        factor[xp.asarray(frows)] = factor_t.reshape(-1)

    # Many small products and factorisations: one BLAS thread each,
    # and on a CPU the batches spread over Python threads (NumPy releases
    # the GIL in BLAS, LAPACK and ufunc loops). Batches write disjoint rows.
    with blas_threads(1):
        workers = min(workers, len(jobs))
        if workers > 1:
            parallel(run, [(job,) for job in jobs])
        else:
            for job in jobs:
                run(job)
    return GalleryBasis(
        bt=bt, local=local, inv_norm=inv_norm, factor=factor, factor_offsets=factor_offsets,
        offsets=features.offsets.copy(), tf32=tf32, beta=float(beta), traces=traces,
    )


def _centre_terms(xp: ModuleType, gallery: GalleryBasis, centre: Any) -> tuple[Any, Any]:
    """``w`` ``[g, d]`` float32 and ‖z‖² ``[g]`` float64 of every gallery image for probe centre μ.

    z = Bt μ ``[M]`` and w = Btᵀ z ``[d]``, from the float64 factor and rows
    (Bt = Fᵀ Y): then ‖Bt x‖² = ‖Bt x'‖² + 2a·(w·x') + a²‖z‖² for x = aμ + x'.
    """
    g, d = len(gallery), gallery.local.shape[1]
    counts = np.diff(gallery.offsets)
    w = xp.empty((g, d), dtype=xp.float64)
    z_sq = xp.empty(g, dtype=xp.float64)
    jobs: list[np.ndarray] = []
    for m in np.unique(counts):
        members = np.flatnonzero(counts == m)
        per = max(1, CHUNK_ROWS // int(m))
        jobs += [members[i : i + per] for i in range(0, members.size, per)]

    def run(i: int) -> None:
        batch = jobs[i]
        m = int(counts[batch[0]])
        k = batch.size
        rows = xp.asarray((gallery.offsets[batch][:, None] + np.arange(m)[None, :]).reshape(-1))
        y = gallery.local[rows].astype(xp.float64) * gallery.inv_norm[rows][:, None]  # [kM, d]
        frows = xp.asarray((gallery.factor_offsets[batch][:, None] + np.arange(m * m)[None, :]).reshape(-1))
        factor_t = gallery.factor[frows].reshape(k, m, m)  # Fᵀ
        z = (factor_t @ (y @ centre).reshape(k, m, 1))  # [k, M, 1]
        v = factor_t.swapaxes(1, 2) @ z  # F z
        w[xp.asarray(batch)] = (v.reshape(k, 1, m) @ y.reshape(k, m, d)).reshape(k, d)
        z_sq[xp.asarray(batch)] = (z * z).sum(axis=(1, 2))

    if is_host(xp):
        over_chunks(len(jobs), run)
    else:
        for i in range(len(jobs)):
            run(i)
    w32 = w.astype(xp.float32)
    return (stack_operand(xp, w32, GALLERY_PARTS) if gallery.tf32 else w32), z_sq
