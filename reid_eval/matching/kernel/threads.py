"""The engine's CPU threads: one pool per process, row ranges split over it, OpenBLAS's thread count.

NumPy releases the GIL in BLAS, LAPACK, ufunc and einsum loops, so the
memory-bound passes of a tile and the many small products of block
preparation run on Python threads, one per core. Work is always cut at fixed
boundaries (:data:`CHUNK_ROWS`), never by thread count, so results do not
depend on how many threads ran them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["CHUNK_ROWS", "cpu_pool", "parallel", "over_row_ranges", "over_chunks", "blas_threads",
           "single_blas_thread"]

#: Rows of one chunk of a pass over probe rows: the partial results kept per chunk do not depend on
#: the thread count.
CHUNK_ROWS = 256

_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def cpu_pool() -> ThreadPoolExecutor:
    """The engine's CPU threads, one per core, started once per process (again after a fork).

    Started once because starting threads for every pass costs a noticeable
    share of a tile. The tasks run on them never wait for other tasks of this
    pool, so callers from several threads can share it without deadlock.
    """
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="reid-eval-fpr")
            _pool_pid = os.getpid()
        return _pool


def parallel(fn: Any, calls: Sequence[tuple[Any, ...]]) -> None:
    """``fn(*args)`` for every ``args`` of ``calls`` on :func:`cpu_pool` (inline for one call).

    Waits for all of them before re-raising the first error, so that no
    task still writes into the caller's arrays afterwards.
    """
    if len(calls) <= 1:
        for args in calls:
            fn(*args)
        return
    futures = [cpu_pool().submit(fn, *args) for args in calls]
    wait(futures)
    for future in futures:
        future.result()


def over_row_ranges(n_rows: int, fn: Any) -> None:
    """Call ``fn(a, b)`` on consecutive row ranges covering ``n_rows``, one per CPU thread.

    For NumPy passes over large operands: NumPy releases the GIL in ufunc and
    einsum loops, so a pass over probe rows uses every core. The boundaries
    fall on multiples of :data:`CHUNK_ROWS`, so a pass that keeps one
    partial result per chunk gets the same chunks whatever the thread count.
    """
    n_chunks = -(-n_rows // CHUNK_ROWS)
    workers = max(1, min(os.cpu_count() or 1, n_rows // 1024, n_chunks))
    cuts = (np.linspace(0, n_chunks, workers + 1).round().astype(int) * CHUNK_ROWS).clip(max=n_rows)
    parallel(fn, [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a])


def over_chunks(n: int, fn: Any) -> None:
    """``fn(i)`` for i < n, spread over the CPU threads (each call one BLAS thread)."""
    workers = min(n, os.cpu_count() or 1)
    with blas_threads(1):
        if workers <= 1:
            for i in range(n):
                fn(i)
            return
        parallel(fn, [(i,) for i in range(n)])


class _BlasThreads:
    """Set the thread count of NumPy's OpenBLAS (found through ctypes), or do nothing.

    Many small GEMMs and factorisations (110×110 Gram matrices) run far
    slower with several OpenBLAS threads on a loaded machine than with one;
    the large tile GEMMs still use all threads.
    """

    _lib: Any = None
    _searched = False
    _setters = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")
    _getters = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")

    @classmethod
    def _find(cls) -> Any:
        if cls._searched:
            return cls._lib
        cls._searched = True
        try:
            import ctypes

            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
            for path in paths:
                lib = ctypes.CDLL(path)
                setter = next((getattr(lib, n) for n in cls._setters if hasattr(lib, n)), None)
                getter = next((getattr(lib, n) for n in cls._getters if hasattr(lib, n)), None)
                if setter is not None and getter is not None:
                    cls._lib = (setter, getter)
                    break
        except (OSError, AttributeError):
            cls._lib = None
        return cls._lib

    def __init__(self, n: int) -> None:
        self.n = n
        self.previous: int | None = None

    def __enter__(self) -> None:
        lib = self._find()
        if lib is not None:
            self.previous = int(lib[1]())
            lib[0](self.n)

    def __exit__(self, *exc: object) -> None:
        lib = self._find()
        if lib is not None and self.previous is not None:
            lib[0](self.previous)


def blas_threads(n: int) -> _BlasThreads:
    """Context manager running NumPy's OpenBLAS with ``n`` threads (no-op if not found)."""
    return _BlasThreads(n)


_blas_lock = threading.Lock()
_blas_users = 0
_blas_context: Any = None


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run NumPy's BLAS on one thread while any caller in this process is inside.

    A tile's bits depend on the BLAS thread count (OpenBLAS's float32 GEMM
    rounds differently with another one), so the runners that compute tiles
    side by side run each GEMM on one thread. Reference-counted: OpenBLAS's
    thread count is global to the process, so several tile threads entering
    and leaving must not restore the old count while another is still
    computing.
    """
    global _blas_users, _blas_context
    with _blas_lock:
        if _blas_users == 0:
            _blas_context = blas_threads(1)
            _blas_context.__enter__()
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_context.__exit__(None, None, None)
                _blas_context = None
