"""The cache's writer lock and HDF5's own file lock, held by a real second process (no torch in it: fast)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reid_eval.features import open_cache
from reid_eval.features.cache_io import CacheBusyError, check_not_being_written, lock_path, writer_lock, writer_pid
from test_extract_cache import hand_cache

HOLD_WRITER_LOCK = """
import sys, time
from reid_eval.features.cache_io import writer_lock
with writer_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""
HOLD_OPEN = """
import sys, h5py
f = h5py.File(sys.argv[1], "r+")
print("held", flush=True)
sys.stdin.readline()
"""


def hold(script: str, path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == 0


def test_writer_lock_names_the_holder_and_is_free_after_it(tmp_path):
    path = hand_cache(tmp_path)
    other = hold(HOLD_WRITER_LOCK, path)
    try:
        assert writer_pid(path) == other.pid
        message = f"another extraction (pid {other.pid}) is writing feature cache {path}"
        with pytest.raises(CacheBusyError, match=message.replace("(", r"\(").replace(")", r"\)")):
            with writer_lock(path, retries=0):
                pass
        for reader in (check_not_being_written, open_cache):
            with pytest.raises(CacheBusyError, match=f"pid {other.pid}"):
                reader(path)
    finally:
        release(other)
    assert not lock_path(path).exists() and writer_pid(path) is None
    with writer_lock(path) as lock:  # free again; this process's own reads are not blocked by its lock
        assert lock.read_text().strip() == str(os.getpid())
        open_cache(path).close()
    assert not lock.exists()


def test_hdf5_lock_of_a_process_storing_distances_is_not_called_damaged(tmp_path):
    path = hand_cache(tmp_path)
    other = hold(HOLD_OPEN, path)
    try:
        with pytest.raises(CacheBusyError, match="is open for writing in another process") as info:
            open_cache(path)
        assert str(path) in str(info.value) and "delete" not in str(info.value)
        with pytest.raises(CacheBusyError, match="is open in another process"):
            open_cache(path, "r+")
    finally:
        release(other)
    open_cache(path).close()
