"""The engine's settings: one frozen value, checked once, carried to every tile (and Dask worker)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from reid_eval.matching.definition import DEFAULT_BETA
from reid_eval.matching.kernel.accuracy import DEFAULT_FLOAT32_ATOL, resolve_precision
from reid_eval.matching.kernel.backend import get_array_module

__all__ = ["EngineSettings"]


@dataclass(frozen=True)
class EngineSettings:
    """What a distance matrix is computed with (part of its identity), small and picklable.

    beta: ridge β (> 0); weighted: FPR (foreground-weighted, Eq. 5) or DSR
    (Eq. 4); normalize: L2-normalise every location first (the authors' code
    does); precision: ``"float32"``, ``"float64"``, ``"tf32x3"`` or ``"auto"``
    (:func:`~reid_eval.matching.kernel.accuracy.resolve_precision`);
    float32_atol: bound on the float32 error of each distance (> 0); backend:
    ``"numpy"``, ``"cupy"`` or ``"auto"``.

    Build it with the caller's values and call :meth:`resolved` once at the
    engine's edge: it checks every field and fixes ``"auto"`` precision and
    backend, so that everything downstream computes the same way.
    """

    beta: float = DEFAULT_BETA
    weighted: bool = True
    normalize: bool = True
    precision: str = "auto"
    float32_atol: float = DEFAULT_FLOAT32_ATOL
    backend: str = "auto"

    def resolved(self) -> EngineSettings:
        """These settings checked, with ``"auto"`` backend and precision fixed for this device.

        Raises ValueError naming the bad field.
        """
        beta, atol = _positive(self.beta, "beta"), _positive(self.float32_atol, "float32_atol")
        xp = get_array_module(self.backend)
        return replace(self, beta=beta, weighted=bool(self.weighted), normalize=bool(self.normalize),
                       precision=resolve_precision(self.precision, xp), float32_atol=atol,
                       backend="numpy" if xp is np else "cupy")

    @property
    def xp(self) -> Any:
        """The array module of the (resolved) backend."""
        return get_array_module(self.backend)

    @property
    def out_dtype(self) -> type:
        """dtype of the distances: float32 (float32, tf32x3), or float64 with ``precision="float64"``."""
        return np.float64 if self.precision == "float64" else np.float32

    def identity(self) -> dict[str, Any]:
        """The fields as recorded in a tile folder's identity (resolved settings)."""
        return {"beta": self.beta, "weighted": self.weighted, "normalize": self.normalize, "precision": self.precision,
                "float32_atol": self.float32_atol, "backend": self.backend}


def _positive(value: Any, name: str) -> float:
    """``value`` as a finite positive float; ValueError naming ``name`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive, got {value}")
    return number
