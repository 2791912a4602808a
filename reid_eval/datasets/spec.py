"""Dataset protocol specs: one TOML file per dataset in the ``data_manifests`` package.

A spec says where a dataset is looked for (accepted root folder names under
the data root), which folder holds each split, how pid and camera come from a
path (a naming scheme of :mod:`reid_eval.datasets.naming`), which files count
as images, which pids are junk (left out) or distractors (kept, not counted as
identities), and the published image and identity counts of each split.
Adding a dataset means adding a spec file; see ``data_manifests/market1501.toml``
for the commented format. A dataset that is one folder of crops with a table
beside it (``annotations``) picks each split's images by rules on that table
(``where``, ``frame_stride``, ``min_frame_gap``; applied by
:mod:`reid_eval.datasets.annotations`, example ``data_manifests/pets09_s2l1.toml``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from reid_eval.datasets.naming import NamingScheme, get_scheme
from reid_eval.errors import ReidEvalError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SPEC_PACKAGE = "reid_eval.manifests"
SPLIT_ORDER: tuple[str, ...] = ("train", "query", "gallery")
KINDS: tuple[str, ...] = ("holistic", "occluded")

_TOP_KEYS = {
    "name", "title", "kind", "roots", "naming", "extensions",
    "junk_pids", "distractor_pids", "single_gallery_shot", "splits", "notes", "annotations",
}
_SPLIT_KEYS = {"folders", "images", "identities", "camid", "cameras", "notes"}
# Keys that select a split's images from the spec's annotations table.
_SELECTION_KEYS = {"where", "frame_stride", "min_frame_gap"}


@dataclass(frozen=True)
class SplitSpec:
    """One split of a dataset.

    ``folders``: accepted folder paths relative to the dataset root (posix,
    may contain ``/``), tried in order, the first existing one is used.
    ``images`` / ``identities``: published counts (None when unpublished);
    images include distractors and exclude junk, identities exclude the
    distractor pids. ``camid``: the fixed camera id of every image of this
    split, set exactly when the naming scheme carries no camera. ``cameras``:
    when not empty, the split keeps only the images of these cameras (from
    the names), so that query and gallery can share one folder, one camera
    each; empty keeps every camera.

    Only with the dataset's ``annotations`` table (see
    :mod:`reid_eval.datasets.annotations`): ``where`` keeps the images whose
    numeric annotation ``column`` lies in ``[low, high]`` (inclusive), for
    every ``(column, low, high)``; ``frame_stride`` keeps the images whose
    ``frame`` is a multiple of it; ``min_frame_gap`` (gallery only) keeps an
    image only when its ``frame`` is more than this many frames away from
    every query image of the same pid.
    """

    name: str
    folders: tuple[str, ...]
    images: int | None = None
    identities: int | None = None
    camid: int | None = None
    cameras: tuple[int, ...] = ()
    where: tuple[tuple[str, float, float], ...] = ()
    frame_stride: int | None = None
    min_frame_gap: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's protocol, read from ``data_manifests/<name>.toml``.

    ``kind`` is ``"holistic"`` (Market-1501, DukeMTMC-reID, CUHK03: the paper's
    Table 4) or ``"occluded"`` (Partial-REID, Partial-iLIDS, Occluded-REID,
    the synthetic set: Table 3). ``roots`` are folder paths relative to the
    data root, tried in order. ``extensions`` are lower-case suffixes without
    the dot, matched case-insensitively. ``single_gallery_shot`` is true only
    for CUHK03's classic protocol. ``annotations``: path (relative to the
    dataset root) of a CSV with one row per image (columns ``file``, the path
    below the split folder, and ``pid``, plus those the splits select on), or
    None.
    """

    name: str
    title: str
    kind: str
    roots: tuple[str, ...]
    naming: str
    extensions: tuple[str, ...]
    junk_pids: frozenset[int]
    distractor_pids: frozenset[int]
    single_gallery_shot: bool
    splits: tuple[SplitSpec, ...]
    source: str
    annotations: str | None = None

    @property
    def scheme(self) -> NamingScheme:
        return get_scheme(self.naming)

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(split.name for split in self.splits)

    def split(self, name: str) -> SplitSpec:
        for split in self.splits:
            if split.name == name:
                return split
        raise ValueError(f"dataset {self.name} has no split {name!r}; it has {', '.join(self.split_names)}")

    @property
    def has_published_counts(self) -> bool:
        return any(split.images is not None for split in self.splits)

    @property
    def published_counts(self) -> dict[str, tuple[int, int]]:
        """``{split: (images, identities)}`` for the splits with published counts."""
        return {
            split.name: (split.images, split.identities)
            for split in self.splits
            if split.images is not None and split.identities is not None
        }


def _fail(source: str, message: str) -> ReidEvalError:
    return ReidEvalError(f"dataset spec {source}: {message}")


def _str_list(source: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, f"{key} must be a non-empty list of strings")
    return tuple(value)


def _int_list(source: str, key: str, value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _fail(source, f"{key} must be a list of integers")
    return frozenset(value)


def _optional_count(source: str, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(source, f"{key} must be a non-negative integer")
    return value


def _positive_int(source: str, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(source, f"{key} must be a positive integer")
    return value


def _parse_ranges(source: str, key: str, value: Any) -> tuple[tuple[str, float, float], ...]:
    """``{column = [low, high], ...}`` as sorted ``(column, low, high)`` triples."""
    if not isinstance(value, dict) or not value:
        raise _fail(source, f"{key} must be a table such as {{ occluded_fraction = [0.2, 1.0] }}")
    ranges = []
    for column, bounds in sorted(value.items()):
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or bounds[0] > bounds[1]):
            raise _fail(source, f"{key}.{column} must be [low, high] with low <= high")
        ranges.append((column, float(bounds[0]), float(bounds[1])))
    return tuple(ranges)


def _parse_split(source: str, name: str, table: Any, gives_camera: bool, annotated: bool) -> SplitSpec:
    where = f"splits.{name}"
    if not isinstance(table, dict):
        raise _fail(source, f"{where} must be a table")
    selection_keys = set(table) & _SELECTION_KEYS
    if selection_keys and not annotated:
        raise _fail(source, f"{where}.{min(selection_keys)} needs an annotations table (top-level key annotations)")
    if "min_frame_gap" in table and name != "gallery":
        raise _fail(source, f"{where}.min_frame_gap is for the gallery (a distance to the query images)")
    unknown = set(table) - _SPLIT_KEYS - _SELECTION_KEYS
    if unknown:
        raise _fail(source, f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")
    if "folders" not in table:
        raise _fail(source, f"{where} needs folders")
    folders = _str_list(source, f"{where}.folders", table["folders"])
    for folder in folders:
        if folder.startswith("/") or ".." in Path(folder).parts:
            raise _fail(source, f"{where}.folders must be relative paths inside the dataset root, not {folder!r}")
    images = _optional_count(source, f"{where}.images", table.get("images"))
    identities = _optional_count(source, f"{where}.identities", table.get("identities"))
    if (images is None) != (identities is None):
        raise _fail(source, f"{where} needs both images and identities, or neither")
    camid = table.get("camid")
    if gives_camera and camid is not None:
        raise _fail(source, f"{where}.camid is set but the naming scheme already gives a camera")
    if not gives_camera and (not isinstance(camid, int) or isinstance(camid, bool)):
        raise _fail(source, f"{where}.camid (an integer) is needed: the naming scheme gives no camera")
    cameras: tuple[int, ...] = ()
    if "cameras" in table:
        if not gives_camera:
            raise _fail(source, f"{where}.cameras needs a naming scheme that gives a camera")
        cameras = tuple(sorted(_int_list(source, f"{where}.cameras", table["cameras"])))
        if not cameras:
            raise _fail(source, f"{where}.cameras must list at least one camera")
    return SplitSpec(
        name=name, folders=folders, images=images, identities=identities, camid=camid, cameras=cameras,
        where=_parse_ranges(source, f"{where}.where", table["where"]) if "where" in table else (),
        frame_stride=_positive_int(source, f"{where}.frame_stride", table.get("frame_stride")),
        min_frame_gap=_positive_int(source, f"{where}.min_frame_gap", table.get("min_frame_gap")),
    )


def parse_spec(data: dict[str, Any], source: str) -> DatasetSpec:
    """Validate a spec's TOML table and build the spec; ReidEvalError naming ``source`` on any fault."""
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(source, f"unknown key(s): {', '.join(sorted(unknown))}")
    for key in ("name", "kind", "roots", "naming", "extensions", "splits"):
        if key not in data:
            raise _fail(source, f"missing key {key!r}")
    name = data["name"]
    if not isinstance(name, str) or not name.isidentifier():
        raise _fail(source, "name must be an identifier such as market1501")
    if data["kind"] not in KINDS:
        raise _fail(source, f"kind must be one of {', '.join(KINDS)}, not {data['kind']!r}")
    try:
        scheme = get_scheme(data["naming"])
    except ValueError as exc:
        raise _fail(source, str(exc)) from None
    splits_table = data["splits"]
    if not isinstance(splits_table, dict):
        raise _fail(source, "splits must be a table")
    unknown_splits = set(splits_table) - set(SPLIT_ORDER)
    if unknown_splits:
        raise _fail(
            source, f"unknown split(s) {', '.join(sorted(unknown_splits))}; splits are {', '.join(SPLIT_ORDER)}"
        )
    for needed in ("query", "gallery"):
        if needed not in splits_table:
            raise _fail(source, f"splits.{needed} is missing")
    annotations = data.get("annotations")
    if annotations is not None and (
        not isinstance(annotations, str) or not annotations
        or annotations.startswith("/") or ".." in Path(annotations).parts
    ):
        raise _fail(source, "annotations must be a relative path inside the dataset root, such as annotations.csv")
    splits = tuple(
        _parse_split(source, split, splits_table[split], scheme.gives_camera, annotations is not None)
        for split in SPLIT_ORDER
        if split in splits_table
    )
    by_name = {split.name: split for split in splits}
    if not scheme.gives_camera:
        # The same-camera rule of the Market protocol must remove nothing here.
        if by_name["query"].camid == by_name["gallery"].camid:
            raise _fail(source, "splits.query.camid and splits.gallery.camid must differ")
    elif set(by_name["query"].cameras) & set(by_name["gallery"].cameras):
        # Query and gallery filmed by one camera would be removed whole by the same-camera rule.
        raise _fail(source, "splits.query.cameras and splits.gallery.cameras must not share a camera")
    extensions = tuple(ext.lower().lstrip(".") for ext in _str_list(source, "extensions", data["extensions"]))
    single_gallery_shot = data.get("single_gallery_shot", False)
    if not isinstance(single_gallery_shot, bool):
        raise _fail(source, "single_gallery_shot must be true or false")
    return DatasetSpec(
        name=name,
        title=str(data.get("title", name)),
        kind=data["kind"],
        roots=_str_list(source, "roots", data["roots"]),
        naming=scheme.name,
        extensions=extensions,
        junk_pids=_int_list(source, "junk_pids", data.get("junk_pids", [])),
        distractor_pids=_int_list(source, "distractor_pids", data.get("distractor_pids", [])),
        single_gallery_shot=single_gallery_shot,
        splits=splits,
        source=source,
        annotations=annotations,
    )


def _spec_from_text(text: str, file_name: str) -> DatasetSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(file_name, f"not valid TOML ({exc})") from None
    spec = parse_spec(data, file_name)
    if spec.name != Path(file_name).stem:
        raise _fail(file_name, f"name {spec.name!r} differs from the file name")
    return spec


def load_spec_file(path: Path) -> DatasetSpec:
    """Read and validate one spec file (e.g. a new one before adding it); its ``name`` must equal the file's stem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReidEvalError(f"cannot read dataset spec {path}: {exc.strerror or exc}") from None
    return _spec_from_text(text, path.name)


def _spec_files() -> dict[str, Any]:
    return {
        entry.name[: -len(".toml")]: entry
        for entry in resources.files(SPEC_PACKAGE).iterdir()
        if entry.name.endswith(".toml") and not entry.name.startswith(".")
    }


def known_datasets() -> list[str]:
    """Names of the datasets with a spec in ``data_manifests/``, sorted."""
    return sorted(_spec_files())


@functools.lru_cache(maxsize=None)
def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; ReidEvalError listing the known names if there is none."""
    files = _spec_files()
    if name not in files:
        raise ReidEvalError(f"unknown dataset {name!r} (--dataset); known datasets: {', '.join(sorted(files))}")
    entry = files[name]
    return _spec_from_text(entry.read_text(encoding="utf-8"), entry.name)
