"""Tables 3 and 4 with the paper's rows beside measured ones, and per-dataset tables; Markdown, CSV, LaTeX.

Cells are strings already formatted: percentages with two decimals, '—' for an
empty entry. Paper rows are quoted as printed (``paper.py``); measured rows come
from results files (fractions, multiplied by 100 here) and carry a footnote
letter whose text names the checkpoint and the matching parameters.

Which measured rows go into which table: a results file of dataset X fills the
column of X in the paper table that has X (Table 4's CUHK03 column takes
``cuhk03_np``; results recorded as the 'detected' boxes get rows of their own,
see ``paper_tables.json`` notes); one row per run identity (metric, β,
shortlist, λ, AP flavour, checkpoint; ``MatchParams.identity``) and CUHK03 boxes.
A row's label names what differs from the paper's setting, the AP flavour
included when it is not the paper's (official Market-1501) one. A dataset in no paper table gets a table of its own with
R1/R5/R10/mAP/mINP.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from reid_eval.atomic import write_text_atomically
from reid_eval.experiments.record import PAPER_AP
from reid_eval.report.paper import PaperTable
from reid_eval.report.results import ResultRecord
from reid_eval.report.uncertainty import PAPER_MARK, interval, marks_note, next_marks, value_cell, verification_cells, within

EMPTY = "—"
MEASURED = "measured"
_DATASET_LABELS = {
    "market1501": "Market1501",
    "dukemtmc_reid": "DukeMTMC",
    "cuhk03_np": "CUHK03",
    "partial_reid": "Partial-REID",
    "partial_ilids": "Partial-iLIDS",
    "occluded_reid": "Occluded-REID",
    "synthetic_occluded": "Synthetic occluded",
    "pets09_s2l1": "PETS09-S2L1",
    "occluded_dukemtmc": "Occluded-DukeMTMC",
    "p_dukemtmc_reid": "P-DukeMTMC-reID",
}


def dataset_label(name: str) -> str:
    """Display name of a dataset ('partial_reid' -> 'Partial-REID'); unknown names as given."""
    return _DATASET_LABELS.get(name, name)


def percent(value: float | None, scale: float = 100.0) -> str:
    """'81.23' for 0.8123 (scale 100) or for 81.23 (scale 1); '—' for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return EMPTY
    return f"{value * scale:.2f}"


@dataclass
class Row:
    """A table row: label, source ('paper' or 'measured'), formatted cells, optional group and footnote letter."""

    label: str
    source: str
    cells: list[str]
    group: str = ""
    footnote: str = ""
    full_source: str = ""
    note: str = ""  # the footnote's text, repeated in the CSV


@dataclass
class Table:
    """A rendered-ready table.

    ``column_groups``: [(dataset label, [sub-column names])]; every row has
    sum(len(subs)) cells. ``footnotes``: [(letter, text)]; ``notes``: free text
    printed under the table (quotation notes, missing-results hints).
    """

    key: str
    title: str
    column_groups: list[tuple[str, list[str]]]
    rows: list[Row]
    footnotes: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    grouped: bool = False  # show the 'group' column (Table 4's method families)

    @property
    def value_columns(self) -> list[str]:
        return [f"{g} {s}" for g, subs in self.column_groups for s in subs]


def _footnote_text(rows_records: list[ResultRecord]) -> str:
    """Checkpoint, parameters and query counts of the results behind one measured row."""
    first = rows_records[0]
    shas = sorted({r.short_sha for r in rows_records})
    params = [_params_text(r) for r in rows_records]
    parts = [f"metric {first.metric}"]
    parts.append("checkpoint " + ", ".join(shas))
    if len(set(params)) == 1:
        parts.append(params[0])
    else:
        parts.extend(f"{r.dataset}: {p}" for r, p in zip(rows_records, params))
    parts.append("AP " + ", ".join(sorted({r.ap_flavour for r in rows_records})))
    parts.append(
        "; ".join(f"{r.dataset} {r.num_valid_query}/{r.num_query} valid queries × {r.num_gallery} gallery" for r in rows_records)
    )
    return "; ".join(p for p in parts if p)


def _params_text(record: ResultRecord) -> str:
    """'key=value, ...' of the matching parameters; unset (None) ones, those already named (metric, AP, checkpoint, matrix name) and timings left out."""
    items = []
    params = record.result.to_json()["params"]
    for key in sorted(params):
        value = params[key]
        if value is None or key in ("metric", "ap", "checkpoint_sha256", "distance_name", "matching_seconds"):
            continue
        if key == "cache_file" and value:
            value = Path(str(value)).name
        items.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return ", ".join(items)


def _other_variant(record: ResultRecord, paper_variant: str | None) -> str:
    """The CUHK03 box variant when it is not the one the paper's column is compared with, else ''."""
    if record.variant is None or paper_variant is None or record.variant == paper_variant:
        return ""
    return record.variant


def _group_rows(records: list[ResultRecord], paper_variant: str | None = None) -> list[list[ResultRecord]]:
    """Results grouped into rows (same matrix and score parameters, checkpoint, CUHK03 boxes), in display order."""
    rows: dict[tuple, list[ResultRecord]] = {}
    for record in sorted(records, key=lambda r: r.sort_key):
        key = (record.params.identity("results"), _other_variant(record, paper_variant))
        rows.setdefault(key, []).append(record)
    return list(rows.values())


def _several_checkpoints(records: list[ResultRecord]) -> bool:
    """Whether rows need the checkpoint in their label to stay apart."""
    return len({r.checkpoint_sha256 for r in records}) > 1


def _ap_note(records: list[ResultRecord], paper_table: bool) -> list[str]:
    """The note under a table that explains rows marked with another AP flavour than the paper's."""
    other = sorted({r.ap_flavour for r in records if r.ap_label})
    if not other:
        return []
    against = "the paper's rows" if paper_table else "the paper's tables"
    return [
        f"Rows marked '{other[0]} AP' score mAP with that AP flavour; {against} use the official Market-1501 AP "
        f"({PAPER_AP}), so their mAP is not directly comparable: rerun `reid-eval match` with `--ap {PAPER_AP}`."
    ]


def fill_commands(dataset: str) -> str:
    """The commands that produce the measured rows for a dataset."""
    return (
        f"`reid-eval extract --dataset {dataset}` then `reid-eval match --metric fpr --dataset {dataset}` "
        f"(and `--metric dsr`, `--metric euclidean` for the DSR and Baseline rows)"
    )


def build_paper_table(paper: PaperTable, records: list[ResultRecord]) -> Table:
    """A paper table with its quoted rows followed by measured rows for its datasets.

    ``records`` may hold any results; those whose (base) dataset is not one of
    the table's columns are ignored. Two results for the same row and column
    (e.g. two checkpoints) give two rows, never a silent overwrite.
    """
    datasets = paper.datasets
    mine = [r for r in records if r.base_dataset in datasets]
    rows: list[Row] = []
    for prow in paper.rows:
        cells = []
        for ds in datasets:
            r1, m_ap = prow.values[ds]
            cells += [percent(r1, 1.0), percent(m_ap, 1.0)]
        rows.append(Row(prow.label, "paper", cells, group=prow.group, full_source=prow.source))

    footnotes: list[tuple[str, str]] = []
    several = _several_checkpoints(mine)
    measured: list[dict[str, ResultRecord]] = []
    for group in _group_rows(mine, paper.cuhk03_variant):
        # Split a row when one dataset appears twice (different checkpoints or caches).
        pending = list(group)
        while pending:
            taken: dict[str, ResultRecord] = {}
            rest = []
            for r in pending:
                if r.base_dataset in taken:
                    rest.append(r)
                else:
                    taken[r.base_dataset] = r
            pending = rest
            measured.append(taken)
    # marks (reid_eval.report.uncertainty): paper value within the interval, next row not told apart
    paper_of = {p.measured_metric: p for p in paper.rows if p.measured_metric}
    nxt = {(ds, col): next_marks([t.get(ds) for t in measured], col) for ds in datasets for col in ("R1", "mAP")}
    for index, taken in enumerate(measured):
        members = [taken[ds] for ds in datasets if ds in taken]
        letter = _letter(len(footnotes))
        text = _footnote_text(members)
        footnotes.append((letter, text))
        cells = []
        for ds in datasets:
            r = taken.get(ds)
            if r is None:
                cells += [EMPTY, EMPTY]
                continue
            prow = paper_of.get(r.metric) if not r.variant_label else None
            for j, (col, value) in enumerate((("R1", r.rank(1)), ("mAP", r.mAP))):
                bounds = interval(r, col)
                comparable = prow is not None and (col == "R1" or not r.ap_label)  # mAP only in the paper's AP flavour
                mark = PAPER_MARK if comparable and within(prow.values[ds][j], bounds) else ""
                cells.append(value_cell(value, bounds, mark + nxt[(ds, col)][index]))
        rows.append(
            Row(members[0].label(_other_variant(members[0], paper.cuhk03_variant), checkpoint=several), MEASURED, cells, group=MEASURED if paper.rows[0].group else "", footnote=letter, full_source=MEASURED, note=text)
        )

    notes = [f"Paper rows quoted from {paper.source}; measured rows from this run's results files (percent)."]
    have = {r.base_dataset for r in mine}
    for column in paper.columns:
        if column.dataset not in have:
            notes.append(f"{column.label}: no results yet; run {fill_commands(column.dataset)}.")
    if paper.cuhk03_variant and "cuhk03_np" in datasets:
        other = "labeled" if paper.cuhk03_variant == "detected" else "detected"
        notes.append(
            f"CUHK03 column: the paper's numbers are compared with CUHK03-NP {paper.cuhk03_variant} boxes; "
            f"results on the {other} boxes have rows marked '{other}' (see the quotation notes)."
        )
    notes.extend(_ap_note(mine, paper_table=True))
    if any(r.result.intervals for r in mine):
        notes.append(marks_note())
    notes.extend(f"Quotation note: {n}" for n in paper.notes)
    return Table(
        key=paper.key,
        title=paper.title,
        column_groups=[(c.label, ["R1", "mAP"]) for c in paper.columns],
        rows=rows,
        footnotes=footnotes,
        notes=notes,
        grouped=bool(paper.rows[0].group),
    )


def build_dataset_table(dataset: str, records: list[ResultRecord]) -> Table:
    """A table of measured rows for a dataset that no paper table covers: R1, R5, R10, mAP, mINP (percent)."""
    rows, footnotes = [], []
    mine = [r for r in records if r.dataset == dataset]
    several = _several_checkpoints(mine)
    ordered = [r for group in _group_rows(mine) for r in group]
    nxt = {col: next_marks(ordered, col) for col in ("R1", "mAP")}
    verified = any(r.result.verification for r in mine)  # files from before verification get no TPR columns
    for index, r in enumerate(ordered):
        letter = _letter(len(footnotes))
        text = _footnote_text([r])
        footnotes.append((letter, text))
        cells = [
            value_cell(value, interval(r, col), nxt.get(col, [""] * len(ordered))[index])
            for col, value in (("R1", r.rank(1)), ("R5", r.rank(5)), ("R10", r.rank(10)), ("mAP", r.mAP), ("mINP", r.mINP))
        ]
        cells += verification_cells(r) if verified else []
        rows.append(Row(r.label(checkpoint=several), MEASURED, cells, footnote=letter, full_source=MEASURED, note=text))
    beyond = " — an occluded benchmark beyond the paper" if dataset in OCCLUDED_BEYOND_PAPER else ""
    notes = ["No published numbers for this dataset; all rows measured.", *_ap_note(mine, paper_table=False)]
    if any(r.result.intervals for r in mine):
        notes.append(marks_note())
    if verified:
        notes.append("TPR@FPR: verification over all valid query–gallery pairs (reid_eval.evaluation.verification).")
    return Table(
        key=dataset,
        title=f"Measured results on {dataset_label(dataset)} ({dataset}; percent){beyond}",
        column_groups=[(dataset_label(dataset), ["R1", "R5", "R10", "mAP", "mINP", *(TPR_COLUMNS if verified else ())])],
        rows=rows,
        footnotes=footnotes,
        notes=notes,
    )


#: Occluded benchmarks published after the paper: each gets a table of its own.
OCCLUDED_BEYOND_PAPER: tuple[str, ...] = ("occluded_dukemtmc", "p_dukemtmc_reid")
TPR_COLUMNS: tuple[str, ...] = ("TPR@FPR1e-4", "TPR@FPR1e-3", "TPR@FPR1e-2")


def build_verification_table(records: list[ResultRecord]) -> Table:
    """TPR at FPR 1e-4, 1e-3, 1e-2 (percent) of every result that recorded it, one row per result."""
    rows, footnotes = [], []
    several = _several_checkpoints(records)
    for r in sorted(records, key=lambda r: (r.dataset, r.sort_key)):
        if not r.result.verification:
            continue
        letter = _letter(len(footnotes))
        text = _footnote_text([r])
        footnotes.append((letter, text))
        rows.append(Row(f"{dataset_label(r.dataset)}: {r.label(checkpoint=several)}", MEASURED, verification_cells(r), footnote=letter,
                        full_source=MEASURED, note=text))
    return Table(
        key="verification",
        title="Verification: TPR at fixed FPR over all valid query–gallery pairs (percent)",
        column_groups=[("TPR at FPR", ["1e-4", "1e-3", "1e-2"])],
        rows=rows,
        footnotes=footnotes,
        notes=["Pairs kept by the retrieval protocol's junk rules; a pair is accepted when its distance is below the "
               "largest threshold whose FPR does not exceed the target (reid_eval.evaluation.verification)."],
    )


def _letter(index: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[index] if index < 26 else letters[index // 26 - 1] + letters[index % 26]


# ---------------------------------------------------------------- renderers


def _source_cell(row: Row) -> str:
    return f"{row.source} ({row.footnote})" if row.footnote else row.source


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: a heading, the table, footnotes and notes."""
    head = (["Group"] if table.grouped else []) + ["Method", "Source"] + table.value_columns
    align = (["---"] if table.grouped else []) + ["---", "---"] + ["---:"] * len(table.value_columns)
    lines = [f"### {table.title}", "", _md_row(head), _md_row(align)]
    for row in table.rows:
        lines.append(_md_row(([row.group] if table.grouped else []) + [row.label, _source_cell(row)] + row.cells))
    if table.footnotes or table.notes:
        lines.append("")
    lines += [f"- ({letter}) {text}" for letter, text in table.footnotes]
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_csv(table: Table) -> str:
    """One header line, then one line per row: table, group, method, source, values..., note."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "group", "method", "source", *table.value_columns, "note"])
    for row in table.rows:
        writer.writerow([table.key, row.group, row.label, row.full_source or row.source, *row.cells, row.note])
    return buffer.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "—": "---",
    "–": "--",
    "β": r"$\beta$",
    "λ": r"$\lambda$",
    "×": r"$\times$",
    "→": r"$\rightarrow$",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular: specials escaped, β/λ/×/dashes as LaTeX, `code` as \\texttt."""
    parts = text.split("`") if text.count("`") % 2 == 0 else [text]
    out = []
    for i, part in enumerate(parts):
        escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in part)
        # "--" is an en-dash ligature in some typewriter fonts; "-{}-" keeps an option's two hyphens.
        out.append(f"\\texttt{{{escaped.replace('--', '-{}-')}}}" if i % 2 else escaped)
    return "".join(out)


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``), footnotes and notes below it."""
    lead = (["Group"] if table.grouped else []) + ["Method", "Source"]
    n_lead = len(lead)
    spec = "l" * n_lead + "".join(" " + "r" * len(subs) for _, subs in table.column_groups)
    out = [
        "% Generated by `reid-eval report`; needs \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{latex_escape(table.title)}}}",
        f"\\label{{tab:reid-eval-{latex_escape(table.key).replace(chr(92) + '_', '-')}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
    ]
    group_cells = [""] * n_lead + [f"\\multicolumn{{{len(subs)}}}{{c}}{{{latex_escape(g)}}}" for g, subs in table.column_groups]
    out.append(" & ".join(group_cells) + " \\\\")
    start, rules = n_lead + 1, []
    for _, subs in table.column_groups:
        rules.append(f"\\cmidrule(lr){{{start}-{start + len(subs) - 1}}}")
        start += len(subs)
    out.append(" ".join(rules))
    out.append(" & ".join(lead + [latex_escape(s) for _, subs in table.column_groups for s in subs]) + " \\\\")
    out.append("\\midrule")
    previous_group, previous_source = None, None
    for row in table.rows:
        if previous_source is not None and (row.group != previous_group or row.source != previous_source):
            out.append("\\midrule")
        group_cell = [latex_escape(row.group) if row.group != previous_group else ""] if table.grouped else []
        source = latex_escape(row.source) + (f"\\textsuperscript{{{row.footnote}}}" if row.footnote else "")
        out.append(" & ".join(group_cell + [latex_escape(row.label), source] + [latex_escape(c) for c in row.cells]) + " \\\\")
        previous_group, previous_source = row.group, row.source
    out += ["\\bottomrule", "\\end{tabular}"]
    below = [f"\\textsuperscript{{{letter}}} {latex_escape(text)}" for letter, text in table.footnotes]
    below += [latex_escape(n) for n in table.notes]
    if below:
        out.append("\\par\\smallskip")
        out.append("{\\footnotesize\\raggedright")
        out += [line + "\\par" for line in below]
        out.append("}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def write_table(table: Table, folder: Path) -> list[Path]:
    """Writes ``<key>.md``, ``<key>.csv`` and ``<key>.tex`` under ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, render in ((".md", to_markdown), (".csv", to_csv), (".tex", to_latex)):
        path = folder / f"{table.key}{suffix}"
        paths.append(write_text_atomically(path, render(table), "table", "`reid-eval report`"))
    return paths
