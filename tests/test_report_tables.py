"""Tables 3 and 4 and per-dataset tables from hand-written results files: values, labels, formats."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess

import pytest

from reid_eval.errors import ReidEvalError
from reid_eval.report import build_paper_table, build_report, load_paper_tables, load_results, to_csv, to_markdown
from reid_eval.report.tables import Cell, build_dataset_table, latex_escape, provenance_markdown, to_latex
from test_report_helpers import write_result


def md_rows(markdown: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their 'Method' cell (the first cell after an optional group)."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            key = cells[1] if cells[0] in ("", "measured", "Part-based", "Mask-guided", "Pose-guided", "Attention-based", "Group") else cells[0]
            rows[key] = cells
    return rows


def test_paper_tables_quote_the_paper():
    tables = load_paper_tables()
    t3, t4 = tables["table3"], tables["table4"]
    assert [r.method for r in t3.rows] == ["MaskReID", "PCB", "AMC+SWM", "DSR", "Baseline", "FPR (ours)"]
    assert t3.datasets == ("partial_reid", "partial_ilids", "occluded_reid")
    fpr = t3.rows[-1]
    assert fpr.values == {"partial_reid": (81.00, 76.60), "partial_ilids": (68.08, 61.78), "occluded_reid": (78.30, 68.00)}
    assert t3.rows[3].values["occluded_reid"] == (72.80, 62.83)
    assert all(r.source == "He et al. ICCV 2019, Table 3" for r in t3.rows)
    assert len(t4.rows) == 15 and all(r.source == "He et al. ICCV 2019, Table 4" for r in t4.rows)
    by_name = {r.method: r for r in t4.rows}
    assert by_name["FPR (ours)"].values == {"market1501": (95.42, 86.58), "cuhk03_np": (76.08, 72.31), "dukemtmc_reid": (88.64, 78.42)}
    assert by_name["SPReID"].values["cuhk03_np"] == (None, None)
    assert by_name["PSE"].values["dukemtmc_reid"] == (27.30, 30.20)
    assert by_name["PDC"].group == "Pose-guided" and by_name["AACN"].group == "Attention-based"
    # The text's disagreement with the table is recorded, not silently resolved.
    assert any("76.33%" in n and "81.00" in n for n in t3.notes)
    assert t4.cuhk03_variant == "detected"


def test_measured_values_land_in_their_row_and_column(tmp_path):
    write_result(tmp_path, "partial_reid", "fpr", 0.8123, 0.7654)
    write_result(tmp_path, "occluded_reid", "fpr", 0.5, 0.25)
    write_result(tmp_path, "partial_reid", "euclidean", 0.4567, 0.3456, beta=None)
    write_result(tmp_path, "market1501", "dsr", 0.9, 0.85, sha="feedbeef" * 8)
    table3 = build_paper_table(load_paper_tables()["table3"], load_results(tmp_path))
    md = to_markdown(table3)
    rows = md_rows(md)
    header = rows["Method"]
    # A dataset's name heads its first column only
    assert header[2:] == ["Partial-REID R1", "mAP", "Partial-iLIDS R1", "mAP", "Occluded-REID R1", "mAP"]
    col = {name: 2 + i for i, name in enumerate(table3.value_columns)}  # 'Partial-REID mAP' -> its position
    assert rows["FPR (measured, standard AP)"][col["Partial-REID R1"]] == "81.23"
    assert rows["FPR (measured, standard AP)"][col["Partial-REID mAP"]] == "76.54"
    assert rows["FPR (measured, standard AP)"][col["Occluded-REID R1"]] == "50.00"
    assert rows["FPR (measured, standard AP)"][col["Partial-iLIDS R1"]] == "—"
    assert rows["Baseline (measured, standard AP)"][col["Partial-REID R1"]] == "45.67"
    assert rows["FPR (ours)"][col["Partial-REID R1"]] == "81.00"
    assert rows["FPR (ours)"][header.index("Source")] == "paper"
    # Table 4's dataset stays out of Table 3 (its rows and notes; the AP note names the flavour market1501)
    assert not any("market1501" in line for line in md.splitlines() if line.startswith("|"))
    # Rows scored with another AP flavour than the paper's are marked in the table itself.
    assert any(line.startswith("- Rows marked 'standard AP'") and "--ap market1501" in line for line in md.splitlines())
    # The table names the model and no engine setting; the provenance goes to the report's appendix.
    assert "- Measured rows: checkpoint 01234567 (how each row was computed: the report's provenance appendix)." in md
    assert "backend=" not in md and "cache_file" not in md
    fpr_row = next(r for r in table3.rows if r.label == "FPR (measured, standard AP)")
    assert fpr_row.provenance.splitlines()[0].startswith("partial_reid__fpr.json: metric fpr; checkpoint 01234567;")
    assert "beta=0.01" in fpr_row.provenance and "backend=numpy" in fpr_row.provenance
    appendix = provenance_markdown([table3])
    assert appendix.startswith("## Appendix: provenance of the measured rows")
    assert "- FPR (measured, standard AP): occluded_reid__fpr.json: metric fpr; checkpoint 01234567;" in appendix
    # The dataset without results names the commands that fill it.
    assert ("`reid-eval extract --dataset partial_ilids --checkpoint CHECKPOINT.pt` then `for m in fpr dsr euclidean; "
            "do reid-eval match --metric $m --dataset partial_ilids --ap market1501; done` with your checkpoint file") in md

    # CSV: one line per (row, dataset, measure), numbers in their own columns
    parsed = list(csv.DictReader(io.StringIO(to_csv(table3))))
    assert list(parsed[0]) == ["table", "group", "method", "source", "dataset", "measure", "value", "low", "high",
                               "marks"]
    cell = {(r["method"], r["dataset"], r["measure"]): r for r in parsed}
    fpr = cell[("FPR (measured, standard AP)", "Partial-REID", "R1")]
    assert float(fpr["value"]) == pytest.approx(81.23) and fpr["source"] == "measured"
    assert float(cell[("FPR (measured, standard AP)", "Occluded-REID", "mAP")]["value"]) == pytest.approx(25.0)
    assert cell[("FPR (measured, standard AP)", "Partial-iLIDS", "R1")]["value"] == ""  # no result: empty, not '—'
    quoted = cell[("DSR", "Partial-iLIDS", "mAP")]
    assert quoted["source"] == "He et al. ICCV 2019, Table 3" and float(quoted["value"]) == 58.12
    assert quoted["low"] == quoted["high"] == ""
    assert [r["method"] for r in parsed[::6][:6]] == ["MaskReID", "PCB", "AMC+SWM", "DSR", "Baseline", "FPR (ours)"]


def test_table4_cuhk03_variants_beta_and_duplicates(tmp_path):
    write_result(tmp_path, "cuhk03_np", "fpr", 0.7011, 0.6522)
    write_result(tmp_path, "cuhk03_np_labeled", "fpr", 0.7311, 0.6822)
    write_result(tmp_path, "market1501", "fpr", 0.95, 0.86, beta=0.1)
    other = tmp_path / "other"
    write_result(other, "market1501", "euclidean", 0.9, 0.8, beta=None)
    write_result(tmp_path / "again", "market1501", "euclidean", 0.91, 0.81, beta=None, sha="ab" * 32)
    records = load_results(tmp_path) + load_results(other) + load_results(tmp_path / "again")
    table = build_paper_table(load_paper_tables()["table4"], records)
    rows = {r.label: r for r in table.rows}
    cols = table.value_columns
    # Two checkpoints in the table: every measured row names its own, so no two rows read alike.
    assert str(rows["FPR (measured, standard AP, ckpt 01234567)"].cells[cols.index("CUHK03 R1")]) == "70.11"
    assert str(rows["FPR (measured, standard AP, labeled, ckpt 01234567)"].cells[cols.index("CUHK03 mAP")]) == "68.22"
    assert str(rows["FPR (measured, β=0.1, standard AP, ckpt 01234567)"].cells[cols.index("Market1501 R1")]) == "95.00"
    # Two checkpoints for the same row and dataset give two rows, not an overwrite.
    assert str(rows["Baseline (measured, standard AP, ckpt 01234567)"].cells[0]) == "90.00"
    assert str(rows["Baseline (measured, standard AP, ckpt abababab)"].cells[0]) == "91.00"
    assert len([r for r in table.rows if r.provenance]) == 5
    assert [str(c) for c in rows["PCB (ECCV18)"].cells] == ["92.30", "77.40", "61.30", "54.20", "81.80", "66.10"]
    assert [str(c) for c in rows["SPReID (CVPR18)"].cells[2:]] == ["—"] * 4


def test_other_dataset_gets_its_own_table(tmp_path):
    cmc = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.9, 0.9, 0.95]
    write_result(tmp_path, "synthetic_occluded", "fpr", 0.5, 0.4321, cmc=cmc)
    write_result(tmp_path, "synthetic_occluded", "dsr", 0.25, 0.2, cmc=[0.25, 0.3])
    records = load_results(tmp_path)
    table = build_dataset_table("synthetic_occluded", records)
    assert [r.label for r in table.rows] == ["DSR (measured, standard AP)", "FPR (measured, standard AP)"]
    assert any("'standard AP'" in n for n in table.notes)
    assert [str(c) for c in table.rows[1].cells] == ["50.00", "85.00", "95.00", "43.21", "21.61"]
    assert [str(c) for c in table.rows[0].cells[1:3]] == ["—", "—"]  # the CMC stops at rank 2
    assert table.headers == ["R1", "R5", "R10", "mAP", "mINP"]  # the title names the dataset
    summary = build_report(tmp_path, figures=False)
    assert (tmp_path / "tables" / "synthetic_occluded.md").is_file()
    assert "Measured results on Synthetic occluded" in summary.markdown
    # Tables 3 and 4 are still produced, with the paper's rows only.
    t3 = (tmp_path / "tables" / "table3.md").read_text()
    assert "| FPR (ours) | paper | 81.00 | 76.60 | 68.08 | 61.78 | 78.30 | 68.00 |" in t3
    assert "(measured)" not in t3


def latex_rows(tex: str) -> tuple[int, list[str]]:
    """Number of columns from the tabular spec, and the rows between \\toprule and \\bottomrule."""
    spec = re.search(r"\\begin\{tabularx\}\{\\columnwidth\}\{(.*)\}$", tex, re.M).group(1)
    spec = re.sub(r">\{[^}]*\}|@\{\}", "", spec)  # the label column's >{...} and the @{} ends
    body = tex[tex.index("\\toprule") : tex.index("\\bottomrule")]
    rows = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith(("\\toprule", "\\midrule", "\\cmidrule"))]
    return len(spec.replace(" ", "")), rows


def span(row: str) -> int:
    """Columns a row occupies: cells separated by unescaped '&', a \\multicolumn{n} counting n."""
    cells = re.split(r"(?<!\\)&", row)
    return sum(int(m.group(1)) if (m := re.search(r"\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)


@pytest.mark.parametrize("key", ["table3", "table4", "synthetic_occluded"])
def test_latex_is_balanced_booktabs(tmp_path, key):
    write_result(tmp_path, "partial_reid", "fpr", 0.8123, 0.7654)
    write_result(tmp_path, "market1501", "fpr+euclidean", 0.9, 0.8, fuse=0.5)
    write_result(tmp_path, "synthetic_occluded", "fpr", 0.5, 0.4, beta=0.1)
    build_report(tmp_path, figures=False)
    tex = (tmp_path / "tables" / f"{key}.tex").read_text()
    for env in ("table", "tabularx"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == 1
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule") < tex.index("\\end{tabularx}")
    n_cols, rows = latex_rows(tex)
    assert len(rows) >= 2
    for row in rows:
        assert row.rstrip().endswith("\\\\"), row
        assert span(row.rstrip()[:-2]) == n_cols, row
    unescaped = tex.replace("\\{", "").replace("\\}", "")
    assert unescaped.count("{") == unescaped.count("}")
    assert tex.isascii()  # no raw β, λ, —, ° (the marks are $^{\circ}$ and $^{*}$)
    assert "backend" not in tex and "checkpoint 01234567" in tex  # the model named, no engine setting


def test_latex_cells_marks_and_intervals():
    cell = Cell(45.0, 38.12, 51.25, "°*")
    assert cell.text() == "45.00 [38.1, 51.2]°*" and cell.text(intervals=False) == "45.00°*"
    assert Cell(None).text() == "—" and Cell(float("nan")).text() == "—"
    from reid_eval.report.tables import Row, Table

    table = Table("t", "Table 9. A title", [("Partial-REID", ["R1"])], [Row("FPR (ours)", "paper", [Cell(81.0)]),
                                                                          Row("FPR (measured)", "measured", [cell])])
    tex = to_latex(table)
    assert "\\caption{A title}" in tex  # LaTeX numbers the table itself
    assert "FPR & 45.00$^{\\circ*}$ \\\\" in tex and "[38.1" not in tex
    assert "FPR & 45.00 [38.1, 51.2]$^{\\circ*}$ \\\\" in to_latex(table, intervals=True)
    assert "\\emph{Measured here}" in tex and tex.isascii()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex on this machine (checked: structure only)")
def test_latex_compiles_and_fits_a_two_column_page(tmp_path):
    for dataset in ("partial_reid", "partial_ilids", "occluded_reid"):
        for metric in ("fpr", "dsr", "euclidean"):
            write_result(tmp_path, dataset, metric, 0.8123, 0.7654, beta=None if metric == "euclidean" else 0.01)
    write_result(tmp_path, "cuhk03_np_labeled", "fpr", 0.7311, 0.6822)
    write_result(tmp_path, "synthetic_occluded", "fpr", 0.5, 0.4, beta=0.1)
    build_report(tmp_path, figures=False)
    tables = sorted((tmp_path / "tables").glob("*.tex"))
    doc = tmp_path / "paper.tex"
    doc.write_text("\\documentclass[twocolumn]{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs,tabularx}\n"
                   "\\begin{document}\n" + "".join(f"\\input{{{t}}}\n" for t in tables) + "\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log  # every table fits its column


def test_latex_escapes_specials():
    assert latex_escape("a_b & 50% #1 $x ~^{}\\") == (
        r"a\_b \& 50\% \#1 \$x \textasciitilde{}\textasciicircum{}\{\}\textbackslash{}"
    )
    assert latex_escape("FPR (measured, β=0.1) —") == r"FPR (measured, $\beta$=0.1) ---"
    assert latex_escape("run `reid-eval match --dataset a_b` now") == r"run \texttt{reid-eval match -{}-dataset a\_b} now"


def test_markdown_of_fused_metric_names_lambda(tmp_path):
    write_result(tmp_path, "market1501", "fpr+euclidean", 0.9, 0.8, fuse=0.3)
    table = build_paper_table(load_paper_tables()["table4"], load_results(tmp_path))
    assert "| measured | FPR + Baseline (measured, λ=0.3, standard AP) | measured | 90.00 | 80.00 |" in to_markdown(table)


def test_results_in_percent_are_refused(tmp_path):
    path = write_result(tmp_path, "partial_reid", "fpr", 0.8, 0.7)
    data = json.loads(path.read_text())
    data["mAP"] = 76.5
    path.write_text(json.dumps(data))
    with pytest.raises(ReidEvalError, match="partial_reid__fpr.json"):
        load_results(tmp_path)


def test_other_json_files_are_skipped_with_a_warning(tmp_path):
    write_result(tmp_path, "partial_reid", "fpr", 0.8, 0.7)
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "broken.json").write_text("{")
    warnings = []
    records = load_results(tmp_path, warnings.append)
    assert [r.path.name for r in records] == ["partial_reid__fpr.json"]
    assert len(warnings) == 2 and any("notes.json" in w and "missing dataset" in w for w in warnings)


def test_empty_results_dir_is_an_error(tmp_path):
    with pytest.raises(ReidEvalError, match="no results under .*run `reid-eval match` first"):
        build_report(tmp_path)
    with pytest.raises(ReidEvalError, match="no results under"):
        build_report(tmp_path / "absent")


def test_the_hint_for_an_empty_column_names_the_checkpoint_the_other_rows_came_from(tmp_path):
    import h5py

    from test_report_helpers import make_cache

    cache = make_cache(tmp_path)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    with h5py.File(cache, "r+") as f:
        f.attrs["checkpoint_file"] = str(ckpt)
    write_result(tmp_path / "results", "partial_reid", "fpr", 0.8, 0.7, cache_file=cache)
    summary = build_report(tmp_path / "results", figures=False)
    assert (f"Partial-iLIDS: no results yet; run `reid-eval extract --dataset partial_ilids --checkpoint {ckpt}` then "
            "`for m in fpr dsr euclidean; do reid-eval match --metric $m --dataset partial_ilids --ap market1501; done`."
            ) in summary.markdown
