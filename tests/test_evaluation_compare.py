"""`reid-eval compare` on results files with per-query records: the paired numbers, and one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reid_eval_cli.main import main
from reid_eval.evaluation import paired_difference, query_records, query_stats, records_path, summarize, write_query_records
from reid_eval.experiments.record import MatchParams, MatchResult


def write_run(folder, metric, distances, ids, dataset="partial_reid", paths=None):
    qp, gp, qc, gc = ids
    stats = query_stats(distances, qp, gp, qc, gc, top_k=3)
    r = summarize(stats, distances.shape[1])
    params = MatchParams(metric=metric)
    result = MatchResult(dataset, params, tuple(r.cmc), r.mAP, r.mINP, len(qp), r.num_valid, len(gp),
                         created="2026-01-01T00:00:00+00:00", query_records=None)
    out = result.write(folder)
    table = query_records(stats, paths or [f"q{i}.jpg" for i in range(len(qp))], qp, qc)
    write_query_records(table, records_path(out))
    data = json.loads(out.read_text())
    data["query_records"] = records_path(out).name
    out.write_text(json.dumps(data))
    return out, table


@pytest.fixture
def two_runs(tmp_path):
    rng = np.random.default_rng(0)
    nq, ng = 40, 60
    ids = (rng.integers(0, 15, nq), rng.integers(0, 15, ng), np.ones(nq, int), np.full(ng, 2))
    a, ta = write_run(tmp_path, "fpr", rng.random((nq, ng)), ids)
    b, tb = write_run(tmp_path, "dsr", rng.random((nq, ng)), ids)
    return tmp_path, a, b, ta, tb, ids


def test_compare_prints_the_paired_difference(two_runs, capsys):
    _, a, b, ta, tb, ids = two_runs
    assert main(["compare", str(a), str(b), "--resamples", "300", "--ci-seed", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    valid = ta["num_good"].to_numpy() > 0
    va = np.column_stack([(ta["first_rank"] == 1).to_numpy(float), ta["ap"].to_numpy(float)])[valid]
    vb = np.column_stack([(tb["first_rank"] == 1).to_numpy(float), tb["ap"].to_numpy(float)])[valid]
    d = paired_difference(va, vb, ids[0][valid], resamples=300, seed=2)
    assert out[0].startswith("partial_reid: A = fpr") and "300 identity resamples" in out[0]
    assert out[1].startswith("R1") and f"A-B {100 * d.point[0]:+6.2f} [{100 * d.low[0]:+.2f}, {100 * d.high[0]:+.2f}]" in out[1]
    assert f"A better in {100 * d.share_a_better[0]:.1f}%" in out[1]
    assert out[2].startswith("mAP") and f"{100 * d.point[1]:+6.2f}" in out[2]


def test_compare_refuses_other_dataset_or_queries(two_runs, capsys):
    folder, a, _, _, _, ids = two_runs
    rng = np.random.default_rng(1)
    other, _ = write_run(folder / "o", "dsr", rng.random((40, 60)), ids, dataset="occluded_reid")
    assert main(["compare", str(a), str(other)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "same dataset" in err
    shuffled, _ = write_run(folder / "s", "dsr", rng.random((40, 60)), ids, paths=[f"x{i}.jpg" for i in range(40)])
    assert main(["compare", str(a), str(shuffled)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not on the same queries" in err and "x0.jpg" in err
    records_path(shuffled).unlink()
    assert main(["compare", str(a), str(shuffled)]) == 1
    assert "per-query records" in capsys.readouterr().err
