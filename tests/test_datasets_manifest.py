"""Scanning dataset trees into manifests, count validation, and the `datasets` / `manifest` commands.

The trees are built from empty files with the real names, folder names and
(for the six benchmark datasets) the real published counts; DukeMTMC-reID's
and CUHK03-NP's image listings are served from memory (see ``disk_tree``).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from reid_eval_cli.main import main
from reid_eval.datasets import (
    count_mismatches,
    find_dataset_root,
    get_spec,
    known_datasets,
    load_manifest,
    locate_dataset,
    manifest_csv,
    manifest_sha256,
    scan_dataset,
    split_counts,
    validate_counts,
)
from reid_eval.datasets import manifest as manifest_module
from reid_eval.errors import ReidEvalError


def touch_all(root: Path, rel_paths: list[str]) -> None:
    """Create empty files (and their folders) at ``rel_paths`` under ``root``, in the given order."""
    made: set[Path] = set()
    for rel in rel_paths:
        path = root / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, "wb"):
            pass


def spread(n_images: int, pids: list[int]) -> list[int]:
    """``n_images`` pids cycling through ``pids``, so every pid gets at least one image when n >= len(pids)."""
    return [pids[i % len(pids)] for i in range(n_images)]


MARKET_JUNK = 40


def market_files() -> list[str]:
    """Market-1501 with the published counts: 751 train / 750 test ids, 2,793 distractors, some junk."""
    train_pids, test_pids = list(range(1, 752)), list(range(752, 1502))
    files = [f"bounding_box_train/{p:04d}_c{1 + i % 6}s1_{i:06d}_00.jpg" for i, p in enumerate(spread(12936, train_pids))]
    files += [f"query/{p:04d}_c{1 + i % 6}s2_{i:06d}_00.jpg" for i, p in enumerate(spread(3368, test_pids))]
    files += [f"bounding_box_test/{p:04d}_c{1 + i % 6}s3_{i:06d}_01.jpg" for i, p in enumerate(spread(15913 - 2793, test_pids))]
    files += [f"bounding_box_test/0000_c{1 + i % 6}s4_{i:06d}_00.jpg" for i in range(2793)]
    files += [f"bounding_box_test/-1_c{1 + i % 6}s5_{i:06d}_00.jpg" for i in range(MARKET_JUNK)]
    return files


def duke_files() -> list[str]:
    train, test, extra = list(range(1, 703)), list(range(703, 1405)), list(range(1405, 1813))
    files = [f"bounding_box_train/{p:04d}_c{1 + i % 8}_f{i:07d}.jpg" for i, p in enumerate(spread(16522, train))]
    files += [f"query/{p:04d}_c{1 + i % 8}_f{i:07d}.jpg" for i, p in enumerate(spread(2228, test))]
    files += [f"bounding_box_test/{p:04d}_c{1 + i % 8}_f{i:07d}.jpg" for i, p in enumerate(spread(17661, test + extra))]
    return files


def cuhk03_files(variant: str, n_train: int, n_gallery: int) -> list[str]:
    train, test = list(range(1, 768)), list(range(768, 1468))
    files = [f"{variant}/bounding_box_train/{p:04d}_c{1 + i % 2}_{i}.png" for i, p in enumerate(spread(n_train, train))]
    files += [f"{variant}/query/{p:04d}_c{1 + i % 2}_{i}.png" for i, p in enumerate(spread(1400, test))]
    files += [f"{variant}/bounding_box_test/{p:04d}_c{1 + i % 2}_{i}.png" for i, p in enumerate(spread(n_gallery, test))]
    return files


def partial_reid_files() -> list[str]:
    return [f"{folder}/{p:03d}_{k:02d}.jpg"
            for folder in ("partial_body_images", "occluded_body_images", "whole_body_images")
            for p in range(1, 61) for k in range(1, 6)]


def partial_ilids_files() -> list[str]:
    return [f"{folder}/{p:03d}.jpg" for folder in ("Probe", "Gallery") for p in range(1, 120)]


def occluded_reid_files() -> list[str]:
    return [f"{folder}/{p:03d}/{p:03d}_{k:02d}.tif"
            for folder in ("occluded_body_images", "whole_body_images")
            for p in range(1, 201) for k in range(1, 6)]


# dataset -> (folder under the data root, the dataset's files at the published counts)
REAL_TREES = {
    "market1501": ("Market-1501-v15.09.15", market_files),
    "dukemtmc_reid": ("DukeMTMC-reID", duke_files),
    "cuhk03_np": ("cuhk03-np", lambda: cuhk03_files("detected", 7365, 5332) + cuhk03_files("labeled", 7368, 5328)),
    "partial_reid": ("Partial-REID", partial_reid_files),
    "partial_ilids": ("Partial_iLIDS", partial_ilids_files),
    "occluded_reid": ("Occluded_REID", occluded_reid_files),
}
# Written as real (empty) files. DukeMTMC-reID and CUHK03-NP would add some
# 64,000 files, which on a shared, busy disk takes tens of seconds; their split
# folders are real but their listings are served from memory (see `data_root`),
# so everything after the directory listing runs as on disk.
ON_DISK = ("market1501", "partial_reid", "partial_ilids", "occluded_reid")


@pytest.fixture(scope="module")
def disk_tree(tmp_path_factory) -> Iterator[tuple[Path, dict[Path, list[tuple[str, ...]]]]]:
    """A data root with the six benchmark datasets at their published sizes, and the in-memory listings."""
    # A RAM-backed folder where there is one: creating ~40,000 files on a busy
    # shared disk takes ten times longer.
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="reid-eval-test-") as folder:
            yield _build_tree(Path(folder))
    else:
        yield _build_tree(tmp_path_factory.mktemp("data"))


def _build_tree(root: Path) -> tuple[Path, dict[Path, list[tuple[str, ...]]]]:
    listings: dict[Path, list[tuple[str, ...]]] = {}
    for name, (folder, files) in REAL_TREES.items():
        if name in ON_DISK:
            touch_all(root / folder, files())
            continue
        for rel in files():
            split_dir, _, file_name = rel.rpartition("/")
            listings.setdefault(root / folder / split_dir, []).append((file_name,))
    for split_dir in listings:
        split_dir.mkdir(parents=True)
    # What the official Market archive holds beside the images: never part of the manifest.
    touch_all(root / "Market-1501-v15.09.15", ["bounding_box_test/Thumbs.db", "query/Thumbs.db", "readme.txt",
                                               "gt_bbox/0001_c1s1_001051_00.jpg", "query/.0001_c1s1_999999_00.jpg"])
    return root, listings


@pytest.fixture
def data_root(disk_tree, monkeypatch) -> Path:
    """The data root of ``disk_tree`` with the in-memory listings in place."""
    root, listings = disk_tree
    real_list_images = manifest_module._list_images

    def list_images(directory, depth, extensions):
        if Path(directory) in listings:
            return list(listings[Path(directory)])
        return real_list_images(directory, depth, extensions)

    monkeypatch.setattr(manifest_module, "_list_images", list_images)
    return root


@pytest.mark.parametrize("name", ["market1501", "dukemtmc_reid", "cuhk03_np", "cuhk03_np_labeled",
                                  "partial_reid", "partial_ilids", "occluded_reid"])
def test_published_sized_trees_validate(data_root, name):
    spec = get_spec(name)
    table = load_manifest(name, find_dataset_root(name, data_root))
    assert count_mismatches(spec, table) == []
    validate_counts(spec, table)
    counts = split_counts(spec, table)
    assert {s: (c.images, c.identities) for s, c in counts.items()} == spec.published_counts
    assert list(table.columns) == ["path", "pid", "camid", "split"]
    assert pd.api.types.is_string_dtype(table["path"]) and pd.api.types.is_string_dtype(table["split"])
    assert str(table["pid"].dtype) == str(table["camid"].dtype) == "int64"


def test_market_junk_left_out_and_distractors_kept(data_root):
    scan = scan_dataset("market1501", data_root / "Market-1501-v15.09.15")
    table = scan.table
    assert (table["pid"] == -1).sum() == 0
    assert scan.junk_images == {"train": 0, "query": 0, "gallery": MARKET_JUNK}
    distractors = table[table["pid"] == 0]
    assert len(distractors) == 2793 and set(distractors["split"]) == {"gallery"}
    assert split_counts(get_spec("market1501"), table)["gallery"].distractor_images == 2793
    assert not table["path"].str.contains("Thumbs|readme|gt_bbox|/\\.", regex=True).any()
    assert table["split"].drop_duplicates().tolist() == ["train", "query", "gallery"]


def test_cuhk03_variants_share_a_root_and_differ_in_subfolder(data_root):
    root = find_dataset_root("cuhk03_np", data_root)
    assert root == find_dataset_root("cuhk03_np_labeled", data_root) == data_root / "cuhk03-np"
    detected, labeled = load_manifest("cuhk03_np", root), load_manifest("cuhk03_np_labeled", root)
    assert detected["path"].str.startswith("detected/").all() and labeled["path"].str.startswith("labeled/").all()


def test_partial_reid_prefers_partial_body_images_as_probes(data_root):
    scan = scan_dataset("partial_reid", data_root / "Partial-REID")
    assert scan.split_folders == {"query": "partial_body_images", "gallery": "whole_body_images"}


def hand_built_market(root: Path) -> None:
    touch_all(root, [
        "bounding_box_train/0002_c1s1_000451_03.jpg",
        "bounding_box_train/0007_c2s3_070952_01.JPG",
        "bounding_box_train/Thumbs.db",
        "bounding_box_train/notes.txt",
        "bounding_box_train/.0002_c1s1_000452_03.jpg",
        "bounding_box_train/subfolder/0009_c1s1_000001_00.jpg",
        "query/0003_c4s2_010101_00.jpg",
        "bounding_box_test/0003_c1s1_000001_00.jpg",
        "bounding_box_test/0000_c6s4_002202_00.jpg",
        "bounding_box_test/-1_c3s2_000151_01.jpg",
    ])


def test_market_rows_parsed_exactly(tmp_path):
    hand_built_market(tmp_path)
    table = load_manifest("market1501", tmp_path)
    assert table.to_dict("records") == [
        {"path": "bounding_box_train/0002_c1s1_000451_03.jpg", "pid": 2, "camid": 1, "split": "train"},
        {"path": "bounding_box_train/0007_c2s3_070952_01.JPG", "pid": 7, "camid": 2, "split": "train"},
        {"path": "query/0003_c4s2_010101_00.jpg", "pid": 3, "camid": 4, "split": "query"},
        {"path": "bounding_box_test/0000_c6s4_002202_00.jpg", "pid": 0, "camid": 6, "split": "gallery"},
        {"path": "bounding_box_test/0003_c1s1_000001_00.jpg", "pid": 3, "camid": 1, "split": "gallery"},
    ]
    counts = split_counts(get_spec("market1501"), table)
    assert (counts["gallery"].images, counts["gallery"].identities, counts["gallery"].distractor_images) == (2, 1, 1)


def test_occluded_sets_take_pid_from_name_or_folder_and_fixed_cameras(tmp_path):
    touch_all(tmp_path / "pr", ["partial_body_images/012_3.jpg", "whole_body_images/012_1.jpg", "whole_body_images/004_02.jpg"])
    touch_all(tmp_path / "pi", ["Probe/118.jpg", "Gallery/118.jpg", "Gallery/Thumbs.db"])
    touch_all(tmp_path / "or", ["occluded_body_images/031/031_01.tif", "whole_body_images/031/031_05.tif",
                                "whole_body_images/200/200_01.TIFF"])
    rows = lambda name, sub: [tuple(r) for r in load_manifest(name, tmp_path / sub).itertuples(index=False)]  # noqa: E731
    assert rows("partial_reid", "pr") == [
        ("partial_body_images/012_3.jpg", 12, 1, "query"),
        ("whole_body_images/004_02.jpg", 4, 2, "gallery"),
        ("whole_body_images/012_1.jpg", 12, 2, "gallery"),
    ]
    assert rows("partial_ilids", "pi") == [("Probe/118.jpg", 118, 1, "query"), ("Gallery/118.jpg", 118, 2, "gallery")]
    assert rows("occluded_reid", "or") == [
        ("occluded_body_images/031/031_01.tif", 31, 1, "query"),
        ("whole_body_images/031/031_05.tif", 31, 2, "gallery"),
        ("whole_body_images/200/200_01.TIFF", 200, 2, "gallery"),
    ]


def test_manifest_does_not_depend_on_creation_order(tmp_path):
    files = market_files()[::37] + [f"bounding_box_test/-1_c1s1_{i:06d}_00.jpg" for i in range(3)]
    shuffled = list(files)
    random.Random(7).shuffle(shuffled)
    touch_all(tmp_path / "a", files)
    touch_all(tmp_path / "b", shuffled)
    a, b = load_manifest("market1501", tmp_path / "a"), load_manifest("market1501", tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, load_manifest("market1501", tmp_path / "a"))
    assert manifest_csv(a) == manifest_csv(b) and manifest_sha256(a) == manifest_sha256(b)
    for split, rows in a.groupby("split", sort=False):
        assert rows["path"].tolist() == sorted(rows["path"])
    order = {"train": 0, "query": 1, "gallery": 2}
    assert a["split"].map(order).is_monotonic_increasing
    assert manifest_csv(a).splitlines()[0] == "path,pid,camid,split"


def test_small_tree_mismatch_lists_expected_and_found(tmp_path):
    hand_built_market(tmp_path)
    spec = get_spec("market1501")
    table = load_manifest("market1501", tmp_path)
    assert [str(m) for m in count_mismatches(spec, table)] == [
        "train images expected 12936 found 2", "train identities expected 751 found 2",
        "query images expected 3368 found 1", "query identities expected 750 found 1",
        "gallery images expected 15913 found 2", "gallery identities expected 750 found 1",
    ]
    with pytest.raises(ReidEvalError, match="gallery images expected 15913 found 2"):
        validate_counts(spec, table)
    assert count_mismatches(get_spec("synthetic_occluded"), table) == []


def test_nested_download_layout_is_found_first(tmp_path):
    (tmp_path / "market1501" / "Market-1501-v15.09.15").mkdir(parents=True)
    assert locate_dataset("market1501", tmp_path) == (
        tmp_path / "market1501" / "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15")
    assert locate_dataset("dukemtmc_reid", tmp_path) is None
    with pytest.raises(ReidEvalError, match="looked for dukemtmc-reid/DukeMTMC-reID, DukeMTMC-reID"):
        find_dataset_root("dukemtmc_reid", tmp_path)
    with pytest.raises(ReidEvalError, match="not a folder"):
        find_dataset_root("market1501", tmp_path / "absent")


@pytest.mark.parametrize(
    ("name", "files", "needle"),
    [
        ("market1501", ["query/0001_c1s1_000001_00.jpg", "bounding_box_test/0001_c2s1_000001_00.jpg"],
         "train split folder bounding_box_train missing"),
        ("market1501", ["bounding_box_train/0001_c1s1_000001_00.jpg", "query/IMG_1234.jpg", "query/IMG_9.jpg",
                        "bounding_box_test/0001_c2s1_000001_00.jpg"], "query/IMG_1234.jpg (and 1 more)"),
        ("market1501", ["bounding_box_train/0001_c1s1_000001_00.jpg", "query/readme.txt",
                        "bounding_box_test/0001_c2s1_000001_00.jpg"], "query split folder"),
        ("occluded_reid", ["occluded_body_images/001/001_01.tif", "whole_body_images/stray.tif"],
         "whole_body_images/stray.tif"),
        ("occluded_reid", ["occluded_body_images/001/001_01.tif", "whole_body_images/bob/001_01.tif"],
         "whole_body_images/bob/001_01.tif"),
        ("partial_ilids", ["Probe/001.jpg"], "gallery split folder Gallery or gallery or whole_body_images missing"),
    ],
)
def test_broken_trees_fail_naming_the_folder_or_file(tmp_path, name, files, needle):
    touch_all(tmp_path, files)
    with pytest.raises(ReidEvalError) as info:
        load_manifest(name, tmp_path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_root_and_file_root(tmp_path):
    with pytest.raises(ReidEvalError, match="does not exist"):
        load_manifest("market1501", tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReidEvalError, match="is not a folder"):
        load_manifest("market1501", tmp_path / "file")


def test_unreadable_directory(tmp_path, monkeypatch):
    hand_built_market(tmp_path)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "query":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(manifest_module.os, "scandir", scandir)
    with pytest.raises(ReidEvalError, match=r"cannot read directory .*query: Permission denied"):
        load_manifest("market1501", tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any directory")
def test_unreadable_directory_by_permissions(tmp_path):
    hand_built_market(tmp_path)
    (tmp_path / "query").chmod(0)
    try:
        with pytest.raises(ReidEvalError, match="cannot read directory"):
            load_manifest("market1501", tmp_path)
    finally:
        (tmp_path / "query").chmod(0o755)


# ---------------------------------------------------------------- command line


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, *needles: str) -> None:
    assert status == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_cli_datasets_table(data_root, capsys):
    status, out, err = run(capsys, "datasets", "--data-root", str(data_root))
    assert status == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(rows) == set(known_datasets())
    for name, (folder, _) in REAL_TREES.items():
        assert rows[name].split()[2:4] == ["found", folder]
    assert "cuhk03-np" in rows["cuhk03_np_labeled"] and "found" in rows["cuhk03_np_labeled"]
    assert "not found" in rows["synthetic_occluded"]


def test_cli_datasets_reports_incomplete_and_env_data_root(tmp_path, capsys, monkeypatch):
    (tmp_path / "Partial_iLIDS" / "Probe").mkdir(parents=True)
    monkeypatch.setenv("REID_EVAL_DATA_ROOT", str(tmp_path))
    status, out, _ = run(capsys, "datasets")
    assert status == 0
    row = next(line for line in out.splitlines() if line.startswith("partial_ilids"))
    assert "incomplete: no gallery folder" in row and "Partial_iLIDS" in row
    # partial_ilids_nocrop shares the folder: incomplete too (no probe and no gallery folder of its own)
    nocrop = next(line for line in out.splitlines() if line.startswith("partial_ilids_nocrop"))
    assert "incomplete" in nocrop
    assert out.count("not found") == len(known_datasets()) - 2


def test_cli_datasets_missing_data_root(tmp_path, capsys):
    status, _, err = run(capsys, "datasets", "--data-root", str(tmp_path / "nope"))
    assert_one_line_error(status, err, "nope", "--data-root")


def test_cli_manifest_writes_csv_and_prints_counts(data_root, tmp_path, capsys):
    out_file = tmp_path / "out" / "market.csv"
    status, out, err = run(capsys, "manifest", "--dataset", "market1501", "--data-root", str(data_root), "-o", str(out_file))
    assert status == 0 and err == ""
    expected = load_manifest("market1501", data_root / "Market-1501-v15.09.15")
    assert out_file.read_text() == manifest_csv(expected)
    assert pd.read_csv(out_file).equals(expected)
    lines = out.splitlines()
    assert lines[0].startswith("market1501 (Market-1501) at ")
    assert lines[2].split() == ["train", "bounding_box_train", "12936", "751", "12936", "/", "751"]
    assert lines[3].split() == ["query", "query", "3368", "750", "3368", "/", "750"]
    assert lines[4].split() == ["gallery", "bounding_box_test", "15913", "750", "15913", "/", "750"]
    assert f"2793 distractor images (pid 0) kept; {MARKET_JUNK} junk images (pid -1) left out" in out
    assert f"wrote {out_file}" in out


@pytest.mark.parametrize("name", ["dukemtmc_reid", "cuhk03_np", "cuhk03_np_labeled",
                                  "partial_reid", "partial_ilids", "occluded_reid"])
def test_cli_manifest_validates_published_sized_trees_at_default_output(data_root, tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "manifest", "--dataset", name, "--data-root", str(data_root))
    assert status == 0 and err == "", err
    assert "MISMATCH" not in out and f"wrote {Path('manifests') / f'{name}.csv'}" in out
    written = pd.read_csv(tmp_path / "manifests" / f"{name}.csv")
    assert len(written) == sum(images for images, _ in get_spec(name).published_counts.values())
    if get_spec(name).kind == "occluded":
        assert set(written.loc[written["split"] == "query", "camid"]) == {1}
        assert set(written.loc[written["split"] == "gallery", "camid"]) == {2}


def test_cli_manifest_to_stdout_keeps_summary_on_stderr(tmp_path, capsys):
    hand_built_market(tmp_path)
    status, out, err = run(capsys, "manifest", "--dataset", "market1501", "--root", str(tmp_path), "-o", "-", "--allow-mismatch")
    assert status == 0
    assert out == manifest_csv(load_manifest("market1501", tmp_path))
    assert "Warning: market1501: counts differ" in err and "train" in err


def test_cli_mismatch_refused_then_allowed(tmp_path, capsys):
    hand_built_market(tmp_path)
    out_file = tmp_path / "m.csv"
    args = ["manifest", "--dataset", "market1501", "--root", str(tmp_path), "-o", str(out_file)]
    status, out, err = run(capsys, *args)
    assert_one_line_error(status, err, "train images expected 12936 found 2", "gallery identities expected 750 found 1",
                          "--allow-mismatch")
    assert "MISMATCH" in out and not out_file.exists()
    status, out, err = run(capsys, *args, "--allow-mismatch")
    assert status == 0 and out_file.exists()
    assert err.startswith("Warning: ") and "query images expected 3368 found 1" in err
    assert len(pd.read_csv(out_file)) == 5


def test_cli_dataset_without_published_counts_skips_validation(tmp_path, capsys):
    root = tmp_path / "synthetic_occluded"
    touch_all(root, ["bounding_box_train/0001_c1s1_000000_00.png", "query/0002_c1s1_000001_00.png",
                     "bounding_box_test/0002_c2s1_000002_00.png", "masks/query/0002_c1s1_000001_00.png"])
    status, out, err = run(capsys, "manifest", "--dataset", "synthetic_occluded", "--data-root", str(tmp_path),
                           "-o", str(tmp_path / "s.csv"))
    assert status == 0 and err == ""
    assert "count validation skipped" in out
    assert pd.read_csv(tmp_path / "s.csv")["path"].tolist() == [
        "bounding_box_train/0001_c1s1_000000_00.png", "query/0002_c1s1_000001_00.png",
        "bounding_box_test/0002_c2s1_000002_00.png"]


@pytest.mark.parametrize(
    ("setup", "args", "needles"),
    [
        (None, ["--dataset", "market1502"], ["unknown dataset 'market1502'", "market1501", "partial_ilids"]),
        (None, ["--dataset", "market1501", "--root", "{tmp}/missing"], ["missing does not exist", "--root"]),
        (None, ["--dataset", "market1501"], ["market1501 not found under data root", "Market-1501-v15.09.15"]),
        (["query/0001_c1s1_000001_00.jpg", "bounding_box_test/0001_c2s1_000001_00.jpg"],
         ["--dataset", "market1501", "--root", "{tmp}"], ["bounding_box_train missing under"]),
        (["bounding_box_train/0001_c1s1_000001_00.jpg", "query/0001c1.jpg", "bounding_box_test/0001_c2s1_000001_00.jpg"],
         ["--dataset", "market1501", "--root", "{tmp}"], ["query/0001c1.jpg", "0002_c1s1_000451_03.jpg"]),
    ],
)
def test_cli_manifest_errors_are_one_line(tmp_path, capsys, setup, args, needles):
    if setup:
        touch_all(tmp_path, setup)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    status, _, err = run(capsys, "manifest", "--data-root", str(tmp_path), *args)
    assert_one_line_error(status, err, *needles)


def test_cli_unwritable_output_is_one_line(tmp_path, capsys):
    hand_built_market(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    status, _, err = run(capsys, "manifest", "--dataset", "market1501", "--root", str(tmp_path),
                         "--allow-mismatch", "-o", str(blocker / "m.csv"))
    err_lines = [line for line in err.splitlines() if not line.startswith("Warning: ")]
    assert_one_line_error(status, "\n".join(err_lines), "cannot write manifest", "m.csv")


def test_cli_unreadable_directory_is_one_line(tmp_path, capsys, monkeypatch):
    hand_built_market(tmp_path)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "bounding_box_test":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(manifest_module.os, "scandir", scandir)
    status, _, err = run(capsys, "manifest", "--dataset", "market1501", "--root", str(tmp_path))
    assert_one_line_error(status, err, "cannot read directory", "bounding_box_test", "Permission denied")
