"""Writing a feature cache safely: one writer at a time, and a full disk costs nothing committed.

Writer lock
    An extraction holds ``<key>.h5.lock`` beside the cache file, locked with
    ``flock`` and holding its PID, for as long as it may write. A second
    extraction, or a `match`/`report` reading the cache, asks
    :func:`check_not_being_written` first and gets :class:`CacheBusyError`
    ("another extraction (pid N) is writing ...") instead of advice to delete
    the file. The kernel drops the lock when the process dies (even by
    SIGKILL), so a left-over lock file never blocks anyone.

Disk space
    Before each batch the writer reserves on the file system the bytes the
    batch can need (every chunk it starts, whole, plus a margin for HDF5's
    metadata) with ``posix_fallocate`` past the file's end of allocation.
    When the file system cannot give them, nothing of the batch is written and
    :class:`CacheWriteError` names the file, the need and the free space; the
    committed batches stay as they are and a rerun resumes after them.

Sealing
    If a write fails anyway (another process filled the disk, an I/O error),
    HDF5 holds metadata it could not write, and closing the file would write
    some of it, fail again and crash the interpreter at exit. :func:`seal`
    points the file's descriptor at an anonymous memory file so that nothing
    more reaches the cache on disk, then closes it: the file stays as it was
    after its last commit (rows past the committed counts are cut off on
    resume).
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from reid_eval.errors import ReidEvalError

#: Bytes reserved beyond the raw data of a batch, for HDF5 metadata (object headers, chunk index nodes, string heaps).
METADATA_MARGIN = 256 * 1024

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
# Lock files this process holds (their resolved paths): its own reads of the cache are not "another extraction".
_HELD: set[str] = set()


class CacheBusyError(ReidEvalError):
    """Another process is writing (or holds open) the cache file."""


class CacheWriteError(ReidEvalError):
    """A cache file could not be written (disk full, I/O error); what was committed before is kept."""


def lock_path(cache_file: str | os.PathLike) -> Path:
    """``<key>.h5.lock`` beside the cache file."""
    cache_file = Path(cache_file)
    return cache_file.with_name(cache_file.name + ".lock")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def writer_pid(cache_file: str | os.PathLike) -> int | None:
    """PID of another process holding the cache's writer lock (0 when it is held but its PID unknown), else None."""
    lock = lock_path(cache_file)
    if str(lock.resolve()) in _HELD:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody is writing
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def busy_message(cache_file: str | os.PathLike, pid: int | None) -> str:
    """The one line saying another extraction is writing ``cache_file``."""
    who = f"another extraction (pid {pid})" if pid else "another extraction"
    return f"{who} is writing feature cache {cache_file}; wait for it to finish (or stop it), then rerun"


def check_not_being_written(cache_file: str | os.PathLike) -> None:
    """Raise :class:`CacheBusyError` when another process holds the cache's writer lock."""
    pid = writer_pid(cache_file)
    if pid is not None:
        raise CacheBusyError(busy_message(cache_file, pid))


def is_lock_error(exc: BaseException) -> bool:
    """Whether an h5py open error is HDF5's own file lock (another process has the file open)."""
    text = str(exc)
    return "unable to lock file" in text or isinstance(exc, BlockingIOError)


@contextmanager
def writer_lock(cache_file: str | os.PathLike, retries: int = 5) -> Iterator[Path]:
    """Hold the cache's writer lock for the block; :class:`CacheBusyError` naming the file and the holder's PID.

    The lock file is removed on release; a holder checks after locking that the
    path still names the file it locked, so removal never lets two writers in.
    A short retry covers a reader's momentary shared lock.
    """
    lock = lock_path(cache_file)
    for attempt in range(retries + 1):
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only or full file system, a permission: the cache folder is at fault
            raise CacheWriteError(f"cannot write in cache folder {lock.parent}: {exc.strerror or exc} (--cache-dir)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            if attempt < retries and not pid:
                time.sleep(0.05)
                continue
            raise CacheBusyError(busy_message(cache_file, pid)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file after we opened it: lock the new one
    else:  # pragma: no cover - only under a storm of writers
        raise CacheBusyError(busy_message(cache_file, None))
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    key = str(lock.resolve())
    _HELD.add(key)
    try:
        yield lock
    finally:
        _HELD.discard(key)
        try:
            os.unlink(lock)
        except OSError:
            pass
        os.close(fd)


# ------------------------------------------------------------------ disk space


def new_bytes(ds: h5py.Dataset, new_rows: int, string_bytes: int = 0) -> int:
    """Upper bound of the file bytes that appending ``new_rows`` rows to ``ds`` allocates.

    Every chunk the rows start is counted whole (uncompressed); variable-length
    strings add their ``string_bytes`` plus a heap record each.
    """
    if new_rows <= 0:
        return 0
    n = int(ds.shape[0])
    chunks = ds.chunks or ds.shape
    row_items = int(np.prod(chunks[1:], dtype=np.int64)) if len(chunks) > 1 else 1
    item = 16 if h5py.check_string_dtype(ds.dtype) is not None else ds.dtype.itemsize
    rows_per_chunk = max(1, int(chunks[0]))
    started = math.ceil((n + new_rows) / rows_per_chunk) - math.ceil(n / rows_per_chunk)
    extra = string_bytes + 32 * new_rows if item == 16 and h5py.check_string_dtype(ds.dtype) else 0
    return started * rows_per_chunk * row_items * item + extra


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def _free_bytes(path: str) -> int:
    st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    return int(st.f_bavail * st.f_frsize)


#: The command that writes features, named by default in the messages below.
EXTRACT = "reid-eval extract"


def _kept(command: str) -> str:
    return "the images committed before are kept" if command == EXTRACT else "everything the cache held before is kept"


def reserve_space(f: h5py.File, nbytes: int, what: str, command: str = EXTRACT) -> None:
    """Reserve ``nbytes`` on the file system past the end of ``f``'s allocation, or raise :class:`CacheWriteError`.

    ``what`` completes the message ("the next batch of the gallery split"),
    ``command`` is the one to rerun once space is freed.
    Where the file system cannot preallocate, its free space is compared instead.
    """
    path = f.filename
    nbytes = int(nbytes) + METADATA_MARGIN
    start = int(f.id.get_filesize())
    fd = os.open(path, os.O_WRONLY)
    try:
        size_before = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, start, nbytes)
            return
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                if os.fstat(fd).st_size > max(size_before, start):
                    os.ftruncate(fd, max(size_before, start))  # give back what a partial allocation took
                free = _free_bytes(path)
            elif exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                free = _free_bytes(path)
                if free >= nbytes:
                    return
            else:
                raise CacheWriteError(f"cannot write feature cache {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    raise CacheWriteError(
        f"disk full: feature cache {path} needs about {_mib(nbytes)} for {what} and its file system has "
        f"{_mib(free)} free; nothing of it was written and {_kept(command)} — "
        f"free space and rerun `{command}` to resume"
    )


# ------------------------------------------------------------------ failed writes


def failure_cause(exc: BaseException) -> str:
    """The short cause of an h5py/OS write error ("No space left on device"), not HDF5's whole error stack."""
    if isinstance(exc, OSError) and exc.strerror and exc.errno not in (None, 0) and "error message" not in str(exc):
        return exc.strerror
    text = " ".join(str(exc).split())
    found = re.search(r"error message = '([^']*)'", text)
    if found:
        return found.group(1)
    return text[:200] or type(exc).__name__


def seal(f: h5py.File) -> None:
    """Close ``f`` so that nothing more reaches its file on disk (see the module docstring)."""
    try:
        fd = f.id.get_vfd_handle()
        sink = os.memfd_create("reid-eval-sealed-cache")
        os.dup2(sink, fd)
        os.close(sink)
    except Exception:  # noqa: BLE001 - sealing is best effort; closing below still runs
        pass
    try:
        f.close()
    except Exception:  # noqa: BLE001 - the writes it attempts go to the memory file
        pass


def close_cache(f: h5py.File, command: str = EXTRACT) -> None:
    """Flush and close a cache open for writing; on failure seal it and raise :class:`CacheWriteError`."""
    path = f.filename
    try:
        f.flush()
    except (OSError, RuntimeError) as exc:
        seal(f)
        raise CacheWriteError(write_failure_message(path, exc, command)) from None
    f.close()


def write_failure_message(path: str | os.PathLike, exc: BaseException, command: str = EXTRACT) -> str:
    """One line naming the cache file, the cause and the command to rerun; what was committed before is kept."""
    cause = failure_cause(exc)
    full = "space" in cause.lower() or "quota" in cause.lower()
    hint = f"free space and rerun `{command}`" if full else f"rerun `{command}`"
    return f"cannot write feature cache {path}: {cause}; {_kept(command)} — {hint}"


@contextmanager
def sealed_on_failure(f: h5py.File, command: str = EXTRACT) -> Iterator[h5py.File]:
    """Run writes to ``f``; when one fails, seal the file and raise :class:`CacheWriteError` naming it, the cause
    and ``command`` (to rerun)."""
    try:
        yield f
    except CacheWriteError:
        raise
    except (OSError, RuntimeError) as exc:
        path = f.filename
        seal(f)
        raise CacheWriteError(write_failure_message(path, exc, command)) from None


__all__ = [
    "METADATA_MARGIN",
    "CacheBusyError",
    "CacheWriteError",
    "busy_message",
    "check_not_being_written",
    "close_cache",
    "failure_cause",
    "is_lock_error",
    "lock_path",
    "new_bytes",
    "reserve_space",
    "seal",
    "sealed_on_failure",
    "write_failure_message",
    "writer_pid",
    "writer_lock",
]
