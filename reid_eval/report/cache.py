"""What the figures take from an HDF5 feature cache, on top of ``reid_eval.features``' selective readers.

The figures need a split's paths, pids and camera ids, one image's foreground
probabilities and the stored distance matrices — never the local features,
which for Market-1501 are tens of GB. The file layout is known only to
``reid_eval.features.cache``; this module adds what is specific to the
figures: the finest pyramid level as a map, and which stored matrix belongs
to which results file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from reid_eval.features import (
    SplitIndex,
    list_distances,
    open_cache,
    read_attrs,
    read_distances,
    read_image_foreground,
    read_split_index,
    split_status,
)
from reid_eval.report.results import ResultRecord

__all__ = ["ReportCache", "SplitIndex"]


class ReportCache:
    """A read-only view of one cache file, kept open for the many small reads of a figure; use as a context manager.

    Raises ReidEvalError naming the file when it is absent, damaged or altered (see ``open_cache``).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open_cache(self.path)
        self._attrs = read_attrs(self._file)

    def __enter__(self) -> "ReportCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def dataset_root(self) -> Path | None:
        """Absolute folder of the images, from the root attribute ``dataset_root`` (None if absent or empty)."""
        root = str(self._attrs.get("dataset_root") or "")
        return Path(root) if root else None

    @property
    def dataset(self) -> str:
        return str(self._attrs.get("dataset", ""))

    def has_split(self, split: str) -> bool:
        return split in split_status(self._file)

    def split(self, split: str) -> SplitIndex:
        """Paths, pids and camids of a split's committed rows (an unfinished split gives the rows written so far)."""
        return read_split_index(self._file, split, allow_incomplete=True)

    def foreground_map(self, split: str, index: int) -> np.ndarray:
        """The finest pyramid level's foreground probabilities of one image as an [h, w] float32 map.

        The finest level is the one with the most cells (kernel 2 in the
        paper's pyramid); cells are stored level by level, row-major.
        """
        foreground, grid = read_image_foreground(self._file, split, index)
        sizes = grid[:, 0].astype(np.int64) * grid[:, 1]
        if sizes.max(initial=0) <= 0:
            raise ValueError(f"{self.path}: {split} image {index} has no pyramid level (grid {grid.tolist()})")
        finest = int(np.argmax(sizes))
        first = int(sizes[:finest].sum())
        h, w = (int(v) for v in grid[finest])
        return foreground[first : first + h * w].reshape(h, w)

    def distance_names(self) -> list[str]:
        return list(list_distances(self._file))

    def distances_for(self, record: ResultRecord) -> tuple[np.ndarray | None, str]:
        """The [P, G] float32 matrix behind a results file, or (None, why not).

        `match` records the matrix's name in the results as
        ``params["distance_name"]``; for results without it the name is the
        file stem without its dataset (``fpr``, ``fpr__beta0.1``,
        ``fpr+euclidean__fuse0.5``). That name is tried first, then
        ``<metric>`` and ``<metric>__*``. An entry is taken only when its
        ``beta`` and ``fuse`` parameters agree with the results file's (a later
        `match` may have replaced it).
        """
        stem = record.path.stem
        expected = record.params.get("distance_name") or (
            stem[len(record.dataset) + 2 :] if stem.startswith(record.dataset + "__") else record.metric
        )
        stored = list_distances(self._file)
        names = [expected] if expected in stored else []
        names += [n for n in stored if n not in names and (n == record.metric or n.startswith(record.metric + "__"))]
        if not names:
            return None, f"{self.path} has no distances/{expected}"
        for name in names:
            if _params_agree(stored[name], record.params):
                return np.asarray(read_distances(self._file, name)[0], dtype=np.float32), ""
        return None, f"distances/{expected} in {self.path} was computed with other parameters than {record.path.name}"


def _params_agree(stored: dict, params: dict) -> bool:
    """Whether a stored matrix's ``beta`` and ``fuse`` equal the results file's (where both are set)."""
    for key in ("beta", "fuse"):
        if key in stored and key in params and params[key] is not None:
            a, b = stored[key], params[key]
            try:
                if not math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12):
                    return False
            except (TypeError, ValueError):
                if str(a) != str(b):
                    return False
    return True
