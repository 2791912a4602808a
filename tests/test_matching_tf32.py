"""precision="tf32x3": float32 operands split into TF32 parts, three products, the float32 contract kept.

On the NumPy backend the split operands run in a float32 GEMM (the
emulation: every TF32 product is exact in float32), so the whole path is
tested here; only the speed of the tensor cores waits for a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_match_streaming import write_cache
from test_matching_helpers import concat, random_features, reference_matrix
from reid_eval.features import SpatialFeatures, read_split
from reid_eval.matching import RefinementStats, fpr_distances
from reid_eval.matching.kernel import prepare_gallery, prepare_probes, single_blas_thread, tile
from reid_eval.matching.kernel.accuracy import (
    AUTO_FLOAT64_RATIO,
    PRECISIONS,
    error_bound_s,
    gemm_times,
    precision_for_times,
    resolve_precision,
)
from reid_eval.matching.kernel.tf32 import GALLERY_PARTS, PROBE_PARTS, round_tf32, stack_operand, tensor_cores
from reid_eval.matching.plan import plan_tiles, tile_task_bytes
from reid_eval.matching.streaming import fpr_distances_from_cache, fpr_shortlist_from_cache

ATOL = 1e-5  # the float32 contract: every distance within 1e-5 of the float64 definition


def test_rounding_to_tf32_keeps_eleven_significant_bits_to_nearest():
    one = np.float32(1.0)
    cases = np.array([1.0, 1 + 2**-10, 1 + 2**-11, 1 + 2**-12, 1 + 2**-11 + 2**-20, -(1 + 2**-11), 3 * 2**-130,
                      2 - 2**-23, 0.0], dtype=np.float32)
    expected = np.array([1.0, 1 + 2**-10, 1 + 2**-10, 1.0, 1 + 2**-10, -(1 + 2**-10), 3 * 2**-130, 2.0, 0.0],
                        dtype=np.float32)
    np.testing.assert_array_equal(round_tf32(np, cases), expected)  # ties away from zero, carries into the exponent
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(10_000) * np.exp(rng.uniform(-20, 20, 10_000))).astype(np.float32)
    r = round_tf32(np, a)
    assert not (r.view(np.uint32) & np.uint32(0x1FFF)).any()  # 13 low mantissa bits clear
    assert np.all(np.abs(r.astype(np.float64) - a) <= 2.0**-11 * np.abs(a))
    assert round_tf32(np, one) == one


def test_the_parts_rebuild_each_value_and_their_products_are_the_three_tf32_products():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((7, 33)).astype(np.float32)
    b = rng.standard_normal((5, 33)).astype(np.float32)
    ga, pb = stack_operand(np, a, GALLERY_PARTS), stack_operand(np, b, PROBE_PARTS)
    d = a.shape[1]
    hi, lo = ga[:, :d], ga[:, 2 * d:]
    np.testing.assert_array_equal(ga[:, d : 2 * d], hi)
    assert np.all(np.abs(hi.astype(np.float64) + lo - a) <= 2.0**-22 * np.abs(a))
    bh, bl = pb[:, :d].astype(np.float64), pb[:, d : 2 * d].astype(np.float64)
    expected = hi.astype(np.float64) @ (bh + bl).T + lo.astype(np.float64) @ bh.T
    with single_blas_thread():
        got = ga @ pb.T  # float32 accumulation of exact products
    np.testing.assert_allclose(got, expected, rtol=0, atol=4 * 2.0**-24 * 33 * np.abs(a) .max() * np.abs(b).max())
    exact = a.astype(np.float64) @ b.T.astype(np.float64)
    np.testing.assert_allclose(expected, exact, rtol=0, atol=3.1 * 2.0**-22 * (np.abs(a) @ np.abs(b).T).max())


def test_outside_a_gpu_the_tensor_core_switch_changes_nothing():
    a = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    with tensor_cores(np):
        inside = a @ a.T
    np.testing.assert_array_equal(inside, a @ a.T)


@pytest.mark.parametrize(
    "d, probe_counts, gallery_counts, kind",
    [(512, [110, 37, 1], [110, 64, 5], "relu"), (64, [20, 20], [30, 3, 12], "gauss"), (8, [9, 40], [40, 17], "relu")],
)
def test_distances_meet_the_float32_contract_against_the_one_pair_definition(d, probe_counts, gallery_counts, kind):
    rng = np.random.default_rng(d)
    probe = random_features(rng, probe_counts, d, kind)
    gallery = concat(random_features(rng, gallery_counts, d, kind), probe)  # a self-match: residuals near 0
    ref = reference_matrix(probe, gallery)
    got = fpr_distances(probe, gallery, backend="numpy", precision="tf32x3")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL)
    dsr = fpr_distances(probe, gallery, backend="numpy", precision="tf32x3", weighted=False)
    np.testing.assert_allclose(dsr, reference_matrix(probe, gallery, weighted=False), rtol=0, atol=ATOL)


def _coherent(rng: np.random.Generator, n: int, m: int, d: int) -> SpatialFeatures:
    """One strong shared positive direction, as random-init CNN features have."""
    y = np.abs(rng.standard_normal(d))[None] + 0.2 * np.abs(rng.standard_normal((n * m, d)))
    return SpatialFeatures(y.astype(np.float32), np.arange(n + 1) * m, rng.uniform(0.1, 1, n * m).astype(np.float32))


@pytest.mark.parametrize("kind", ["gauss", "relu", "coherent"])
def test_the_error_of_s_stays_within_the_extended_bound(kind):
    rng = np.random.default_rng(7)
    d, m = 256, 40
    if kind == "coherent":
        probe, gallery = _coherent(rng, 6, m, d), _coherent(rng, 5, m, d)
    else:
        probe, gallery = random_features(rng, [m] * 6, d, kind), random_features(rng, [m] * 5, d, kind)
    pb, gb = prepare_probes(probe, backend="numpy", precision="tf32x3"), prepare_gallery(gallery, backend="numpy",
                                                                                           precision="tf32x3")
    p64 = prepare_probes(probe, backend="numpy", precision="float64")
    g64 = prepare_gallery(gallery, backend="numpy", precision="float64")
    err = np.abs(tile._unrefined_e2(np, pb, gb) - tile._unrefined_e2(np, p64, g64))
    bound = error_bound_s(np, pb, np.diff(gb.offsets))
    f32 = error_bound_s(np, prepare_probes(probe, backend="numpy"), np.diff(gb.offsets))
    assert bool((bound > f32).all())  # the split's term widens the float32 bound
    assert float((err / bound).max()) < 1.0


def test_refinement_keeps_the_contract_where_the_bound_fails():
    rng = np.random.default_rng(3)
    probe = _coherent(rng, 4, 30, 128)
    gallery = concat(_coherent(rng, 6, 30, 128), probe)
    ref = fpr_distances(probe, gallery, backend="numpy", precision="float64")
    stats = RefinementStats()
    got = fpr_distances(probe, gallery, backend="numpy", precision="tf32x3", stats=stats, float32_atol=1e-6)
    assert 0 < stats.refined < stats.entries
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 + 2.0**-24 * np.abs(ref).max())


def test_blocks_of_different_precisions_are_refused():
    rng = np.random.default_rng(0)
    f = random_features(rng, [4, 5], 16)
    with pytest.raises(ValueError, match="different precisions"):
        tile.fpr_tile(prepare_probes(f, backend="numpy", precision="tf32x3"),
                      prepare_gallery(f, backend="numpy", precision="float32"))
    with pytest.raises(ValueError, match="tf32x3"):
        prepare_probes(f, backend="numpy", precision="tf32")


def test_the_memory_model_counts_the_split_operands():
    small = tile_task_bytes(4000, 2048, 110, 110, "float32")
    split = tile_task_bytes(4000, 2048, 110, 110, "tf32x3")
    assert split - small == 2 * 12 * 2048 * 4000  # 12 more bytes per operand element, both blocks; same product
    q = np.arange(0, 2201, 110)
    assert (plan_tiles(q, q, 2048, memory_budget_bytes=60_000_000, concurrent_tiles=1, precision="tf32x3").block_rows
            < plan_tiles(q, q, 2048, memory_budget_bytes=60_000_000, concurrent_tiles=1).block_rows)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("tf32"), n_query=9, n_gallery=13, d=32, m=(3, 9), seed=17)


def test_streamed_tiles_equal_the_in_memory_engine_and_record_the_precision(cache, tmp_path):
    q, g = read_split(cache, "query").spatial, read_split(cache, "gallery").spatial
    budget = 40_000
    rows = plan_tiles(q.offsets, g.offsets, q.dim, memory_budget_bytes=budget, concurrent_tiles=1, strict=False,
                      precision="tf32x3").block_rows
    expected = RefinementStats()
    with single_blas_thread():  # the streamed tiles run on one BLAS thread: same bits
        ref = fpr_distances(q, g, backend="numpy", precision="tf32x3", memory_budget_bytes=budget, stats=expected)
    got = fpr_distances_from_cache(cache, backend="numpy", block_rows=rows, threads=2, precision="tf32x3",
                                   resume_dir=tmp_path / "tiles")
    assert got.plan.num_tiles > 2 and got.plan.num_tiles == expected.tiles
    assert got.plan.precision == "tf32x3" and got.provenance()["precision"] == "tf32x3"
    assert got.distances.dtype == np.float32
    np.testing.assert_array_equal(got.distances, ref)
    assert got.refinement.to_dict() == expected.to_dict()
    float64 = fpr_distances(q, g, backend="numpy", precision="float64")
    np.testing.assert_allclose(got.distances, float64, rtol=0, atol=ATOL)
    resumed = fpr_distances_from_cache(cache, backend="numpy", block_rows=rows, threads=2, precision="tf32x3",
                                       resume_dir=tmp_path / "tiles")
    assert resumed.tiles_resumed == got.plan.num_tiles
    np.testing.assert_array_equal(resumed.distances, got.distances)


def test_the_shortlist_in_tf32x3_meets_the_contract_on_its_entries(cache):
    q, g = read_split(cache, "query"), read_split(cache, "gallery")
    k = 5
    full = fpr_distances(q.spatial, g.spatial, backend="numpy", precision="float64")
    short = fpr_distances(q.spatial, g.spatial, backend="numpy", precision="tf32x3", shortlist=k,
                          probe_global=q.global_features, gallery_global=g.global_features)
    streamed = fpr_shortlist_from_cache(cache, k, backend="numpy", precision="tf32x3", threads=2)
    assert streamed.plan.precision == "tf32x3"
    for row, (s, f) in enumerate(zip(short, full)):
        picked = np.argsort(s, kind="stable")[:k]
        np.testing.assert_allclose(s[picked], f[picked], rtol=0, atol=ATOL, err_msg=f"probe {row}")
    np.testing.assert_allclose(streamed.distances, short, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ({"float32": 1.0, "float64": 1.0, "tf32x3": 0.4}, "tf32x3"),  # H200-like: tensor cores beat full-rate float64
        ({"float32": 1.0, "float64": 1.0, "tf32x3": 0.9}, "float64"),  # within 1.3× of the fastest: no refinement
        ({"float32": 1.0, "float64": 1.2, "tf32x3": 0.4}, "tf32x3"),
        ({"float32": 1.0, "float64": 2.0, "tf32x3": 0.4}, "tf32x3"),  # A100-like
        ({"float32": 1.0, "float64": 32.0, "tf32x3": 0.4}, "tf32x3"),  # consumer GPU with tensor cores
        ({"float32": 1.0, "float64": 32.0, "tf32x3": 3.0}, "float32"),  # no tensor cores: three products cost 3×
        ({"float32": 1.0, "float64": AUTO_FLOAT64_RATIO, "tf32x3": 3.0}, "float64"),
        ({"float32": 1.0, "float64": 2.0, "tf32x3": 1.0}, "float32"),  # a tie: no split
    ],
)
def test_auto_picks_from_the_measured_gemm_times(times, expected):
    assert precision_for_times(times) == expected


def test_a_cpu_gets_float32_without_timing_and_every_precision_is_timed_once():
    assert resolve_precision("auto", np) == "float32"
    assert resolve_precision("tf32x3", np) == "tf32x3"
    first = gemm_times(np)
    assert set(first) == set(PRECISIONS) and all(t > 0 for t in first.values())
    assert gemm_times(np) == first  # measured once per device: the choice cannot flip within a process
