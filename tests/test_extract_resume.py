"""Resume after `kill -9`: a real SIGKILL in a subprocess between writing a batch and committing it.

The promise tested: a killed and resumed extraction writes the same bits as an
uninterrupted one *run with the same number of threads*. The network's float
sums are ordered by torch's intra-op thread count (1 and 2 threads differ in
the last bit), so every run here is a subprocess with one fixed count, whatever
the machine or the pytest process uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import h5py
import numpy as np

from reid_eval.features import read_split
from test_extract_cache import make_partial_reid, small_checkpoint

THREADS = 1  # any fixed count; one is the count whose results no scheduling can reorder

SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[5]))
from reid_eval.features import extract_dataset
print(extract_dataset("partial_reid", sys.argv[1], sys.argv[2], sys.argv[3], device="cpu",
                      batch_size=3, resize=sys.argv[4], allow_mismatch=True))
"""


def run(tree, ckpt, cache_dir, resize, kill_after=None):
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    env.pop("REID_EVAL_TEST_KILL_AFTER_BATCHES", None)
    if kill_after is not None:
        env["REID_EVAL_TEST_KILL_AFTER_BATCHES"] = str(kill_after)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tree), str(ckpt), str(cache_dir), resize, str(THREADS)], env=env, capture_output=True, text=True
    )


def snapshot(path):
    with h5py.File(path, "r") as f:
        out = {}
        for split in ("query", "gallery"):
            for name, ds in f[split].items():
                out[f"{split}/{name}"] = ds[...]
            out[f"{split}/attrs"] = dict(f[split].attrs)
        return out


def test_sigkill_mid_extraction_then_rerun_equals_uninterrupted_run(tmp_path):
    tree = make_partial_reid(tmp_path / "Partial-REID")
    ckpt = small_checkpoint(tmp_path / "small.pt")
    resize = "keep-aspect"  # the harder order: the split sorted by size, batches cut at size changes
    killed = tmp_path / "killed"
    # 12 query images in batches of 3 (sizes 64 and 96 px, 6 each): killed while writing the 6th batch,
    # the 2nd of the gallery, after its rows reached the file and before its counts did
    first = run(tree, ckpt, killed, resize, kill_after=6)
    assert first.returncode == -signal.SIGKILL, first.stderr
    (path,) = killed.rglob("*.h5")
    with h5py.File(path, "r") as f:
        assert f["query"].attrs["num_complete"] == 12
        assert f["gallery"].attrs["num_complete"] == 3
        assert f["gallery"]["path"].shape[0] == 6 > f["gallery"].attrs["num_written"]  # uncommitted rows on disk
    lock = path.with_name(path.name + ".lock")  # the killed writer's lock file stays behind ...
    assert lock.read_text().strip().isdigit()
    second = run(tree, ckpt, killed, resize)  # ... and blocks nobody: the kernel dropped its flock
    assert second.returncode == 0, second.stderr
    assert not lock.exists()
    clean = run(tree, ckpt, tmp_path / "clean", resize)  # the uninterrupted run, with the same threads
    assert clean.returncode == 0, clean.stderr
    (clean_path,) = (tmp_path / "clean").rglob("*.h5")
    assert clean_path.name == path.name
    a, b = snapshot(path), snapshot(clean_path)
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("attrs"):
            assert a[key] == b[key]
        else:
            assert np.array_equal(a[key], b[key]), key
    assert len(read_split(path, "gallery").paths) == 12
