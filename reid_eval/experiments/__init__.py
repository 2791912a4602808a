"""experiments stage: runs that tie the cache, the matching engine and the
evaluation protocol together (sits after evaluation; report may import it).

:mod:`reid_eval.experiments.record` holds the match run's contract
(:class:`MatchParams`, :class:`MatchResult`, the metric lists and the paper's
β and AP flavour); :mod:`reid_eval.experiments.match` runs it and chooses the
cache (:func:`select_cache`).
"""

from reid_eval.experiments.match import (
    MATCH_SPLITS,
    MatchExecution,
    MatchOutcome,
    NoCacheError,
    compute_distances,
    match_cache,
    select_cache,
    select_caches,
)
from reid_eval.experiments.record import (
    CHECKPOINT_PREFIX,
    GLOBAL_METRICS,
    MATCH_METRICS,
    METRIC_NAMES,
    PAPER_AP,
    PAPER_BETA,
    RESULT_KEYS,
    MatchParams,
    MatchResult,
)

__all__ = [
    "CHECKPOINT_PREFIX",
    "GLOBAL_METRICS",
    "MATCH_METRICS",
    "MATCH_SPLITS",
    "METRIC_NAMES",
    "PAPER_AP",
    "PAPER_BETA",
    "RESULT_KEYS",
    "MatchExecution",
    "MatchOutcome",
    "MatchParams",
    "MatchResult",
    "NoCacheError",
    "compute_distances",
    "match_cache",
    "select_cache",
    "select_caches",
]
