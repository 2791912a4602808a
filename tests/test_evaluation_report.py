"""The report's intervals, marks and verification table, from results files with per-query records."""

from __future__ import annotations

import json

import numpy as np

from reid_eval.evaluation import (
    bootstrap_means,
    interval_record,
    per_query_values,
    query_records,
    query_stats,
    records_path,
    summarize,
    tpr_at_fpr,
    write_query_records,
)
from reid_eval.experiments.record import MatchParams, MatchResult
from reid_eval.report.build import build_report
from reid_eval.report.paper import load_paper_tables
from reid_eval.report.results import load_results
from reid_eval.report.tables import build_dataset_table, build_paper_table

IDS_RNG = np.random.default_rng(7)
NQ, NG = 60, 60
IDS = (np.repeat(np.arange(1, 61), 1)[:NQ], np.arange(1, 61)[:NG], np.ones(NQ, int), np.full(NG, 2))


def write_run(folder, dataset, metric, distances, intervals=None):
    qp, gp, qc, gc = IDS
    stats = query_stats(distances, qp, gp, qc, gc, top_k=3)
    r = summarize(stats, NG, ap="market1501")
    values, valid = per_query_values(stats, ap="market1501", max_rank=20)
    if intervals is None:
        intervals = interval_record(bootstrap_means(values, qp[valid], resamples=200), 20)
    result = MatchResult(
        dataset, MatchParams(metric=metric, ap="market1501"), tuple(r.cmc[:20]), r.mAP, r.mINP, NQ, r.num_valid, NG,
        created="2026-01-01T00:00:00+00:00", intervals=intervals,
        verification=tpr_at_fpr(distances, qp, gp, qc, gc).as_record(), query_records=None,
    )
    out = result.write(folder)
    write_query_records(query_records(stats, [f"q{i}.jpg" for i in range(NQ)], qp, qc, ap="market1501"), records_path(out))
    data = json.loads(out.read_text())
    data["query_records"] = records_path(out).name
    out.write_text(json.dumps(data))
    return out


def noisy(strength, seed):
    """Distances where each query's own identity is ahead of the rest with probability rising with strength."""
    rng = np.random.default_rng(seed)
    d = rng.random((NQ, NG))
    d[np.arange(NQ), np.arange(NQ)] -= strength
    return d


def test_paper_table_cells_carry_intervals_and_marks(tmp_path):
    # FPR clearly better than DSR; the paper's FPR R1 on Partial-REID (81.0) inside a wide recorded interval
    wide = {"cmc_ci": [[0.0, 1.0]] * 20, "mAP_ci": [0.0, 1.0], "mINP_ci": [0.0, 1.0],
            "bootstrap": {"method": "percentile", "unit": "identity", "resamples": 200, "seed": 0, "level": 0.95}}
    write_run(tmp_path, "partial_reid", "fpr", noisy(0.9, 0), intervals=wide)
    write_run(tmp_path, "partial_reid", "dsr", noisy(0.0, 1))
    records = load_results(tmp_path)
    table = build_paper_table(load_paper_tables()["table3"], records)
    measured = [row for row in table.rows if row.source == "measured"]
    assert [row.label for row in measured] == ["DSR (measured)", "FPR (measured)"]
    dsr_r1, fpr_r1 = str(measured[0].cells[0]), str(measured[1].cells[0])
    assert "[" in dsr_r1 and fpr_r1.startswith(f"{100 * records[1].rank(1):.2f} [0.0, 100.0]°")
    # DSR is far below FPR: the next-row mark is absent; the note explains both marks
    assert "*" not in dsr_r1
    assert any("°" in n and "*" in n for n in table.notes)


def test_indistinguishable_rows_are_marked_and_verification_reported(tmp_path):
    d = noisy(0.3, 2)
    write_run(tmp_path, "occluded_dukemtmc", "dsr", d)
    write_run(tmp_path, "occluded_dukemtmc", "fpr", d + 1e-3 * np.random.default_rng(3).random(d.shape))
    records = load_results(tmp_path)
    table = build_dataset_table("occluded_dukemtmc", records)
    assert "beyond the paper" in table.title
    assert table.column_groups[0][1][-3:] == ["TPR@FPR1e-4", "TPR@FPR1e-3", "TPR@FPR1e-2"]
    assert table.rows[0].cells[0].marks == "*"  # DSR vs FPR: paired interval includes 0
    assert table.rows[1].cells[0].marks == ""  # last row: no next row
    summary = build_report(tmp_path, figures=False)
    assert "Verification: TPR at fixed FPR" in summary.markdown
    tpr = records[0].result.verification["tpr_at_fpr"]["0.01"]
    assert f"{100 * tpr:.2f}" in summary.markdown
