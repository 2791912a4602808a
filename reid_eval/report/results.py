"""Reading the results files that `reid-eval match` writes (docs/DESIGN.md, "Results files").

A results file is one :class:`reid_eval.experiments.MatchResult` (its layout,
keys and checks live there). The report reads every ``*.json`` directly under
the results folder that carries the results keys; other JSON files there are
skipped with a warning, as is a results file this version no longer computes
under its name (an outdated re-ranking, :class:`OutdatedResultError`), and a
file with the keys but impossible values is an error naming it.
:class:`ResultRecord` adds what the report needs for display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.errors import ReidEvalError
from reid_eval.experiments.record import (
    CHECKPOINT_PREFIX,
    MATCH_METRICS,
    METRIC_NAMES,
    PAPER_AP,
    PAPER_BETA,
    RESULT_KEYS,
    MatchParams,
    MatchResult,
    OutdatedResultError,
)

# CUHK03-NP's two box variants are two datasets (data_manifests/cuhk03_np*.toml).
CUHK03_VARIANT_OF = {"cuhk03_np": "detected", "cuhk03_np_detected": "detected", "cuhk03_np_labeled": "labeled"}

Warn = Callable[[str], None]


@dataclass(frozen=True)
class ResultRecord:
    """One results file (``path``) and its :class:`MatchResult`, with the report's labels and sort order.

    ``cmc`` [R] float64 fractions; ``mAP``, ``mINP`` fractions; ``params`` the
    run's :class:`MatchParams`; ``provenance`` what it recorded besides (cache file, ...).
    """

    path: Path
    result: MatchResult

    # ------------------------------------------------------------ the result's fields
    @property
    def dataset(self) -> str:
        return self.result.dataset

    @property
    def metric(self) -> str:
        """'fpr', 'euclidean', ... or 'fpr+euclidean' when fused."""
        return self.result.metric

    @cached_property
    def cmc(self) -> np.ndarray:
        return np.asarray(self.result.cmc, dtype=np.float64)

    @property
    def mAP(self) -> float:
        return self.result.mAP

    @property
    def mINP(self) -> float:
        return self.result.mINP

    @property
    def ap_flavour(self) -> str:
        return self.result.params.ap

    @property
    def num_query(self) -> int:
        return self.result.num_query

    @property
    def num_valid_query(self) -> int:
        return self.result.num_valid_query

    @property
    def num_gallery(self) -> int:
        return self.result.num_gallery

    @property
    def params(self) -> MatchParams:
        return self.result.params

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.result.provenance)

    @property
    def checkpoint_sha256(self) -> str:
        return self.result.checkpoint_sha256

    @property
    def created(self) -> str:
        return self.result.created

    @property
    def beta(self) -> float | None:
        """β of the reconstruction (FPR/DSR), None for metrics without one."""
        return self.params.beta

    @property
    def fuse(self) -> float | None:
        """Fusion weight λ when the metric is a fused one ('fpr+euclidean'), else None."""
        return self.params.fuse

    # ------------------------------------------------------------ display
    @property
    def base_dataset(self) -> str:
        """The dataset a paper column compares with: 'cuhk03_np' for either CUHK03-NP box variant."""
        return "cuhk03_np" if self.dataset in CUHK03_VARIANT_OF else self.dataset

    @property
    def variant(self) -> str | None:
        """CUHK03-NP boxes ('labeled' / 'detected') for a CUHK03-NP result, else None.

        The dataset specs name them: ``cuhk03_np`` is the detected boxes,
        ``cuhk03_np_labeled`` the manually labelled ones (data_manifests/).
        """
        return CUHK03_VARIANT_OF.get(self.dataset)

    @property
    def short_sha(self) -> str:
        return self.checkpoint_sha256[:CHECKPOINT_PREFIX] if self.checkpoint_sha256 else "none"

    def rank(self, k: int) -> float | None:
        """CMC at rank k (1-based) as a fraction, None when the curve is shorter."""
        return float(self.cmc[k - 1]) if 0 < k <= len(self.cmc) else None

    @property
    def method_name(self) -> str:
        """'FPR', 'Baseline', 'DSR', 'FPR + Baseline' ... without the measured marker."""
        return " + ".join(METRIC_NAMES.get(p, p) for p in self.metric.split("+"))

    @property
    def variant_label(self) -> str:
        """What sets this matrix apart from the paper's setting: β when not the paper's, the shortlist, λ ('' when nothing)."""
        p = self.params
        extras = []
        if p.beta is not None and not math.isclose(p.beta, PAPER_BETA, rel_tol=1e-9):
            extras.append(f"β={p.beta:g}")
        if p.shortlist is not None:
            extras.append(f"shortlist K={p.shortlist} by {p.shortlist_metric}")
        if p.fuse is not None:
            extras.append(f"λ={p.fuse:g}")
        if p.shortlist_fill is not None:
            extras.append(f"{p.shortlist_fill:g} outside the shortlist")
        if p.rerank is not None:
            extras.append(f"re-ranked k1={p.rerank_k1}, k2={p.rerank_k2}, λ={p.rerank_lambda:g}, {p.rerank} aux")
        return ", ".join(extras)

    @property
    def ap_label(self) -> str:
        """'standard AP' when the AP flavour is not the paper's (the official Market-1501 one), else ''."""
        return "" if self.ap_flavour == PAPER_AP else f"{self.ap_flavour} AP"

    @property
    def model_name(self) -> str:
        """The model in words as its cache recorded it ('OSNet x0.25, Market-1501, torchreid'); '' for older results."""
        return str(self.provenance.get("model_name") or "")

    @property
    def untrained_foreground(self) -> bool:
        """Whether this FPR row weighed locations with a foreground generator that was never trained."""
        return self.provenance.get("foreground") in ("untrained", "unrecorded")

    def label(self, *more: str, checkpoint: bool = False) -> str:
        """Row label, e.g. 'FPR (measured)', 'FPR (measured, β=0.1, standard AP)'.

        ``more`` adds qualifiers ('labeled'); an FPR row of an untrained
        foreground generator says so; ``checkpoint`` adds the model's name and
        the checkpoint's hash prefix (when rows of several models share a table).
        """
        extras = [e for e in (self.variant_label, self.ap_label, *more) if e]
        if self.untrained_foreground:
            extras.append("untrained foreground")
        if checkpoint:
            extras.append(f"{self.model_name}, ckpt {self.short_sha}" if self.model_name else f"ckpt {self.short_sha}")
        return f"{self.method_name} (measured{''.join(', ' + e for e in extras)})"

    @property
    def sort_key(self) -> tuple:
        parts = self.metric.split("+")
        first = MATCH_METRICS.index(parts[0]) if parts[0] in MATCH_METRICS else len(MATCH_METRICS)
        p = self.params
        return (
            len(parts), first, self.metric, self.variant or "", p.beta or 0.0, p.shortlist or 0, p.fuse or 0.0,
            self.ap_flavour != PAPER_AP, self.checkpoint_sha256, str(self.path),
        )


def parse_result(path: Path, data: dict) -> ResultRecord:
    """A record from one file's parsed JSON; raises ReidEvalError naming the file on bad values."""
    return ResultRecord(path, MatchResult.from_json(data, path))


def load_results(results_dir: Path, warn: Warn | None = None) -> list[ResultRecord]:
    """Every results file directly under ``results_dir``, sorted by dataset then metric order.

    JSON files without the results keys (or unreadable as JSON) are skipped and
    reported through ``warn``. Raises ReidEvalError when ``results_dir`` is not a folder.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ReidEvalError(f"no results under {results_dir} (not a folder); run `reid-eval match` first")
    records = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            if warn:
                warn(f"{path}: not readable as JSON ({exc}); skipped")
            continue
        if not isinstance(data, dict) or any(k not in data for k in RESULT_KEYS):
            if warn:
                missing = [k for k in RESULT_KEYS if not isinstance(data, dict) or k not in data]
                warn(f"{path}: not a results file (missing {', '.join(missing)}); skipped")
            continue
        try:
            records.append(parse_result(path, data))
        except OutdatedResultError as exc:
            if warn:
                warn(f"{exc}; skipped")
    records.sort(key=lambda r: (r.dataset, r.sort_key))
    return records
