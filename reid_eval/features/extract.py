"""Feature extraction into the HDF5 cache (resumable, keyed).

:func:`extract_dataset` reads a dataset's manifest, runs the FPR network over
the images of the requested splits in batches and appends every batch to the
cache file of :mod:`reid_eval.features.cache`. Images of one batch share one
size: with ``--resize fixed`` all do; with ``keep-aspect`` the split is first
ordered by target size (a stable sort of the manifest, from the image headers)
so equal sizes are batched together. The order is a pure function of the
manifest and the image headers, so a resumed run sees the same batches.

While the network runs on one batch a worker thread decodes the next one.

Changed images
    The cache key covers the dataset, checkpoint, settings and the manifest
    (image names, ids, cameras), not the files' contents. Each written image
    also gets a record of its file (size, modification time, BLAKE2b-128 of its
    bytes; size and time for a skipped one). Every run compares the records
    with the files: an image whose size differs, or whose time differs and
    whose digest does too, is *changed*, and so is a skipped image whose file's
    size or time moved (it was repaired, and is tried again, with or without
    --skip-bad). A split with changed images is rebuilt in the same file, in a
    group ``<split>__next`` beside the old one, which stays readable until the
    rebuild is complete and replaces it: unchanged images are copied from the
    old group, only changed ones go through the network. The rebuild resumes
    like any extraction. A file only touched or copied (same bytes) is not
    re-extracted. HDF5 does not give the old group's space
    back to the file system (``h5repack`` does). `match` and `report` do not
    look at the images: rerun `extract` after replacing images.

Writing is guarded (reid_eval.features.cache_io): one extraction per cache
file at a time (a second says which process is writing it), disk space
reserved before each batch (a full disk stops cleanly, naming the file; a
rerun resumes once there is room), and a failed write never reaches the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np
import pandas as pd
import torch
from PIL import Image

from reid_eval.datasets import get_spec, load_manifest, manifest_sha256, validate_counts
from reid_eval.errors import NO_CHECKPOINT_MESSAGE, ReidEvalError
from reid_eval.features.cache import (
    FOREGROUND_TRAINED_ATTR,
    MODEL_NAME_ATTR,
    NEXT_SUFFIX,
    SPLITS,
    UNKNOWN_FILE,
    FileRecord,
    SplitWriter,
    cache_key,
    cache_path,
    create_cache,
    iter_cache_files,  # re-exported: it moved to the torch-free reading side
    open_cache,
    read_rows,
    split_file_records,
)
from reid_eval.features.cache_io import close_cache, sealed_on_failure, writer_lock
from reid_eval.features.images import oriented_size
from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch
from reid_eval.kill_hooks import kill_hook
from reid_eval.model import ModelConfig, load_checkpoint
from reid_eval.model.checkpoint import foreground_trained

#: Progress callback: (split, images processed so far, images in the split, images/s of this run).
ProgressFn = Callable[[str, int, int, float], None]

# Test hook (reid_eval.kill_hooks): with REID_EVAL_TEST_KILL_AFTER_BATCHES=k the
# process SIGKILLs itself after writing the rows of its k-th batch and before
# committing them, the worst moment for a resume (tests/test_extract_resume.py);
# with "k:STOP" it stops there instead, holding the writer lock (tests/test_bad_input.py).
_KILL_ENV = "REID_EVAL_TEST_KILL_AFTER_BATCHES"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error naming --device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ReidEvalError(f"--device {device}: no CUDA GPU is available (use --device cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ReidEvalError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


@dataclass(frozen=True)
class Batch:
    """Consecutive entries ``start:stop`` of a split's processing order, all of one target size."""

    start: int
    stop: int
    size: tuple[int, int]


def processing_order(paths: Sequence[Path], prep: Preprocessing) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Order of a split's images and each one's target (height, width).

    Fixed resize keeps the manifest order. Keep-aspect sorts stably by target
    size, read from the image headers only; an image whose header cannot be
    read gets size (0, 0) (first in the order) and fails when loaded.
    """
    if prep.resize == "fixed":
        return np.arange(len(paths)), [tuple(prep.size)] * len(paths)
    sizes = []
    for p in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(p) as img:
                    w, h = oriented_size(img)  # the size load_rgb gives it, turned upright
            sizes.append(prep.target_size(h, w))
        except (OSError, ValueError, SyntaxError):
            sizes.append((0, 0))
    order = np.array(sorted(range(len(paths)), key=lambda i: sizes[i]), dtype=np.int64)
    return order, [sizes[i] for i in order]


def make_batches(sizes: Sequence[tuple[int, int]], batch_size: int, start: int = 0) -> list[Batch]:
    """Cut ``sizes[start:]`` into runs of equal size of at most ``batch_size`` entries."""
    out, i = [], start
    while i < len(sizes):
        j = i + 1
        while j < len(sizes) and j - i < batch_size and sizes[j] == sizes[i]:
            j += 1
        out.append(Batch(i, j, tuple(sizes[i])))
        i = j
    return out


@dataclass
class _Loaded:
    images: torch.Tensor | None  # [B, 3, H, W] normalised float32 on the CPU; None when nothing loaded
    kept: list[int]  # positions within the batch that loaded
    bad: list[tuple[int, str]]  # (position, reason) of those that did not
    files: list[FileRecord]  # the file record of every position (loaded or not)


def file_record(path: str | os.PathLike, digest: bool = True) -> FileRecord:
    """Size, modification time and (when ``digest``) BLAKE2b-128 of an image file; UNKNOWN_FILE when it cannot be read."""
    try:
        st = os.stat(path)
        text = hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest() if digest else ""
    except OSError:
        return UNKNOWN_FILE
    return FileRecord(int(st.st_size), int(st.st_mtime_ns), text)


def _load_batch(paths: Sequence[Path], prep: Preprocessing, skip_bad: bool) -> _Loaded:
    """Decode, resize and normalise a batch and record its files (runs in the loader thread)."""
    arrays, kept, bad, files = [], [], [], []
    for pos, p in enumerate(paths):
        files.append(file_record(p))  # before decoding: a file replaced meanwhile looks changed next time
        try:
            arrays.append(load_image_array(p, prep))
            kept.append(pos)
        except ReidEvalError as exc:
            if not skip_bad:
                raise
            bad.append((pos, str(exc)))
    return _Loaded(to_tensor_batch(arrays, prep) if arrays else None, kept, bad, files)


@dataclass(frozen=True)
class FeatureNetwork:
    """What an extraction runs and how its cache is named.

    model: images [B, 3, H, W] (normalised as ``prep`` says) -> a
        :class:`~reid_eval.model.PyramidOutput`.
    sha256: the model's identity in the cache key and the results files (a
        checkpoint file's SHA-256, or the SHA-256 of a module's identity string).
    source: where it came from, for messages and the cache (a checkpoint path, ``module:<identity>``).
    name: the model in words, for tables (e.g. "OSNet x0.25, Market-1501, torchreid").
    settings: model and preprocessing settings stored (and hashed) in the cache.
    feature_dim / global_dim: d of the locations / of the global feature.
    num_levels: pyramid levels (K of ``grid``).
    foreground_trained: whether the foreground probabilities come from a trained generator.
    """

    model: torch.nn.Module
    prep: Preprocessing
    sha256: str
    source: str
    name: str
    settings: dict
    feature_dim: int
    global_dim: int
    num_levels: int
    foreground_trained: bool


def checkpoint_network(checkpoint: str | os.PathLike, resize: str = "fixed") -> FeatureNetwork:
    """The :class:`FeatureNetwork` of a reid-eval checkpoint file (loaded on the CPU)."""
    model, config, meta = load_checkpoint(checkpoint, map_location="cpu")
    prep = Preprocessing.for_model(config, resize)
    extra = meta["extra"]
    return FeatureNetwork(
        model=model,
        prep=prep,
        sha256=meta["sha256"],
        source=str(Path(checkpoint).resolve()),
        name=str(extra.get("name") or f"{config.backbone} ({Path(checkpoint).name})"),
        settings=cache_settings(config, prep),
        feature_dim=config.feature_dim,
        global_dim=config.global_dim,
        num_levels=len(config.pyramid_kernels),
        foreground_trained=foreground_trained(extra),
    )


class _SplitRun:
    def __init__(self, model: torch.nn.Module, prep: Preprocessing, device: torch.device, checkpoint: str | os.PathLike = "?"):
        self.model, self.prep, self.device, self.checkpoint = model, prep, device, checkpoint

    def features(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(local [B·N, d], counts [B], foreground [B·N], global [B, D], grid [B, K, 2]) of a [B, 3, H, W] batch."""
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode():
            out = self.model(images)
        b, n, d = out.local.shape
        local = out.local.reshape(b * n, d).float().cpu().numpy()
        fg = out.foreground.reshape(b * n).float().cpu().numpy()
        glob = out.global_features.float().cpu().numpy()
        grid = np.broadcast_to(np.asarray(out.grid, np.int32), (b, len(out.grid), 2))
        return local, np.full(b, n, np.int64), fg, glob, grid


def cache_settings(config: ModelConfig, prep: Preprocessing) -> dict:
    """The model and preprocessing settings stored (and hashed) in the cache."""
    return {"model": config.to_dict(), "preprocessing": prep.to_dict()}


@dataclass(frozen=True)
class _Kept:
    """A committed image of an earlier version of the split whose file is unchanged: reuse it."""

    row: int | None  # its row in the earlier group; None for an image that was skipped
    record: FileRecord
    reason: str = ""  # why it was skipped


def unchanged_images(f: h5py.File, group: str, rows: pd.DataFrame, root: Path) -> tuple[dict[str, _Kept], list[str]]:
    """Split the committed images of ``group`` into unchanged ones (by path) and changed ones.

    An image is unchanged when its file's size and modification time equal the
    record's, or its size and BLAKE2b digest do (the file was only touched or
    copied). A skipped image is unchanged while its size and time are; once
    its file changes (repaired) it is changed, so it is tried again.
    """
    written, skipped = split_file_records(f, group)
    wanted = set(rows["path"])
    kept: dict[str, _Kept] = {}
    changed: list[str] = []
    for path, (row, rec) in written.items():
        if path not in wanted:
            continue
        now = file_record(root / path, digest=False)
        same = now.size == rec.size >= 0 and (now.mtime_ns == rec.mtime_ns or (rec.digest and file_record(root / path).digest == rec.digest))
        if same:
            kept[path] = _Kept(row, now if now.mtime_ns == rec.mtime_ns else file_record(root / path))
        else:
            changed.append(path)
    for path, (reason, rec) in skipped.items():
        if path not in wanted:
            continue
        now = file_record(root / path, digest=False)
        if now.size == rec.size >= 0 and now.mtime_ns == rec.mtime_ns:
            kept[path] = _Kept(None, rec, reason)
        else:
            changed.append(path)
    return kept, changed


def extract_dataset(
    dataset: str,
    root: str | os.PathLike,
    checkpoint: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    *,
    resize: str = "fixed",
    **options: Any,
) -> Path:
    """Fill the feature cache of ``dataset`` with a reid-eval checkpoint's features; returns the cache file.

    checkpoint: a reid-eval checkpoint; None is an error (features of a random
        network are never produced silently). ``resize`` (``fixed`` or
        ``keep-aspect``) and ``options`` as :func:`extract_network`.
    """
    if checkpoint is None:
        raise ReidEvalError(NO_CHECKPOINT_MESSAGE)
    return extract_network(dataset, root, checkpoint_network(checkpoint, resize), cache_dir, **options)


def extract_network(
    dataset: str,
    root: str | os.PathLike,
    network: FeatureNetwork,
    cache_dir: str | os.PathLike,
    *,
    manifest: pd.DataFrame | None = None,
    splits: Sequence[str] = ("query", "gallery"),
    device: str = "auto",
    batch_size: int = 32,
    skip_bad: bool = False,
    allow_mismatch: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Fill the feature cache of ``dataset`` for ``splits`` with ``network``; returns the cache file.

    root: folder of the dataset's images (manifest paths are relative to it).
    manifest: the dataset's manifest; when None it is read with
        ``reid_eval.datasets.load_manifest`` and checked against the published
        counts unless ``allow_mismatch``.
    A finished cache with the same key and unchanged image files returns at
    once; an interrupted one continues after its last committed batch; a split
    with changed (or repaired skipped) images is rebuilt, reusing the features
    of the unchanged ones (module docstring, "Changed images"). Raises
    ReidEvalError on an unreadable image unless ``skip_bad`` (then it is listed
    in ``skipped``), CacheBusyError when another extraction writes the same
    cache, CacheWriteError when the disk is full (committed batches are kept).
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ReidEvalError(f"--splits must name some of {', '.join(SPLITS)}, got {','.join(splits) or 'nothing'}")
    root = Path(root).expanduser().resolve()
    if manifest is None:
        manifest = _read_manifest(dataset, root, allow_mismatch)
    empty = [s for s in splits if not (manifest["split"] == s).any()]
    if empty:
        raise ReidEvalError(f"--splits: dataset {dataset} has no {', '.join(empty)} images under {root}")
    dev = resolve_device(device)
    m_sha = manifest_sha256(manifest)
    key = cache_key(dataset, network.sha256, network.settings, m_sha)
    path = cache_path(cache_dir, dataset, key)
    split_rows = {s: manifest[manifest["split"] == s].reset_index(drop=True) for s in splits}
    with writer_lock(path):
        if not path.exists():
            create_cache(
                path,
                {
                    "cache_key": key,
                    "dataset": dataset,
                    "dataset_root": str(root),
                    "checkpoint_sha256": network.sha256,
                    "checkpoint_file": network.source,
                    MODEL_NAME_ATTR: network.name,
                    FOREGROUND_TRAINED_ATTR: network.foreground_trained,
                    "manifest_sha256": m_sha,
                    "settings": json.dumps(network.settings, sort_keys=True),
                },
            )
        with open_cache(path) as f:
            todo = [s for s in splits if _needs_work(f, s, split_rows[s], root)]
            described = MODEL_NAME_ATTR in f.attrs and FOREGROUND_TRAINED_ATTR in f.attrs
        if not described:  # a cache written before these were recorded: add them, nothing else changes
            with open_cache(path, "r+") as f:
                f.attrs[MODEL_NAME_ATTR] = network.name
                f.attrs[FOREGROUND_TRAINED_ATTR] = network.foreground_trained
        if not todo:  # a finished, current cache is never opened for writing
            if progress:
                for s in splits:
                    progress(s, len(split_rows[s]), len(split_rows[s]), 0.0)
            return path
        model = network.model.to(dev).eval()
        run = _SplitRun(model, network.prep, dev, network.source)
        kill = kill_hook(_KILL_ENV)
        f = open_cache(path, "r+")
        try:
            for split in splits:
                rows = split_rows[split]
                if split not in todo:
                    if progress:
                        progress(split, len(rows), len(rows), 0.0)
                    continue
                group, source = _plan_split(f, split, rows, root)
                writer = SplitWriter(f, split, len(rows), network.feature_dim, network.num_levels, group=group,
                                     global_dim=network.global_dim)
                _extract_split(writer, run, rows, root, split, batch_size, skip_bad, progress, kill, source)
                _swap_in(f, split)
        except BaseException:
            if f.id.valid:
                f.close()
            raise
        close_cache(f)
    return path


def _needs_work(f: h5py.File, split: str, rows: pd.DataFrame, root: Path) -> bool:
    """Whether ``split`` is absent, incomplete, mid-rebuild, or holds a changed image."""
    if split not in f or split + NEXT_SUFFIX in f:
        return True
    g = f[split]
    if int(g.attrs["num_complete"]) != int(g.attrs["num_total"]):
        return True
    return bool(unchanged_images(f, split, rows, root)[1])


def _plan_split(f: h5py.File, split: str, rows: pd.DataFrame, root: Path) -> tuple[str, str | None]:
    """(group to write, group whose unchanged images are copied, or None) for ``split``.

    A split with changed images is rebuilt in ``<split>__next`` while the
    split itself stays readable; :func:`_swap_in` replaces it once complete.
    A rebuild that was interrupted continues.
    """
    _swap_in(f, split)  # a rebuild that finished but was interrupted before its swap
    nxt = split + NEXT_SUFFIX
    if nxt in f:
        return nxt, split
    if split in f and unchanged_images(f, split, rows, root)[1]:
        return nxt, split
    return split, None


def _swap_in(f: h5py.File, split: str) -> None:
    """Replace ``split`` by its complete rebuild ``<split>__next``, if there is one."""
    nxt = split + NEXT_SUFFIX
    if nxt not in f or int(f[nxt].attrs["num_complete"]) != int(f[nxt].attrs["num_total"]):
        return
    with sealed_on_failure(f):
        if split in f:
            del f[split]
        f.move(nxt, split)
        f.flush()


def _read_manifest(dataset: str, root: Path, allow_mismatch: bool) -> pd.DataFrame:
    table = load_manifest(dataset, root)
    if not allow_mismatch:
        validate_counts(get_spec(dataset), table)
    return table


def _extract_split(
    writer: SplitWriter,
    run: _SplitRun,
    rows: pd.DataFrame,
    root: Path,
    split: str,
    batch_size: int,
    skip_bad: bool,
    progress: ProgressFn | None,
    kill: Callable[[], None] | None,
    source: str | None = None,
) -> None:
    """Run the split's remaining batches; images unchanged in the ``source`` group are copied, not recomputed."""
    abs_paths = [root / p for p in rows["path"]]
    order, sizes = processing_order(abs_paths, run.prep)
    total = len(rows)
    done0 = writer.num_complete
    batches = make_batches(sizes, batch_size, start=done0)
    reuse = unchanged_images(writer.f, source, rows, root)[0] if source is not None else {}
    paths = rows["path"].to_numpy()
    if progress:
        progress(split, done0, total, 0.0)
    t0 = time.perf_counter()

    def load(b: Batch) -> _Loaded:
        todo = [i for i in order[b.start : b.stop] if paths[i] not in reuse]
        return _load_batch([abs_paths[i] for i in todo], run.prep, skip_bad)

    d, k, gd = writer.ds["local"].shape[1], writer.ds["grid"].shape[1], writer.ds["global"].shape[1]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for n, b in enumerate(batches):
            loaded = pending.result()
            pending = pool.submit(load, batches[n + 1]) if n + 1 < len(batches) else None
            idx = order[b.start : b.stop]
            computed = [i for i in idx if paths[i] not in reuse]
            if loaded.images is not None:
                feats = run.features(loaded.images)
                _check_finite(feats, [str(paths[computed[pos]]) for pos in loaded.kept], run.checkpoint)
            else:
                feats = (np.zeros((0, d), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, gd), np.float32), np.zeros((0, k, 2), np.int32))
            fresh = {computed[pos]: j for j, pos in enumerate(loaded.kept)}  # manifest row -> row of feats
            failed = {computed[pos]: reason for pos, reason in loaded.bad}
            records = {computed[pos]: rec for pos, rec in enumerate(loaded.files)}
            # the batch's written images in processing order, each from the network or the old group
            kept = [i for i in idx if i in fresh or (paths[i] in reuse and reuse[paths[i]].row is not None)]
            copied = [reuse[paths[i]].row for i in kept if i not in fresh]
            old = read_rows(writer.f, source, copied) if copied else None
            parts = _interleave(kept, fresh, feats, old)
            skipped = [(str(paths[i]), failed[i], records[i]) for i in idx if i in failed]
            skipped += [(str(paths[i]), reuse[paths[i]].reason, reuse[paths[i]].record) for i in idx if paths[i] in reuse and reuse[paths[i]].row is None]
            kept_arr = np.asarray(kept, np.int64)
            writer.append(
                processed=b.stop - b.start,
                paths=[str(paths[i]) for i in kept],
                pids=rows["pid"].to_numpy()[kept_arr],
                camids=rows["camid"].to_numpy()[kept_arr],
                manifest_index=kept_arr,
                grids=parts[4],
                local=parts[0],
                counts=parts[1],
                foreground=parts[2],
                global_features=parts[3],
                skipped=skipped,
                before_commit=kill,
                files=[records[i] if i in fresh else reuse[paths[i]].record for i in kept],
            )
            if progress:
                rate = (b.stop - done0) / max(time.perf_counter() - t0, 1e-9)
                progress(split, b.stop, total, rate)


def _check_finite(feats: tuple[np.ndarray, ...], paths: list[str], checkpoint: str | os.PathLike) -> None:
    """Refuse a batch whose features hold NaN or infinity (a damaged or diverged checkpoint), naming the first image."""
    local, counts, fg, glob, _ = feats
    bad = ~np.isfinite(glob).all(axis=1)
    per_location = ~(np.isfinite(local).all(axis=1) & np.isfinite(fg))
    if per_location.any():
        owner = np.repeat(np.arange(len(counts)), counts)
        bad[owner[per_location]] = True
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ReidEvalError(
            f"checkpoint {checkpoint} gives NaN or infinite features for {int(bad.sum())} image(s), first {paths[first]}; "
            "the checkpoint is damaged or its training diverged (nothing of this batch was written)"
        )


def _interleave(kept: list[int], fresh: dict[int, int], feats: tuple, old: tuple | None) -> tuple[np.ndarray, ...]:
    """(local, counts, foreground, global, grid) of the ``kept`` images in order, from ``feats`` (network) or ``old`` (copied)."""
    local, counts, fg, glob, grid = feats
    if old is None:  # everything came from the network, in order
        return local, counts, fg, glob, grid
    o_local, o_counts, o_fg, o_glob, o_grid = old
    off = np.concatenate([[0], np.cumsum(counts)])
    o_off = np.concatenate([[0], np.cumsum(o_counts)])
    pieces: list[tuple] = []
    c = 0
    for i in kept:
        if i in fresh:
            j = fresh[i]
            pieces.append((local[off[j] : off[j + 1]], counts[j], fg[off[j] : off[j + 1]], glob[j], grid[j]))
        else:
            pieces.append((o_local[o_off[c] : o_off[c + 1]], o_counts[c], o_fg[o_off[c] : o_off[c + 1]], o_glob[c], o_grid[c]))
            c += 1
    dim, levels = (local if len(local) else o_local).shape[1], (grid if len(grid) else o_grid).shape[1]
    if not pieces:
        return np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, dim), np.float32), np.zeros((0, levels, 2), np.int32)
    return (
        np.concatenate([p[0] for p in pieces]).astype(np.float32, copy=False),
        np.array([p[1] for p in pieces], np.int64),
        np.concatenate([p[2] for p in pieces]).astype(np.float32, copy=False),
        np.stack([p[3] for p in pieces]).astype(np.float32, copy=False),
        np.stack([p[4] for p in pieces]).astype(np.int32, copy=False),
    )


__all__ = [
    "Batch",
    "cache_settings",
    "extract_dataset",
    "file_record",
    "iter_cache_files",
    "make_batches",
    "processing_order",
    "resolve_device",
    "unchanged_images",
]
