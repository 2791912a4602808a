"""features stage."""

from reid_eval.features.spatial import SpatialFeatures  # noqa: F401
from reid_eval.features.cache import (  # noqa: F401
    SCHEMA_VERSION,
    SPLITS,
    CacheSource,
    SplitData,
    SplitIndex,
    cache_key,
    cache_path,
    list_distances,
    open_cache,
    read_attrs,
    read_distances,
    read_image_foreground,
    read_split,
    read_split_index,
    split_status,
    write_distances,
)
from reid_eval.features.extract import extract_dataset, iter_cache_files, resolve_device  # noqa: F401
from reid_eval.features.preprocess import RESIZE_MODES, Preprocessing, load_image_array, load_rgb  # noqa: F401
