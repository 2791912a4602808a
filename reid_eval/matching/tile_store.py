"""Finished tiles of a distance matrix, committed one by one so that an interrupted match resumes.

Where. Beside the cache file: ``<cache>.h5.tiles/<name>/`` holds
``manifest.json`` (what is being computed and the tile plan) and one
``g<gallery block>-p<probe block>.npy`` per finished tile. When every tile is
done, the caller writes the matrix into the cache as ``distances/<name>``
and removes the folder.

Why not inside the HDF5 file. HDF5 has no journal: a process killed (kill -9,
power loss) while HDF5 updates its metadata can leave the whole file
unreadable, and with it hours of extracted features; and a process holding
the file open for writing locks out every reader, including Dask workers
reading their blocks. So the cache is opened for writing once, at the end,
for the finished matrix, as before; the tiles go to plain files.

Commit protocol. A tile is written to a temporary name in the folder,
flushed and ``fsync``-ed, then renamed to its final name (``os.replace`` is
atomic on POSIX): a tile file exists completely or not at all, whatever
moment the process dies at. The record of done tiles *is* the set of tile
files; a tile file that cannot be read back (e.g. after a power loss that
lost the unsynced folder entry's data) counts as not done and is recomputed.

Records. Each tile has a record, ``g<gi>-p<pi>.json``, committed the same way
*before* the tile file: its SHA-256, dtype and shape, and the
:class:`~reid_eval.matching.kernel.RefinementStats` of its computation
(entries, and how many were recomputed in float64), so the totals of a
resumed matrix include the tiles an earlier run computed. A finished tile is
used only when it passes its record (:meth:`TileStore.load`): the expected
shape and dtype, the recorded checksum, and finite values. One that fails
(flipped bytes, a file replaced by zeros or by float64 of the same shape, a
NaN, a tile without a record as an older version committed them) is dropped
with its record, its reason kept in :attr:`TileStore.rejected`, and the
driver computes it again and says so: a tile that has not been checked never
reaches a matrix.

Workers on other machines commit the same way into the same folder (it sits
beside the cache, which they read through the same shared path).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.kill_hooks import kill_hook
from reid_eval.matching.kernel.accuracy import RefinementStats

# Test hook (reid_eval.kill_hooks): REID_EVAL_TEST_KILL_AFTER_TILES=k SIGKILLs the
# process right after its k-th tile commit (tests/test_match_streaming*.py).
_KILL_ENV = "REID_EVAL_TEST_KILL_AFTER_TILES"

__all__ = ["TileStore", "StoredTile", "tile_dir"]

_TILE = re.compile(r"^g(\d+)-p(\d+)\.npy$")


def tile_dir(cache_file: str | os.PathLike, name: str) -> Path:
    """``<cache file>.tiles/<name>``: where the finished tiles of ``distances/<name>`` wait."""
    return Path(str(cache_file) + ".tiles") / name


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class StoredTile:
    """A committed tile that passed its record: the values and the refinement counts of their computation."""

    values: np.ndarray
    counts: RefinementStats


def _digest(tile: np.ndarray) -> str:
    """SHA-256 of a tile's bytes in C order (what the record holds)."""
    return hashlib.sha256(np.ascontiguousarray(tile).data).hexdigest()


class TileStore:
    """The tile folder of one distance matrix (see the module docstring).

    rejected: ``"<tile file>: <reason>"`` of every committed tile that
    :meth:`load` found failing its record (and dropped) through this object.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.rejected: list[str] = []
        self._kill = kill_hook(_KILL_ENV)

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def manifest(self) -> dict[str, Any] | None:
        """The recorded manifest, or None when there is none (or it cannot be read)."""
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return None

    def start(self, manifest: Mapping[str, Any]) -> None:
        """Begin afresh: remove every tile (and its record) and record ``manifest``."""
        self.remove()
        self.directory.mkdir(parents=True, exist_ok=True)
        blob = (json.dumps(dict(manifest), sort_keys=True, indent=1) + "\n").encode()
        _write_atomic(self.manifest_path, lambda fh: fh.write(blob))

    def _path(self, gi: int, pi: int) -> Path:
        return self.directory / f"g{gi}-p{pi}.npy"

    def _record_path(self, gi: int, pi: int) -> Path:
        # not matched by _TILE, so done() never mistakes a record for a tile
        return self.directory / f"g{gi}-p{pi}.json"

    def done(self) -> set[tuple[int, int]]:
        """``{(gallery block, probe block)}`` of the committed tiles (not yet checked: see :meth:`load`)."""
        if not self.directory.is_dir():
            return set()
        out = set()
        for entry in os.listdir(self.directory):
            m = _TILE.match(entry)
            if m:
                out.add((int(m.group(1)), int(m.group(2))))
        return out

    def commit(self, gi: int, pi: int, tile: np.ndarray, counts: RefinementStats) -> None:
        """Write one finished tile and its record (checksum, dtype, shape, refinement ``counts``), each atomic.

        The record goes first: the tile file is what marks the tile done, so a
        process killed between the two writes leaves a tile that is not done
        (recomputed, its record overwritten), never a done tile without one.
        """
        tile = np.ascontiguousarray(tile)
        record = {"sha256": _digest(tile), "dtype": tile.dtype.str, "shape": list(tile.shape),
                  "entries": int(counts.entries), "refined": int(counts.refined), "tiles": int(counts.tiles)}
        blob = (json.dumps(record, sort_keys=True) + "\n").encode()
        _write_atomic(self._record_path(gi, pi), lambda fh: fh.write(blob))
        _write_atomic(self._path(gi, pi), lambda fh: np.save(fh, tile, allow_pickle=False))
        if self._kill is not None:
            self._kill()

    def _record(self, gi: int, pi: int) -> dict[str, Any] | None:
        try:
            raw = json.loads(self._record_path(gi, pi).read_text())
            entries, refined, tiles = (raw[k] for k in ("entries", "refined", "tiles"))
            ok = (isinstance(raw.get("sha256"), str) and isinstance(raw.get("dtype"), str)
                  and isinstance(raw.get("shape"), list)
                  and all(type(v) is int for v in (entries, refined, tiles)) and 0 <= refined <= entries and tiles >= 0)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        return raw if ok else None

    def _checked(self, gi: int, pi: int, shape: tuple[int, ...], dtype: np.dtype) -> StoredTile | str:
        """The tile ``(gi, pi)`` with its counts when it passes its record, else why it does not."""
        record = self._record(gi, pi)
        if record is None:
            return "no valid record (checksum, dtype, counts)"
        try:
            tile = np.load(self._path(gi, pi), allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            return f"does not read back ({' '.join(str(exc).split()) or type(exc).__name__})"
        if tile.shape != tuple(shape) or list(tile.shape) != record["shape"]:
            return f"shape {tile.shape}, expected {tuple(shape)}"
        if tile.dtype != dtype or tile.dtype.str != record["dtype"]:
            return f"dtype {tile.dtype}, expected {dtype}"
        if _digest(tile) != record["sha256"]:
            return "checksum mismatch"
        if not np.isfinite(tile).all():
            return "non-finite values"
        return StoredTile(tile, RefinementStats(entries=record["entries"], refined=record["refined"],
                                                tiles=record["tiles"]))

    def load(self, gi: int, pi: int, shape: tuple[int, ...], dtype: Any) -> StoredTile | None:
        """The committed tile ``(gi, pi)`` with its counts if it passes its record; otherwise None.

        ``shape`` and ``dtype``: what the caller expects (``[p, g]`` and the
        matrix's dtype; the shortlist's units are flat float64). A tile that
        fails is dropped with its record and its reason appended to
        :attr:`rejected`; the caller computes it again.
        """
        checked = self._checked(gi, pi, tuple(shape), np.dtype(dtype))
        if isinstance(checked, StoredTile):
            return checked
        path = self._path(gi, pi)
        if path.exists():
            self.rejected.append(f"{path}: {checked}")
        path.unlink(missing_ok=True)
        self._record_path(gi, pi).unlink(missing_ok=True)
        return None

    def remove(self) -> None:
        """Delete the folder, tiles and records alike (and the ``.tiles`` parent when it is left empty)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        try:
            self.directory.parent.rmdir()
        except OSError:
            pass
