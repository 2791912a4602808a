"""evaluate_ranking against a plain per-query loop over a full stable argsort, on random small cases."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_eval.evaluation import evaluate_ranking
from reid_eval.evaluation import ranking


def reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """torchreid-style loop; the Market AP is the official compute_AP.m loop."""
    valid, cmcs, ap_std, ap_mkt, inps = [], [], [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        junk = ((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])) | (g_pids[order] == -1)
        matches = (g_pids[order] == q_pids[i])[~junk].astype(np.int64)
        if not matches.any():
            valid.append(False)
            continue
        valid.append(True)
        cmc = np.minimum(matches.cumsum(), 1)
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - cmc.size), cmc[-1])])[:max_rank]
        cmcs.append(cmc)
        precision_curve = matches.cumsum() / np.arange(1, matches.size + 1)
        ap_std.append((precision_curve * matches).sum() / matches.sum())
        ngood = matches.sum()
        ap, old_recall, old_precision, hits = 0.0, 0.0, 1.0, 0
        for j, m in enumerate(matches):
            hits += m
            recall, precision = hits / ngood, hits / (j + 1)
            ap += (recall - old_recall) * (old_precision + precision) / 2
            old_recall, old_precision = recall, precision
            if hits == ngood:
                break
        ap_mkt.append(ap)
        inps.append(ngood / (np.flatnonzero(matches)[-1] + 1))
    return np.array(valid), np.array(cmcs), np.array(ap_std), np.array(ap_mkt), np.array(inps)


@st.composite
def problems(draw):
    nq = draw(st.integers(1, 6))
    ng = draw(st.integers(1, 14))
    ids = st.integers(-1, 3)
    q_pids = np.array(draw(st.lists(ids, min_size=nq, max_size=nq)))
    g_pids = np.array(draw(st.lists(ids, min_size=ng, max_size=ng)))
    q_cams = np.array(draw(st.lists(st.integers(0, 2), min_size=nq, max_size=nq)))
    g_cams = np.array(draw(st.lists(st.integers(0, 2), min_size=ng, max_size=ng)))
    # Few distinct integer values: ties everywhere.
    values = draw(st.lists(st.integers(0, 4), min_size=nq * ng, max_size=nq * ng))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    distmat = np.array(values, dtype=dtype).reshape(nq, ng)
    max_rank = draw(st.integers(1, 16))
    return distmat, q_pids, g_pids, q_cams, g_cams, max_rank


@pytest.mark.parametrize("counting_max_good", [ranking._COUNTING_MAX_GOOD, 0], ids=["counting", "sorting"])
@settings(max_examples=300, deadline=None)
@given(problem=problems())
def test_agrees_with_per_query_argsort_loop(problem, counting_max_good):
    distmat, q_pids, g_pids, q_cams, g_cams, max_rank = problem
    valid, cmcs, ap_std, ap_mkt, inps = reference(distmat, q_pids, g_pids, q_cams, g_cams, max_rank)
    with mock.patch.object(ranking, "_COUNTING_MAX_GOOD", counting_max_good):
        if not valid.any():
            with pytest.raises(ValueError, match="no valid query"):
                evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
            return
        std = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, ap="standard", max_rank=max_rank)
        mkt = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, ap="market1501-valid", max_rank=max_rank)
        official = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, ap="market1501", max_rank=max_rank)
    np.testing.assert_array_equal(std.valid, valid)
    np.testing.assert_allclose(std.cmc, cmcs.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std.ap, ap_std, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mkt.ap, ap_mkt, rtol=0, atol=1e-12)
    np.testing.assert_allclose(std.inp, inps, rtol=0, atol=1e-12)
    assert std.mAP == pytest.approx(ap_std.mean(), abs=1e-12)
    assert mkt.mAP == pytest.approx(ap_mkt.mean(), abs=1e-12)
    assert std.mINP == pytest.approx(inps.mean(), abs=1e-12)
    assert std.cmc.shape == (max_rank,)
    np.testing.assert_array_equal(std.cmc, mkt.cmc)
    # the official averages: every query, one without a correct match counting 0
    nq = len(q_pids)
    assert official.mAP == pytest.approx(ap_mkt.sum() / nq, abs=1e-12)
    np.testing.assert_allclose(official.cmc, cmcs.sum(axis=0) / nq, rtol=0, atol=1e-12)


def test_agrees_on_a_random_market_like_case():
    rng = np.random.default_rng(7)
    g_pids = rng.integers(-1, 40, 600)
    g_cams = rng.integers(1, 7, 600)
    q_pids = rng.integers(1, 40, 50)
    q_cams = rng.integers(1, 7, 50)
    distmat = rng.random((50, 600)).astype(np.float32)
    valid, cmcs, ap_std, ap_mkt, inps = reference(distmat, q_pids, g_pids, q_cams, g_cams, 50)
    r = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, ap="market1501-valid")
    np.testing.assert_array_equal(r.valid, valid)
    np.testing.assert_allclose(r.cmc, cmcs.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.ap, ap_mkt, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.inp, inps, rtol=0, atol=1e-12)
