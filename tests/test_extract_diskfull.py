"""A write failing past the space reservation (the disk filled by someone else) is sealed: no crash, committed rows kept.

Needs root on Linux to mount a small tmpfs; skipped elsewhere. The reservation
path itself (the usual disk-full case) is in tests/test_bad_input.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

import reid_eval.features.cache as cache_module
from reid_eval.features import extract_dataset, read_split
from reid_eval.features.cache_io import CacheWriteError, failure_cause, new_bytes
from test_extract_cache import make_partial_reid, small_checkpoint


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root on Linux to mount a tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_failed_write_is_sealed_and_a_rerun_with_room_completes(tmp_path, small_disk, monkeypatch):
    tree = make_partial_reid(tmp_path / "Partial-REID")
    ckpt = small_checkpoint(tmp_path / "small.pt")
    kw = dict(device="cpu", batch_size=4, allow_mismatch=True)
    monkeypatch.setattr(cache_module, "reserve_space", lambda *a, **k: None)  # as if another process took the space
    with pytest.raises(CacheWriteError, match="No space left on device") as info:
        extract_dataset("partial_reid", tree, ckpt, small_disk, **kw)
    (path,) = small_disk.rglob("*.h5")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    monkeypatch.undo()
    with h5py.File(path, "r") as f:  # the file opens; what was committed before the failure reads back
        committed = {s: int(f[s].attrs["num_written"]) for s in ("query", "gallery") if s in f}
    assert committed["query"] == 12
    clean = extract_dataset("partial_reid", tree, ckpt, tmp_path / "clean", **kw)
    assert np.array_equal(read_split(path, "query").global_features, read_split(clean, "query").global_features)
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    assert extract_dataset("partial_reid", tree, ckpt, small_disk, **kw) == path
    for split in ("query", "gallery"):
        a, b = read_split(path, split), read_split(clean, split)
        assert a.paths == b.paths
        np.testing.assert_allclose(a.spatial.local, b.spatial.local, rtol=1e-5, atol=1e-6)


def test_reservation_bound_counts_whole_chunks_and_failure_causes(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("x", (0, 8), maxshape=(None, 8), dtype=np.float32, chunks=(10, 8))
        assert new_bytes(ds, 0) == 0
        assert new_bytes(ds, 1) == 10 * 8 * 4  # the first row starts a whole chunk
        assert new_bytes(ds, 25) == 3 * 10 * 8 * 4
        ds.resize(5, axis=0)
        assert new_bytes(ds, 5) == 0  # rows 5..9 fill the chunk already there
        assert new_bytes(ds, 6) == 10 * 8 * 4
    hdf5_text = RuntimeError("Can't write data (file write failed: time = x, errno = 28, error message = 'No space left on device', buf = 0x1)")
    assert failure_cause(hdf5_text) == "No space left on device"
    assert failure_cause(OSError(122, "Disk quota exceeded")) == "Disk quota exceeded"
