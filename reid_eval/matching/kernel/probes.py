"""Probe blocks: normalised, weighted and centred probe rows, ready for a tile.

:func:`prepare_probes` turns a block of probe images into a :class:`ProbeBlock`;
:func:`probe_centre` is a block's own centre μ (the direction every probe block
of a run is split along: :mod:`reid_eval.matching.kernel.accuracy`, "Centring").
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from reid_eval.features.spatial import SpatialFeatures
from reid_eval.matching.kernel.accuracy import check_precision
from reid_eval.matching.kernel.backend import get_array_module, is_host, large_empty, module_of
from reid_eval.matching.kernel.checks import check_counts, check_rows, image_of_row
from reid_eval.matching.kernel.tf32 import PROBE_PARTS, stack_operand
from reid_eval.matching.kernel.threads import CHUNK_ROWS, over_row_ranges
from reid_eval.matching.kernel.workspace import TileWorkspace

__all__ = ["ProbeBlock", "prepare_probes", "probe_centre", "round_to_bits"]


@dataclass(frozen=True)
class ProbeBlock:
    """Prepared probe images (arrays on the backend's module).

    x: ``[R, d]`` GEMM operand. float64: the normalised rows. float32:
        r = y − α·μ for the input rows y, the part of each row across the
        block's ``centre`` μ (:mod:`~reid_eval.matching.kernel.accuracy`, "Centring").
        tf32x3: ``[R, 3d]`` the TF32 parts of that r
        (:func:`~reid_eval.matching.kernel.tf32.stack_operand`, probe order).
    local: ``[R, d]`` float32 input rows (float64 rows are rebuilt from them
        for refinement).
    inv_norm: ``[R]`` float64 scale of each row (1/‖row‖, or 1).
    sqnorm: ``[R]`` float64 ‖x‖² of the exact (float64) normalised rows.
    weights: ``[R]`` float64 h̃, summing to 1 over each image.
    offsets: host int64 ``[p+1]`` image boundaries in the rows.
    centre: ``[d]`` float64 unit vector μ (zeros if the rows sum to 0), or
        None (float64 operands).
    along: ``[R]`` float64 α ≈ y·μ (float32 operands; else None).
    across: ``[R]`` float64 ‖x − ι·α·μ‖ = ι·‖r‖, ι = ``inv_norm`` (float32
        operands; else None).
    tf32: whether ``x`` holds TF32 parts (precision ``"tf32x3"``).
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
    centre: Any = None
    along: Any = None
    across: Any = None
    row_map: np.ndarray | None = None
    tf32: bool = False

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
            xp = module_of(self.inv_norm)
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
        xp = module_of(self.inv_norm)
        rows, offsets = gather_segments(self.offsets, np.asarray(images, dtype=np.int64))
        rows_x = xp.asarray(rows)

        def pick(a: Any) -> Any:
            return None if a is None else a[rows_x]

        return ProbeBlock(
            x=self.x, local=self.local, inv_norm=pick(self.inv_norm), sqnorm=pick(self.sqnorm),
            weights=pick(self.weights), offsets=offsets, centre=self.centre, along=pick(self.along),
            across=pick(self.across), row_map=rows, tf32=self.tf32,
        )


def gather_segments(offsets: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of segments ``indices`` of ``offsets``, and the new offsets."""
    counts = np.diff(offsets)[indices]
    new = np.zeros(indices.size + 1, dtype=np.int64)
    np.cumsum(counts, out=new[1:])
    rows = np.repeat(offsets[indices] - new[:-1], counts) + np.arange(int(new[-1]))
    return rows, new


def _row_sqnorms(xp: ModuleType, rows: Any) -> Any:
    """``[L]`` float64 squared norms of float32 rows ``[L, d]`` (float64 accumulation)."""
    if is_host(xp):
        out = np.empty(rows.shape[0], dtype=np.float64)

        def run(a: int, b: int) -> None:
            # einsum casts in cache-sized chunks: no [L, d] float64 temporary.
            np.einsum("ij,ij->i", rows[a:b], rows[a:b], dtype=np.float64, out=out[a:b])

        over_row_ranges(rows.shape[0], run)
        return out
    rows64 = rows.astype(xp.float64)
    return (rows64 * rows64).sum(axis=1)


def prepare_probes(
    features: SpatialFeatures,
    *,
    weighted: bool = True,
    normalize: bool = True,
    precision: str = "float32",
    backend: str | ModuleType = "auto",
    index_base: int = 0,
    centre: Any = None,
    workspace: TileWorkspace | None = None,
) -> ProbeBlock:
    """Normalise and weight probe images for :func:`fpr_tile`.

    ``weighted=True`` uses the foreground probabilities (FPR, Eq. 5; they must
    be present, non-negative, with a positive sum per image); ``False`` gives
    every location of an image the same weight (DSR, Eq. 4). ``index_base``
    only shifts the image indices quoted in error messages.

    ``centre`` (float32 and tf32x3 operands): the ``[d]`` direction μ to split the
    rows along (:mod:`~reid_eval.matching.kernel.accuracy`, "Centring"), e.g. the first block's
    ``centre`` or :func:`probe_centre`. Blocks that share it share their
    gallery blocks' centre terms (:meth:`~reid_eval.matching.kernel.gallery.GalleryBasis.centre_terms`, then
    computed once per gallery block instead of once per tile), and take one
    pass over their rows instead of two. None: the block's own. Accuracy does
    not depend on it (the error bound uses each row's own ‖x − a·μ‖), only
    how many entries need float64 refinement.

    ``workspace``: the GEMM operand ``x`` is written into its ``"probes"``
    slot (:class:`TileWorkspace`) instead of fresh memory, so the block is
    valid only until the next call with the same workspace: for blocks
    prepared, used and dropped one after another (a fresh operand of
    hundreds of MB is faulted in page by page, which costs more than the
    arithmetic of the pass).
    """
    xp = backend if isinstance(backend, ModuleType) else get_array_module(backend)
    check_precision(precision)
    check_counts(features, "probe", index_base)
    local = xp.asarray(features.local)
    along = across = None
    tf32 = precision == "tf32x3"
    if precision != "float64":
        n_rows, d = local.shape
        out = None if workspace is None else workspace.array(xp, (n_rows, d * (3 if tf32 else 1)), xp.float32,
                                                             slot="probes")
        sq, inv_norm, x, centre, along, across = _centred_rows(xp, local, normalize, features, index_base, centre,
                                                               None if tf32 else out)
        if tf32:
            x = stack_operand(xp, x, PROBE_PARTS, out=out)
    else:
        centre = None
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
            raise ValueError(f"probe image {index_base + image_of_row(features.offsets, row)} has a negative foreground probability")
        totals = np.add.reduceat(h, features.offsets[:-1])
        if np.any(~(totals > 0)):
            i = int(np.flatnonzero(~(totals > 0))[0])
            raise ValueError(f"probe image {index_base + i} has foreground probabilities summing to 0")
        w = h / np.repeat(totals, counts)
    else:
        w = np.repeat(1.0 / counts, counts)
    return ProbeBlock(
        x=x, local=local, inv_norm=inv_norm, sqnorm=sqnorm, weights=xp.asarray(w), offsets=features.offsets.copy(),
        centre=centre, along=along, across=across, tf32=tf32,
    )


def round_to_bits(xp: ModuleType, v: Any, bits: int) -> Any:
    """``v`` (float32) rounded to ``bits`` significant bits, as float32."""
    mantissa, exponent = xp.frexp(v.astype(xp.float64))
    return xp.ldexp(xp.rint(mantissa * 2.0**bits) / 2.0**bits, exponent).astype(xp.float32)


def _centred_rows(
    xp: ModuleType, local: Any, normalize: bool, features: SpatialFeatures, index_base: int, centre: Any = None,
    out: Any = None,
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """The float32 probe operand from the input rows y ``[R, d]`` (into ``out`` when given).

    Returns ‖y‖² ``[R]`` (float64 accumulation), the row scales ι ``[R]``
    (1/‖y‖, or 1 without ``normalize``), r = y − α·μ (float32 ``[R, d]``),
    the centre μ ``[d]``, α ``[R]`` and ‖x − a·μ‖ = ι‖r‖ ``[R]`` (float64)
    for the normalised rows x = ι·y, a = ι·α. Raises ValueError (naming the
    image and location) for a NaN, infinite or, with ``normalize``, zero row.

    μ: ``centre`` rounded to 12 significant bits, or when None the direction
    of the sum of the normalised rows (:func:`_row_scales_and_centre`, one
    more pass). μ and α ≈ y·μ are rounded to 12 significant bits, so every
    product α·μ is exact in float32 and r is rounded once, by at most u·|r|:
    the split y = α·μ + r is exact up to a rounding proportional to |r|,
    whatever μ is. ι is applied to the tile's sums, not to r.

    On a CPU the pass runs over fixed chunks of :data:`CHUNK_ROWS` rows
    spread over threads, so each chunk is read from memory once and worked
    on in cache.
    """
    n_rows, d = local.shape
    if centre is None:
        sq, inv_norm, centre32 = _row_scales_and_centre(xp, local, normalize, features, index_base)
    else:
        centre = xp.asarray(centre)
        if centre.shape != (d,):
            raise ValueError(f"probe centre has shape {tuple(centre.shape)}, expected ({d},)")
        if not bool(xp.isfinite(centre).all()):
            raise ValueError("probe centre contains NaN or infinity")
        centre32 = round_to_bits(xp, centre.astype(xp.float32), 12)
        sq = inv_norm = None  # in the same pass as the centring
    if not is_host(xp):
        if sq is None:
            sq, inv_norm = _row_scales(xp, local, normalize, features, index_base)
        alpha32 = round_to_bits(xp, local @ centre32, 12)
        r = large_empty(xp, local.shape, local.dtype) if out is None else out
        xp.multiply(alpha32[:, None], centre32[None, :], out=r)
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
            for a in range(start, stop, CHUNK_ROWS):
                b = min(stop, a + CHUNK_ROWS)
                if fused:
                    _chunk_scales(local[a:b], normalize, sq[a:b], inv_norm[a:b])
                rows = r[a:b]
                alpha32[a:b] = round_to_bits(np, local[a:b] @ centre32, 12)
                np.multiply.outer(alpha32[a:b], centre32, out=rows)  # exact products
                np.subtract(local[a:b], rows, out=rows)
                np.einsum("ij,ij->i", rows, rows, out=across[a:b])

        # A zero or non-finite row only makes NaNs here; it is reported below.
        with np.errstate(invalid="ignore", over="ignore"):
            over_row_ranges(n_rows, centre)
        if fused:
            check_rows(np, sq, 0, features, "probe", index_base, normalize)
        across = np.sqrt(across.astype(np.float64))
    return sq, inv_norm, r, centre32.astype(xp.float64), alpha32.astype(xp.float64), across * inv_norm


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
    check_rows(xp, sq, 0, features, "probe", index_base, normalize)
    return sq, (1.0 / xp.sqrt(sq) if normalize else xp.ones_like(sq))


def _row_scales_and_centre(
    xp: ModuleType, local: Any, normalize: bool, features: SpatialFeatures, index_base: int
) -> tuple[Any, Any, Any]:
    """(‖y‖² ``[R]``, ι ``[R]``, μ ``[d]`` float32): a block's own centre, in one pass over its rows.

    μ is the direction of the sum of the normalised rows, rounded to 12
    significant bits (zeros if they sum to 0). On a CPU the partial sums are
    kept per chunk of :data:`CHUNK_ROWS` rows and added in chunk order, so
    μ's bits do not depend on the thread count.
    """
    n_rows, d = local.shape
    if not is_host(xp):
        sq, inv_norm = _row_scales(xp, local, normalize, features, index_base)
        total = (inv_norm.astype(xp.float32) @ local).astype(xp.float64)
    else:
        sq = np.empty(n_rows, dtype=np.float64)
        inv_norm = np.ones(n_rows, dtype=np.float64)
        starts = list(range(0, n_rows, CHUNK_ROWS))
        partial = np.empty((len(starts), d), dtype=np.float32)

        def norms(start: int, stop: int) -> None:
            for a in range(start, stop, CHUNK_ROWS):
                b = min(stop, a + CHUNK_ROWS)
                _chunk_scales(local[a:b], normalize, sq[a:b], inv_norm[a:b])
                with np.errstate(invalid="ignore", over="ignore"):
                    np.matmul(inv_norm[a:b].astype(np.float32), local[a:b], out=partial[a // CHUNK_ROWS])

        over_row_ranges(n_rows, norms)
        check_rows(np, sq, 0, features, "probe", index_base, normalize)
        total = partial.sum(axis=0, dtype=np.float64)
    norm = float(xp.sqrt((total * total).sum()))
    centre32 = round_to_bits(xp, (total / norm).astype(xp.float32), 12) if norm > 0 else xp.zeros(d, dtype=xp.float32)
    return sq, inv_norm, centre32


def probe_centre(
    features: SpatialFeatures, *, normalize: bool = True, backend: str | ModuleType = "auto", index_base: int = 0
) -> Any:
    """``[d]`` float64 centre μ that :func:`prepare_probes` would choose for ``features`` on its own.

    Pass it as ``centre`` to the other probe blocks of a run (from its first
    block, so that every way of running the tiles gets the same bits); one
    pass over the rows.
    """
    xp = backend if isinstance(backend, ModuleType) else get_array_module(backend)
    check_counts(features, "probe", index_base)
    return _row_scales_and_centre(xp, xp.asarray(features.local), normalize, features, index_base)[2].astype(xp.float64)
