"""Input checks of block preparation: one-line ValueErrors naming the image and location."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from reid_eval.features.spatial import SpatialFeatures

__all__ = ["image_of_row", "check_rows", "check_gathered", "check_counts"]


def image_of_row(offsets: np.ndarray, row: int) -> int:
    """The image whose rows (``offsets`` ``[n+1]``) hold row ``row``."""
    return int(np.searchsorted(offsets, row, side="right") - 1)


def check_rows(
    xp: ModuleType, sq: Any, row0: int, features: SpatialFeatures, role: str, index_base: int, normalize: bool
) -> None:
    """Raise ValueError for a non-finite (or, when normalising, zero) squared norm.

    ``sq`` holds the squared norms of rows ``row0 ...`` of ``features``; the
    message names ``role``, the image (``index_base`` + local index) and the
    location.
    """
    bad = ~xp.isfinite(sq)
    if normalize:
        bad |= sq == 0
    if bool(bad.any()):
        k = int(xp.flatnonzero(bad)[0])
        row = row0 + k
        i = image_of_row(features.offsets, row)
        loc = row - int(features.offsets[i])
        what = "contains NaN or infinity" if not math.isfinite(float(sq[k])) else "is all zero and cannot be L2-normalised"
        raise ValueError(f"{role} image {index_base + i}, location {loc} {what}")


def check_gathered(
    xp: ModuleType, sq: Any, batch: np.ndarray, m: int, features: SpatialFeatures, index_base: int, normalize: bool
) -> None:
    """:func:`check_rows` for the rows of the images ``batch`` (``m`` each)."""
    for j, i in enumerate(batch.tolist()):
        check_rows(xp, sq[j * m : (j + 1) * m], int(features.offsets[i]), features, "gallery", index_base, normalize)


def check_counts(features: SpatialFeatures, role: str, index_base: int) -> None:
    counts = features.counts
    if np.any(counts == 0):
        i = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"{role} image {index_base + i} has no locations")
