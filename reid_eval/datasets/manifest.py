"""Finding a dataset on disk, scanning it into a manifest, and checking its counts.

A manifest is a pandas DataFrame with one row per image:

- ``path`` (pandas' ``str`` dtype): the image's path relative to the dataset root, posix form;
- ``pid`` (int64): person id (distractor pids kept, junk pids left out);
- ``camid`` (int64): camera id, from the name or the split's fixed id;
- ``split`` (``str`` dtype): ``"train"``, ``"query"`` or ``"gallery"``;

ordered by split (train, query, gallery) and then by path, so the same tree
always gives the same table whatever order its files were created in.
Scanning checks the structure (root and split folders exist, every image name
parses); counts are compared with the published ones separately
(:func:`count_mismatches`, :func:`validate_counts`), because a partial copy is
still worth a manifest when the caller says so.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reid_eval.datasets.annotations import select_by_annotations
from reid_eval.datasets.spec import DatasetSpec, SplitSpec, get_spec
from reid_eval.errors import ReidEvalError

COLUMNS: tuple[str, ...] = ("path", "pid", "camid", "split")


@dataclass(frozen=True)
class SplitCount:
    """Counts of one split of a manifest: ``images`` (distractors included), ``identities`` (distractors excluded)."""

    images: int
    identities: int
    distractor_images: int = 0


@dataclass(frozen=True)
class CountMismatch:
    """A published count that the tree on disk does not reproduce."""

    split: str
    what: str  # "images" or "identities"
    expected: int
    found: int

    def __str__(self) -> str:
        return f"{self.split} {self.what} expected {self.expected} found {self.found}"


@dataclass(frozen=True)
class ScannedDataset:
    """The result of scanning a dataset root: the manifest and what was left out.

    ``split_folders`` maps each split to the folder used (relative to ``root``);
    ``junk_images`` counts, per split, images whose pid is a junk pid.
    """

    spec: DatasetSpec
    root: Path
    table: pd.DataFrame
    split_folders: dict[str, str] = field(default_factory=dict)
    junk_images: dict[str, int] = field(default_factory=dict)


def _holds_splits(spec: DatasetSpec, folder: Path) -> bool:
    return all(find_split_folder(split, folder) is not None for split in spec.splits)


def nested_roots(spec: DatasetSpec, folder: Path) -> list[Path]:
    """Folders directly inside ``folder`` that hold every split folder of ``spec``, sorted.

    An archive unpacked one level deeper than expected
    (``Partial-REID/Partial_REID/partial_body_images``) gives one.
    """
    try:
        children = sorted(c for c in Path(folder).iterdir() if c.is_dir() and not c.name.startswith("."))
    except OSError:
        return []
    return [c for c in children if _holds_splits(spec, c)]


def locate_dataset(name: str, data_root: Path) -> tuple[Path, str] | None:
    """The first of the spec's accepted root folders that exists under ``data_root``, with the name that matched.

    When that folder lacks the split folders but exactly one folder inside it
    holds them all (the dataset unpacked one level deeper), that one is
    returned, named ``<accepted>/<inner>``.
    """
    spec = get_spec(name)
    data_root = Path(data_root)
    for candidate in spec.roots:
        path = data_root / candidate
        if path.is_dir():
            if not _holds_splits(spec, path):
                inner = nested_roots(spec, path)
                if len(inner) == 1:
                    return inner[0], f"{candidate}/{inner[0].name}"
            return path, candidate
    return None


def check_data_root(data_root: Path) -> Path:
    """``data_root`` as a Path; ReidEvalError naming the option when it is not an existing folder."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise ReidEvalError(f"data root {data_root} is not a folder (--data-root / REID_EVAL_DATA_ROOT)")
    return data_root


def find_dataset_root(name: str, data_root: Path) -> Path:
    """The dataset's own folder under ``data_root``; ReidEvalError naming the folders looked for otherwise."""
    spec = get_spec(name)
    data_root = check_data_root(data_root)
    found = locate_dataset(name, data_root)
    if found is None:
        raise ReidEvalError(
            f"{name} not found under data root {data_root}: looked for {', '.join(spec.roots)} "
            f"(set --data-root, or --root to the dataset's folder)"
        )
    return found[0]


def find_split_folder(split: SplitSpec, root: Path) -> str | None:
    """The first of the split's accepted folders that exists under the dataset root, or None."""
    for folder in split.folders:
        if (Path(root) / folder).is_dir():
            return folder
    return None


def _split_folder(spec: DatasetSpec, split: SplitSpec, root: Path) -> str:
    folder = find_split_folder(split, root)
    if folder is not None:
        return folder
    tried = " or ".join(split.folders)
    files = [f for f in split.folders if (Path(root) / f).exists()]
    if files:
        raise ReidEvalError(f"{spec.name}: {split.name} split folder {Path(root) / files[0]} is a file, not a folder")
    inner = nested_roots(spec, root)
    hint = f"; the dataset is one level down: use --root {inner[0]}" if len(inner) == 1 else (
        f"; folders one level down hold it: {', '.join(str(p) for p in inner)} (choose one with --root)" if inner else "")
    raise ReidEvalError(f"{spec.name}: {split.name} split folder {tried} missing under {root}{hint}")


def _list_images(directory: Path, depth: int, extensions: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Relative path components of the image files at most ``depth`` levels below ``directory``.

    Hidden entries and files whose suffix is not an image extension are
    skipped; folders at the last level are not entered.
    """
    found: list[tuple[str, ...]] = []
    pending: list[tuple[Path, tuple[str, ...]]] = [(directory, ())]
    while pending:
        folder, prefix = pending.pop()
        try:
            with os.scandir(folder) as entries:
                listed = [(entry.name, entry.is_dir(), entry.is_file()) for entry in entries]
        except OSError as exc:
            raise ReidEvalError(f"cannot read directory {folder}: {exc.strerror or exc}") from None
        for name, is_dir, is_file in listed:
            if name.startswith("."):
                continue
            if is_dir:
                if len(prefix) + 1 < depth:
                    pending.append((folder / name, prefix + (name,)))
            elif is_file and os.path.splitext(name)[1][1:].lower() in extensions:
                found.append(prefix + (name,))
    return found


def scan_dataset(name: str, root: Path) -> ScannedDataset:
    """Scan the dataset ``name`` in its folder ``root`` into a manifest (see the module docstring).

    Raises ReidEvalError (one line, naming the folder or file) when the root
    or a split folder is missing, a folder cannot be read, a split holds no
    images, or an image's name does not fit the spec's naming scheme.
    """
    spec = get_spec(name)
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise ReidEvalError(f"{spec.name}: dataset root {root} {what} (--root)")
    scheme = spec.scheme
    paths: list[str] = []
    pids: list[int] = []
    camids: list[int] = []
    splits: list[str] = []
    split_folders: dict[str, str] = {}
    junk: dict[str, int] = {}
    for split in spec.splits:
        folder = _split_folder(spec, split, root)
        split_folders[split.name] = folder
        files = _list_images(root / folder, scheme.depth, spec.extensions)
        if not files:
            raise ReidEvalError(
                f"{spec.name}: {split.name} split folder {root / folder} holds no images "
                f"({', '.join('.' + ext for ext in spec.extensions)})"
            )
        # Sorting the relative posix paths fixes the order whatever the file system returns.
        rel_paths = [f"{folder}/{'/'.join(parts)}" for parts in files]
        order = sorted(range(len(files)), key=rel_paths.__getitem__)
        bad: list[str] = []
        junk[split.name] = 0
        for i in order:
            parsed = scheme.parse(files[i])
            if parsed is None:
                bad.append(rel_paths[i])
                continue
            pid, camid = parsed
            if split.cameras and camid not in split.cameras:
                continue  # another split's camera in a shared folder
            if pid in spec.junk_pids:
                junk[split.name] += 1
                continue
            paths.append(rel_paths[i])
            pids.append(pid)
            camids.append(camid if camid is not None else split.camid)
            splits.append(split.name)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ReidEvalError(
                f"{spec.name}: cannot read pid/camera from file name {root / bad[0]}{more}; "
                f"naming scheme {scheme.name!r} expects names like {scheme.example}"
            )
    table = pd.DataFrame(
        {
            "path": pd.Series(paths, dtype="str"),
            "pid": pd.Series(pids, dtype="int64"),
            "camid": pd.Series(camids, dtype="int64"),
            "split": pd.Series(splits, dtype="str"),
        }
    )
    if spec.annotations is not None:
        table = select_by_annotations(spec, root, table, split_folders)
    return ScannedDataset(spec=spec, root=root, table=table, split_folders=split_folders, junk_images=junk)


def load_manifest(name: str, root: Path) -> pd.DataFrame:
    """The manifest of dataset ``name`` in its folder ``root`` (columns path, pid, camid, split).

    Checks the structure and every file name; does not compare counts with the
    published ones (call :func:`validate_counts` for that).
    """
    return scan_dataset(name, root).table


def split_counts(spec: DatasetSpec, table: pd.DataFrame) -> dict[str, SplitCount]:
    """Images and identities of each of the spec's splits in a manifest, distractor pids not counted as identities."""
    counts: dict[str, SplitCount] = {}
    for split in spec.split_names:
        rows = table[table["split"] == split]
        distractor = rows["pid"].isin(list(spec.distractor_pids))
        counts[split] = SplitCount(
            images=int(len(rows)),
            identities=int(rows.loc[~distractor, "pid"].nunique()),
            distractor_images=int(distractor.sum()),
        )
    return counts


def count_mismatches(spec: DatasetSpec, table: pd.DataFrame) -> list[CountMismatch]:
    """Every published count that the manifest does not reproduce; empty when all match or none is published."""
    found = split_counts(spec, table)
    mismatches: list[CountMismatch] = []
    for split in spec.splits:
        if split.images is None or split.identities is None:
            continue
        have = found[split.name]
        if have.images != split.images:
            mismatches.append(CountMismatch(split.name, "images", split.images, have.images))
        if have.identities != split.identities:
            mismatches.append(CountMismatch(split.name, "identities", split.identities, have.identities))
    return mismatches


def describe_mismatches(spec: DatasetSpec, mismatches: list[CountMismatch]) -> str:
    """One line naming each differing count.

    E.g. ``market1501: counts differ from the published ones: gallery images expected 15913 found 15912``.
    """
    return f"{spec.name}: counts differ from the published ones: " + "; ".join(str(m) for m in mismatches)


def validate_counts(spec: DatasetSpec, table: pd.DataFrame) -> None:
    """ReidEvalError listing expected and found counts when the manifest differs from the published counts."""
    mismatches = count_mismatches(spec, table)
    if mismatches:
        raise ReidEvalError(describe_mismatches(spec, mismatches) + " (--allow-mismatch proceeds anyway)")


def manifest_csv(table: pd.DataFrame) -> str:
    """The manifest as CSV text: header ``path,pid,camid,split``, ``\\n`` line ends, no index."""
    buffer = io.StringIO()
    table.loc[:, list(COLUMNS)].to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def manifest_sha256(table: pd.DataFrame) -> str:
    """SHA-256 (hex) of :func:`manifest_csv`: equal for equal manifests, whatever machine wrote them."""
    return hashlib.sha256(manifest_csv(table).encode("utf-8")).hexdigest()


def write_manifest(table: pd.DataFrame, path: Path) -> Path:
    """Write the manifest CSV to ``path`` (parent folders created; replaced atomically) and return the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(manifest_csv(table), encoding="utf-8", newline="")
        os.replace(partial, path)
    except OSError as exc:
        raise ReidEvalError(f"cannot write manifest {path}: {exc.strerror or exc} (-o)") from None
    return path
