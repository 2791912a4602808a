"""The tile loop's probe blocks kept between tiles: the same bits as blocks prepared per tile, within their room."""

from __future__ import annotations

import numpy as np

from reid_eval.features.cache import open_cache, read_split_offsets
from reid_eval.matching.kernel import TileWorkspace, single_blas_thread
from reid_eval.matching.loop import CacheSource, KeptProbes, TileJob, prepared_probe_bytes, probe_room, run_tile_task, shared_centre
from reid_eval.matching.plan import TilePlan
from reid_eval.matching.settings import EngineSettings
from test_match_streaming import write_cache


def test_kept_probes_keep_the_first_blocks_that_fit_and_never_twice():
    kept = KeptProbes(100)
    assert kept.reserve(0, 60)
    assert not kept.reserve(0, 10)  # reserved already: another thread prepares its own copy
    assert not kept.reserve(1, 50)  # 110 > 100
    assert kept.reserve(2, 40)
    assert kept.kept() == [0, 2] and kept.used == 100
    assert kept.get(0) is None  # reserved, still being prepared
    kept.put(0, "block 0")
    assert kept.get(0) == "block 0" and kept.get(1) is None


def test_probe_room_is_the_budget_the_tiles_in_flight_leave():
    plan = TilePlan(100, ((0, 1),), ((0, 1),), "float32", memory_budget_bytes=1000, concurrent_tiles=4)
    assert [probe_room(plan, k) for k in (1, 2, 4, 8)] == [750, 500, 0, 0]


def test_probe_blocks_kept_across_gallery_blocks_give_the_bits_of_blocks_prepared_per_tile(tmp_path):
    path = write_cache(tmp_path, n_query=8, n_gallery=14, d=48, m=(4, 9), seed=3)
    with open_cache(path) as f:
        poff, goff = read_split_offsets(f, "query"), read_split_offsets(f, "gallery")
    plan = TilePlan.of_rows(poff, goff, 25, "float32", 10**9, 2)
    assert len(plan.probe_blocks) >= 3 and len(plan.gallery_blocks) >= 2
    source, settings = CacheSource(str(path), "query", "gallery"), EngineSettings(backend="numpy").resolved()
    job = TileJob(source, settings, plan, shared_centre(source, settings, plan))

    def tiles(kept: KeptProbes | None) -> dict[tuple[int, int], np.ndarray]:
        out: dict[tuple[int, int], np.ndarray] = {}
        workspace = TileWorkspace()  # one for all tasks: a kept block must not live in its probe slot
        with single_blas_thread():
            for gi in range(len(plan.gallery_blocks)):
                run_tile_task(job, gi, range(len(plan.probe_blocks)), lambda g, p, t, c: out.__setitem__((g, p), t.copy()),
                              workspace=workspace, kept=kept)
        return out

    fresh = tiles(None)
    first_rows = int(poff[plan.probe_blocks[0][1]] - poff[plan.probe_blocks[0][0]])
    kept = KeptProbes(prepared_probe_bytes(first_rows, 48, "float32"))  # room for block 0 only
    reused = tiles(kept)
    assert kept.kept() == [0]
    assert fresh.keys() == reused.keys()
    for key in fresh:
        np.testing.assert_array_equal(reused[key], fresh[key], err_msg=str(key))
    everything = KeptProbes(float("inf"))
    assert all(np.array_equal(t, fresh[k]) for k, t in tiles(everything).items())
    assert everything.kept() == list(range(len(plan.probe_blocks)))
