"""Array-module selection (NumPy on a CPU, CuPy on a GPU), large buffers and ragged segment sums.

The one place the engine asks which array module it runs on: every other
kernel file takes ``xp`` from here (:func:`get_array_module`, :func:`module_of`).
"""

from __future__ import annotations

import mmap
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["BACKENDS", "get_array_module", "module_of", "is_host", "to_numpy", "segment_sum", "large_empty",
           "return_freed_blocks_to_the_os"]

BACKENDS = ("auto", "numpy", "cupy")


def get_array_module(backend: str = "auto") -> ModuleType:
    """The array module for ``backend``: ``"numpy"``, ``"cupy"`` or ``"auto"``.

    ``"auto"`` gives CuPy when it imports and sees a CUDA device, else NumPy.
    ``"cupy"`` without CuPy or without a GPU raises ValueError.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "numpy":
        return np
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
        problem = "no CUDA device found"
    except Exception as exc:  # ImportError, or a CUDA runtime error without a driver
        problem = f"{type(exc).__name__}: {exc}"
    if backend == "cupy":
        raise ValueError(f"backend 'cupy' needs CuPy and a CUDA GPU ({problem}); use --backend numpy")
    return np


#: Host buffers from this size on are mapped with transparent huge pages advised (:func:`large_empty`).
HUGE_PAGE_MIN_BYTES = 4 << 20


def large_empty(xp: ModuleType, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` on ``xp``, for a large working buffer.

    On the host, from :data:`HUGE_PAGE_MIN_BYTES` on, the memory is an
    anonymous mapping with transparent huge pages advised (Linux
    ``MADV_HUGEPAGE``; many systems only give them on request): its first
    touch then takes one page fault per 2 MiB instead of per 4 KiB, and the
    GEMMs over it fewer TLB misses (``benchmarks/bench_matching.py`` times
    the difference). Elsewhere, or when the mapping fails, a plain ``xp.empty``.
    """
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if not is_host(xp) or nbytes < HUGE_PAGE_MIN_BYTES or advise is None:
        return xp.empty(shape, dtype=dt)
    try:
        mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mapping.madvise(advise)
    except (OSError, ValueError, AttributeError):
        return np.empty(shape, dtype=dt)
    # The array keeps the mapping alive; it is unmapped when the last view goes.
    return np.frombuffer(mapping, dtype=dt).reshape(shape)


def module_of(a: Any) -> ModuleType:
    """The array module (NumPy or CuPy) of array ``a``."""
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy


def is_host(xp: ModuleType) -> bool:
    """Whether ``xp`` is NumPy: the CPU paths (threads, fused passes) against the GPU ones."""
    return xp is np


def to_numpy(a: Any) -> np.ndarray:
    """Host NumPy copy (or the array itself) of a NumPy or CuPy array."""
    if isinstance(a, np.ndarray):
        return a
    return a.get()


def segment_sum(xp: ModuleType, a: Any, offsets: np.ndarray, axis: int) -> Any:
    """Sum ``a`` over consecutive non-empty segments along ``axis``, in float64.

    ``a``: 2-D array (any float dtype); ``offsets``: host int64 ``[k+1]``,
    ``offsets[0] == 0``, ``offsets[-1] == a.shape[axis]``, strictly increasing.
    Returns a float64 array with ``k`` in place of ``a.shape[axis]``.
    """
    lengths = np.diff(offsets)
    k = lengths.shape[0]
    if np.all(lengths == lengths[0]):
        # Uniform segments (the common case: fixed input size, 110 locations).
        n = int(lengths[0])
        if axis == 0:
            return a.reshape(k, n, a.shape[1]).sum(axis=1, dtype=xp.float64)
        return a.reshape(a.shape[0], k, n).sum(axis=2, dtype=xp.float64)
    if is_host(xp):
        return np.add.reduceat(a, offsets[:-1], axis=axis, dtype=np.float64)
    # CuPy has no ufunc.reduceat: differences of a float64 running sum. The
    # running sum of non-negative terms grows at most to the total, so the
    # float64 differences lose < 1e-12 relative to it.
    c = xp.cumsum(a, axis=axis, dtype=xp.float64)
    idx = xp.asarray(offsets[1:] - 1)
    ends = c[idx] if axis == 0 else c[:, idx]
    if axis == 0:
        return xp.concatenate([ends[:1], ends[1:] - ends[:-1]], axis=0)
    return xp.concatenate([ends[:, :1], ends[:, 1:] - ends[:, :-1]], axis=1)


_malloc_tuned = False


def return_freed_blocks_to_the_os() -> None:
    """Make glibc give every large freed buffer back to the OS at once (no-op elsewhere).

    glibc raises its mmap threshold each time a large buffer is freed (up to
    32 MB), after which block-sized arrays come from per-thread arenas that
    keep freed memory, and peak memory grows with the number of tiles. A fixed
    4 MiB threshold keeps every tile buffer in its own mapping, so peak memory
    stays flat whatever the tile count (``benchmarks/bench_scale.py``).
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
