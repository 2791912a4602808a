"""The all-pairs FPR engine (NumPy path) against the float64 one-pair oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_matching_helpers import concat, random_features, reference_matrix
from reid_eval.features import SpatialFeatures
from reid_eval.matching import (
    dsr_distances,
    fpr_distance_reference,
    fpr_distances,
    fpr_tile,
    global_distances,
    prepare_gallery,
    prepare_probes,
)

BETA = 0.01


def check(probe, gallery, weighted=True, **kw):
    ref = reference_matrix(probe, gallery, weighted=weighted, normalize=kw.get("normalize", True))
    d32 = fpr_distances(probe, gallery, weighted=weighted, backend="numpy", **kw)
    d64 = fpr_distances(probe, gallery, weighted=weighted, backend="numpy", precision="float64", **kw)
    assert d32.dtype == np.float32 and d64.dtype == np.float64
    assert d32.shape == d64.shape == (len(probe), len(gallery))
    np.testing.assert_allclose(d32, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(d64, ref, rtol=0, atol=1e-9)
    return ref, d32


@pytest.mark.parametrize("kind", ["gauss", "relu"])
def test_d2048_ragged_with_self_match(kind):
    rng = np.random.default_rng(1)
    probe = random_features(rng, [1, 110, 37], 2048, kind)
    gallery = concat(random_features(rng, [110, 5, 64], 2048, kind), probe)
    ref, _ = check(probe, gallery)
    # An image matched with itself reconstructs almost perfectly (e ~ β/(λ+β)).
    assert np.all(np.diag(ref[:, 3:]) < 0.02)


def test_m_greater_than_d_and_near_duplicates():
    rng = np.random.default_rng(2)
    probe = random_features(rng, [3, 110, 20], 16, "relu")
    base = random_features(rng, [110, 40, 17], 16, "relu")
    dup = base.local.copy()
    dup[1] = dup[0] * (1 + 1e-7)  # nearly equal eigenvalues, a rank-deficient Gram
    gallery = concat(SpatialFeatures(dup, base.offsets, base.foreground), probe)
    check(probe, gallery)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.sampled_from([1, 2, 3, 8, 33, 128, 700, 2048]),
    probe_counts=st.lists(st.integers(1, 110), min_size=1, max_size=3),
    gallery_counts=st.lists(st.integers(1, 110), min_size=1, max_size=3),
    kind=st.sampled_from(["gauss", "relu"]),
    weighted=st.booleans(),
)
def test_random_ragged_against_reference(seed, d, probe_counts, gallery_counts, kind, weighted):
    rng = np.random.default_rng(seed)
    probe = random_features(rng, probe_counts, d, kind)
    gallery = concat(random_features(rng, gallery_counts, d, kind), probe)  # includes self matches
    check(probe, gallery, weighted=weighted)


def test_unnormalised_features():
    rng = np.random.default_rng(3)
    probe = random_features(rng, [4, 9], 32)
    gallery = concat(random_features(rng, [7, 50], 32), probe)
    probe = SpatialFeatures(probe.local * 3.0, probe.offsets, probe.foreground)
    check(probe, gallery, normalize=False)


def test_exact_hand_built_cases():
    eye = np.eye(4, dtype=np.float32)
    one = np.array([0, 1], dtype=np.int64)
    # Orthogonal probe: nothing is reconstructed, e = 1.
    probe = SpatialFeatures(eye[2:], np.array([0, 2]), np.array([0.3, 0.9], np.float32))
    gallery = SpatialFeatures(eye[:2], np.array([0, 2]))
    assert fpr_distances(probe, gallery, backend="numpy", precision="float64")[0, 0] == pytest.approx(1.0, abs=1e-15)
    # x = y: w = 1/(1+β), e = β/(1+β).
    p1 = SpatialFeatures(eye[:1] * 5, one, np.ones(1, np.float32))
    g1 = SpatialFeatures(eye[:1], one)
    assert fpr_distances(p1, g1, backend="numpy", precision="float64")[0, 0] == pytest.approx(BETA / (1 + BETA), abs=1e-12)
    # M > d with a duplicated location: x = e1 sees eigenvalue 2, e = β/(2+β).
    g2 = SpatialFeatures(np.stack([eye[0], eye[0], eye[1]])[:, :2], np.array([0, 3]))
    p2 = SpatialFeatures(eye[:1, :2], one, np.ones(1, np.float32))
    for precision, tol in (("float32", 1e-7), ("float64", 1e-12)):
        got = fpr_distances(p2, g2, backend="numpy", precision=precision)[0, 0]
        assert got == pytest.approx(BETA / (2 + BETA), abs=tol)
    # Weights: an orthogonal location (h = 1) and a copy of y (h = 3).
    p3 = SpatialFeatures(np.stack([eye[3], eye[0]]), np.array([0, 2]), np.array([1.0, 3.0], np.float32))
    expected = (1.0 + 3.0 * BETA / (1 + BETA)) / 4.0
    assert fpr_distances(p3, g1, backend="numpy", precision="float64")[0, 0] == pytest.approx(expected, abs=1e-12)
    assert fpr_distance_reference(p3.local, g1.local, p3.foreground) == pytest.approx(expected, abs=1e-15)
    dsr = dsr_distances(p3, g1, backend="numpy", precision="float64")[0, 0]
    assert dsr == pytest.approx((1.0 + BETA / (1 + BETA)) / 2.0, abs=1e-12)


def test_dsr_equals_fpr_with_uniform_foreground():
    rng = np.random.default_rng(4)
    probe = random_features(rng, [5, 12, 1], 64)
    gallery = random_features(rng, [8, 30], 64)
    uniform = SpatialFeatures(probe.local, probe.offsets, np.full(probe.local.shape[0], 0.7, np.float32))
    np.testing.assert_array_equal(
        fpr_distances(uniform, gallery, backend="numpy"), dsr_distances(probe, gallery, backend="numpy")
    )
    assert not np.allclose(fpr_distances(probe, gallery, backend="numpy"), dsr_distances(probe, gallery, backend="numpy"), atol=1e-4)


def test_tile_size_invariance():
    """Identical blocks give identical bits; other tilings agree to rounding.

    BLAS may pick other kernels for other operand shapes (and the float32
    path centres each probe block on its own mean direction), so across
    tilings only agreement within rounding, and within the contract of the
    float64 definition, holds; a tile recomputed from the same blocks must be
    bit-identical (resumed and distributed runs rely on it).
    """
    rng = np.random.default_rng(5)
    probe = random_features(rng, rng.integers(1, 40, 9), 48, "relu")
    gallery = concat(random_features(rng, rng.integers(1, 40, 11), 48, "relu"), probe)
    ref = reference_matrix(probe, gallery)
    for precision, atol in (("float32", 1e-6), ("float64", 1e-12)):
        whole = fpr_distances(probe, gallery, backend="numpy", precision=precision)
        for budget in (30_000, 200_000, 1_000_000):
            split = fpr_distances(probe, gallery, backend="numpy", memory_budget_bytes=budget, precision=precision)
            np.testing.assert_allclose(split, whole, rtol=0, atol=atol)
            np.testing.assert_allclose(split, ref, rtol=0, atol=1e-5)
            again = fpr_distances(probe, gallery, backend="numpy", memory_budget_bytes=budget, precision=precision)
            np.testing.assert_array_equal(again, split)
    # A tile is a pure function of its two blocks: prepared afresh, the same bits.
    for precision in ("float32", "float64"):
        tiles = [
            fpr_tile(
                prepare_probes(probe[2:5], backend="numpy", precision=precision),
                prepare_gallery(gallery[[7, 1, 15]], backend="numpy", precision=precision),
            )
            for _ in range(2)
        ]
        np.testing.assert_array_equal(tiles[0], tiles[1])
        np.testing.assert_allclose(tiles[0], ref[2:5][:, [7, 1, 15]], rtol=0, atol=1e-5)


def test_padding_invariance_without_normalisation():
    """Zero gallery rows add nothing; zero-weight zero probe rows add nothing."""
    rng = np.random.default_rng(6)
    probe = random_features(rng, [6, 3], 20)
    gallery = random_features(rng, [5, 9], 20)
    pad = np.zeros((4, 20), np.float32)
    g_pad = SpatialFeatures(
        np.concatenate([gallery.image(0), pad, gallery.image(1), pad]), np.array([0, 9, 22])
    )
    p_pad = SpatialFeatures(
        np.concatenate([probe.image(0), pad[:2], probe.image(1)]),
        np.array([0, 8, 11]),
        np.concatenate([probe.image_foreground(0), [0, 0], probe.image_foreground(1)]).astype(np.float32),
    )
    for precision in ("float32", "float64"):
        a = fpr_distances(probe, gallery, backend="numpy", normalize=False, precision=precision)
        b = fpr_distances(p_pad, g_pad, backend="numpy", normalize=False, precision=precision)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 if precision == "float32" else 1e-12)


def test_distances_in_unit_interval_and_beta_monotone():
    rng = np.random.default_rng(7)
    probe = random_features(rng, [10, 20], 32)
    gallery = concat(random_features(rng, [15, 25], 32), probe)
    small = fpr_distances(probe, gallery, beta=1e-3, backend="numpy", precision="float64")
    large = fpr_distances(probe, gallery, beta=1.0, backend="numpy", precision="float64")
    assert np.all((small >= 0) & (small <= 1)) and np.all(large <= 1)
    assert np.all(large > small)  # more regularisation, worse reconstruction


def test_shortlist_keeps_global_order_behind_exact_fpr():
    rng = np.random.default_rng(8)
    probe = random_features(rng, rng.integers(1, 30, 5), 24)
    gallery = random_features(rng, rng.integers(1, 30, 12), 24)
    qg = rng.standard_normal((5, 10)).astype(np.float32)
    gg = rng.standard_normal((12, 10)).astype(np.float32)
    k = 4
    full = fpr_distances(probe, gallery, backend="numpy")
    short = fpr_distances(probe, gallery, backend="numpy", shortlist=k, probe_global=qg, gallery_global=gg, memory_budget_bytes=40_000)
    order = np.argsort(global_distances(qg, gg), axis=1, kind="stable")
    for p in range(5):
        top, rest = order[p, :k], order[p, k:]
        np.testing.assert_allclose(short[p, top], full[p, top], rtol=0, atol=1e-6)
        assert short[p, rest].min() > short[p, top].max()
        ranking = np.argsort(short[p], kind="stable")
        np.testing.assert_array_equal(ranking[:k], top[np.argsort(full[p, top], kind="stable")])
        np.testing.assert_array_equal(ranking[k:], rest)
    # K >= G is the all-pairs computation.
    np.testing.assert_array_equal(
        fpr_distances(probe, gallery, backend="numpy", shortlist=12, probe_global=qg, gallery_global=gg), full
    )
    with pytest.raises(ValueError, match="probe_global"):
        fpr_distances(probe, gallery, backend="numpy", shortlist=3)


def _poison(features, row, value):
    local = features.local.copy()
    local[row] = value
    f = SpatialFeatures(features.local.copy(), features.offsets, features.foreground)
    f.local[row] = value  # after construction: the engine must check again
    return f


def test_degenerate_inputs_name_the_image():
    rng = np.random.default_rng(9)
    probe = random_features(rng, [3, 4, 2], 8)
    gallery = random_features(rng, [2, 5, 1, 3], 8)
    with pytest.raises(ValueError, match="gallery image 3, location 1 contains NaN"):
        fpr_distances(probe, _poison(gallery, 9, np.nan), backend="numpy")
    with pytest.raises(ValueError, match="probe image 1, location 0 is all zero"):
        fpr_distances(_poison(probe, 3, 0.0), gallery, backend="numpy")
    with pytest.raises(ValueError, match="probe image 2, location 1 contains NaN"):
        fpr_distances(_poison(probe, 8, np.inf), gallery, backend="numpy", memory_budget_bytes=20_000)
    empty = SpatialFeatures(gallery.local, np.array([0, 2, 2, 8, 11]))
    with pytest.raises(ValueError, match="gallery image 1 has no locations"):
        fpr_distances(probe, empty, backend="numpy")
    with pytest.raises(ValueError, match="foreground"):
        fpr_distances(SpatialFeatures(probe.local, probe.offsets), gallery, backend="numpy")
    zero_fg = SpatialFeatures(probe.local, probe.offsets, np.where(np.arange(9) >= 7, 0, 1).astype(np.float32))
    with pytest.raises(ValueError, match="probe image 2 has foreground probabilities summing to 0"):
        fpr_distances(zero_fg, gallery, backend="numpy")
    with pytest.raises(ValueError, match="backend"):
        fpr_distances(probe, gallery, backend="tpu")
    with pytest.raises(ValueError, match="precision"):
        fpr_distances(probe, gallery, precision="float16")
    with pytest.raises(ValueError, match="d=8"):
        fpr_distances(probe, random_features(rng, [2], 9), backend="numpy")
    # normalize=False accepts an all-zero location (its e is 0).
    assert np.isfinite(fpr_distances(_poison(probe, 3, 0.0), gallery, backend="numpy", normalize=False)).all()


def test_reference_layout_and_errors():
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((5, 7)), rng.standard_normal((3, 7))
    # Straight from the paper's column layout.
    X, Y = (x / np.linalg.norm(x, axis=1, keepdims=True)).T, (y / np.linalg.norm(y, axis=1, keepdims=True)).T
    W = np.linalg.inv(Y.T @ Y + BETA * np.eye(3)) @ Y.T @ X
    assert fpr_distance_reference(x, y) == pytest.approx(np.linalg.norm(X - Y @ W, axis=0).mean(), abs=1e-13)
    with pytest.raises(ValueError):
        fpr_distance_reference(x, y[:, :6])
    with pytest.raises(ValueError):
        fpr_distance_reference(x, y, h=np.zeros(5))


@pytest.mark.parametrize("kind", ["gauss", "relu"])
def test_float32_error_model_at_every_residual_size(kind):
    """One-location probes (distance = e) with residuals from ~0.01 to 1 at d = 2048.

    Entries just above the refinement threshold are the ones the error model
    must bound; entries below it are recomputed in float64.
    """
    rng = np.random.default_rng(11)
    gallery = random_features(rng, [110, 7], 2048, kind)
    y = gallery.image(0).astype(np.float64)
    inside = rng.standard_normal((100, 110)) @ y
    inside /= np.linalg.norm(inside, axis=1, keepdims=True)
    outside = rng.standard_normal((100, 2048))
    theta = np.linspace(0, np.pi / 2, 100)[:, None]
    x = np.cos(theta) * inside + np.sin(theta) * outside / np.linalg.norm(outside, axis=1, keepdims=True)
    x = np.concatenate([x, y[:20]])
    probe = SpatialFeatures(x.astype(np.float32), np.arange(x.shape[0] + 1), np.ones(x.shape[0], np.float32))
    ref = reference_matrix(probe, gallery)
    assert ref[:, 0].min() < 0.02 and ref[:, 0].max() > 0.9
    got = fpr_distances(probe, gallery, backend="numpy")
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    # Without refinement (huge tolerance) the cancellation shows: the fix is needed.
    raw = fpr_distances(probe, gallery, backend="numpy", float32_atol=1.0)
    # Refining (almost) everything gives float64 accuracy up to float32 output rounding.
    tight = fpr_distances(probe, gallery, backend="numpy", float32_atol=1e-9)
    np.testing.assert_allclose(tight, ref, rtol=0, atol=1e-7)
    assert np.abs(raw - ref).max() > 1e-6 > 10 * np.abs(tight - ref).max()


def test_segment_sum_paths_agree():
    """The uniform, reduceat and running-sum (CuPy's) paths give the same sums."""
    import types

    from reid_eval.matching.kernel.backend import segment_sum

    proxy = types.ModuleType("numpy_proxy")  # not numpy: takes the running-sum branch
    proxy.__getattr__ = lambda name: getattr(np, name)
    rng = np.random.default_rng(12)
    a = rng.uniform(0, 1, (13, 7)).astype(np.float32)
    ragged = np.array([0, 2, 3, 9, 13])
    expected = np.stack([a[s:e].astype(np.float64).sum(axis=0) for s, e in zip(ragged[:-1], ragged[1:])])
    for xp in (np, proxy):
        np.testing.assert_allclose(segment_sum(xp, a, ragged, axis=0), expected, rtol=1e-13)
        np.testing.assert_allclose(segment_sum(xp, a.T.copy(), ragged, axis=1), expected.T, rtol=1e-13)
    uniform = np.array([0, 7, 14])
    b = rng.uniform(0, 1, (3, 14))
    np.testing.assert_allclose(segment_sum(np, b, uniform, axis=1), np.stack([b[:, :7].sum(1), b[:, 7:].sum(1)], 1), rtol=1e-6)


def test_large_buffers_are_huge_page_mappings_that_live_as_long_as_their_views():
    import gc
    import mmap
    import sys

    from reid_eval.matching.kernel.backend import HUGE_PAGE_MIN_BYTES, large_empty

    small = large_empty(np, (3, 5), np.float64)
    assert small.shape == (3, 5) and small.dtype == np.float64 and small.flags.c_contiguous and small.flags.writeable
    big = large_empty(np, (HUGE_PAGE_MIN_BYTES // 4 + 3,), np.float32)
    assert big.shape == (HUGE_PAGE_MIN_BYTES // 4 + 3,) and big.dtype == np.float32 and big.flags.writeable
    if sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE"):
        owner = big
        while isinstance(owner, np.ndarray):
            owner = owner.base
        assert isinstance(getattr(owner, "obj", owner), mmap.mmap)  # np.frombuffer keeps a memoryview of it
    view = big[-10:].reshape(2, 5)
    del big
    gc.collect()
    view[...] = 7.0  # still mapped while a view lives
    assert float(view.sum()) == 70.0


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 16, 17, 58, 110])
def test_add_halves_sums_every_row_once_in_groups_of_at_most_eight(n):
    """Row i is the indicator of column i: each partial sum's ones name the rows it gathered."""
    from reid_eval.matching.kernel.tile import _add_halves

    rows = np.eye(n, dtype=np.float32)
    left = _add_halves(rows, 3)
    assert left == -(-n // 8)
    assert np.array_equal(rows[:left].sum(axis=0), np.ones(n))  # every row exactly once
    assert rows[:left].sum(axis=1).max() <= 8


def test_squared_segment_sum_is_within_its_float32_rounding_of_float64():
    """Ragged images (M = 1..110): at most 4u of each sum (squares, then 3 levels of pairwise adds)."""
    from reid_eval.matching.kernel.tile import _squared_segment_sum

    rng = np.random.default_rng(13)
    counts = np.array([1, 7, 8, 9, 58, 110, 3])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    c = (rng.standard_normal((offsets[-1], 301)) * rng.uniform(0.1, 10, (offsets[-1], 1))).astype(np.float32)
    c64 = c.astype(np.float64)
    exact = np.stack([(c64[a:b] ** 2).sum(axis=0) for a, b in zip(offsets[:-1], offsets[1:])])
    before = c.copy()
    got = _squared_segment_sum(np, c, offsets)
    assert np.array_equal(c, before)  # the product is left unchanged
    assert got.dtype == np.float64
    assert np.all(np.abs(got - exact) <= 4 * 2.0**-24 * exact)
    # the float32 adds are really there: a float64 sum of the rounded squares differs somewhere
    squares64 = (c * c).astype(np.float64)
    plain = np.stack([squares64[a:b].sum(axis=0) for a, b in zip(offsets[:-1], offsets[1:])])
    assert np.abs(got - plain).max() > 0
