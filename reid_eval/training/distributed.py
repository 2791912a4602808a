"""Distributed data parallel plumbing: the process's place in a ``torchrun`` job.

``torchrun`` starts one process per device and tells each its place through
the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``). Without those
variables training runs as a single process and nothing here communicates.
Backend: NCCL on CUDA, gloo on CPU. Every collective here is entered by all
ranks at the same point of the loop, so an error found on one rank (a
missing file, a non-finite loss) is made known to all before any of them
stops, and the job ends instead of hanging.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from reid_eval.errors import ReidEvalError

T = TypeVar("T")

#: Collective timeout: rank 0 evaluates (--eval-every) while the others wait
#: at a barrier, which on a large gallery takes minutes, far beyond NCCL's default.
TIMEOUT = _dt.timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    """This process's place: global ``rank`` of ``world_size``, ``local_rank`` of
    ``local_world_size`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints and logs and evaluates."""
        return self.rank == 0


def from_environment() -> DistContext:
    """The context ``torchrun`` put in the environment, or a single process without it."""
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) <= 1:
        return DistContext()
    try:
        return DistContext(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
                           local_rank=int(env.get("LOCAL_RANK", "0")),
                           local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")))
    except (KeyError, ValueError) as exc:
        raise ReidEvalError(f"WORLD_SIZE is set but the torchrun variable {exc} is missing or not a number; "
                            "launch distributed training with torchrun") from exc


def start(ctx: DistContext, device: torch.device) -> bool:
    """Join the process group (NCCL on CUDA, gloo on CPU); True when this call created it."""
    if not ctx.enabled or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size, timeout=TIMEOUT)
    return True


def stop(created: bool) -> None:
    if created and dist.is_initialized():
        dist.destroy_process_group()


def agree(ctx: DistContext, fn: Callable[[], T], main_only: bool = False) -> T | None:
    """Run ``fn`` (on rank 0 alone with ``main_only``) and raise on every rank if it failed on any.

    A user error (ReidEvalError, ValueError, OSError) raised by ``fn`` on one
    rank becomes a ReidEvalError on all ranks, naming that rank. Returns
    ``fn``'s result (None on the ranks that skipped it).
    """
    if not ctx.enabled:
        return fn()
    result, error = None, None
    if ctx.is_main or not main_only:
        try:
            result = fn()
        except (ReidEvalError, ValueError, OSError) as exc:
            error = " ".join(str(exc).split()) or type(exc).__name__
    errors: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(errors, (ctx.rank, error))
    failed = [(r, e) for r, e in errors if e is not None]
    if failed:
        rank, message = failed[0]
        raise ReidEvalError(message if rank == 0 else f"rank {rank}: {message}")
    return result


def broadcast(ctx: DistContext, obj: T) -> T:
    """Rank 0's ``obj`` on every rank (any picklable object, tensors included)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(ctx: DistContext, values: dict[str, float], flag: bool, device: torch.device
                    ) -> tuple[dict[str, float], bool]:
    """Each value averaged over the ranks, and whether ``flag`` is set on any rank (one all-reduce)."""
    if not ctx.enabled:
        return values, flag
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys] + [float(flag)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    out = t.tolist()
    return {k: v / ctx.world_size for k, v in zip(keys, out)}, out[-1] > 0


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()

