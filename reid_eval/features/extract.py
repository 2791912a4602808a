"""Feature extraction into the HDF5 cache (resumable, keyed).

:func:`extract_dataset` reads a dataset's manifest, runs the FPR network over
the images of the requested splits in batches and appends every batch to the
cache file of :mod:`reid_eval.features.cache`. Images of one batch share one
size: with ``--resize fixed`` all do; with ``keep-aspect`` the split is first
ordered by target size (a stable sort of the manifest, from the image headers)
so equal sizes are batched together. The order is a pure function of the
manifest and the image headers, so a resumed run sees the same batches.

While the network runs on one batch a worker thread decodes the next one.
"""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from reid_eval.datasets import get_spec, load_manifest, manifest_sha256, validate_counts
from reid_eval.errors import ReidEvalError
from reid_eval.features.cache import (
    SPLITS,
    SplitWriter,
    cache_key,
    cache_path,
    create_cache,
    iter_cache_files,  # re-exported: it moved to the torch-free reading side
    open_cache,
)
from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch
from reid_eval.model import FPRNet, ModelConfig, load_checkpoint

#: Progress callback: (split, images processed so far, images in the split, images/s of this run).
ProgressFn = Callable[[str, int, int, float], None]

# Test hook: with REID_EVAL_TEST_KILL_AFTER_BATCHES=k the process SIGKILLs itself
# after writing the rows of its k-th batch and before committing them, the worst
# moment for a resume (see tests/test_extract_resume.py).
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
                    w, h = img.size
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


def _load_batch(paths: Sequence[Path], prep: Preprocessing, skip_bad: bool) -> _Loaded:
    """Decode, resize and normalise a batch (runs in the loader thread)."""
    arrays, kept, bad = [], [], []
    for pos, p in enumerate(paths):
        try:
            arrays.append(load_image_array(p, prep))
            kept.append(pos)
        except ReidEvalError as exc:
            if not skip_bad:
                raise
            bad.append((pos, str(exc)))
    return _Loaded(to_tensor_batch(arrays, prep) if arrays else None, kept, bad)


class _SplitRun:
    def __init__(self, model: FPRNet, prep: Preprocessing, device: torch.device):
        self.model, self.prep, self.device = model, prep, device

    def features(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(local [B·N, d], counts [B], foreground [B·N], global [B, d], grid [B, K, 2]) of a [B, 3, H, W] batch."""
        images = images.to(self.device, non_blocking=True)
        with torch.inference_mode():
            out = self.model(images)
        b, n, d = out.local.shape
        local = out.local.reshape(b * n, d).float().cpu().numpy()
        fg = out.foreground.reshape(b * n).float().cpu().numpy()
        glob = out.global_features.float().cpu().numpy()
        grid = np.broadcast_to(np.asarray(out.grid, np.int32), (b, len(out.grid), 2))
        return local, np.full(b, n, np.int64), fg, glob, grid


def _kill_hook() -> Callable[[], None] | None:
    raw = os.environ.get(_KILL_ENV)
    if not raw:
        return None
    left = [int(raw)]

    def hook() -> None:
        left[0] -= 1
        if left[0] == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def cache_settings(config: ModelConfig, prep: Preprocessing) -> dict:
    """The model and preprocessing settings stored (and hashed) in the cache."""
    return {"model": config.to_dict(), "preprocessing": prep.to_dict()}


def extract_dataset(
    dataset: str,
    root: str | os.PathLike,
    checkpoint: str | os.PathLike | None,
    cache_dir: str | os.PathLike,
    *,
    manifest: pd.DataFrame | None = None,
    splits: Sequence[str] = ("query", "gallery"),
    device: str = "auto",
    batch_size: int = 32,
    resize: str = "fixed",
    skip_bad: bool = False,
    allow_mismatch: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Fill the feature cache of ``dataset`` for ``splits``; returns the cache file.

    root: folder of the dataset's images (manifest paths are relative to it).
    manifest: the dataset's manifest; when None it is read with
        ``reid_eval.datasets.load_manifest`` and checked against the published
        counts unless ``allow_mismatch``.
    checkpoint: a reid-eval checkpoint; None is an error (features of a random
        network are never produced silently).
    A finished cache with the same key returns at once; an interrupted one
    continues after its last committed batch. Raises ReidEvalError on an
    unreadable image unless ``skip_bad`` (then it is listed in ``skipped``).
    """
    if checkpoint is None:
        raise ReidEvalError(
            "no --checkpoint given (or REID_EVAL_CHECKPOINT); write one with `reid-eval checkpoint init --out FILE` "
            "or `reid-eval checkpoint convert`"
        )
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ReidEvalError(f"--splits must name some of {', '.join(SPLITS)}, got {','.join(splits) or 'nothing'}")
    root = Path(root).resolve()
    if manifest is None:
        manifest = _read_manifest(dataset, root, allow_mismatch)
    empty = [s for s in splits if not (manifest["split"] == s).any()]
    if empty:
        raise ReidEvalError(f"--splits: dataset {dataset} has no {', '.join(empty)} images under {root}")
    dev = resolve_device(device)
    model, config, meta = load_checkpoint(checkpoint, map_location="cpu")
    prep = Preprocessing.for_model(config, resize)
    settings = cache_settings(config, prep)
    m_sha = manifest_sha256(manifest)
    key = cache_key(dataset, meta["sha256"], settings, m_sha)
    path = cache_path(cache_dir, dataset, key)
    if not path.exists():
        create_cache(
            path,
            {
                "cache_key": key,
                "dataset": dataset,
                "dataset_root": str(root),
                "checkpoint_sha256": meta["sha256"],
                "checkpoint_file": str(Path(checkpoint).resolve()),
                "manifest_sha256": m_sha,
                "settings": json.dumps(settings, sort_keys=True),
            },
        )
    with open_cache(path) as f:
        done = all(s in f and f[s].attrs["num_complete"] == f[s].attrs["num_total"] for s in splits)
    if done:  # a finished cache is never opened for writing
        if progress:
            for s in splits:
                n = int((manifest["split"] == s).sum())
                progress(s, n, n, 0.0)
        return path
    model = model.to(dev).eval()
    run = _SplitRun(model, prep, dev)
    kill = _kill_hook()
    f = open_cache(path, "r+")
    try:
        for split in splits:
            rows = manifest[manifest["split"] == split].reset_index(drop=True)
            writer = SplitWriter(f, split, len(rows), config.feature_dim, len(config.pyramid_kernels))
            if writer.is_complete:
                if progress:
                    progress(split, len(rows), len(rows), 0.0)
                continue
            _extract_split(writer, run, rows, root, split, batch_size, skip_bad, progress, kill)
    finally:
        f.close()
    return path


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
) -> None:
    abs_paths = [root / p for p in rows["path"]]
    order, sizes = processing_order(abs_paths, run.prep)
    total = len(rows)
    done0 = writer.num_complete
    batches = make_batches(sizes, batch_size, start=done0)
    if progress:
        progress(split, done0, total, 0.0)
    t0 = time.perf_counter()

    def load(b: Batch) -> _Loaded:
        return _load_batch([abs_paths[i] for i in order[b.start : b.stop]], run.prep, skip_bad)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for k, b in enumerate(batches):
            loaded = pending.result()
            pending = pool.submit(load, batches[k + 1]) if k + 1 < len(batches) else None
            idx = order[b.start : b.stop]
            kept = idx[loaded.kept]
            if loaded.images is not None:
                local, counts, fg, glob, grid = run.features(loaded.images)
            else:
                d = writer.g["local"].shape[1]
                local, counts, fg = np.zeros((0, d), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
                glob, grid = np.zeros((0, d), np.float32), np.zeros((0, writer.g["grid"].shape[1], 2), np.int32)
            writer.append(
                processed=b.stop - b.start,
                paths=[str(p) for p in rows["path"].to_numpy()[kept]],
                pids=rows["pid"].to_numpy()[kept],
                camids=rows["camid"].to_numpy()[kept],
                manifest_index=kept,
                grids=grid,
                local=local,
                counts=counts,
                foreground=fg,
                global_features=glob,
                skipped=[(str(rows["path"].iloc[idx[pos]]), reason) for pos, reason in loaded.bad],
                before_commit=kill,
            )
            if progress:
                rate = (b.stop - done0) / max(time.perf_counter() - t0, 1e-9)
                progress(split, b.stop, total, rate)


__all__ = [
    "Batch",
    "cache_settings",
    "extract_dataset",
    "iter_cache_files",
    "make_batches",
    "processing_order",
    "resolve_device",
]
