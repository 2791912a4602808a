"""precision="auto": float32 or float64 chosen per device from its GEMM rates.

A GPU with full-rate float64 (H100/H200) computes the exact float64 path as
fast as float32, so there the float32 error bound and refinement only cost
time; CPUs (float64 at half rate) keep float32. The choice is made once per
run, recorded with the tiles and in the provenance, and the tiles then hold
exactly what the chosen precision computes.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_match_streaming import write_cache
from reid_eval.features import read_split
from reid_eval.matching import fpr_distances, settings
from reid_eval.matching.kernel.accuracy import (
    AUTO_FLOAT64_RATIO,
    gemm_times,
    precision_for_times,
    resolve_precision,
)
from reid_eval.matching.streaming import fpr_distances_from_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("precision"), n_query=7, n_gallery=11, d=24, m=(3, 9), seed=5)


@pytest.fixture()
def device_picks(monkeypatch):
    """Make "auto" resolve to the given precision, as on a device with other GEMM rates."""
    def pick(chosen: str) -> None:
        def resolve(precision: str, xp) -> str:
            return chosen if precision == "auto" else precision

        monkeypatch.setattr(settings, "resolve_precision", resolve)  # the one place "auto" is resolved

    return pick


@pytest.mark.parametrize(("slowdown", "expected"),
                         [(1.0, "float64"), (AUTO_FLOAT64_RATIO, "float64"), (2.0, "float32"), (32.0, "float32")])
def test_float64_only_where_it_is_about_as_fast(slowdown, expected):
    # a device without tensor cores: three products cost three times one
    assert precision_for_times({"float32": 1.0, "float64": slowdown, "tf32x3": 3.0}) == expected


def test_a_cpu_always_gets_float32_and_explicit_choices_stand():
    assert resolve_precision("auto", np) == "float32"  # no timing on a CPU: it could flip on a loaded machine
    assert resolve_precision("float32", np) == "float32" and resolve_precision("float64", np) == "float64"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("half", np)


def test_the_measured_times_are_positive_and_measured_once():
    first = gemm_times(np)
    assert min(first.values()) > 0
    assert gemm_times(np) == first  # cached per device: the choice does not flip within a process


@pytest.mark.parametrize("chosen", ["float64", "float32"])
def test_in_memory_auto_computes_exactly_what_the_chosen_precision_does(device_picks, cache, chosen):
    q, g = read_split(cache, "query").spatial, read_split(cache, "gallery").spatial
    fixed = fpr_distances(q, g, backend="numpy", precision=chosen)
    device_picks(chosen)
    auto = fpr_distances(q, g, backend="numpy", precision="auto")
    assert auto.dtype == np.dtype(chosen)
    np.testing.assert_array_equal(auto, fixed)


@pytest.mark.parametrize("chosen", ["float64", "float32"])
def test_streamed_auto_records_its_choice_with_the_tiles(device_picks, cache, tmp_path, chosen):
    fixed = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=2, precision=chosen)
    device_picks(chosen)
    auto = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=2, resume_dir=tmp_path / "tiles")
    assert auto.plan.precision == chosen and auto.provenance()["precision"] == chosen
    assert auto.distances.dtype == np.dtype(chosen)
    np.testing.assert_array_equal(auto.distances, fixed.distances)
    # A resume where "auto" picks the other precision starts over instead of mixing tiles.
    device_picks("float32" if chosen == "float64" else "float64")
    again = fpr_distances_from_cache(cache, backend="numpy", block_rows=20, threads=2, resume_dir=tmp_path / "tiles")
    assert again.tiles_resumed == 0 and again.plan.precision != chosen


def test_engine_settings_are_checked_at_the_edge_and_fix_auto_once(cache):
    import pickle

    from reid_eval.errors import ReidEvalError
    from reid_eval.matching import EngineSettings

    fixed = EngineSettings(backend="numpy").resolved()
    assert (fixed.precision, fixed.backend) == ("float32", "numpy") and fixed.resolved() == fixed
    assert pickle.loads(pickle.dumps(fixed)) == fixed  # carried to Dask workers as it is
    for field, bad in (("beta", 0.0), ("beta", float("nan")), ("float32_atol", -1.0), ("float32_atol", "x")):
        with pytest.raises(ValueError, match=f"{field} must be positive"):
            EngineSettings(**{field: bad}).resolved()
    with pytest.raises(ReidEvalError, match="beta must be positive"):  # the streamed engine says it in one line
        fpr_distances_from_cache(cache, backend="numpy", beta=0.0)
    # keywords override a settings value, field by field
    given = fpr_distances_from_cache(cache, settings=EngineSettings(weighted=False, backend="numpy"), block_rows=20,
                                     threads=1)
    dsr = fpr_distances_from_cache(cache, weighted=False, backend="numpy", block_rows=20, threads=1)
    np.testing.assert_array_equal(given.distances, dsr.distances)
