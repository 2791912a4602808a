"""Writing an output file so that a failure loses nothing: one rule for every file reid-eval writes.

:func:`write_atomically` has ``write(tmp)`` fill a temporary file in the
destination's folder (``.<name>.<pid>.tmp``: hidden, and never mistaken for
a result by the readers' globs), and renames it over the destination only
once it is complete. Whatever goes wrong (a full disk, a read-only folder, an
interrupt, an exception in ``write``), the temporary file is removed and the
destination is left exactly as it was. A write error becomes one
:class:`ReidEvalError` line that names the file, the cause and what to do.

The feature cache has its own rules (reid_eval.features.cache_io): an HDF5
file is appended to in place, not rewritten.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

from reid_eval.errors import ReidEvalError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def temporary_path(path: str | os.PathLike) -> Path:
    """``<folder>/.<name>.<pid>.tmp``: where :func:`write_atomically` writes ``path`` before the rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _cause(exc: BaseException, folder: Path) -> str:
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    # Libraries that wrap the OS error (torch's zip writer: "[enforce fail at inline_container.cc:...] ...
    # file write failed") lose its errno: a full disk is told by the folder's free space.
    try:
        st = os.statvfs(folder)
        if st.f_bavail * st.f_frsize < 1 << 20:
            return os.strerror(errno.ENOSPC)
    except OSError:
        pass
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", " ".join(str(exc).split()))
    return text[:200] or type(exc).__name__


def write_atomically(
    path: str | os.PathLike,
    write: Callable[[Path], object],
    what: str = "file",
    rerun: str = "the command",
    failures: tuple[type[BaseException], ...] = (OSError,),
) -> Path:
    """Write ``path`` through ``write(tmp)`` (module docstring); returns ``path``.

    ``what`` names the file in the message ("results file", "checkpoint"),
    ``rerun`` the command that writes it again; ``failures`` are the exception
    types that mean "could not write" (``write``'s own library may add
    RuntimeError). Raises ReidEvalError for those, re-raises anything else;
    in both cases no temporary file is left and ``path`` is unchanged.
    """
    path = Path(path)
    tmp = temporary_path(path)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except failures as exc:
        _remove(tmp)
        kept = f"the {what} there before is kept" if existed else "nothing was left behind"
        cause = _cause(exc, path.parent if path.parent.is_dir() else Path("."))
        todo = "free space and rerun" if cause == os.strerror(errno.ENOSPC) else "fix that and rerun"
        raise ReidEvalError(f"cannot write {what} {path}: {cause}; {kept} — {todo} {rerun}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def write_text_atomically(path: str | os.PathLike, text: str, what: str = "file", rerun: str = "the command") -> Path:
    """:func:`write_atomically` of UTF-8 ``text``."""
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what, rerun)


def _remove(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


__all__ = ["temporary_path", "write_atomically", "write_text_atomically"]
