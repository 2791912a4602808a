"""Shared generators for the matching tests (random ragged spatial features); no tests here."""

from __future__ import annotations

import numpy as np

from reid_eval.features import SpatialFeatures
from reid_eval.matching import fpr_distance_reference
from reid_eval.matching.kernel.threads import blas_threads


def random_features(rng: np.random.Generator, counts, d: int, kind: str = "gauss", foreground: bool = True) -> SpatialFeatures:
    """Images with ``counts`` locations each; kind "gauss" or "relu" (non-negative, correlated)."""
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    if kind == "relu":
        local = np.maximum(rng.standard_normal((n, d)) + rng.uniform(0, 1) * rng.standard_normal(d), 0) + 1e-3
    else:
        local = rng.standard_normal((n, d))
    fg = rng.uniform(0.05, 1.0, n).astype(np.float32) if foreground else None
    return SpatialFeatures(local.astype(np.float32), offsets, fg)


def concat(a: SpatialFeatures, b: SpatialFeatures) -> SpatialFeatures:
    """Images of ``a`` then of ``b`` (foreground kept when both have it)."""
    fg = None if a.foreground is None or b.foreground is None else np.concatenate([a.foreground, b.foreground])
    return SpatialFeatures(
        np.concatenate([a.local, b.local]), np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]), fg
    )


def reference_matrix(probe: SpatialFeatures, gallery: SpatialFeatures, weighted: bool = True, beta: float = 0.01, normalize: bool = True) -> np.ndarray:
    """[P, G] float64 by the one-pair oracle."""
    with blas_threads(1):  # many small products: far faster on one thread on a loaded machine
        return _reference_matrix(probe, gallery, weighted, beta, normalize)


def _reference_matrix(probe, gallery, weighted, beta, normalize):
    return np.array(
        [
            [
                fpr_distance_reference(
                    probe.image(i), gallery.image(j), probe.image_foreground(i) if weighted else None, beta, normalize
                )
                for j in range(len(gallery))
            ]
            for i in range(len(probe))
        ]
    )
