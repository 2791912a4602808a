"""The refined share of the streamed FPR engine: counted per tile, committed with it, reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reid_eval.experiments.match import refinement_line
from reid_eval.experiments.record import MatchResult
from reid_eval.features import read_distances, read_split
from reid_eval.matching import RefinementStats, fpr_distances
from reid_eval.matching.streaming import fpr_distances_from_cache
from reid_eval.matching.tile_store import TileStore, tile_dir
from reid_eval.matching.kernel import single_blas_thread
from reid_eval.matching.plan import plan_tiles
from reid_eval_cli.main import main
from test_match_streaming import write_cache

# Far below any float32 error: every entry is refined, so the counts cannot be trivially zero.
TINY_ATOL = 1e-12


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("refined"), n_query=9, n_gallery=13, d=32, m=(3, 7), seed=11)


def _copy(src: Path, dst_dir: Path) -> Path:
    """A private copy of the cache (its tile folder sits beside it)."""
    dst = dst_dir / src.parent.name / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def _entries(cache_file: Path) -> int:
    """(probe location, gallery image) entries of the query × gallery matrix: ΣN(query) · G."""
    q, g = read_split(cache_file, "query").spatial, read_split(cache_file, "gallery").spatial
    return int(q.local.shape[0]) * len(g)


@pytest.mark.parametrize("atol", [9e-6, TINY_ATOL])
def test_streamed_counts_equal_the_in_memory_engine_on_the_same_tile_plan(cache, atol):
    q, g = read_split(cache, "query").spatial, read_split(cache, "gallery").spatial
    budget = 30_000
    # the blocks fpr_distances plans for this budget (one tile at a time, as the streamed tiles are planned)
    rows = plan_tiles(q.offsets, g.offsets, q.dim, memory_budget_bytes=budget, concurrent_tiles=1, strict=False).block_rows
    expected = RefinementStats()
    with single_blas_thread():  # the streamed tiles run on one BLAS thread: same bits, same refinement decisions
        ref = fpr_distances(q, g, backend="numpy", memory_budget_bytes=budget, float32_atol=atol, stats=expected)
    got = fpr_distances_from_cache(cache, backend="numpy", block_rows=rows, threads=2, float32_atol=atol)
    assert got.plan.num_tiles > 4 and got.plan.num_tiles == expected.tiles
    np.testing.assert_array_equal(got.distances, ref)
    assert got.refinement.to_dict() == expected.to_dict()
    assert got.refinement.entries == _entries(cache) and got.tiles_rejected == ()
    how = got.provenance()
    assert (how["refined_entries"], how["computed_entries"]) == (expected.refined, expected.entries)
    assert how["refined_share"] == expected.refined_share and "tiles_failed_check" not in how
    if atol == TINY_ATOL:
        assert got.refinement.refined > 0


def test_a_resumed_match_reports_the_totals_of_an_uninterrupted_one(cache, tmp_path):
    path = _copy(cache, tmp_path)
    resume = tile_dir(path, "fpr")
    kwargs = dict(backend="numpy", block_rows=12, threads=1, float32_atol=TINY_ATOL)
    uninterrupted = fpr_distances_from_cache(path, **kwargs)
    assert uninterrupted.refinement.refined > 0 and uninterrupted.plan.num_tiles >= 6
    first = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)  # leaves its tiles (and counts) in place
    store = TileStore(resume)
    tiles = sorted(store.done())
    for t in tiles[::2]:  # "interrupted": half of the tiles were never committed
        store._path(*t).unlink()
        store._record_path(*t).unlink()
    resumed = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)
    assert (resumed.tiles_resumed, resumed.tiles_computed) == (len(tiles[1::2]), len(tiles[::2]))
    every = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)  # nothing left to compute: all from the store
    assert every.tiles_computed == 0
    for run in (first, resumed, every):
        assert run.refinement.to_dict() == uninterrupted.refinement.to_dict() and run.tiles_rejected == ()
        np.testing.assert_array_equal(run.distances, uninterrupted.distances)


def test_a_tile_committed_without_a_record_is_computed_again_and_the_totals_stay_complete(cache, tmp_path):
    path = _copy(cache, tmp_path)
    resume = tile_dir(path, "fpr")
    kwargs = dict(backend="numpy", block_rows=12, threads=1, float32_atol=TINY_ATOL)
    full = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)
    store = TileStore(resume)
    old = sorted(store.done())[0]
    store._record_path(*old).unlink()  # as an older version committed it: the tile alone, unchecked
    again = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)
    assert again.tiles_computed == 1 and again.tiles_resumed == full.plan.num_tiles - 1
    assert len(again.tiles_rejected) == 1 and "no valid record" in again.tiles_rejected[0]
    np.testing.assert_array_equal(again.distances, full.distances)
    assert again.refinement.to_dict() == full.refinement.to_dict()
    how = again.provenance()
    assert how["tiles_failed_check"] == 1 and how["computed_entries"] == full.refinement.entries


def test_the_tile_store_keeps_records_beside_tiles_without_confusing_done(tmp_path):
    store = TileStore(tmp_path / "t")
    store.start({"identity": "x"})
    counts = RefinementStats()
    counts.record(60, 7)
    store.commit(0, 1, np.ones((2, 3), np.float32), counts)
    assert store.done() == {(0, 1)}
    loaded = store.load(0, 1, (2, 3), np.float32)
    assert loaded is not None and loaded.counts == counts and loaded.values.tolist() == [[1.0] * 3] * 2
    assert store._record_path(0, 1).exists() and store.rejected == []
    # a record alone (killed between the two writes) is not a done tile
    store._record_path(2, 2).write_text(json.dumps({"entries": 1, "refined": 0, "tiles": 1}))
    assert store.done() == {(0, 1)}
    # a record that does not read back as one fails the tile
    np.save(store._path(1, 0), np.zeros((2, 3), np.float32))
    for bad in ("{", json.dumps({"entries": 5, "refined": 9, "tiles": 1}), json.dumps({"entries": "5"}), "[]"):
        store._record_path(1, 0).write_text(bad)
        np.save(store._path(1, 0), np.zeros((2, 3), np.float32))
        assert store.load(1, 0, (2, 3), np.float32) is None and not store._path(1, 0).exists()
    # a tile that does not read back as expected is dropped with its record (computed and committed again)
    assert store.load(0, 1, (9, 9), np.float32) is None and not store._record_path(0, 1).exists()
    assert len(store.rejected) == 5 and "shape (2, 3), expected (9, 9)" in store.rejected[-1]
    store.start({"identity": "y"})
    assert [p.name for p in store.directory.iterdir()] == ["manifest.json"]  # start() clears tiles and records


def test_dask_workers_commit_counts_that_the_lead_process_sums(cache, tmp_path):
    pytest.importorskip("distributed")
    path = _copy(cache, tmp_path)
    kwargs = dict(backend="numpy", block_rows=20, float32_atol=TINY_ATOL)
    local = fpr_distances_from_cache(path, threads=1, **kwargs)
    dask = fpr_distances_from_cache(path, workers=2, dask_processes=False, resume_dir=tmp_path / "tiles", **kwargs)
    assert dask.tiles_computed == local.plan.num_tiles > 1
    assert dask.refinement.to_dict() == local.refinement.to_dict() and dask.refinement.refined > 0


def test_match_prints_the_refined_share_and_records_it_in_the_results(tmp_path, capsys):
    path = write_cache(tmp_path / "cache", n_query=10, n_gallery=16, d=40, m=(5, 9), seed=5)
    args = ["match", "--metric", "fpr", "--untrained-foreground", "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "res"),
            "--resamples", "0"]
    assert main([*args, "--memory-budget", "60KB"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "refined in float64: " in line]
    assert len(lines) == 1 and lines[0].startswith("match partial_reid refined in float64: ")
    assert "refined in float64" not in captured.out  # stdout keeps the one summary line
    result = MatchResult.read(next((tmp_path / "res").glob("partial_reid__fpr__*.json")))
    how = result.provenance
    entries = _entries(path)
    assert how["computed_entries"] == entries and 0 <= how["refined_entries"] <= entries
    assert how["refined_share"] == pytest.approx(how["refined_entries"] / entries) and "tiles_failed_check" not in how
    assert f"{how['refined_entries']} of {entries:.3g} entries (share {how['refined_share']:.2e})" in lines[0]
    stored = read_distances(path, "fpr")[1]
    assert {k: stored[k] for k in ("refined_entries", "computed_entries", "refined_share")} == {
        k: how[k] for k in ("refined_entries", "computed_entries", "refined_share")}
    # the stored matrix is reused: the results and the log repeat what its attributes recorded
    assert main([*args, "--memory-budget", "2e9"]) == 0
    err = capsys.readouterr().err
    assert "as recorded with the stored matrix fpr" in err
    again = MatchResult.read(next((tmp_path / "res").glob("partial_reid__fpr__*.json")))
    assert again.provenance["reused_matrix"] == "fpr" and again.provenance["computed_entries"] == entries
    # a global metric reconstructs nothing: no line
    assert main(["match", "--metric", "euclidean", *args[4:]]) == 0
    assert "refined in float64" not in capsys.readouterr().err


def test_refinement_line_needs_counts_and_never_raises():
    assert refinement_line({"runner": "threads:1"}) is None
    assert refinement_line({"refined_entries": "none", "computed_entries": 3}) is None
    line = refinement_line({"refined_entries": 0, "computed_entries": 528_000, "refined_share": 0.0})
    assert line == "refined in float64: 0 of 5.28e+05 entries (share 0.00e+00)"
