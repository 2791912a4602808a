"""The accuracy model of the engine: its specification, the error bound, refinement, precision.

Why float32 needs a model. A tile computes e² = ‖x‖² − S with S = ‖Bt x‖²
(:mod:`reid_eval.matching.kernel.tile`). ‖x‖² − S cancels when the residual is
small, and the square root amplifies the error, so the float32 path keeps the
error of S small and knows a bound on it for every entry:

* Centring. CNN features (non-negative, post-ReLU) share a dominant
  direction. The probe blocks are split along μ, the direction of the sum of
  the normalised rows of a run's first probe block
  (:func:`~reid_eval.matching.kernel.probes.probe_centre`; every block of a
  run shares it, so each gallery block forms its centre terms once):
  x = a·μ + x' (a = x·μ in float64). The GEMM runs on x' (float32), and
  S = ‖Bt x'‖² + 2a·(w·x') + a²‖z‖² with z = Bt μ and w = Btᵀ z formed per
  gallery image in float64 from the factor (one extra float32 GEMM row per
  gallery image for w·x'). Every float32 rounding then multiplies ‖x'‖
  instead of ‖x‖. Bt itself is formed in float64 and rounded once.
* Error bound of S. ``δs = κ·u·(0.7·√d + √M + 7)·‖x‖·‖x'‖`` (u = 2⁻²⁴;
  GEMM accumulation, rounding of the operands, the float32 cross term,
  squares and their pairwise float32 sums (at most 3u, see
  :data:`~reid_eval.matching.kernel.tile.SUM_LEVELS`); ‖x'‖ floored at
  :data:`ACROSS_FLOOR`·‖x‖ for the float64 rounding that remains), with
  κ = :data:`ERROR_KAPPA` (:func:`error_bound_s`). The margin of κ over the
  worst measured error on Gaussian, ReLU, coherent, duplicate and in-span
  features is what ``python benchmarks/bench_matching.py --calibrate``
  measures; it must stay above 1.
* The factor's rounding, in every precision. Bt = Fᵀ Y is only as exact as
  the float64 factor, whose relative error grows with the condition number
  of G + βI, at most 1 + tr(G)/β; with unnormalised features of large
  norms (``normalize=False``) that makes ‖x‖² − S cancel even in float64
  (5 % off on a residual of 4e-4 at ‖x‖ ≈ 3e3). So every entry's bound also
  has ``δs₆₄ = κ·u₆₄·(0.7·√d + √M + 7)·(1 + tr(G)/β)·‖x‖²`` (u₆₄ = 2⁻⁵³,
  :func:`factor_bound_factors`; :func:`total_error_bound_s` is the sum),
  and float64 tiles are checked too. Normalised rows (tr(G) = M) keep it
  far below ``float32_atol`` except at residuals near 0.
* Error of a distance. From |ê² − e²| ≤ δs, the error of an entry's e is at
  most δe = δs / (ê + √(ê² − δs)) (no bound when ê² ≤ δs), and a pair's
  distance Σ h̃ e errs by at most Σ h̃ δe (:func:`weighted_error_bounds`).
* Refinement. A pair whose sum is within ``float32_atol``
  (:data:`DEFAULT_FLOAT32_ATOL`, so every distance is within 1e-5 of the
  float64 definition after its own float32 rounding) keeps its float32
  entries; in the other pairs the entries with the largest h̃ δe are
  recomputed in float64, as few as bring the sum of the rest within
  ``float32_atol`` (:func:`entries_to_refine`, :func:`refine`: the residual
  formed as a vector in float64, X − Cᵀ Y with C = (Y Yᵀ + βI)⁻¹ Y Xᵀ, so
  nothing cancels whatever the norms). When more than
  :data:`TILE_FLOAT64_SHARE` of a float32 tile's entries need it, the
  whole tile is recomputed by one float64 GEMM instead, and the entries
  whose δs₆₄ is still too large by :func:`refine`. Which entries are refined,
  and whether a tile goes float64, depends only on the tile's data, never on
  timing: the same blocks give the same bits. :class:`RefinementStats`
  counts them (the refined share).
* TF32 operands (``"tf32x3"``). The same centred float32 operands, each
  split into two TF32 parts and multiplied by three TF32 products in one
  GEMM of depth 3d (:mod:`reid_eval.matching.kernel.tf32`), so that a GPU
  runs the tile on its tensor cores. The split drops at most about
  3·2⁻²²·|a·b| of each product: :data:`TF32X3_SPLIT` units of u more in
  the bound of S, ``δs = κ·u·(0.7·√d + √M + 7 + 12)·‖x‖·‖x'‖``; refinement
  and everything after are those of float32 (the distances are float32).
  On the NumPy backend the same split operands run in a float32 GEMM,
  which computes the same exact products (the tests' emulation, and
  ``--calibrate``'s); on a GPU the accumulation is the tensor cores' own
  float32 adds, whose rounding the emulation does not reproduce, so
  ``benchmarks/device_check.py`` measures the contract there.
* Precision policy. ``"float32"``, ``"float64"`` and ``"tf32x3"`` are taken
  as given; ``"auto"`` is decided here once per run
  (:func:`resolve_precision`): float32 on a CPU, and on a GPU from the
  measured GEMM times of each precision (:func:`gemm_times`,
  :func:`precision_for_times`): float64 where its GEMM is about as fast as
  the fastest of the others (:data:`AUTO_FLOAT64_RATIO`), since there the
  bound and refinement cost more than they save, else the faster of
  float32 and tf32x3.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from reid_eval.matching.kernel.backend import is_host, segment_sum, to_numpy
from reid_eval.matching.kernel.tf32 import tensor_cores
from reid_eval.matching.kernel.threads import blas_threads, parallel

if TYPE_CHECKING:
    from reid_eval.matching.kernel.gallery import GalleryBasis
    from reid_eval.matching.kernel.probes import ProbeBlock

__all__ = [
    "ERROR_KAPPA",
    "TILE_FLOAT64_SHARE",
    "DEFAULT_FLOAT32_ATOL",
    "AUTO_FLOAT64_RATIO",
    "TF32X3_SPLIT",
    "PRECISIONS",
    "RefinementStats",
    "check_precision",
    "resolve_precision",
    "precision_for_times",
    "gemm_times",
    "operand_depth",
    "error_bound_s",
    "weighted_error_bounds",
    "factor_bound_factors",
    "total_error_bound_s",
    "entries_to_refine",
    "refine",
]

#: Constant κ of the float32 error model of S (module docstring).
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
#: Floor of ‖x'‖ relative to ‖x‖ in the bound: rows along μ keep the float64 rounding.
ACROSS_FLOOR = 1e-4
#: The operand precisions a tile computes in.
PRECISIONS = ("float32", "float64", "tf32x3")
#: Units of u = 2⁻²⁴ the TF32 split adds to the bound of S: the dropped lo·lo and the two parts'
#: remainders, each at most 2⁻²²·|a·b| (module docstring).
TF32X3_SPLIT = 12.0
_U32 = 2.0**-24
_U64 = 2.0**-53


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


def check_precision(precision: str) -> None:
    """ValueError unless ``precision`` is one of :data:`PRECISIONS` (``"auto"`` is resolved before)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def operand_depth(precision: str) -> int:
    """Values per feature element in the GEMM operands: 3 for ``"tf32x3"`` (its TF32 parts), else 1."""
    return 3 if precision == "tf32x3" else 1


#: ``precision="auto"`` computes in float64 on a device whose float64 GEMM
#: takes at most this many times the fastest other precision's (H100/H200-class
#: GPUs, ~1× float32): there the float32 path's error bound and refinement
#: cost more than they save. CPUs and most GPUs (2× to 64×) get float32 or tf32x3.
AUTO_FLOAT64_RATIO = 1.3
_gemm_times: dict[tuple[str, int], dict[str, float]] = {}


def gemm_times(xp: ModuleType) -> dict[str, float]:
    """Seconds of one square GEMM in each of :data:`PRECISIONS` on this device, measured once per device.

    Square GEMMs of 1024 (CPU) or 4096 (GPU), best of three after a
    warm-up; tf32x3 as the engine runs it (depth 3n, on the tensor cores
    where there are any).
    """
    key = ("numpy", 0) if is_host(xp) else ("cupy", int(xp.cuda.Device().id))
    if key not in _gemm_times:
        n = 1024 if is_host(xp) else 4096
        sync = (lambda: None) if is_host(xp) else xp.cuda.Device().synchronize
        times = {}
        for precision in PRECISIONS:
            dtype = xp.float64 if precision == "float64" else xp.float32
            a = xp.ones((n, n * operand_depth(precision)), dtype=dtype)
            runs = []
            with tensor_cores(xp, precision == "tf32x3"):
                for _ in range(4):  # the first is a warm-up
                    sync()
                    t0 = time.perf_counter()
                    a @ a.T
                    sync()
                    runs.append(time.perf_counter() - t0)
            times[precision] = max(min(runs[1:]), 1e-9)
        _gemm_times[key] = times
    return dict(_gemm_times[key])


def precision_for_times(times: dict[str, float]) -> str:
    """The precision ``"auto"`` picks on a device whose GEMMs take ``times`` seconds (keys of :data:`PRECISIONS`).

    The faster of float32 and tf32x3 (float32 on a tie: no split), unless
    float64 takes at most :data:`AUTO_FLOAT64_RATIO` times that.
    """
    fastest = "tf32x3" if times["tf32x3"] < times["float32"] else "float32"
    return "float64" if times["float64"] <= AUTO_FLOAT64_RATIO * times[fastest] else fastest


def resolve_precision(precision: str, xp: ModuleType) -> str:
    """One of :data:`PRECISIONS`: ``precision`` itself, or for ``"auto"`` the fastest on this device.

    On a GPU (CuPy) from the measured :func:`gemm_times`; on a CPU always
    float32, without timing anything: CPU vector units run float64 at half
    the float32 rate and have no tensor cores (tf32x3 is 3× the float32
    work there), and a timing on a shared machine could flip the choice
    (and with it the bits of a resumed matrix) at random.
    """
    if precision == "auto":
        return "float32" if is_host(xp) else precision_for_times(gemm_times(xp))
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or 'auto', got {precision!r}")
    return precision


def residuals(xp: ModuleType, e2: Any) -> Any:
    """ê = √max(e², 0) of float64 residuals ``e2`` ``[k, R]``: a new ``[k, R]`` array."""
    e = xp.maximum(e2, 0.0)
    xp.sqrt(e, out=e)
    return e


def bound_factors(d: int, gallery_counts: np.ndarray, tf32: bool = False) -> np.ndarray:
    """``[g]`` host float64 κ·u·(0.7·√d + √M + 7 (+ 12 for TF32 parts)): the per-gallery-image factor of δs.

    ``d``: the feature dimension (not the 3d depth of split operands); see the module docstring.
    """
    split = TF32X3_SPLIT if tf32 else 0.0
    return ERROR_KAPPA * _U32 * (0.7 * math.sqrt(d) + np.sqrt(gallery_counts) + 7.0 + split)


def bound_scale(xp: ModuleType, probes: ProbeBlock) -> Any:
    """``[R]`` float64 per-location factor of δs: ‖x‖·‖x'‖ (‖x'‖ floored), or ‖x‖² uncentred."""
    if probes.across is None:
        return probes.sqnorm
    # ‖x‖·‖x'‖, floored for rows along μ (x' = 0), where only float64 rounding remains.
    norm = xp.sqrt(probes.sqnorm)
    return norm * xp.maximum(probes.across, ACROSS_FLOOR * norm)


def error_bound_s(xp: ModuleType, probes: ProbeBlock, gallery_counts: np.ndarray) -> Any:
    """``[g, R]`` float64 δs: bound on |float32 S − exact S| of each entry (module docstring)."""
    factors = bound_factors(probes.local.shape[1], gallery_counts, probes.tf32)
    return xp.asarray(factors)[:, None] * bound_scale(xp, probes)[None, :]


def factor_bound_factors(xp: ModuleType, gallery: GalleryBasis) -> Any:
    """``[g]`` float64 κ·u₆₄·(0.7·√d + √M + 7)·(1 + tr(G)/β): the per-image factor of δs₆₄ (module docstring).

    tr(G) = Σ‖y‖² over the image's rows as the basis was made from them
    (M when normalised; ``gallery.traces``, made with the basis); 1 + tr(G)/β
    bounds the condition number of G + βI.
    """
    counts = np.diff(gallery.offsets)
    d = int(gallery.local.shape[1])
    base = xp.asarray(ERROR_KAPPA * _U64 * (0.7 * math.sqrt(d) + np.sqrt(counts) + 7.0))
    return base * (1.0 + gallery.traces / gallery.beta)


def total_error_bound_s(xp: ModuleType, probes: ProbeBlock, gallery: GalleryBasis) -> Any:
    """``[g, R]`` float64 δs + δs₆₄: the operands' rounding (float32 and tf32x3 only) and the factor's (always)."""
    ds = xp.asarray(factor_bound_factors(xp, gallery))[:, None] * probes.sqnorm[None, :]
    if probes.x.dtype == xp.float32:
        ds += error_bound_s(xp, probes, np.diff(gallery.offsets))
    return ds


def weighted_error_bounds(xp: ModuleType, e2: Any, e: Any, ds: Any, weights: Any) -> Any:
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


def entries_to_refine(xp: ModuleType, e2: Any, pair: Any, probes: ProbeBlock, gallery: GalleryBasis, atol: float,
                      ds: Any = None) -> Any:
    """``[g, R]`` bool: the entries of ``e2`` ``[g, R]`` to recompute by :func:`refine`.

    ``pair`` ``[g, p]``: each distance's error bound Σ h̃ δe
    (:func:`weighted_error_bounds`), some above ``atol``. Pairs within
    ``atol`` keep every entry; in the others the entries with the largest
    h̃ δe are refined, as few as leave the sum of the rest within ``atol``.
    ``ds``: the δs of ``e2``'s entries (default :func:`total_error_bound_s`).
    """
    e = residuals(xp, e2)
    ds = total_error_bound_s(xp, probes, gallery) if ds is None else ds
    contrib = weighted_error_bounds(xp, e2, e, ds, probes.weights)
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


def refine(xp: ModuleType, e2: Any, flagged: Any, probes: ProbeBlock, gallery: GalleryBasis) -> int:
    """Recompute the flagged entries of ``e2`` ``[g, R]`` from the residual vector in float64; returns their number.

    For each gallery image with flagged entries, over its k flagged probe
    locations X ``[k, d]``: C = (Y Yᵀ + βI)⁻¹ Y Xᵀ ``[M, k]`` and
    e² = ‖X − Cᵀ Y‖² row by row. The residual is formed as a vector, so
    nothing cancels however large the norms (the fast form ‖x‖² − ‖Bt x‖²
    loses ‖x‖²·u₆₄·cond(G + βI) even in float64). On a CPU the images are
    spread over threads, each with one BLAS thread. Every image's entries
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
        y = gallery.rows64(g)  # [M, d]
        ridge = y @ y.T
        ridge[xp.arange(ridge.shape[0]), xp.arange(ridge.shape[0])] += gallery.beta
        coef = xp.linalg.solve(ridge, y @ x64.T)  # [M, k]
        r = x64 - coef.T @ y  # [k, d] residual vectors
        e2[g, cols] = (r * r).sum(axis=1)

    pieces = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    workers = min(len(pieces), os.cpu_count() or 1) if is_host(xp) else 1
    with blas_threads(1):
        if workers > 1:
            parallel(run, pieces)
        else:
            for a, b in pieces:
                run(a, b)
    return n
