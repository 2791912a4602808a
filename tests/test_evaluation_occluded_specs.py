"""Specs of the occluded benchmarks beyond the paper: Occluded-DukeMTMC and P-DukeMTMC-reID, on generated trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from reid_eval.datasets import count_mismatches, find_dataset_root, get_spec, load_manifest, split_counts, validate_counts
from reid_eval.datasets import manifest as manifest_module
from reid_eval.errors import ReidEvalError


def spread(n: int, pids: list[int]) -> list[int]:
    return [pids[i % len(pids)] for i in range(n)]


def occluded_duke_files() -> list[str]:
    """Occluded-DukeMTMC at its published counts, DukeMTMC-reID names (8 cameras)."""
    train, query, extra = list(range(1, 703)), list(range(703, 1222)), list(range(1222, 1813))
    files = [f"bounding_box_train/{p:04d}_c{1 + i % 8}_f{i:07d}.jpg" for i, p in enumerate(spread(15618, train))]
    files += [f"query/{p:04d}_c{1 + i % 8}_f{i:07d}.jpg" for i, p in enumerate(spread(2210, query))]
    files += [f"bounding_box_test/{p:04d}_c{1 + (i + 3) % 8}_f{i:07d}.jpg"
              for i, p in enumerate(spread(17661, query + extra))]
    return files


@pytest.fixture
def listed_tree(tmp_path, monkeypatch):
    """A data root whose split folders exist and whose 35,489 file names are served from memory."""
    root = tmp_path / "Occluded_Duke"
    listings: dict[Path, list[tuple[str, ...]]] = {}
    for rel in occluded_duke_files():
        folder, _, name = rel.rpartition("/")
        listings.setdefault(root / folder, []).append((name,))
    for folder in listings:
        folder.mkdir(parents=True)
    real = manifest_module._list_images

    def list_images(directory, depth, extensions):
        return list(listings[Path(directory)]) if Path(directory) in listings else real(directory, depth, extensions)

    monkeypatch.setattr(manifest_module, "_list_images", list_images)
    return tmp_path


def test_occluded_duke_published_tree_validates(listed_tree):
    spec = get_spec("occluded_dukemtmc")
    assert spec.kind == "occluded" and spec.naming == "market"
    assert spec.published_counts == {"train": (15618, 702), "query": (2210, 519), "gallery": (17661, 1110)}
    root = find_dataset_root("occluded_dukemtmc", listed_tree)
    assert root == listed_tree / "Occluded_Duke"  # the converter's folder name
    table = load_manifest("occluded_dukemtmc", root)
    assert count_mismatches(spec, table) == []
    validate_counts(spec, table)
    counts = split_counts(spec, table)
    assert {s: (c.images, c.identities) for s, c in counts.items()} == spec.published_counts
    # real cameras from the names: the same-camera rule applies as in DukeMTMC-reID
    q = table[table["split"] == "query"].iloc[0]
    assert (q["pid"], q["camid"]) == (703, 1)


def test_occluded_duke_count_mismatch_is_reported(tmp_path):
    files = ["bounding_box_train/0001_c1_f0000001.jpg", "query/0002_c1_f0000002.jpg", "bounding_box_test/0002_c2_f0000003.jpg"]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    spec = get_spec("occluded_dukemtmc")
    table = load_manifest("occluded_dukemtmc", tmp_path)
    assert count_mismatches(spec, table)
    with pytest.raises(ReidEvalError, match="2210"):
        validate_counts(spec, table)


def test_p_duke_takes_pid_from_folder_and_fixed_cameras(tmp_path):
    root = tmp_path / "P-DukeMTMC-reid"
    files = [
        "test/occluded_body_images/0005/0005_c2_f0046182.jpg",
        "test/occluded_body_images/0005/0005_c2_f0046190.jpg",
        "test/whole_body_images/0005/0005_c5_f0051200.jpg",
        "test/whole_body_images/0011/0011_c1_f0000100.jpg",
        "train/whole_body_images/0002/0002_c1_f0000001.jpg",  # not part of the test protocol
    ]
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    assert find_dataset_root("p_dukemtmc_reid", tmp_path) == root
    spec = get_spec("p_dukemtmc_reid")
    assert spec.kind == "occluded" and not spec.has_published_counts
    table = load_manifest("p_dukemtmc_reid", root)
    assert [tuple(r) for r in table.itertuples(index=False)] == [
        ("test/occluded_body_images/0005/0005_c2_f0046182.jpg", 5, 1, "query"),
        ("test/occluded_body_images/0005/0005_c2_f0046190.jpg", 5, 1, "query"),
        ("test/whole_body_images/0005/0005_c5_f0051200.jpg", 5, 2, "gallery"),
        ("test/whole_body_images/0011/0011_c1_f0000100.jpg", 11, 2, "gallery"),
    ]
    # counts unpublished per split: nothing to check, nothing reported
    assert count_mismatches(spec, table) == []
