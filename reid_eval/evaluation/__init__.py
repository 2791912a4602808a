"""evaluation stage: the Market-1501 retrieval protocol (CMC, mAP, mINP).

``evaluate_ranking`` scores a whole distance matrix; ``query_stats`` on blocks
of query rows, ``merge_query_stats`` and ``summarize`` stream a matrix too large
for memory and give exactly the same result. See ``ranking``'s docstring for
the protocol (junk rules, both AP flavours, CUHK03 single gallery shot).
"""

from reid_eval.evaluation.ranking import (
    AP_FLAVOURS,
    QueryStats,
    RankingResult,
    evaluate_ranking,
    merge_query_stats,
    query_stats,
    summarize,
)

__all__ = [
    "AP_FLAVOURS",
    "QueryStats",
    "RankingResult",
    "evaluate_ranking",
    "merge_query_stats",
    "query_stats",
    "summarize",
]
