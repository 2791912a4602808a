"""fpr_pairs and fpr_shortlist_pass: the shortlist's unit of work, one gallery image against the probes that pick it.

They must give what fpr_tile gives on the same images (same entries, same
error bound, same refinement), however the probes' rows are gathered, and
keep the engine's contract: every distance within 1e-5 of the float64
definition.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_matching_cnn_features import cnn_like, near_copy
from test_matching_helpers import concat, reference_matrix
from reid_eval.features import SpatialFeatures
from reid_eval.matching import RefinementStats, fpr_tile, prepare_gallery, prepare_probes
from reid_eval.matching.kernel import fpr_pairs
from reid_eval.matching.shortlist import fpr_shortlist_pass

CONTRACT = 1e-5


def _select(f: SpatialFeatures, images: np.ndarray) -> SpatialFeatures:
    """Images ``images`` of ``f``, in that order (repeats allowed), as features of their own."""
    counts = f.counts[images]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    local = np.concatenate([f.image(int(i)) for i in images])
    return SpatialFeatures(local, offsets, np.concatenate([f.image_foreground(int(i)) for i in images]))


def _blocks(seed: int, d: int = 96):
    rng = np.random.default_rng(seed)
    probe = cnn_like(rng, rng.integers(1, 20, 7), d, 0.9)
    # The gallery holds near copies of two probes, so some residuals are tiny.
    gallery = concat(cnn_like(rng, rng.integers(1, 25, 4), d, 0.9), near_copy(rng, _select(probe, np.array([2, 5])), 1e-6))
    return probe, gallery


@pytest.mark.parametrize("atol", [9e-6, 1e-7, 1e-14])
def test_pairs_equal_the_tile_of_the_same_block(atol):
    """Default tolerance (no refinement), partial refinement, and every entry refined (float64 switch)."""
    probe, gallery = _blocks(0)
    pb, gb = prepare_probes(probe, backend="numpy"), prepare_gallery(gallery, backend="numpy")
    every = np.arange(len(probe))
    images = np.array([5, 0, 2, 2, 6])  # any order, repeats allowed
    ref = reference_matrix(probe, gallery)
    pair_stats, tile_stats = RefinementStats(), RefinementStats()
    for g in range(len(gallery)):
        tile = fpr_tile(pb, gb.image(g), float32_atol=atol, stats=tile_stats)[:, 0]
        whole = fpr_pairs(pb, gb, g, every, float32_atol=atol, stats=pair_stats)
        picked = fpr_pairs(pb, gb, g, images, float32_atol=atol)
        assert whole.shape == (len(probe),) and picked.shape == (images.size,) and picked.dtype == np.float32
        # Same entries, same bounds, same refinement: only the GEMM's blocking differs.
        np.testing.assert_allclose(whole, tile, rtol=0, atol=2e-7)
        np.testing.assert_allclose(picked, whole[images], rtol=0, atol=2e-7)
        # gathered one image at a time (a GEMM per probe image) or a few rows at a time: the same values
        for rows in (1, 30):
            np.testing.assert_allclose(fpr_pairs(pb, gb, g, images, float32_atol=atol, gather_rows=rows), picked,
                                       rtol=0, atol=2e-7)
        np.testing.assert_allclose(whole, ref[:, g], rtol=0, atol=max(atol, 1e-7) + 1e-7)
    assert pair_stats.entries == tile_stats.entries == len(gallery) * int(probe.local.shape[0])
    assert pair_stats.refined == tile_stats.refined
    if atol == 9e-6:
        assert pair_stats.refined == 0
    elif atol == 1e-7:
        assert 0 < pair_stats.refined < pair_stats.entries // 2
    else:
        assert pair_stats.refined == pair_stats.entries


def test_pairs_in_float32_and_float64_agree_with_the_definition():
    probe, gallery = _blocks(1)
    images = np.array([1, 3])
    ref = reference_matrix(_select(probe, images), gallery)
    pb, gb = prepare_probes(probe, backend="numpy"), prepare_gallery(gallery, backend="numpy")
    p64 = prepare_probes(probe, backend="numpy", precision="float64")
    g64 = prepare_gallery(gallery, backend="numpy", precision="float64")
    for g in range(len(gallery)):
        np.testing.assert_allclose(fpr_pairs(pb, gb, g, images), ref[:, g], rtol=0, atol=CONTRACT)
        d64 = fpr_pairs(p64, g64, g, images)
        assert d64.dtype == np.float64
        np.testing.assert_allclose(d64, ref[:, g], rtol=0, atol=1e-12)


def test_a_selection_is_not_a_block():
    probe, gallery = _blocks(2)
    pb, gb = prepare_probes(probe, backend="numpy"), prepare_gallery(gallery, backend="numpy")
    sel = pb.take_images(np.array([0, 1]))
    assert sel.num_rows == int(probe.counts[:2].sum()) and sel.x is pb.x  # rows are not copied
    with pytest.raises(ValueError, match="selection"):
        fpr_tile(sel, gb)
    with pytest.raises(ValueError, match="selection"):
        sel.take_images(np.array([0]))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.sampled_from([8, 64, 300]), coherence=st.sampled_from([0.0, 0.9, 0.99]),
       k=st.integers(1, 5))
def test_shortlist_pass_fills_every_shortlisted_pair_within_the_contract(seed, d, coherence, k):
    rng = np.random.default_rng(seed)
    probe = cnn_like(rng, rng.integers(1, 12, 6), d, coherence)
    gallery = concat(cnn_like(rng, rng.integers(1, 12, 5), d, coherence), near_copy(rng, probe, 1e-6))
    n_gallery = len(gallery)
    shortlist = np.stack([rng.permutation(n_gallery)[:k] for _ in range(len(probe))])
    ref = reference_matrix(probe, gallery)
    exact = np.full(shortlist.shape, np.nan)
    blocks = [(0, 4), (4, 9), (9, n_gallery)]
    calls, done = [], []
    stats = RefinementStats()

    def basis(a: int, b: int):
        calls.append((a, b))
        return prepare_gallery(gallery[a:b], backend="numpy")

    for pa, pb in [(0, 2), (2, 6)]:  # two passes over the probes
        calls.clear()
        fpr_shortlist_pass(prepare_probes(probe[pa:pb], backend="numpy"), pa, shortlist, blocks, basis, exact,
                           stats=stats, block_done=lambda bi, pairs, flops, counts: done.append((pairs.size, flops)))
        # each gallery range prepared once per pass, and only when a probe of the pass picks one of its images
        picked = [(a, b) for a, b in blocks if np.any((shortlist[pa:pb] >= a) & (shortlist[pa:pb] < b))]
        assert calls == picked
    np.testing.assert_allclose(exact, np.take_along_axis(ref, shortlist, axis=1), rtol=0, atol=CONTRACT)
    assert sum(p for p, _ in done) == shortlist.size and len(done) == 2 * len(blocks)
    assert stats.entries == sum(int(probe.counts[p]) for p in range(len(probe))) * k
