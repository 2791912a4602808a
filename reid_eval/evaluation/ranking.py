"""The Market-1501 retrieval protocol: CMC, mAP and mINP from a distance matrix.

Ranking. Each query ranks the gallery by distance, ascending; equal
distances are ordered by gallery index (what a stable sort gives), so results
never depend on a sort algorithm.

Junk and matches (the official Market-1501 rules). For a query with identity
``p`` seen by camera ``c``: gallery images with pid ``p`` *and* camera ``c``
are junk, gallery images with pid ``-1`` are junk; junk is removed from the
query's ranking as if it were not there. The correct matches are the gallery
images with pid ``p`` from another camera. Everything else, distractors with
pid ``0`` included, is a wrong match (as in the official code, ids are only
compared for equality, so pid ``0`` is a wrong match for every query whose pid
is not ``0``; Market-1501 has no such query). A query without any correct match
is reported in ``valid``; how it enters the averages is part of the flavour
(below): the official code counts it as a query that scored 0, torchreid and
fast-reid leave it out.

Metrics, with ``r_0 < r_1 < ... < r_{n-1}`` the 0-based positions of the query's
``n`` correct matches among its non-junk gallery images:

* CMC: ``cmc[k]`` is the fraction of valid queries with ``r_0 <= k``;
  exactly ``max_rank`` entries (past the end of a short gallery the curve keeps
  its last value).
* AP, ``ap="standard"``: non-interpolated average precision,
  ``(1/n) * sum_i (i+1)/(r_i+1)``, as torchreid and fast-reid compute it;
  averages over the valid queries, as they do.
* AP, ``ap="market1501"``: the official Market-1501 code (``evaluation.m``
  with ``compute_AP.m``, Zheng et al., ICCV 2015) exactly. Its trapezoid
  rule: each correct match adds ``(1/n) * (p_before + p_at)/2`` with
  ``p_at = (i+1)/(r_i+1)`` the precision at the match and ``p_before = i/r_i``
  the precision one position earlier (``1`` when ``r_i == 0``). Its
  averages: CMC and mAP are divided by *all* queries, a query without a
  correct match counting 0 in both (its AP and CMC row stay 0 there); mINP,
  which the official code lacks, follows the same rule. The FPR paper (He et
  al., ICCV 2019, §4 "Evaluation Protocol") reimplemented that official code
  in Python for its tables, so this is the flavour to compare with them.
* AP, ``ap="market1501-valid"``: the same trapezoid AP averaged over the
  valid queries only (what this flavour was called ``market1501`` for before
  the official averages). It equals ``market1501`` whenever every query has
  a correct match, as on every protocol of the datasets here.
* INP (Ye et al., "Deep Learning for Person Re-identification: A Survey and
  Outlook", as in fast-reid): ``n / (r_{n-1}+1)``, the precision at the
  hardest (last) correct match; mINP is its mean.

CUHK03 classic (``single_gallery_shot=True``, as torchreid's ``eval_cuhk03`` and
open-reid's ``cmc(single_gallery_shot=True)``): for every query and each of
``repeats`` draws, one gallery image is drawn uniformly per identity (for the
query's own identity, among its correct matches; pid ``-1`` images never), the
query's rank is the number of drawn images of other identities ranked ahead of
the drawn correct match, and the CMC is averaged over queries and draws. AP and
INP stay computed on the whole gallery, as those implementations do. The draws
of query ``i`` come from ``numpy.random.default_rng([seed, i])`` (``i`` is the
query's index in the whole matrix), so results are deterministic for a seed
and do not depend on how the rows are split into blocks.

Speed. No row is sorted: a correct match's rank is the number of non-junk
gallery images ahead of it, which one comparison pass over the row per correct
match counts, and a query has few correct matches. Rows are processed in
blocks, so memory stays bounded; :func:`query_stats` on blocks of rows plus
:func:`merge_query_stats` and :func:`summarize` equal one
:func:`evaluate_ranking` call exactly, which lets a matrix too large for memory
be streamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AP_FLAVOURS = ("standard", "market1501", "market1501-valid")
#: Flavours whose averages divide by every query (a query without a correct match counts 0), as the official code.
OVER_ALL_QUERIES: frozenset[str] = frozenset({"market1501"})


def check_flavour(ap: str) -> str:
    """``ap``, or ValueError naming the choices."""
    if ap not in AP_FLAVOURS:
        raise ValueError(f"ap must be one of {', '.join(AP_FLAVOURS)}, got {ap!r}")
    return ap


def averages_over_all(ap: str) -> bool:
    """Whether flavour ``ap`` divides its averages by all queries (True) or by the valid ones (False)."""
    return check_flavour(ap) in OVER_ALL_QUERIES

# A query with more correct matches than this is ranked with one stable sort of
# its row: counting costs one pass per correct match, a sort about as much as
# a few hundred passes.
_COUNTING_MAX_GOOD = 256

#: At most this many top-ranked gallery images per query (``top_k``): they take 8 bytes each per query
#: (Market-1501: 2.7 MB at the bound), and a retrieval figure of more would be unreadable.
MAX_TOP_K = 100

# Rows per block: bounds the compacted copy of a block to about 32 MiB.
_BLOCK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class QueryStats:
    """Per-query outcome for a run of query rows; the unit of streaming.

    All arrays have one entry per query row (``n`` rows):

    - ``valid`` bool [n]: the query has at least one correct match.
    - ``num_good`` int64 [n]: its correct matches (0 where not valid).
    - ``first_rank`` int64 [n]: 0-based position of its first correct match
      among its non-junk gallery images, -1 where not valid.
    - ``ap_standard``, ``ap_market1501``, ``inp`` float64 [n]: its AP in each
      flavour and its INP, NaN where not valid.
    - ``single_shot_rank`` int64 [n, repeats] or None: the rank of the drawn
      correct match in each single-gallery-shot draw, -1 where not valid;
      None when computed without single gallery shot.
    - ``top_gallery`` int64 [n, top_k] or None: indices into the whole
      gallery of the query's first ``top_k`` non-junk gallery images in
      ranking order (the same order that gives ``first_rank``), padded with
      -1 when fewer are left; for every query, valid or not. None when
      computed with ``top_k=0``.
    """

    valid: np.ndarray
    num_good: np.ndarray
    first_rank: np.ndarray
    ap_standard: np.ndarray
    ap_market1501: np.ndarray
    inp: np.ndarray
    single_shot_rank: np.ndarray | None
    top_gallery: np.ndarray | None = None

    @property
    def num_query(self) -> int:
        return int(self.valid.shape[0])

    def ap(self, flavour: str) -> np.ndarray:
        """float64 [n]: each query's AP under ``flavour`` (its rule: the module docstring), NaN where not valid."""
        return self.ap_standard if check_flavour(flavour) == "standard" else self.ap_market1501


@dataclass(frozen=True)
class RankingResult:
    """Scores of a whole evaluation; rates are fractions in [0, 1].

    - ``cmc`` float64 [max_rank]: ``cmc[k]`` = fraction of the averaged
      queries (all of them for ``market1501``, else the valid ones) whose
      first correct match is within the top ``k+1`` (averaged over the draws
      with single gallery shot).
    - ``mAP``, ``mINP``: sums of ``ap`` and ``inp`` over ``num_averaged``
      queries (the valid queries' values; the others count 0).
    - ``ap``, ``inp`` float64 [num_valid]: per valid query, in query order.
    - ``valid`` bool [num_query]: which queries had a correct match.
    - ``first_rank`` int64 [num_valid]: 0-based rank of each valid query's
      first correct match on the whole gallery.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    ap: np.ndarray
    inp: np.ndarray
    valid: np.ndarray
    first_rank: np.ndarray
    ap_flavour: str
    num_query: int
    num_valid: int
    num_gallery: int
    single_gallery_shot: bool
    repeats: int

    @property
    def num_averaged(self) -> int:
        """The queries every average divides by: all of them (``market1501``) or the valid ones."""
        return self.num_query if averages_over_all(self.ap_flavour) else self.num_valid


def _as_ids(values: object, name: str, length: int | None = None) -> np.ndarray:
    """Return ``values`` as an int64 vector; ValueError naming ``name`` if not integers."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} has {arr.shape[0]} entries, the distance matrix needs {length}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and not arr.size:
        return arr.astype(np.int64)
    raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")


def _as_distmat(distmat: object, name: str = "distmat") -> np.ndarray:
    arr = np.asarray(distmat)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [num_query, num_gallery] array, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


class _Gallery:
    """Gallery ids, grouped once for all queries.

    Columns with pid -1 are junk for every query; they are dropped up front
    (``keep``, ascending, so gallery order and hence tie order are kept) and
    all other positions are in these compacted coordinates.
    """

    def __init__(self, g_pids: np.ndarray, g_camids: np.ndarray) -> None:
        self.num_gallery = int(g_pids.shape[0])
        keep = np.flatnonzero(g_pids != -1)
        self.keep = None if keep.size == self.num_gallery else keep
        self.pids = g_pids[keep]
        self.camids = g_camids[keep]
        # Members of each identity, ascending positions, grouped by pid.
        self.members = np.argsort(self.pids, kind="stable")
        sorted_pids = self.pids[self.members]
        self.uids, self.starts, self.counts = np.unique(sorted_pids, return_index=True, return_counts=True)

    def split(self, pid: int, camid: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Correct-match and junk positions (ascending) of a query, and its identity index (-1: none)."""
        u = int(np.searchsorted(self.uids, pid))
        if pid == -1 or u == self.uids.size or self.uids[u] != pid:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, -1
        cols = self.members[self.starts[u] : self.starts[u] + self.counts[u]]
        same_cam = self.camids[cols] == camid
        return cols[~same_cam], cols[same_cam], u


def _ranks_of_good(row: np.ndarray, good: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based positions of the correct matches among the non-junk images, ascending.

    ``row`` [G] distances of one query (pid -1 columns already removed),
    ``good`` and ``junk`` ascending positions into it. Image ``i`` is ahead of
    ``j`` when ``row[i] < row[j]``, or equal with ``i < j``.
    """
    d_good = row[good]
    if good.size <= _COUNTING_MAX_GOOD:
        ahead = np.empty(good.size, dtype=np.int64)
        for j, (g, t) in enumerate(zip(good.tolist(), d_good.tolist())):
            # Images before g tie-break ahead of it, images after it do not.
            ahead[j] = np.count_nonzero(row[:g] <= t) + np.count_nonzero(row[g + 1 :] < t)
        if junk.size:
            d_junk = row[junk]
            junk_ahead = (d_junk[None, :] < d_good[:, None]) | (
                (d_junk[None, :] == d_good[:, None]) & (junk[None, :] < good[:, None])
            )
            ahead -= np.count_nonzero(junk_ahead, axis=1)
    else:
        position = np.empty(row.shape[0], dtype=np.int64)
        position[np.argsort(row, kind="stable")] = np.arange(row.shape[0])
        ahead = position[good]
        if junk.size:
            ahead = ahead - np.searchsorted(np.sort(position[junk]), ahead)
    return np.sort(ahead)


def _top_non_junk(row: np.ndarray, junk: np.ndarray, k: int) -> np.ndarray:
    """Positions (into ``row``) of the first ``k`` non-junk images in ranking order, -1 padded; int64 [k].

    Same order as :func:`_ranks_of_good`: ascending distance, ties by position.
    """
    out = np.full(k, -1, dtype=np.int64)
    take = min(k, row.shape[0] - junk.size)
    if take <= 0:
        return out
    masked = row.astype(np.float64, copy=True)
    masked[junk] = np.inf  # distances are finite (checked), so junk sorts behind everything
    cutoff = np.partition(masked, take - 1)[take - 1]
    # Everything at or below the cut-off, ascending positions, then a stable sort by distance.
    cand = np.flatnonzero(masked <= cutoff)
    out[:take] = cand[np.argsort(masked[cand], kind="stable")[:take]]
    return out


def _single_shot_ranks(
    row: np.ndarray, good: np.ndarray, own: int, gallery: _Gallery, rng: np.random.Generator, repeats: int
) -> np.ndarray:
    """Rank of the drawn correct match in each of ``repeats`` single-gallery-shot draws, int64 [repeats]."""
    u = rng.random((repeats, gallery.uids.size))
    picks = gallery.starts + (u * gallery.counts).astype(np.int64)
    cols = gallery.members[picks]
    # The query's own identity draws among its correct matches (never its junk).
    own_cols = good[(u[:, own] * good.size).astype(np.int64)]
    cols[:, own] = own_cols
    vals = row[cols]
    own_vals = row[own_cols][:, None]
    ahead = (vals < own_vals) | ((vals == own_vals) & (cols < own_cols[:, None]))
    return np.count_nonzero(ahead, axis=1).astype(np.int64)


def _check_finite(block: np.ndarray, first_row: int) -> None:
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        bad = first_row + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
        raise ValueError(f"distmat has a NaN or infinite distance (query row {bad})")


def _stats_for_rows(
    block: np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    gallery: _Gallery,
    query_offset: int,
    single_gallery_shot: bool,
    repeats: int,
    seed: int,
    top_k: int = 0,
) -> QueryStats:
    n = block.shape[0]
    _check_finite(block, query_offset)
    if gallery.keep is not None:
        block = np.take(block, gallery.keep, axis=1)
    else:
        # Rows of a transposed (Fortran-order) matrix are strided: one bounded copy per block.
        block = np.ascontiguousarray(block)
    valid = np.zeros(n, dtype=bool)
    num_good = np.zeros(n, dtype=np.int64)
    first_rank = np.full(n, -1, dtype=np.int64)
    ap_std = np.full(n, np.nan)
    ap_mkt = np.full(n, np.nan)
    inp = np.full(n, np.nan)
    ss_rank = np.full((n, repeats), -1, dtype=np.int64) if single_gallery_shot else None
    top = np.full((n, top_k), -1, dtype=np.int64) if top_k > 0 else None
    for i in range(n):
        good, junk, own = gallery.split(int(q_pids[i]), int(q_camids[i]))
        if top is not None:
            pos = _top_non_junk(block[i], junk, top_k)
            # back to whole-gallery indices (pid -1 columns were dropped)
            top[i] = np.where(pos >= 0, pos if gallery.keep is None else gallery.keep[np.maximum(pos, 0)], -1)
        if good.size == 0:
            continue
        row = block[i]
        r = _ranks_of_good(row, good, junk)
        k = r.size
        hits = np.arange(1, k + 1, dtype=np.float64)
        precision = hits / (r + 1)
        before = np.where(r > 0, (hits - 1) / np.maximum(r, 1), 1.0)
        valid[i] = True
        num_good[i] = k
        first_rank[i] = r[0]
        ap_std[i] = precision.sum() / k
        ap_mkt[i] = ((before + precision) / 2).sum() / k
        inp[i] = k / (r[-1] + 1)
        if ss_rank is not None:
            rng = np.random.default_rng([seed, query_offset + i])
            ss_rank[i] = _single_shot_ranks(row, good, own, gallery, rng, repeats)
    return QueryStats(valid, num_good, first_rank, ap_std, ap_mkt, inp, ss_rank, top)


def _check_options(single_gallery_shot: bool, repeats: int, seed: int, top_k: int = 0) -> None:
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or not 0 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be an integer in [0, {MAX_TOP_K}], got {top_k!r}")
    if single_gallery_shot:
        if not isinstance(repeats, (int, np.integer)) or isinstance(repeats, bool) or repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def query_stats(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    *,
    query_offset: int = 0,
    single_gallery_shot: bool = False,
    repeats: int = 10,
    seed: int = 0,
    block_rows: int | None = None,
    top_k: int = 0,
) -> QueryStats:
    """Per-query ranks, AP and INP for a run of query rows (the streaming step).

    ``distmat`` [n, G] real (float32 or float64, any real dtype), the rows of
    queries ``query_offset .. query_offset+n-1`` of the whole problem;
    ``q_pids``, ``q_camids`` [n] and ``g_pids``, ``g_camids`` [G] integer ids.
    ``query_offset`` only seeds the single-gallery-shot draws, so that any
    split into blocks gives the same draws as one call. ``block_rows`` bounds
    the rows processed at once (default: about 32 MiB of distances).
    ``top_k`` > 0 also records each query's first ``top_k`` non-junk gallery
    images (``QueryStats.top_gallery``), ranked by the same rule.
    Merge the results of consecutive blocks with :func:`merge_query_stats`.
    """
    d = _as_distmat(distmat)
    nq, ng = d.shape
    qp = _as_ids(q_pids, "q_pids", nq)
    qc = _as_ids(q_camids, "q_camids", nq)
    gp = _as_ids(g_pids, "g_pids", ng)
    gc = _as_ids(g_camids, "g_camids", ng)
    _check_options(single_gallery_shot, repeats, seed, top_k)
    top_k = int(top_k)
    if block_rows is None:
        block_rows = max(1, _BLOCK_BYTES // max(1, ng * d.dtype.itemsize))
    if block_rows < 1:
        raise ValueError(f"block_rows must be positive, got {block_rows}")
    gallery = _Gallery(gp, gc)
    parts = [
        _stats_for_rows(
            d[s : s + block_rows],
            qp[s : s + block_rows],
            qc[s : s + block_rows],
            gallery,
            query_offset + s,
            single_gallery_shot,
            repeats,
            seed,
            top_k,
        )
        for s in range(0, nq, block_rows)
    ]
    if not parts:
        return _stats_for_rows(d, qp, qc, gallery, query_offset, single_gallery_shot, repeats, seed, top_k)
    return merge_query_stats(parts)


def merge_query_stats(parts: Sequence[QueryStats]) -> QueryStats:
    """Concatenate the stats of consecutive query blocks, in query order."""
    if not parts:
        raise ValueError("parts is empty: nothing to merge")
    single = [p.single_shot_rank is not None for p in parts]
    if any(single) and not all(single):
        raise ValueError("parts mix single-gallery-shot and multi-shot stats")
    if all(single) and len({p.single_shot_rank.shape[1] for p in parts}) > 1:
        raise ValueError("parts have different numbers of single-gallery-shot repeats")
    tops = [p.top_gallery for p in parts]
    if any(t is None for t in tops) and not all(t is None for t in tops):
        raise ValueError("parts mix stats with and without top_gallery")
    if tops[0] is not None and len({t.shape[1] for t in tops}) > 1:
        raise ValueError("parts have different top_k")
    return QueryStats(
        valid=np.concatenate([p.valid for p in parts]),
        num_good=np.concatenate([p.num_good for p in parts]),
        first_rank=np.concatenate([p.first_rank for p in parts]),
        ap_standard=np.concatenate([p.ap_standard for p in parts]),
        ap_market1501=np.concatenate([p.ap_market1501 for p in parts]),
        inp=np.concatenate([p.inp for p in parts]),
        single_shot_rank=np.concatenate([p.single_shot_rank for p in parts]) if all(single) else None,
        top_gallery=np.concatenate(tops) if tops[0] is not None else None,
    )


def _cmc_from_ranks(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    hist = np.bincount(np.minimum(ranks.ravel(), max_rank), minlength=max_rank + 1)[:max_rank]
    return np.cumsum(hist) / ranks.size


def summarize(stats: QueryStats, num_gallery: int, ap: str = "standard", max_rank: int = 50) -> RankingResult:
    """Turn per-query stats into CMC, mAP and mINP, averaged as flavour ``ap`` says (module docstring).

    ``num_gallery`` is only recorded in the result. Raises ValueError when no
    query has a correct match.
    """
    check_flavour(ap)
    if not isinstance(max_rank, (int, np.integer)) or isinstance(max_rank, bool) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    valid = stats.valid
    num_valid = int(np.count_nonzero(valid))
    if num_valid == 0:
        raise ValueError(
            f"no valid query: none of the {stats.num_query} queries has a correct match in the gallery "
            "(same pid from another camera); check q_pids, g_pids, q_camids and g_camids"
        )
    per_query_ap = stats.ap(ap)[valid]
    inp = stats.inp[valid]
    if stats.single_shot_rank is not None:
        cmc = _cmc_from_ranks(stats.single_shot_rank[valid], int(max_rank))
        repeats = int(stats.single_shot_rank.shape[1])
    else:
        cmc = _cmc_from_ranks(stats.first_rank[valid], int(max_rank))
        repeats = 1
    # A query left out of the valid ones counts 0 in every average over all queries.
    denominator = stats.num_query if averages_over_all(ap) else num_valid
    return RankingResult(
        cmc=cmc * (num_valid / denominator),
        mAP=float(per_query_ap.sum() / denominator),
        mINP=float(inp.sum() / denominator),
        ap=per_query_ap,
        inp=inp,
        valid=valid,
        first_rank=stats.first_rank[valid],
        ap_flavour=ap,
        num_query=stats.num_query,
        num_valid=num_valid,
        num_gallery=int(num_gallery),
        single_gallery_shot=stats.single_shot_rank is not None,
        repeats=repeats,
    )


def evaluate_ranking(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    ap: str = "standard",
    max_rank: int = 50,
    single_gallery_shot: bool = False,
    repeats: int = 10,
    seed: int = 0,
) -> RankingResult:
    """Score a query×gallery distance matrix with the Market-1501 protocol.

    ``distmat`` [num_query, num_gallery] real distances (smaller = more
    similar; float32 or float64, no NaN or inf); ``q_pids``, ``q_camids``
    [num_query] and ``g_pids``, ``g_camids`` [num_gallery] integer ids.
    ``ap`` picks the AP flavour ("standard" non-interpolated over the valid
    queries; "market1501", the official code's trapezoid rule and averages over
    all queries that the FPR paper's tables used; "market1501-valid", that AP
    over the valid queries),
    ``max_rank`` the length of the CMC curve; ``single_gallery_shot`` with
    ``repeats`` and ``seed`` selects the CUHK03 classic protocol. The exact
    rules are in this module's docstring. Raises ValueError, naming the
    argument, on shape mismatches, NaN or infinite distances, non-integer ids,
    and when no query has a correct match.
    """
    check_flavour(ap)
    if not isinstance(max_rank, (int, np.integer)) or isinstance(max_rank, bool) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    stats = query_stats(
        distmat, q_pids, g_pids, q_camids, g_camids,
        single_gallery_shot=single_gallery_shot, repeats=repeats, seed=seed,
    )
    return summarize(stats, num_gallery=np.shape(distmat)[1], ap=ap, max_rank=max_rank)
