"""Matching at scale: block reads from the cache, tile plans, resumable tiles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from reid_eval.errors import ReidEvalError
from reid_eval.features import SpatialFeatures, open_cache
from reid_eval.features.cache import (
    SplitWriter,
    cache_key,
    cache_path,
    create_cache,
    read_spatial_block,
    read_split,
    read_split_offsets,
)
from reid_eval.matching import fpr_distances, fpr_tile, prepare_gallery, prepare_probes, probe_centre
from reid_eval.matching.kernel import single_blas_thread
from reid_eval.matching.plan import plan_blocks, plan_tiles
from reid_eval.matching.streaming import fpr_distances_from_cache, fpr_shortlist_from_cache
from reid_eval.matching.tile_store import TileStore, tile_dir

SETTINGS = {"model": {"backbone": "synthetic", "input_size": [384, 128]}, "preprocessing": {"resize": "fixed"}}


def synthetic_split(rng: np.random.Generator, n: int, counts: np.ndarray, d: int, near: np.ndarray | None = None):
    """Random unit-ish features; rows of ``near`` (when given) copied with tiny noise so some residuals are small."""
    L = int(counts.sum())
    local = rng.standard_normal((L, d)).astype(np.float32)
    if near is not None:
        k = min(L, near.shape[0])
        local[:k] = near[:k] + 1e-4 * rng.standard_normal((k, d)).astype(np.float32)
    foreground = rng.uniform(0.05, 1.0, L).astype(np.float32)
    glob = rng.standard_normal((n, d)).astype(np.float32)
    return local, foreground, glob


def write_cache(cache_dir: Path, n_query: int = 9, n_gallery: int = 13, d: int = 32, m: int | tuple[int, int] = (3, 7),
                dataset: str = "partial_reid", seed: int = 0, batch: int = 5) -> Path:
    """A feature cache of random features written through the project's cache writer (no images, no model)."""
    rng = np.random.default_rng(seed)
    key = cache_key(dataset, "c" * 64, SETTINGS, "m" * 64)
    path = cache_path(cache_dir, dataset, key)
    create_cache(path, {"cache_key": key, "dataset": dataset, "dataset_root": str(cache_dir), "checkpoint_sha256": "c" * 64,
                        "manifest_sha256": "m" * 64, "settings": json.dumps(SETTINGS)})
    near = None
    with open_cache(path, "r+") as f:
        for split, n in (("query", n_query), ("gallery", n_gallery)):
            counts = (np.full(n, m) if isinstance(m, int) else rng.integers(m[0], m[1] + 1, n)).astype(np.int64)
            local, fg, glob = synthetic_split(rng, n, counts, d, near)
            near = local
            offsets = np.concatenate([[0], np.cumsum(counts)])
            writer = SplitWriter(f, split, n, d, 1)
            for a in range(0, n, batch):
                b = min(n, a + batch)
                ra, rb = offsets[a], offsets[b]
                writer.append(
                    b - a, [f"{split}/{i:05d}.jpg" for i in range(a, b)], np.arange(a, b) % 4 + 1,
                    np.full(b - a, 1 if split == "query" else 2), np.arange(a, b),
                    np.stack([[[c, 1]] for c in counts[a:b]]).astype(np.int32), local[ra:rb], counts[a:b], fg[ra:rb], glob[a:b],
                )
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("cache"))


def in_memory_tiles(query: SpatialFeatures, gallery: SpatialFeatures, block_rows: int, weighted: bool = True) -> np.ndarray:
    """The tile definition written out with the kernel alone, in memory, one BLAS thread: an independent
    reference for the shared loop (every block split along the first one's centre)."""
    out = np.empty((len(query), len(gallery)), np.float32)
    blocks = plan_blocks(query.counts, block_rows)
    centre = probe_centre(query[blocks[0][0] : blocks[0][1]], backend="numpy")
    with single_blas_thread():
        for ga, gb in plan_blocks(gallery.counts, block_rows):
            basis = prepare_gallery(gallery[ga:gb], backend="numpy")
            for pa, pb in blocks:
                probes = prepare_probes(query[pa:pb], weighted=weighted, backend="numpy", centre=centre)
                out[pa:pb, ga:gb] = fpr_tile(probes, basis)
    return out


def test_block_reads_equal_the_whole_split(cache):
    whole = read_split(cache, "gallery").spatial
    offsets = read_split_offsets(cache, "gallery")
    np.testing.assert_array_equal(offsets, whole.offsets)
    block = read_spatial_block(cache, "gallery", 4, 9)
    ref = whole[4:9]
    np.testing.assert_array_equal(block.local, ref.local)
    np.testing.assert_array_equal(block.offsets, ref.offsets)
    np.testing.assert_array_equal(block.foreground, ref.foreground)


@pytest.mark.parametrize("weighted", [True, False])
def test_one_tile_streaming_equals_fpr_distances_bit_for_bit(cache, weighted):
    q, g = read_split(cache, "query").spatial, read_split(cache, "gallery").spatial
    with single_blas_thread():
        ref = fpr_distances(q, g, weighted=weighted, backend="numpy")
    got = fpr_distances_from_cache(cache, weighted=weighted, backend="numpy", block_rows=10**6, threads=1)
    assert got.plan.num_tiles == 1
    np.testing.assert_array_equal(got.distances, ref)


def test_many_tiles_equal_the_in_memory_engine_on_the_same_plan_whatever_the_threads(cache):
    q, g = read_split(cache, "query").spatial, read_split(cache, "gallery").spatial
    ref = in_memory_tiles(q, g, block_rows=20)
    one = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=1)
    two = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=2)
    assert one.plan.num_tiles > 6
    np.testing.assert_array_equal(one.distances, ref)
    np.testing.assert_array_equal(two.distances, ref)
    # another plan: equal to the engine's accuracy (last-bit GEMM rounding only)
    np.testing.assert_allclose(one.distances, fpr_distances(q, g, backend="numpy"), rtol=0, atol=1e-5)


def test_the_budget_sets_the_blocks_and_a_budget_too_small_is_one_line(cache, monkeypatch):
    from reid_eval.matching.plan import tile_task_bytes

    poff, goff = np.arange(301) * 110, np.arange(8001) * 110  # the benchmark's shape
    small = plan_tiles(poff, goff, 2048, memory_budget_bytes=500_000_000, concurrent_tiles=2)
    large = plan_tiles(poff, goff, 2048, memory_budget_bytes=1_500_000_000, concurrent_tiles=2)
    assert 110 < small.block_rows < large.block_rows
    assert 2 * tile_task_bytes(small.block_rows, 2048, 110, 110) <= 500_000_000 < 2 * tile_task_bytes(small.block_rows + 1, 2048, 110, 110)
    assert small.gallery_blocks[-1][1] == 8000 and all(b - a == small.block_rows // 110 for a, b in small.gallery_blocks[:-1])
    with pytest.raises(ReidEvalError, match="--memory-budget 1000 is too small"):
        plan_tiles(poff, goff, 2048, memory_budget_bytes=1000, concurrent_tiles=2)
    monkeypatch.setenv("REID_EVAL_MEMORY_BUDGET", "2e6")
    assert fpr_distances_from_cache(cache, backend="numpy", threads=1).plan.memory_budget_bytes == 2_000_000
    monkeypatch.setenv("REID_EVAL_MEMORY_BUDGET", "lots")
    with pytest.raises(ReidEvalError, match="REID_EVAL_MEMORY_BUDGET"):
        fpr_distances_from_cache(cache, backend="numpy")


@pytest.mark.parametrize("text, expected", [("1.5GB", 1_500_000_000), ("1.5e9", 1_500_000_000), ("500MiB", 500 * 2**20),
                                            ("2e6", 2_000_000)])
def test_the_budget_variable_means_the_same_bytes_to_match_demo_and_training(monkeypatch, text, expected):
    """`match`'s --memory-budget and the library default (demo, training's evaluation) read one variable one way."""
    from reid_eval.matching.memory import MEMORY_BUDGET_ENV, default_memory_budget
    from reid_eval_cli.match_commands import match_command

    monkeypatch.setenv(MEMORY_BUDGET_ENV, text)
    assert default_memory_budget() == expected
    assert match_command.make_context("match", ["--metric", "fpr"]).params["memory_budget"] == expected


def test_a_budget_variable_in_units_sets_the_streamed_plan(cache, monkeypatch):
    monkeypatch.setenv("REID_EVAL_MEMORY_BUDGET", "1.5GB")  # what `match` accepts, the library default accepts too
    assert fpr_distances_from_cache(cache, backend="numpy", threads=1).plan.memory_budget_bytes == 1_500_000_000
    for bad in ("lots", "0", "1e999"):
        monkeypatch.setenv("REID_EVAL_MEMORY_BUDGET", bad)
        with pytest.raises(ReidEvalError, match="REID_EVAL_MEMORY_BUDGET.*bytes"):
            fpr_distances_from_cache(cache, backend="numpy")


def kill_after_tiles(args: list[str], store: TileStore, n: int, env: dict | None = None) -> set[tuple[int, int]]:
    """Run ``args`` as a child process that SIGKILLs itself right after committing its ``n``-th tile.

    Returns the tiles committed when it died: ``n``, or a few more when tiles run on
    threads side by side (a tile another thread committed at the same moment).
    """
    env = {**(os.environ if env is None else env), "REID_EVAL_TEST_KILL_AFTER_TILES": str(n)}
    child = subprocess.run(args, env=env, stderr=subprocess.PIPE, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    return store.done()


def _copy(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.parent.name / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


@pytest.mark.parametrize("damage, message", [
    (lambda f: f["gallery"].attrs.__setitem__("num_locations", 10**6), "damaged"),
    (lambda f: f["query"].__delitem__("foreground"), "no foreground table"),
    (lambda f: f["gallery"]["offsets"].__setitem__(3, 10**5), "damaged"),
    (lambda f: f.attrs.__setitem__("schema_version", 0), "re-extract"),
])
def test_damaged_or_old_cache_is_refused_in_one_line(cache, tmp_path, damage, message):
    path = _copy(cache, tmp_path)
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(ReidEvalError, match=message) as err:
        fpr_distances_from_cache(path, backend="numpy", threads=1)
    assert "\n" not in str(err.value)


def test_the_streamed_shortlist_refuses_a_cache_without_foreground_in_one_line(cache, tmp_path):
    path = _copy(cache, tmp_path)
    with h5py.File(path, "r+") as f:
        del f["query"]["foreground"]
    with pytest.raises(ReidEvalError, match="foreground") as err:
        fpr_shortlist_from_cache(path, 4, backend="numpy", threads=1)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_nan_in_the_first_probe_block_is_named_and_leaves_no_tile_folder(cache, tmp_path):
    """The shared centre is taken from the first probe block: a bad row there fails in one line, nothing left behind."""
    path = _copy(cache, tmp_path)
    with h5py.File(path, "r+") as f:
        f["query"]["local"][1, 0] = np.nan
    before = set(path.parent.iterdir())
    with pytest.raises(ReidEvalError, match=r"cache .* split query is damaged .*NaN or infinity") as err:
        fpr_distances_from_cache(path, backend="numpy", block_rows=12, threads=1)
    assert "\n" not in str(err.value)
    assert set(path.parent.iterdir()) == before


CHILD = textwrap.dedent("""
    import sys
    from reid_eval.matching.streaming import fpr_distances_from_cache
    fpr_distances_from_cache(sys.argv[1], backend="numpy", block_rows=12, threads=1, resume_dir=sys.argv[2])
""")


def test_sigkill_mid_match_resumes_bit_identical_without_recomputing_finished_tiles(cache, tmp_path):
    resume = tile_dir(_copy(cache, tmp_path), "fpr")
    path = Path(str(resume.parent)[: -len(".tiles")])
    reference = fpr_distances_from_cache(path, backend="numpy", block_rows=12, threads=1)
    total = reference.plan.num_tiles
    assert total >= 12
    store = TileStore(resume)
    done = kill_after_tiles([sys.executable, "-c", CHILD, str(path), str(resume)], store, 4)
    assert 4 <= len(done) < total, "the child must be killed after some tiles and before the end"
    before = {t: os.stat(store._path(*t)) for t in done}
    result = fpr_distances_from_cache(path, backend="numpy", block_rows=12, threads=1, resume_dir=resume)
    assert (result.tiles_resumed, result.tiles_computed) == (len(done), total - len(done))
    for t, st in before.items():  # finished tiles were kept, not written again
        now = os.stat(store._path(*t))
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    np.testing.assert_array_equal(result.distances, reference.distances)
    # a rerun with another budget keeps the recorded plan of the tiles (no forced block_rows)
    again = fpr_distances_from_cache(path, backend="numpy", threads=1, resume_dir=resume, memory_budget_bytes=10**9)
    assert again.plan.block_rows == 12 and again.tiles_computed == 0
    np.testing.assert_array_equal(again.distances, reference.distances)


def test_tiles_of_another_computation_are_discarded(cache, tmp_path):
    path = _copy(cache, tmp_path)
    resume = tile_dir(path, "fpr")
    fpr_distances_from_cache(path, backend="numpy", block_rows=12, threads=1, resume_dir=resume)
    other = fpr_distances_from_cache(path, backend="numpy", block_rows=12, threads=1, resume_dir=resume, beta=0.5)
    assert other.tiles_resumed == 0 and other.tiles_computed == other.plan.num_tiles
    q, g = read_split(path, "query").spatial, read_split(path, "gallery").spatial
    np.testing.assert_allclose(other.distances, fpr_distances(q, g, beta=0.5, backend="numpy"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 4, 13])
def test_streamed_shortlist_equals_the_in_memory_shortlist(cache, k):
    q, g = read_split(cache, "query"), read_split(cache, "gallery")
    ref = fpr_distances(q.spatial, g.spatial, backend="numpy", shortlist=k, probe_global=q.global_features,
                        gallery_global=g.global_features)
    got = fpr_shortlist_from_cache(cache, k, backend="numpy", memory_budget_bytes=3_000_000, threads=2)
    assert len(got.plan.gallery_blocks) > 1
    np.testing.assert_array_equal(np.argsort(got.distances, axis=1, kind="stable"), np.argsort(ref, axis=1, kind="stable"))
    np.testing.assert_allclose(got.distances, ref, rtol=1e-6, atol=1e-5)


def _has_cuda() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs CuPy and a CUDA GPU")
def test_cupy_runs_the_same_tile_plan_with_blocks_moved_to_the_device_as_read(cache, tmp_path):
    host = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=1)
    device = fpr_distances_from_cache(cache, backend="cupy", block_rows=20, resume_dir=tmp_path / "tiles")
    assert device.plan.same_tiles(host.plan) and device.runner == "threads:1"
    np.testing.assert_allclose(device.distances, host.distances, rtol=0, atol=1e-5)
    short = fpr_shortlist_from_cache(cache, 4, backend="cupy", memory_budget_bytes=3_000_000)
    np.testing.assert_allclose(short.distances, fpr_shortlist_from_cache(cache, 4, backend="numpy", memory_budget_bytes=3_000_000).distances, atol=1e-5, rtol=0)


def test_streamed_shortlist_resumes_from_its_committed_units(cache, tmp_path):
    path = _copy(cache, tmp_path)
    resume = tile_dir(path, "fpr__shortlist4")
    first = fpr_shortlist_from_cache(path, 4, backend="numpy", memory_budget_bytes=3_000_000, threads=2,
                                     resume_dir=resume, float32_atol=1e-9)
    store = TileStore(resume)
    units = store.done()
    assert first.tiles_resumed == 0 and len(units) == first.tiles_computed > 4
    assert first.refinement.refined > 0  # the tolerance forces some float64 entries, so the counts are not all zero
    for gi, pi in sorted(units)[::2]:  # as if killed with half the units committed
        store._path(gi, pi).unlink()
    again = fpr_shortlist_from_cache(path, 4, backend="numpy", memory_budget_bytes=3_000_000, threads=2,
                                     resume_dir=resume, float32_atol=1e-9)
    assert again.tiles_resumed == len(units) - len(sorted(units)[::2]) and again.tiles_computed == len(sorted(units)[::2])
    np.testing.assert_array_equal(again.distances, first.distances)
    assert again.refinement.to_dict() == first.refinement.to_dict()
    # another shortlist (K) or tolerance is another computation: nothing is resumed
    other = fpr_shortlist_from_cache(path, 3, backend="numpy", memory_budget_bytes=3_000_000, threads=2, resume_dir=resume)
    assert other.tiles_resumed == 0


@pytest.mark.parametrize("lost_pass", [0, 1])
def test_a_shortlist_of_several_passes_resumes_bit_identical_whichever_pass_was_lost(cache, tmp_path, lost_pass):
    """Every pass is split along the first pass's centre, also when that pass is restored and not prepared."""
    path = _copy(cache, tmp_path)
    resume = tile_dir(path, "fpr__shortlist4")
    first = fpr_shortlist_from_cache(path, 4, backend="numpy", memory_budget_bytes=10_000, threads=2, resume_dir=resume)
    assert len(first.plan.probe_blocks) >= 2
    q, g = read_split(cache, "query"), read_split(cache, "gallery")
    ref = fpr_distances(q.spatial, g.spatial, backend="numpy", shortlist=4, probe_global=q.global_features,
                        gallery_global=g.global_features)
    np.testing.assert_allclose(first.distances, ref, rtol=1e-6, atol=1e-5)
    store = TileStore(resume)
    lost = [(gi, pi) for gi, pi in store.done() if pi == lost_pass]
    for gi, pi in lost:
        store._path(gi, pi).unlink()
    again = fpr_shortlist_from_cache(path, 4, backend="numpy", memory_budget_bytes=10_000, threads=2, resume_dir=resume)
    assert again.tiles_computed == len(lost) > 0
    np.testing.assert_array_equal(again.distances, first.distances)
