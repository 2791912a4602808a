"""evaluate_ranking on small hand-computed cases: ties, junk, distractors, queries without a match."""

from fractions import Fraction

import numpy as np
import pytest

from reid_eval.evaluation import evaluate_ranking

# One gallery row shared by every query. Stable order by distance:
# 5 (0.0), 2 (0.1), 1 (0.2), 7 (0.3), 0, 3, 4 (all 0.5, tied: index order), 6 (0.9).
G_PIDS = np.array([1, 2, 1, 0, 1, -1, 1, 3])
G_CAMS = np.array([2, 1, 1, 1, 2, 2, 3, 2])
ROW = np.array([0.5, 0.2, 0.1, 0.5, 0.5, 0.0, 0.9, 0.3], dtype=np.float32)
# Queries: (pid 1, cam 1): junk 2 and 5, valid ranking 1 7 0 3 4 6, matches at 2, 4, 5.
#          (pid 1, cam 2): junk 0, 4, 5, valid ranking 2 1 7 3 6, matches at 0, 4.
#          (pid 4, cam 1): no image of pid 4 -> not valid.
#          (pid 3, cam 2): its only image is same-camera junk -> not valid.
#          (pid 2, cam 2): junk 5, valid ranking 2 1 ..., match at 1.
Q_PIDS = np.array([1, 1, 4, 3, 2])
Q_CAMS = np.array([1, 2, 1, 2, 2])
DISTMAT = np.tile(ROW, (5, 1))

F = Fraction
AP_STANDARD = [F(1, 3) * (F(1, 3) + F(2, 5) + F(3, 6)), F(1, 2) * (1 + F(2, 5)), F(1, 2)]
# Official trapezoid: each match adds (precision one position earlier + precision at it) / 2 / ngood.
AP_MARKET = [
    F(1, 3) * ((0 + F(1, 3)) / 2 + (F(1, 4) + F(2, 5)) / 2 + (F(2, 5) + F(3, 6)) / 2),
    F(1, 2) * ((1 + 1) / F(2) + (F(1, 4) + F(2, 5)) / 2),
    (0 + F(1, 2)) / 2,
]
INP = [F(3, 6), F(2, 5), F(1, 2)]


# (flavour, per-query AP, the queries its averages divide by): the official code divides by all 5
# queries (the two without a correct match count 0), the other flavours by the 3 valid ones.
@pytest.mark.parametrize("flavour, expected_ap, denominator",
                         [("standard", AP_STANDARD, 3), ("market1501", AP_MARKET, 5), ("market1501-valid", AP_MARKET, 3)])
def test_hand_case_every_flavour(flavour, expected_ap, denominator):
    r = evaluate_ranking(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, ap=flavour, max_rank=8)
    assert r.valid.tolist() == [True, True, False, False, True]
    assert r.num_valid == 3 and r.num_query == 5 and r.num_gallery == 8
    assert r.num_averaged == denominator
    assert r.first_rank.tolist() == [2, 0, 1]
    np.testing.assert_allclose(r.ap, [float(a) for a in expected_ap], rtol=0, atol=1e-15)
    assert r.mAP == pytest.approx(float(sum(expected_ap) / denominator), abs=1e-15)
    np.testing.assert_allclose(r.inp, [float(a) for a in INP], rtol=0, atol=1e-15)
    assert r.mINP == pytest.approx(float(sum(INP) / denominator), abs=1e-15)
    # Only 5 or 6 valid gallery images per query: the curve keeps its last value to max_rank.
    np.testing.assert_allclose(r.cmc, np.array([1, 2, 3, 3, 3, 3, 3, 3]) / denominator, rtol=0, atol=1e-15)
    assert r.ap_flavour == flavour


def test_exact_values_of_first_query():
    r = evaluate_ranking(DISTMAT[:1], Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS, ap="market1501", max_rank=3)
    assert r.mAP == pytest.approx(113 / 360, abs=1e-15)
    r = evaluate_ranking(DISTMAT[:1], Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS, ap="standard", max_rank=3)
    assert r.mAP == pytest.approx(37 / 90, abs=1e-15)
    np.testing.assert_array_equal(r.cmc, [0, 0, 1])


def test_ties_follow_gallery_index_not_sort_algorithm():
    # Reversing the tied block's indices changes which image is first among equals.
    g_pids = np.array([5, 1, 5])
    g_cams = np.array([0, 0, 0])
    d = np.zeros((1, 3), dtype=np.float32)
    r = evaluate_ranking(d, [1], g_pids, [1], g_cams, max_rank=3)
    np.testing.assert_array_equal(r.cmc, [0, 1, 1])
    assert r.mAP == pytest.approx(0.5)
    r = evaluate_ranking(d, [5], g_pids, [1], g_cams, max_rank=3)
    np.testing.assert_array_equal(r.cmc, [1, 1, 1])
    assert r.mAP == pytest.approx((1 + 2 / 3) / 2)
    assert r.mINP == pytest.approx(2 / 3)


def test_distractors_are_wrong_matches_and_minus_one_is_junk():
    g_pids = np.array([0, -1, 7])
    g_cams = np.array([1, 1, 1])
    d = np.array([[0.1, 0.2, 0.3]])
    r = evaluate_ranking(d, [7], g_pids, [2], g_cams, max_rank=3)
    assert r.first_rank.tolist() == [1]  # behind the distractor, the -1 image removed
    np.testing.assert_array_equal(r.cmc, [0, 1, 1])
    assert r.mAP == pytest.approx(0.5)
    assert evaluate_ranking(d, [7], g_pids, [2], g_cams, ap="market1501").mAP == pytest.approx(0.25)


def test_integer_and_float64_distances_give_same_result():
    a = evaluate_ranking(DISTMAT.astype(np.float64), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    b = evaluate_ranking((DISTMAT * 10).round().astype(np.int32), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    np.testing.assert_array_equal(a.cmc, b.cmc)
    np.testing.assert_array_equal(a.ap, b.ap)
    assert a.cmc.shape == (50,)


def test_large_correct_match_sets_use_the_sort_path_with_same_result():
    rng = np.random.default_rng(3)
    g_pids = np.concatenate([np.ones(600, dtype=np.int64), rng.integers(2, 10, 400), -np.ones(50, dtype=np.int64)])
    g_cams = rng.integers(0, 3, g_pids.size)
    d = rng.integers(0, 40, (3, g_pids.size)).astype(np.float32)  # many ties
    q_pids, q_cams = np.array([1, 1, 3]), np.array([0, 1, 2])
    r = evaluate_ranking(d, q_pids, g_pids, q_cams, g_cams, ap="market1501")
    # Reference: full stable sort.
    for i, (qp, qc) in enumerate(zip(q_pids, q_cams)):
        order = np.argsort(d[i], kind="stable")
        keep = ~(((g_pids[order] == qp) & (g_cams[order] == qc)) | (g_pids[order] == -1))
        matches = g_pids[order][keep] == qp
        assert r.first_rank[i] == np.flatnonzero(matches)[0]
        assert r.inp[i] == pytest.approx(matches.sum() / (np.flatnonzero(matches)[-1] + 1), abs=1e-14)


def test_transposed_storage_gives_same_result():
    a = evaluate_ranking(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, ap="market1501")
    b = evaluate_ranking(np.asfortranarray(DISTMAT), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, ap="market1501")
    np.testing.assert_array_equal(a.ap, b.ap)
    np.testing.assert_array_equal(a.cmc, b.cmc)
