"""Test hooks that stop a process at a chosen point of its work, deterministically.

A resume test must kill its subprocess at a known step, not when a poll loop
happens to notice progress: under load the child can finish, or not have
started, before the parent looks. With ``ENV=k`` in its environment the
process sends itself SIGKILL on the ``k``-th call of the hook (``ENV=k:STOP``:
SIGSTOP, so a test can inspect a process that holds a lock). Without the
variable the hook is ``None`` and costs nothing.
"""

from __future__ import annotations

import itertools
import os
import signal
from typing import Callable


def kill_hook(env: str) -> Callable[[], None] | None:
    """The hook named by environment variable ``env``, or ``None`` when it is unset or empty."""
    raw = os.environ.get(env)
    if not raw:
        return None
    count, _, how = raw.partition(":")
    target = int(count)
    calls = itertools.count(1)  # next() is atomic: threads that call the hook side by side count once each
    sig = signal.SIGSTOP if how.upper() == "STOP" else signal.SIGKILL

    def hook() -> None:
        if next(calls) == target:
            os.kill(os.getpid(), sig)

    return hook
