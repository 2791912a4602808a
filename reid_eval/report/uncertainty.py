"""Intervals, marks and verification figures in the report's tables.

Every measured rank-k and mAP cell shows its 95 % identity-bootstrap interval
(recorded by `match` in the results file, see
:mod:`reid_eval.evaluation.bootstrap`) as ``45.00 [38.1, 51.2]``, and may
carry two marks:

* ``°`` — the paper's value for the same method (the paper row whose
  ``measured_metric`` is the row's metric) lies within the measured interval:
  the difference from the paper is within the interval;
* ``*`` — the paired difference from the next measured row of the same
  column (same dataset, same queries) has an interval that contains 0: this
  row and the next are not told apart by these queries. The paired interval
  comes from both rows' per-query records (written beside the results files),
  resampled with the same identity draws
  (:func:`reid_eval.evaluation.paired_difference`).

Verification (TPR at FPR 1e-4, 1e-3, 1e-2 over all valid query–gallery
pairs, :mod:`reid_eval.evaluation.verification`) gets a table of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import paired_difference
from reid_eval.experiments.compare import paired_values, records_of
from reid_eval.report.results import ResultRecord

PAPER_MARK = "°"
NEXT_MARK = "*"
#: Which value column of :func:`reid_eval.experiments.compare.query_values` a cell name is.
_PAIRED_COLUMN = {"R1": 0, "mAP": 1}


def interval(record: ResultRecord, column: str) -> tuple[float, float] | None:
    """The recorded interval (fractions) of ``R<k>``, ``mAP`` or ``mINP``, or None when the file has none."""
    iv = record.result.intervals or {}
    if column in ("mAP", "mINP"):
        pair = iv.get(f"{column}_ci")
    else:
        k = int(column[1:])
        cmc = iv.get("cmc_ci") or []
        pair = cmc[k - 1] if 0 < k <= len(cmc) else None
    return (float(pair[0]), float(pair[1])) if pair else None


def value_cell(value: float | None, bounds: tuple[float, float] | None, marks: str = "") -> str:
    """``45.00 [38.1, 51.2]`` (percent) plus marks; ``—`` for no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{100 * value:.2f}"
    if bounds is not None:
        text += f" [{100 * bounds[0]:.1f}, {100 * bounds[1]:.1f}]"
    return text + marks


def within(paper_percent: float | None, bounds: tuple[float, float] | None) -> bool:
    """Whether a paper value (percent) lies in a measured interval (fractions)."""
    return paper_percent is not None and bounds is not None and bounds[0] <= paper_percent / 100.0 <= bounds[1]


def not_separated(first: ResultRecord, second: ResultRecord, column: str) -> bool:
    """Whether the paired interval of ``first − second`` in ``R1`` or ``mAP`` contains 0.

    False when either has no per-query records, or they are not on the same
    queries (nothing can be said, so nothing is marked).
    """
    if column not in _PAIRED_COLUMN or first.result.intervals is None:
        return False
    if first.dataset != second.dataset or first.ap_flavour != second.ap_flavour:
        return False
    try:
        va, vb, pids = paired_values(
            records_of(first.result, first.path), records_of(second.result, second.path), first.path.name, second.path.name,
            first.ap_flavour,
        )
    except ReidEvalError:
        return False
    if va.shape[0] == 0:
        return False
    boot = first.result.intervals.get("bootstrap", {})
    j = _PAIRED_COLUMN[column]
    diff = paired_difference(
        va[:, j], vb[:, j], pids, resamples=int(boot.get("resamples", 1000)), seed=int(boot.get("seed", 0)),
        level=float(boot.get("level", 0.95)),
    )
    return bool(diff.low[0] <= 0.0 <= diff.high[0])


def next_marks(ordered: Sequence[ResultRecord | None], column: str) -> list[str]:
    """For measured rows in display order (None where a row has no result in this column): ``*`` or ''."""
    marks = [""] * len(ordered)
    present = [(i, r) for i, r in enumerate(ordered) if r is not None]
    for (i, r), (_, nxt) in zip(present, present[1:]):
        if not_separated(r, nxt, column):
            marks[i] = NEXT_MARK
    return marks


def marks_note(level: float = 0.95) -> str:
    pct = f"{100 * level:g}%"
    return (
        f"Measured cells: value [{pct} interval] from an identity bootstrap over the queries "
        f"(resampling whole identities, 1,000 resamples unless recorded otherwise). "
        f"{PAPER_MARK}: the paper's value for this method lies within the interval. "
        f"{NEXT_MARK}: the paired difference from the next measured row in this column is within its interval "
        f"(the two are not told apart by these queries)."
    )


def verification_cells(record: ResultRecord) -> list[str]:
    """TPR (percent) at FPR 1e-4, 1e-3, 1e-2, '—' where not recorded."""
    tpr = (record.result.verification or {}).get("tpr_at_fpr", {})
    return [f"{100 * float(tpr[k]):.2f}" if k in tpr else "—" for k in ("0.0001", "0.001", "0.01")]
