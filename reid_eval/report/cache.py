"""What the figures take from an HDF5 feature cache, on top of ``reid_eval.features``' selective readers.

The figures need a split's paths, pids and camera ids, one image's foreground
probabilities and the stored distance matrices — never the local features,
which for Market-1501 are tens of GB. The file layout is known only to
``reid_eval.features.cache``; this module adds what is specific to the
figures: the finest pyramid level as a map, and which stored matrix belongs
to which results file.
"""

from __future__ import annotations

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
    split_complete,
)
from reid_eval.experiments.record import MatchParams
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

    @property
    def checkpoint_file(self) -> Path | None:
        """The checkpoint file the features were extracted with, as recorded (None if absent or empty)."""
        path = str(self._attrs.get("checkpoint_file") or "")
        return Path(path) if path else None

    def has_split(self, split: str) -> bool:
        """Whether the split is present and complete."""
        return split_complete(self._file, split)

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

        The matrix is ``distances/<record.params.distance_name>``, taken only
        when the parameters stored with it have the same distance identity as
        the results file's (a later `match` may have replaced it).
        """
        name = record.params.distance_name
        stored = list_distances(self._file)
        if name not in stored:
            return None, f"{self.path} has no distances/{name}"
        # Keys the stored entry lacks (written by an older `match`) are taken as the results file's.
        known = {k: v for k, v in stored[name].items() if k in MatchParams.field_names()}
        if MatchParams.from_json({**record.params.to_json(), **known}).identity("distance") != record.params.identity("distance"):
            return None, f"distances/{name} in {self.path} was computed with other parameters than {record.path.name}"
        return np.asarray(read_distances(self._file, name)[0], dtype=np.float32), ""
