"""Tile tasks on a Dask distributed cluster (``--workers N`` / ``--scheduler tcp://host:port``).

How workers reach the data: through the file system. A task carries the
:class:`~reid_eval.matching.loop.TileJob` (the cache's absolute path, the
engine settings, the plan and the probe centre: a few kilobytes) and its
block indices; the worker reads its blocks from the HDF5 file itself and
commits each finished tile, with its refinement counts, into the tile folder
beside the cache (:mod:`reid_eval.matching.tile_store`); this process reads
the counts back from there when it assembles the matrix, so only the list of
committed tiles comes back over the network. Blocks are not sent with the task
because they are the large part: a tile's two blocks are hundreds of MB, so
sending them would route every feature byte through this process (its
memory would have to hold the blocks of every task in flight, breaking
``--memory-budget``) and through its network link, which then limits the
whole cluster. With an existing cluster (``--scheduler``) the cache must
therefore sit at the same absolute path on every worker (a shared or
network file system), writable for the tile folder; a worker that cannot
see it fails the match with a one-line error naming the file.

Ctrl-C. The local workers are started with SIGINT ignored, so that Ctrl-C
(sent to the whole process group by a terminal) stops only this process: it
closes the cluster, which ends the workers, and the user sees one line
instead of a traceback per worker. Finished tiles are committed; the rerun
resumes.

An existing scheduler is probed first (:func:`probe_scheduler`): a Dask
scheduler speaks first, a small framed handshake, so an address that answers
nothing within :data:`CONNECT_TIMEOUT_S` or answers something else is refused
in one line naming ``--scheduler``, instead of Dask waiting for ever or
reading a foreign reply as the size of a frame.

A worker runs the same tile task as this process
(:func:`~reid_eval.matching.loop.run_tile_task`, one BLAS thread per tile),
so the matrix is bit-identical to the single-process run for the same tile
plan, given the same BLAS library and CPU kind on the workers.
"""

from __future__ import annotations

import logging
import signal
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from reid_eval.errors import ReidEvalError
from reid_eval.matching.kernel import RefinementStats, TileWorkspace, single_blas_thread
from reid_eval.matching.kernel.backend import return_freed_blocks_to_the_os
from reid_eval.matching.loop import KeptProbes, TileJob, probe_room, run_tile_task, task_groups
from reid_eval.matching.tile_store import TileStore

__all__ = ["DaskRunner", "DASK_EXTRA_MESSAGE", "CONNECT_TIMEOUT_S", "probe_scheduler"]

DASK_EXTRA_MESSAGE = '--workers and --scheduler need Dask distributed: pip install "reid-eval[dask]"'


#: Seconds an existing scheduler has to accept the connection and send its handshake.
CONNECT_TIMEOUT_S = 15.0
#: Largest first frame a Dask scheduler's handshake takes (a few hundred bytes in practice).
_HANDSHAKE_MAX_BYTES = 1 << 20


def probe_scheduler(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ReidEvalError naming ``--scheduler`` unless a Dask scheduler answers at ``address`` (``tcp://host:port``).

    Connects, reads the 8-byte length that starts the scheduler's handshake
    and closes: silence for ``timeout`` seconds, a closed connection or a
    length no handshake has mean it is not a Dask scheduler. Addresses of
    other protocols (tls://, inproc://, ...) are left to Dask.
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme != "tcp":
        return
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ReidEvalError(f"--scheduler {address}: expected tcp://HOST:PORT")
    where = f"--scheduler {address}"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            head = b""
            while len(head) < 8:
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    raise ReidEvalError(f"{where}: the server closed the connection without a Dask handshake; "
                                        "is it a Dask scheduler?")
                head += chunk
    except TimeoutError:
        raise ReidEvalError(f"{where}: no Dask handshake within {timeout:g} s; is a Dask scheduler listening "
                            "there?") from None
    except OSError as exc:
        raise ReidEvalError(f"{where}: cannot connect ({exc.strerror or exc})") from None
    (length,) = struct.unpack("<Q", head)
    if not 0 < length <= _HANDSHAKE_MAX_BYTES:
        raise ReidEvalError(f"{where}: the server does not speak Dask's protocol; is it a Dask scheduler?")


@contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """SIGINT ignored while the block starts processes (they inherit it), restored after.

    Ignored, not blocked: a spawned interpreter keeps an inherited SIG_IGN
    but not a blocked mask. A Ctrl-C in the second or two the cluster takes
    to start is therefore lost; the next one stops the match. Only in the
    main thread, where Python's handler lives; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ReidEvalError(DASK_EXTRA_MESSAGE) from None
    return distributed


@dataclass
class _WorkerRun:
    """What one worker keeps between the tasks of one run: its prepared probe blocks and each thread's workspace.

    Fresh pages cost a fault each on first touch, and a task's workspace and
    probe blocks are hundreds of MB: kept here, a worker faults them in once
    per run instead of once per task, and reads and prepares a kept probe
    block once instead of once per gallery block.
    """

    run: str
    kept: KeptProbes
    threads: threading.local = field(default_factory=threading.local)

    def workspace(self) -> TileWorkspace:
        """The calling thread's workspace (one per worker thread: a workspace is never shared)."""
        if getattr(self.threads, "workspace", None) is None:
            self.threads.workspace = TileWorkspace()
        return self.threads.workspace


#: The run each worker of this process is in, by worker address (several with an in-process cluster).
_worker_runs: dict[str, _WorkerRun] = {}
_worker_runs_lock = threading.Lock()


def _worker_run(run: str, job: TileJob) -> _WorkerRun:
    """This worker's state for ``run``; the state of an earlier run is dropped first (never two at once).

    The kept blocks' room is the worker's share of the budget that its
    threads' tiles leave free (:func:`~reid_eval.matching.loop.probe_room`):
    each worker holds the whole ``--memory-budget``.
    """
    from distributed import get_worker

    worker = get_worker()
    with _worker_runs_lock:
        state = _worker_runs.get(worker.address)
        if state is None or state.run != run:
            _worker_runs.pop(worker.address, None)
            state = _worker_runs[worker.address] = _WorkerRun(run, KeptProbes(probe_room(job.plan, worker.state.nthreads)))
        return state


def _forget_run(run: str) -> None:
    """Drop what the workers of this process keep for ``run`` (its probe blocks and workspaces)."""
    with _worker_runs_lock:
        for address in [a for a, state in _worker_runs.items() if state.run == run]:
            del _worker_runs[address]


def _task(job: TileJob, run: str, gallery_index: int, probe_indices: Sequence[int], store_dir: str) -> list[int]:
    """Runs on a worker: the tiles of one task, each committed with its counts; returns their probe blocks."""
    return_freed_blocks_to_the_os()
    state = _worker_run(run, job)
    store = TileStore(store_dir)
    committed: list[int] = []

    def commit(gi: int, pi: int, tile: Any, counts: RefinementStats) -> None:
        store.commit(gi, pi, tile, counts)
        committed.append(pi)

    with single_blas_thread():
        run_tile_task(job, gallery_index, probe_indices, commit, workspace=state.workspace(), kept=state.kept)
    return committed


class DaskRunner:
    """Tile tasks on a LocalCluster of ``workers`` single-thread workers, or on the cluster at ``scheduler``.

    ``parallel``: tasks the cluster runs at once (how finely the tiles are
    grouped into tasks). The sink must be the run's
    :class:`~reid_eval.matching.tile_store.TileStore`: workers commit into it.
    """

    def __init__(self, *, workers: int | None, scheduler: str | None, parallel: int, processes: bool = True) -> None:
        self.workers, self.scheduler, self.parallel, self.processes = workers, scheduler, int(parallel), processes
        self.name = f"dask-local:{workers}" if workers is not None else f"dask:{scheduler}"

    def run(self, job: TileJob, pending: Sequence[tuple[int, int]], sink: TileStore,
            done: Callable[[int, int], None]) -> None:
        distributed = _import_distributed()
        cluster, run = None, ""
        try:
            if self.scheduler is not None:
                probe_scheduler(self.scheduler)
                try:
                    client = distributed.Client(self.scheduler, timeout=f"{CONNECT_TIMEOUT_S:g}s")
                except (OSError, TimeoutError, ValueError) as exc:
                    raise ReidEvalError(f"--scheduler {self.scheduler}: cannot connect ({' '.join(str(exc).split())})") from None
            else:
                with _children_ignore_sigint():  # Ctrl-C reaches this process only (module docstring)
                    cluster = distributed.LocalCluster(
                        n_workers=int(self.workers), threads_per_worker=1, processes=self.processes, memory_limit=0,
                        dashboard_address=None, silence_logs=logging.ERROR,
                    )
                client = distributed.Client(cluster)
            run = uuid.uuid4().hex  # what the workers keep between this run's tasks is keyed by it
            try:
                futures = {
                    client.submit(_task, job, run, gi, list(pis), str(sink.directory), pure=False, priority=-k): gi
                    for k, (gi, pis) in enumerate(task_groups(pending, self.parallel))
                }
                for fut in distributed.as_completed(futures):
                    gi = futures[fut]
                    for pi in fut.result():
                        done(gi, pi)
                if cluster is None:
                    client.run(_forget_run, run)  # a cluster that lives on frees the blocks now, not at the next run
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()
                if not self.processes:
                    _forget_run(run)  # in-process workers kept them in this process

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A Dask client on this runner's cluster (a LocalCluster started and closed around it, or ``scheduler``'s)."""
        distributed = _import_distributed()
        cluster = None
        try:
            if self.scheduler is not None:
                probe_scheduler(self.scheduler)
                try:
                    client = distributed.Client(self.scheduler, timeout=f"{CONNECT_TIMEOUT_S:g}s")
                except (OSError, TimeoutError, ValueError) as exc:
                    raise ReidEvalError(f"--scheduler {self.scheduler}: cannot connect ({' '.join(str(exc).split())})") from None
            else:
                with _children_ignore_sigint():  # Ctrl-C reaches this process only (module docstring)
                    cluster = distributed.LocalCluster(
                        n_workers=int(self.workers), threads_per_worker=1, processes=self.processes, memory_limit=0,
                        dashboard_address=None, silence_logs=logging.ERROR,
                    )
                client = distributed.Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def map_calls(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        """``fn(*call)`` for every call on the cluster (in order of priority: first calls first), results as they come.

        Each call runs on one BLAS thread of a worker (``fn`` sees the
        worker's own file system: what it commits, it commits there).
        """
        distributed = _import_distributed()
        with self.session() as client:
            futures = [client.submit(_on_one_blas_thread, fn, *call, pure=False, priority=-k)
                       for k, call in enumerate(calls)]
            for fut in distributed.as_completed(futures):
                yield fut.result()


def _on_one_blas_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs on a worker: ``fn(*args)`` with one BLAS thread and large freed buffers given back at once."""
    return_freed_blocks_to_the_os()
    with single_blas_thread():
        return fn(*args)
