"""The fast-reid preset: its parameters, the held-out tuning split, and the λ sweep."""

from __future__ import annotations

import numpy as np
import pytest

from reid_eval.evaluation import evaluate_ranking
from reid_eval.experiments.fastreid import best_of, fastreid_params, held_out_split, sweep_lambda, tuning_record


def test_preset_is_the_existing_options_with_fastreid_values():
    p = fastreid_params(0.3)
    assert (p.metric, p.beta, p.shortlist, p.shortlist_metric, p.shortlist_fill, p.fuse, p.fuse_global) == (
        "fpr", 0.001, 100, "cosine", 100.0, 0.3, "cosine")
    assert p.distance_name == "fpr+cosine__beta0.001__shortlist100__shortlist-by-cosine__fuse0.3__fill100"


def test_held_out_split_is_seeded_and_every_query_has_a_match():
    rng = np.random.default_rng(0)
    pids = rng.integers(0, 300, 3000)
    camids = rng.integers(1, 4, 3000)
    pids[camids == 3] = 999  # one identity seen by a single camera only... plus others
    q, g = held_out_split(pids, camids, max_ids=50, seed=4)
    q2, g2 = held_out_split(pids, camids, max_ids=50, seed=4)
    assert q.tolist() == q2.tolist() and g.tolist() == g2.tolist()
    assert len(np.unique(pids[q])) == len(q) == 50
    assert not set(q) & set(g) and set(np.unique(pids[g])) == set(np.unique(pids[q]))
    for row in q:
        assert np.any((pids[g] == pids[row]) & (camids[g] != camids[row]))
    with pytest.raises(ValueError, match="two cameras"):
        held_out_split(np.array([1, 1, 2]), np.array([1, 1, 1]))


def test_sweep_ends_equal_the_single_matrices_and_ties_keep_the_smallest_lambda():
    rng = np.random.default_rng(1)
    gp, gc = rng.integers(0, 10, 50), np.full(50, 2)
    qp, qc = rng.integers(0, 10, 20), np.ones(20, int)
    glob, local = rng.random((20, 50)), rng.random((20, 50))
    sweep = sweep_lambda(glob, local, qp, gp, qc, gc, grid=(0.0, 0.5, 1.0))
    assert sweep[0]["R1"] == evaluate_ranking(glob.astype(np.float32), qp, gp, qc, gc).cmc[0]
    assert sweep[2]["mAP"] == pytest.approx(evaluate_ranking(local.astype(np.float32), qp, gp, qc, gc).mAP, abs=1e-12)
    tied = [{"lambda": 0.1, "R1": 0.5, "mAP": 0.1}, {"lambda": 0.2, "R1": 0.5, "mAP": 0.9}, {"lambda": 0.3, "R1": 0.4, "mAP": 0.2}]
    assert best_of(tied)["lambda"] == 0.1
    record = tuning_record({"lambda": 0.2}, tied)
    assert record["test_sweep"]["optimistic"] is True and record["test_sweep"]["lambda"] == 0.1
