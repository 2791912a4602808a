"""Faults of the matching stage: tiles checked before use, locks, clean-up, read-only caches, Dask, accuracy.

A committed tile is used only when it passes its record (checksum, dtype,
shape, finite values) and ``tiles_resumed`` counts only those; two identical
matches at once share one computation; stale tile folders of stored matrices
go; a read-only cache gets advice that keeps it; ``--scheduler`` at something
that is not a Dask scheduler ends in one line naming it; the 1e-5 contract
without normalisation; the shortlist path raises no cast warning.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from reid_eval.errors import ReidEvalError
from reid_eval.experiments.record import MatchResult
from reid_eval.features import read_distances
from reid_eval.matching.shortlist import behind_the_shortlist, pick_shortlist
from reid_eval.matching.streaming import fpr_distances_from_cache, fpr_shortlist_from_cache
from reid_eval.matching.tile_store import TileStore, tile_dir
from test_match_streaming import kill_after_tiles, write_cache
from test_refined_share import _copy

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from reid_eval_cli.main import main; sys.exit(main(sys.argv[1:]))"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_cache(tmp_path_factory.mktemp("faults"), n_query=9, n_gallery=13, d=32, m=(3, 7), seed=21)


# ------------------------------------------------------------------ finished tiles are checked


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x40  # a bit of the last values, past the .npy header
    path.write_bytes(bytes(raw))


def _zeros(path: Path) -> None:
    np.save(path, np.zeros_like(np.load(path)))


def _float64(path: Path) -> None:
    np.save(path, np.load(path).astype(np.float64))


def _nan(path: Path) -> None:
    tile = np.load(path)
    tile[0, 0] = np.nan
    np.save(path, tile)


@pytest.mark.parametrize("damage, reason", [(_flip, "checksum mismatch"), (_zeros, "checksum mismatch"),
                                            (_float64, "dtype float64, expected float32"),
                                            (_nan, "checksum mismatch")])
def test_a_damaged_tile_is_computed_again_said_so_and_not_counted_as_resumed(cache, tmp_path, damage, reason):
    path = _copy(cache, tmp_path)
    resume = tile_dir(path, "fpr")
    kwargs = dict(backend="numpy", block_rows=12, threads=1)
    full = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)
    store = TileStore(resume)
    assert full.plan.num_tiles >= 4 and len(store.done()) == full.plan.num_tiles
    victim = sorted(store.done())[1]
    damage(store._path(*victim))
    again = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)
    np.testing.assert_array_equal(again.distances, full.distances)
    assert (again.tiles_resumed, again.tiles_computed) == (full.plan.num_tiles - 1, 1)
    assert len(again.tiles_rejected) == 1 and str(store._path(*victim)) in again.tiles_rejected[0]
    assert reason in again.tiles_rejected[0]
    assert again.provenance()["tiles_failed_check"] == 1
    assert again.refinement.to_dict() == full.refinement.to_dict()


def test_a_nan_tile_with_a_matching_record_never_reaches_the_matrix(cache, tmp_path):
    path = _copy(cache, tmp_path)
    resume = tile_dir(path, "fpr")
    kwargs = dict(backend="numpy", block_rows=12, threads=1)
    full = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)
    store = TileStore(resume)
    victim = sorted(store.done())[0]
    tile = np.load(store._path(*victim))
    tile[-1, -1] = np.nan
    store.commit(*victim, tile, store.load(*victim, tile.shape, tile.dtype).counts)  # a record that agrees
    again = fpr_distances_from_cache(path, resume_dir=resume, **kwargs)
    assert np.isfinite(again.distances).all()
    np.testing.assert_array_equal(again.distances, full.distances)
    assert "non-finite values" in again.tiles_rejected[0] and again.tiles_resumed == full.plan.num_tiles - 1


def test_a_damaged_shortlist_unit_is_computed_again(cache, tmp_path):
    path = _copy(cache, tmp_path)
    resume = tile_dir(path, "fpr__shortlist4")
    kwargs = dict(backend="numpy", memory_budget_bytes=3_000_000, threads=1, resume_dir=resume)
    first = fpr_shortlist_from_cache(path, 4, **kwargs)
    store = TileStore(resume)
    units = sorted(store.done())
    assert len(units) > 2
    _flip(store._path(*units[0]))
    np.save(store._path(*units[1]), np.load(store._path(*units[1])).astype(np.float32))
    again = fpr_shortlist_from_cache(path, 4, **kwargs)
    np.testing.assert_array_equal(again.distances, first.distances)
    assert again.tiles_resumed == len(units) - 2 and len(again.tiles_rejected) == 2


def test_match_after_a_kill_and_a_corrupted_tile_says_so_and_ends_as_uninterrupted(tmp_path):
    cache_dir = tmp_path / "cache"
    path = write_cache(cache_dir, n_query=16, n_gallery=24, d=48, m=8, seed=7)
    cmd = [*CLI, "match", "--metric", "fpr", "--untrained-foreground", "--memory-budget", "60000",
           "--results-dir", str(tmp_path / "res"), "--resamples", "0", "--cache-dir", str(cache_dir)]
    reference = fpr_distances_from_cache(path, memory_budget_bytes=60000).distances
    store = TileStore(tile_dir(path, "fpr"))
    done = kill_after_tiles(cmd, store, 6, ENV)
    victim = sorted(done)[0]
    _zeros(store._path(*victim))
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "1 committed tile(s) failed their check and were computed again" in run.stderr
    assert str(store._path(*victim)) in run.stderr and f"({len(done) - 1} resumed)" in run.stderr
    D, attrs = read_distances(path, "fpr")
    np.testing.assert_array_equal(D, reference)
    assert attrs["tiles_resumed"] == len(done) - 1 and attrs["tiles_failed_check"] == 1


# ------------------------------------------------------------------ the shortlist's rest


def test_the_shortlist_reads_no_uninitialised_slot():
    rng = np.random.default_rng(3)
    out = np.full((6, 20), 0x7FA00000, np.uint32).view(np.float32)  # signalling NaNs, as np.empty may hold
    short = pick_shortlist(rng.random((6, 5)), rng.random((20, 5)), 4, "euclidean", 4, out)
    exact = rng.random((6, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D = behind_the_shortlist(out, short, exact)
    assert np.isfinite(D).all()
    np.testing.assert_array_equal(np.take_along_axis(D, short, axis=1), exact.astype(np.float32))


# ------------------------------------------------------------------ one match per cache, stale tiles, fusion


def _match_cmd(cache_dir: Path, results: Path, *extra: str) -> list[str]:
    untrained = ["--untrained-foreground"] if "fpr" in extra else []  # the synthetic caches' foreground
    return [*CLI, "match", *untrained, "--memory-budget", "60000", "--resamples", "0",
            "--cache-dir", str(cache_dir), "--results-dir", str(results), *extra]


def test_a_second_identical_match_waits_for_the_first_and_reuses_its_matrix(tmp_path):
    cache_dir = tmp_path / "cache"
    path = write_cache(cache_dir, n_query=16, n_gallery=24, d=48, m=8, seed=9)
    cmd = _match_cmd(cache_dir, tmp_path / "res", "--metric", "fpr")
    # the first stops itself (SIGSTOP) after its third tile, holding the lock, mid-computation
    first = subprocess.Popen(cmd, env={**ENV, "REID_EVAL_TEST_KILL_AFTER_TILES": "3:STOP"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        second = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = []
        for line in second.stderr:  # until it says it waits (or ends without saying so)
            said.append(line)
            if "waiting for another match" in line:
                break
        assert said and f"waiting for another match (pid {first.pid})" in said[-1], "".join(said)
        os.kill(first.pid, signal.SIGCONT)
        out1, err1 = first.communicate(timeout=300)
        out2, err2 = second.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "tiles" not in err2  # it computed nothing: the first one's matrix was reused
    assert out1.split(" -> ")[0] == out2.split(" -> ")[0]
    assert MatchResult.read(next((tmp_path / "res").glob("partial_reid__fpr__*.json"))).provenance["reused_matrix"] == "fpr"
    np.testing.assert_array_equal(read_distances(path, "fpr")[0],
                                  fpr_distances_from_cache(path, memory_budget_bytes=60000).distances)


def test_tile_folders_of_stored_matrices_are_removed_and_others_kept(tmp_path):
    cache_dir = tmp_path / "cache"
    path = write_cache(cache_dir, n_query=8, n_gallery=12, d=16, m=4, seed=4)
    assert main_rc(_match_cmd(cache_dir, tmp_path / "res", "--metric", "fpr")) == 0
    # as if killed between storing the matrix and removing its tiles
    fpr_distances_from_cache(path, memory_budget_bytes=60000, resume_dir=tile_dir(path, "fpr"))
    fpr_distances_from_cache(path, memory_budget_bytes=60000, weighted=False, resume_dir=tile_dir(path, "dsr"))
    assert TileStore(tile_dir(path, "fpr")).done() and TileStore(tile_dir(path, "dsr")).done()
    assert main_rc(_match_cmd(cache_dir, tmp_path / "res", "--metric", "fpr")) == 0  # reuses the stored matrix
    assert not tile_dir(path, "fpr").exists()
    assert TileStore(tile_dir(path, "dsr")).done()  # an unfinished computation: kept for its resume


def test_a_fused_match_stores_its_fpr_matrix_for_a_plain_run(tmp_path):
    cache_dir = tmp_path / "cache"
    path = write_cache(cache_dir, n_query=8, n_gallery=12, d=16, m=4, seed=4)
    assert main_rc(_match_cmd(cache_dir, tmp_path / "res", "--metric", "fpr", "--fuse", "0.5")) == 0
    D, attrs = read_distances(path, "fpr")
    np.testing.assert_array_equal(D, fpr_distances_from_cache(path, memory_budget_bytes=60000).distances)
    assert not tile_dir(path, "fpr").exists()
    assert main_rc(_match_cmd(cache_dir, tmp_path / "res", "--metric", "fpr")) == 0
    plain = MatchResult.read(next((tmp_path / "res").glob("partial_reid__fpr__*.json")))
    assert plain.provenance["reused_matrix"] == "fpr"


def main_rc(cmd: list[str]) -> int:
    run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in run.stderr, run.stderr
    return run.returncode


# ------------------------------------------------------------------ a read-only cache


def _can_mount_read_only(tmp: Path) -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount --bind {tmp} {tmp} && mount -o remount,bind,ro {tmp} && ! touch {tmp}/x"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.parametrize("metric", ["euclidean", "fpr"])
def test_a_cache_on_a_read_only_mount_is_named_and_kept(tmp_path, metric):
    cache_dir = tmp_path / "cache"
    write_cache(cache_dir, n_query=8, n_gallery=12, d=16, m=4, seed=4)
    if not _can_mount_read_only(cache_dir):
        pytest.skip("needs root and unshare to mount a folder read-only")
    before = {p: p.read_bytes() for p in cache_dir.rglob("*") if p.is_file()}
    match = " ".join(shlex.quote(a) for a in _match_cmd(cache_dir, tmp_path / "res", "--metric", metric))
    run = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          f"mount --bind {cache_dir} {cache_dir} && mount -o remount,bind,ro {cache_dir} && {match}"],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "read-only file system" in lines[0] and str(cache_dir) in lines[0], run.stderr
    assert "delete" not in run.stderr and "Errno" not in run.stderr and "Traceback" not in run.stderr
    assert {p: p.read_bytes() for p in cache_dir.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------ Dask: Ctrl-C, --scheduler, --workers


def test_ctrl_c_with_dask_workers_ends_in_one_line_without_tracebacks(tmp_path):
    pytest.importorskip("distributed")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("--workers 2 needs two CPU cores")
    cache_dir = tmp_path / "cache"
    path = write_cache(cache_dir, n_query=16, n_gallery=24, d=48, m=8, seed=7)
    cmd = _match_cmd(cache_dir, tmp_path / "res", "--metric", "fpr", "--workers", "2")
    # every worker stops itself (SIGSTOP) after its first tile: the match cannot end before Ctrl-C
    # SIGINT at its default in the child, as in a terminal: an ignored SIGINT would be inherited from
    # this process (some test before this one may leave it so) and Python would never raise KeyboardInterrupt
    child = subprocess.Popen(cmd, env={**ENV, "REID_EVAL_TEST_KILL_AFTER_TILES": "1:STOP"}, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = TileStore(tile_dir(path, "fpr"))
    try:
        deadline = time.monotonic() + 240
        while not store.done():  # a state that lasts once reached (the worker is stopped), not a window
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read() if child.poll() else ""
            time.sleep(0.2)
        # What a terminal's Ctrl-C does: SIGINT to the whole process group, then the stopped workers are
        # woken (a slower worker may stop itself only after a wake-up, and the cluster's shutdown would
        # wait for it). A Ctrl-C that is lost (one landing while the cluster still starts, see
        # reid_eval.matching.dask_tiles) is pressed again 10 s later, as a user would; each wake-up lets
        # a worker finish only its current task and the first tile of the next, so the match cannot run
        # to its end on wake-ups alone before a Ctrl-C lands.
        deadline = time.monotonic() + 240
        while True:
            try:
                os.killpg(child.pid, signal.SIGINT)
                os.killpg(child.pid, signal.SIGCONT)
            except ProcessLookupError:  # the whole group has ended
                pass
            try:
                out, err = child.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                assert time.monotonic() < deadline, "the match did not end after Ctrl-C"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] in ("Aborted.", "Interrupted.")  # click words Ctrl-C as Abort
    assert store.done()  # the committed tiles stay for the rerun


def _server(reply: bytes | None) -> tuple[socket.socket, threading.Thread]:
    """A TCP listener on localhost that answers each connection with ``reply`` (None: stays silent)."""
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            if reply == b"":
                conn.close()
            elif reply is not None:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return srv, thread


@pytest.mark.parametrize("reply, message", [(None, "no Dask handshake within 2 s"),
                                            (b"HTTP/1.1 400 Bad Request\r\n\r\n", "does not speak Dask's protocol"),
                                            (b"", "closed the connection without a Dask handshake")])
def test_scheduler_that_is_not_a_dask_scheduler_is_refused_in_one_line(reply, message):
    from reid_eval.matching.dask_tiles import probe_scheduler

    srv, _ = _server(reply)
    address = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    try:
        with pytest.raises(ReidEvalError) as err:
            probe_scheduler(address, timeout=2)
    finally:
        srv.close()
    text = str(err.value)
    assert text.startswith(f"--scheduler {address}") and message in text and "\n" not in text


def test_match_at_a_server_that_is_not_dask_names_scheduler(tmp_path, capsys):
    pytest.importorskip("distributed")
    from reid_eval_cli.main import main

    write_cache(tmp_path / "cache", n_query=4, n_gallery=6, d=8, m=3, seed=2)
    srv, _ = _server(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
    address = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    try:
        status = main(["match", "--metric", "fpr", "--untrained-foreground", "--scheduler", address, "--resamples", "0",
                       "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "res")])
    finally:
        srv.close()
    err = capsys.readouterr().err
    assert status == 1 and f"Error: --scheduler {address}: the server does not speak Dask's protocol" in err, err
    assert "MemoryError" not in err and "Traceback" not in err


def test_a_real_dask_scheduler_passes_the_probe():
    distributed = pytest.importorskip("distributed")
    from reid_eval.matching.dask_tiles import probe_scheduler

    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        probe_scheduler(cluster.scheduler_address, timeout=10)


def test_workers_beyond_the_memory_budget_are_refused_in_one_line(tmp_path, capsys):
    from reid_eval.matching.memory import check_workers_fit, physical_memory

    with pytest.raises(ReidEvalError, match=r"--workers 4 with --memory-budget 3000000000 bytes each need 12 GB, "
                                            r"more than this machine's 8 GB; use at most 2 worker\(s\)"):
        check_workers_fit(4, 3_000_000_000, memory=8_000_000_000)
    check_workers_fit(2, 4_000_000_000, memory=8_000_000_000)
    memory = physical_memory()
    if memory is None:
        pytest.skip("the system does not say how much memory it has")
    from reid_eval_cli.main import main

    assert main(["match", "--metric", "fpr", "--workers", "1", "--memory-budget", str(min(memory + 1, 2**50)),
                 "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--workers" in err and "use at most" in err and "Traceback" not in err


# ------------------------------------------------------------------ the 1e-5 contract for any norms


def _residual_in_feature_space(x: np.ndarray, y: np.ndarray, beta: float) -> np.ndarray:
    """e of every row of x ``[N, d]`` against rows y ``[M, d]``: ‖β (yᵀy + βI_d)⁻¹ x‖ (an independent form)."""
    a = y.T @ y + beta * np.eye(y.shape[1])
    return np.linalg.norm(beta * np.linalg.solve(a, x.T), axis=0)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("probe_scale, gallery_scale", [(600.0, 30.0), (1.0, 1.0), (1e4, 1e3), (5.0, 2000.0)])
def test_the_contract_holds_without_normalisation_for_any_norms(precision, probe_scale, gallery_scale):
    from reid_eval.features.spatial import SpatialFeatures
    from reid_eval.matching import fpr_distances
    from reid_eval.matching.reference import fpr_distance_reference

    rng = np.random.default_rng(5577)  # d = 32, gallery of 110 locations, probe of 7, h = 1, β = 0.01
    gallery = [(gallery_scale * np.maximum(rng.normal(0.6, 1.0, (110, 32)), 0)).astype(np.float32) for _ in range(3)]
    probes = [(probe_scale * np.maximum(rng.normal(0.6, 1.0, (7, 32)), 0)).astype(np.float32) for _ in range(2)]
    p = SpatialFeatures(np.concatenate(probes), np.arange(0, 15, 7), np.ones(14, np.float32))
    g = SpatialFeatures(np.concatenate(gallery), np.arange(0, 331, 110))
    D = fpr_distances(p, g, normalize=False, precision=precision, backend="numpy")
    for i, x in enumerate(probes):
        for j, y in enumerate(gallery):
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            exact = fpr_distance_reference(x64, y64, np.ones(7), beta=0.01, normalize=False)
            assert exact == pytest.approx(_residual_in_feature_space(x64, y64, 0.01).mean(), rel=1e-7, abs=1e-9)
            assert abs(float(D[i, j]) - exact) <= 1e-5, (i, j, float(D[i, j]), exact)
