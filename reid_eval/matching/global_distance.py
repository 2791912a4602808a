"""Distances between global (one vector per image) features: the Baseline rows."""

from __future__ import annotations

import numpy as np

__all__ = ["global_distances"]

_METRICS = ("euclidean", "cosine")
# Probe rows per chunk: keeps the float64 [chunk, G] temporaries near 64 MB.
_CHUNK_ELEMENTS = 8_000_000


def global_distances(q: np.ndarray, g: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Distance of every query vector to every gallery vector.

    Parameters
    ----------
    q: ``[P, d]`` query (probe) global features.
    g: ``[G, d]`` gallery global features.
    metric: ``"euclidean"`` on the raw features (the Baseline rows), or
        ``"cosine"``: 1 − cos, on L2-normalised features (range [0, 2]).

    Returns
    -------
    ``[P, G]`` float32. Computed in float64 as ‖q‖² + ‖g‖² − 2 q·g (no
    ``[P, G, d]`` intermediate), clamped at 0 before the square root.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    q = np.asarray(q)
    g = np.asarray(g)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"global features must be [P, d] and [G, d] with the same d; got {q.shape} and {g.shape}")
    q = q.astype(np.float64)
    g = g.astype(np.float64)
    for role, a in (("query", q), ("gallery", g)):
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            raise ValueError(f"{role} global feature {int(np.flatnonzero(bad)[0])} contains NaN or infinity")
    if metric == "cosine":
        for role, a in (("query", q), ("gallery", g)):
            norms = np.linalg.norm(a, axis=1)
            if np.any(norms == 0):
                raise ValueError(f"{role} global feature {int(np.flatnonzero(norms == 0)[0])} is all zero (cosine undefined)")
            a /= norms[:, None]
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    g_sq = (g * g).sum(axis=1)
    step = max(1, _CHUNK_ELEMENTS // max(1, g.shape[0]))
    for a in range(0, q.shape[0], step):
        qa = q[a : a + step]
        dot = qa @ g.T
        if metric == "cosine":
            out[a : a + step] = np.maximum(1.0 - dot, 0.0)
        else:
            sq = (qa * qa).sum(axis=1)[:, None] + g_sq[None, :] - 2.0 * dot
            out[a : a + step] = np.sqrt(np.maximum(sq, 0.0))
    return out
