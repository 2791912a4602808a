"""Reading the results JSON files that `reid-eval match` writes (DESIGN.md, Results files).

A results file holds one dataset × metric evaluation, rates as fractions in
[0, 1]. The report reads every ``*.json`` directly under the results folder
that carries all of DESIGN.md's keys; other JSON files there are skipped with
a warning, and a file with the keys but impossible values is an error naming it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reid_eval.errors import ReidEvalError

REQUIRED_KEYS = (
    "dataset",
    "metric",
    "cmc",
    "mAP",
    "mINP",
    "ap_flavour",
    "num_query",
    "num_valid_query",
    "num_gallery",
    "params",
    "checkpoint_sha256",
    "created",
)
PAPER_BETA = 0.01
# Display order of metrics in tables and figures; others follow alphabetically.
METRIC_ORDER = ("euclidean", "cosine", "dsr", "fpr")
METRIC_NAMES = {"euclidean": "Baseline", "cosine": "Cosine baseline", "dsr": "DSR", "fpr": "FPR"}
# CUHK03-NP's two box variants are two datasets (data_manifests/cuhk03_np*.toml).
CUHK03_VARIANT_OF = {"cuhk03_np": "detected", "cuhk03_np_detected": "detected", "cuhk03_np_labeled": "labeled"}

Warn = Callable[[str], None]


@dataclass(frozen=True)
class ResultRecord:
    """One results file. ``cmc`` [R] float64 fractions; ``mAP``, ``mINP`` fractions."""

    path: Path
    dataset: str
    metric: str
    cmc: np.ndarray
    mAP: float
    mINP: float
    ap_flavour: str
    num_query: int
    num_valid_query: int
    num_gallery: int
    params: dict = field(default_factory=dict)
    checkpoint_sha256: str = ""
    created: str = ""

    @property
    def beta(self) -> float | None:
        """β of the reconstruction (FPR/DSR), None for metrics without one."""
        beta = self.params.get("beta")
        return None if beta is None else float(beta)

    @property
    def fuse(self) -> float | None:
        """Fusion weight λ when the metric is a fused one ('fpr+euclidean'), else None."""
        fuse = self.params.get("fuse")
        if fuse is None or isinstance(fuse, bool) or "+" not in self.metric:
            return None
        return float(fuse)

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
        return self.checkpoint_sha256[:8] if self.checkpoint_sha256 else "none"

    def rank(self, k: int) -> float | None:
        """CMC at rank k (1-based) as a fraction, None when the curve is shorter."""
        return float(self.cmc[k - 1]) if 0 < k <= len(self.cmc) else None

    @property
    def method_name(self) -> str:
        """'FPR', 'Baseline', 'DSR', 'FPR + Baseline' ... without the measured marker."""
        parts = self.metric.split("+")
        return " + ".join(METRIC_NAMES.get(p, p) for p in parts) if len(parts) > 1 else METRIC_NAMES.get(self.metric, self.metric)

    @property
    def variant_label(self) -> str:
        """What sets this run apart from the paper's setting: β when not 0.01, λ when fused ('' when nothing)."""
        extras = []
        if self.beta is not None and not math.isclose(self.beta, PAPER_BETA, rel_tol=1e-9):
            extras.append(f"β={self.beta:g}")
        if self.fuse is not None:
            extras.append(f"λ={self.fuse:g}")
        return ", ".join(extras)

    @property
    def ap_label(self) -> str:
        """'AP market1501' for results with the official Market-1501 AP, '' for the standard AP."""
        return "" if self.ap_flavour == "standard" else f"AP {self.ap_flavour}"

    def label(self, *more: str) -> str:
        """Row label, e.g. 'FPR (measured)', 'FPR (measured, β=0.1, AP market1501)'; ``more`` adds qualifiers ('labeled')."""
        extras = [e for e in (self.variant_label, self.ap_label, *more) if e]
        return f"{self.method_name} (measured{''.join(', ' + e for e in extras)})"

    @property
    def sort_key(self) -> tuple:
        parts = self.metric.split("+")
        first = METRIC_ORDER.index(parts[0]) if parts[0] in METRIC_ORDER else len(METRIC_ORDER)
        return (
            len(parts), first, self.metric, self.variant or "", self.beta or 0.0, self.fuse or 0.0, self.ap_label, str(self.path)
        )


def parse_result(path: Path, data: dict) -> ResultRecord:
    """A record from one file's parsed JSON; raises ReidEvalError naming the file on bad values."""
    try:
        cmc = np.asarray(data["cmc"], dtype=np.float64)
        record = ResultRecord(
            path=path,
            dataset=str(data["dataset"]),
            metric=str(data["metric"]),
            cmc=cmc,
            mAP=float(data["mAP"]),
            mINP=float(data["mINP"]),
            ap_flavour=str(data["ap_flavour"]),
            num_query=int(data["num_query"]),
            num_valid_query=int(data["num_valid_query"]),
            num_gallery=int(data["num_gallery"]),
            params=dict(data["params"] or {}),
            checkpoint_sha256=str(data["checkpoint_sha256"] or ""),
            created=str(data["created"]),
        )
    except (TypeError, ValueError) as exc:
        raise ReidEvalError(f"{path}: malformed results file ({exc})") from exc
    rates = [*cmc.tolist(), record.mAP, record.mINP]
    if cmc.ndim != 1 or not all(0.0 <= r <= 1.0 for r in rates):
        raise ReidEvalError(f"{path}: cmc, mAP and mINP must be fractions in [0, 1] (is this a percentage?)")
    if np.any(np.diff(cmc) < -1e-9):
        raise ReidEvalError(f"{path}: cmc must be non-decreasing")
    return record


def load_results(results_dir: Path, warn: Warn | None = None) -> list[ResultRecord]:
    """Every results file directly under ``results_dir``, sorted by dataset then metric order.

    JSON files without DESIGN.md's keys (or unreadable as JSON) are skipped and
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
        if not isinstance(data, dict) or any(k not in data for k in REQUIRED_KEYS):
            if warn:
                missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
                warn(f"{path}: not a results file (missing {', '.join(missing)}); skipped")
            continue
        records.append(parse_result(path, data))
    records.sort(key=lambda r: (r.dataset, r.sort_key))
    return records
