"""Stored distance matrices: their names, the features they were made from, reuse, storing and tile clean-up.

A matrix of a cache is stored as ``distances/<name>`` in that cache
(:func:`reid_eval.features.write_distances`): ``name`` is the parameters'
:attr:`~reid_eval.experiments.record.MatchParams.distance_name` for
query–gallery, ``<distance name>__aux-<probe>-<gallery>`` for the other pairs
of splits that re-ranking needs (:func:`matrix_name`). A stored matrix is
reused when it has the same distance identity, was made from the same
features (:func:`features_fingerprint`, both splits) and has the expected
shape (:func:`reusable`, :func:`stored_matrix`). While a reconstruction matrix is computed, its
finished tiles wait in ``<cache>.tiles/<unfused name>/`` (:func:`tile_folder`);
:func:`store_matrix` removes them once the matrix is stored. Plain matching,
re-ranking and the fast-reid preset all go through here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from reid_eval.experiments.record import GLOBAL_METRICS, MatchParams
from reid_eval.features import list_distances, read_distances, write_distances
from reid_eval.features.cache import split_fingerprint
from reid_eval.matching.tile_store import TileStore, tile_dir

__all__ = ["QUERY_GALLERY", "matrix_name", "features_fingerprint", "reusable", "stored_matrix", "store_matrix",
           "tile_folder", "discard_tiles"]

#: The (probe, gallery) splits of the matrix a match scores.
QUERY_GALLERY: tuple[str, str] = ("query", "gallery")


def matrix_name(params: MatchParams, splits: tuple[str, str] = QUERY_GALLERY) -> str:
    """``distances/<name>`` of ``params``' matrix between ``splits`` (module docstring)."""
    if tuple(splits) == QUERY_GALLERY:
        return params.distance_name
    return f"{params.distance_name}__aux-{splits[0]}-{splits[1]}"


def features_fingerprint(cache_file: Path, splits: tuple[str, str] = QUERY_GALLERY) -> str:
    """The fingerprints of the two splits' features, joined: a stored matrix is reused only under the same."""
    return "-".join(split_fingerprint(cache_file, s) for s in splits)


def reusable(cache_file: Path, params: MatchParams, splits: tuple[str, str] = QUERY_GALLERY) -> bool:
    """Whether ``distances/<matrix_name>`` holds ``params``' matrix: same distance identity, same features.

    Reads the attributes only (an auxiliary matrix can be gigabytes).
    """
    stored = list_distances(cache_file).get(matrix_name(params, splits))
    if stored is None or stored.get("features_fingerprint") != features_fingerprint(cache_file, splits):
        return False
    return MatchParams.from_json(stored).identity("distance") == params.identity("distance")


def stored_matrix(cache_file: Path, params: MatchParams, shape: tuple[int, int],
                  splits: tuple[str, str] = QUERY_GALLERY) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The stored matrix of ``params`` between ``splits`` and its attributes when :func:`reusable` and of
    ``shape`` ``(P, G)``; else None."""
    if not reusable(cache_file, params, splits):
        return None
    D, attrs = read_distances(cache_file, matrix_name(params, splits))
    return (D, attrs) if D.shape == tuple(shape) else None


def store_matrix(cache_file: Path, params: MatchParams, D: np.ndarray, attrs: Mapping[str, Any],
                 splits: tuple[str, str] = QUERY_GALLERY) -> str:
    """Store ``D`` as ``distances/<matrix_name>`` with ``attrs`` and the parameters; remove its finished tiles.

    The stored attributes are ``attrs`` (how it was made), the parameters'
    JSON, its ``distance_name`` and ``features_fingerprint``. Returns the name.
    """
    name = matrix_name(params, splits)
    write_distances(cache_file, name, D, {**attrs, **params.to_json(), "distance_name": name,
                                          "features_fingerprint": features_fingerprint(cache_file, splits)})
    if params.metric not in GLOBAL_METRICS:  # stored: its finished tiles are no longer needed
        discard_tiles(cache_file, params, splits)
    return name


def tile_folder(cache_file: Path, params: MatchParams, splits: tuple[str, str] = QUERY_GALLERY) -> Path:
    """Where the finished tiles of ``params``' reconstruction matrix wait (named without ``fuse``: the FPR part)."""
    return tile_dir(cache_file, matrix_name(dataclasses.replace(params, fuse=None), splits))


def discard_tiles(cache_file: Path, params: MatchParams, splits: tuple[str, str] = QUERY_GALLERY) -> None:
    """Remove the tile folder of ``params``' matrix between ``splits`` (finished, or to compute again)."""
    TileStore(tile_folder(cache_file, params, splits)).remove()
