import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_eval.matching import global_distances


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.integers(1, 7), g=st.integers(1, 9), d=st.integers(1, 40))
def test_against_brute_force(seed, p, g, d):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((p, d)) * 3).astype(np.float32)
    gal = (rng.standard_normal((g, d)) * 3).astype(np.float32)
    q64, g64 = q.astype(np.float64), gal.astype(np.float64)
    euclid = np.sqrt(((q64[:, None, :] - g64[None, :, :]) ** 2).sum(-1))
    got = global_distances(q, gal)
    assert got.dtype == np.float32 and got.shape == (p, g)
    np.testing.assert_allclose(got, euclid, rtol=1e-6, atol=1e-5)
    qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
    gn = g64 / np.linalg.norm(g64, axis=1, keepdims=True)
    np.testing.assert_allclose(global_distances(q, gal, metric="cosine"), 1 - qn @ gn.T, rtol=0, atol=1e-6)


def test_identical_vectors_give_exact_zero():
    q = np.array([[1e4, 3.0, -2.0]], dtype=np.float32)
    assert global_distances(q, q)[0, 0] == 0.0  # clamped at 0 before the square root
    assert global_distances(q, 2 * q, metric="cosine")[0, 0] == 0.0
    assert global_distances(q, -q, metric="cosine")[0, 0] == pytest.approx(2.0)


def test_chunked_rows_match(monkeypatch):
    import reid_eval.matching.global_distance as gd

    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((23, 5)), rng.standard_normal((4, 5))
    whole = global_distances(q, g)
    monkeypatch.setattr(gd, "_CHUNK_ELEMENTS", 9)
    np.testing.assert_array_equal(global_distances(q, g), whole)


def test_errors():
    with pytest.raises(ValueError, match="metric"):
        global_distances(np.ones((1, 2)), np.ones((1, 2)), metric="l1")
    with pytest.raises(ValueError, match="same d"):
        global_distances(np.ones((1, 2)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="gallery global feature 1"):
        global_distances(np.ones((1, 2)), np.array([[1.0, 0.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match="query global feature 0 is all zero"):
        global_distances(np.zeros((1, 2)), np.ones((1, 2)), metric="cosine")
