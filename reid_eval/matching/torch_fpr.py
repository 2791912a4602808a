"""Differentiable FPR distance matrix in torch (training), the solve form.

Same definition as :mod:`reid_eval.matching.definition`; for gradients it uses
a Cholesky solve of Y Yᵀ + βI rather than the eigen form, whose backward pass
divides by eigenvalue gaps (close whenever M exceeds the rank of Y).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reid_eval.matching.definition import DEFAULT_BETA, SQRT_FLOOR, l2_normalize_rows, normalize_weights

if TYPE_CHECKING:
    import torch

__all__ = ["fpr_distance_matrix_torch"]


def fpr_distance_matrix_torch(
    probe_local: torch.Tensor,
    probe_weight: torch.Tensor,
    gallery_local: torch.Tensor,
    gallery_mask: torch.Tensor,
    beta: float = DEFAULT_BETA,
    normalize: bool = True,
) -> torch.Tensor:
    """FPR distance of every probe to every gallery image, differentiably.

    Parameters
    ----------
    probe_local: ``[B, N, d]`` float probe locations (padded rows: any finite
        values, zeros say; their weight must be 0).
    probe_weight: ``[B, N]`` non-negative weights: foreground probability for
        FPR, ones for DSR, zeros at padding; normalised per probe inside
        (h̃ = h / Σh, every probe needs a positive sum).
    gallery_local: ``[B2, M, d]`` gallery locations.
    gallery_mask: ``[B2, M]`` bool, True for real locations; padded rows are
        zeroed, so they add a zero row/column to Y Yᵀ, +βI keeps the matrix
        positive definite and their coefficient is exactly 0: they change
        nothing, and get zero gradient.
    beta: ridge parameter β.
    normalize: L2-normalise each location first.

    Returns
    -------
    ``[B, B2]`` tensor (dtype of ``probe_local``). With a = Y x and
    w = (Y Yᵀ + βI)⁻¹ a = L⁻ᵀ L⁻¹ a (Cholesky L), e² = ‖x‖² − ‖L⁻¹a‖² − β‖w‖²,
    e = √max(e², 1e-12) (the floor keeps the gradient finite at e = 0; real
    residuals of normalised features are ≥ β/(M+β), far above 1e-6), and the
    distance is Σ_n h̃_n e_n.
    """
    import torch

    if probe_local.dim() != 3 or gallery_local.dim() != 3:
        raise ValueError("probe_local must be [B, N, d] and gallery_local [B2, M, d]")
    b, n, d = probe_local.shape
    b2, m, d2 = gallery_local.shape
    if d2 != d:
        raise ValueError(f"probe d={d} differs from gallery d={d2}")
    if probe_weight.shape != (b, n):
        raise ValueError(f"probe_weight must be [{b}, {n}], got {tuple(probe_weight.shape)}")
    if gallery_mask.shape != (b2, m):
        raise ValueError(f"gallery_mask must be [{b2}, {m}], got {tuple(gallery_mask.shape)}")
    mask = gallery_mask.to(torch.bool)
    if not bool(mask.any(dim=1).all()):
        raise ValueError(f"gallery image {int((~mask.any(dim=1)).nonzero()[0])} has no unmasked location")
    totals = probe_weight.sum(dim=1)
    if bool((probe_weight < 0).any()) or not bool((totals > 0).all()):
        raise ValueError("probe_weight must be non-negative with a positive sum for every probe")

    x = probe_local
    y = torch.where(mask[..., None], gallery_local, torch.zeros((), dtype=gallery_local.dtype, device=gallery_local.device))
    if normalize:
        x = l2_normalize_rows(x)
        y = l2_normalize_rows(y)
    weights = normalize_weights(probe_weight.to(x.dtype))  # [B, N]

    eye = torch.eye(m, dtype=y.dtype, device=y.device)
    chol = torch.linalg.cholesky(y @ y.transpose(1, 2) + beta * eye)  # [B2, M, M]
    x_flat = x.reshape(b * n, d)
    a = y @ x_flat.T  # [B2, M, B*N]: Y x for every gallery image and probe location
    v = torch.linalg.solve_triangular(chol, a, upper=False)  # L⁻¹ a
    w = torch.linalg.solve_triangular(chol.transpose(1, 2), v, upper=True)  # (YYᵀ+βI)⁻¹ a
    e2 = (x_flat * x_flat).sum(dim=1)[None, :] - (v * v).sum(dim=1) - beta * (w * w).sum(dim=1)  # [B2, B*N]
    e = e2.clamp(min=SQRT_FLOOR).sqrt().reshape(b2, b, n)
    return (e * weights[None, :, :]).sum(dim=2).T
