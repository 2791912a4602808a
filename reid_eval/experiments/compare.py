"""`reid-eval compare`: the paired difference of two results on the same queries.

Both results files must be of the same dataset, with per-query records
(written by `match` beside each file) over the same queries in the same order
(same paths, pids and cameras) and the same valid queries, and the same AP
flavour. Each CSV must be the one its results file recorded (SHA-256): an
edited table, or one a failed run left beside an older results file, is
refused rather than compared. The difference A − B of rank-1 and mAP gets a percentile interval from
the identity bootstrap with the same draws for A and B
(:func:`reid_eval.evaluation.paired_difference`), and the share of resamples in
which A is better.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import PairedDifference, paired_difference, read_query_records
from reid_eval.evaluation.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED
from reid_eval.evaluation.ranking import averages_over_all
from reid_eval.experiments.record import MatchResult, records_file

#: The compared metrics, in the order of the value columns.
COMPARED: tuple[str, ...] = ("R1", "mAP")


@dataclass(frozen=True)
class Comparison:
    """Two results and the paired difference A − B of ``COMPARED`` (fractions)."""

    a: MatchResult
    b: MatchResult
    a_file: Path
    b_file: Path
    value_a: np.ndarray
    value_b: np.ndarray
    difference: PairedDifference
    num_query: int
    num_valid: int

    def lines(self) -> list[str]:
        d = self.difference
        head = (
            f"{self.a.dataset}: A = {self.a.params.distance_name} ({self.a_file.name}), "
            f"B = {self.b.params.distance_name} ({self.b_file.name}); {self.num_valid}/{self.num_query} valid queries, "
            f"{d.num_identities} identities, {d.resamples} identity resamples (seed {d.seed}), "
            f"{100 * d.level:g}% percentile intervals"
        )
        out = [head]
        for j, name in enumerate(COMPARED):
            out.append(
                f"{name:<4} A {100 * self.value_a[j]:6.2f}%  B {100 * self.value_b[j]:6.2f}%  "
                f"A-B {100 * d.point[j]:+6.2f} [{100 * d.low[j]:+.2f}, {100 * d.high[j]:+.2f}]  "
                f"A better in {100 * d.share_a_better[j]:.1f}% of resamples"
                + (f" (tied in {100 * d.share_tied[j]:.1f}%)" if d.share_tied[j] > 0 else "")
            )
        return out


def records_of(result: MatchResult, results_file: Path) -> pd.DataFrame:
    """The per-query table of a results file, checked against the digest it recorded; ReidEvalError naming the file."""
    path = records_file(result, results_file)
    try:
        return read_query_records(path)
    except (OSError, ValueError) as exc:
        raise ReidEvalError(f"{results_file}: {exc}") from None


def query_values(table: pd.DataFrame, ap: str = "standard") -> np.ndarray:
    """float64 [num_query, 2]: per query, rank-1 hit (single-shot share for CUHK03 classic) and AP.

    A query without a correct match is NaN, or 0 under a flavour that
    averages over all queries (``market1501``, as the official code).
    """
    if "single_shot_r1" in table.columns:
        r1 = table["single_shot_r1"].to_numpy(dtype=np.float64)
    else:
        first = table["first_rank"].to_numpy(dtype=np.float64, na_value=np.nan)
        r1 = np.where(np.isnan(first), np.nan, (first == 1).astype(np.float64))
    values = np.column_stack([r1, table["ap"].to_numpy(dtype=np.float64, na_value=np.nan)])
    valid = table["num_good"].to_numpy() > 0
    if averages_over_all(ap):
        values[~valid] = 0.0
    return values


def paired_values(
    table_a: pd.DataFrame, table_b: pd.DataFrame, a_name: str, b_name: str, ap: str = "standard"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A values, B values, pids) over the queries flavour ``ap`` averages; ReidEvalError when the queries differ."""
    if len(table_a) != len(table_b):
        raise ReidEvalError(f"{a_name} has {len(table_a)} queries, {b_name} {len(table_b)}: not the same queries")
    for column in ("path", "pid", "camid"):
        differ = np.flatnonzero(table_a[column].to_numpy() != table_b[column].to_numpy())
        if differ.size:
            i = int(differ[0])
            raise ReidEvalError(
                f"{a_name} and {b_name} are not on the same queries: query {i} has {column} "
                f"{table_a[column].iloc[i]} in A and {table_b[column].iloc[i]} in B"
            )
    valid_a, valid_b = table_a["num_good"].to_numpy() > 0, table_b["num_good"].to_numpy() > 0
    if not np.array_equal(valid_a, valid_b):
        raise ReidEvalError(f"{a_name} and {b_name} have different valid queries (different galleries?)")
    rows = np.ones_like(valid_a) if averages_over_all(ap) else valid_a
    va, vb = query_values(table_a, ap)[rows], query_values(table_b, ap)[rows]
    for name, values in ((a_name, va), (b_name, vb)):
        if not np.isfinite(values).all():
            i = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
            raise ReidEvalError(f"{name}: the per-query records give query {i} no rank-1 or AP value")
    return va, vb, table_a["pid"].to_numpy()[rows]


def compare_results(
    file_a: str | os.PathLike,
    file_b: str | os.PathLike,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Comparison:
    """Compare two results files (module docstring); ReidEvalError with a one-line reason when they do not pair."""
    pa, pb = Path(file_a), Path(file_b)
    a, b = MatchResult.read(pa), MatchResult.read(pb)
    if a.dataset != b.dataset:
        raise ReidEvalError(f"{pa.name} is on {a.dataset}, {pb.name} on {b.dataset}: compare needs the same dataset")
    if a.params.ap != b.params.ap:
        raise ReidEvalError(f"{pa.name} uses AP {a.params.ap}, {pb.name} AP {b.params.ap}: compare needs one AP flavour")
    table_a = records_of(a, pa)
    va, vb, pids = paired_values(table_a, records_of(b, pb), pa.name, pb.name, a.params.ap)
    if va.shape[0] == 0:
        raise ReidEvalError(f"{pa.name}: no valid query to compare")
    diff = paired_difference(va, vb, pids, resamples=resamples, seed=seed, level=level)
    num_valid = int(np.count_nonzero(table_a["num_good"].to_numpy() > 0))
    return Comparison(a, b, pa, pb, va.mean(axis=0), vb.mean(axis=0), diff, len(table_a), num_valid)
