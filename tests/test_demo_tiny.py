"""`reid-eval demo` end to end with the tiny configuration."""

from __future__ import annotations

import json


from reid_eval_cli.main import main

from reid_eval.experiments import RESULT_KEYS

DESIGN_KEYS = set(RESULT_KEYS)


def test_tiny_demo_end_to_end_and_rerun(tmp_path, capsys):
    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work), "--size", "tiny", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    main_table = out.split("| method | rank-1 [CI] | rank-5 | mAP [CI] |")[1].split("\n\n")[0]  # with intervals
    rows = ["| method |"] + [line for line in main_table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip().split(" ")[0] for r in rows] == ["method", "Baseline", "DSR", "FPR"]
    for row in rows[1:]:
        values = [float(v.split(" [")[0]) for v in row.split("|")[2:5]]
        assert all(0.0 <= v <= 100.0 for v in values) and values[0] <= values[1]  # rank-1 ≤ rank-5
    files = {}
    for metric in ("euclidean", "dsr", "fpr"):
        (files[metric],) = (work / "results").glob(f"synthetic_occluded__{metric}__ckpt-*.json")
        record = json.loads(files[metric].read_text())
        assert DESIGN_KEYS <= set(record) and record["metric"] == metric
        assert record["num_query"] == 12 and record["num_gallery"] == 12
        assert record["params"]["resize"] == "keep-aspect"
    assert "rank-1 occluded" in out and "rank-1 partial" in out
    # the table printed is the one in the results files
    fpr = json.loads(files["fpr"].read_text())
    assert f"{100 * fpr['cmc'][0]:.1f}" == rows[3].split("|")[2].strip().split(" [")[0]
    assert "FPR vs DSR, paired on the same queries" in out and "A-B" in out  # reid-eval compare's lines
    summary = json.loads((work / "demo_summary.json").read_text())
    assert set(summary["rows"]) == {"euclidean", "dsr", "fpr"} and summary["timings_s"]["total"] > 0
    assert (work / "train" / "model.pt").is_file() and (work / "train" / "train_log.jsonl").is_file()
    assert (work / "results" / "tables" / "report.md").is_file()
    assert "generate" in err and "train" in err  # progress and messages go to stderr
    # a second run reuses the set, the model and the cache, and gives the same table
    assert main(["demo", "--workdir", str(work), "--size", "tiny", "--device", "cpu", "--no-report"]) == 0
    out2, err2 = capsys.readouterr()
    assert "reusing the trained model" in err2 and "reused the synthetic set" in err2
    assert [line for line in out2.splitlines() if line.startswith("| ")] == \
        [line for line in out.splitlines() if line.startswith("| ")]


def test_the_cli_states_the_demos_thread_count():
    from cli.demo_commands import DEMO_THREADS as CLI_THREADS
    from reid_eval.demo import DEMO_THREADS

    assert CLI_THREADS == DEMO_THREADS


def test_a_time_limit_says_what_it_did_and_a_rerun_continues_to_the_full_demo(tmp_path, capsys):
    args = ["demo", "--size", "tiny", "--device", "cpu", "--no-report", "--no-pets"]
    whole = tmp_path / "whole"
    assert main([*args, "--workdir", str(whole)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    cut = tmp_path / "cut"
    assert main([*args, "--workdir", str(cut), "--max-train-minutes", "1e-9"]) == 0  # over after the first step
    out, err = capsys.readouterr()
    assert "training stopped at the time limit you set" in err and "rerun the same command" in err
    assert "0 of 1 training epochs, stopped by --max-train-minutes 1e-09" in out
    assert main([*args, "--workdir", str(cut)]) == 0
    out, err = capsys.readouterr()
    assert "continuing the unfinished training" in err and "1 of 1 training epochs" in out
    assert [line for line in out.splitlines() if line.startswith("| ")] == table  # the uninterrupted numbers
    summary = json.loads((cut / "demo_summary.json").read_text())
    assert summary["settings"]["threads"] == 2 and summary["training"] == {"epochs_completed": 1,
                                                                            "stopped_early": False}
