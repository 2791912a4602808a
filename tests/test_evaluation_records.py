"""Per-query records: exact values on a hand-built case, top-k against a brute-force ranking, CSV round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_eval.evaluation import evaluate_ranking, query_stats
from reid_eval.evaluation.records import query_records, read_query_records, records_path, write_query_records


def hand_case():
    # gallery: 0 (pid 1, cam 1), 1 (pid 1, cam 2), 2 (pid 2, cam 2), 3 (pid -1), 4 (pid 1, cam 2)
    g_pids = np.array([1, 1, 2, -1, 1])
    g_cams = np.array([1, 2, 2, 1, 2])
    q_pids = np.array([1, 3])
    q_cams = np.array([1, 1])
    d = np.array([
        [0.0, 0.5, 0.2, 0.1, 0.9],  # q0: junk 0 (same cam) and 3 (pid -1); order 2, 1, 4
        [0.3, 0.3, 0.1, 0.0, 0.3],  # q1: pid 3 absent -> not valid; junk only 3
    ])
    return d, q_pids, g_pids, q_cams, g_cams


def test_hand_built_records_exact():
    d, qp, gp, qc, gc = hand_case()
    stats = query_stats(d, qp, gp, qc, gc, top_k=4)
    table = query_records(stats, ["a.jpg", "b.jpg"], qp, qc, ap="standard")
    assert list(table["num_good"]) == [2, 0]
    assert table["first_rank"].iloc[0] == 2 and pd.isna(table["first_rank"].iloc[1])
    # q0 correct matches at 0-based ranks 1 and 2: AP = (1/2 + 2/3) / 2, INP = 2/3
    assert table["ap"].iloc[0] == pytest.approx((0.5 + 2 / 3) / 2, abs=1e-15)
    assert table["inp"].iloc[0] == pytest.approx(2 / 3, abs=1e-15)
    assert np.isnan(table["ap"].iloc[1])
    assert list(table.loc[0, ["top1", "top2", "top3", "top4"]]) == [2, 1, 4, -1]
    # q1: ties at 0.3 go by gallery index; pid -1 image 3 never listed
    assert list(table.loc[1, ["top1", "top2", "top3", "top4"]]) == [2, 0, 1, 4]
    market = query_records(stats, ["a.jpg", "b.jpg"], qp, qc, ap="market1501")
    assert market["ap"].iloc[0] == pytest.approx(((1 + 0.5) / 2 * 0 + (0 + 0.5) / 2 + (0.5 + 2 / 3) / 2) / 2, abs=1e-15)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 9), st.integers(1, 7))
def test_top_k_is_the_stable_ranking_without_junk(seed, k, block_rows):
    rng = np.random.default_rng(seed)
    nq, ng = 6, 12
    d = rng.integers(0, 4, (nq, ng)).astype(np.float32)  # many ties
    gp = rng.integers(-1, 4, ng)
    gc = rng.integers(1, 3, ng)
    qp = rng.integers(1, 4, nq)
    qc = rng.integers(1, 3, nq)
    stats = query_stats(d, qp, gp, qc, gc, top_k=k, block_rows=block_rows)
    for i in range(nq):
        order = np.argsort(d[i], kind="stable")
        junk = (gp == -1) | ((gp == qp[i]) & (gc == qc[i]))
        want = [j for j in order if not junk[j]][:k]
        want += [-1] * (k - len(want))
        assert list(stats.top_gallery[i]) == want
        if stats.valid[i]:
            # the first correct match sits at first_rank in the same order
            good = [j for j in order if not junk[j]]
            assert gp[good[stats.first_rank[i]]] == qp[i]


def test_csv_round_trip_is_exact_and_means_match_the_summary(tmp_path):
    rng = np.random.default_rng(1)
    d = rng.random((30, 50))
    gp, gc = rng.integers(1, 8, 50), rng.integers(1, 4, 50)
    qp, qc = rng.integers(1, 9, 30), rng.integers(1, 4, 30)
    stats = query_stats(d, qp, gp, qc, gc, top_k=10)
    table = query_records(stats, [f"q/{i:03d}.jpg" for i in range(30)], qp, qc, ap="market1501")
    path = write_query_records(table, records_path(tmp_path / "ds__fpr.json"))
    assert path.name == "ds__fpr.queries.csv"
    back = read_query_records(path)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert back["ap"].to_numpy()[~np.isnan(table["ap"].to_numpy())].tolist() == table["ap"].dropna().tolist()
    valid = back["num_good"] > 0
    assert 0 < valid.sum() < len(back)  # the official averages count the queries without a match as 0
    r = evaluate_ranking(d, qp, gp, qc, gc, ap="market1501")
    assert back.loc[valid, "ap"].sum() / len(back) == pytest.approx(r.mAP, abs=1e-15)
    assert (back.loc[valid, "first_rank"] == 1).sum() / len(back) == pytest.approx(r.cmc[0], abs=1e-15)
    r = evaluate_ranking(d, qp, gp, qc, gc, ap="market1501-valid")
    assert back.loc[valid, "ap"].mean() == pytest.approx(r.mAP, abs=1e-15)


def test_reading_a_foreign_file_names_it(tmp_path):
    bad = tmp_path / "x.queries.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="x.queries.csv"):
        read_query_records(bad)
    with pytest.raises(FileNotFoundError, match="missing.queries.csv"):
        read_query_records(tmp_path / "missing.queries.csv")


def test_recorded_ranks_give_back_the_stats(tmp_path):
    from reid_eval.evaluation.records import recorded_ranks

    rng = np.random.default_rng(2)
    d = rng.random((25, 40))
    gp, gc = rng.integers(-1, 8, 40), rng.integers(1, 4, 40)
    qp, qc = rng.integers(1, 9, 25), rng.integers(1, 4, 25)
    stats = query_stats(d, qp, gp, qc, gc, top_k=10)
    table = read_query_records(write_query_records(query_records(stats, [str(i) for i in range(25)], qp, qc),
                                                   tmp_path / "x.queries.csv"))
    first, top = recorded_ranks(table, 6)
    assert first.tolist() == stats.first_rank.tolist() and top.tolist() == stats.top_gallery[:, :6].tolist()
    assert recorded_ranks(table, 11) is None
