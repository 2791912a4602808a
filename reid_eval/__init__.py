"""reid-eval: occluded person re-identification evaluation with FPR.

Pipeline (each sub-package imports only the ones to its left):
datasets -> model -> features -> matching -> evaluation -> report;
training uses model and matching.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# OpenBLAS worker threads spin for about 2^28 cycles (~0.1 s) after every BLAS
# call before they sleep. The matching engine alternates large GEMMs with
# NumPy passes run on Python threads, and the spinning workers take the cores
# those threads need (measured: the FPR engine 1.37x a bare GEMM with the
# default, 1.22x with this). A short spin only costs a wake-up of a few
# microseconds per BLAS call. It takes effect when reid_eval is imported
# before NumPy (as the `reid-eval` command does); setdefault keeps a value the
# user chose.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

try:
    __version__ = version("reid-eval")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
