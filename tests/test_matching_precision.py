"""precision="auto": float32 or float64 chosen per device from its measured GEMM rates (issue 12).

A GPU with full-rate float64 (H100/H200) computes the exact float64 path as
fast as float32, so there the float32 error bound and refinement only cost
time; CPUs (float64 at half rate) keep float32. The choice is made once per
device, recorded with the tiles and in the provenance, and the tiles then
hold exactly what the chosen precision computes.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_match_streaming import write_cache
from reid_eval.features import read_split
from reid_eval.matching import fpr
from reid_eval.matching.fpr import AUTO_FLOAT64_RATIO, float64_slowdown, fpr_distances, resolve_precision
from reid_eval.matching.streaming import fpr_distances_from_cache


@pytest.fixture()
def device_ratio(monkeypatch):
    """Pretend the CPU has the float64/float32 time ratio given to the returned setter."""
    def set_ratio(ratio: float) -> None:
        monkeypatch.setitem(fpr._slowdowns, ("numpy", 0), ratio)

    return set_ratio


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("precision"), n_query=7, n_gallery=11, d=24, m=(3, 9), seed=5)


def test_the_measured_ratio_is_positive_and_measured_once():
    first = float64_slowdown(np)
    assert first > 0
    assert float64_slowdown(np) == first  # cached per device: the choice does not flip within a process


@pytest.mark.parametrize(("ratio", "expected"), [(1.0, "float64"), (AUTO_FLOAT64_RATIO, "float64"), (2.0, "float32"), (30.0, "float32")])
def test_auto_picks_float64_only_where_it_is_about_as_fast(device_ratio, ratio, expected):
    device_ratio(ratio)
    assert resolve_precision("auto", np) == expected
    assert resolve_precision("float32", np) == "float32" and resolve_precision("float64", np) == "float64"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half", np)


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_in_memory_auto_computes_exactly_what_the_chosen_precision_does(device_ratio, cache, ratio):
    device_ratio(ratio)
    q, g = read_split(cache, "query").spatial, read_split(cache, "gallery").spatial
    chosen = "float64" if ratio <= AUTO_FLOAT64_RATIO else "float32"
    auto = fpr_distances(q, g, backend="numpy", precision="auto")
    assert auto.dtype == np.dtype(chosen)
    np.testing.assert_array_equal(auto, fpr_distances(q, g, backend="numpy", precision=chosen))


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_streamed_auto_records_its_choice_with_the_tiles(device_ratio, cache, tmp_path, ratio):
    device_ratio(ratio)
    chosen = "float64" if ratio <= AUTO_FLOAT64_RATIO else "float32"
    auto = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=2, resume_dir=tmp_path / "tiles")
    fixed = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=2, precision=chosen)
    assert auto.plan.precision == chosen and auto.provenance()["precision"] == chosen
    assert auto.distances.dtype == np.dtype(chosen)
    np.testing.assert_array_equal(auto.distances, fixed.distances)
    # A resume on a device that would choose the other precision starts over instead of mixing tiles.
    device_ratio(3.0 if ratio <= AUTO_FLOAT64_RATIO else 1.0)
    again = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=2, resume_dir=tmp_path / "tiles")
    assert again.tiles_resumed == 0 and again.plan.precision != chosen
