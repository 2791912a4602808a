"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification
with k-reciprocal Encoding", CVPR 2017), in bounded memory.

The images. Queries and gallery images together, ``N = Q + G`` of them,
query ``i`` is image ``i``, gallery image ``j`` is image ``Q + j``. Image
``i``'s distances to all images are *column* ``i`` of
``A = [[qq, qg], [qgᵀ, gg]]``, squared and divided by that column's maximum:
``d(i, ·) = A[:, i]² / max(A[:, i]²)``, exactly as the authors' release
(``re_ranking.py``: ``np.transpose(A / np.max(A, axis=0))``, copied by
torchreid and fast-reid) reads it, so that ``exp(−d)`` below does not depend
on the metric's scale (the paper leaves the scale open). For a symmetric
metric columns and rows are the same. For one that is not (FPR reconstructs
the probe from the gallery image), this is the release's convention, kept so
that a re-ranked FPR matrix is the one those tools give: a query's
distances to the other queries are ``qq[:, i]`` (each other query
reconstructed from ``i``) and to the gallery ``qg[i, :]`` (``i`` reconstructed
from each gallery image); a gallery image's are ``qg[:, j]`` and ``gg[:, j]``
(every image reconstructed from it).

The equations (paper numbering), with ``N(i, k)`` the ``k + 1`` nearest images
of ``i`` (``i`` itself first: a distance of zero to itself) in the order
"distance, then index":

* Eq. 4, k-reciprocal neighbours: ``R(i, k) = {j ∈ N(i, k) : i ∈ N(j, k)}``.
* Eq. 5, expansion: ``R*(i, k1) = R(i, k1) ∪ R(q, k1/2)`` for every
  ``q ∈ R(i, k1)`` with ``|R(i, k1) ∩ R(q, k1/2)| > 2/3 |R(q, k1/2)|``
  (``k1/2`` rounded half to even; the release's strict ``>`` where the
  paper's text has ``≥``, to give the numbers everyone reports).
* Eq. 7, the encoding: ``V[i, j] = exp(−d(i, j))`` for ``j ∈ R*(i, k1)``,
  0 elsewhere, divided by its row sum (as the release does: every ``V`` row
  then sums to 1).
* Eq. 11, local query expansion (``k2 > 1``): ``V[i] ← mean of V[j]`` over
  ``j ∈ N(i, k2 − 1)`` (the ``k2`` nearest, ``i`` included).
* Eq. 10, Jaccard distance: ``d_J(i, j) = 1 − Σ_c min(V[i,c], V[j,c]) /
  Σ_c max(V[i,c], V[j,c])``, with ``Σ max = Σ V[i] + Σ V[j] − Σ min``.
* Eq. 12, the final distance: ``d*(i, j) = (1 − λ)·d_J(i, j) + λ·d(i, j)``
  for every query ``i`` and gallery image ``j``.

Memory. The ``N × N`` matrix is never formed (Market-1501: 19,281² float64
would be 3 GB, the gallery–gallery part alone 1 GB in float32). Its images
are read in blocks of ``block_rows`` (``gg`` may be an ``h5py.Dataset`` or a
``numpy.memmap``: only the columns of a block are read) twice: once to find
every image's ``k1 + 1`` nearest neighbours and its row maximum, once to
compute ``V`` on ``R*``, which needs distances outside the neighbour list.
``V`` is kept sparse (at most ``(k1 + 1)(k1/2 + 2)`` entries a row, in
practice a few dozen), the Jaccard sums run over its non-zero columns only,
and what stays in memory besides the ``Q × G`` input and output is
``O(N·k1·k1/2)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_K1 = 20
DEFAULT_K2 = 6
DEFAULT_LAMBDA = 0.3
#: Upper bound of k1 and k2: V holds up to (k1 + 1)(k1/2 + 2) entries per image (16 bytes each), so
#: k1 = 1000 already needs 160 GB at Market-1501's 19,281 images; the paper uses 20.
MAX_K = 1000
_BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class RerankParams:
    """The three parameters of k-reciprocal re-ranking (paper defaults)."""

    k1: int = DEFAULT_K1
    k2: int = DEFAULT_K2
    lambda_value: float = DEFAULT_LAMBDA

    def __post_init__(self) -> None:
        check_rerank_params(self.k1, self.k2, self.lambda_value)


def check_rerank_params(k1: int, k2: int, lambda_value: float) -> None:
    """ValueError naming the option when a parameter is out of range."""
    for name, v in (("k1", k1), ("k2", k2)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 1 <= v <= MAX_K:
            raise ValueError(f"--rerank-{name} must be an integer in [1, {MAX_K}], got {v!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"--rerank-lambda must be in [0, 1], got {lambda_value!r}")


class _Rows:
    """Each image's squared distances (a column of ``[[qq, qg], [qgᵀ, gg]]``, module docstring), in blocks of images."""

    def __init__(self, qg: np.ndarray, qq: Any, gg: Any) -> None:
        self.qg = qg
        # Gallery rows need qg's columns: one contiguous transposed copy instead of strided reads per block.
        self.gq = np.ascontiguousarray(qg.T)
        self.qq, self.gg = qq, gg
        self.Q, self.G = qg.shape
        self.N = self.Q + self.G

    def squared(self, a: int, b: int) -> np.ndarray:
        Q = self.Q
        out = np.empty((b - a, self.N), dtype=np.float64)
        if a < Q:
            hi = min(b, Q)
            out[: hi - a, :Q] = np.asarray(self.qq[:, a:hi]).T
            out[: hi - a, Q:] = self.qg[a:hi]
        if b > Q:
            lo, hi = max(a, Q) - Q, b - Q
            out[lo + Q - a :, :Q] = self.gq[lo:hi]
            out[lo + Q - a :, Q:] = np.asarray(self.gg[:, lo:hi]).T
        if not np.isfinite(out).all():
            bad = a + int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise ValueError(f"re-ranking: image {bad}'s distances contain NaN or infinity")
        np.multiply(out, out, out=out)
        return out


def _nearest(rows: np.ndarray, kk: int) -> np.ndarray:
    """int64 [b, kk]: each row's kk smallest entries, ordered by value then column."""
    n = rows.shape[1]
    if kk >= n:
        return np.argsort(rows, axis=1, kind="stable")
    cand = np.argpartition(rows, kk - 1, axis=1)[:, :kk]
    vals = np.take_along_axis(rows, cand, axis=1)
    cut = vals.max(axis=1)
    # argpartition may take a later column among values tied at the cut-off; those rows get a stable sort.
    tied = np.count_nonzero(rows == cut[:, None], axis=1) > np.count_nonzero(vals == cut[:, None], axis=1)
    for r in np.flatnonzero(tied):
        cand[r] = np.argsort(rows[r], kind="stable")[:kk]
        vals[r] = rows[r, cand[r]]
    order = np.lexsort((cand, vals), axis=-1)
    return np.take_along_axis(cand, order, axis=1)


def _reciprocal(nbr: np.ndarray, k: int, block: int) -> np.ndarray:
    """R(i, k) for every image: int64 [N, k+1], the members in neighbour order, -1 elsewhere."""
    fwd = nbr[:, : k + 1]
    out = np.full_like(fwd, -1)
    for a in range(0, fwd.shape[0], block):
        f = fwd[a : a + block]
        back = fwd[f]  # [b, k+1, k+1]
        ok = (back == np.arange(a, a + f.shape[0])[:, None, None]).any(axis=2)
        out[a : a + block] = np.where(ok, f, -1)
    return out


def _expanded(rk: np.ndarray, rh: np.ndarray) -> np.ndarray:
    """R*(i, k1) for a block (Eq. 5): int64 [b, W], sorted members then -1."""
    b = rk.shape[0]
    q = rk
    rhq = np.where(q[:, :, None] >= 0, rh[np.maximum(q, 0)], -1)  # [b, K1, H]
    size = np.count_nonzero(rhq >= 0, axis=2)
    common = ((rhq[:, :, :, None] == rk[:, None, None, :]) & (rhq[:, :, :, None] >= 0)).any(axis=3)
    overlap = np.count_nonzero(common, axis=2)
    take = (q >= 0) & (3 * overlap > 2 * size)
    members = np.concatenate([rk, np.where(take[:, :, None], rhq, -1).reshape(b, -1)], axis=1)
    members = np.sort(members, axis=1)
    dup = np.zeros(members.shape, dtype=bool)
    dup[:, 1:] = members[:, 1:] == members[:, :-1]
    members[dup] = -1
    return members


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every (s, l)."""
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return shift + np.arange(total, dtype=np.int64)


def k_reciprocal_rerank(
    qg: np.ndarray,
    qq: Any,
    gg: Any,
    *,
    k1: int = DEFAULT_K1,
    k2: int = DEFAULT_K2,
    lambda_value: float = DEFAULT_LAMBDA,
    block_rows: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Re-ranked [Q, G] float32 distances (module docstring for the exact rule).

    ``qg`` [Q, G] query–gallery distances (in memory); ``qq`` [Q, Q] and
    ``gg`` [G, G] distances among the queries and among the gallery images
    (``x[i, j]``: image ``i`` as the probe), any array-like whose column slices
    ``x[:, a:b]`` give NumPy arrays (``gg`` is only read a block of columns at
    a time). All distances non-negative and
    finite, smaller = more similar. ``block_rows`` bounds the rows handled at
    once (default: about 64 MiB of float64 distances); ``progress(done, total)``
    is called after each block of each of the two passes (total = 2N).
    """
    check_rerank_params(k1, k2, lambda_value)
    qg = np.asarray(qg)
    if qg.ndim != 2:
        raise ValueError(f"qg must be [Q, G], got shape {qg.shape}")
    Q, G = qg.shape
    if tuple(np.shape(qq)) != (Q, Q):
        raise ValueError(f"qq must be [{Q}, {Q}] (query–query), got {tuple(np.shape(qq))}")
    if tuple(np.shape(gg)) != (G, G):
        raise ValueError(f"gg must be [{G}, {G}] (gallery–gallery), got {tuple(np.shape(gg))}")
    if Q == 0 or G == 0:
        return np.zeros((Q, G), dtype=np.float32)
    rows = _Rows(qg, qq, gg)
    N = rows.N
    if block_rows is None:
        block_rows = max(1, _BLOCK_BYTES // (8 * N))
    k1, k2 = int(k1), int(k2)
    kk = min(k1 + 1, N)
    half = int(np.around(k1 / 2.0))
    done = 0

    # Pass 1: neighbour lists and row maxima.
    nbr = np.empty((N, kk), dtype=np.int64)
    row_max = np.empty(N, dtype=np.float64)
    for a in range(0, N, block_rows):
        b = min(N, a + block_rows)
        sq = rows.squared(a, b)
        m = sq.max(axis=1)
        row_max[a:b] = np.where(m > 0, m, 1.0)
        nbr[a:b] = _nearest(sq / row_max[a:b, None], kk)
        done += b - a
        if progress is not None:
            progress(done, 2 * N)

    rk = _reciprocal(nbr, min(k1, kk - 1), block_rows)
    rh = _reciprocal(nbr, min(half, kk - 1), block_rows)

    # Pass 2: V on R* (Eq. 5, 7), kept as padded rows.
    width = rk.shape[1] * (1 + rh.shape[1])
    v_idx = np.full((N, width), -1, dtype=np.int64)
    v_val = np.zeros((N, width), dtype=np.float64)
    exp_block = max(1, min(block_rows, 4096))
    for a in range(0, N, exp_block):
        b = min(N, a + exp_block)
        members = _expanded(rk[a:b], rh)
        sq = rows.squared(a, b) / row_max[a:b, None]
        w = np.where(members >= 0, np.exp(-np.take_along_axis(sq, np.maximum(members, 0), axis=1)), 0.0)
        w /= w.sum(axis=1, keepdims=True)
        v_idx[a:b, : members.shape[1]] = members
        v_val[a:b, : members.shape[1]] = w
        done += b - a
        if progress is not None:
            progress(done, 2 * N)

    # Eq. 11 as CSR rows (duplicates summed), or V itself.
    if k2 > 1:
        indptr, indices, data = _expand_queries(v_idx, v_val, nbr[:, : min(k2, kk)], N, block_rows)
    else:
        indptr, indices, data = _csr(v_idx, v_val)
    entry_row = np.repeat(np.arange(N, dtype=np.int64), np.diff(indptr))
    row_sum = np.bincount(entry_row, weights=data, minlength=N)

    # Gallery rows of V by column, for the Jaccard sums.
    g_lo = indptr[Q]
    g_rows = np.repeat(np.arange(Q, N, dtype=np.int64), np.diff(indptr[Q:])) - Q
    g_cols, g_vals = indices[g_lo:], data[g_lo:]
    order = np.argsort(g_cols, kind="stable")
    col_rows, col_vals = g_rows[order], g_vals[order]
    col_ptr = np.concatenate([[0], np.cumsum(np.bincount(g_cols, minlength=N))]).astype(np.int64)

    out = np.empty((Q, G), dtype=np.float32)
    q_block = max(1, min(Q, (16 * 2**20) // (8 * G)))
    for a in range(0, Q, q_block):
        b = min(Q, a + q_block)
        lo, hi = indptr[a], indptr[b]
        e_row = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(indptr[a : b + 1]))
        e_col, e_val = indices[lo:hi], data[lo:hi]
        lens = col_ptr[e_col + 1] - col_ptr[e_col]
        pos = _ranges(col_ptr[e_col], lens)
        contrib = np.minimum(np.repeat(e_val, lens), col_vals[pos])
        keys = np.repeat(e_row, lens) * G + col_rows[pos]
        min_sum = np.bincount(keys, weights=contrib, minlength=(b - a) * G).astype(np.float64).reshape(b - a, G)
        max_sum = row_sum[a:b, None] + row_sum[None, Q:] - min_sum
        jaccard = 1.0 - np.divide(min_sum, max_sum, out=np.zeros_like(min_sum), where=max_sum > 0)
        original = np.asarray(qg[a:b], np.float64) ** 2 / row_max[a:b, None]
        out[a:b] = (1.0 - lambda_value) * jaccard + lambda_value * original
    return out


def _csr(v_idx: np.ndarray, v_val: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = v_idx >= 0
    indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(keep, axis=1))]).astype(np.int64)
    return indptr, v_idx[keep], v_val[keep]


def _expand_queries(
    v_idx: np.ndarray, v_val: np.ndarray, nbr_k2: np.ndarray, N: int, block_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 11: row i becomes the mean of the V rows of its k2 nearest images; CSR, columns ascending."""
    k2 = nbr_k2.shape[1]
    counts = np.zeros(N, dtype=np.int64)
    all_cols, all_vals = [], []
    step = max(1, min(block_rows, 2048))
    for a in range(0, N, step):
        b = min(N, a + step)
        idx = v_idx[nbr_k2[a:b]].reshape(b - a, -1)
        val = v_val[nbr_k2[a:b]].reshape(b - a, -1) / k2
        row = np.broadcast_to(np.arange(b - a, dtype=np.int64)[:, None], idx.shape)
        keep = idx >= 0
        keys = row[keep] * N + idx[keep]
        uniq, inverse = np.unique(keys, return_inverse=True)
        sums = np.bincount(inverse, weights=val[keep])
        counts[a:b] = np.bincount(uniq // N, minlength=b - a)
        all_cols.append(uniq % N)
        all_vals.append(sums)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, np.concatenate(all_cols), np.concatenate(all_vals)
