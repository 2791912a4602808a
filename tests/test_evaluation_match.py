"""Issue-15 parts of `match` on a hand-written cache: records and intervals, re-ranking, the fast-reid preset."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import evaluate_ranking, k_reciprocal_rerank, read_query_records
from reid_eval.experiments import MatchParams, compute_distances, match_cache
from reid_eval.experiments.compare import compare_results
from reid_eval.experiments.fastreid import run_fastreid
from reid_eval.features import list_distances, read_distances, read_split
from reid_eval.features.cache import SplitWriter, cache_key, cache_path, create_cache

SHA = "0123456789abcdef" * 4
GRID = np.array([[3, 2], [2, 1]], dtype=np.int32)  # 6 + 2 = 8 locations per image


def make_cache(tmp, with_train=True):
    """A Market-like cache of random features: 12 ids, 3 cameras, train/query/gallery."""
    settings = {"model": {"backbone": "test", "input_size": [8, 4]}, "preprocessing": {"resize": "fixed"}}
    key = cache_key("market1501", SHA, settings, "m" * 64)
    path = cache_path(tmp / "cache", "market1501", key)
    create_cache(path, {"dataset": "market1501", "dataset_root": str(tmp), "checkpoint_sha256": SHA,
                        "manifest_sha256": "m" * 64, "settings": json.dumps(settings), "cache_key": key})
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 6))
    layout = {"query": (np.repeat(np.arange(1, 13), 2), 1), "gallery": (np.repeat(np.arange(1, 13), 4), 2)}
    if with_train:
        layout["train"] = (np.repeat(np.arange(20, 40), 4), None)
    with h5py.File(path, "r+") as f:
        for split, (pids, cam) in layout.items():
            n = len(pids)
            camids = np.full(n, cam) if cam else 1 + np.arange(n) % 3
            if split == "gallery":
                camids = 2 + np.arange(n) % 2
            local = (centres[pids][:, None, :] + 0.8 * rng.normal(size=(n, 8, 6))).reshape(-1, 6).astype(np.float32)
            writer = SplitWriter(f, split, n, 6, 2)
            writer.append(
                processed=n, paths=[f"{split}/{p:04d}_c{c}_{i}.jpg" for i, (p, c) in enumerate(zip(pids, camids))],
                pids=pids, camids=camids, manifest_index=np.arange(n), grids=np.repeat(GRID[None], n, axis=0),
                local=local, counts=np.full(n, 8), foreground=rng.uniform(0.1, 1, 8 * n).astype(np.float32),
                global_features=local.reshape(n, 8, 6).mean(axis=1),
            )
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("m15"))


def test_match_writes_records_intervals_and_verification(cache, tmp_path):
    out = match_cache(cache, MatchParams(metric="fpr", resamples=200), tmp_path)
    data = json.loads(out.results_file.read_text())
    assert len(data["cmc_ci"]) == 50 and data["bootstrap"]["resamples"] == 200 and data["bootstrap"]["unit"] == "identity"
    assert data["mAP_ci"][0] <= data["mAP"] <= data["mAP_ci"][1]
    assert set(data["verification"]["tpr_at_fpr"]) == {"0.0001", "0.001", "0.01"}
    table = read_query_records(out.results_file.parent / data["query_records"])
    q = read_split(cache, "query")
    assert table["path"].tolist() == list(q.paths) and len(table) == 24
    valid = table["num_good"] > 0
    assert table.loc[valid, "ap"].mean() == pytest.approx(data["mAP"], abs=1e-12)
    assert (table.loc[valid, "first_rank"] == 1).mean() == pytest.approx(data["cmc"][0], abs=1e-12)
    assert table["top1"].between(0, 47).all()
    assert "R1 " in out.summary and "[" in out.summary


@pytest.mark.parametrize("aux", ["same", "global"])
def test_rerank_through_match(cache, tmp_path, aux):
    params = MatchParams(metric="fpr", rerank=aux, rerank_k1=5, rerank_k2=2, rerank_lambda=0.4, resamples=50)
    out = match_cache(cache, params, tmp_path)
    if aux == "same":  # (runs first: no direct compute_distances call of this test has left tiles yet)
        for name in ("fpr", "fpr__aux-query-query", "fpr__aux-gallery-gallery"):  # tiles go once stored
            assert not (cache.parent / (cache.name + ".tiles") / name).exists()
    assert out.results_file.name == f"market1501__fpr__rerank-{aux}__k1-5__k2-2__rr-lambda0.4__ckpt-01234567.json"
    qg, _ = compute_distances(cache, MatchParams(metric="fpr"))
    if aux == "same":
        stored = list_distances(cache)
        assert {"fpr", "fpr__aux-query-query", "fpr__aux-gallery-gallery"} <= set(stored)
        qq, _ = compute_distances(cache, MatchParams(metric="fpr"), splits=("query", "query"))
        gg, _ = compute_distances(cache, MatchParams(metric="fpr"), splits=("gallery", "gallery"))
        np.testing.assert_array_equal(read_distances(cache, "fpr__aux-gallery-gallery")[0], gg)
        want = k_reciprocal_rerank(qg, qq, gg, k1=5, k2=2, lambda_value=0.4)
        np.testing.assert_allclose(out.distances, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(out.distances, qg)
    q, g = read_split(cache, "query"), read_split(cache, "gallery")
    r = evaluate_ranking(out.distances, q.pids, g.pids, q.camids, g.camids)
    assert out.result.mAP == pytest.approx(r.mAP)


def test_compare_fpr_and_dsr_results(cache, tmp_path):
    a = match_cache(cache, MatchParams(metric="fpr", resamples=100), tmp_path).results_file
    b = match_cache(cache, MatchParams(metric="dsr", resamples=100), tmp_path).results_file
    c = compare_results(a, b, resamples=100)
    lines = c.lines()
    assert lines[1].startswith("R1") and lines[2].startswith("mAP")
    assert c.value_a[1] == pytest.approx(json.loads(a.read_text())["mAP"], abs=1e-12)


def test_fastreid_preset_given_and_tuned(cache, tmp_path):
    given = run_fastreid(cache, tmp_path, MatchParams(resamples=20), fuse=0.5)
    assert given.result.params.distance_name == "fpr+cosine__beta0.001__shortlist100__shortlist-by-cosine__fuse0.5__fill100"
    sweep = json.loads(given.results_file.read_text())["fuse_tuning"]["test_sweep"]
    assert sweep["optimistic"] is True and 0 <= sweep["lambda"] <= 1
    # shortlist 100 >= 48 gallery images: every entry reconstructed, so the fused matrix is the plain weighted sum
    fpr = compute_distances(cache, MatchParams(metric="fpr", beta=0.001))[0]
    cos = compute_distances(cache, MatchParams(metric="cosine"))[0]
    np.testing.assert_allclose(given.distances, 0.5 * cos + 0.5 * fpr, rtol=1e-5, atol=1e-6)
    tuned = run_fastreid(cache, tmp_path, MatchParams(resamples=20), fuse=None, tune_ids=10)
    held = json.loads(tuned.results_file.read_text())["fuse_tuning"]["held_out"]
    assert held["identities"] == 10 and tuned.result.params.fuse == held["lambda"]
    assert "optimistic" in tuned.summary


def test_fastreid_tuning_needs_a_train_split(tmp_path):
    bare = make_cache(tmp_path, with_train=False)
    with pytest.raises(ReidEvalError, match="no complete train split"):
        run_fastreid(bare, tmp_path, fuse=None)


def test_match_cli_rerank_preset_and_compare(tmp_path, capsys):
    from reid_eval_cli.main import main

    make_cache(tmp_path)
    common = ["--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "res"), "--resamples", "50"]
    assert main(["match", "--metric", "fpr", "--untrained-foreground", "--rerank", "--rerank-aux", "global", "--rerank-k1", "5", *common]) == 0
    assert "__rerank-global__k1-5" in capsys.readouterr().out
    assert main(["match", "--metric", "fpr", "--untrained-foreground", "--preset", "fastreid", "--fuse", "0.3", *common]) == 0
    out = capsys.readouterr().out
    assert "fuse0.3" in out and "optimistic test-set sweep" in out
    assert main(["match", "--metric", "dsr", *common]) == 0
    capsys.readouterr()
    res = tmp_path / "res"
    (fpr_file,) = res.glob("market1501__fpr__rerank-global*.json")
    (dsr_file,) = res.glob("market1501__dsr__ckpt-*.json")
    assert main(["compare", str(fpr_file), str(dsr_file), "--resamples", "50"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("R1")
    for bad, needle in ((["--preset", "fastreid", "--metric", "dsr"], "--metric fpr"),
                        (["--metric", "fpr", "--rerank", "--rerank-lambda", "2"], "--rerank-lambda")):
        assert main(["match", *bad, *common]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
