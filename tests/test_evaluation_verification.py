"""TPR at FPR against a brute-force search over every threshold, on pairs listed one by one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_eval.evaluation.verification import tpr_at_fpr


def brute_force(d, qp, gp, qc, gc, fprs):
    pos, neg = [], []
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            if gp[j] == -1 or (gp[j] == qp[i] and gc[j] == qc[i]):
                continue
            (pos if gp[j] == qp[i] else neg).append(float(d[i, j]))
    pos, neg = np.array(pos), np.array(neg)
    out = []
    for f in fprs:
        allowed = math.floor(f * len(neg))
        best = 0.0
        for t in list(np.unique(np.concatenate([pos, neg]))) + [np.inf]:
            if np.count_nonzero(neg < t) <= allowed:
                best = max(best, np.count_nonzero(pos < t) / len(pos))
        out.append(best)
    return out, len(pos), len(neg)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5))
def test_matches_brute_force_threshold_search(seed, block_rows):
    rng = np.random.default_rng(seed)
    nq, ng = 7, 15
    d = rng.integers(0, 6, (nq, ng)).astype(np.float64)  # ties on purpose
    gp, gc = rng.integers(-1, 4, ng), rng.integers(1, 3, ng)
    qp, qc = rng.integers(0, 4, nq), rng.integers(1, 3, nq)
    fprs = (0.05, 0.2, 0.5)
    want, n_pos, n_neg = brute_force(d, qp, gp, qc, gc, fprs)
    if n_pos == 0 or n_neg == 0:
        with pytest.raises(ValueError, match="positive and negative"):
            tpr_at_fpr(d, qp, gp, qc, gc, fprs)
        return
    got = tpr_at_fpr(d, qp, gp, qc, gc, fprs, block_rows=block_rows)
    assert got.num_positive == n_pos and got.num_negative == n_neg
    assert list(got.tpr) == pytest.approx(want, abs=1e-15)


def test_hand_built_operating_points():
    # one query (pid 1, cam 1); gallery: positives at 0.1 and 0.5, negatives at 0.2, 0.3, 0.4, 0.6, junk at 0.0
    d = np.array([[0.1, 0.5, 0.2, 0.3, 0.4, 0.6, 0.0]])
    gp = np.array([1, 1, 2, 3, 4, 5, 1])
    gc = np.array([2, 2, 1, 1, 1, 1, 1])
    r = tpr_at_fpr(d, np.array([1]), gp, np.array([1]), gc, fprs=(0.1, 0.25, 0.75))
    # 4 negatives: FPR 0.1 allows 0 -> t = 0.2 -> TPR 1/2; 0.25 allows 1 -> t = 0.3; 0.75 allows 3 -> t = 0.6 -> TPR 1
    assert r.tpr == (0.5, 0.5, 1.0) and r.threshold == (0.2, 0.3, 0.6)
    assert r.as_record()["tpr_at_fpr"] == {"0.1": 0.5, "0.25": 0.5, "0.75": 1.0}


def test_bad_fpr_is_an_error():
    with pytest.raises(ValueError, match="fprs"):
        tpr_at_fpr(np.ones((1, 2)), [1], [1, 2], [1], [2, 2], fprs=(0.0,))
