"""Stored distance matrices: their names, the features they were made from, reuse, storing and tile clean-up.

A matrix of a cache is stored as ``distances/<name>`` in that cache
(:func:`reid_eval.features.write_distances`): ``name`` is the parameters'
:attr:`~reid_eval.experiments.record.MatchParams.distance_name` for
query–gallery, ``<distance name>__aux-<probe>-<gallery>`` for the other pairs
of splits that re-ranking needs (:func:`matrix_name`). A stored matrix is
reused when it has the same distance identity, was made from the same
features (:func:`features_fingerprint`, both splits) and has the expected
shape (:func:`reusable`, :func:`stored_matrix`). While a reconstruction matrix is computed, its
finished tiles wait in ``<cache>.tiles/<unfused name>/`` (:func:`tile_folder`);
:func:`store_matrix` removes them once the matrix is stored, and
:func:`remove_stale_tiles` the folders a run killed between the two left
behind. Plain matching, re-ranking and the fast-reid preset all go through here.

One match at a time per cache (:func:`match_lock`): a second `match` of the
same cache waits for the first and then reuses what it stored, instead of
both writing the same tile folders and the same cache entries. Before
computing anything, :func:`check_writable` refuses a cache that cannot take
the result (a read-only mount), with advice that keeps the cache.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.errors import ReidEvalError
from reid_eval.experiments.record import GLOBAL_METRICS, MatchParams
from reid_eval.features import list_distances, read_distances, write_distances
from reid_eval.features.cache import split_fingerprint
from reid_eval.matching.tile_store import TileStore, tile_dir

__all__ = ["QUERY_GALLERY", "matrix_name", "features_fingerprint", "reusable", "stored_matrix", "store_matrix",
           "tile_folder", "discard_tiles", "remove_stale_tiles", "check_writable", "match_lock"]

#: The (probe, gallery) splits of the matrix a match scores.
QUERY_GALLERY: tuple[str, str] = ("query", "gallery")


def matrix_name(params: MatchParams, splits: tuple[str, str] = QUERY_GALLERY) -> str:
    """``distances/<name>`` of ``params``' matrix between ``splits`` (module docstring)."""
    if tuple(splits) == QUERY_GALLERY:
        return params.distance_name
    return f"{params.distance_name}__aux-{splits[0]}-{splits[1]}"


def features_fingerprint(cache_file: Path, splits: tuple[str, str] = QUERY_GALLERY) -> str:
    """The fingerprints of the two splits' features, joined: a stored matrix is reused only under the same."""
    return "-".join(split_fingerprint(cache_file, s) for s in splits)


def reusable(cache_file: Path, params: MatchParams, splits: tuple[str, str] = QUERY_GALLERY) -> bool:
    """Whether ``distances/<matrix_name>`` holds ``params``' matrix: same distance identity, same features.

    Reads the attributes only (an auxiliary matrix can be gigabytes).
    """
    stored = list_distances(cache_file).get(matrix_name(params, splits))
    if stored is None or stored.get("features_fingerprint") != features_fingerprint(cache_file, splits):
        return False
    return MatchParams.from_json(stored).identity("distance") == params.identity("distance")


def stored_matrix(cache_file: Path, params: MatchParams, shape: tuple[int, int],
                  splits: tuple[str, str] = QUERY_GALLERY) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The stored matrix of ``params`` between ``splits`` and its attributes when :func:`reusable` and of
    ``shape`` ``(P, G)``; else None."""
    if not reusable(cache_file, params, splits):
        return None
    D, attrs = read_distances(cache_file, matrix_name(params, splits))
    return (D, attrs) if D.shape == tuple(shape) else None


def store_matrix(cache_file: Path, params: MatchParams, D: np.ndarray, attrs: Mapping[str, Any],
                 splits: tuple[str, str] = QUERY_GALLERY) -> str:
    """Store ``D`` as ``distances/<matrix_name>`` with ``attrs`` and the parameters; remove its finished tiles.

    The stored attributes are ``attrs`` (how it was made), the parameters'
    JSON, its ``distance_name`` and ``features_fingerprint``. Returns the name.
    """
    name = matrix_name(params, splits)
    write_distances(cache_file, name, D, {**attrs, **params.to_json(), "distance_name": name,
                                          "features_fingerprint": features_fingerprint(cache_file, splits)})
    if params.metric not in GLOBAL_METRICS:  # stored: its finished tiles are no longer needed
        discard_tiles(cache_file, params, splits)
    return name


def tile_folder(cache_file: Path, params: MatchParams, splits: tuple[str, str] = QUERY_GALLERY) -> Path:
    """Where the finished tiles of ``params``' reconstruction matrix wait (named without ``fuse``: the FPR part)."""
    return tile_dir(cache_file, matrix_name(dataclasses.replace(params, fuse=None), splits))


def discard_tiles(cache_file: Path, params: MatchParams, splits: tuple[str, str] = QUERY_GALLERY) -> None:
    """Remove the tile folder of ``params``' matrix between ``splits`` (finished, or to compute again)."""
    TileStore(tile_folder(cache_file, params, splits)).remove()


def remove_stale_tiles(cache_file: Path) -> list[str]:
    """Remove the tile folders of matrices already stored from the same features; returns their names.

    A run killed between storing a matrix and removing its tiles leaves the
    folder behind (hundreds of MB at Market-1501 size). A folder is stale
    when ``distances/<folder name>`` is stored, made from the splits' current
    features; any other folder may be an interrupted computation and is kept.
    Call it holding :func:`match_lock` (no other match is writing tiles).
    """
    root = tile_dir(cache_file, "x").parent
    if not root.is_dir():
        return []
    stored = list_distances(cache_file)
    removed = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        attrs = stored.get(folder.name)
        if attrs is None:
            continue
        splits = tuple(str(attrs.get("splits", ",".join(QUERY_GALLERY))).split(","))
        if len(splits) == 2 and attrs.get("features_fingerprint") == features_fingerprint(cache_file, splits):
            TileStore(folder).remove()
            removed.append(folder.name)
    return removed


def check_writable(cache_file: Path) -> None:
    """ReidEvalError unless ``cache_file`` and its folder can be written (the matrix and its tiles go there).

    A read-only mount or a missing permission is named as such, with advice
    that keeps the cache (it is healthy): make it writable, or match a
    writable copy.
    """
    for path in (cache_file, cache_file.parent):
        if not os.access(path, os.W_OK):
            why = "is on a read-only file system" if _read_only(path) else "is not writable"
            raise ReidEvalError(
                f"feature cache {cache_file}: {path} {why}, and match stores its distances and finished tiles there; "
                "make it writable, or copy the cache folder to a writable place and pass that as --cache-dir")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextmanager
def match_lock(cache_file: Path, notice: Callable[[str], None] | None = None, wait: bool = True) -> Iterator[bool]:
    """Hold ``<cache>.match.lock`` for the block: one match per cache computes and stores at a time.

    When another match holds it, ``notice`` is told (naming its PID) and the
    call waits until it ends; with ``wait=False`` it does not wait and yields
    False (the lock is not held). Yields True when held. The kernel drops the
    lock when its holder dies, even by SIGKILL, so a left-over lock file never
    blocks anyone. Ctrl-C while waiting stops the wait.
    """
    lock = cache_file.with_name(cache_file.name + ".match.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ReidEvalError(f"cannot create the match lock {lock}: {exc.strerror or exc}; "
                            "the cache folder must be writable (--cache-dir)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            if not wait:
                yield False
                return
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            if notice is not None:
                notice(f"waiting for another match (pid {holder or '?'}) using feature cache {cache_file}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield True
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it could let two holders in)
