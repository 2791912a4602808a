"""Extraction into the HDF5 cache: round trip, keys, no-op reruns, bad images, preprocessing."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from reid_eval.errors import ReidEvalError
from reid_eval.features import (
    Preprocessing,
    extract_dataset,
    list_distances,
    load_image_array,
    load_rgb,
    open_cache,
    read_attrs,
    read_distances,
    read_image_foreground,
    read_split,
    read_split_index,
)
from reid_eval.features.cache import SplitWriter, cache_key, cache_path, create_cache, write_distances
from reid_eval.features.preprocess import to_tensor_batch
from reid_eval.model import ModelConfig, build_model, load_checkpoint, save_checkpoint


SMALL = ModelConfig(backbone="resnet18", input_size=(128, 64))


def make_partial_reid(root: Path, ids: int = 6, per_side: int = 2, seed: int = 0) -> Path:
    """A Partial-REID-like tree of tiny PNGs: partial (short) probes, whole-body gallery."""
    rng = np.random.default_rng(seed)
    (root / "partial_body_images").mkdir(parents=True)
    (root / "whole_body_images").mkdir(parents=True)
    for pid in range(1, ids + 1):
        colour = rng.integers(0, 256, size=3)
        for k in range(1, per_side + 1):
            whole = np.clip(colour + rng.normal(0, 25, size=(64, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(whole).save(root / "whole_body_images" / f"{pid:03d}_{k:02d}.png")
            h = 32 if k % 2 else 48  # two partial heights -> two keep-aspect sizes
            part = np.clip(colour + rng.normal(0, 25, size=(h, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(part).save(root / "partial_body_images" / f"{pid:03d}_{k:02d}.png")
    return root


def small_checkpoint(path: Path, seed: int = 0, config: ModelConfig = SMALL) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(config), config)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_partial_reid(tmp_path_factory.mktemp("data") / "Partial-REID")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt")


def extract(tree, ckpt, cache_dir, **kw):
    kw.setdefault("allow_mismatch", True)
    kw.setdefault("batch_size", 5)
    return extract_dataset("partial_reid", tree, ckpt, cache_dir, device="cpu", **kw)


def test_cache_round_trip_equals_direct_forward(tree, ckpt, tmp_path):
    path = extract(tree, ckpt, tmp_path)
    assert path.parent == tmp_path / "partial_reid" and path.suffix == ".h5"
    attrs = read_attrs(path)
    assert attrs["dataset"] == "partial_reid" and Path(attrs["dataset_root"]) == tree.resolve()
    assert attrs["settings"]["model"]["backbone"] == "resnet18"
    q, g = read_split(path, "query"), read_split(path, "gallery")
    assert len(q.paths) == 12 and len(g.paths) == 12
    assert sorted(q.paths) == sorted(f"partial_body_images/{p:03d}_{k:02d}.png" for p in range(1, 7) for k in (1, 2))
    assert set(np.unique(q.camids)) != set(np.unique(g.camids))  # cameras apart for an occluded set
    assert [int(pid) for pid in q.pids] == [int(Path(p).name[:3]) for p in q.paths]
    n_loc = SMALL.num_locations()
    assert np.array_equal(q.spatial.offsets, np.arange(13) * n_loc)
    assert q.grids.shape == (12, 4, 2) and q.grids[0].tolist() == [[4, 2], [3, 1], [0, 0], [0, 0]]
    # features equal a direct forward of the checkpoint's model on the same image
    model, config, _ = load_checkpoint(ckpt)
    prep = Preprocessing.for_model(config, "fixed")
    i = 7
    with torch.inference_mode():
        out = model(to_tensor_batch([load_image_array(tree / g.paths[i], prep)], prep))
    np.testing.assert_allclose(g.spatial.image(i), out.local[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g.spatial.image_foreground(i), out.foreground[0].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g.global_features[i], out.global_features[0].numpy(), rtol=1e-4, atol=1e-5)


def test_finished_cache_is_a_noop_and_other_settings_get_another_file(tree, ckpt, tmp_path):
    path = extract(tree, ckpt, tmp_path)
    before, mtime = file_digest(path), path.stat().st_mtime_ns
    assert extract(tree, ckpt, tmp_path) == path
    assert file_digest(path) == before and path.stat().st_mtime_ns == mtime
    other = extract(tree, ckpt, tmp_path, resize="keep-aspect")
    assert other != path and file_digest(path) == before
    ck2 = small_checkpoint(tmp_path / "other.pt", seed=1)
    assert extract(tree, ck2, tmp_path) not in (path, other)


def test_keep_aspect_gives_partial_probes_shorter_maps(tree, ckpt, tmp_path):
    path = extract(tree, ckpt, tmp_path, resize="keep-aspect")
    q, g = read_split(path, "query"), read_split(path, "gallery")
    # whole body 64×32 -> 128×64 input -> 8×4 map; partial 32×32 -> 64×64 -> 4×4; 48×32 -> 96×64 -> 6×4
    assert set(g.spatial.counts.tolist()) == {SMALL.num_locations(128, 64)}
    assert set(q.spatial.counts.tolist()) == {SMALL.num_locations(64, 64), SMALL.num_locations(96, 64)}
    assert SMALL.num_locations(64, 64) < SMALL.num_locations(96, 64) < SMALL.num_locations(128, 64)
    by_path = dict(zip(q.paths, q.spatial.counts.tolist()))
    assert by_path["partial_body_images/001_01.png"] == SMALL.num_locations(64, 64)
    assert by_path["partial_body_images/001_02.png"] == SMALL.num_locations(96, 64)
    assert sorted(q.manifest_index.tolist()) == list(range(12))


def test_altered_or_renamed_cache_is_refused(tree, ckpt, tmp_path):
    path = extract(tree, ckpt, tmp_path)
    renamed = path.with_name("0123456789abcdef.h5")
    os.replace(path, renamed)
    with pytest.raises(ReidEvalError, match="does not match its key"):
        read_split(renamed, "query")
    os.replace(renamed, path)
    with h5py.File(path, "r+") as f:
        f.attrs["manifest_sha256"] = "0" * 64
    with pytest.raises(ReidEvalError, match=path.name):
        extract(tree, ckpt, tmp_path)


def test_missing_checkpoint_is_an_error_not_a_random_model(tree, tmp_path):
    with pytest.raises(ReidEvalError, match="checkpoint init"):
        extract(tree, None, tmp_path)
    assert not any(tmp_path.rglob("*.h5"))


def test_corrupt_image_stops_with_its_name_or_is_skipped(tmp_path, ckpt):
    tree = make_partial_reid(tmp_path / "Partial-REID")
    bad = tree / "whole_body_images" / "003_02.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    with pytest.raises(ReidEvalError, match="003_02.png"):
        extract(tree, ckpt, tmp_path / "c1")
    path = extract(tree, ckpt, tmp_path / "c2", skip_bad=True)
    g = read_split(path, "gallery")
    assert g.skipped == ["whole_body_images/003_02.png"]
    assert len(g.paths) == 11 and "whole_body_images/003_02.png" not in g.paths
    assert len(g.spatial) == 11 and g.global_features.shape[0] == 11


def test_incomplete_split_is_not_read(tree, ckpt, tmp_path):
    path = extract(tree, ckpt, tmp_path, splits=("query",))
    with pytest.raises(ReidEvalError, match="no gallery split"):
        read_split(path, "gallery")
    assert extract(tree, ckpt, tmp_path, splits=("gallery",)) == path  # same cache, split added
    assert len(read_split(path, "gallery").paths) == 12
    with pytest.raises(ReidEvalError, match="no train images"):
        extract(tree, ckpt, tmp_path, splits=("query", "train"))


# ------------------------------------------------------------------ selective readers


def hand_cache(tmp_path: Path) -> Path:
    """An empty, valid cache file (no model involved)."""
    settings = {"model": "hand-built"}
    key = cache_key("partial_reid", "c" * 64, settings, "m" * 64)
    path = cache_path(tmp_path, "partial_reid", key)
    create_cache(
        path,
        {"dataset": "partial_reid", "dataset_root": str(tmp_path), "checkpoint_sha256": "c" * 64,
         "manifest_sha256": "m" * 64, "settings": json.dumps(settings), "cache_key": key},
    )
    return path


# Per-image pyramid grids of different sizes, one with a level that did not fit.
GRIDS = [[[3, 2], [2, 1]], [[2, 2], [1, 1]], [[4, 1], [0, 0]], [[1, 3], [1, 1]], [[2, 3], [1, 2]]]


def write_rows(f, split: str, first: int, count: int, num_total: int, rng, **kw) -> dict:
    """Append images ``first .. first+count-1`` (grids from GRIDS) to ``split``; returns what was written."""
    grids = np.array(GRIDS[first : first + count], np.int32)
    counts = (grids[..., 0] * grids[..., 1]).sum(axis=1)
    rows = {
        "paths": [f"{split}/{first + i:03d}.png" for i in range(count)],
        "pids": np.arange(first, first + count) * 7 + 1,
        "camids": np.arange(first, first + count) % 3 + 1,
        "grids": grids,
        "foreground": [rng.random(c).astype(np.float32) for c in counts],
    }
    SplitWriter(f, split, num_total, 4, 2).append(
        processed=count, paths=rows["paths"], pids=rows["pids"], camids=rows["camids"],
        manifest_index=np.arange(first, first + count), grids=grids,
        local=rng.normal(size=(int(counts.sum()), 4)).astype(np.float32), counts=counts,
        foreground=np.concatenate(rows["foreground"]), global_features=np.ones((count, 4), np.float32), **kw,
    )
    return rows


def test_selective_readers_return_what_was_written(tmp_path):
    path = hand_cache(tmp_path)
    rng = np.random.default_rng(1)
    with h5py.File(path, "r+") as f:
        a = write_rows(f, "gallery", 0, 3, 5, rng)
        b = write_rows(f, "gallery", 3, 2, 5, rng)  # a second batch: offsets continue across batches
    assert list_distances(path) == {}
    paths, pids, camids = a["paths"] + b["paths"], np.r_[a["pids"], b["pids"]], np.r_[a["camids"], b["camids"]]
    index = read_split_index(path, "gallery")
    assert index.paths == paths and index.pids.tolist() == pids.tolist() and index.camids.tolist() == camids.tolist()
    assert index.pids.dtype == np.int64 and index.camids.dtype == np.int64
    full = read_split(path, "gallery")  # the whole-split reader agrees with the index
    assert full.paths == paths and np.array_equal(full.pids, pids) and np.array_equal(full.camids, camids)
    foreground = a["foreground"] + b["foreground"]
    with open_cache(path) as f:  # an open file serves many reads and stays open
        for i in range(5):
            fg, grid = read_image_foreground(f, "gallery", i)
            assert fg.dtype == np.float32 and np.array_equal(fg, foreground[i])
            assert grid.tolist() == GRIDS[i]
            assert np.array_equal(fg, full.spatial.image_foreground(i))
        assert f.id.valid
    fg, grid = read_image_foreground(path, "gallery", 2)  # by path as well
    assert np.array_equal(fg, foreground[2]) and grid.tolist() == [[4, 1], [0, 0]] and fg.shape == (4,)

    beta = rng.random((3, 5)).astype(np.float32)
    write_distances(path, "fpr__beta0.1", beta, {"beta": 0.1, "fuse": None, "weighted": True})
    write_distances(path, "euclidean", np.zeros((3, 5), np.float32), {"beta": None, "metric": "euclidean"})
    stored = list_distances(path)
    assert list(stored) == ["euclidean", "fpr__beta0.1"]  # sorted by name
    assert stored["fpr__beta0.1"] == {"beta": 0.1, "fuse": None, "weighted": True}
    assert stored["euclidean"] == {"beta": None, "metric": "euclidean"}
    with open_cache(path) as f:
        matrix, params = read_distances(f, "fpr__beta0.1")
        assert list_distances(f) == stored
    assert np.array_equal(matrix, beta) and params == stored["fpr__beta0.1"]


def test_incomplete_split_is_refused_or_read_up_to_its_committed_rows(tmp_path):
    path = hand_cache(tmp_path)
    rng = np.random.default_rng(2)

    def interrupt():
        raise KeyboardInterrupt

    with h5py.File(path, "r+") as f:
        done = write_rows(f, "query", 0, 2, 5, rng)
        with pytest.raises(KeyboardInterrupt):  # rows of this batch reach the file but are never committed
            write_rows(f, "query", 2, 2, 5, rng, before_commit=interrupt)
        assert f["query"]["path"].shape[0] == 4
    for reader in (read_split, read_split_index):
        with pytest.raises(ReidEvalError, match=r"split query is incomplete \(2 of 5 images\)"):
            reader(path, "query")
    index = read_split_index(path, "query", allow_incomplete=True)
    assert index.paths == done["paths"] and index.pids.tolist() == done["pids"].tolist()
    fg, grid = read_image_foreground(path, "query", 1)
    assert np.array_equal(fg, done["foreground"][1]) and grid.tolist() == GRIDS[1]
    for bad in (2, -1):  # the interrupted batch's rows are not readable
        with pytest.raises(ValueError, match=r"index must be in \[0, 2\)"):
            read_image_foreground(path, "query", bad)
    with pytest.raises(ReidEvalError, match="has no gallery split"):
        read_split_index(path, "gallery", allow_incomplete=True)
    with pytest.raises(ValueError, match="split must be one of"):
        read_split_index(path, "test")


def test_foreground_of_an_image_whose_grid_disagrees_is_refused(tmp_path):
    path = hand_cache(tmp_path)
    with h5py.File(path, "r+") as f:
        write_rows(f, "query", 0, 2, 2, np.random.default_rng(3))
        f["query"]["grid"][1] = [[3, 2], [1, 1]]  # 7 cells, 5 stored locations
    with pytest.raises(ReidEvalError, match="query image 1 has 5 locations but its grid"):
        read_image_foreground(path, "query", 1)


# ------------------------------------------------------------------ preprocessing


def test_image_modes_become_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "g.png")), np.repeat(gray[..., None], 3, axis=2))

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.asarray(load_rgb(tmp_path / "a.png"))[0, 0].tolist() == [200, 0, 0]

    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    arr = np.asarray(load_rgb(tmp_path / "p.png"))
    assert arr[0, 1].tolist() == [10, 20, 30] and arr[0, 0].tolist() == [0, 0, 0]

    deep = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    got = np.asarray(load_rgb(tmp_path / "d.png"))[..., 0]
    assert got.tolist() == [[0, 255], [128, 1]]


def test_unreadable_images_name_the_file(tmp_path):
    (tmp_path / "trunc.png").write_bytes((b"\x89PNG\r\n\x1a\n" + b"\x00" * 40))
    for name in ("trunc.png", "missing.png"):
        with pytest.raises(ReidEvalError, match=name) as info:
            load_rgb(tmp_path / name)
        assert "\n" not in str(info.value)
    img = Image.fromarray(np.zeros((40, 20, 3), np.uint8))
    img.save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReidEvalError, match="cut.png"):
        load_rgb(tmp_path / "cut.png")


def test_resize_targets_and_normalisation():
    prep = Preprocessing.for_model(ModelConfig(), "keep-aspect")
    assert prep.target_size(256, 128) == (256, 128)  # half-body crop: half the height
    assert prep.target_size(105, 50) == (272, 128)  # 268.8 -> nearest multiple of 16
    assert prep.target_size(10, 200) == (32, 128)  # never below the smallest kernel's input
    assert prep.target_size(4000, 10) == (4 * 384, 128)
    assert Preprocessing.for_model(ModelConfig(), "fixed").target_size(17, 300) == (384, 128)
    with pytest.raises(ValueError, match="--resize"):
        Preprocessing.for_model(ModelConfig(), "stretch")
    white = np.full((2, 2, 3), 255, np.uint8)
    t = to_tensor_batch([white], prep)
    assert t.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(t[0, :, 0, 0].numpy(), (1 - np.array(prep.mean)) / np.array(prep.std), rtol=1e-6)
