"""evaluation stage: the Market-1501 retrieval protocol (CMC, mAP, mINP) and what
a researcher needs around it.

``evaluate_ranking`` scores a whole distance matrix; ``query_stats`` on blocks
of query rows, ``merge_query_stats`` and ``summarize`` stream a matrix too large
for memory and give exactly the same result. See ``ranking``'s docstring for
the protocol (junk rules, the AP flavours and their averages, CUHK03 single gallery shot).

Around it, each in its module with its exact rules:

- ``records``: the per-query table (rank of the first correct match, AP, INP,
  top-k gallery images) written beside every results file;
- ``bootstrap``: confidence intervals over queries resampling whole
  identities, and paired differences between two results;
- ``verification``: TPR at fixed FPR over all valid query–gallery pairs;
- ``rerank``: k-reciprocal re-ranking (Zhong et al., CVPR 2017) in bounded memory.
"""

from reid_eval.evaluation.bootstrap import (
    BootstrapIntervals,
    PairedDifference,
    bootstrap_means,
    interval_record,
    paired_difference,
    per_query_values,
)
from reid_eval.evaluation.ranking import (
    AP_FLAVOURS,
    QueryStats,
    RankingResult,
    averages_over_all,
    evaluate_ranking,
    merge_query_stats,
    query_stats,
    summarize,
)
from reid_eval.evaluation.records import (
    DEFAULT_TOP_K,
    query_records,
    read_query_records,
    records_path,
    write_query_records,
)
from reid_eval.evaluation.rerank import RerankParams, check_rerank_params, k_reciprocal_rerank
from reid_eval.evaluation.verification import DEFAULT_FPRS, VerificationResult, tpr_at_fpr

__all__ = [
    "AP_FLAVOURS",
    "DEFAULT_FPRS",
    "DEFAULT_TOP_K",
    "BootstrapIntervals",
    "PairedDifference",
    "QueryStats",
    "RankingResult",
    "RerankParams",
    "VerificationResult",
    "averages_over_all",
    "bootstrap_means",
    "check_rerank_params",
    "evaluate_ranking",
    "interval_record",
    "k_reciprocal_rerank",
    "merge_query_stats",
    "paired_difference",
    "per_query_values",
    "query_records",
    "query_stats",
    "read_query_records",
    "records_path",
    "summarize",
    "tpr_at_fpr",
    "write_query_records",
]
