"""Identity bootstrap: exact agreement with a plain loop over resamples, pairing, and the per-query columns."""

from __future__ import annotations

import numpy as np
import pytest

from reid_eval.evaluation import evaluate_ranking, query_stats
from reid_eval.evaluation.bootstrap import (
    bootstrap_means,
    identity_draws,
    interval_record,
    paired_difference,
    per_query_values,
)


def loop_bootstrap(values, pids, resamples, seed):
    """Resample identities with a loop: gather every query of each drawn identity, take the mean."""
    uids = np.unique(pids)
    draws = identity_draws(len(uids), resamples, seed)
    out = []
    for row in draws:
        rows = np.concatenate([np.flatnonzero(pids == uids[u]) for u in row])
        out.append(values[rows].mean(axis=0))
    return np.array(out)


def test_vectorised_resamples_equal_the_plain_loop():
    rng = np.random.default_rng(0)
    pids = rng.choice([3, 7, 7, 7, 11, 12, 12, 40, 41], size=25)
    values = np.column_stack([rng.integers(0, 2, 25), rng.random(25)])
    boot = bootstrap_means(values, pids, resamples=200, seed=4)
    want = loop_bootstrap(values, pids, 200, 4)
    np.testing.assert_allclose(boot.samples, want, rtol=0, atol=1e-14)
    np.testing.assert_allclose(boot.low, np.quantile(want, 0.025, axis=0), atol=1e-14)
    np.testing.assert_allclose(boot.high, np.quantile(want, 0.975, axis=0), atol=1e-14)
    assert boot.point.tolist() == pytest.approx(values.mean(axis=0).tolist(), abs=1e-15)
    assert boot.num_identities == len(np.unique(pids))


def test_whole_identities_move_together():
    # two identities, each all-correct or all-wrong: every resample is 0, 1/2 or 1 weighted by query counts
    pids = np.array([1, 1, 1, 2])
    values = np.array([1.0, 1.0, 1.0, 0.0])
    boot = bootstrap_means(values, pids, resamples=500, seed=1)
    assert set(np.round(boot.samples[:, 0], 12)) <= {0.0, 0.75, 1.0}


def test_seed_fixes_the_interval_and_level_widens_it():
    rng = np.random.default_rng(2)
    pids, values = rng.integers(0, 30, 120), rng.random(120)
    a = bootstrap_means(values, pids, seed=9)
    b = bootstrap_means(values, pids, seed=9)
    assert a.low.tolist() == b.low.tolist() and a.high.tolist() == b.high.tolist()
    wide = bootstrap_means(values, pids, seed=9, level=0.99)
    assert wide.low[0] <= a.low[0] < a.point[0] < a.high[0] <= wide.high[0]


def test_paired_difference_uses_the_same_draws():
    rng = np.random.default_rng(3)
    pids = rng.integers(0, 15, 60)
    a, b = rng.random((60, 2)), rng.random((60, 2))
    diff = paired_difference(a, b, pids, resamples=300, seed=5)
    sa = loop_bootstrap(a, pids, 300, 5)
    sb = loop_bootstrap(b, pids, 300, 5)
    np.testing.assert_allclose(diff.point, a.mean(0) - b.mean(0), atol=1e-14)
    np.testing.assert_allclose(diff.low, np.quantile(sa - sb, 0.025, axis=0), atol=1e-12)
    np.testing.assert_allclose(diff.share_a_better, ((sa - sb) > 1e-12).mean(axis=0))
    # A compared with itself: zero difference, never better
    same = paired_difference(a, a, pids, resamples=50)
    assert same.point.tolist() == [0, 0] and same.share_a_better.tolist() == [0, 0] and same.share_tied.tolist() == [1, 1]


@pytest.mark.parametrize("single_shot", [False, True])
def test_per_query_columns_average_to_the_summary(single_shot):
    rng = np.random.default_rng(4)
    d = rng.random((40, 60))
    gp, gc = rng.integers(1, 10, 60), rng.integers(1, 3, 60)
    qp, qc = rng.integers(1, 12, 40), rng.integers(1, 3, 40)
    stats = query_stats(d, qp, gp, qc, gc, single_gallery_shot=single_shot, repeats=4)
    values, valid = per_query_values(stats, ap="market1501", max_rank=20)
    r = evaluate_ranking(d, qp, gp, qc, gc, ap="market1501", max_rank=20, single_gallery_shot=single_shot, repeats=4)
    np.testing.assert_allclose(values.mean(axis=0), np.concatenate([r.cmc, [r.mAP, r.mINP]]), atol=1e-14)
    record = interval_record(bootstrap_means(values, qp[valid], resamples=100), 20)
    assert len(record["cmc_ci"]) == 20 and record["bootstrap"]["unit"] == "identity"
    assert all(lo <= hi for lo, hi in record["cmc_ci"])


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_means(np.array([1.0, np.nan]), np.array([1, 2]))
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_means(np.ones(3), np.arange(3), resamples=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_means(np.ones(3), np.arange(3), level=1.0)
    with pytest.raises(ValueError, match="same queries"):
        paired_difference(np.ones((3, 1)), np.ones((3, 2)), np.arange(3))
