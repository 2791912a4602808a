"""Reusable working buffers of one thread's consecutive tiles."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from reid_eval.matching.kernel.backend import large_empty, module_of

__all__ = ["TileWorkspace"]


class TileWorkspace:
    """Reusable buffers for the tiles computed one after another by one thread.

    Slots: ``"product"``, the ``[ΣM + g, ΣN]`` tile product;
    ``"operand"``, the gallery rows with the centre rows w stacked below;
    ``"probes"``, the probe operand of :func:`prepare_probes`; ``"e2"``, the
    tile's float64 residuals ``[g, ΣN]``. A tile's product and operands are
    hundreds of MB; allocated afresh for every tile, their pages would be
    faulted in and zeroed by the OS each time (glibc maps every large block
    anew), a cost of the order of the tile's epilogue. Pass one workspace to
    consecutive :func:`~reid_eval.matching.kernel.prepare_probes` and
    :func:`~reid_eval.matching.kernel.fpr_tile` calls of one thread (never
    share it between threads);
    each slot grows to the largest tile and is freed with the workspace.
    Buffers come from :func:`~reid_eval.matching.kernel.backend.large_empty`
    (huge pages advised on Linux).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}

    def array(self, xp: ModuleType, shape: tuple[int, int], dtype: Any, slot: str = "product") -> Any:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` on ``xp``, in the reused buffer ``slot``."""
        nbytes = int(shape[0]) * int(shape[1]) * np.dtype(dtype).itemsize
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.nbytes < nbytes or module_of(buffer) is not xp:
            self._buffers.pop(slot, None)  # free the old one first: never two at once
            buffer = self._buffers[slot] = large_empty(xp, (max(nbytes, 1),), xp.uint8)
        return buffer[:nbytes].view(dtype).reshape(shape)
