"""The float32 FPR engine's accuracy contract on features like those real CNNs give.

Every distance must lie within 1e-5 of the float64 definition
(fpr_distance_reference). Gaussian features are the easy case; features from
CNNs are non-negative, share a dominant direction, are correlated across
neighbouring locations, and a gallery holds the probe itself or near copies of
it, so many residuals are small and the float32 cancellation is at its worst.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_matching_helpers import concat, reference_matrix
from reid_eval.features import SpatialFeatures
from reid_eval.matching import RefinementStats, fpr_distances, fpr_tile, prepare_gallery, prepare_probes
from reid_eval.matching.kernel import accuracy, gallery as gallery_module, probes as probes_module, tile
from reid_eval.matching.kernel.workspace import TileWorkspace
from reid_eval.matching.plan import plan_tiles

CONTRACT = 1e-5


def cnn_like(rng: np.random.Generator, counts, d: int, coherence: float) -> SpatialFeatures:
    """Non-negative rows around one shared positive direction, smooth along the location index.

    ``coherence`` in [0, 1): how much of each row is the shared direction
    (random-init ResNets: cosine ~0.97 to the mean row).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    shared = np.abs(rng.standard_normal(d))
    noise = np.abs(rng.standard_normal((n + 4, d)))
    smooth = (noise[:-4] + noise[1:-3] + noise[2:-2] + noise[3:-1] + noise[4:]) / 5  # neighbours correlate
    local = coherence * shared[None, :] + (1 - coherence) * smooth * rng.uniform(0.5, 2.0, (n, 1))
    local *= rng.uniform(0.5, 3.0, (n, 1))  # unnormalised, like real activations
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SpatialFeatures(local.astype(np.float32), offsets, rng.uniform(0.05, 1.0, n).astype(np.float32))


def near_copy(rng: np.random.Generator, f: SpatialFeatures, rel: float) -> SpatialFeatures:
    """``f`` with every location multiplied by 1 + rel·noise (a near-duplicate image)."""
    local = f.local.astype(np.float64) * (1 + rel * rng.standard_normal(f.local.shape))
    return SpatialFeatures(local.astype(np.float32), f.offsets, f.foreground)


def check_contract(probe, gallery, **kw):
    stats = RefinementStats()
    got = fpr_distances(probe, gallery, backend="numpy", stats=stats, **kw)
    ref = reference_matrix(probe, gallery)
    np.testing.assert_allclose(got, ref, rtol=0, atol=CONTRACT)
    assert stats.entries == int(probe.local.shape[0]) * len(gallery)
    return got, ref, stats


def _network_features(tmp_path, n_images: int) -> SpatialFeatures:
    """Pyramid features of a random-init ResNet-18 (the demo's small geometry) on generated persons."""
    import csv

    import torch

    from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
    from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch
    from reid_eval.model import ModelConfig, build_model

    config = SyntheticConfig(seed=3, num_train_ids=2, num_test_ids=4, train_images_per_id=2)
    generate_synthetic_dataset(tmp_path, config)
    with open(tmp_path / "manifest.csv", newline="") as fh:
        paths = [tmp_path / r["path"] for r in csv.DictReader(fh) if r["split"] != "train"][:n_images]
    model_config = ModelConfig(backbone="resnet18", input_size=(128, 64), pyramid_kernels=(1, 2, 4), pyramid_stride=1)
    torch.manual_seed(0)
    model = build_model(model_config).eval()
    prep = Preprocessing.for_model(model_config)
    with torch.no_grad():
        out = model(to_tensor_batch([load_image_array(p, prep) for p in paths], prep))
    n = out.local.shape[1]
    return SpatialFeatures(
        out.local.reshape(-1, out.local.shape[-1]).numpy(), np.arange(len(paths) + 1) * n, out.foreground.reshape(-1).numpy()
    )


def test_random_init_resnet18_features(tmp_path):
    """Real network features: 58 locations, d = 512, the probes' own images and near copies in the gallery."""
    rng = np.random.default_rng(0)
    features = _network_features(tmp_path, 9)
    probe, others = features[np.arange(3)], features[np.arange(3, 9)]
    gallery = concat(concat(others, probe), near_copy(rng, probe, 1e-4))
    got, ref, stats = check_contract(probe, gallery)
    # The probe's own image and its near copy are its two nearest gallery images.
    nearest = np.sort(np.argsort(got, axis=1)[:, :2], axis=1)
    np.testing.assert_array_equal(nearest, np.stack([np.arange(6, 9), np.arange(9, 12)], axis=1))
    assert 0 <= stats.refined_share < 0.5


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.sampled_from([8, 32, 64, 256, 512]),
    m=st.sampled_from([1, 7, 40, 110]),
    coherence=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    rel=st.sampled_from([0.0, 1e-7, 1e-4, 1e-2]),
)
def test_cnn_like_features_with_self_matches_and_near_duplicates(seed, d, m, coherence, rel):
    """Coherent non-negative rows, M > d included, exact and near copies of the probes in the gallery."""
    rng = np.random.default_rng(seed)
    probe = cnn_like(rng, [m, max(1, m // 2), 3], d, coherence)
    gallery = concat(concat(cnn_like(rng, [m, m], d, coherence), probe), near_copy(rng, probe, rel))
    check_contract(probe, gallery)


def test_m_greater_than_d_with_duplicated_locations():
    rng = np.random.default_rng(1)
    probe = cnn_like(rng, [110, 50], 16, 0.9)
    dup = probe.local.copy()
    dup[1] = dup[0]  # an exactly repeated location: a singular Gram matrix
    gallery = concat(cnn_like(rng, [110, 30], 16, 0.9), SpatialFeatures(dup, probe.offsets, probe.foreground))
    check_contract(probe, gallery)


def test_error_model_bounds_the_float32_error_on_coherent_features():
    """The per-entry bound δs of S must exceed the actual float32 error, with margin, before refinement."""
    rng = np.random.default_rng(2)
    for d, coherence in ((512, 0.97), (2048, 0.9), (64, 0.99)):
        probe = cnn_like(rng, [110, 110], d, coherence)
        gallery = concat(cnn_like(rng, [110, 110], d, coherence), near_copy(rng, probe, 1e-6))
        p32, g32 = prepare_probes(probe, backend="numpy"), prepare_gallery(gallery, backend="numpy")
        p64 = prepare_probes(probe, backend="numpy", precision="float64")
        g64 = prepare_gallery(gallery, backend="numpy", precision="float64")
        err = np.abs(tile._unrefined_e2(np, p32, g32) - tile._unrefined_e2(np, p64, g64))
        bound = accuracy.error_bound_s(np, p32, np.diff(g32.offsets))
        assert (err / bound).max() < 0.8


def test_refinement_happens_where_needed_and_only_there():
    """One-location probes matched with themselves at d = 2048 need float64; far pairs do not."""
    rng = np.random.default_rng(3)
    probe = cnn_like(rng, [1] * 6, 2048, 0.0)
    far = SpatialFeatures(np.abs(rng.standard_normal((40, 2048))).astype(np.float32) ** 4, np.array([0, 40]))
    gallery = concat(far, SpatialFeatures(probe.local, probe.offsets, probe.foreground))
    got, ref, stats = check_contract(probe, gallery)
    assert np.all(np.diag(ref[:, 1:]) < 0.011)  # e = β/(1+β): only float64 gets it right
    # The six self matches (e ≈ 0.0099: no float32 bound within 1e-5), none of the far pairs.
    assert stats.refined == 6 and stats.entries == 42
    # Without refinement (a huge tolerance) those entries carry the float32 error.
    raw = fpr_distances(probe, gallery, backend="numpy", float32_atol=1.0)
    assert np.abs(raw - ref).max() > 4 * np.abs(got - ref).max()


def test_stats_count_every_tile_and_merge():
    rng = np.random.default_rng(4)
    probe = cnn_like(rng, [20, 5, 9], 32, 0.9)
    gallery = cnn_like(rng, [11, 30, 4, 8], 32, 0.9)
    whole, tiled = RefinementStats(), RefinementStats()
    fpr_distances(probe, gallery, backend="numpy", stats=whole)
    fpr_distances(probe, gallery, backend="numpy", stats=tiled, memory_budget_bytes=20_000)
    assert tiled.tiles > whole.tiles == 1
    assert whole.entries == tiled.entries == 34 * 4
    merged = RefinementStats()
    merged.merge(whole)
    merged.merge(tiled)
    assert merged.to_dict() == {
        "entries": 2 * 34 * 4, "refined": whole.refined + tiled.refined, "tiles": 1 + tiled.tiles,
        "refined_share": (whole.refined + tiled.refined) / (2 * 34 * 4),
    }
    assert RefinementStats().refined_share == 0.0


def test_same_blocks_same_bits_and_same_refined_entries():
    """The float32/float64 choice per entry depends only on the data: recomputing a tile repeats it exactly."""
    rng = np.random.default_rng(5)
    probe = cnn_like(rng, [1, 1, 30], 2048, 0.5)
    gallery = concat(cnn_like(rng, [25], 2048, 0.5), probe)
    runs = []
    for _ in range(2):
        stats = RefinementStats()
        tile = fpr_tile(prepare_probes(probe, backend="numpy"), prepare_gallery(gallery, backend="numpy"), stats=stats)
        runs.append((tile, stats.refined))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] > 0


@pytest.mark.parametrize("weighted", [True, False])
def test_dsr_and_fpr_on_coherent_features(weighted):
    rng = np.random.default_rng(6)
    probe = cnn_like(rng, [110, 17], 256, 0.97)
    gallery = concat(cnn_like(rng, [110, 60], 256, 0.97), near_copy(rng, probe, 1e-5))
    got = fpr_distances(probe, gallery, backend="numpy", weighted=weighted)
    np.testing.assert_allclose(got, reference_matrix(probe, gallery, weighted=weighted), rtol=0, atol=CONTRACT)


def test_tile_switches_to_float64_when_most_entries_need_it():
    """Every gallery image holds every probe location: all residuals are tiny, the whole tile goes float64."""
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((8, 2048)).astype(np.float32)
    probe = SpatialFeatures(rows, np.arange(9), np.ones(8, np.float32))
    gallery = SpatialFeatures(np.concatenate([rows[rng.permutation(8)] for _ in range(4)]), np.arange(5) * 8)
    got, ref, stats = check_contract(probe, gallery)
    assert stats.refined == stats.entries == 32
    assert np.all(ref < 0.01)


def test_a_weightless_location_does_not_hide_the_entries_that_need_float64():
    """Foreground 0 on one self-matched location (unbounded error, weight 0) must not stop the refinement of another."""
    rng = np.random.default_rng(9)
    rows = np.abs(rng.standard_normal((2, 2048))).astype(np.float32) ** 3
    probe = SpatialFeatures(rows, np.array([0, 2]), np.array([0.0, 1.0], np.float32))
    # 60 copies of each location: the ridge leaves e ≈ β/60, below what float32 can bound (ê² ≤ δs)
    gallery = SpatialFeatures(np.repeat(rows, 60, axis=0), np.array([0, 120]))
    got, ref, stats = check_contract(probe, gallery)
    assert ref[0, 0] < 1e-3
    assert stats.refined >= 1  # the weighted location; inf · 0 = NaN used to make the pair look exact


def test_a_given_centre_equal_to_the_blocks_own_gives_the_same_bits():
    rng = np.random.default_rng(7)
    probe, gallery = cnn_like(rng, [9, 14, 6], 96, 0.9), cnn_like(rng, [11, 5], 96, 0.9)
    basis = prepare_gallery(gallery, backend="numpy")
    own = prepare_probes(probe, backend="numpy")
    given = prepare_probes(probe, backend="numpy", centre=probes_module.probe_centre(probe, backend="numpy"))
    np.testing.assert_array_equal(given.centre, own.centre)
    for name in ("x", "sqnorm", "inv_norm", "along", "across"):
        np.testing.assert_array_equal(getattr(given, name), getattr(own, name), err_msg=name)
    np.testing.assert_array_equal(fpr_tile(given, basis), fpr_tile(own, basis))


@pytest.mark.parametrize("kind", ["other block", "orthogonal", "zero", "unrounded"])
def test_the_contract_holds_whatever_centre_a_block_is_split_along(kind):
    """A shared centre only changes how many entries need float64, never the accuracy."""
    rng = np.random.default_rng(3)
    probe = cnn_like(rng, [20, 7, 13], 128, 0.95)
    gallery = concat(concat(probe, near_copy(rng, probe, 1e-4)), cnn_like(rng, [9, 30], 128, 0.95))
    other = probes_module.probe_centre(cnn_like(rng, [15], 128, 0.6), backend="numpy")
    centre = {
        "other block": other,
        "orthogonal": np.linalg.qr(np.stack([other, rng.standard_normal(128)], axis=1))[0][:, 1],
        "zero": np.zeros(128),
        "unrounded": rng.standard_normal(128),  # rounded to 12 bits inside, so α·μ stays exact
    }[kind]
    block = prepare_probes(probe, backend="numpy", centre=centre)
    assert np.all(probes_module.round_to_bits(np, block.centre.astype(np.float32), 12) == block.centre)
    stats = RefinementStats()
    got = fpr_tile(block, prepare_gallery(gallery, backend="numpy"), stats=stats)
    np.testing.assert_allclose(got, reference_matrix(probe, gallery), rtol=0, atol=CONTRACT)
    assert stats.entries == int(probe.local.shape[0]) * len(gallery)


def test_probe_blocks_share_the_first_blocks_centre_and_each_gallery_block_its_terms(monkeypatch):
    rng = np.random.default_rng(11)
    probe, gallery = cnn_like(rng, [10] * 12, 64, 0.9), cnn_like(rng, [10] * 8, 64, 0.9)
    calls = []
    real = gallery_module._centre_terms
    monkeypatch.setattr(gallery_module, "_centre_terms", lambda xp, g, c: calls.append(c.copy()) or real(xp, g, c))
    budget = 60_000  # blocks of a few images: several probe and gallery blocks
    plan = plan_tiles(probe.offsets, gallery.offsets, 64, memory_budget_bytes=budget, concurrent_tiles=1, strict=False)
    probe_blocks, gallery_blocks = plan.probe_blocks, plan.gallery_blocks
    assert len(probe_blocks) > 2 and len(gallery_blocks) > 1
    got = fpr_distances(probe, gallery, backend="numpy", memory_budget_bytes=budget)
    np.testing.assert_allclose(got, reference_matrix(probe, gallery), rtol=0, atol=CONTRACT)
    first = probes_module.probe_centre(probe[probe_blocks[0][0] : probe_blocks[0][1]], backend="numpy")
    assert len(calls) == len(gallery_blocks)  # once per gallery block, not once per tile
    for c in calls:
        np.testing.assert_array_equal(c, first)


def test_a_bad_centre_is_refused():
    probe = cnn_like(np.random.default_rng(0), [4], 16, 0.9)
    with pytest.raises(ValueError, match=r"shape \(8,\), expected \(16,\)"):
        prepare_probes(probe, backend="numpy", centre=np.ones(8))
    with pytest.raises(ValueError, match="NaN or infinity"):
        prepare_probes(probe, backend="numpy", centre=np.full(16, np.nan))


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_probe_blocks_prepared_into_a_workspace_equal_fresh_ones_and_reuse_its_memory(precision):
    rng = np.random.default_rng(5)
    first, second = cnn_like(rng, [12, 9], 48, 0.9), cnn_like(rng, [7, 7, 3], 48, 0.9)
    basis = prepare_gallery(cnn_like(rng, [10, 6], 48, 0.9), backend="numpy", precision=precision)
    workspace = TileWorkspace()
    for probe in (first, second):
        fresh = prepare_probes(probe, backend="numpy", precision=precision)
        reused = prepare_probes(probe, backend="numpy", precision=precision, workspace=workspace)
        np.testing.assert_array_equal(reused.x, fresh.x)
        np.testing.assert_array_equal(fpr_tile(reused, basis), fpr_tile(fresh, basis))
        assert np.shares_memory(reused.x, workspace.array(np, (1, 48), reused.x.dtype, slot="probes"))
