"""Differentiable torch FPR (training) against the float64 oracle."""

import numpy as np
import pytest
import torch

from reid_eval.matching import fpr_distance_matrix_torch, fpr_distance_reference


def padded(rng, counts, d, pad_to):
    local = np.zeros((len(counts), pad_to, d))
    mask = np.zeros((len(counts), pad_to), dtype=bool)
    for i, c in enumerate(counts):
        local[i, :c] = rng.standard_normal((c, d))
        mask[i, :c] = True
    return local, mask


@pytest.mark.parametrize("d, probe_counts, gallery_counts", [(64, [3, 20, 7], [5, 30]), (6, [4, 9], [12, 3, 20])])
def test_matches_reference(d, probe_counts, gallery_counts):
    rng = np.random.default_rng(0)
    x, xmask = padded(rng, probe_counts, d, max(probe_counts) + 2)
    y, ymask = padded(rng, gallery_counts, d, max(gallery_counts) + 3)
    h = rng.uniform(0.1, 1, xmask.shape) * xmask
    ref = np.array(
        [
            [fpr_distance_reference(x[i, : probe_counts[i]], y[j, : gallery_counts[j]], h[i, : probe_counts[i]]) for j in range(len(gallery_counts))]
            for i in range(len(probe_counts))
        ]
    )
    got64 = fpr_distance_matrix_torch(torch.tensor(x), torch.tensor(h), torch.tensor(y), torch.tensor(ymask))
    assert got64.shape == (len(probe_counts), len(gallery_counts)) and got64.dtype == torch.float64
    np.testing.assert_allclose(got64.numpy(), ref, rtol=0, atol=1e-9)
    got32 = fpr_distance_matrix_torch(
        torch.tensor(x, dtype=torch.float32), torch.tensor(h, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), torch.tensor(ymask)
    )
    np.testing.assert_allclose(got32.numpy(), ref, rtol=0, atol=2e-4)
    # Ones at real locations is DSR.
    dsr = fpr_distance_matrix_torch(torch.tensor(x), torch.tensor(xmask * 1.0), torch.tensor(y), torch.tensor(ymask))
    assert float(dsr[0, 0]) == pytest.approx(fpr_distance_reference(x[0, : probe_counts[0]], y[0, : gallery_counts[0]]), abs=1e-9)


def test_padding_changes_nothing():
    rng = np.random.default_rng(1)
    x, xmask = padded(rng, [5, 8], 10, 8)
    y, ymask = padded(rng, [6, 4], 10, 6)
    h = rng.uniform(0.1, 1, xmask.shape) * xmask
    base = fpr_distance_matrix_torch(torch.tensor(x), torch.tensor(h), torch.tensor(y), torch.tensor(ymask))
    # Extra padding filled with junk in the gallery (masked) and zeros in the probe (weight 0).
    y2 = np.concatenate([y, rng.standard_normal((2, 5, 10))], axis=1)
    m2 = np.concatenate([ymask, np.zeros((2, 5), bool)], axis=1)
    x2 = np.concatenate([x, np.zeros((2, 3, 10))], axis=1)
    h2 = np.concatenate([h, np.zeros((2, 3))], axis=1)
    again = fpr_distance_matrix_torch(torch.tensor(x2), torch.tensor(h2), torch.tensor(y2), torch.tensor(m2))
    np.testing.assert_allclose(again.numpy(), base.numpy(), rtol=0, atol=1e-12)


def test_gradients_finite_with_rank_deficient_gallery():
    torch.manual_seed(0)
    d, m = 4, 12  # M > d: Y Yᵀ has 8 zero eigenvalues (equal): the eigen form's backward blows up here
    y = torch.randn(2, m, d, dtype=torch.float64)
    y[0, 1] = y[0, 0]  # an exact duplicate location too
    y.requires_grad_(True)
    x = torch.randn(3, 5, d, dtype=torch.float64)
    x[0, 0] = y[0, 0].detach()  # a location in the gallery: small residual
    x[1, 4] = 0.0  # padding, weight 0
    x.requires_grad_(True)
    h = torch.rand(3, 5, dtype=torch.float64) + 0.1
    h[1, 4] = 0.0
    h.requires_grad_(True)
    mask = torch.ones(2, m, dtype=torch.bool)
    mask[1, 9:] = False
    dist = fpr_distance_matrix_torch(x, h, y, mask)
    dist.sum().backward()
    for t in (x, y, h):
        assert torch.isfinite(t.grad).all()
    assert torch.all(y.grad[1, 9:] == 0)  # masked rows receive no gradient
    assert torch.autograd.gradcheck(
        lambda a, b: fpr_distance_matrix_torch(a, h.detach(), b, mask), (x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_())
    )


def test_errors():
    x = torch.randn(2, 3, 4)
    y = torch.randn(2, 5, 4)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="positive sum"):
        fpr_distance_matrix_torch(x, torch.zeros(2, 3), y, mask)
    mask[1] = False
    with pytest.raises(ValueError, match="gallery image 1"):
        fpr_distance_matrix_torch(x, torch.ones(2, 3), y, mask)
    with pytest.raises(ValueError, match="probe_weight"):
        fpr_distance_matrix_torch(x, torch.ones(2, 4), y, torch.ones(2, 5, dtype=torch.bool))
