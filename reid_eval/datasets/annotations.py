"""Choosing each split's images by rules on a per-image annotation table.

Some datasets are one folder of crops with a table beside it rather than one
folder per split: PETS09-S2L1's ``annotations.csv`` gives every crop's pid,
frame, box and ``occluded_fraction``. Its spec names the table (top-level
``annotations``) and lets every split list the same folder; the split's own
keys then say which rows it keeps (see :class:`reid_eval.datasets.spec.SplitSpec`)::

    annotations = "annotations.csv"
    [splits.query]
    folders = ["crops"]
    where = { occluded_fraction = [0.2, 1.0] }   # inclusive ranges on numeric columns
    [splits.gallery]
    folders = ["crops"]
    where = { occluded_fraction = [0.0, 0.0] }
    frame_stride = 10                            # frames 10, 20, 30, ...
    min_frame_gap = 25                           # > 25 frames from every query of the same pid

The rules are applied to the manifest that the scan built, so the evaluator
sees an ordinary query/gallery manifest: a gallery image that is too close in
time to a query of its identity is not in the gallery at all (for every query
of that identity, not only the near one), which the Market-1501 protocol
needs no extra junk rule for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reid_eval.datasets.spec import DatasetSpec
from reid_eval.errors import ReidEvalError

#: Columns every annotation table has: the image's path below its split folder, and its pid.
KEY_COLUMNS: tuple[str, ...] = ("file", "pid")


def read_annotations(spec: DatasetSpec, root: Path) -> pd.DataFrame:
    """The spec's annotation table under the dataset ``root``, indexed by ``file``.

    Raises ReidEvalError naming the file when it is missing or unreadable,
    lacks a column the spec's rules use (``file``, ``pid``, each ``where``
    column, ``frame`` for strides and gaps), has a non-numeric value in one of
    them, or lists a file twice.
    """
    if spec.annotations is None:
        raise ValueError(f"dataset {spec.name} has no annotations table")
    path = Path(root) / spec.annotations
    try:
        table = pd.read_csv(path, dtype={"file": str})
    except FileNotFoundError:
        raise ReidEvalError(f"{spec.name}: annotation table {path} is missing") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ReidEvalError(f"{spec.name}: cannot read annotation table {path}: {exc}") from None
    needed = list(KEY_COLUMNS)
    for split in spec.splits:
        needed += [column for column, _low, _high in split.where]
        if split.frame_stride is not None or split.min_frame_gap is not None:
            needed.append("frame")
    missing = sorted(set(needed) - set(table.columns))
    if missing:
        raise ReidEvalError(f"{spec.name}: annotation table {path} lacks column(s) {', '.join(missing)}")
    for column in sorted(set(needed) - {"file"}):
        if not pd.api.types.is_numeric_dtype(table[column]) or table[column].isna().any():
            raise ReidEvalError(f"{spec.name}: annotation table {path}: column {column} must be numbers in every row")
    duplicated = table["file"][table["file"].duplicated()]
    if len(duplicated):
        raise ReidEvalError(f"{spec.name}: annotation table {path} lists {duplicated.iloc[0]} twice")
    return table.set_index("file")


def select_by_annotations(
    spec: DatasetSpec, root: Path, table: pd.DataFrame, split_folders: dict[str, str]
) -> pd.DataFrame:
    """The rows of a scanned manifest that each split's annotation rules keep, in their order.

    table: the manifest as scanned (columns path, pid, camid, split; every
        image of a split's folder listed under that split).
    split_folders: the folder each split was scanned from, relative to ``root``.
    Splits are selected in the spec's order (train, query, gallery), so a
    gallery ``min_frame_gap`` is measured to the query images kept. Raises
    ReidEvalError when a listed image has no annotation row, its pid differs
    from its name's, or a split keeps no image.
    """
    annotations = read_annotations(spec, root)
    where = Path(root) / str(spec.annotations)
    keep = np.zeros(len(table), dtype=bool)
    query_frames: dict[int, np.ndarray] = {}
    for split in spec.splits:
        rows = np.flatnonzero((table["split"] == split.name).to_numpy())
        prefix = split_folders[split.name] + "/"
        files = [path[len(prefix):] for path in table["path"].to_numpy()[rows]]
        missing = [f for f in files if f not in annotations.index]
        if missing:
            raise ReidEvalError(
                f"{spec.name}: {prefix}{missing[0]} has no row in {where}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
        info = annotations.loc[files]
        pids = table["pid"].to_numpy()[rows]
        wrong = np.flatnonzero(info["pid"].to_numpy() != pids)
        if len(wrong):
            i = wrong[0]
            raise ReidEvalError(
                f"{spec.name}: {where} gives {files[i]} pid {info['pid'].iloc[i]}, its name says {pids[i]}"
            )
        chosen = np.ones(len(rows), dtype=bool)
        for column, low, high in split.where:
            values = info[column].to_numpy(dtype=np.float64)
            chosen &= (values >= low) & (values <= high)
        if split.frame_stride is not None:
            chosen &= info["frame"].to_numpy() % split.frame_stride == 0
        if split.min_frame_gap is not None:
            chosen &= _far_from_queries(pids, info["frame"].to_numpy(), query_frames, split.min_frame_gap)
        if not chosen.any():
            raise ReidEvalError(f"{spec.name}: the {split.name} rules of {spec.source} keep no image of {where}")
        keep[rows[chosen]] = True
        if split.name == "query" and "frame" in annotations.columns:
            kept = info[chosen]
            query_frames = {int(pid): group.to_numpy() for pid, group in kept.groupby("pid")["frame"]}
    return table[keep].reset_index(drop=True)


def _far_from_queries(
    pids: np.ndarray, frames: np.ndarray, query_frames: dict[int, np.ndarray], gap: int
) -> np.ndarray:
    """[n] bool: True where ``frames[i]`` is more than ``gap`` frames from every query frame of ``pids[i]``."""
    far = np.ones(len(pids), dtype=bool)
    for i, (pid, frame) in enumerate(zip(pids, frames)):
        near = query_frames.get(int(pid))
        if near is not None and np.abs(near - frame).min() <= gap:
            far[i] = False
    return far
