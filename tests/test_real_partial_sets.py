"""The paper's own test sets with a really trained network: the released Partial-REID and
Partial-iLIDS (../shared/data), torchreid's Market-1501 OSNet x0.25 (../shared/weights).

Converted, extracted, matched with the Baseline and DSR through the CLI, refused for FPR
(its foreground generator was never trained), reported. What real data can show is
asserted: finite distances, every query with its match, the engine against the float64
definition on real features, DSR = FPR with uniform weights, and a Baseline far above chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reid_eval.features import SpatialFeatures, extract_dataset, read_split
from reid_eval.matching import fpr_distance_reference, fpr_distances
from reid_eval_cli.main import main

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "osnet_x0_25_market1501.pth"
DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(
    not (WEIGHTS.exists() and (DATA / "Partial-REID_Dataset").is_dir() and (DATA / "Partial_iLIDS").is_dir()),
    reason=f"the shared OSNet and Partial-REID / Partial-iLIDS are absent ({SHARED})",
)
SETS = {"partial_reid": 300, "partial_ilids": 119}  # queries (= gallery images) of each set


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    ckpt, cache_dir, results = base / "osnet.pt", base / "cache", base / "results"
    assert main(["checkpoint", "convert", "--from", "torchreid", str(WEIGHTS), "--out", str(ckpt)]) == 0
    caches = {ds: extract_dataset(ds, DATA / ("Partial-REID_Dataset" if ds == "partial_reid" else "Partial_iLIDS"),
                                  ckpt, cache_dir, device="cpu", batch_size=64)
              for ds in SETS}
    for ds in SETS:
        for metric in ("euclidean", "dsr"):
            assert main(["match", "--dataset", ds, "--metric", metric, "--ap", "market1501", "--resamples", "200",
                         "--cache-dir", str(cache_dir), "--results-dir", str(results)]) == 0
    return {"ckpt": ckpt, "cache_dir": cache_dir, "results": results, "caches": caches}


def _record(run, ds, metric):
    (path,) = run["results"].glob(f"{ds}__{metric}__ap-market1501-official__ckpt-*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("ds", SETS)
def test_every_query_has_its_match_and_the_baseline_is_far_above_chance(run, ds):
    n = SETS[ds]
    for metric in ("euclidean", "dsr"):
        r = _record(run, ds, metric)
        assert r["num_query"] == r["num_valid_query"] == n and r["num_gallery"] == n
        assert r["ap_flavour"] == "market1501"
    # chance rank-1 is (gallery images of the query's person) / n: 5/300 and 1/119
    assert _record(run, ds, "euclidean")["cmc"][0] > 0.25


@pytest.mark.parametrize("ds", SETS)
def test_engine_equals_the_float64_definition_on_real_osnet_features(run, ds):
    q, g = read_split(run["caches"][ds], "query"), read_split(run["caches"][ds], "gallery")
    assert q.spatial.local.shape[1] == 128 and q.global_features.shape[1] == 512
    probes, gallery = q.spatial.subset(np.arange(12)), g.spatial.subset(np.arange(9))
    D = fpr_distances(probes, gallery, weighted=True, backend="numpy")
    assert np.isfinite(D).all()
    for i in range(12):
        for j in range(9):
            ref = fpr_distance_reference(probes.image(i), gallery.image(j), h=probes.image_foreground(i), beta=0.01)
            assert abs(float(D[i, j]) - ref) <= 1e-5, (i, j)


def test_dsr_is_fpr_with_uniform_weights_on_real_features(run):
    q, g = read_split(run["caches"]["partial_ilids"], "query"), read_split(run["caches"]["partial_ilids"], "gallery")
    uniform = SpatialFeatures(q.spatial.local, q.spatial.offsets, np.ones(len(q.spatial.local), np.float32))
    dsr = fpr_distances(q.spatial, g.spatial, weighted=False, backend="numpy")
    np.testing.assert_allclose(fpr_distances(uniform, g.spatial, weighted=True, backend="numpy"), dsr, rtol=1e-6, atol=1e-7)
    from reid_eval.features import read_distances  # the matrix `match` stored is the same computation

    np.testing.assert_allclose(read_distances(run["caches"]["partial_ilids"], "dsr")[0], dsr, rtol=1e-6, atol=1e-7)


def test_fpr_on_the_untrained_foreground_is_refused_then_labelled_when_asked(run, capsys):
    args = ["match", "--dataset", "partial_ilids", "--metric", "fpr", "--cache-dir", str(run["cache_dir"]),
            "--results-dir", str(run["results"])]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "never trained" in err and "--untrained-foreground" in err and "reid-eval train" in err
    assert main(args + ["--untrained-foreground"]) == 0
    (path,) = run["results"].glob("partial_ilids__fpr__ckpt-*.json")
    assert json.loads(path.read_text())["params"]["foreground"] == "untrained"


def test_report_has_table3_rows_for_both_sets_naming_the_model(run):
    assert main(["match", "--dataset", "partial_ilids", "--metric", "fpr", "--untrained-foreground", "--ap", "market1501",
                 "--cache-dir", str(run["cache_dir"]), "--results-dir", str(run["results"])]) == 0
    out = run["results"] / "report"
    assert main(["report", "--results-dir", str(run["results"]), "--cache-dir", str(run["cache_dir"]), "--no-figures",
                 "--out-dir", str(out)]) == 0
    table3 = out / "tables" / "table3.md"
    text = table3.read_text()
    assert "osnet_x0_25, torchreid (osnet_x0_25_market1501.pth)" in text and "Partial-REID" in text and "Partial-iLIDS" in text
    fpr_rows = [line for line in text.splitlines() if line.startswith("| FPR (measured")]
    assert fpr_rows and all("untrained foreground" in line for line in fpr_rows)
