"""The cuhk03_pair1 dataset: the cuhk03_shot naming scheme, a split that keeps
one camera of a shared folder (``cameras``), and the real crops' counts.

Hand-built trees run everywhere; the checks on the real crops need
``../shared/data/CUHK03_pair1`` beside the repository and are skipped (with
the reason) where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from reid_eval_cli.main import main
from reid_eval.datasets import get_scheme, get_spec, load_manifest, load_spec_file, split_counts, validate_counts
from reid_eval.datasets import spec as spec_module
from reid_eval.errors import ReidEvalError

SHARED_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CUHK03_ROOT = SHARED_DATA_ROOT / "CUHK03_pair1"
needs_cuhk03 = pytest.mark.skipif(
    not (CUHK03_ROOT / "detected" / "train").is_dir(),
    reason=f"the CUHK03 pair-1 crops are not at {CUHK03_ROOT} (../shared/data/CUHK03_pair1 beside the repository)",
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("0042_00.jpg", (42, 1)),
        ("0042_04.jpg", (42, 1)),
        ("0042_05.jpg", (42, 2)),
        ("0742_09.jpg", (742, 2)),
        ("0000_03.png", (0, 1)),
        ("0042_10.jpg", None),  # CUHK03 has at most 10 shots per person and pair
        ("0042_7.jpg", None),
        ("0042_c1_07.jpg", None),
        ("x042_07.jpg", None),
    ],
)
def test_cuhk03_shot_names(name, expected):
    assert get_scheme("cuhk03_shot").parse((name,)) == expected
    assert get_scheme("cuhk03_shot").parse(("detected", name)) is None  # files directly in the split folder


def _tree(root: Path, train: dict[int, list[int]], val: dict[int, list[int]]) -> Path:
    for folder, people in (("train", train), ("val", val)):
        (root / "detected" / folder).mkdir(parents=True)
        for pid, shots in people.items():
            for shot in shots:
                Image.new("RGB", (4, 8)).save(root / "detected" / folder / f"{pid:04d}_{shot:02d}.jpg")
    return root


def test_query_and_gallery_take_one_camera_each_of_the_shared_folder(tmp_path):
    root = _tree(tmp_path / "CUHK03_pair1", train={0: [0, 1, 5], 1: [2, 9]}, val={0: [0, 1, 6], 1: [4, 5, 7, 8]})
    table = load_manifest("cuhk03_pair1", root)
    assert list(table.loc[table["split"] == "train", "path"]) == [
        "detected/train/0000_00.jpg", "detected/train/0000_01.jpg", "detected/train/0000_05.jpg",
        "detected/train/0001_02.jpg", "detected/train/0001_09.jpg"]
    assert list(table.loc[table["split"] == "train", "camid"]) == [1, 1, 2, 1, 2]
    query, gallery = table[table["split"] == "query"], table[table["split"] == "gallery"]
    assert list(query["path"]) == ["detected/val/0000_00.jpg", "detected/val/0000_01.jpg", "detected/val/0001_04.jpg"]
    assert list(gallery["path"]) == ["detected/val/0000_06.jpg", "detected/val/0001_05.jpg",
                                     "detected/val/0001_07.jpg", "detected/val/0001_08.jpg"]
    assert set(query["camid"]) == {1} and set(gallery["camid"]) == {2}
    assert list(query["pid"]) == [0, 0, 1] and list(gallery["pid"]) == [0, 1, 1, 1]
    counts = split_counts(get_spec("cuhk03_pair1"), table)
    assert (counts["query"].images, counts["gallery"].images, counts["train"].identities) == (3, 4, 2)
    with pytest.raises(ReidEvalError, match="query images expected 451 found 3"):
        validate_counts(get_spec("cuhk03_pair1"), table)


def test_a_name_outside_the_scheme_is_one_line_naming_the_file(tmp_path):
    root = _tree(tmp_path / "CUHK03_pair1", train={0: [0, 5]}, val={0: [0, 5]})
    Image.new("RGB", (4, 8)).save(root / "detected" / "val" / "0003_12.jpg")
    with pytest.raises(ReidEvalError, match=r"0003_12\.jpg.*cuhk03_shot.*0042_07\.jpg") as info:
        load_manifest("cuhk03_pair1", root)
    assert "\n" not in str(info.value)


SPEC = """
name = "toy_cams"
kind = "holistic"
roots = ["toy"]
naming = "cuhk03_shot"
extensions = ["jpg"]

[splits.query]
folders = ["val"]
cameras = [1]

[splits.gallery]
folders = ["val"]
cameras = [2]
"""


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.replace("cameras = [2]", "cameras = [1, 2]"), "must not share a camera"),
        (lambda t: t.replace("cameras = [2]", "cameras = []"), "cameras must list at least one camera"),
        (lambda t: t.replace("cameras = [2]", 'cameras = ["2"]'), "cameras must be a list of integers"),
        (lambda t: t.replace('naming = "cuhk03_shot"', 'naming = "pid_prefix"').replace(
            "cameras = [1]", "camid = 1\ncameras = [1]").replace("cameras = [2]", "camid = 2"),
         "cameras needs a naming scheme that gives a camera"),
    ],
)
def test_broken_cameras_key_fails_naming_the_spec(tmp_path, edit, needle):
    path = tmp_path / "toy_cams.toml"
    path.write_text(edit(SPEC))
    with pytest.raises(ReidEvalError) as info:
        load_spec_file(path)
    assert "toy_cams.toml" in str(info.value) and needle in str(info.value)


def test_spec_without_cameras_keeps_every_camera(tmp_path):
    path = tmp_path / "toy_cams.toml"
    path.write_text(SPEC.replace("cameras = [1]\n", ""))
    spec = load_spec_file(path)
    assert spec.split("query").cameras == () and spec.split("gallery").cameras == (2,)
    assert spec_module.get_spec("cuhk03_pair1").split("query").cameras == (1,)


@needs_cuhk03
def test_real_crops_give_the_stated_counts(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["manifest", "--dataset", "cuhk03_pair1", "--data-root", str(SHARED_DATA_ROOT)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "MISMATCH" not in out
    table = pd.read_csv(tmp_path / "manifests" / "cuhk03_pair1.csv")
    train, query, gallery = (table[table["split"] == s] for s in ("train", "query", "gallery"))
    assert (len(train), train["pid"].nunique()) == (7239, 743)
    assert set(train["pid"]) == set(range(743))
    assert train["camid"].value_counts().to_dict() == {2: 3651, 1: 3588}  # the README's camera counts
    assert (len(query), len(gallery)) == (451, 487)
    assert set(query["camid"]) == {1} and set(gallery["camid"]) == {2}
    # every held-out person is seen by both cameras: each query has a true match
    assert set(query["pid"]) == set(gallery["pid"]) == set(range(100))
    assert not set(query["path"]) & set(gallery["path"])
    assert all(p.startswith("detected/val/") for p in pd.concat([query["path"], gallery["path"]]))
