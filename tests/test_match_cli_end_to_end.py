"""`reid-eval checkpoint init`, `extract`, `match` from the command line on a generated Partial-REID tree."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py

import numpy as np
import pytest

from reid_eval.errors import ReidEvalError

from reid_eval_cli.main import main
from reid_eval.evaluation import evaluate_ranking
from reid_eval.experiments import RESULT_KEYS, MatchParams, select_caches
from reid_eval.experiments.record import OPTIONAL_RESULT_KEYS
from reid_eval.features import read_attrs, read_distances, read_split
from reid_eval.matching import fpr_distances, global_distances
from reid_eval.matching.kernel import single_blas_thread  # match runs each tile GEMM on one BLAS thread
from reid_eval.report import build_report
from test_extract_cache import make_partial_reid


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One pipeline run shared by the tests: init, extract, match fpr and euclidean."""
    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    make_partial_reid(data / "Partial-REID")
    ckpt, cache, results = base / "model.pt", base / "cache", base / "results"
    common = ["--cache-dir", str(cache)]
    assert main(["checkpoint", "init", "--out", str(ckpt), "--backbone", "resnet18", "--input-size", "128x64", "--seed", "3"]) == 0
    assert main(["extract", "--dataset", "partial_reid", "--data-root", str(data), "--checkpoint", str(ckpt),
                 "--device", "cpu", "--batch-size", "8", "--allow-mismatch", *common]) == 0
    for metric in ("fpr", "euclidean"):
        untrained = ["--untrained-foreground"] if metric == "fpr" else []  # a random network
        assert main(["match", "--metric", metric, *untrained, "--results-dir", str(results), *common]) == 0
    (cache_file,) = cache.rglob("*.h5")
    sha = str(read_attrs(cache_file)["checkpoint_sha256"])
    return {"ckpt": ckpt, "cache": cache, "results": results, "cache_file": cache_file, "data": data, "sha": sha}


def results_file(run, folder=None, dataset="partial_reid", **params):
    """Where `match` writes the results of ``params`` for the fixture's checkpoint."""
    name = MatchParams(checkpoint_sha256=run["sha"], **params).results_file_name(dataset)
    return (folder or run["results"]) / name


def test_match_writes_results_with_the_design_fields(run):
    assert {f"partial_reid__euclidean__ckpt-{run['sha'][:8]}.json", f"partial_reid__fpr__ckpt-{run['sha'][:8]}.json"} <= {
        p.name for p in run["results"].glob("*.json")}
    for metric in ("fpr", "euclidean"):
        record = json.loads(results_file(run, metric=metric).read_text())
        assert set(RESULT_KEYS) <= set(record) <= set(RESULT_KEYS) | set(OPTIONAL_RESULT_KEYS)
        assert record["checkpoint_sha256"] == run["sha"]
        assert record["dataset"] == "partial_reid" and record["metric"] == metric
        assert record["num_query"] == 12 and record["num_gallery"] == 12 and record["num_valid_query"] == 12
        assert record["params"]["cache_file"] == str(run["cache_file"].resolve())
        assert len(record["cmc"]) == 50 and all(0 <= c <= 1 for c in record["cmc"])
        assert np.all(np.diff(record["cmc"]) >= 0) and record["cmc"][-1] == 1.0
        assert 0 < record["mINP"] <= record["mAP"] <= 1
    assert json.loads(results_file(run, metric="fpr").read_text())["params"]["beta"] == 0.01


def test_stored_matrix_equals_the_engine_and_results_equal_the_protocol(run):
    q, g = read_split(run["cache_file"], "query"), read_split(run["cache_file"], "gallery")
    D, params = read_distances(run["cache_file"], "fpr")
    with single_blas_thread():
        np.testing.assert_array_equal(D, fpr_distances(q.spatial, g.spatial, beta=0.01, weighted=True, backend="numpy"))
    assert params["weighted"] is True and params["beta"] == 0.01
    E, _ = read_distances(run["cache_file"], "euclidean")
    np.testing.assert_array_equal(E, global_distances(q.global_features, g.global_features, "euclidean"))
    r = evaluate_ranking(D, q.pids, g.pids, q.camids, g.camids)
    record = json.loads(results_file(run, metric="fpr").read_text())
    assert record["mAP"] == pytest.approx(r.mAP) and record["cmc"] == pytest.approx(list(r.cmc))


def test_fuse_and_beta_name_the_files_and_combine_the_matrices(run, capsys):
    assert main(["match", "--metric", "fpr", "--untrained-foreground", "--fuse", "0.25", "--beta", "0.1", "--dataset", "partial_reid",
                 "--cache-dir", str(run["cache"]), "--results-dir", str(run["results"])]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("partial_reid fpr+euclidean__beta0.1__fuse0.25: R1 ") and "mINP" in line
    params = MatchParams(metric="fpr", beta=0.1, fuse=0.25)
    assert params.results_file_name("partial_reid") == "partial_reid__fpr+euclidean__beta0.1__fuse0.25.json"
    record = json.loads(results_file(run, metric="fpr", beta=0.1, fuse=0.25).read_text())
    assert record["metric"] == "fpr+euclidean" and record["params"]["fuse"] == 0.25
    q, g = read_split(run["cache_file"], "query"), read_split(run["cache_file"], "gallery")
    fused, _ = read_distances(run["cache_file"], params.distance_name)
    want = 0.75 * global_distances(q.global_features, g.global_features, "euclidean") + 0.25 * fpr_distances(
        q.spatial, g.spatial, beta=0.1, backend="numpy"
    )
    np.testing.assert_allclose(fused, want, rtol=1e-6)


def test_dsr_and_cosine_and_shortlist(run):
    args = ["--cache-dir", str(run["cache"]), "--results-dir", str(run["results"])]
    assert main(["match", "--metric", "dsr", *args]) == 0
    exact = json.loads(results_file(run, metric="dsr").read_text())
    assert main(["match", "--metric", "dsr", "--shortlist", "5", *args]) == 0
    assert main(["match", "--metric", "cosine", *args]) == 0
    # The shortlist run has its own matrix and results file: the exact run is still there, unchanged.
    assert json.loads(results_file(run, metric="dsr").read_text()) == exact
    shortlisted = json.loads(results_file(run, metric="dsr", shortlist=5).read_text())
    assert shortlisted["params"]["distance_name"] == "dsr__shortlist5" and shortlisted["params"]["shortlist"] == 5
    D, params = read_distances(run["cache_file"], "dsr__shortlist5")
    assert params["weighted"] is False and params["shortlist"] == 5 and params["shortlist_metric"] == "euclidean"
    q, g = read_split(run["cache_file"], "query"), read_split(run["cache_file"], "gallery")
    with single_blas_thread():
        full = fpr_distances(q.spatial, g.spatial, weighted=False, backend="numpy")
    np.testing.assert_array_equal(read_distances(run["cache_file"], "dsr")[0], full)
    # each row's 5 shortlisted entries carry their DSR distances
    for i in range(len(q.paths)):
        near = np.argsort(global_distances(q.global_features[i : i + 1], g.global_features)[0], kind="stable")[:5]
        np.testing.assert_allclose(D[i, near], full[i, near], rtol=1e-5, atol=1e-6)  # float32 engine tolerance
    assert results_file(run, metric="cosine").is_file()
    # The report labels the shortlist row as such.
    report = build_report(run["results"], figures=False)
    assert "DSR (measured, shortlist K=5 by euclidean, standard AP)" in report.markdown


def test_user_errors_are_one_line(run, tmp_path, capsys):
    cases = [
        (["match", "--metric", "fpr", "--untrained-foreground", "--cache-dir", str(tmp_path / "empty")], "no complete feature cache"),
        (["match", "--metric", "euclidean", "--fuse", "0.5", "--cache-dir", str(run["cache"]),
          "--results-dir", str(tmp_path)], "--fuse"),
        (["extract", "--dataset", "partial_reid", "--root", str(run["data"] / "Partial-REID"),
          "--cache-dir", str(tmp_path), "--allow-mismatch"], "checkpoint init"),
        (["extract", "--dataset", "partial_reid", "--root", str(run["data"] / "Partial-REID"),
          "--checkpoint", str(tmp_path / "nope.pt"), "--cache-dir", str(tmp_path), "--allow-mismatch"], "nope.pt"),
        (["match", "--metric", "fpr", "--untrained-foreground", "--cache-dir", str(run["cache"]), "--checkpoint", str(tmp_path / "x.pt")], "x.pt"),
    ]
    for argv, needle in cases:
        status = main(argv)
        err = capsys.readouterr().err
        assert status != 0 and needle in err and "Traceback" not in err, (argv, err)


def test_counts_are_checked_unless_allowed_and_finished_extract_is_a_noop(run, capsys):
    argv = ["extract", "--dataset", "partial_reid", "--data-root", str(run["data"]), "--checkpoint", str(run["ckpt"]),
            "--cache-dir", str(run["cache"]), "--device", "cpu"]
    assert main(argv) == 1
    assert "counts differ" in capsys.readouterr().err
    mtime = run["cache_file"].stat().st_mtime_ns
    assert main([*argv, "--allow-mismatch"]) == 0
    assert "query 12, gallery 12 images" in capsys.readouterr().out
    assert run["cache_file"].stat().st_mtime_ns == mtime


def test_select_caches_prefers_the_checkpoint_then_the_newest(run, tmp_path):
    from reid_eval.model import file_sha256

    assert select_caches(run["cache"]) == {"partial_reid": run["cache_file"]}
    assert select_caches(run["cache"], "partial_reid", file_sha256(run["ckpt"])) == {"partial_reid": run["cache_file"]}
    with pytest.raises(Exception, match="checkpoint"):
        select_caches(run["cache"], "partial_reid", "f" * 64)


def test_both_ap_flavours_get_their_own_file_and_report_row(run, tmp_path):
    assert MatchParams(metric="fpr", ap="market1501").results_file_name("market1501") == "market1501__fpr__ap-market1501-official.json"
    assert MatchParams(metric="fpr", beta=0.1).results_file_name("market1501") == "market1501__fpr__beta0.1.json"
    mine = tmp_path / "results"
    for ap in ("standard", "market1501"):
        assert main(["match", "--metric", "fpr", "--untrained-foreground", "--ap", ap, "--dataset", "partial_reid",
                     "--cache-dir", str(run["cache"]), "--results-dir", str(mine)]) == 0
    standard_file, official_file = results_file(run, mine, metric="fpr"), results_file(run, mine, metric="fpr", ap="market1501")
    assert sorted(mine.glob("*.json")) == sorted([standard_file, official_file])
    assert official_file.name == f"partial_reid__fpr__ap-market1501-official__ckpt-{run['sha'][:8]}.json"
    standard = json.loads(standard_file.read_text())
    official = json.loads(official_file.read_text())
    assert (standard["ap_flavour"], official["ap_flavour"]) == ("standard", "market1501")
    assert (standard["averaged_over"], official["averaged_over"]) == ("valid", "all")
    # one matrix, stored once, named in both files
    assert standard["params"]["distance_name"] == official["params"]["distance_name"] == "fpr"
    D, _ = read_distances(run["cache_file"], "fpr")
    q, g = read_split(run["cache_file"], "query"), read_split(run["cache_file"], "gallery")
    want = evaluate_ranking(D, q.pids, g.pids, q.camids, g.camids, ap="market1501")
    assert official["mAP"] == pytest.approx(want.mAP) and official["cmc"] == standard["cmc"]

    warnings = []
    summary = build_report(mine, top_k=2, warn=warnings.append)
    with open(mine / "tables" / "table3.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["source"] == "measured" and r["dataset"] == "Partial-REID"
                and r["measure"] == "mAP"]
    # the paper's flavour is unmarked; the other one is marked in the row itself
    # a random network's foreground generator: FPR ran on request (--untrained-foreground) and its rows say so
    assert [r["method"] for r in rows] == ["FPR (measured, untrained foreground)", "FPR (measured, standard AP, untrained foreground)"]
    # numeric cells: the value and its bootstrap interval in columns of their own
    assert [float(r["value"]) for r in rows] == pytest.approx([100 * official["mAP"], 100 * standard["mAP"]])
    assert all(float(r["low"]) <= float(r["value"]) <= float(r["high"]) for r in rows)
    # how each row was computed: the report's appendix
    appendix = summary.markdown.split("## Appendix: provenance of the measured rows")[1]
    assert "- FPR (measured, untrained foreground): " in appendix and "AP market1501" in appendix and "AP standard" in appendix
    # the market1501 results find their matrix through the recorded name: no retrieval row left out
    assert not any("left out" in w for w in warnings), warnings
    assert any(p.name.startswith("retrieval_partial_reid_q") for p in summary.figure_files)


def test_non_positive_beta_is_refused_before_any_cache_is_read(tmp_path, capsys):
    status = main(["match", "--metric", "fpr", "--untrained-foreground", "--beta", "0", "--cache-dir", str(tmp_path / "no-cache")])
    err = capsys.readouterr().err
    assert status == 2 and "--beta" in err and "Traceback" not in err


@pytest.mark.parametrize(("option", "value"), [("--beta", "inf"), ("--beta", "nan"), ("--fuse", "nan"), ("--fuse", "-inf")])
def test_nan_and_infinity_are_refused_at_the_option(option, value, tmp_path, capsys):
    status = main(["match", "--metric", "fpr", "--untrained-foreground", option, value, "--cache-dir", str(tmp_path / "no-cache")])
    err = capsys.readouterr().err
    assert status == 2 and option in err and "not a finite number" in err and "Traceback" not in err


def _copy_cache(run, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(run["cache"], cache)
    (copied,) = cache.rglob("*.h5")
    return cache, copied


def test_cache_of_another_dataset_is_an_error_naming_both(run, tmp_path, capsys):
    cache, copied = _copy_cache(run, tmp_path)
    (cache / "partial_ilids").mkdir()
    shutil.move(copied, cache / "partial_ilids" / copied.name)
    for argv in (["--dataset", "partial_ilids"], []):
        status = main(["match", "--metric", "euclidean", *argv, "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert status == 1 and "holds dataset partial_reid, not partial_ilids" in err and copied.name in err, err
    assert not (tmp_path / "r").exists()


def test_damaged_or_unfinished_newest_cache_is_named_never_skipped(run, tmp_path, capsys):
    cache, copied = _copy_cache(run, tmp_path)
    damaged = copied.parent / "ffffffffffffffff.h5"
    damaged.write_bytes(b"not an HDF5 file")
    args = ["match", "--metric", "euclidean", "--cache-dir", str(cache), "--results-dir", str(tmp_path / "r")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "cannot open feature cache" in err and str(damaged) in err and "--checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    # --checkpoint selects the good cache: the user's option, not a silent fallback
    assert main([*args, "--checkpoint", str(run["ckpt"])]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("Warning: passed over") and str(damaged) in err  # named even then
    written = out.strip().split(" -> ")[-1]
    assert json.loads(Path(written).read_text())["params"]["cache_file"] == str(copied.resolve())


def test_two_checkpoints_keep_two_results_and_two_report_rows(run, tmp_path, capsys):
    cache, copied = _copy_cache(run, tmp_path)
    other = tmp_path / "other.pt"
    assert main(["checkpoint", "init", "--out", str(other), "--backbone", "resnet18", "--input-size", "128x64", "--seed", "4"]) == 0
    assert main(["extract", "--dataset", "partial_reid", "--data-root", str(run["data"]), "--checkpoint", str(other),
                 "--device", "cpu", "--batch-size", "8", "--allow-mismatch", "--cache-dir", str(cache)]) == 0
    results = tmp_path / "results"
    for ckpt in (run["ckpt"], other):
        assert main(["match", "--metric", "euclidean", "--checkpoint", str(ckpt), "--cache-dir", str(cache),
                     "--results-dir", str(results)]) == 0
    capsys.readouterr()
    files = sorted(results.glob("*.json"))
    shas = {json.loads(p.read_text())["checkpoint_sha256"] for p in files}
    assert len(files) == 2 and len(shas) == 2 and run["sha"] in shas
    report = build_report(results, figures=False)
    tables = report.markdown.split("### Verification")[0]  # the verification table repeats each row
    labels = [line.split("|")[1].strip() for line in tables.splitlines() if "(measured" in line and line.startswith("|")]
    names = {json.loads(p.read_text())["checkpoint_sha256"]: json.loads(p.read_text())["params"]["model_name"] for p in files}
    assert sorted(names.values()) == ["resnet18 (model.pt)", "resnet18 (other.pt)"]  # the cache's model, in words
    assert sorted(labels) == sorted(f"Baseline (measured, standard AP, {names[s]}, ckpt {s[:8]})" for s in shas)
    # An unfinished newest cache (an interrupted extraction) is named, not replaced by the older one.
    newest = max(cache.rglob("*.h5"), key=lambda p: read_attrs(p)["created"])
    older = next(p for p in cache.rglob("*.h5") if p != newest)
    with h5py.File(newest, "r+") as f:
        f["gallery"].attrs["num_complete"] = 5
    with pytest.raises(ReidEvalError, match=f"newest cache for partial_reid, {newest}, is incomplete \\(query 12/12, gallery 5/12\\)"):
        select_caches(cache, "partial_reid")
    # ... unless --checkpoint picks the complete one
    assert select_caches(cache, "partial_reid", read_attrs(older)["checkpoint_sha256"]) == {"partial_reid": older}


def test_match_and_report_run_without_torch(run, tmp_path):
    # one process runs both commands: torch must not be imported by either
    code = (
        "import sys\n"
        "from reid_eval_cli.main import main\n"
        "cache, results = sys.argv[1:]\n"
        "status = [main(['match', '--metric', 'euclidean', '--cache-dir', cache, '--results-dir', results]),\n"
        "          main(['report', '--results-dir', results, '--cache-dir', cache, '--probes', '0', '--top-k', '2'])]\n"
        "print(status, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n"
    )
    run_ = subprocess.run([sys.executable, "-c", code, str(run["cache"]), str(tmp_path)], capture_output=True, text=True, check=True)
    assert run_.stdout.strip().splitlines()[-1] == "[0, 0] []", run_.stderr
    assert any(p.name.startswith("retrieval_partial_reid") for p in (tmp_path / "figures").iterdir())
