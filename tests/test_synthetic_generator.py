"""The synthetic occluded-person generator: determinism, layout, masks, occlusion."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reid_eval.datasets import load_manifest
from reid_eval.datasets.synthetic import MASK_DIR, SyntheticConfig, generate_synthetic_dataset, render
from reid_eval.errors import ReidEvalError

TINY = SyntheticConfig(seed=3, num_train_ids=4, num_test_ids=5, train_images_per_id=4, gallery_images_per_id=2,
                       query_images_per_id=3, height=64, width=32, query_partial_fraction=0.4)
NAME = re.compile(r"^(bounding_box_train|query|bounding_box_test)/(\d{4})_c(\d)s1_(\d{6})_00\.png$")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "synthetic_occluded"
    generate_synthetic_dataset(root, TINY)
    return root


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tiny_set, tmp_path):
    again = tmp_path / "again"
    generate_synthetic_dataset(again, TINY)
    first, second = _digest(tiny_set), _digest(again)
    assert first == second
    assert len(first) == 2 * (4 * 4 + 5 * 3 + 5 * 2) + 3  # images + masks + manifest, annotations, config
    other = tmp_path / "other"
    generate_synthetic_dataset(other, SyntheticConfig(**{**TINY.__dict__, "seed": 4}))
    changed = [k for k, v in _digest(other).items() if k.endswith(".png") and first.get(k) != v]
    assert len(changed) > 50


def test_layout_manifest_and_protocol(tiny_set):
    table = pd.read_csv(tiny_set / "manifest.csv")
    assert list(table.columns) == ["path", "pid", "camid", "split"]
    for path, pid, cam, split in table.itertuples(index=False):
        m = NAME.match(path)
        assert m, path
        assert int(m.group(2)) == pid and int(m.group(3)) == cam
        assert (tiny_set / path).is_file() and (tiny_set / MASK_DIR / path).is_file()
        assert {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}[m.group(1)] == split
    by = {s: table[table.split == s] for s in ("train", "query", "gallery")}
    assert len(by["train"]) == 16 and len(by["query"]) == 15 and len(by["gallery"]) == 10
    assert set(by["train"].pid).isdisjoint(by["query"].pid)
    assert set(by["query"].pid) == set(by["gallery"].pid)
    # occluded-set protocol: query cameras differ from gallery cameras
    assert set(by["query"].camid).isdisjoint(by["gallery"].camid)
    # the dataset spec's scanner reads the same table
    scanned = load_manifest("synthetic_occluded", tiny_set).sort_values("path").reset_index(drop=True)
    ours = table.sort_values("path").reset_index(drop=True)
    assert scanned["path"].tolist() == ours["path"].tolist()
    assert scanned["pid"].tolist() == ours["pid"].tolist() and scanned["camid"].tolist() == ours["camid"].tolist()


def test_masks_are_binary_and_match_kinds(tiny_set):
    ann = pd.read_csv(tiny_set / "annotations.csv").set_index("path")
    for path, row in ann.iterrows():
        img = np.asarray(Image.open(tiny_set / path))
        mask = np.asarray(Image.open(tiny_set / MASK_DIR / path))
        assert mask.shape == img.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255} and (mask > 0).sum() > 20
        if path.startswith("query/"):
            assert row.kind in ("occluded", "partial")
        if path.startswith("bounding_box_test/"):
            assert row.kind == "whole" and row.hidden == 0.0
        if row.kind == "occluded":
            assert img.shape[:2] == (64, 32)
            assert TINY.occlusion[0] - 0.02 <= row.hidden <= TINY.occlusion[1] + 0.02
        elif row.kind == "partial":
            assert img.shape[0] < 64 and img.shape[1] == 32 and row.hidden > 0.2
        else:
            assert img.shape[:2] == (64, 32) and row.hidden == 0.0
    assert {"occluded", "partial"} <= set(ann[ann.index.str.startswith("query/")].kind)


def test_occluder_hides_the_requested_fraction_and_only_its_region():
    rng = np.random.default_rng(0)
    n, h, w = 6, 64, 32
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = rng.random((n, h, w, 3), dtype=np.float32)
    body = np.zeros((n, h, w), bool)
    body[:, 8:60, 10:22] = True  # a 52×12 "person"
    coverage = np.array([0.2, 0.25, 0.3, 0.35, 0.45, 0.5])
    out, region = render.occlude(rng, images, body, coverage, xx[None], yy[None])
    hidden = (body & region).sum(axis=(1, 2)) / body.sum(axis=(1, 2))
    np.testing.assert_allclose(hidden, coverage, atol=2.0 / body[0].sum() + 0.01)
    assert np.array_equal(out[~region], images[~region])  # nothing outside the occluder changes
    assert not np.array_equal(out[region], images[region])
    # the occluder is textured clutter, not a flat colour
    for i in range(n):
        assert out[i][region[i]].std(axis=0).max() > 0.02


def test_existing_folder_is_reused_or_refused(tiny_set, tmp_path):
    again = generate_synthetic_dataset(tiny_set, TINY)
    assert again.reused and again.counts == {"train": 16, "query": 15, "gallery": 10}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ReidEvalError, match="not empty"):
        generate_synthetic_dataset(foreign, TINY)
    summary = generate_synthetic_dataset(foreign, TINY, overwrite=True)
    assert not summary.reused and (foreign / "notes.txt").read_text() == "mine"


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="occlusion"):
        SyntheticConfig(occlusion=(0.6, 0.3)).validate()
