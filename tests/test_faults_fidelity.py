"""Faults that must lose nothing, records that must agree, and the field's reference code exactly.

Stored matrices are all-or-nothing and one bad entry breaks no reader;
every numeric option is bounded where it is parsed; a full disk names the
file, leaves no temporary file and keeps what was there; a per-query table
that is not the one its results file recorded is refused; the official
Market-1501 averages (all queries) against a transliteration of the MATLAB
code; re-ranking an asymmetric matrix against a transliteration of the
authors' release.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from reid_eval.atomic import write_atomically
from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import evaluate_ranking, k_reciprocal_rerank, query_stats, summarize
from reid_eval.evaluation.bootstrap import bootstrap_means, per_query_values
from reid_eval.experiments import MatchParams, match_cache
from reid_eval.experiments.compare import compare_results, paired_values
from reid_eval.experiments.record import MatchResult
from reid_eval.features import list_distances, read_distances, write_distances
from reid_eval.features.cache import PARTIAL_SUFFIX
from reid_eval.features.cache_io import CacheWriteError
from reid_eval_cli.main import main
from test_evaluation_match import make_cache


@pytest.fixture
def cache(tmp_path):
    return make_cache(tmp_path, with_train=False)


def _entries(cache_file: Path) -> list[str]:
    with h5py.File(cache_file, "r") as f:
        return sorted(f["distances"]) if "distances" in f else []


# ------------------------------------------------------------------ stored matrices: all or nothing


def test_an_interrupted_matrix_write_keeps_the_old_matrix_and_every_reader_works(cache, monkeypatch):
    old = np.arange(24 * 48, dtype=np.float32).reshape(24, 48)
    write_distances(cache, "m", old, {"seconds": 1.0})
    real = h5py.AttributeManager.__setitem__

    def interrupted(self, key, value):
        if key == "params":  # the last attribute: the window in which the old code had already deleted "m"
            raise KeyboardInterrupt
        real(self, key, value)

    monkeypatch.setattr(h5py.AttributeManager, "__setitem__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_distances(cache, "m", old + 1, {"seconds": 2.0})
    monkeypatch.undo()
    assert list_distances(cache) == {"m": {"seconds": 1.0}}
    matrix, params = read_distances(cache, "m")
    assert np.array_equal(matrix, old) and params == {"seconds": 1.0}
    write_distances(cache, "m", old + 1, {"seconds": 2.0})  # the next write removes the half-written entry
    assert _entries(cache) == ["m"]
    assert np.array_equal(read_distances(cache, "m")[0], old + 1)


def test_a_parameter_without_an_hdf5_type_is_stored(cache):
    huge = 10**20  # what `--rerank-k1 100000000000000000000` used to reach the cache with
    write_distances(cache, "m", np.ones((2, 3)), {"k1": huge, "nested": {"a": [1, "b"]}, "none": None})
    assert list_distances(cache)["m"] == {"k1": huge, "nested": {"a": [1, "b"]}, "none": None}
    with h5py.File(cache, "r") as f:
        assert f["distances/m"].attrs["k1"] == str(huge) and f["distances/m"].attrs["none"] == "none"


def test_one_bad_entry_breaks_no_reader(cache, tmp_path):
    write_distances(cache, "good", np.ones((24, 48), np.float32), {"x": 1})
    with h5py.File(cache, "r+") as f:  # what a failed write of the old code left, and a half-written new one
        f["distances"].create_dataset("broken", data=np.zeros((24, 48), np.float32))
        f["distances"].create_dataset("fpr" + PARTIAL_SUFFIX, data=np.zeros((24, 48), np.float32))
        f["distances"]["bad-json"] = np.zeros((24, 48), np.float32)
        f["distances"]["bad-json"].attrs["params"] = "{not json"
    assert list_distances(cache) == {"good": {"x": 1}}
    with pytest.raises(ReidEvalError, match=r"distances/broken .*rerun `reid-eval match`"):
        read_distances(cache, "broken")
    with pytest.raises(ReidEvalError, match="has no distances/fpr"):
        read_distances(cache, "fpr")
    out = match_cache(cache, MatchParams(metric="euclidean", resamples=0), tmp_path / "results")
    assert out.result.mAP > 0
    write_distances(cache, "broken", np.ones((24, 48), np.float32), {"y": 2})  # replaces the bad entry
    assert sorted(list_distances(cache)) == ["broken", "euclidean", "good"] and list_distances(cache)["broken"] == {"y": 2}
    assert "fpr" + PARTIAL_SUFFIX not in _entries(cache)


def test_a_full_disk_while_storing_a_matrix_names_match_and_keeps_the_old_one(cache, monkeypatch):
    old = np.ones((24, 48), np.float32)
    write_distances(cache, "m", old, {"x": 1})

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(CacheWriteError) as info:
        write_distances(cache, "m", old * 2, {"x": 2})
    monkeypatch.undo()
    message = str(info.value)
    assert str(cache) in message and "`reid-eval match`" in message and "extract" not in message
    assert np.array_equal(read_distances(cache, "m")[0], old) and list_distances(cache) == {"m": {"x": 1}}


# ------------------------------------------------------------------ every numeric option bounded where it is parsed


@pytest.mark.parametrize(
    "args, option",
    [
        (("--metric", "euclidean", "--rerank", "--rerank-k1", "100000000000000000000"), "--rerank-k1"),
        (("--metric", "euclidean", "--rerank", "--rerank-k2", "100000000000000000000"), "--rerank-k2"),
        (("--metric", "fpr", "--memory-budget", "1e30"), "--memory-budget"),
        (("--metric", "fpr", "--resamples", "100000000"), "--resamples"),
        (("--metric", "fpr", "--shortlist", "100000000000000000000"), "--shortlist"),
        (("--metric", "fpr", "--ci-seed", "100000000000000000000"), "--ci-seed"),
        (("--metric", "fpr", "--workers", "100000"), "--workers"),  # more than this machine's cores
    ],
    ids=["k1", "k2", "memory-budget", "resamples", "shortlist", "ci-seed", "workers"],
)
def test_numeric_options_beyond_what_the_code_holds_are_refused_at_parsing(args, option, tmp_path, capsys):
    code = main(["match", *args, "--cache-dir", str(tmp_path / "no-cache"), "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and option in err.strip().splitlines()[-1], err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "kwargs, option",
    [({"rerank": "same", "rerank_k1": 10**20}, "--rerank-k1"), ({"resamples": 10**8}, "--resamples"),
     ({"shortlist": 10**20}, "--shortlist"), ({"ci_seed": 10**20}, "--ci-seed"), ({"max_rank": 10**20}, "--max-rank")],
)
def test_the_library_bounds_the_same_values(kwargs, option):
    with pytest.raises(ValueError, match=option):
        MatchParams(metric="fpr", **kwargs).validate()


def test_huge_resamples_are_refused_before_any_allocation():
    with pytest.raises(ValueError, match="resamples must be an integer in"):
        bootstrap_means(np.ones(4), np.arange(4), resamples=100_000_000)


# ------------------------------------------------------------------ full disks: name the file, no temporary, keep what was there


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs, and a function that fills it up to the last page."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root on Linux to mount a tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def fill() -> None:
        with open(folder / "filler", "ab", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC

    yield folder, fill
    # lazily: a library may still hold a descriptor of its failed write until garbage collection
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _tmp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_full_results_folder_keeps_the_results_there_and_leaves_no_temporary(cache, full_disk):
    folder, fill = full_disk
    out = match_cache(cache, MatchParams(metric="euclidean", resamples=0), folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    fill()
    with pytest.raises(ReidEvalError) as info:
        match_cache(cache, MatchParams(metric="euclidean", resamples=0), folder)
    message = str(info.value)
    assert "No space left on device" in message and str(folder) in message and "\n" not in message
    assert "kept" in message and "`reid-eval match`" in message
    assert _tmp_files(folder) == []
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "filler"} == before
    assert MatchResult.read(out.results_file).mAP == out.result.mAP


@pytest.mark.parametrize("kind", ["png", "pdf", "md"])
def test_full_disk_for_report_files_names_them_and_leaves_no_temporary(full_disk, kind):
    import matplotlib.pyplot as plt

    from reid_eval.report.figures import _save
    from reid_eval.report.tables import write_table  # noqa: F401 - the same helper writes tables

    folder, fill = full_disk
    fill()
    if kind == "md":
        from reid_eval.atomic import write_text_atomically

        with pytest.raises(ReidEvalError, match=r"report .*report\.md: No space left on device"):
            write_text_atomically(folder / "report.md", "x" * 10000, "report", "`reid-eval report`")
    else:
        fig = plt.figure(figsize=(2, 2))
        with pytest.raises(ReidEvalError, match=r"figure .*fig\.png: No space left on device"):
            _save(fig, folder / "fig")
    assert _tmp_files(folder) == [] and sorted(p.name for p in folder.iterdir()) == ["filler"]


def test_full_disk_for_a_checkpoint_leaves_no_temporary_and_keeps_the_old_one(full_disk):
    pytest.importorskip("torch")
    from reid_eval.model import ModelConfig, build_model, save_checkpoint

    folder, fill = full_disk
    config = ModelConfig(backbone="resnet18")
    model = build_model(config)
    path = folder / "checkpoint.pt"
    path.write_bytes(b"the old checkpoint")
    fill()
    with pytest.raises(ReidEvalError) as info:
        save_checkpoint(path, model, config)
    message = str(info.value)
    assert str(path) in message and "No space left on device" in message and "enforce fail" not in message
    assert _tmp_files(folder) == [] and path.read_bytes() == b"the old checkpoint"


def test_write_atomically_removes_the_temporary_on_any_failure(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")

    def fails(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, fails)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


# ------------------------------------------------------------------ the results JSON records its per-query table


def test_compare_refuses_a_per_query_table_that_is_not_the_recorded_one(cache, tmp_path):
    results = tmp_path / "results"
    a = match_cache(cache, MatchParams(metric="fpr", resamples=0), results).results_file
    b = match_cache(cache, MatchParams(metric="euclidean", resamples=0), results).results_file
    data = json.loads(a.read_text())
    assert len(data["query_records_sha256"]) == 64
    assert compare_results(a, b, resamples=50).num_query == 24
    table_file = a.parent / data["query_records"]
    table = pd.read_csv(table_file)
    table["ap"] = 1.0  # an edited table: compare used to print mAP 100 %
    table.to_csv(table_file, index=False)
    with pytest.raises(ReidEvalError, match=rf"{table_file.name} is not the per-query table {a.name}"):
        compare_results(a, b, resamples=50)


def test_a_failed_results_write_leaves_no_disagreeing_pair(cache, tmp_path, monkeypatch):
    results = tmp_path / "results"
    first = match_cache(cache, MatchParams(metric="fpr", resamples=0), results)
    other = match_cache(cache, MatchParams(metric="euclidean", resamples=0), results, execution=None)
    kept = first.results_file.read_bytes()

    def no_space(self, results_dir):
        raise ReidEvalError("cannot write results file: No space left on device")

    # a later run with other numbers (here: the table written for another matrix) replaces the table,
    # then cannot write its JSON: the older JSON stays, and its table is no longer the one it recorded
    monkeypatch.setattr(MatchResult, "write", no_space)
    monkeypatch.setattr("reid_eval.experiments.match.records_path", lambda _: first.results_file.parent / first.result.query_records)
    with pytest.raises(ReidEvalError, match="No space"):
        match_cache(cache, MatchParams(metric="cosine", resamples=0), results)
    monkeypatch.undo()
    assert first.results_file.read_bytes() == kept
    with pytest.raises(ReidEvalError, match="not the per-query table"):
        compare_results(first.results_file, other.results_file, resamples=50)


def test_a_results_file_from_before_the_digest_is_compared_unchecked(cache, tmp_path):
    results = tmp_path / "results"
    a = match_cache(cache, MatchParams(metric="fpr", resamples=0), results).results_file
    b = match_cache(cache, MatchParams(metric="euclidean", resamples=0), results).results_file
    data = json.loads(a.read_text())
    del data["query_records_sha256"]
    a.write_text(json.dumps(data))
    assert compare_results(a, b, resamples=50).num_valid == 24


# ------------------------------------------------------------------ --ap market1501: the official code's averages


def official_market1501(distmat, q_pids, g_pids, q_cams, g_cams):
    """evaluation.m and compute_AP.m of the official Market-1501 code, line by line (0-based here).

    A query without a correct match keeps ap = 0 and a CMC row of zeros, and
    CMC and mAP are means over all queries.
    """
    nq, ng = distmat.shape
    aps, cmcs = np.zeros(nq), np.zeros((nq, ng))
    for k in range(nq):
        good = np.flatnonzero((g_pids == q_pids[k]) & (g_cams != q_cams[k]))
        junk = np.concatenate([np.flatnonzero(g_pids == -1), np.flatnonzero((g_pids == q_pids[k]) & (g_cams == q_cams[k]))])
        index = np.argsort(distmat[k], kind="stable")  # MATLAB's sort is stable
        ngood = len(good)
        if ngood == 0:
            continue
        old_recall, old_precision, ap, intersect_size, j, good_now, njunk = 0.0, 1.0, 0.0, 0, 0, 0, 0
        for n in range(ng):
            flag = False
            if index[n] in good:
                cmcs[k, n - njunk:] = 1
                flag = True
                good_now += 1
            if index[n] in junk:
                njunk += 1
                continue
            if flag:
                intersect_size += 1
            recall = intersect_size / ngood
            precision = intersect_size / (j + 1)
            ap += (recall - old_recall) * ((old_precision + precision) / 2)
            old_recall, old_precision = recall, precision
            j += 1
            if good_now == ngood:
                break
        aps[k] = ap
    return cmcs.mean(axis=0), aps.mean(), aps


@pytest.mark.parametrize("seed", range(6))
def test_market1501_flavour_is_the_official_code_with_queries_without_a_match(seed):
    rng = np.random.default_rng(seed)
    nq, ng = 40, 120
    g_pids, g_cams = rng.integers(-1, 25, ng), rng.integers(1, 4, ng)
    q_pids, q_cams = rng.integers(0, 32, nq), rng.integers(1, 4, nq)  # ids above 24 have no gallery image
    distmat = rng.random((nq, ng))
    cmc, mAP, aps = official_market1501(distmat, q_pids, g_pids, q_cams, g_cams)
    r = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, ap="market1501", max_rank=ng)
    assert 0 < r.num_valid < nq
    np.testing.assert_allclose(r.cmc, cmc, rtol=0, atol=1e-12)
    assert r.mAP == pytest.approx(mAP, abs=1e-12)
    np.testing.assert_allclose(r.ap, aps[r.valid], rtol=0, atol=1e-12)
    # the valid-only average keeps its own name
    v = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, ap="market1501-valid", max_rank=ng)
    assert v.mAP == pytest.approx(aps[v.valid].mean(), abs=1e-12)
    np.testing.assert_allclose(v.cmc, cmc * nq / v.num_valid, rtol=0, atol=1e-12)
    # the bootstrap resamples the queries the averages divide by: its columns' means are the point estimates
    stats = query_stats(distmat, q_pids, g_pids, q_cams, g_cams)
    values, rows = per_query_values(stats, ap="market1501", max_rank=10)
    summary = summarize(stats, ng, ap="market1501", max_rank=10)
    assert rows.all() and values.shape[0] == nq
    np.testing.assert_allclose(values.mean(axis=0), [*summary.cmc, summary.mAP, summary.mINP], rtol=0, atol=1e-12)


def test_official_results_never_take_the_name_or_the_meaning_of_an_earlier_file():
    official = MatchParams(metric="fpr", ap="market1501", checkpoint_sha256="ab" * 32)
    assert official.results_file_name("partial_reid") == "partial_reid__fpr__ap-market1501-official__ckpt-abababab.json"
    result = MatchResult("partial_reid", official, (0.4, 1.0), 0.42, 0.3, 5, 3, 8)
    data = result.to_json()
    assert data["averaged_over"] == "all" and MatchResult.from_json(data).params.ap == "market1501"
    legacy = {k: v for k, v in data.items() if k != "averaged_over"}  # written before the official averages
    assert MatchResult.from_json(legacy).params.ap == "market1501-valid"
    with pytest.raises(ReidEvalError, match="ap_flavour standard does not average over all queries"):
        MatchResult.from_json({**data, "ap_flavour": "standard"})


def test_compare_of_official_results_counts_queries_without_a_match_as_zero():
    table = pd.DataFrame({"path": ["a", "b", "c"], "pid": [1, 2, 3], "camid": [1, 1, 1], "num_good": [1, 0, 2],
                          "first_rank": pd.array([1, pd.NA, 3], dtype="Int64"), "ap": [1.0, np.nan, 0.5],
                          "inp": [1.0, np.nan, 0.5]})
    va, vb, pids = paired_values(table, table, "a", "b", "market1501")
    assert va.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.5]] and pids.tolist() == [1, 2, 3]
    va, _, pids = paired_values(table, table, "a", "b", "market1501-valid")
    assert va.tolist() == [[1.0, 1.0], [0.0, 0.5]] and pids.tolist() == [1, 3]


# ------------------------------------------------------------------ re-ranking: the authors' release order


def release_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """zhunzhong07/person-re-ranking ``re_ranking.py`` (as torchreid and fast-reid copy it), transliterated
    statement by statement, in float64 instead of the release's float32."""
    original_dist = np.concatenate([np.concatenate([q_q_dist, q_g_dist], axis=1),
                                    np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float64)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    query_num = q_g_dist.shape[0]
    gallery_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    all_num = gallery_num
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, :int(np.around(k1 / 2.0)) + 1]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, :int(np.around(k1 / 2.0)) + 1]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2.0 / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])
    jaccard_dist = np.zeros_like(original_dist)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num])
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (6, 3, 0.5), (4, 1, 0.1)])
def test_asymmetric_rerank_follows_the_authors_release(k1, k2, lam):
    rng = np.random.default_rng(k1 + k2)
    Q, G = 11, 37
    # FPR-like: asymmetric, positive, each image nearest itself
    qg = rng.random((Q, G)) + 0.2
    qq, gg = rng.random((Q, Q)) + 0.2, rng.random((G, G)) + 0.2
    np.fill_diagonal(qq, 0.01)
    np.fill_diagonal(gg, 0.01)
    got = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam, block_rows=5)
    want = release_re_ranking(qg, qq, gg, k1, k2, lam)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # and the order matters: the same matrices read by rows give another result
    rows = release_re_ranking(qg, qq.T, gg.T, k1, k2, lam)
    assert np.abs(rows - want).max() > 1e-3


# ------------------------------------------------------------------ messages that name the file, the table or the option


def test_a_per_query_table_with_a_non_number_names_the_file_column_and_row(cache, tmp_path):
    from reid_eval.evaluation import read_query_records

    results = tmp_path / "results"
    a = match_cache(cache, MatchParams(metric="fpr", resamples=0), results).results_file
    b = match_cache(cache, MatchParams(metric="euclidean", resamples=0), results).results_file
    data = json.loads(a.read_text())
    del data["query_records_sha256"]  # a results file from before the digest: the table itself is checked
    a.write_text(json.dumps(data))
    table_file = a.parent / data["query_records"]
    table = pd.read_csv(table_file, dtype=str, keep_default_na=False)
    table.loc[3, "ap"] = "abc"
    table.to_csv(table_file, index=False)
    with pytest.raises(ValueError, match=rf"{table_file}: column ap of query row 3 holds 'abc', not a number"):
        read_query_records(table_file)
    with pytest.raises(ReidEvalError, match=r"column ap of query row 3"):
        compare_results(a, b, resamples=50)


def test_a_cache_with_string_pids_or_without_a_table_is_named(cache):
    from reid_eval.features import read_split_index

    with h5py.File(cache, "r+") as f:
        pids = f["query/pid"][...]
        del f["query/pid"]
        f["query"].create_dataset("pid", data=np.array([str(v) for v in pids], dtype=h5py.string_dtype()))
        del f["gallery/path"]
    with pytest.raises(ReidEvalError, match=rf"cache {cache} split query: table pid holds .* not integer ids"):
        read_split_index(cache, "query")
    with pytest.raises(ReidEvalError, match=rf"cache {cache} split gallery is damaged \(no path table\)"):
        read_split_index(cache, "gallery")


def test_exif_orientation_is_applied_and_recorded_in_the_cache_key(tmp_path):
    from PIL import Image

    from reid_eval.features.images import load_rgb, oriented_size
    from reid_eval.features.preprocess import Preprocessing

    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, :5] = 255  # a white band on the left of the stored (sideways) picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": a phone portrait stored landscape
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100)
    upright = np.asarray(load_rgb(tmp_path / "phone.jpg"))
    assert upright.shape == (30, 10, 3)  # portrait: 30 high, 10 wide
    assert upright[:5].mean() > 200 and upright[-5:].mean() < 50  # the band is now on top
    with Image.open(tmp_path / "phone.jpg") as img:
        assert oriented_size(img) == (10, 30)
    assert Preprocessing(resize="fixed", size=(64, 32), stride=16, min_height=32).to_dict()["orientation"] == "exif"


def test_pil_warnings_never_reach_the_user_of_the_report(tmp_path, monkeypatch):
    import warnings

    from PIL import Image

    from reid_eval.report.figures import load_tile

    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 pixels: PIL's DecompressionBombWarning, not its error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tile, ok = load_tile(tmp_path / "big.png")
    assert ok and tile.ndim == 3


def test_full_disk_for_a_mask_names_it_and_leaves_no_temporary(full_disk):
    from reid_eval.training.masks import _write_png

    folder, fill = full_disk
    fill()
    with pytest.raises(ReidEvalError, match=r"cannot write mask .*a\.png: No space left on device"):
        _write_png(folder / "masks" / "a.png", np.zeros((64, 32), np.uint8))
    assert _tmp_files(folder) == []


def test_a_re_ranked_fpr_result_of_the_row_order_is_not_shown_as_a_current_one(tmp_path):
    from reid_eval.experiments.record import OutdatedResultError
    from reid_eval.report.results import load_results

    params = MatchParams(metric="fpr", rerank="same", checkpoint_sha256="ab" * 32)
    data = MatchResult("partial_reid", params, (0.4, 1.0), 0.42, 0.3, 5, 3, 8).to_json()
    assert MatchResult.from_json(data).params == params  # written now: current
    old = {k: v for k, v in data.items() if k != "averaged_over"}  # written before the release order
    with pytest.raises(OutdatedResultError, match=r"old\.json: re-ranked by an earlier reid-eval.*rerun"):
        MatchResult.from_json(old, "old.json")
    global_aux = MatchResult("partial_reid", dataclasses.replace(params, rerank="global"), (0.4, 1.0), 0.42, 0.3, 5, 3, 8)
    assert MatchResult.from_json({k: v for k, v in global_aux.to_json().items() if k != "averaged_over"}).params.rerank == "global"
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(data))
    warnings: list[str] = []
    assert [r.path.name for r in load_results(tmp_path, warnings.append)] == ["new.json"]
    assert len(warnings) == 1 and "old.json" in warnings[0] and "skipped" in warnings[0]


def test_compare_bounds_its_resamples_at_parsing(tmp_path, capsys):
    a = tmp_path / "a.json"
    a.write_text("{}")
    code = main(["compare", str(a), str(a), "--resamples", "100000000"])
    err = capsys.readouterr().err
    assert code == 2 and "--resamples" in err.strip().splitlines()[-1] and "Traceback" not in err


def test_report_bounds_its_top_k_at_parsing_and_the_library_too(tmp_path, capsys):
    code = main(["report", "--results-dir", str(tmp_path), "--top-k", "100000000"])
    err = capsys.readouterr().err
    assert code == 2 and "--top-k" in err.strip().splitlines()[-1] and "Traceback" not in err
    with pytest.raises(ValueError, match="top_k must be an integer in"):
        query_stats(np.zeros((1, 2)), [1], [1, 2], [1], [2, 3], top_k=10**8)
