"""The FPR distance, defined once; the pieces every implementation shares.

For a probe with locations x_1..x_N (rows of X, ``[N, d]``) and a gallery image
with locations y_1..y_M (rows of Y, ``[M, d]``), each location L2-normalised
(``normalize=True``, as the authors' code does):

    W   = (Y Yᵀ + βI)⁻¹ Y Xᵀ                      (ridge coefficients, [M, N])
    e_n = ‖x_n − Yᵀ w_n‖₂                          (reconstruction error of x_n)
    FPR(X, Y) = Σ_n h̃_n e_n,   h̃ = h / Σ h          (Eq. 5, h = foreground prob.)
    DSR(X, Y) = Σ_n e_n / N                       (Eq. 4, h = ones)

(the paper writes X, Y as d×N, d×M matrices of columns; here they are arrays of
rows, so the paper's YᵀY is ``Y @ Y.T`` here). β = 0.01. The distance is not
symmetric: the probe is reconstructed from the gallery image. With normalised
locations every e_n lies in [0, 1] (the residual operator has norm ≤ 1), so the
distance does too, and e_n ≥ β / (λ_max + β) ≥ β / (M + β) > 0.

Three equivalent forms are used:

* the solve form (:func:`reid_eval.matching.fpr_distance_reference`, float64,
  and :func:`reid_eval.matching.fpr_distance_matrix_torch`, differentiable):
  with a = Y x, w = (Y Yᵀ + βI)⁻¹ a:  e² = ‖x‖² − aᵀw − β‖w‖²  (torch), or the
  explicit residual (reference);
* the basis form (:func:`reid_eval.matching.fpr_distances`): expanding the
  residual gives e² = ‖x‖² − (Y x)ᵀ f(G) (Y x) with G = Y Yᵀ and
  f(G) = (G+βI)⁻¹ (G+2βI) (G+βI)⁻¹; any factor F with F Fᵀ = f(G) gives the
  rows ``Bt = Fᵀ Y`` with e² = ‖x‖² − ‖Bt x‖² for every x, so all pairs of a
  tile are one GEMM. One such F is Q diag(√(λ+2β)/(λ+β)) from the
  eigendecomposition G = Q Λ Qᵀ; :func:`basis_factor` uses the Cholesky
  factor L of G+2βI instead, F = (G+βI)⁻¹ L, the same F up to a rotation
  (so the same Bt x norms) at a third of the cost of an eigendecomposition.

This module holds the constants and the helpers shared by all of them; it works
on NumPy, CuPy and torch arrays alike (only operators and methods common to
the three are used).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_BETA",
    "NORM_FLOOR_SQ",
    "SQRT_FLOOR",
    "l2_normalize_rows",
    "basis_factor",
    "normalize_weights",
]

#: Ridge parameter β of Eq. 2 (paper §4, "Implementation Details").
DEFAULT_BETA = 0.01

#: Squared norms are floored here before the division of L2 normalisation, so
#: a zero row (padding) stays zero and its gradient stays finite (zero).
NORM_FLOOR_SQ = 1e-24

#: e² is floored here before the square root in the differentiable path: the
#: derivative of √t is infinite at 0. With normalised locations the true e² is
#: at least (β/(M+β))² ≈ 8e-9 for M = 110, far above this floor, so the floor
#: only acts on padding and on rounding noise.
SQRT_FLOOR = 1e-12


def l2_normalize_rows(x: Any) -> Any:
    """Divide each row (last axis) of ``x`` by its L2 norm.

    ``x``: ``[..., d]`` NumPy / CuPy / torch array. Rows of norm zero stay zero.
    The norm is computed in the dtype of ``x``.
    """
    sq = (x * x).sum(-1)
    norm = sq.clip(min=NORM_FLOOR_SQ) ** 0.5
    return x / norm[..., None]


def basis_factor(xp: Any, gram: Any, beta: float) -> Any:
    """``Fᵀ`` ``[..., M, M]`` with F Fᵀ = (G+βI)⁻¹(G+2βI)(G+βI)⁻¹, G = ``gram``.

    ``xp``: the array module of ``gram`` (NumPy, CuPy or torch: only
    ``eye``, ``linalg.cholesky`` and ``linalg.solve`` are used). ``gram``: the
    float64 Gram matrices Y Yᵀ of the normalised rows, batched. The basis rows
    of an image are ``Fᵀ @ Y``. G+2βI and G+βI are positive definite for every
    Gram matrix (also for M > d, where G is singular), so both factorisations
    exist; with β = 0.01 and unit rows their condition numbers are at most
    (M+β)/β, harmless in float64.
    """
    m = gram.shape[-1]
    eye = xp.eye(m, dtype=gram.dtype)
    chol = xp.linalg.cholesky(gram + (2.0 * beta) * eye)  # L Lᵀ = G + 2βI
    return xp.linalg.solve(gram + beta * eye, chol).swapaxes(-1, -2)  # ((G+βI)⁻¹ L)ᵀ


def normalize_weights(h: Any) -> Any:
    """``h / h.sum(-1)`` for padded ``[..., N]`` weights (zeros at padding)."""
    return h / h.sum(-1)[..., None]
