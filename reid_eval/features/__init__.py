"""features stage: the HDF5 feature cache and the extraction that fills it.

The cache's readers (and ``SpatialFeatures``) are imported here eagerly and
need only h5py and NumPy, so `match` and `report` start without torch. The
extraction side — ``extract_dataset``, ``resolve_device`` and the image
preprocessing — imports torch and is loaded on first use (PEP 562 module
``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any

from reid_eval.features.spatial import SpatialFeatures
from reid_eval.features.cache import (
    SCHEMA_VERSION,
    SPLITS,
    CacheSource,
    SplitData,
    SplitIndex,
    cache_key,
    cache_path,
    iter_cache_files,
    list_distances,
    open_cache,
    read_attrs,
    read_distances,
    read_image_foreground,
    read_split,
    read_split_index,
    split_complete,
    split_status,
    write_distances,
)

# name -> module that defines it; these import torch, so they load on first access.
_LAZY = {
    "extract_dataset": "reid_eval.features.extract",
    "extract_network": "reid_eval.features.extract",
    "checkpoint_network": "reid_eval.features.extract",
    "FeatureNetwork": "reid_eval.features.extract",
    "extract_with_module": "reid_eval.features.module",
    "module_network": "reid_eval.features.module",
    "ModuleSettings": "reid_eval.features.module",
    "resolve_device": "reid_eval.features.extract",
    "RESIZE_MODES": "reid_eval.features.preprocess",
    "Preprocessing": "reid_eval.features.preprocess",
    "load_image_array": "reid_eval.features.preprocess",
    "load_rgb": "reid_eval.features.preprocess",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "CacheSource",
    "SCHEMA_VERSION",
    "SPLITS",
    "SpatialFeatures",
    "SplitData",
    "SplitIndex",
    "cache_key",
    "cache_path",
    "iter_cache_files",
    "list_distances",
    "open_cache",
    "read_attrs",
    "read_distances",
    "read_image_foreground",
    "read_split",
    "read_split_index",
    "split_complete",
    "split_status",
    "write_distances",
    *_LAZY,
]
