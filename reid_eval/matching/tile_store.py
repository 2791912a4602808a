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

Refinement counts. Each tile carries the :class:`~reid_eval.matching.kernel.RefinementStats`
of its computation (entries, and how many were recomputed in float64) in a
sidecar ``g<gi>-p<pi>.counts.json``, committed the same way *before* the tile
file: a committed tile therefore always has its counts, and the totals of a
resumed matrix include the tiles an earlier run computed. The ``.npy`` alone
stays the record of done-ness. A tile committed by an older version has no
sidecar; :meth:`TileStore.counts` then returns None and the caller reports
its totals as incomplete.

Workers on other machines commit the same way into the same folder (it sits
beside the cache, which they read through the same shared path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.kill_hooks import kill_hook
from reid_eval.matching.kernel.accuracy import RefinementStats

# Test hook (reid_eval.kill_hooks): REID_EVAL_TEST_KILL_AFTER_TILES=k SIGKILLs the
# process right after its k-th tile commit (tests/test_match_streaming*.py).
_KILL_ENV = "REID_EVAL_TEST_KILL_AFTER_TILES"

__all__ = ["TileStore", "tile_dir"]

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


class TileStore:
    """The tile folder of one distance matrix (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
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
        """Begin afresh: remove every tile (and its counts) and record ``manifest``."""
        self.remove()
        self.directory.mkdir(parents=True, exist_ok=True)
        blob = (json.dumps(dict(manifest), sort_keys=True, indent=1) + "\n").encode()
        _write_atomic(self.manifest_path, lambda fh: fh.write(blob))

    def _path(self, gi: int, pi: int) -> Path:
        return self.directory / f"g{gi}-p{pi}.npy"

    def _counts_path(self, gi: int, pi: int) -> Path:
        # not matched by _TILE, so done() never mistakes a sidecar for a tile
        return self.directory / f"g{gi}-p{pi}.counts.json"

    def done(self) -> set[tuple[int, int]]:
        """``{(gallery block, probe block)}`` of the committed tiles."""
        if not self.directory.is_dir():
            return set()
        out = set()
        for entry in os.listdir(self.directory):
            m = _TILE.match(entry)
            if m:
                out.add((int(m.group(1)), int(m.group(2))))
        return out

    def commit(self, gi: int, pi: int, tile: np.ndarray, counts: RefinementStats) -> None:
        """Write one finished ``[p, g]`` tile and its refinement ``counts`` (each atomic).

        The counts go first: the tile file is what marks the tile done, so a
        process killed between the two writes leaves a tile that is not done
        (recomputed, its sidecar overwritten), never a done tile without counts.
        """
        blob = (json.dumps({"entries": int(counts.entries), "refined": int(counts.refined),
                            "tiles": int(counts.tiles)}, sort_keys=True) + "\n").encode()
        _write_atomic(self._counts_path(gi, pi), lambda fh: fh.write(blob))
        _write_atomic(self._path(gi, pi), lambda fh: np.save(fh, np.ascontiguousarray(tile), allow_pickle=False))
        if self._kill is not None:
            self._kill()

    def counts(self, gi: int, pi: int) -> RefinementStats | None:
        """The refinement counts committed with tile ``(gi, pi)``; None when it has none.

        None means the tile was committed by a version that did not record
        counts (or the sidecar does not read back as valid counts): the caller
        leaves the tile out of the totals and says they are incomplete.
        """
        try:
            raw = json.loads(self._counts_path(gi, pi).read_text())
            entries, refined, tiles = (raw[k] for k in ("entries", "refined", "tiles"))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not all(type(v) is int for v in (entries, refined, tiles)) or not 0 <= refined <= entries or tiles < 0:
            return None
        return RefinementStats(entries=entries, refined=refined, tiles=tiles)

    def load(self, gi: int, pi: int, shape: tuple[int, int]) -> np.ndarray | None:
        """The committed tile ``(gi, pi)`` if it reads back with ``shape``; otherwise None (and the file is dropped).

        Its counts are read separately (:meth:`counts`); a dropped tile's
        sidecar goes with it, as the tile is computed and committed again.
        """
        path = self._path(gi, pi)
        try:
            tile = np.load(path, allow_pickle=False)
            if tile.shape == shape:
                return tile
        except (OSError, ValueError, EOFError):
            pass
        path.unlink(missing_ok=True)
        self._counts_path(gi, pi).unlink(missing_ok=True)
        return None

    def remove(self) -> None:
        """Delete the folder, tiles and counts alike (and the ``.tiles`` parent when it is left empty)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        try:
            self.directory.parent.rmdir()
        except OSError:
            pass
