"""Blocks of query rows merged equal one call; CUHK03 single gallery shot; bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_eval.evaluation import evaluate_ranking, merge_query_stats, query_stats, summarize


def random_problem(seed, nq=40, ng=120, num_ids=12):
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(-1, num_ids, ng)
    g_cams = rng.integers(0, 3, ng)
    q_pids = rng.integers(-1, num_ids, nq)
    q_cams = rng.integers(0, 3, nq)
    distmat = rng.integers(0, 30, (nq, ng)).astype(np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


def assert_same_result(a, b):
    np.testing.assert_array_equal(a.cmc, b.cmc)
    np.testing.assert_array_equal(a.ap, b.ap)
    np.testing.assert_array_equal(a.inp, b.inp)
    np.testing.assert_array_equal(a.valid, b.valid)
    assert a.mAP == b.mAP and a.mINP == b.mINP and a.num_valid == b.num_valid


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(1, 39), max_size=5),
    single=st.booleans(),
    flavour=st.sampled_from(["standard", "market1501"]),
)
def test_blocks_merged_equal_one_call(seed, cuts, single, flavour):
    distmat, q_pids, g_pids, q_cams, g_cams = random_problem(seed)
    whole = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, ap=flavour, max_rank=20,
                             single_gallery_shot=single, repeats=3, seed=5)
    bounds = [0, *sorted(set(cuts)), distmat.shape[0]]
    parts = [
        query_stats(distmat[a:b], q_pids[a:b], g_pids, q_cams[a:b], g_cams, query_offset=a,
                    single_gallery_shot=single, repeats=3, seed=5)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    merged = summarize(merge_query_stats(parts), num_gallery=distmat.shape[1], ap=flavour, max_rank=20)
    assert_same_result(whole, merged)
    # Internal blocking gives the same too.
    small = query_stats(distmat, q_pids, g_pids, q_cams, g_cams, block_rows=3,
                        single_gallery_shot=single, repeats=3, seed=5)
    assert_same_result(whole, summarize(small, distmat.shape[1], ap=flavour, max_rank=20))


def test_merge_rejects_mixed_parts():
    distmat, q_pids, g_pids, q_cams, g_cams = random_problem(0)
    a = query_stats(distmat, q_pids, g_pids, q_cams, g_cams)
    b = query_stats(distmat, q_pids, g_pids, q_cams, g_cams, single_gallery_shot=True)
    with pytest.raises(ValueError, match="single-gallery-shot"):
        merge_query_stats([a, b])
    with pytest.raises(ValueError, match="parts"):
        merge_query_stats([])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_single_shot_equals_multi_shot_with_one_image_per_identity(seed):
    rng = np.random.default_rng(seed)
    ng = 30
    g_pids = rng.permutation(ng)  # every identity (0 included) has exactly one image
    g_pids[rng.random(ng) < 0.2] = -1  # and junk images do not count as identities
    g_cams = rng.integers(0, 2, ng)
    q_pids = rng.integers(0, ng, 25)
    q_cams = rng.integers(0, 2, 25)
    distmat = rng.integers(0, 8, (25, ng)).astype(np.float64)
    try:
        multi = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    except ValueError:
        with pytest.raises(ValueError, match="no valid query"):
            evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, single_gallery_shot=True)
        return
    single = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10,
                              single_gallery_shot=True, repeats=4, seed=seed)
    assert_same_result(multi, single)
    assert single.single_gallery_shot and single.repeats == 4


def single_shot_case():
    # Query pid 1 cam 0. Correct matches at 0.1 and 0.5; pid 2 at 0.3 and 0.7; pid 3 at 0.9.
    # Drawn match 0.1 -> rank 0; drawn 0.5 -> rank 1 if pid 2 draws 0.3, else rank 0.
    g_pids = np.array([1, 2, 1, 2, 3, 1])
    g_cams = np.array([1, 1, 1, 1, 1, 0])  # the last is same-camera junk at distance 0
    d = np.array([[0.1, 0.3, 0.5, 0.7, 0.9, 0.0]])
    return d, np.array([1]), g_pids, np.array([0]), g_cams


def test_single_shot_draws_uniformly_and_keeps_whole_gallery_ap():
    d, q_pids, g_pids, q_cams, g_cams = single_shot_case()
    r = evaluate_ranking(d, q_pids, g_pids, q_cams, g_cams, max_rank=3,
                         single_gallery_shot=True, repeats=20000, seed=1)
    assert r.cmc[0] == pytest.approx(0.75, abs=0.015)
    assert r.cmc[1] == 1.0 and r.cmc[2] == 1.0
    assert r.ap[0] == pytest.approx((1 + 2 / 3) / 2)  # on the whole gallery: matches at 0 and 2
    assert r.mINP == pytest.approx(2 / 3)


def test_single_shot_is_deterministic_for_a_seed():
    d, q_pids, g_pids, q_cams, g_cams = single_shot_case()
    runs = [
        query_stats(d, q_pids, g_pids, q_cams, g_cams, single_gallery_shot=True, repeats=64, seed=s).single_shot_rank
        for s in (3, 3, 4)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    assert set(np.unique(runs[0])) == {0, 1}


GOOD = dict(
    distmat=np.zeros((2, 3), dtype=np.float32),
    q_pids=np.array([1, 2]),
    g_pids=np.array([1, 2, 3]),
    q_camids=np.array([0, 0]),
    g_camids=np.array([1, 1, 1]),
)


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(distmat=np.zeros(3)), "distmat"),
        (dict(distmat=np.zeros((2, 3), dtype=complex)), "distmat"),
        (dict(q_pids=np.array([1, 2, 3])), "q_pids"),
        (dict(g_pids=np.array([1, 2])), "g_pids"),
        (dict(q_camids=np.array([[0, 0]])), "q_camids"),
        (dict(g_camids=np.array([1, 1])), "g_camids"),
        (dict(q_pids=np.array([1.5, 2.0])), "q_pids"),
        (dict(g_camids=np.array(["a", "b", "c"])), "g_camids"),
        (dict(g_pids=np.array([1.0, np.nan, 3.0])), "g_pids"),
        (dict(distmat=np.array([[0, np.nan, 0], [0, 0, 0]], dtype=np.float32)), "distmat"),
        (dict(distmat=np.array([[0, 0, 0], [0, 0, np.inf]])), "distmat"),
        (dict(ap="interpolated"), "ap"),
        (dict(max_rank=0), "max_rank"),
        (dict(single_gallery_shot=True, repeats=0), "repeats"),
        (dict(single_gallery_shot=True, seed=-1), "seed"),
        (dict(q_pids=np.array([7, 8])), "no valid query"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(change, name):
    with pytest.raises(ValueError, match=name):
        evaluate_ranking(**{**GOOD, **change})


def test_whole_number_float_ids_are_accepted():
    r = evaluate_ranking(**{**GOOD, "q_pids": np.array([1.0, 2.0])})
    assert r.num_valid == 2 and r.first_rank.tolist() == [0, 1]  # all tied: index order
