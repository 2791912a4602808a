"""The match run's contract (reid_eval.experiments.record): validation, names, JSON round trips."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_eval.errors import ReidEvalError
from reid_eval.experiments import (
    GLOBAL_METRICS,
    MATCH_METRICS,
    PAPER_BETA,
    RESULT_KEYS,
    MatchParams,
    MatchResult,
)
from reid_eval.matching import DEFAULT_BETA

SHA = "0123456789abcdef" * 4


@st.composite
def match_params(draw) -> MatchParams:
    """Any valid MatchParams."""
    metric = draw(st.sampled_from(MATCH_METRICS))
    kwargs = {"metric": metric, "ap": draw(st.sampled_from(("standard", "market1501", "market1501-valid")))}
    kwargs["checkpoint_sha256"] = draw(st.sampled_from(("", SHA, "f" * 64)))
    kwargs["backend"] = draw(st.sampled_from(("auto", "numpy", "cupy")))
    if metric not in GLOBAL_METRICS:
        kwargs["beta"] = draw(st.sampled_from((PAPER_BETA, 0.1, 0.010000001, 0.010000002))
                              | st.floats(1e-6, 10.0, allow_nan=False, allow_infinity=False))
        extra = draw(st.sampled_from(("none", "shortlist", "fuse")))
        if extra == "shortlist":
            kwargs["shortlist"] = draw(st.integers(1, 200))
            kwargs["shortlist_metric"] = draw(st.sampled_from(GLOBAL_METRICS))
        elif extra == "fuse":
            kwargs["fuse"] = draw(st.sampled_from((0.0, 0.25, 0.5, 1.0)) | st.floats(0.0, 1.0))
            kwargs["fuse_global"] = draw(st.sampled_from(GLOBAL_METRICS))
    return MatchParams(**kwargs).validate()


def test_one_paper_beta():
    assert PAPER_BETA == DEFAULT_BETA == 0.01
    assert MatchParams().beta == PAPER_BETA


def test_the_paper_run_has_the_short_names():
    params = MatchParams(metric="fpr", checkpoint_sha256=SHA)
    assert params.distance_name == "fpr"
    assert params.results_file_name("partial_reid") == "partial_reid__fpr__ckpt-01234567.json"


def test_each_parameter_has_its_own_name_part():
    base = MatchParams(metric="fpr", checkpoint_sha256=SHA)
    cases = {
        "beta": (dataclasses.replace(base, beta=0.1), "fpr__beta0.1", "__ckpt-01234567"),
        "shortlist": (dataclasses.replace(base, shortlist=100), "fpr__shortlist100", "__ckpt-01234567"),
        "shortlist_metric": (
            dataclasses.replace(base, shortlist=100, shortlist_metric="cosine"),
            "fpr__shortlist100__shortlist-by-cosine",
            "__ckpt-01234567",
        ),
        "fuse": (dataclasses.replace(base, fuse=0.5), "fpr+euclidean__fuse0.5", "__ckpt-01234567"),
        "fuse_global": (dataclasses.replace(base, fuse=0.5, fuse_global="cosine"), "fpr+cosine__fuse0.5", "__ckpt-01234567"),
        # the official averages have a name no file of the earlier valid-only market1501 average has
        "ap": (dataclasses.replace(base, ap="market1501"), "fpr", "__ap-market1501-official__ckpt-01234567"),
        "ap valid": (dataclasses.replace(base, ap="market1501-valid"), "fpr", "__ap-market1501-valid__ckpt-01234567"),
        "checkpoint": (dataclasses.replace(base, checkpoint_sha256="ab" * 32), "fpr", "__ckpt-abababab"),
    }
    for what, (params, distance, tail) in cases.items():
        assert params.validate().distance_name == distance, what
        assert params.results_file_name("d") == f"d__{distance}{tail}.json", what
    # provenance changes neither name
    for params in (dataclasses.replace(base, backend="numpy"), dataclasses.replace(base, max_rank=20)):
        assert params.results_file_name("d") == base.results_file_name("d")


@settings(max_examples=300, deadline=None)
@given(match_params(), match_params())
def test_names_are_equal_exactly_when_identities_are(a, b):
    assert (a.distance_name == b.distance_name) == (a.identity("distance") == b.identity("distance"))
    assert (a.results_file_name("d") == b.results_file_name("d")) == (a.identity() == b.identity())


def test_fields_that_do_not_apply_are_normalised():
    assert MatchParams(metric="euclidean", beta=0.5).beta is None
    assert MatchParams(metric="euclidean", beta=0.5).identity() == MatchParams(metric="euclidean").identity()
    assert MatchParams(metric="fpr", shortlist_metric="cosine").shortlist_metric is None
    assert MatchParams(metric="fpr", fuse_global="cosine").fuse_global is None
    assert MatchParams(metric="fpr", fuse=0.5, fuse_global=None).fuse_global == "euclidean"


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"metric": "l1"}, "--metric"),
        ({"beta": math.inf}, "--beta"),
        ({"beta": math.nan}, "--beta"),
        ({"beta": 0.0}, "--beta"),
        ({"beta": -0.01}, "--beta"),
        ({"fuse": math.nan}, "--fuse"),
        ({"fuse": 1.5}, "--fuse"),
        ({"fuse": 0.5, "fuse_global": "fpr"}, "--fuse-global"),
        ({"metric": "euclidean", "fuse": 0.5}, "--fuse"),
        ({"shortlist": 0}, "--shortlist"),
        ({"metric": "cosine", "shortlist": 5}, "--shortlist"),
        ({"shortlist": 5, "shortlist_metric": "dsr"}, "--shortlist-metric"),
        ({"shortlist": 5, "fuse": 0.5}, "--shortlist and --fuse"),
        ({"ap": "interpolated"}, "--ap"),
        ({"backend": "torch"}, "--backend"),
        ({"max_rank": 0}, "--max-rank"),
        ({"checkpoint_sha256": "XYZ"}, "--checkpoint"),
    ],
)
def test_validate_names_the_option(kwargs, option):
    with pytest.raises(ValueError, match=option):
        MatchParams(**{"metric": "fpr", **kwargs}).validate()


def _result(params: MatchParams) -> MatchResult:
    return MatchResult(
        dataset="partial_reid", params=params, cmc=(0.5, 0.75, 1.0), mAP=0.625, mINP=0.5, num_query=4,
        num_valid_query=4, num_gallery=6, provenance={"cache_file": "/c/x.h5", "matching_seconds": 1.5},
        created="2026-11-29T05:00:00+00:00",
    )


@settings(max_examples=100, deadline=None)
@given(match_params())
def test_results_round_trip_through_json(params):
    result = _result(params)
    data = json.loads(json.dumps(result.to_json()))
    assert tuple(data) == (*RESULT_KEYS, "averaged_over")
    assert data["params"]["distance_name"] == params.distance_name and data["metric"] == params.label
    back = MatchResult.from_json(data, "x.json")
    assert back == result and back.file_name == result.file_name


def test_write_and_read_a_results_file(tmp_path):
    result = _result(MatchParams(metric="dsr", shortlist=7, checkpoint_sha256=SHA))
    path = result.write(tmp_path)
    assert path.name == "partial_reid__dsr__shortlist7__ckpt-01234567.json"
    assert MatchResult.read(path) == result
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_an_older_results_file_reads_with_defaults():
    """A file written before shortlist_metric, checkpoint in params, etc. existed."""
    data = {
        "dataset": "market1501", "metric": "fpr+euclidean", "cmc": [0.9, 1.0], "mAP": 0.8, "mINP": 0.5,
        "ap_flavour": "market1501", "num_query": 2, "num_valid_query": 2, "num_gallery": 3,
        "params": {"beta": 0.1, "fuse": 0.5, "backend": "numpy", "cache_file": "/c.h5", "distance_name": "x"},
        "checkpoint_sha256": SHA, "created": "2026-11-24T05:00:00+00:00",
    }
    result = MatchResult.from_json(data, "old.json")
    # written before the official averages: its "market1501" averaged over the valid queries
    assert result.params == MatchParams(metric="fpr", beta=0.1, fuse=0.5, fuse_global="euclidean", ap="market1501-valid",
                                        checkpoint_sha256=SHA, backend="numpy")
    assert result.provenance == {"cache_file": "/c.h5"}
    assert result.file_name == "market1501__fpr+euclidean__beta0.1__fuse0.5__ap-market1501-valid__ckpt-01234567.json"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mAP": 76.5}, "fractions in \\[0, 1\\]"),
        ({"cmc": [0.9, 0.5]}, "non-decreasing"),
        ({"cmc": []}, "fractions"),
        ({"num_query": "many"}, "malformed"),
        ({"metric": "fpr+euclidean"}, "malformed"),  # fused without params.fuse
        ({"params": {"beta": "big"}}, "malformed"),
    ],
)
def test_impossible_values_are_errors_naming_the_file(change, message):
    data = _result(MatchParams(metric="fpr")).to_json()
    data.update(change)
    with pytest.raises(ReidEvalError, match=f"bad.json.*{message}"):
        MatchResult.from_json(data, "bad.json")


def test_missing_keys_are_named():
    data = _result(MatchParams()).to_json()
    del data["mINP"], data["created"]
    with pytest.raises(ReidEvalError, match="missing mINP, created"):
        MatchResult.from_json(data, "x.json")


def test_design_doc_lists_every_field_under_its_role():
    """docs/DESIGN.md's role table is the users' copy of the field declarations; it must not drift."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    rows = {"distance": "| distance identity |", "results": "| results identity |", "provenance": "| provenance |"}
    for role, start in rows.items():
        (line,) = [ln for ln in text.splitlines() if ln.startswith(start)]
        listed = re.findall(r"`(\w+)`", line.split("|")[2])
        assert sorted(listed) == sorted(MatchParams.field_names(role)), role
