"""reid-eval: occluded person re-identification evaluation with FPR.

Pipeline (each sub-package imports only the ones to its left):
datasets -> model -> features -> matching -> evaluation -> report;
training uses model and matching.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reid-eval")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
