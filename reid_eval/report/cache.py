"""Selective reads of an HDF5 feature cache for the figures (DESIGN.md, HDF5 feature cache).

The figures need a split's paths, pids, camera ids, one image's foreground
probabilities and grid, and the stored distance matrices — never the local
features, which for Market-1501 are tens of GB. ``reid_eval.features.read_split``
loads a whole split, so the report opens the file itself and reads only these
datasets, by the layout DESIGN.md fixes: groups ``query``/``gallery`` with
``path``, ``pid``, ``camid``, ``offsets`` [n+1], ``grid`` [n, K, 2] ((h, w) per
pyramid level, (0, 0) for a skipped level), ``foreground`` [L]; root attribute
``dataset_root``; matrices under ``distances/<metric>`` with their parameters
as attributes. (``reid_eval.features.cache`` writes this layout.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from reid_eval.report.results import ResultRecord


@dataclass(frozen=True)
class SplitIndex:
    """Who is who in a split: ``paths`` (relative to the dataset root), ``pids``/``camids`` int64 [n]."""

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class ReportCache:
    """A read-only view of one cache file; use as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")

    def __enter__(self) -> "ReportCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def dataset_root(self) -> Path | None:
        """Absolute folder of the images, from the root attribute ``dataset_root`` (None if absent)."""
        root = self._file.attrs.get("dataset_root")
        return Path(_text(root)) if root is not None and _text(root) else None

    @property
    def dataset(self) -> str:
        return _text(self._file.attrs.get("dataset", ""))

    def has_split(self, split: str) -> bool:
        return split in self._file and "path" in self._file[split]

    def split(self, split: str) -> SplitIndex:
        """Paths, pids and camids of a split's committed rows (``num_written``; rows past it are an interrupted batch)."""
        group = self._file[split]
        n = int(group.attrs.get("num_written", group["path"].shape[0]))
        paths = [_text(p) for p in group["path"][:n]]
        return SplitIndex(
            paths=paths,
            pids=np.asarray(group["pid"][:n], dtype=np.int64),
            camids=np.asarray(group["camid"][:n], dtype=np.int64),
        )

    def foreground_map(self, split: str, index: int) -> np.ndarray | None:
        """The finest pyramid level's foreground probabilities of one image as an [h, w] float32 map.

        The finest level is the one with the most cells (kernel 2 in the
        paper's pyramid); cells are stored level by level, row-major. None when
        the cache has no foreground or grid for this split.
        """
        group = self._file[split]
        if "foreground" not in group or "grid" not in group or "offsets" not in group:
            return None
        start, stop = (int(v) for v in group["offsets"][index : index + 2])
        levels = np.asarray(group["grid"][index], dtype=np.int64).reshape(-1, 2)
        sizes = levels[:, 0] * levels[:, 1]
        if sizes.sum() != stop - start or sizes.max(initial=0) <= 0:
            raise ValueError(
                f"{self.path}: {split} image {index} has {stop - start} locations but its grid {levels.tolist()} gives {int(sizes.sum())}"
            )
        finest = int(np.argmax(sizes))
        first = start + int(sizes[:finest].sum())
        h, w = (int(v) for v in levels[finest])
        return np.asarray(group["foreground"][first : first + h * w], dtype=np.float32).reshape(h, w)

    def distance_names(self) -> list[str]:
        return sorted(self._file["distances"].keys()) if "distances" in self._file else []

    def distances_for(self, record: ResultRecord) -> tuple[np.ndarray | None, str]:
        """The [P, G] float32 matrix behind a results file, or (None, why not).

        `match` names the matrix like the results file without its dataset
        (``fpr``, ``fpr__beta0.1``, ``fpr+euclidean__fuse0.5``); that name is
        tried first, then ``<metric>`` and ``<metric>__*``. An entry is taken
        only when its ``beta`` and ``fuse`` attributes agree with the results
        file's (a later `match` may have replaced it).
        """
        stem = record.path.stem
        expected = stem[len(record.dataset) + 2 :] if stem.startswith(record.dataset + "__") else record.metric
        available = self.distance_names()
        names = [expected] if expected in available else []
        names += sorted(n for n in available if n not in names and (n == record.metric or n.startswith(record.metric + "__")))
        if not names:
            return None, f"{self.path} has no distances/{expected}"
        for name in names:
            dataset = self._file["distances"][name]
            if _params_agree(dict(dataset.attrs), record.params):
                return np.asarray(dataset[()], dtype=np.float32), ""
        return None, f"distances/{expected} in {self.path} was computed with other parameters than {record.path.name}"


def _params_agree(attrs: dict, params: dict) -> bool:
    for key in ("beta", "fuse"):
        if key in attrs and key in params and params[key] is not None:
            a, b = attrs[key], params[key]
            try:
                if not math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12):
                    return False
            except (TypeError, ValueError):
                if _text(a) != str(b):
                    return False
    return True
