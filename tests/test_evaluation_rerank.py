"""k-reciprocal re-ranking against a dense reimplementation of the paper's equations written here."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from reid_eval.evaluation.rerank import RerankParams, k_reciprocal_rerank


def dense_rerank(qg, qq, gg, k1, k2, lam):
    """Zhong et al. 2017, Eq. 4-12, with Python sets and the full N×N matrix."""
    Q, G = qg.shape
    N = Q + G
    A = np.block([[qq, qg], [qg.T, gg]]).astype(np.float64) ** 2
    d = A / A.max(axis=1, keepdims=True)
    order = np.argsort(d, axis=1, kind="stable")

    def neighbours(i, k):
        return [int(j) for j in order[i, : k + 1]]

    def reciprocal(i, k):
        return {j for j in neighbours(i, k) if i in neighbours(j, k)}

    half = int(np.around(k1 / 2))
    V = np.zeros((N, N))
    for i in range(N):
        r = reciprocal(i, k1)
        star = set(r)
        for q in r:
            rq = reciprocal(q, half)
            if 3 * len(r & rq) > 2 * len(rq):
                star |= rq
        cols = sorted(star)
        w = np.exp(-d[i, cols])
        V[i, cols] = w / w.sum()
    if k2 > 1:
        V = np.stack([V[order[i, :k2]].mean(axis=0) for i in range(N)])
    out = np.empty((Q, G))
    for i in range(Q):
        for j in range(G):
            lo = np.minimum(V[i], V[Q + j]).sum()
            hi = np.maximum(V[i], V[Q + j]).sum()
            out[i, j] = (1 - lam) * (1 - lo / hi) + lam * d[i, Q + j]
    return out


def clustered(rng, n, ids, dim=6):
    centres = rng.normal(size=(ids, dim)) * 2
    labels = rng.integers(0, ids, n)
    return centres[labels] + rng.normal(size=(n, dim)), labels


def euclid(a, b):
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (5, 3, 0.5), (4, 1, 0.0), (7, 2, 1.0)])
def test_symmetric_metric_matches_dense_equations(k1, k2, lam):
    rng = np.random.default_rng(k1 * 10 + k2)
    q, _ = clustered(rng, 13, 5)
    g, _ = clustered(rng, 31, 5)
    qg, qq, gg = euclid(q, g), euclid(q, q), euclid(g, g)
    got = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    want = dense_rerank(qg, qq, gg, k1, k2, lam)
    assert got.dtype == np.float32 and got.shape == (13, 31)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_asymmetric_distances_and_blocked_hdf5_gallery(tmp_path):
    rng = np.random.default_rng(3)
    Q, G = 9, 40
    qg = rng.random((Q, G)) + 0.1
    qq = rng.random((Q, Q)) + 0.1
    gg = rng.random((G, G)) + 0.1
    np.fill_diagonal(qq, 0.0)
    np.fill_diagonal(gg, 0.0)
    # the authors' release reads every image's distances by column: the equations on the transposed aux matrices
    want = dense_rerank(qg, qq.T, gg.T, 6, 3, 0.3)
    path = tmp_path / "gg.h5"
    with h5py.File(path, "w") as f:
        f["gg"] = gg.astype(np.float32)
    with h5py.File(path, "r") as f:
        reads = []

        class Spy:
            shape = f["gg"].shape

            def __getitem__(self, key):
                reads.append(key)
                return f["gg"][key]

        got = k_reciprocal_rerank(qg, qq, Spy(), k1=6, k2=3, lambda_value=0.3, block_rows=7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the gallery–gallery matrix is only ever read in blocks of at most 7 columns
    assert reads and all(k[0] == slice(None) and k[1].stop - k[1].start <= 7 for k in reads)


def test_block_size_does_not_change_the_result():
    rng = np.random.default_rng(5)
    q, _ = clustered(rng, 20, 6)
    g, _ = clustered(rng, 50, 6)
    args = (euclid(q, g), euclid(q, q), euclid(g, g))
    a = k_reciprocal_rerank(*args, block_rows=3)
    b = k_reciprocal_rerank(*args, block_rows=1000)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs,needle",
    [({"k1": 0}, "--rerank-k1"), ({"k2": -1}, "--rerank-k2"), ({"lambda_value": 1.5}, "--rerank-lambda")],
)
def test_bad_parameters_name_the_option(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        k_reciprocal_rerank(np.ones((2, 3)), np.ones((2, 2)), np.ones((3, 3)), **kwargs)
    with pytest.raises(ValueError, match=needle):
        RerankParams(**kwargs)


def test_shape_mismatch_and_nan_are_errors():
    with pytest.raises(ValueError, match="gg must be"):
        k_reciprocal_rerank(np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 2)))
    bad = np.ones((3, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        k_reciprocal_rerank(np.ones((2, 3)), np.zeros((2, 2)), bad)
