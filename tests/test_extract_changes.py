"""Changed image files: replaced images are re-extracted (only they), touched ones are not, repaired skipped ones are retried."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from reid_eval.errors import ReidEvalError
from reid_eval.features import extract_dataset, read_split
from test_extract_cache import make_partial_reid, small_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt")


def extract(tree, ckpt, cache_dir, **kw):
    kw.setdefault("batch_size", 5)
    return extract_dataset("partial_reid", tree, ckpt, cache_dir, device="cpu", allow_mismatch=True, **kw)


def by_path(split):
    """{path: (global feature, local rows)} of a split read from the cache."""
    return {p: (split.global_features[i], split.spatial.image(i)) for i, p in enumerate(split.paths)}


def group_names(path):
    with h5py.File(path, "r") as f:
        return sorted(f)


@pytest.mark.parametrize("resize", ["fixed", "keep-aspect"])
def test_replaced_image_is_reextracted_and_only_it(tmp_path, ckpt, resize):
    tree = make_partial_reid(tmp_path / "Partial-REID")
    path = extract(tree, ckpt, tmp_path / "cache", resize=resize)
    before_q, before_g = by_path(read_split(path, "query")), by_path(read_split(path, "gallery"))
    # replace one gallery image by another person's (same size, new content) and one probe by a taller crop
    shutil.copyfile(tree / "whole_body_images" / "005_01.png", tree / "whole_body_images" / "002_01.png")
    tall = np.asarray(Image.open(tree / "partial_body_images" / "004_02.png"))
    Image.fromarray(np.concatenate([tall, tall[:16]])).save(tree / "partial_body_images" / "004_01.png")
    assert extract(tree, ckpt, tmp_path / "cache", resize=resize) == path  # same key: names did not change
    after_q, after_g = by_path(read_split(path, "query")), by_path(read_split(path, "gallery"))
    assert group_names(path) == ["gallery", "query"]  # the set-aside versions are gone
    # the replaced gallery image now has the features of the image it was copied from
    np.testing.assert_allclose(after_g["whole_body_images/002_01.png"][0], before_g["whole_body_images/005_01.png"][0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(after_g["whole_body_images/002_01.png"][0], before_g["whole_body_images/002_01.png"][0])
    changed_probe = after_q["partial_body_images/004_01.png"]
    assert not np.array_equal(changed_probe[0], before_q["partial_body_images/004_01.png"][0])
    if resize == "keep-aspect":  # a taller crop: more pyramid locations
        assert len(changed_probe[1]) > len(before_q["partial_body_images/004_01.png"][1])
    for before, after, skip in ((before_q, after_q, "partial_body_images/004_01.png"), (before_g, after_g, "whole_body_images/002_01.png")):
        assert before.keys() == after.keys()
        for p in before:
            if p != skip:  # every other image keeps exactly its features (copied, not recomputed)
                assert np.array_equal(before[p][0], after[p][0]) and np.array_equal(before[p][1], after[p][1]), p
    # the same result as a fresh extraction of the changed tree
    fresh = by_path(read_split(extract(tree, ckpt, tmp_path / "fresh", resize=resize), "query"))
    for p, (glob, local) in fresh.items():
        np.testing.assert_allclose(after_q[p][0], glob, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(after_q[p][1], local, rtol=1e-4, atol=1e-5)


def test_touched_file_is_not_reextracted_and_finished_cache_is_not_rewritten(tmp_path, ckpt):
    tree = make_partial_reid(tmp_path / "Partial-REID")
    path = extract(tree, ckpt, tmp_path / "cache")
    image = tree / "whole_body_images" / "003_02.png"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, newer time
    mtime = path.stat().st_mtime_ns
    assert extract(tree, ckpt, tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == mtime  # a digest check only: the cache was not opened for writing


def test_repaired_skipped_image_is_retried_without_skip_bad(tmp_path, ckpt):
    tree = make_partial_reid(tmp_path / "Partial-REID")
    image = tree / "whole_body_images" / "003_02.png"
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 3])  # truncated
    path = extract(tree, ckpt, tmp_path / "cache", skip_bad=True)
    g = read_split(path, "gallery")
    assert g.skipped == ["whole_body_images/003_02.png"] and len(g.paths) == 11
    assert extract(tree, ckpt, tmp_path / "cache") == path  # unchanged broken file: still skipped, no error
    assert read_split(path, "gallery").skipped == ["whole_body_images/003_02.png"]
    image.write_bytes(good)  # repaired
    extract(tree, ckpt, tmp_path / "cache")  # no --skip-bad needed
    g = read_split(path, "gallery")
    assert g.skipped == [] and len(g.paths) == 12 and "whole_body_images/003_02.png" in g.paths
    image.write_bytes(b"broken again")  # changed and unreadable, without --skip-bad: an error naming it
    with pytest.raises(ReidEvalError, match="003_02.png"):
        extract(tree, ckpt, tmp_path / "cache")
    # the failed rebuild left the complete gallery as it was, readable; the query split is untouched
    after = read_split(path, "gallery")
    assert after.paths == g.paths and np.array_equal(after.global_features, g.global_features)
    assert len(read_split(path, "query").paths) == 12
    image.write_bytes(good)  # repaired again: the interrupted rebuild continues and swaps in
    extract(tree, ckpt, tmp_path / "cache")
    assert group_names(path) == ["gallery", "query"]
    assert np.array_equal(read_split(path, "gallery").global_features, g.global_features)
