"""Tile tasks on a Dask distributed cluster (``--workers N`` / ``--scheduler tcp://host:port``).

How workers reach the data: through the file system. A task carries the
cache's absolute path, its block indices and the FPR parameters (a few
hundred bytes); the worker reads its blocks from the HDF5 file itself and
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

A worker computes a tile exactly as this process would (one BLAS thread per
tile), so the matrix is bit-identical to the single-process run for the same
tile plan, given the same BLAS library and CPU kind on the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from reid_eval.errors import ReidEvalError
from reid_eval.matching.fpr import RefinementStats
from reid_eval.matching.tile_store import TileStore
from reid_eval.matching.tiles import TilePlan, TileSource, run_tile_task

__all__ = ["run_on_dask", "DASK_EXTRA_MESSAGE"]

DASK_EXTRA_MESSAGE = '--workers and --scheduler need Dask distributed: pip install "reid-eval[dask]"'


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ReidEvalError(DASK_EXTRA_MESSAGE) from None
    return distributed


def _task(src: TileSource, plan: TilePlan, gallery_index: int, probe_indices: Sequence[int], store_dir: str) -> list[int]:
    """Runs on a worker: the tiles of one task, each committed with its counts; returns their probe blocks."""
    store = TileStore(store_dir)
    committed: list[int] = []

    def commit(gi: int, pi: int, tile: Any, counts: RefinementStats) -> None:
        store.commit(gi, pi, tile, counts)
        committed.append(pi)

    run_tile_task(src, plan, gallery_index, probe_indices, commit)
    return committed


def run_on_dask(src: TileSource, plan: TilePlan, groups: Sequence[tuple[int, list[int]]], store: TileStore,
                tracker: Any, *, workers: int | None, scheduler: str | None, processes: bool = True) -> None:
    """Run the tile ``groups`` on a LocalCluster of ``workers`` single-thread workers or on ``scheduler``."""
    distributed = _import_distributed()
    cluster = None
    try:
        if scheduler is not None:
            try:
                client = distributed.Client(scheduler, timeout="15s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise ReidEvalError(f"--scheduler {scheduler}: cannot connect ({' '.join(str(exc).split())})") from None
        else:
            cluster = distributed.LocalCluster(
                n_workers=int(workers), threads_per_worker=1, processes=processes, memory_limit=0,
                dashboard_address=None, silence_logs=logging.ERROR,
            )
            client = distributed.Client(cluster)
        try:
            futures = {
                client.submit(_task, src, plan, gi, list(pis), str(store.directory), pure=False, priority=-k): gi
                for k, (gi, pis) in enumerate(groups)
            }
            for fut in distributed.as_completed(futures):
                gi = futures[fut]
                for pi in fut.result():
                    tracker.tile_done(gi, pi)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
