"""Model selection during training (``--eval-every``): the dataset's query and
gallery extracted with the current weights and matched with FPR, through the
same library calls as ``reid-eval extract`` and ``reid-eval match``."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reid_eval.errors import ReidEvalError
from reid_eval.experiments import MatchParams, match_cache
from reid_eval.features import extract_dataset
from reid_eval.matching import DEFAULT_BETA


@dataclass(frozen=True)
class Evaluation:
    """FPR retrieval scores of one checkpoint: rank-1, mAP and mINP as fractions in [0, 1]."""

    rank1: float
    mAP: float
    mINP: float
    results_file: Path
    seconds: float


def check_evaluable(dataset: str, manifest: pd.DataFrame) -> None:
    """ReidEvalError naming --eval-every when the dataset has no query or no gallery images."""
    missing = [s for s in ("query", "gallery") if not (manifest["split"] == s).any()]
    if missing:
        raise ReidEvalError(f"--eval-every: {dataset} has no {' and no '.join(missing)} images to evaluate on")


def evaluate_checkpoint(dataset: str, root: Path, manifest: pd.DataFrame, checkpoint: Path, work_dir: Path,
                        device: str, batch_size: int = 64, beta: float = DEFAULT_BETA) -> Evaluation:
    """Extract ``dataset``'s query and gallery with ``checkpoint`` into a cache under
    ``work_dir``, match them with FPR (β = ``beta``), write the results JSON in
    ``work_dir`` and delete the cache (a Market-1501 cache holds gigabytes of
    pyramid features and is of no use once scored)."""
    t0 = time.perf_counter()
    cache_dir = work_dir / "cache"
    cache = extract_dataset(dataset, root, checkpoint, cache_dir, manifest=manifest, splits=("query", "gallery"),
                            device=device, batch_size=batch_size, resize="fixed")
    try:
        outcome = match_cache(cache, MatchParams(metric="fpr", beta=beta), work_dir, dataset=dataset)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    scores = outcome.result
    return Evaluation(rank1=float(scores.cmc[0]), mAP=float(scores.mAP), mINP=float(scores.mINP),
                      results_file=outcome.results_file, seconds=time.perf_counter() - t0)
