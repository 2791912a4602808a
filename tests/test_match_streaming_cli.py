"""`reid-eval match` at scale: progress on stderr, --memory-budget, reuse, --recompute, kill -9 and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from reid_eval_cli.main import main
from reid_eval.features import read_distances
from reid_eval.matching.streaming import fpr_distances_from_cache
from reid_eval.matching.tile_store import TileStore, tile_dir
from test_match_streaming import kill_after_tiles, write_cache


def test_match_prints_progress_stores_reuses_and_recomputes(tmp_path, capsys):
    path = write_cache(tmp_path / "cache", n_query=10, n_gallery=16, d=40, m=(5, 9), seed=5)
    args = ["match", "--metric", "fpr", "--untrained-foreground", "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "res")]
    assert main([*args, "--memory-budget", "60KB"]) == 0
    err = capsys.readouterr().err
    assert "match partial_reid tiles: " in err and "GFLOP/s" in err and "pairs/s" in err and "ETA" in err
    last = [line for line in err.splitlines() if "match partial_reid tiles: " in line][-1]
    total = int(last.split("tiles: ")[1].split("/")[1].split()[0])
    assert total > 4 and f"tiles: {total}/{total} " in last
    D, params = read_distances(path, "fpr")
    assert params["tile_count"] == total and params["memory_budget_bytes"] == 60_000
    assert not tile_dir(path, "fpr").exists()  # the tiles are gone once the matrix is stored
    same = fpr_distances_from_cache(path, backend="auto", memory_budget_bytes=60_000)
    np.testing.assert_array_equal(D, same.distances)
    # same parameters: the stored matrix is reused, whatever the budget
    assert main([*args, "--memory-budget", "2e9"]) == 0
    assert "tiles" not in capsys.readouterr().err
    record = json.loads(next((tmp_path / "res").glob("partial_reid__fpr__*.json")).read_text())
    assert record["params"]["reused_matrix"] == "fpr"  # recorded in the results, the matrix is left as it was
    assert main([*args, "--recompute"]) == 0
    assert "tiles: 1/1 " in capsys.readouterr().err


def test_bad_execution_options_are_one_line(tmp_path, capsys):
    write_cache(tmp_path / "cache")
    args = ["match", "--metric", "dsr", "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "res")]
    for extra, message in ((["--memory-budget", "lots"], "is not a number of bytes"),
                           (["--memory-budget", "1000"], "--memory-budget 1000 is too small"),
                           (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both")):
        assert main([*args, *extra]) != 0
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_kill_9_mid_match_then_the_same_command_resumes_bit_identical(tmp_path):
    cache_dir = tmp_path / "cache"
    path = write_cache(cache_dir, n_query=16, n_gallery=24, d=48, m=8, seed=7)
    cmd = [sys.executable, "-c", "import sys; from reid_eval_cli.main import main; sys.exit(main(sys.argv[1:]))", "match",
           "--metric", "fpr", "--untrained-foreground", "--memory-budget", "60000", "--results-dir", str(tmp_path / "res")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    uninterrupted = fpr_distances_from_cache(path, memory_budget_bytes=60000)  # same plan, no tiles kept
    reference = uninterrupted.distances
    store = TileStore(tile_dir(path, "fpr"))
    done = kill_after_tiles([*cmd, "--cache-dir", str(cache_dir)], store, 10, env)
    total = len(TileStore(store.directory).manifest()["plan"]["gallery_blocks"]) * len(store.manifest()["plan"]["probe_blocks"])
    assert 10 <= len(done) < total == uninterrupted.plan.num_tiles, f"killed after {len(done)} of {total} tiles"
    run = subprocess.run([*cmd, "--cache-dir", str(cache_dir)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"({len(done)} resumed)" in run.stderr
    np.testing.assert_array_equal(read_distances(path, "fpr")[0], reference)
    assert read_distances(path, "fpr")[1]["tiles_resumed"] == len(done)  # and only the others were computed


def test_kill_9_mid_shortlist_then_the_same_command_resumes_bit_identical(tmp_path):
    cache_dir = tmp_path / "cache"
    path = write_cache(cache_dir, n_query=16, n_gallery=60, d=48, m=8, seed=8)
    cmd = [sys.executable, "-c", "import sys; from reid_eval_cli.main import main; sys.exit(main(sys.argv[1:]))", "match",
           "--metric", "fpr", "--untrained-foreground", "--shortlist", "10", "--memory-budget", "60000", "--results-dir", str(tmp_path / "res"),
           "--cache-dir", str(cache_dir)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    from reid_eval.matching.streaming import fpr_shortlist_from_cache

    uninterrupted = fpr_shortlist_from_cache(path, 10, memory_budget_bytes=60000)
    store = TileStore(tile_dir(path, "fpr__shortlist10"))
    done = kill_after_tiles(cmd, store, 10, env)
    assert 10 <= len(done) < uninterrupted.plan.num_tiles, f"killed after {len(done)} of {uninterrupted.plan.num_tiles} units"
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"({len(done)} resumed)" in run.stderr
    D, attrs = read_distances(path, "fpr__shortlist10")
    np.testing.assert_array_equal(D, uninterrupted.distances)
    assert attrs["tiles_resumed"] == len(done)  # only the other units were computed
    assert not store.directory.exists()  # stored: its units are gone
