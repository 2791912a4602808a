"""The HDF5 feature cache (docs/DESIGN.md, "HDF5 feature cache").

One file per (dataset, checkpoint, preprocessing, manifest):
``<cache_dir>/<dataset>/<key>.h5`` where ``key`` is the first 16 hex digits of
the SHA-256 of the key fields (see :func:`cache_key`). The file name is the key,
so a request with other settings opens another file; a file whose stored
attributes do not hash to its name is refused.

Root attributes: ``schema_version``, ``package_version``, ``cache_key``,
``dataset``, ``dataset_root`` (absolute), ``checkpoint_sha256``,
``checkpoint_file`` (the checkpoint, or ``module:<identity>`` for a network
extracted through :func:`reid_eval.features.extract_with_module`),
``model_name`` (the model in words), ``foreground_trained`` (bool: whether the
foreground probabilities come from a trained generator),
``manifest_sha256``, ``settings`` (JSON: model config and preprocessing),
``created`` (UTC ISO time).

One group per split (``query``, ``gallery``, ``train``), rows in extraction
order (manifest order for ``--resize fixed``; grouped by size for keep-aspect):

=================  ==================  =============================================
``path``           [n] str             image path relative to ``dataset_root``
``pid``/``camid``  [n] int64
``manifest_index`` [n] int64           row of the image within its manifest split
``offsets``        [n+1] int64         image i owns ``local`` rows offsets[i]:offsets[i+1]
``grid``           [n, K, 2] int32     (h, w) of each pyramid level, (0, 0) if skipped
``local``          [L, d] float32      pyramid features
``foreground``     [L] float32         foreground probability of each location
``global``         [n, D] float32      the model's global feature (D = d for the map's average)
``file_size``      [n] int64           the image file's size in bytes ...
``file_mtime_ns``  [n] int64           ... modification time (ns) ...
``file_digest``    [n] S32             ... and BLAKE2b-128 of its bytes (hex)
``skipped``        [s] str             images left out with --skip-bad ...
``skipped_reason`` [s] str             ... and why
``skipped_size``,  [s] int64           ... and their files' size and time
``skipped_mtime_ns``
=================  ==================  =============================================

The file records let ``extract`` notice a replaced or repaired image (see
reid_eval.features.extract, "Changed images"). Writing is guarded by
reid_eval.features.cache_io: a writer lock beside the file, disk space
reserved before each batch, and a file sealed after a failed write.

Group attributes: ``num_total`` (images of the split in the manifest),
``num_complete`` (of those, processed: written or skipped), ``num_written``,
``num_locations``, ``num_skipped``. These are updated after each batch's rows
are written and the file is flushed; rows beyond them are an interrupted
batch and are cut off on resume. Distance matrices live under
``distances/<name>`` [P, G] float32 with their parameters as attributes.

Readers: :func:`read_split` loads a whole split; :func:`read_split_index`,
:func:`read_image_foreground` and :func:`list_distances` read only small
pieces (the report never loads the local features, tens of GB on
Market-1501). Readers take a path or a file already opened with
:func:`open_cache`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import h5py
import numpy as np

from reid_eval import __version__
from reid_eval.errors import ReidEvalError
from reid_eval.features.cache_io import (
    CacheBusyError,
    CacheWriteError,
    busy_message,
    check_not_being_written,
    close_cache,
    is_lock_error,
    new_bytes,
    reserve_space,
    sealed_on_failure,
    write_failure_message,
    writer_pid,
)
from reid_eval.features.spatial import SpatialFeatures

SCHEMA_VERSION = 2  # 2: per-image file records (size, mtime, digest) and the writer lock
SPLITS: tuple[str, ...] = ("query", "gallery", "train")
_ROW_DATASETS = ("path", "pid", "camid", "manifest_index", "grid", "global", "file_size", "file_mtime_ns", "file_digest")
_SKIP_DATASETS = ("skipped", "skipped_reason", "skipped_size", "skipped_mtime_ns")
_STR = h5py.string_dtype(encoding="utf-8")
#: The command that stores matrices, named in its disk-full messages.
_MATCH_RERUN = "reid-eval match"
#: Suffix of a matrix being stored: written under ``<name>`` + this suffix, renamed to ``<name>`` once
#: complete. Readers never list such an entry; the next write into the cache removes it.
PARTIAL_SUFFIX = ".partial"

# A cache file's path, or a file already opened with :func:`open_cache` (kept
# open by the caller when it reads many small pieces, e.g. one image at a time).
CacheSource = Union[str, os.PathLike, h5py.File]


def cache_key(dataset: str, checkpoint_sha256: str, settings: Mapping[str, Any], manifest_sha256: str) -> str:
    """16 hex digits identifying a cache: SHA-256 of the canonical JSON of the key fields."""
    blob = json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "dataset": dataset,
            "checkpoint_sha256": checkpoint_sha256,
            "settings": settings,
            "manifest_sha256": manifest_sha256,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(cache_dir: str | os.PathLike, dataset: str, key: str) -> Path:
    """``<cache_dir>/<dataset>/<key>.h5``."""
    return Path(cache_dir) / dataset / f"{key}.h5"


@dataclass(frozen=True)
class SplitIndex:
    """Who is who in a split: ``paths`` (n, relative to the dataset root), ``pids`` / ``camids`` [n] int64,
    and ``skipped``: the paths left out by --skip-bad (absent from the others)."""

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    skipped: list[str] = field(default_factory=list)


@dataclass
class SplitData:
    """One split of a cache, read into memory.

    paths: n image paths relative to the dataset root; pids, camids: [n] int64;
    spatial: SpatialFeatures (local [L, d] float32, offsets [n+1], foreground [L]);
    global_features: [n, D] float32; grids: [n, K, 2] int32; manifest_index: [n]
    int64; skipped: paths left out by --skip-bad (absent from everything above).
    """

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    spatial: SpatialFeatures
    global_features: np.ndarray
    grids: np.ndarray
    manifest_index: np.ndarray
    skipped: list[str] = field(default_factory=list)


def _decode(values: Iterable[Any]) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def check_cache_file(f: h5py.File, path: Path) -> None:
    """Refuse a file whose schema is unknown or whose attributes do not hash to its name."""
    attrs = f.attrs
    if "cache_key" not in attrs or "schema_version" not in attrs:
        raise ReidEvalError(f"{path} is not a reid-eval feature cache")
    if int(attrs["schema_version"]) != SCHEMA_VERSION:
        raise ReidEvalError(f"cache {path} has schema version {attrs['schema_version']}, this reid-eval reads {SCHEMA_VERSION}; re-extract")
    key = cache_key(
        str(attrs["dataset"]), str(attrs["checkpoint_sha256"]), json.loads(attrs["settings"]), str(attrs["manifest_sha256"])
    )
    if key != attrs["cache_key"] or key != path.stem:
        raise ReidEvalError(
            f"cache {path} does not match its key (stored attributes hash to {key}); it was renamed or altered — delete it"
        )


def create_cache(path: Path, attrs: Mapping[str, Any]) -> None:
    """Create an empty cache file with the root ``attrs`` (written to a temp name, then renamed).

    A failed write (disk full) removes the temp file and raises CacheWriteError naming ``path``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReidEvalError(f"cannot create cache folder {path.parent}: {exc.strerror or exc} (--cache-dir)") from None
    tmp = path.with_name(path.name + ".tmp")
    try:
        f = h5py.File(tmp, "w")
    except OSError as exc:
        raise CacheWriteError(write_failure_message(path, exc)) from None
    try:
        with sealed_on_failure(f):
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["package_version"] = __version__
            f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            for k, v in attrs.items():
                f.attrs[k] = v
        close_cache(f)
        os.replace(tmp, path)
    except CacheWriteError as exc:
        tmp.unlink(missing_ok=True)
        raise CacheWriteError(str(exc).replace(str(tmp), str(path))) from None


def open_cache(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """Open and validate a cache file; raises ReidEvalError naming the file when it is absent, damaged or altered."""
    path = Path(path)
    if not path.is_file():
        raise ReidEvalError(f"feature cache {path} does not exist; run `reid-eval extract` first")
    if mode == "r":
        check_not_being_written(path)  # a file mid-extraction is busy, not damaged
    try:
        f = h5py.File(path, mode)
    except OSError as exc:
        if is_lock_error(exc):  # HDF5's own lock: another process has it open
            pid = writer_pid(path)
            raise CacheBusyError(busy_message(path, pid) if pid is not None else (
                f"feature cache {path} is open {'for writing ' if mode == 'r' else ''}in another process "
                f"(an extraction{', or a `match` storing its distances' if mode == 'r' else ', `match` or `report`'}); "
                "wait for it to finish, then rerun")) from None
        raise ReidEvalError(f"cannot open feature cache {path} ({' '.join(str(exc).split())}); delete it and extract again") from exc
    try:
        check_cache_file(f, path)
    except Exception:
        f.close()
        raise
    return f


@contextmanager
def _opened(source: CacheSource) -> Iterator[h5py.File]:
    """The open file itself (left open), or the path opened with :func:`open_cache` for the block."""
    if isinstance(source, h5py.File):
        yield source
    else:
        with open_cache(source) as f:
            yield f


@dataclass(frozen=True)
class FileRecord:
    """What the cache remembers of an image file, to notice when it is replaced or repaired.

    size: bytes; mtime_ns: modification time (ns since the epoch); digest:
    BLAKE2b-128 of the file's bytes as 32 hex digits ("" when not read, e.g.
    for a skipped image). Size -1 marks an unknown file (always re-checked).
    """

    size: int
    mtime_ns: int
    digest: str = ""


UNKNOWN_FILE = FileRecord(-1, -1, "")
#: Suffix of the group a split with changed images is rebuilt in, then swapped in (see reid_eval.features.extract).
NEXT_SUFFIX = "__next"
#: Suffix of a split group whose tables a failed write left inconsistent; never read, extracted again.
DAMAGED_SUFFIX = "__damaged"


def _tables_intact(g: h5py.Group) -> bool:
    """Whether every table of a split group can be opened and its chunk index walked (reads only)."""
    try:
        for name in g:
            ds = g[name]
            if ds.chunks is not None:
                ds.id.get_num_chunks()
    except (OSError, RuntimeError, ValueError, KeyError):
        return False
    return True


def _free_name(f: h5py.File, name: str) -> str:
    """``name``, or ``name2``, ``name3``... whichever is not taken in ``f``."""
    k, out = 1, name
    while out in f:
        k += 1
        out = f"{name}{k}"
    return out


class SplitWriter:
    """Appends batches to one split group; each :meth:`append` is committed atomically with respect to resume.

    Every batch first reserves the disk space it can need (see
    :mod:`reid_eval.features.cache_io`): a full disk stops the extraction
    before the batch, with a CacheWriteError naming the file, and leaves the
    committed batches as they were.
    """

    def __init__(self, f: h5py.File, split: str, num_total: int, feature_dim: int, num_levels: int, group: str | None = None,
                 global_dim: int | None = None):
        self.f = f
        self.split = split
        group = group or split  # the split's own group, or the one it is rebuilt in
        with sealed_on_failure(f):
            if group in f:
                g = f[group]
                if int(g.attrs["num_total"]) != num_total or g["local"].shape[1] != feature_dim:
                    raise ReidEvalError(f"cache {f.filename} split {split} was started for {g.attrs['num_total']} images; delete it")
                if _tables_intact(g):
                    self.g = g
                    self._hold()
                    self._truncate()
                else:
                    # A write that failed past the reservation (see cache_io) left this group's tables
                    # pointing past the file's end: keep it aside, untouched, and extract the split again.
                    del g
                    f.move(group, _free_name(f, group + DAMAGED_SUFFIX))
                    reserve_space(f, 0, f"the {split} split's tables")
                    self.g = self._create(f, group, num_total, feature_dim, num_levels, global_dim or feature_dim)
                    self._hold()
                    f.flush()
            else:
                reserve_space(f, 0, f"the {split} split's tables")
                self.g = self._create(f, group, num_total, feature_dim, num_levels, global_dim or feature_dim)
                self._hold()
                f.flush()

    def _hold(self) -> None:
        # One open dataset object each for the writer's life: h5py closes a dataset when its
        # last object goes, HDF5 then writes its cached chunks, and a write failing there (disk
        # full) is only printed, never raised, leaving HDF5 in a state that crashes at exit.
        self.ds: dict[str, h5py.Dataset] = {name: self.g[name] for name in self.g}

    @staticmethod
    def _create(f: h5py.File, group: str, num_total: int, d: int, k: int, global_dim: int) -> h5py.Group:
        g = f.create_group(group)
        rows = 1024
        loc_rows = max(1, min(4096, (1 << 20) // (4 * d)))
        g.create_dataset("path", (0,), maxshape=(None,), dtype=_STR, chunks=(rows,))
        for name in ("pid", "camid", "manifest_index", "file_size", "file_mtime_ns"):
            g.create_dataset(name, (0,), maxshape=(None,), dtype=np.int64, chunks=(rows,))
        g.create_dataset("file_digest", (0,), maxshape=(None,), dtype="S32", chunks=(rows,))
        g.create_dataset("offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(rows,))
        g.create_dataset("grid", (0, k, 2), maxshape=(None, k, 2), dtype=np.int32, chunks=(rows, k, 2))
        g.create_dataset("global", (0, global_dim), maxshape=(None, global_dim), dtype=np.float32,
                         chunks=(max(1, loc_rows), global_dim))
        g.create_dataset("local", (0, d), maxshape=(None, d), dtype=np.float32, chunks=(loc_rows, d))
        g.create_dataset("foreground", (0,), maxshape=(None,), dtype=np.float32, chunks=(4096,))
        g.create_dataset("skipped", (0,), maxshape=(None,), dtype=_STR, chunks=(64,))
        g.create_dataset("skipped_reason", (0,), maxshape=(None,), dtype=_STR, chunks=(64,))
        for name in ("skipped_size", "skipped_mtime_ns"):
            g.create_dataset(name, (0,), maxshape=(None,), dtype=np.int64, chunks=(64,))
        g.attrs.update(num_total=num_total, num_complete=0, num_written=0, num_locations=0, num_skipped=0)
        return g

    def _truncate(self) -> None:
        # Rows past the committed counts belong to a batch that was interrupted.
        n, L, s = (int(self.g.attrs[k]) for k in ("num_written", "num_locations", "num_skipped"))
        rows = {name: n for name in _ROW_DATASETS} | {name: s for name in _SKIP_DATASETS}
        rows.update(offsets=n + 1, local=L, foreground=L)
        for name, length in rows.items():
            if self.ds[name].shape[0] != length:  # a file with nothing to cut is left byte for byte as it was
                self.ds[name].resize(length, axis=0)

    @property
    def num_complete(self) -> int:
        return int(self.g.attrs["num_complete"])

    @property
    def is_complete(self) -> bool:
        return self.num_complete == int(self.g.attrs["num_total"])

    @staticmethod
    def _extend(ds: h5py.Dataset, values: np.ndarray) -> None:
        start = ds.shape[0]
        ds.resize(start + len(values), axis=0)
        if len(values):
            ds[start:] = values

    def _batch_bytes(self, n: int, L: int, s: int, text_bytes: int) -> int:
        """Upper bound of the bytes a batch of n images, L locations and s skipped images adds to the file."""
        g = self.ds
        total = sum(new_bytes(g[name], n) for name in _ROW_DATASETS) + new_bytes(g["offsets"], n)
        total += new_bytes(g["local"], L) + new_bytes(g["foreground"], L)
        total += sum(new_bytes(g[name], s) for name in _SKIP_DATASETS)
        return total + text_bytes

    def append(
        self,
        processed: int,
        paths: list[str],
        pids: np.ndarray,
        camids: np.ndarray,
        manifest_index: np.ndarray,
        grids: np.ndarray,
        local: np.ndarray,
        counts: np.ndarray,
        foreground: np.ndarray,
        global_features: np.ndarray,
        skipped: Sequence[tuple[str, str] | tuple[str, str, FileRecord]] = (),
        before_commit: Any = None,
        files: Sequence[FileRecord] | None = None,
    ) -> None:
        """Write one batch of ``len(paths)`` images (``counts[i]`` local rows each) and commit it.

        ``processed`` manifest entries are done after it (written + skipped).
        ``files``: the FileRecord of each written image (unknown when None);
        ``skipped``: (path, reason[, FileRecord]) of each image left out.
        ``before_commit`` (a callable or None) runs after the rows are flushed
        to disk and before the counts commit them; tests kill the process there.
        Raises CacheWriteError (file and cause named) when the disk is full.
        """
        g, ds = self.g, self.ds
        files = list(files) if files is not None else [UNKNOWN_FILE] * len(paths)
        skip_records = [item[2] if len(item) > 2 else UNKNOWN_FILE for item in skipped]
        n0, L0 = int(g.attrs["num_written"]), int(g.attrs["num_locations"])
        num_loc = int(np.sum(counts))
        text = sum(len(p.encode()) for p in paths) + sum(len(item[0].encode()) + len(item[1].encode()) for item in skipped)
        with sealed_on_failure(self.f):
            reserve_space(
                self.f,
                self._batch_bytes(len(paths), num_loc, len(skipped), text),
                f"its next batch ({len(paths)} {self.split} images)",
            )
            self._extend(ds["path"], np.array(paths, dtype=object))
            self._extend(ds["pid"], np.asarray(pids, np.int64))
            self._extend(ds["camid"], np.asarray(camids, np.int64))
            self._extend(ds["manifest_index"], np.asarray(manifest_index, np.int64))
            self._extend(ds["file_size"], np.array([r.size for r in files], np.int64))
            self._extend(ds["file_mtime_ns"], np.array([r.mtime_ns for r in files], np.int64))
            self._extend(ds["file_digest"], np.array([r.digest.encode("ascii") for r in files], "S32"))
            self._extend(ds["grid"], np.asarray(grids, np.int32))
            self._extend(ds["global"], np.asarray(global_features, np.float32))
            self._extend(ds["local"], np.asarray(local, np.float32))
            self._extend(ds["foreground"], np.asarray(foreground, np.float32))
            self._extend(ds["offsets"], L0 + np.cumsum(np.asarray(counts, np.int64)))
            if skipped:
                self._extend(ds["skipped"], np.array([item[0] for item in skipped], dtype=object))
                self._extend(ds["skipped_reason"], np.array([item[1] for item in skipped], dtype=object))
                self._extend(ds["skipped_size"], np.array([r.size for r in skip_records], np.int64))
                self._extend(ds["skipped_mtime_ns"], np.array([r.mtime_ns for r in skip_records], np.int64))
            self.f.flush()
            if before_commit is not None:
                before_commit()
            g.attrs.update(
                num_complete=self.num_complete + processed,
                num_written=n0 + len(paths),
                num_locations=L0 + num_loc,
                num_skipped=int(g.attrs["num_skipped"]) + len(skipped),
            )
            self.f.flush()


def split_file_records(f: h5py.File, group: str) -> tuple[dict[str, tuple[int, FileRecord]], dict[str, tuple[str, FileRecord]]]:
    """The committed images of split group ``group`` by path: ({path: (row, FileRecord)}, {skipped path: (reason, FileRecord)})."""
    g = f[group]
    n, _, s = _committed(g)
    paths = _decode(g["path"][:n])
    sizes, mtimes = g["file_size"][:n], g["file_mtime_ns"][:n]
    digests = [d.decode("ascii") if isinstance(d, bytes) else str(d) for d in g["file_digest"][:n]]
    written = {p: (i, FileRecord(int(sizes[i]), int(mtimes[i]), digests[i])) for i, p in enumerate(paths)}
    sk_paths, sk_reasons = _decode(g["skipped"][:s]), _decode(g["skipped_reason"][:s])
    sk_sizes, sk_mtimes = g["skipped_size"][:s], g["skipped_mtime_ns"][:s]
    skipped = {p: (sk_reasons[i], FileRecord(int(sk_sizes[i]), int(sk_mtimes[i]))) for i, p in enumerate(sk_paths)}
    return written, skipped


def read_rows(f: h5py.File, group: str, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features of committed ``rows`` of split group ``group``, in that order, to copy into another group.

    Returns (local [sum N_i, d], counts [n], foreground [sum N_i], global [n, d], grid [n, K, 2]).
    """
    g = f[group]
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        d, k = g["local"].shape[1], g["grid"].shape[1]
        return np.zeros((0, d), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, d), np.float32), np.zeros((0, k, 2), np.int32)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    offsets = g["offsets"][lo : hi + 1].astype(np.int64)
    local_all = g["local"][offsets[0] : offsets[-1]]
    fg_all = g["foreground"][offsets[0] : offsets[-1]]
    glob = g["global"][lo:hi][rows - lo]
    grid = g["grid"][lo:hi][rows - lo]
    starts, stops = offsets[rows - lo] - offsets[0], offsets[rows - lo + 1] - offsets[0]
    local = np.concatenate([local_all[a:b] for a, b in zip(starts, stops)])
    fg = np.concatenate([fg_all[a:b] for a, b in zip(starts, stops)])
    return local.astype(np.float32, copy=False), (stops - starts).astype(np.int64), fg.astype(np.float32, copy=False), glob, grid


def split_status(cache_file: CacheSource) -> dict[str, tuple[int, int]]:
    """{split: (num_complete, num_total)} of every split group in the cache."""
    with _opened(cache_file) as f:
        return {s: (int(f[s].attrs["num_complete"]), int(f[s].attrs["num_total"])) for s in SPLITS if s in f}


def split_complete(cache_file: CacheSource, split: str) -> bool:
    """Whether the cache holds ``split`` with every image of its manifest processed (written or skipped).

    The one completeness test: readers refuse an incomplete split, `match`
    and `report` choose only caches whose query and gallery pass it.
    """
    status = split_status(cache_file).get(split)
    return status is not None and status[0] == status[1]


def iter_cache_files(cache_dir: str | os.PathLike, dataset: str | None = None) -> Iterator[Path]:
    """Every ``<cache_dir>/<dataset>/<key>.h5`` (of one dataset when given), sorted by path."""
    base = Path(cache_dir)
    pattern = f"{dataset}/*.h5" if dataset else "*/*.h5"
    yield from sorted(p for p in base.glob(pattern) if p.is_file())


def _split_group(f: h5py.File, split: str, allow_incomplete: bool = False) -> h5py.Group:
    """The group of ``split``; refuses an unknown name, an absent split and (unless allowed) an incomplete one."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(f.filename)
    if split not in f:
        raise ReidEvalError(f"cache {path} has no {split} split; run `reid-eval extract --splits ...{split}`")
    g = f[split]
    absent = [name for name in (*_ROW_DATASETS, "offsets", "local", "foreground", "skipped") if name not in g]
    if absent or any(k not in g.attrs for k in ("num_complete", "num_total", "num_written", "num_locations", "num_skipped")):
        what = f"no {', '.join(absent)} table" if absent else "no commit counts"
        raise ReidEvalError(f"cache {path} split {split} is damaged ({what}); delete it and extract again")
    done, total = int(g.attrs["num_complete"]), int(g.attrs["num_total"])
    if done != total and not allow_incomplete:
        raise ReidEvalError(f"cache {path} split {split} is incomplete ({done} of {total} images); rerun `reid-eval extract` to finish it")
    return g


def _committed(g: h5py.Group) -> tuple[int, int, int]:
    """(images, local rows, skipped images) committed in a split group; rows past them are an interrupted batch."""
    return int(g.attrs["num_written"]), int(g.attrs["num_locations"]), int(g.attrs["num_skipped"])


def _ids(g: h5py.Group, name: str, n: int) -> np.ndarray:
    """The first ``n`` entries of integer table ``name`` as int64; ReidEvalError naming the cache when they are not integers."""
    values = g[name][:n]
    if values.dtype.kind not in "iu":
        raise ReidEvalError(
            f"cache {g.file.filename} split {g.name.strip('/')}: table {name} holds {values.dtype} values, not integer ids; "
            "the cache is damaged or foreign — delete it and extract again")
    return values.astype(np.int64)


def _index(g: h5py.Group) -> SplitIndex:
    n, _, s = _committed(g)
    return SplitIndex(
        paths=_decode(g["path"][:n]),
        pids=_ids(g, "pid", n),
        camids=_ids(g, "camid", n),
        skipped=_decode(g["skipped"][:s]),
    )


def read_split_index(cache_file: CacheSource, split: str, allow_incomplete: bool = False) -> SplitIndex:
    """Paths, pids, camera ids and skipped paths of a split's committed images, without any features.

    Refuses an incomplete split like :func:`read_split` unless
    ``allow_incomplete``; then the images committed so far are returned (an
    interrupted batch is never part of them).
    """
    with _opened(cache_file) as f:
        return _index(_split_group(f, split, allow_incomplete))


def read_image_foreground(cache_file: CacheSource, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One image's foreground probabilities and pyramid grid: (foreground [N] float32, grid [K, 2] int32).

    ``index`` is the image's row in the split (as in :func:`read_split_index`);
    the N locations are stored level by level, each level's (h, w) cells
    row-major, so N is the sum of h·w over ``grid`` ((0, 0) for a level that
    did not fit). Pass the open file from :func:`open_cache` when reading many
    images. The split may be incomplete; only committed images can be read.
    """
    with _opened(cache_file) as f:
        g = _split_group(f, split, allow_incomplete=True)
        n = _committed(g)[0]
        if not 0 <= index < n:
            raise ValueError(f"index must be in [0, {n}) for the {split} split of {f.filename}, got {index}")
        start, stop = (int(v) for v in g["offsets"][index : index + 2])
        grid = g["grid"][index].astype(np.int32, copy=False)
        cells = int(np.sum(grid[:, 0].astype(np.int64) * grid[:, 1]))
        if cells != stop - start:
            raise ReidEvalError(
                f"cache {f.filename}: {split} image {index} has {stop - start} locations but its grid {grid.tolist()} "
                f"gives {cells}; the cache is damaged — delete it and extract again"
            )
        return g["foreground"][start:stop].astype(np.float32, copy=False), grid


def read_split(cache_file: CacheSource, split: str) -> SplitData:
    """Read one complete split of a cache into memory (see :class:`SplitData`)."""
    with _opened(cache_file) as f:
        g = _split_group(f, split)
        n, L, _ = _committed(g)
        index = _index(g)
        spatial = SpatialFeatures(
            g["local"][:L].astype(np.float32, copy=False),
            g["offsets"][: n + 1].astype(np.int64, copy=False),
            foreground=g["foreground"][:L].astype(np.float32, copy=False),
        )
        return SplitData(
            paths=index.paths,
            pids=index.pids,
            camids=index.camids,
            spatial=spatial,
            global_features=g["global"][:n].astype(np.float32, copy=False),
            grids=g["grid"][:n].astype(np.int32, copy=False),
            manifest_index=g["manifest_index"][:n].astype(np.int64),
            skipped=index.skipped,
        )


# Block reads (matching at scale). ``local`` is stored in chunks of whole rows
# (all d columns, about 1 MiB), so the rows of a range of images are read from
# the few chunks that hold them: measured at d = 2048, 80-image blocks read at
# 2.0 GB/s from the page cache with 128-row chunks, the same with 440- or
# 512-row chunks and faster than a contiguous layout, so every cache written
# since schema 1 is read as it is. A split whose tables do not fit together
# (a damaged or foreign file) is refused in one line.


def _damaged(f: h5py.File, split: str, what: str) -> ReidEvalError:
    return ReidEvalError(f"cache {f.filename} split {split} is damaged ({what}); delete it and extract again")


def _block_group(f: h5py.File, split: str) -> tuple[h5py.Group, int, int]:
    """The complete split group checked for block reads: (group, images n, local rows L)."""
    g = _split_group(f, split)
    n, L, _ = _committed(g)
    for name in ("local", "foreground", "offsets", "global"):
        if name not in g:
            raise _damaged(f, split, f"no {name} table")
    local, fg, offs, glob = g["local"], g["foreground"], g["offsets"], g["global"]
    if local.ndim != 2 or local.shape[0] < L or fg.shape[0] < L or offs.shape[0] < n + 1 or glob.shape[0] < n:
        raise _damaged(
            f, split,
            f"{n} images and {L} locations committed, but tables of {offs.shape[0]} offsets, "
            f"{local.shape[0]} local rows, {fg.shape[0]} foreground values, {glob.shape[0]} global rows",
        )
    return g, n, L


def read_split_offsets(cache_file: CacheSource, split: str) -> np.ndarray:
    """``[n+1]`` int64 row boundaries of a complete split's images in ``local`` (8 bytes per image).

    Checked: starts at 0, never decreases, ends at the committed number of
    locations, and the tables hold that many rows; otherwise ReidEvalError
    (damaged cache, re-extract).
    """
    with _opened(cache_file) as f:
        g, n, L = _block_group(f, split)
        try:
            offsets = g["offsets"][: n + 1].astype(np.int64, copy=False)
        except OSError as exc:
            raise _damaged(f, split, f"offsets unreadable: {' '.join(str(exc).split())}") from None
        if offsets[0] != 0 or offsets[-1] != L or np.any(np.diff(offsets) < 0):
            raise _damaged(f, split, f"offsets run from {offsets[0]} to {offsets[-1]} for {L} locations, or decrease")
        return offsets


def read_spatial_block(cache_file: CacheSource, split: str, start: int, stop: int) -> SpatialFeatures:
    """Images ``start:stop`` of a complete split, read from the file without the rest of it.

    Returns SpatialFeatures with local ``[R, d]`` float32 (R = the images'
    locations), offsets ``[stop-start+1]`` from 0 and foreground ``[R]``.
    Pass a file opened with :func:`open_cache` when reading many blocks.
    """
    with _opened(cache_file) as f:
        g, n, _ = _block_group(f, split)
        if not 0 <= start <= stop <= n:
            raise ValueError(f"image range {start}:{stop} is outside the {n} images of the {split} split of {f.filename}")
        try:
            offsets = g["offsets"][start : stop + 1].astype(np.int64)
            a, b = int(offsets[0]), int(offsets[-1])
            local = g["local"][a:b]
            foreground = g["foreground"][a:b]
        except OSError as exc:
            raise _damaged(f, split, f"images {start}:{stop} unreadable: {' '.join(str(exc).split())}") from None
        try:
            return SpatialFeatures(local, offsets - a, foreground=foreground)
        except ValueError as exc:
            raise _damaged(f, split, f"images {start}:{stop}: {exc}") from None


def read_global_block(cache_file: CacheSource, split: str, start: int, stop: int) -> np.ndarray:
    """``[stop-start, d]`` float32 global features of images ``start:stop`` of a complete split."""
    with _opened(cache_file) as f:
        g, n, _ = _block_group(f, split)
        if not 0 <= start <= stop <= n:
            raise ValueError(f"image range {start}:{stop} is outside the {n} images of the {split} split of {f.filename}")
        try:
            return g["global"][start:stop].astype(np.float32, copy=False)
        except OSError as exc:
            raise _damaged(f, split, f"global features {start}:{stop} unreadable: {' '.join(str(exc).split())}") from None


def split_fingerprint(cache_file: CacheSource, split: str) -> str:
    """16 hex digits that change whenever a complete split's features may have: a stored matrix is reused only while they match.

    Hashes the cache key, the split's commit counts, its offsets and (when
    present) the per-image file digests, which change when extraction
    replaces an image's features.
    """
    with _opened(cache_file) as f:
        g, n, L = _block_group(f, split)
        h = hashlib.sha256(f"{f.attrs.get('cache_key', '')}|{split}|{n}|{L}|{int(g.attrs['num_skipped'])}".encode())
        h.update(g["offsets"][: n + 1].astype(np.int64).tobytes())
        if "file_digest" in g:
            h.update(np.asarray(g["file_digest"][:n]).tobytes())
        return h.hexdigest()[:16]


def read_attrs(cache_file: CacheSource) -> dict[str, Any]:
    """Root attributes of a cache (``settings`` decoded from JSON)."""
    with _opened(cache_file) as f:
        out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    out["settings"] = json.loads(out["settings"])
    return out


#: Root attribute: the model in words ("OSNet x0.25, Market-1501, torchreid"), for tables.
MODEL_NAME_ATTR = "model_name"
#: Root attribute: whether the foreground probabilities come from a trained generator (bool).
FOREGROUND_TRAINED_ATTR = "foreground_trained"
#: How a foreground generator is trained, named wherever an untrained one is refused or reported.
TRAIN_FOREGROUND_HINT = (
    "train one with `reid-eval train --init CHECKPOINT --freeze-trunk --masks MASKS ...` "
    "(person masks from `reid-eval masks`), then extract again"
)

def write_distances(cache_file: str | os.PathLike, name: str, distances: np.ndarray, params: Mapping[str, Any]) -> None:
    """Store a [P, G] matrix as ``distances/<name>`` (replacing one of that name) with ``params`` as attributes.

    Every parameter is an attribute of its own (None as the string "none";
    values without an HDF5 type as JSON text) and all of them together as JSON
    in the ``params`` attribute. All or nothing: the matrix and its attributes
    are written under ``<name>.partial`` and renamed over ``<name>`` only when
    complete (the swap runs with SIGINT and SIGTERM held back), so a failure
    or an interrupt at any point leaves the previous matrix of that name as it
    was; half-written entries of earlier failed writes are removed first.
    A full disk raises CacheWriteError naming the file and `reid-eval match`.
    """
    if name.endswith(PARTIAL_SUFFIX) or "/" in name or not name:
        raise ValueError(f"distance name must be non-empty, without '/' or a {PARTIAL_SUFFIX} suffix, got {name!r}")
    distances = np.asarray(distances, np.float32)
    # Everything that can fail on the values fails here, before the file is touched.
    attrs = {k: _attribute_value(v) for k, v in params.items()}
    attrs["params"] = json.dumps(dict(params), sort_keys=True, default=str)
    partial = name + PARTIAL_SUFFIX
    f = open_cache(cache_file, "r+")
    try:
        with sealed_on_failure(f, command=_MATCH_RERUN):  # a full disk must not cost the features (see cache_io)
            grp = f.require_group("distances")
            for old in [n for n in grp if n.endswith(PARTIAL_SUFFIX)]:
                del grp[old]
            reserve_space(f, distances.nbytes, f"distances/{name}", command=_MATCH_RERUN)
            ds = grp.create_dataset(partial, data=distances)
            for k, v in attrs.items():
                ds.attrs[k] = v
            del ds
            f.flush()
            with _signals_held():
                if name in grp:
                    del grp[name]
                grp.move(partial, name)
    except BaseException:
        if f.id.valid:
            f.close()
        raise
    close_cache(f, command=_MATCH_RERUN)


def _attribute_value(value: Any) -> Any:
    """``value`` as an HDF5 attribute: None as "none"; anything without a native HDF5 type
    (an integer beyond int64, a mapping, a ragged list) as its JSON text."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_, str, float, np.floating)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value) if -(2**63) <= int(value) < 2**63 else str(int(value))
    try:
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf" or (arr.dtype.kind == "U" and arr.ndim == 1):
            return value
    except (ValueError, TypeError):
        pass
    return json.dumps(value, sort_keys=True, default=str)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block (in the main thread), delivering them after it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _distance_params(ds: h5py.Dataset) -> dict[str, Any] | None:
    """The ``params`` JSON of a stored matrix, or None for an entry without readable parameters."""
    try:
        text = ds.attrs["params"]
        out = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (KeyError, OSError, ValueError, TypeError):
        return None
    return out if isinstance(out, dict) else None


def _stored_entries(f: h5py.File) -> dict[str, h5py.Dataset]:
    """The complete stored matrices by name: half-written (``.partial``) entries and non-matrices left out."""
    if "distances" not in f or not isinstance(f["distances"], h5py.Group):
        return {}
    out = {}
    for name in sorted(f["distances"]):
        if name.endswith(PARTIAL_SUFFIX):
            continue
        try:
            ds = f["distances"][name]
        except (KeyError, OSError):
            continue
        if isinstance(ds, h5py.Dataset) and ds.ndim == 2:
            out[name] = ds
    return out


def list_distances(cache_file: CacheSource) -> dict[str, dict[str, Any]]:
    """{name: parameters} of every stored distance matrix, sorted by name; the matrices are not read.

    An entry a failed write left without readable parameters is not listed
    (a `match` of that name computes and stores it again).
    """
    with _opened(cache_file) as f:
        out = {}
        for name, ds in _stored_entries(f).items():
            params = _distance_params(ds)
            if params is not None:
                out[name] = params
        return out


def read_distances(cache_file: CacheSource, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The [P, G] float32 matrix ``distances/<name>`` and its parameters (from the ``params`` JSON attribute)."""
    with _opened(cache_file) as f:
        ds = _stored_entries(f).get(name)
        if ds is None:
            raise ReidEvalError(f"cache {f.filename} has no distances/{name}; run `reid-eval match` first")
        params = _distance_params(ds)
        if params is None:
            raise ReidEvalError(
                f"cache {f.filename}: distances/{name} has no readable parameters (an interrupted write); "
                "rerun `reid-eval match` to store it again")
        try:
            return ds[...], params
        except OSError as exc:
            raise ReidEvalError(
                f"cache {f.filename}: distances/{name} is unreadable ({' '.join(str(exc).split())}); "
                "rerun `reid-eval match --recompute` to store it again") from None
