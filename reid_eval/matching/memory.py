"""The memory budget of matching: its default, its environment variable and its parser, in one place.

``reid-eval match --memory-budget``, ``reid-eval demo`` and training's
evaluation all read the budget from here: a value that one accepts, the
others accept too (``1500000000``, ``1.5e9``, ``1.5GB``, ``500MiB``).
"""

from __future__ import annotations

import math
import os

from reid_eval.errors import ReidEvalError

__all__ = ["DEFAULT_MEMORY_BUDGET", "MEMORY_BUDGET_ENV", "BYTE_UNITS", "MAX_BYTES", "parse_bytes", "default_memory_budget",
           "physical_memory", "check_workers_fit"]

#: Default bound on the working memory of the matching tiles in flight, in bytes (the [P, G] result is extra).
DEFAULT_MEMORY_BUDGET = 1_500_000_000
#: Environment variable holding the default ``--memory-budget``.
MEMORY_BUDGET_ENV = "REID_EVAL_MEMORY_BUDGET"
#: Unit suffixes of :func:`parse_bytes` (case-insensitive), in bytes.
BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
              "kib": 2**10, "mib": 2**20, "gib": 2**30}
#: Largest byte count accepted (1 PiB): every count stays a machine integer (int64 in NumPy and the HDF5
#: attributes where the budget is recorded) with room for the sums the tile planner forms.
MAX_BYTES = 2**50


def parse_bytes(value: str | int) -> int:
    """A number of bytes from ``1500000000``, ``1.5e9``, ``1.5GB`` or ``500MiB`` (an int is taken as it is).

    Raises ValueError saying what is wrong (not a number of bytes; not
    finite, below 1 or above :data:`MAX_BYTES`); the caller adds the option
    or variable it came from.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        digits = text.rstrip("kmgib")
        try:
            number = float(digits) * BYTE_UNITS[text[len(digits):]]
        except (ValueError, KeyError):
            raise ValueError(f"{value!r} is not a number of bytes (e.g. 1500000000, 1.5e9, 1.5GB, 500MiB).") from None
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"{value!r} is not a finite positive number of bytes.")
    if number > MAX_BYTES:
        raise ValueError(f"{value!r} is more than {MAX_BYTES} bytes (1 PiB).")
    return int(number)


def default_memory_budget() -> int:
    """``REID_EVAL_MEMORY_BUDGET`` parsed by :func:`parse_bytes` when set, else :data:`DEFAULT_MEMORY_BUDGET`.

    Raises ReidEvalError naming the variable when its value is not a number of bytes.
    """
    raw = os.environ.get(MEMORY_BUDGET_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MEMORY_BUDGET
    try:
        return parse_bytes(raw)
    except ValueError as exc:
        raise ReidEvalError(f"{MEMORY_BUDGET_ENV}={raw!r}: {exc}") from None


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where the system does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_workers_fit(workers: int, budget: int, memory: int | None = None) -> None:
    """ReidEvalError unless ``workers`` local processes of ``budget`` bytes each fit in this machine's memory.

    Each Dask worker (``--workers``) plans its tiles within the whole
    ``--memory-budget``, so together they use ``workers × budget``.
    ``memory``: the machine's bytes (default :func:`physical_memory`; no
    check where unknown).
    """
    memory = physical_memory() if memory is None else memory
    if memory is not None and workers * budget > memory:
        raise ReidEvalError(
            f"--workers {workers} with --memory-budget {budget} bytes each need {workers * budget / 1e9:.3g} GB, "
            f"more than this machine's {memory / 1e9:.3g} GB; use at most {max(1, memory // budget)} worker(s) "
            "or a smaller --memory-budget")
