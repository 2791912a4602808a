"""datasets stage: dataset specs, finding a dataset on disk, and its manifest.

Typical use::

    root = find_dataset_root("market1501", Path("/data"))   # the dataset's own folder
    table = load_manifest("market1501", root)                # DataFrame: path, pid, camid, split
    validate_counts(get_spec("market1501"), table)           # ReidEvalError unless published counts

Specs are the TOML files of the ``data_manifests`` package, one per dataset.
"""

from reid_eval.datasets.manifest import (
    COLUMNS,
    CountMismatch,
    ScannedDataset,
    SplitCount,
    check_data_root,
    count_mismatches,
    describe_mismatches,
    find_dataset_root,
    find_split_folder,
    load_manifest,
    locate_dataset,
    manifest_csv,
    manifest_sha256,
    scan_dataset,
    split_counts,
    validate_counts,
    write_manifest,
)
from reid_eval.datasets.naming import SCHEMES, NamingScheme, get_scheme
from reid_eval.datasets.spec import (
    KINDS,
    SPLIT_ORDER,
    DatasetSpec,
    SplitSpec,
    get_spec,
    known_datasets,
    load_spec_file,
)

__all__ = [
    "COLUMNS",
    "KINDS",
    "SCHEMES",
    "SPLIT_ORDER",
    "CountMismatch",
    "DatasetSpec",
    "NamingScheme",
    "ScannedDataset",
    "SplitCount",
    "SplitSpec",
    "check_data_root",
    "count_mismatches",
    "describe_mismatches",
    "find_dataset_root",
    "find_split_folder",
    "get_scheme",
    "get_spec",
    "known_datasets",
    "load_manifest",
    "load_spec_file",
    "locate_dataset",
    "manifest_csv",
    "manifest_sha256",
    "scan_dataset",
    "split_counts",
    "validate_counts",
    "write_manifest",
]
