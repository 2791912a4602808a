"""Builders shared by the report tests: hand-written results files and a small feature cache.

The cache is written with ``reid_eval.features.cache`` (its writer and
``write_distances``), so the report reads exactly what `extract` and `match` write.
No tests live here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from reid_eval.features.cache import SplitWriter, cache_key, cache_path, create_cache, write_distances

SHA = "0123456789abcdef" * 4


def write_result(
    results_dir: Path,
    dataset: str,
    metric: str,
    r1: float,
    mAP: float,
    *,
    cmc: list[float] | None = None,
    beta: float | None = 0.01,
    fuse: float | None = None,
    cache_file: Path | None = None,
    sha: str = SHA,
    num_query: int = 4,
) -> Path:
    """One results JSON as `reid-eval match` writes it (rates as fractions), named per the contract."""
    if cmc is None:
        cmc = [r1] + [min(1.0, r1 + 0.05 * k) for k in range(1, 20)]
    params = {"backend": "numpy", "weighted": metric == "fpr", "normalize": True, "cache_file": str(cache_file or "/nowhere/x.h5")}
    if beta is not None:
        params["beta"] = beta
    if fuse is not None:
        params["fuse"] = fuse
    data = {
        "dataset": dataset,
        "metric": metric,
        "cmc": cmc,
        "mAP": mAP,
        "mINP": mAP / 2,
        "ap_flavour": "standard",
        "num_query": num_query,
        "num_valid_query": num_query,
        "num_gallery": 6,
        "params": params,
        "checkpoint_sha256": sha,
        "created": "2026-11-24T05:00:00+00:00",
    }
    name = f"{dataset}__{metric}"
    if beta is not None and beta != 0.01:
        name += f"__beta{beta:g}"
    if fuse is not None:
        name += f"__fuse{fuse:g}"
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# Query 0..3 and gallery 0..5; pids chosen so that each query has matches.
Q_PIDS = np.array([1, 2, 3, 4])
G_PIDS = np.array([1, 2, 3, 4, 1, 2])
GRID = np.array([[3, 2], [2, 1]], dtype=np.int32)  # finest level 3x2 (6 cells), then 2x1


def foreground_values(n: int) -> np.ndarray:
    """[n, 8] float32: image i's 8 locations; finest-level cell j of image i holds (10*i + j) / 100."""
    fg = np.zeros((n, 8), dtype=np.float32)
    for i in range(n):
        fg[i, :6] = (10 * i + np.arange(6)) / 100
        fg[i, 6:] = 0.99
    return fg


def make_cache(tmp: Path, dataset: str = "partial_reid", *, missing_images: tuple[str, ...] = (), distances: dict | None = None) -> Path:
    """A complete little cache of ``dataset`` with images on disk, written by the features writer.

    ``distances``: {name: ([4, 6] array, params)}; by default 'fpr' (query i's
    true matches closest) and 'euclidean' (query 0's true matches far).
    """
    root = tmp / "images"
    settings = {"model": "test"}
    key = cache_key(dataset, SHA, settings, "m" * 64)
    path = cache_path(tmp / "cache", dataset, key)
    create_cache(
        path,
        {"dataset": dataset, "dataset_root": str(root), "checkpoint_sha256": SHA, "manifest_sha256": "m" * 64,
         "settings": json.dumps(settings), "cache_key": key},
    )
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "r+") as f:
        for split, pids, cam in (("query", Q_PIDS, 1), ("gallery", G_PIDS, 2)):
            n = len(pids)
            paths = [f"{split}/{pid:04d}_c{cam}_{i}.png" for i, pid in enumerate(pids)]
            for i, rel in enumerate(paths):
                if rel in missing_images:
                    continue
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((40, 20, 3), (200, 30 * i, 40), dtype=np.uint8)).save(root / rel)  # never grey
            writer = SplitWriter(f, split, n, 4, 2)
            writer.append(
                processed=n, paths=paths, pids=pids, camids=np.full(n, cam), manifest_index=np.arange(n),
                grids=np.repeat(GRID[None], n, axis=0), local=rng.normal(size=(8 * n, 4)).astype(np.float32),
                counts=np.full(n, 8), foreground=foreground_values(n).ravel(), global_features=np.ones((n, 4), np.float32),
            )
    if distances is None:
        good = 1.0 - 0.5 * (Q_PIDS[:, None] == G_PIDS[None, :]) + 0.01 * np.arange(6)[None, :]
        bad = good.copy()
        bad[0] = [0.9, 0.1, 0.2, 0.3, 0.95, 0.4]  # query 0 (pid 1): both matches last
        distances = {"fpr": (good, {"beta": 0.01, "weighted": True}), "euclidean": (bad, {"beta": None})}
    for name, (matrix, params) in distances.items():
        write_distances(path, name, np.asarray(matrix, np.float32), params)
    return path
