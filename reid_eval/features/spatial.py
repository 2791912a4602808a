"""Ragged container for the spatial pyramid features of many images.

Every image owns a variable number of locations (pyramid cells). All locations
of all images are stored in one ``[L, d]`` float32 array; image ``i`` owns the
rows ``offsets[i]:offsets[i + 1]``. An optional ``[L]`` float32 array holds the
foreground probability of every location.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SpatialFeatures"]


def _image_of_row(offsets: np.ndarray, row: int) -> int:
    """Index of the image owning ``row`` (offsets [n+1], monotone)."""
    return int(np.searchsorted(offsets, row, side="right") - 1)


class SpatialFeatures:
    """Variable-length spatial features of ``n`` images.

    Parameters
    ----------
    local:
        ``[L, d]`` float32, every location of every image, image by image.
    offsets:
        ``[n + 1]`` int64, ``offsets[0] == 0``, non-decreasing,
        ``offsets[-1] == L``; image ``i`` owns rows ``offsets[i]:offsets[i+1]``
        (an image may own no row; matching rejects such an image).
    foreground:
        ``[L]`` float32 foreground probability of each location, or ``None``.

    The arrays are converted (float32 / int64) without copying when they
    already have those dtypes; values must be finite. A ``ValueError`` names
    the first offending image.
    """

    __slots__ = ("local", "offsets", "foreground")

    local: np.ndarray
    offsets: np.ndarray
    foreground: np.ndarray | None

    def __init__(self, local: np.ndarray, offsets: np.ndarray, foreground: np.ndarray | None = None) -> None:
        local = np.asarray(local)
        if local.ndim != 2:
            raise ValueError(f"local must be a 2-D [L, d] array, got shape {local.shape}")
        if not np.issubdtype(local.dtype, np.floating):
            raise ValueError(f"local must be floating point, got {local.dtype}")
        local = np.ascontiguousarray(local, dtype=np.float32)
        offsets_in = np.asarray(offsets)
        if offsets_in.ndim != 1 or offsets_in.size < 1:
            raise ValueError(f"offsets must be a 1-D [n+1] array, got shape {offsets_in.shape}")
        if not np.issubdtype(offsets_in.dtype, np.integer):
            raise ValueError(f"offsets must be integers, got {offsets_in.dtype}")
        offsets = np.ascontiguousarray(offsets_in, dtype=np.int64)
        if offsets[0] != 0:
            raise ValueError(f"offsets[0] must be 0, got {offsets[0]}")
        steps = np.diff(offsets)
        if np.any(steps < 0):
            bad = int(np.flatnonzero(steps < 0)[0])
            raise ValueError(f"offsets must be non-decreasing: image {bad} has offsets {offsets[bad]} > {offsets[bad + 1]}")
        if offsets[-1] != local.shape[0]:
            raise ValueError(f"offsets[-1] = {offsets[-1]} does not match the {local.shape[0]} rows of local")
        if foreground is not None:
            foreground = np.ascontiguousarray(np.asarray(foreground), dtype=np.float32)
            if foreground.shape != (local.shape[0],):
                raise ValueError(f"foreground must have shape ({local.shape[0]},), got {foreground.shape}")
            bad_rows = np.flatnonzero(~np.isfinite(foreground))
            if bad_rows.size:
                raise ValueError(f"foreground of image {_image_of_row(offsets, int(bad_rows[0]))} is not finite")
        # Row-wise check keeps the temporary at [L] booleans, not [L, d].
        finite_rows = np.isfinite(local).all(axis=1) if local.size else np.ones(local.shape[0], bool)
        if not finite_rows.all():
            row = int(np.flatnonzero(~finite_rows)[0])
            raise ValueError(f"local features of image {_image_of_row(offsets, row)} contain NaN or infinity (row {row})")
        self.local = local
        self.offsets = offsets
        self.foreground = foreground

    def __len__(self) -> int:
        """Number of images ``n``."""
        return int(self.offsets.shape[0] - 1)

    @property
    def dim(self) -> int:
        """Feature dimension ``d``."""
        return int(self.local.shape[1])

    @property
    def counts(self) -> np.ndarray:
        """``[n]`` int64: number of locations of each image."""
        return np.diff(self.offsets)

    def num_locations(self, i: int) -> int:
        """Number of locations of image ``i``."""
        i = self._check_index(i)
        return int(self.offsets[i + 1] - self.offsets[i])

    def image(self, i: int) -> np.ndarray:
        """``[N_i, d]`` float32 view of the locations of image ``i``."""
        i = self._check_index(i)
        return self.local[self.offsets[i] : self.offsets[i + 1]]

    def image_foreground(self, i: int) -> np.ndarray | None:
        """``[N_i]`` float32 foreground probabilities of image ``i`` (None without foreground)."""
        i = self._check_index(i)
        if self.foreground is None:
            return None
        return self.foreground[self.offsets[i] : self.offsets[i + 1]]

    def subset(self, indices: Sequence[int] | np.ndarray | slice) -> SpatialFeatures:
        """A new SpatialFeatures holding the images ``indices`` in that order.

        ``indices`` is a slice, an integer array (negative indices allowed,
        repeats allowed) or a boolean mask of length ``n``.
        """
        n = len(self)
        if isinstance(indices, slice):
            idx = np.arange(n)[indices]
        else:
            idx = np.asarray(indices)
            if idx.dtype == bool:
                if idx.shape != (n,):
                    raise ValueError(f"boolean mask must have shape ({n},), got {idx.shape}")
                idx = np.flatnonzero(idx)
            elif idx.size == 0:
                idx = idx.astype(np.int64)
            elif not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"image indices must be integers, got {idx.dtype}")
            idx = idx.reshape(-1).astype(np.int64)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"image index out of range for {n} images")
            idx = np.where(idx < 0, idx + n, idx)
        counts = self.counts[idx]
        new_offsets = np.zeros(idx.size + 1, dtype=np.int64)
        np.cumsum(counts, out=new_offsets[1:])
        if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
            rows = slice(int(self.offsets[idx[0]]), int(self.offsets[idx[-1] + 1]))
            local = self.local[rows]
            fg = None if self.foreground is None else self.foreground[rows]
        else:
            starts = self.offsets[idx]
            rows_idx = np.repeat(starts - new_offsets[:-1], counts) + np.arange(int(new_offsets[-1]))
            local = self.local[rows_idx]
            fg = None if self.foreground is None else self.foreground[rows_idx]
        out = SpatialFeatures.__new__(SpatialFeatures)
        # Already validated rows: skip the finiteness pass.
        out.local, out.offsets, out.foreground = local, new_offsets, fg
        return out

    def __getitem__(self, indices: Sequence[int] | np.ndarray | slice) -> SpatialFeatures:
        """Same as :meth:`subset`; an integer is rejected (use :meth:`image`)."""
        if isinstance(indices, (int, np.integer)):
            raise TypeError("SpatialFeatures[i] with an integer is ambiguous: use .image(i) or .subset([i])")
        return self.subset(indices)

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {n} images")
        return int(i) % n

    def __repr__(self) -> str:
        fg = "with" if self.foreground is not None else "without"
        return f"SpatialFeatures({len(self)} images, {self.local.shape[0]} locations, d={self.dim}, {fg} foreground)"
