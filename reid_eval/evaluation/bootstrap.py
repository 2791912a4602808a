"""Bootstrap confidence intervals over queries, resampling whole identities.

Why identities. A person's queries are not independent draws: they share the
person's clothing, the same gallery images and usually the same occluders,
so they succeed or fail together. Resampling single queries would treat
Market-1501's 3,368 queries as 3,368 independent trials and give intervals
that are too narrow. Each resample therefore draws, with replacement, as
many identities as the valid queries have (``n``), and takes *all* valid
queries of each drawn identity (a cluster bootstrap). A metric of a resample
is the plain mean over the queries it holds, as on the whole set, so an
identity with more queries weighs more, exactly as in the reported figure.
On the occluded sets with one query per identity (Partial-iLIDS) this is the
ordinary bootstrap over queries.

Interval. The percentile interval: the ``(1-level)/2`` and ``(1+level)/2``
quantiles (linear interpolation) of the metric over ``resamples`` resamples,
95 % and 1,000 resamples by default; seeded (``numpy.random.default_rng(seed)``),
so a rerun gives the same interval. The queries resampled are those the AP
flavour averages over: all of them for ``market1501`` (a query without a
correct match scores 0, as in the official code), the valid ones otherwise.

Paired comparison. Two results on the same queries are resampled with the
same identity draws; the interval is that of the difference A − B, and the
share of resamples with A − B > 0 says how often A beats B.

Speed. A resample is fully described by how many times it drew each identity
(``counts`` [resamples, n]); every metric is then
``(counts @ per_identity_sums) / (counts @ per_identity_query_counts)``, two
small matrix products for all metrics and all resamples at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reid_eval.evaluation.ranking import QueryStats, averages_over_all

DEFAULT_RESAMPLES = 1000
#: At most this many resamples: the draws take 16 bytes per resample and identity (Market-1501, 750
#: identities: 120 MB at the bound), and past a few thousand the percentiles no longer move.
MAX_RESAMPLES = 10_000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0


@dataclass(frozen=True)
class BootstrapIntervals:
    """Percentile intervals of several metrics (fractions), in the order of the value columns.

    ``point`` [m]: each metric on the whole set; ``low``, ``high`` [m]: the
    interval bounds; ``samples`` [resamples, m]: the metric on each resample.
    """

    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    samples: np.ndarray
    resamples: int
    seed: int
    level: float
    num_identities: int


@dataclass(frozen=True)
class PairedDifference:
    """A − B on the same queries: ``point``, ``low``, ``high`` [m] and ``share_a_better`` [m] (A − B > 0)."""

    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    share_a_better: np.ndarray
    share_tied: np.ndarray
    resamples: int
    seed: int
    level: float
    num_identities: int


def _check(resamples: int, level: float, seed: int) -> None:
    if not isinstance(resamples, (int, np.integer)) or isinstance(resamples, bool) or not 1 <= resamples <= MAX_RESAMPLES:
        raise ValueError(f"resamples must be an integer in [1, {MAX_RESAMPLES}], got {resamples!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def identity_draws(num_identities: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """int64 [resamples, num_identities]: the identity indices each resample draws (with replacement).

    The definition of the resamples: row ``b`` is resample ``b``. A plain loop
    over rows and :func:`draw_counts` give the same resamples.
    """
    _check(resamples, 0.5, seed)
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_identities, size=(int(resamples), num_identities), dtype=np.int64)


def draw_counts(draws: np.ndarray, num_identities: int) -> np.ndarray:
    """float64 [resamples, num_identities]: how often each resample drew each identity."""
    b = draws.shape[0]
    flat = (draws + (np.arange(b, dtype=np.int64) * num_identities)[:, None]).ravel()
    return np.bincount(flat, minlength=b * num_identities).reshape(b, num_identities).astype(np.float64)


def _groups(pids: np.ndarray) -> tuple[np.ndarray, int]:
    uids, codes = np.unique(np.asarray(pids), return_inverse=True)
    return codes.reshape(-1), int(uids.size)


def _per_identity(values: np.ndarray, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    sums = np.zeros((n, values.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, values)
    sizes = np.bincount(codes, minlength=n).astype(np.float64)
    return sums, sizes


def _as_values(values: np.ndarray, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if v.ndim != 2:
        raise ValueError(f"values must be [num_query, num_metrics], got shape {v.shape}")
    p = np.asarray(pids)
    if p.shape != (v.shape[0],):
        raise ValueError(f"pids has shape {p.shape}, values has {v.shape[0]} rows")
    if v.shape[0] == 0:
        raise ValueError("no valid query to resample")
    if not np.isfinite(v).all():
        raise ValueError("values contain NaN or infinity: pass the valid queries only")
    return v, p


def bootstrap_means(
    values: np.ndarray,
    pids: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> BootstrapIntervals:
    """Intervals of the means of ``values`` [num_query, m] (or [num_query]) over queries.

    ``pids`` [num_query]: the identity of each query (the resampling unit).
    Pass the valid queries only (see :func:`per_query_values`).
    """
    _check(resamples, level, seed)
    v, p = _as_values(values, pids)
    codes, n = _groups(p)
    sums, sizes = _per_identity(v, codes, n)
    counts = draw_counts(identity_draws(n, resamples, seed), n)
    samples = (counts @ sums) / (counts @ sizes)[:, None]
    alpha = (1.0 - float(level)) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha], axis=0)
    return BootstrapIntervals(v.mean(axis=0), low, high, samples, int(resamples), int(seed), float(level), n)


def paired_difference(
    values_a: np.ndarray,
    values_b: np.ndarray,
    pids: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> PairedDifference:
    """Interval of mean(A) − mean(B) for two results on the same (valid) queries, resampled together."""
    _check(resamples, level, seed)
    a, p = _as_values(values_a, pids)
    b, _ = _as_values(values_b, pids)
    if a.shape != b.shape:
        raise ValueError(f"A has shape {a.shape}, B {b.shape}: not the same queries and metrics")
    boot = bootstrap_means(a - b, p, resamples=resamples, seed=seed, level=level)
    return PairedDifference(
        boot.point, boot.low, boot.high,
        share_a_better=(boot.samples > 0).mean(axis=0),
        share_tied=(boot.samples == 0).mean(axis=0),
        resamples=boot.resamples, seed=boot.seed, level=boot.level, num_identities=boot.num_identities,
    )


def per_query_values(stats: QueryStats, ap: str = "standard", max_rank: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Per averaged query: ``values`` float64 [m, max_rank + 2] and the row mask over all queries.

    The averaged queries are those flavour ``ap`` divides by (reid_eval.evaluation.ranking):
    every query for ``market1501`` (a query without a correct match is a row of
    zeros), the valid ones otherwise. Columns ``0 .. max_rank-1``: whether the
    query's first correct match is within the top ``k+1`` (with single gallery
    shot, the share of its draws where it is), so their means are the CMC;
    column ``max_rank``: its AP in flavour ``ap``; column ``max_rank+1``: its
    INP. Means over rows equal :func:`summarize`'s ``cmc``, ``mAP`` and ``mINP``.
    """
    valid = stats.valid
    rows = np.ones_like(valid) if averages_over_all(ap) else valid
    ks = np.arange(int(max_rank))
    values = np.zeros((stats.num_query, int(max_rank) + 2), dtype=np.float64)
    if stats.single_shot_rank is not None:
        ranks = stats.single_shot_rank[valid]
        values[valid, : int(max_rank)] = (ranks[:, :, None] <= ks[None, None, :]).mean(axis=1)
    else:
        values[valid, : int(max_rank)] = stats.first_rank[valid][:, None] <= ks[None, :]
    values[valid, int(max_rank)] = stats.ap(ap)[valid]
    values[valid, int(max_rank) + 1] = stats.inp[valid]
    return values[rows], rows


def interval_record(intervals: BootstrapIntervals, max_rank: int) -> dict[str, object]:
    """The results-JSON fields of intervals from :func:`per_query_values` columns.

    ``{"cmc_ci": [[low, high], ...], "mAP_ci": [low, high], "mINP_ci": [low, high],
    "bootstrap": {...settings...}}``, fractions in [0, 1].
    """
    lo, hi = intervals.low, intervals.high
    pair = lambda j: [float(lo[j]), float(hi[j])]  # noqa: E731
    return {
        "cmc_ci": [pair(j) for j in range(max_rank)],
        "mAP_ci": pair(max_rank),
        "mINP_ci": pair(max_rank + 1),
        "bootstrap": {
            "method": "percentile",
            "unit": "identity",
            "resamples": intervals.resamples,
            "seed": intervals.seed,
            "level": intervals.level,
            "num_identities": intervals.num_identities,
        },
    }
