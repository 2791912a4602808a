"""The ``"tf32x3"`` operands: float32 values split into TF32 parts, multiplied on tensor cores.

TF32 keeps 11 significant bits (10 stored). A float32 value a splits into
hi = tf32(a) and lo = tf32(a − hi) (a − hi is exact in float32), with
|a − hi − lo| ≤ 2⁻²²·|a|. Three TF32 products, hi·hi + hi·lo + lo·hi,
then give a·b up to about 3·2⁻²²·|a·b| (:data:`~reid_eval.matching.kernel.accuracy.TF32X3_SPLIT`
in the error model), each product exact (22 bits) and accumulated in float32.

The three products are one GEMM of depth 3d: the gallery operand holds
``[hi | hi | lo]`` per row and the probe operand ``[hi | lo | hi]``
(:func:`stack_operand`), so a tile, the shortlist's small products and the
memory model keep their one product, only 3× deeper. Every part is already
a TF32 value, so whatever rounding the tensor cores apply to their inputs is
exact, and on the NumPy backend (no tensor cores) the same operands in a
float32 GEMM compute the same products: the emulation the tests run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from reid_eval.matching.kernel.backend import is_host

__all__ = ["TF32_DROPPED_BITS", "round_tf32", "stack_operand", "tensor_cores"]

#: float32 mantissa bits that TF32 does not keep (23 stored − 10).
TF32_DROPPED_BITS = 13
_HALF = 1 << (TF32_DROPPED_BITS - 1)
_KEEP = ~((1 << TF32_DROPPED_BITS) - 1) & 0xFFFFFFFF
#: The order of the parts along the depth of each operand (gallery, probe): their products pair hi·hi, hi·lo, lo·hi.
GALLERY_PARTS, PROBE_PARTS = ("hi", "hi", "lo"), ("hi", "lo", "hi")


def round_tf32(xp: ModuleType, a: Any) -> Any:
    """float32 ``a`` rounded to the nearest TF32 value (ties away from zero), as a new float32 array.

    On the bits: adding half of the dropped part to the magnitude and
    clearing it rounds the significand (a carry moves into the exponent as
    it should); finite inputs only.
    """
    bits = xp.ascontiguousarray(a, dtype=xp.float32).view(xp.uint32)
    rounded = (bits + xp.uint32(_HALF)) & xp.uint32(_KEEP)
    return rounded.view(xp.float32)


def stack_operand(xp: ModuleType, a: Any, parts: tuple[str, str, str], out: Any = None) -> Any:
    """``[n, 3d]`` float32 TF32 parts of float32 rows ``a`` ``[n, d]``, in the order ``parts`` (into ``out``).

    ``parts``: :data:`GALLERY_PARTS` or :data:`PROBE_PARTS`.
    """
    n, d = a.shape
    if out is None:
        out = xp.empty((n, 3 * d), dtype=xp.float32)
    a = xp.asarray(a, dtype=xp.float32)
    hi = round_tf32(xp, a)
    lo = round_tf32(xp, a - hi)  # exact in float32
    for k, part in enumerate(parts):
        out[:, k * d : (k + 1) * d] = hi if part == "hi" else lo
    return out


@contextlib.contextmanager
def tensor_cores(xp: ModuleType, active: bool = True) -> Iterator[None]:
    """Inside: float32 GEMMs of ``xp`` run on TF32 tensor cores (CuPy on compute capability ≥ 8), else nothing.

    CuPy's compute type is process-wide, so it is set around the products of
    split operands only and restored after: a float32 tile outside keeps
    full float32 products. Operands that are not TF32 values must never be
    multiplied inside.
    """
    if not active or is_host(xp) or int(xp.cuda.Device().compute_capability) < 80:
        yield
        return
    from cupy._core import _routines_linalg as linalg

    before = linalg.get_compute_type(xp.float32)
    linalg.set_compute_type(xp.float32, linalg.COMPUTE_TYPE_TF32)
    try:
        yield
    finally:
        linalg.set_compute_type(xp.float32, before)
