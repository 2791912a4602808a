"""The CuPy path of the FPR engine (skipped without CuPy and a CUDA GPU)."""

import numpy as np
import pytest

from test_matching_helpers import concat, random_features, reference_matrix
from reid_eval.features import SpatialFeatures
from reid_eval.matching import fpr_distances, get_array_module

cupy = pytest.importorskip("cupy")
try:
    _has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # no driver
    _has_gpu = False
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _has_gpu, reason="needs a CUDA GPU")]


def test_auto_picks_cupy():
    assert get_array_module("auto") is cupy and get_array_module("cupy") is cupy


@pytest.mark.parametrize(
    "d, probe_counts, gallery_counts, kind",
    [
        (2048, [1, 110, 37], [110, 5, 64], "relu"),  # ragged: running-sum segment path
        (2048, [110, 110], [110, 110, 110], "gauss"),  # uniform: reshape path
        (16, [3, 110], [110, 40, 17], "relu"),  # M > d
    ],
)
def test_against_reference_with_self_match(d, probe_counts, gallery_counts, kind):
    rng = np.random.default_rng(d + len(probe_counts))
    probe = random_features(rng, probe_counts, d, kind)
    gallery = concat(random_features(rng, gallery_counts, d, kind), probe)
    ref = reference_matrix(probe, gallery)
    d32 = fpr_distances(probe, gallery, backend="cupy", precision="float32")  # "auto" may pick float64 on a GPU
    d64 = fpr_distances(probe, gallery, backend="cupy", precision="float64")
    assert isinstance(d32, np.ndarray) and d32.dtype == np.float32
    np.testing.assert_allclose(d32, ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(d64, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(d32, fpr_distances(probe, gallery, backend="numpy"), rtol=0, atol=1e-5)
    dsr = fpr_distances(probe, gallery, backend="cupy", weighted=False)
    np.testing.assert_allclose(dsr, reference_matrix(probe, gallery, weighted=False), rtol=0, atol=1e-5)


def test_tiles_and_shortlist_on_gpu():
    rng = np.random.default_rng(3)
    probe = random_features(rng, rng.integers(1, 60, 7), 256, "relu")
    gallery = concat(random_features(rng, rng.integers(1, 60, 9), 256, "relu"), probe)
    whole = fpr_distances(probe, gallery, backend="cupy")
    split = fpr_distances(probe, gallery, backend="cupy", memory_budget_bytes=2_000_000)
    np.testing.assert_allclose(split, whole, rtol=0, atol=1e-6)
    qg, gg = rng.standard_normal((7, 8)), rng.standard_normal((16, 8))
    short = fpr_distances(probe, gallery, backend="cupy", shortlist=5, probe_global=qg, gallery_global=gg)
    host = fpr_distances(probe, gallery, backend="numpy", shortlist=5, probe_global=qg, gallery_global=gg)
    np.testing.assert_allclose(short, host, rtol=0, atol=1e-5)


def test_errors_name_image_on_gpu():
    rng = np.random.default_rng(4)
    probe = random_features(rng, [3, 4], 8)
    gallery = random_features(rng, [2, 5], 8)
    bad = SpatialFeatures(gallery.local.copy(), gallery.offsets)
    bad.local[4] = np.nan
    with pytest.raises(ValueError, match="gallery image 1, location 2"):
        fpr_distances(probe, bad, backend="cupy")


def test_tf32x3_on_tensor_cores_keeps_the_contract_and_restores_the_compute_type():
    from cupy._core import _routines_linalg as linalg

    rng = np.random.default_rng(5)
    probe = random_features(rng, [110, 37, 64], 2048, "relu")
    gallery = concat(random_features(rng, [110, 5, 90], 2048, "relu"), probe)
    before = linalg.get_compute_type(cupy.float32)
    tf32 = fpr_distances(probe, gallery, backend="cupy", precision="tf32x3")
    assert linalg.get_compute_type(cupy.float32) == before  # float32 GEMMs outside stay full float32
    assert tf32.dtype == np.float32
    np.testing.assert_allclose(tf32, fpr_distances(probe, gallery, backend="cupy", precision="float64"), rtol=0, atol=1e-5)
