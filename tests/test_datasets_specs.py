"""Dataset specs (data_manifests/*.toml) and the naming schemes that read pid and camera from paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_eval.datasets import SCHEMES, get_scheme, get_spec, known_datasets, load_manifest, load_spec_file
from reid_eval.datasets import spec as spec_module
from reid_eval.errors import ReidEvalError

# docs/DESIGN.md's dataset table: split -> (images, identities).
PUBLISHED = {
    "market1501": {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 750)},
    "dukemtmc_reid": {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)},
    "cuhk03_np": {"train": (7365, 767), "query": (1400, 700), "gallery": (5332, 700)},
    "cuhk03_np_labeled": {"train": (7368, 767), "query": (1400, 700), "gallery": (5328, 700)},
    "cuhk03_pair1": {"train": (7239, 743), "query": (451, 100), "gallery": (487, 100)},  # our protocol, its spec
    "partial_reid": {"query": (300, 60), "gallery": (300, 60)},
    "partial_ilids": {"query": (119, 119), "gallery": (119, 119)},
    "partial_reid_occluded": {"query": (300, 60), "gallery": (300, 60)},  # the released uncropped probes
    "partial_ilids_nocrop": {"query": (119, 119), "gallery": (119, 119)},  # the released uncropped probes
    "occluded_reid": {"query": (1000, 200), "gallery": (1000, 200)},
    "synthetic_occluded": {},
    "pets09_s2l1": {"query": (80, 7), "gallery": (125, 10)},  # our protocol, data_manifests/pets09_s2l1.toml
    "pets09_s2l1_full": {"query": (242, 16), "gallery": (268, 19)},  # scripts/build_pets09_full.py's build
    "occluded_dukemtmc": {"train": (15618, 702), "query": (2210, 519), "gallery": (17661, 1110)},  # Miao et al., ICCV 2019
    "p_dukemtmc_reid": {},  # per-split counts unpublished (only 24,143 images / 1,299 ids in all)
}


def test_known_datasets_are_the_shipped_specs():
    assert known_datasets() == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_spec_carries_the_published_counts(name):
    spec = get_spec(name)
    assert spec.name == name
    assert spec.published_counts == PUBLISHED[name]
    assert spec.has_published_counts == bool(PUBLISHED[name])
    assert spec.split_names[-2:] == ("query", "gallery")


def test_kinds_split_holistic_from_occluded_sets():
    kinds = {name: get_spec(name).kind for name in known_datasets()}
    assert {n for n, k in kinds.items() if k == "holistic"} == {"market1501", "dukemtmc_reid", "cuhk03_np", "cuhk03_np_labeled",
                                                                      "cuhk03_pair1"}
    assert {n for n, k in kinds.items() if k == "occluded"} == {
        "partial_reid", "partial_ilids", "occluded_reid", "synthetic_occluded", "pets09_s2l1", "pets09_s2l1_full",
        "occluded_dukemtmc", "p_dukemtmc_reid", "partial_reid_occluded", "partial_ilids_nocrop",
    }


@pytest.mark.parametrize("name", ["partial_reid", "partial_ilids", "occluded_reid"])
def test_occluded_sets_give_query_and_gallery_different_cameras(name):
    spec = get_spec(name)
    assert not spec.scheme.gives_camera
    assert spec.split("query").camid is not None and spec.split("gallery").camid is not None
    assert spec.split("query").camid != spec.split("gallery").camid


def test_market_rules_and_accepted_root_names():
    spec = get_spec("market1501")
    assert spec.junk_pids == {-1} and spec.distractor_pids == {0}
    assert {"Market-1501-v15.09.15", "market1501", "Market-1501"} <= set(spec.roots)
    # torchreid's nested folder must be tried before its plain wrapper name.
    assert spec.roots.index("market1501/Market-1501-v15.09.15") < spec.roots.index("market1501")
    assert not spec.single_gallery_shot
    assert "Partial-REID" in get_spec("partial_reid").roots and "Partial_REID" in get_spec("partial_reid").roots
    assert {"Partial-iLIDS", "Partial_iLIDS"} <= set(get_spec("partial_ilids").roots)
    assert {"Occluded_REID", "Occluded-REID"} <= set(get_spec("occluded_reid").roots)
    assert {"cuhk03-np", "cuhk03_np"} <= set(get_spec("cuhk03_np").roots)
    assert "DukeMTMC-reID" in get_spec("dukemtmc_reid").roots


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ReidEvalError) as info:
        get_spec("market1502")
    message = str(info.value)
    assert "market1502" in message and "market1501" in message and "occluded_reid" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("scheme", "parts", "expected"),
    [
        ("market", ("0002_c1s1_000451_03.jpg",), (2, 1)),
        ("market", ("-1_c3s2_000151_01.jpg",), (-1, 3)),
        ("market", ("0000_c6s4_002202_00.jpg",), (0, 6)),
        ("market", ("0001_c2_f0046182.jpg",), (1, 2)),  # DukeMTMC-reID
        ("market", ("0123_c1_3.png",), (123, 1)),  # CUHK03-NP
        ("market", ("Thumbs_c1.jpg",), None),
        ("market", ("0002c1s1_000451_03.jpg",), None),
        ("market", ("0002_c1x_000451_03.jpg",), None),
        ("market", ("sub", "0002_c1s1_000451_03.jpg"), None),
        ("pid_prefix", ("001_01.jpg",), (1, None)),
        ("pid_prefix", ("060_5.jpg",), (60, None)),
        ("pid_prefix", ("119.jpg",), (119, None)),
        ("pid_prefix", ("a001.jpg",), None),
        ("pid_prefix", ("001x.jpg",), None),
        ("pid_folder", ("007", "007_03.tif"), (7, None)),
        ("pid_folder", ("person7", "007_03.tif"), None),
        ("pid_folder", ("007_03.tif",), None),
    ],
)
def test_naming_schemes_on_real_names(scheme, parts, expected):
    assert get_scheme(scheme).parse(parts) == expected


@settings(deadline=None)  # a shared, busy machine must not fail a microsecond parse
@given(
    pid=st.integers(min_value=-1, max_value=9999),
    cam=st.integers(min_value=1, max_value=9),
    seq=st.integers(min_value=1, max_value=9),
    frame=st.integers(min_value=0, max_value=999999),
    box=st.integers(min_value=0, max_value=99),
)
def test_market_names_round_trip(pid, cam, seq, frame, box):
    name = f"{pid:04d}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"
    assert SCHEMES["market"].parse((name,)) == (pid, cam)


def test_unknown_naming_scheme_is_a_value_error():
    with pytest.raises(ValueError, match="pid_folder"):
        get_scheme("nope")


VALID_SPEC = """
name = "{name}"
kind = "occluded"
roots = ["Occluded_Duke"]
naming = "market"
extensions = ["jpg"]

[splits.query]
folders = ["query"]
images = 2
identities = 1

[splits.gallery]
folders = ["bounding_box_test"]
images = 3
identities = 2
"""


def _write_spec(tmp_path: Path, text: str, name: str = "occluded_duke") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_spec_file_round_trip(tmp_path):
    spec = load_spec_file(_write_spec(tmp_path, VALID_SPEC.format(name="occluded_duke")))
    assert spec.published_counts == {"query": (2, 1), "gallery": (3, 2)}
    assert spec.split("query").folders == ("query",)
    assert spec.junk_pids == frozenset() and spec.title == "occluded_duke"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.replace('kind = "occluded"', 'kind = "partial"'), "kind"),
        (lambda t: t.replace('naming = "market"', 'naming = "duke"'), "naming"),
        (lambda t: t.replace('kind = "occluded"', 'kind = "occluded"\nsingle_galery_shot = true'),
         "unknown key(s): single_galery_shot"),
        (lambda t: t + "\nimage = 3\n", "unknown key(s) in splits.gallery: image"),
        (lambda t: t.replace("identities = 1\n", ""), "both images and identities"),
        (lambda t: t.replace('folders = ["query"]', 'folders = ["../query"]'), "relative"),
        (lambda t: t.replace("images = 2", "images = -2"), "non-negative"),
        (lambda t: t.replace("[splits.gallery]", "[splits.probe]"), "unknown split"),
        (lambda t: t.replace('folders = ["query"]', 'folders = ["query"]\ncamid = 1'), "camid"),
        (lambda t: t.replace('roots = ["Occluded_Duke"]', "roots = []"), "roots"),
        (lambda t: t.replace('name = "occluded_duke"', 'name = "other"'), "differs from the file name"),
        (lambda t: t.replace("[splits.query]", "[splits.query"), "not valid TOML"),
    ],
)
def test_broken_spec_files_fail_naming_the_file(tmp_path, edit, needle):
    path = _write_spec(tmp_path, edit(VALID_SPEC.format(name="occluded_duke")))
    with pytest.raises(ReidEvalError) as info:
        load_spec_file(path)
    assert "occluded_duke.toml" in str(info.value) and needle in str(info.value)


def test_schemes_without_camera_need_distinct_fixed_cameras(tmp_path):
    text = VALID_SPEC.format(name="occluded_duke").replace('naming = "market"', 'naming = "pid_prefix"')
    with pytest.raises(ReidEvalError, match="camid"):
        load_spec_file(_write_spec(tmp_path, text))
    text = text.replace('folders = ["query"]', 'folders = ["query"]\ncamid = 1')
    with pytest.raises(ReidEvalError, match="must differ"):
        load_spec_file(_write_spec(tmp_path, text.replace('folders = ["bounding_box_test"]', 'folders = ["bounding_box_test"]\ncamid = 1')))
    spec = load_spec_file(_write_spec(tmp_path, text.replace('folders = ["bounding_box_test"]', 'folders = ["bounding_box_test"]\ncamid = 2')))
    assert (spec.split("query").camid, spec.split("gallery").camid) == (1, 2)


@pytest.fixture
def extra_spec_package(tmp_path, monkeypatch):
    """A spec package holding one new dataset, in place of data_manifests."""
    package = tmp_path / "extra_manifests"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "occluded_duke.toml").write_text(VALID_SPEC.format(name="occluded_duke"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(spec_module, "SPEC_PACKAGE", "extra_manifests")
    spec_module.get_spec.cache_clear()
    yield package
    spec_module.get_spec.cache_clear()
    sys.modules.pop("extra_manifests", None)


def test_a_seventh_dataset_needs_only_a_spec_file(extra_spec_package, tmp_path):
    assert known_datasets() == ["occluded_duke"]
    root = tmp_path / "Occluded_Duke"
    for rel in ["query/0005_c1_f01.jpg", "query/0005_c2_f02.jpg",
                "bounding_box_test/0005_c3_f01.jpg", "bounding_box_test/0006_c3_f01.jpg",
                "bounding_box_test/0006_c4_f09.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    table = load_manifest("occluded_duke", root)
    assert table["split"].tolist() == ["query", "query", "gallery", "gallery", "gallery"]
    assert table["camid"].tolist() == [1, 2, 3, 3, 4]
