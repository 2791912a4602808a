"""FPR for one probe/gallery pair, straight from the paper (the test oracle)."""

from __future__ import annotations

import numpy as np

from reid_eval.matching.definition import DEFAULT_BETA, l2_normalize_rows

__all__ = ["fpr_distance_reference"]


def fpr_distance_reference(
    X: np.ndarray,
    Y: np.ndarray,
    h: np.ndarray | None = None,
    beta: float = DEFAULT_BETA,
    normalize: bool = True,
) -> float:
    """FPR distance of one pair, in float64, by Eq. 2–5 of the paper.

    Parameters
    ----------
    X:
        ``[N, d]`` probe locations, one location per ROW (the paper's X is
        the d×N transpose of this).
    Y:
        ``[M, d]`` gallery locations, one per row.
    h:
        ``[N]`` foreground probabilities of the probe's locations (FPR, Eq. 5),
        or ``None`` for uniform weights (DSR, Eq. 4). Normalised to sum 1.
    beta:
        ridge parameter β of Eq. 2.
    normalize:
        L2-normalise every location first (the authors' code does).

    Returns
    -------
    float: Σ_n h̃_n ‖x_n − Yᵀ w_n‖ with W = (Y Yᵀ + βI)⁻¹ Y Xᵀ (solve, no inverse).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(f"X [N, d] and Y [M, d] must share d; got {X.shape} and {Y.shape}")
    if X.shape[0] == 0 or Y.shape[0] == 0:
        raise ValueError("X and Y need at least one location each")
    if normalize:
        X = l2_normalize_rows(X)
        Y = l2_normalize_rows(Y)
    gram = Y @ Y.T + beta * np.eye(Y.shape[0])  # paper's YᵀY + βI, [M, M]
    W = np.linalg.solve(gram, Y @ X.T)  # [M, N]
    E = X - W.T @ Y  # residual rows, [N, d]
    e = np.sqrt((E * E).sum(axis=1))
    if h is None:
        weights = np.full(X.shape[0], 1.0 / X.shape[0])
    else:
        h = np.asarray(h, dtype=np.float64).reshape(-1)
        if h.shape[0] != X.shape[0]:
            raise ValueError(f"h must have one weight per probe location ({X.shape[0]}), got {h.shape[0]}")
        if np.any(h < 0) or not h.sum() > 0:
            raise ValueError("h must be non-negative with a positive sum")
        weights = h / h.sum()
    return float(weights @ e)
