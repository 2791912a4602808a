"""experiments stage: runs that tie the cache, the matching engine and the
evaluation protocol together (sits after evaluation; report may import it)."""

from reid_eval.experiments.match import (  # noqa: F401
    GLOBAL_METRICS,
    MATCH_METRICS,
    MatchOutcome,
    compute_distances,
    distance_name,
    match_cache,
    metric_label,
    results_file_name,
    select_caches,
)
