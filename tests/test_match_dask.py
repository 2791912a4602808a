"""Tiles on a Dask LocalCluster give the same bits as one process."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from reid_eval.errors import ReidEvalError
from reid_eval.matching.streaming import fpr_distances_from_cache
from test_match_streaming import write_cache

pytest.importorskip("distributed")


def test_two_dask_workers_equal_one_process_bit_for_bit(tmp_path):
    path = write_cache(tmp_path, n_query=8, n_gallery=14, d=48, m=(4, 9), seed=3)
    local = fpr_distances_from_cache(path, backend="numpy", block_rows=25, threads=2)
    assert local.plan.num_tiles >= 8
    dask = fpr_distances_from_cache(path, backend="numpy", block_rows=25, workers=2, dask_processes=True,
                                    resume_dir=tmp_path / "tiles")
    assert dask.runner == "dask-local:2" and dask.tiles_computed == local.plan.num_tiles
    np.testing.assert_array_equal(dask.distances, local.distances)


def test_missing_dask_names_the_extra(tmp_path, monkeypatch):
    path = write_cache(tmp_path, n_query=2, n_gallery=3)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ReidEvalError, match=r'pip install "reid-eval\[dask\]"'):
        fpr_distances_from_cache(path, backend="numpy", workers=2)
    with pytest.raises(ReidEvalError, match="cannot be combined"):
        fpr_distances_from_cache(path, backend="numpy", workers=2, scheduler="tcp://127.0.0.1:1")


def test_workers_keep_their_probe_blocks_for_one_run_only(tmp_path):
    from reid_eval.matching import dask_tiles

    path = write_cache(tmp_path, n_query=8, n_gallery=14, d=48, m=(4, 9), seed=3)
    local = fpr_distances_from_cache(path, backend="numpy", block_rows=25, threads=2)
    dask = fpr_distances_from_cache(path, backend="numpy", block_rows=25, workers=2, dask_processes=False)
    np.testing.assert_array_equal(dask.distances, local.distances)
    assert dask_tiles._worker_runs == {}  # in-process workers: their blocks and workspaces are freed with the run
