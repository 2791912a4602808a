"""`reid-eval report` on the command line: output, files, one-line errors."""

from __future__ import annotations

from reid_eval_cli.main import main
from test_report_helpers import make_cache, write_result


def test_report_command_prints_markdown_and_writes_files(tmp_path, capsys):
    cache = make_cache(tmp_path)
    results = tmp_path / "results"
    write_result(results, "partial_reid", "fpr", 0.8123, 0.7654, cache_file=cache)
    write_result(results, "synthetic_occluded", "fpr", 0.5, 0.4)
    status = main(["report", "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"), "--probes", "1,2", "--top-k", "3"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "| FPR (measured, standard AP) | measured | 81.23 | 76.54 | — | — | — | — |" in out
    assert "### Measured results on Synthetic occluded" in out
    for name in ("table3", "table4", "synthetic_occluded"):
        for suffix in (".md", ".csv", ".tex"):
            assert (results / "tables" / f"{name}{suffix}").is_file()
    assert (results / "figures" / "retrieval_partial_reid_q1.png").is_file()
    assert (results / "figures" / "retrieval_partial_reid_q2.pdf").is_file()
    assert "Warning: synthetic_occluded__fpr.json: cache" in err  # its cache is nowhere: figures skipped, said once
    assert "Traceback" not in err


def test_report_on_empty_dir_is_one_line_error(tmp_path, capsys):
    status = main(["report", "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.strip() == f"Error: no results under {tmp_path}; run `reid-eval match` first"


def test_report_bad_probes_are_usage_errors(tmp_path, capsys):
    write_result(tmp_path, "partial_reid", "fpr", 0.8, 0.7)
    assert main(["report", "--results-dir", str(tmp_path), "--probes", "a,b"]) == 2
    assert "--probes" in capsys.readouterr().err
    cache = make_cache(tmp_path / "c")
    write_result(tmp_path, "partial_reid", "fpr", 0.8, 0.7, cache_file=cache)
    assert main(["report", "--results-dir", str(tmp_path), "--probes", "9"]) == 1
    err = capsys.readouterr().err
    assert "Warning: --probes: index 9 out of range for partial_reid (4 queries); left out" in err
    assert err.strip().splitlines()[-1] == "Error: --probes: no index of 9 is a query of any matched dataset"
    assert "Traceback" not in err
