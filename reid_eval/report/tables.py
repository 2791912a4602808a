"""Tables 3 and 4 with the paper's rows beside measured ones, and per-dataset tables; Markdown, CSV, LaTeX.

Cells are numbers (:class:`Cell`: a percentage, its interval, its marks), so
each renderer formats them its own way: Markdown ``45.00 [38.1, 51.2]°``, CSV
one line per (row, dataset, measure) with numeric ``value``, ``low`` and
``high`` columns, LaTeX a booktabs table of values and marks that fits a paper
column (intervals on request). Paper rows are quoted as printed
(``paper.py``); measured rows come from results files (fractions, multiplied
by 100 here).

A paper table names its measured rows' model in one line and nothing else of
how they were computed: each measured row's provenance (results file,
checkpoint, matching parameters, engine settings, query counts) is kept in
``Row.provenance``, written once into the report's appendix
(:func:`provenance_markdown`) and in the results files themselves.

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
import re
from dataclasses import dataclass, field
from pathlib import Path

from reid_eval.atomic import write_text_atomically
from reid_eval.experiments.record import PAPER_AP
from reid_eval.report.paper import PaperTable
from reid_eval.report.results import ResultRecord
from reid_eval.report.uncertainty import NEXT_MARK, PAPER_MARK, interval, marks_note, next_marks, within

EMPTY = "—"
MEASURED = "measured"
_DATASET_LABELS = {
    "market1501": "Market1501",
    "dukemtmc_reid": "DukeMTMC",
    "cuhk03_np": "CUHK03",
    "partial_reid": "Partial-REID",
    "partial_ilids": "Partial-iLIDS",
    "partial_reid_occluded": "Partial-REID (occluded probes)",
    "partial_ilids_nocrop": "Partial-iLIDS (uncropped probes)",
    "cuhk03_pair1": "CUHK03 pair 1",
    "occluded_reid": "Occluded-REID",
    "synthetic_occluded": "Synthetic occluded",
    "pets09_s2l1": "PETS09-S2L1",
    "occluded_dukemtmc": "Occluded-DukeMTMC",
    "p_dukemtmc_reid": "P-DukeMTMC-reID",
}


def dataset_label(name: str) -> str:
    """Display name of a dataset ('partial_reid' -> 'Partial-REID'); unknown names as given."""
    return _DATASET_LABELS.get(name, name)


@dataclass(frozen=True)
class Cell:
    """One table entry in percent: ``value`` (None: no entry), its interval ``low``..``high`` when recorded,
    and its marks (:data:`PAPER_MARK`, :data:`NEXT_MARK`)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    marks: str = ""

    def text(self, intervals: bool = True) -> str:
        """``45.00 [38.1, 51.2]°`` (``45.00°`` without intervals); ``—`` for no value."""
        if self.value is None or math.isnan(self.value):
            return EMPTY
        bounds = f" [{self.low:.1f}, {self.high:.1f}]" if intervals and self.low is not None else ""
        return f"{self.value:.2f}{bounds}{self.marks}"

    def __str__(self) -> str:
        return self.text()


def measured_cell(value: float | None, bounds: tuple[float, float] | None, marks: str = "") -> Cell:
    """A cell from a fraction and its interval (fractions), as results files record them."""
    if value is None or math.isnan(value):
        return Cell(None)
    low, high = (None, None) if bounds is None else (100 * bounds[0], 100 * bounds[1])
    return Cell(100 * value, low, high, marks)


@dataclass
class Row:
    """A table row: label, source ('paper' or 'measured'), cells, optional group; a measured row's provenance."""

    label: str
    source: str
    cells: list[Cell]
    group: str = ""
    full_source: str = ""
    provenance: str = ""  # how a measured row was computed: the report's appendix, not the table


@dataclass
class Table:
    """A rendered-ready table.

    ``column_groups``: [(dataset label, [sub-column names])]; every row has
    sum(len(subs)) cells. ``notes``: free text printed under the table
    (quotation notes, missing-results hints, the measured rows' model).
    ``show_groups``: the group labels head the columns (a table of one
    dataset names it in its title instead).
    """

    key: str
    title: str
    column_groups: list[tuple[str, list[str]]]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    grouped: bool = False  # show the 'group' column (Table 4's method families)
    show_groups: bool = True

    @property
    def value_columns(self) -> list[str]:
        """Each value column's full name, e.g. 'Partial-REID R1' (the CSV's dataset + measure)."""
        return [f"{g} {s}" for g, subs in self.column_groups for s in subs]

    @property
    def headers(self) -> list[str]:
        """Value column headers as printed: a group's name once, over its first column ('Partial-REID R1', 'mAP')."""
        if not self.show_groups:
            return [s for _, subs in self.column_groups for s in subs]
        return [f"{g} {s}" if j == 0 else s for g, subs in self.column_groups for j, s in enumerate(subs)]


def _provenance_text(record: ResultRecord) -> str:
    """Results file, checkpoint, parameters and query counts behind one measured cell group."""
    return (f"{record.path.name}: metric {record.metric}; checkpoint {record.short_sha}; {_params_text(record)}; "
            f"AP {record.ap_flavour}; {record.num_valid_query}/{record.num_query} valid queries × "
            f"{record.num_gallery} gallery")


def _model_note(records: list[ResultRecord]) -> list[str]:
    """One line naming the model(s) behind the measured rows (backbone and input size when recorded, checkpoint)."""
    models = []
    for r in records:
        backbone, size = r.model_name or r.provenance.get("backbone"), r.provenance.get("input_size")
        text = (f"{backbone}" + (f" at {'x'.join(map(str, size))}" if size else "") + ", " if backbone else "") \
            + f"checkpoint {r.short_sha}"
        if text not in models:
            models.append(text)
    if not models:
        return []
    return [f"Measured rows: {'; '.join(sorted(models))} (how each row was computed: the report's provenance appendix)."]


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


def fill_commands(dataset: str, checkpoint: str | None = None) -> str:
    """The commands that produce the measured rows for a dataset, runnable as printed when ``checkpoint``
    (the file the other measured rows were extracted with) is known."""
    ckpt = checkpoint if checkpoint is not None else "CHECKPOINT.pt"
    return (
        f"`reid-eval extract --dataset {dataset} --checkpoint {ckpt}` then "
        f"`for m in fpr dsr euclidean; do reid-eval match --metric $m --dataset {dataset} --ap {PAPER_AP}; done`"
        + ("" if checkpoint is not None else " with your checkpoint file")
    )


def build_paper_table(paper: PaperTable, records: list[ResultRecord], checkpoint: str | None = None) -> Table:
    """A paper table with its quoted rows followed by measured rows for its datasets.

    ``checkpoint``: the checkpoint file of the measured rows, named in the commands that fill an empty column.
    ``records`` may hold any results; those whose (base) dataset is not one of
    the table's columns are ignored. Two results for the same row and column
    (e.g. two checkpoints) give two rows, never a silent overwrite.
    """
    datasets = paper.datasets
    mine = [r for r in records if r.base_dataset in datasets]
    rows: list[Row] = []
    for prow in paper.rows:
        cells = [Cell(v) for ds in datasets for v in prow.values[ds]]
        rows.append(Row(prow.label, "paper", cells, group=prow.group, full_source=prow.source))

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
        cells = []
        for ds in datasets:
            r = taken.get(ds)
            if r is None:
                cells += [Cell(None), Cell(None)]
                continue
            prow = paper_of.get(r.metric) if not r.variant_label else None
            for j, (col, value) in enumerate((("R1", r.rank(1)), ("mAP", r.mAP))):
                bounds = interval(r, col)
                comparable = prow is not None and (col == "R1" or not r.ap_label)  # mAP only in the paper's AP flavour
                mark = PAPER_MARK if comparable and within(prow.values[ds][j], bounds) else ""
                cells.append(measured_cell(value, bounds, mark + nxt[(ds, col)][index]))
        rows.append(
            Row(members[0].label(_other_variant(members[0], paper.cuhk03_variant), checkpoint=several), MEASURED, cells,
                group=MEASURED if paper.rows[0].group else "", full_source=MEASURED,
                provenance="\n".join(_provenance_text(r) for r in members))
        )

    notes = [f"Paper rows quoted from {paper.source}; measured rows from this run's results files (percent)."]
    have = {r.base_dataset for r in mine}
    for column in paper.columns:
        if column.dataset not in have:
            notes.append(f"{column.label}: no results yet; run {fill_commands(column.dataset, checkpoint)}.")
    if paper.cuhk03_variant and "cuhk03_np" in datasets:
        other = "labeled" if paper.cuhk03_variant == "detected" else "detected"
        notes.append(
            f"CUHK03 column: the paper's numbers are compared with CUHK03-NP {paper.cuhk03_variant} boxes; "
            f"results on the {other} boxes have rows marked '{other}' (see the quotation notes)."
        )
    notes.extend(_model_note(mine))
    notes.extend(_ap_note(mine, paper_table=True))
    if any(r.result.intervals for r in mine):
        notes.append(marks_note())
    notes.extend(f"Quotation note: {n}" for n in paper.notes)
    return Table(
        key=paper.key,
        title=paper.title,
        column_groups=[(c.label, ["R1", "mAP"]) for c in paper.columns],
        rows=rows,
        notes=notes,
        grouped=bool(paper.rows[0].group),
    )


def build_dataset_table(dataset: str, records: list[ResultRecord]) -> Table:
    """A table of measured rows for a dataset that no paper table covers: R1, R5, R10, mAP, mINP (percent)."""
    rows = []
    mine = [r for r in records if r.dataset == dataset]
    several = _several_checkpoints(mine)
    ordered = [r for group in _group_rows(mine) for r in group]
    nxt = {col: next_marks(ordered, col) for col in ("R1", "mAP")}
    verified = any(r.result.verification for r in mine)  # files from before verification get no TPR columns
    for index, r in enumerate(ordered):
        cells = [
            measured_cell(value, interval(r, col), nxt.get(col, [""] * len(ordered))[index])
            for col, value in (("R1", r.rank(1)), ("R5", r.rank(5)), ("R10", r.rank(10)), ("mAP", r.mAP), ("mINP", r.mINP))
        ]
        cells += verification_cells(r) if verified else []
        rows.append(Row(r.label(checkpoint=several), MEASURED, cells, full_source=MEASURED,
                        provenance=_provenance_text(r)))
    beyond = " — an occluded benchmark beyond the paper" if dataset in OCCLUDED_BEYOND_PAPER else ""
    notes = ["No published numbers for this dataset; all rows measured.", *_model_note(mine),
             *_ap_note(mine, paper_table=False)]
    if any(r.result.intervals for r in mine):
        notes.append(marks_note())
    if verified:
        notes.append("TPR@FPR: verification over all valid query–gallery pairs (reid_eval.evaluation.verification).")
    return Table(
        key=dataset,
        title=f"Measured results on {dataset_label(dataset)} ({dataset}; percent){beyond}",
        column_groups=[(dataset_label(dataset), ["R1", "R5", "R10", "mAP", "mINP", *(TPR_COLUMNS if verified else ())])],
        rows=rows,
        notes=notes,
        show_groups=False,  # the title names the dataset
    )


#: Occluded benchmarks published after the paper: each gets a table of its own.
OCCLUDED_BEYOND_PAPER: tuple[str, ...] = ("occluded_dukemtmc", "p_dukemtmc_reid")
TPR_COLUMNS: tuple[str, ...] = ("TPR@FPR1e-4", "TPR@FPR1e-3", "TPR@FPR1e-2")


def build_verification_table(records: list[ResultRecord]) -> Table:
    """TPR at FPR 1e-4, 1e-3, 1e-2 (percent) of every result that recorded it, one row per result."""
    rows = []
    several = _several_checkpoints(records)
    for r in sorted(records, key=lambda r: (r.dataset, r.sort_key)):
        if not r.result.verification:
            continue
        rows.append(Row(f"{dataset_label(r.dataset)}: {r.label(checkpoint=several)}", MEASURED, verification_cells(r),
                        full_source=MEASURED, provenance=_provenance_text(r)))
    return Table(
        key="verification",
        title="Verification: TPR at fixed FPR over all valid query–gallery pairs (percent)",
        column_groups=[("TPR at FPR", ["1e-4", "1e-3", "1e-2"])],
        rows=rows,
        notes=["Pairs kept by the retrieval protocol's junk rules; a pair is accepted when its distance is below the "
               "largest threshold whose FPR does not exceed the target (reid_eval.evaluation.verification)."],
    )


def verification_cells(record: ResultRecord) -> list[Cell]:
    """TPR (percent) at FPR 1e-4, 1e-3, 1e-2; no value where not recorded."""
    tpr = (record.result.verification or {}).get("tpr_at_fpr", {})
    return [Cell(100 * float(tpr[k]) if k in tpr else None) for k in ("0.0001", "0.001", "0.01")]


# ---------------------------------------------------------------- renderers


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: a heading, the table and its notes."""
    head = (["Group"] if table.grouped else []) + ["Method", "Source"] + table.headers
    align = (["---"] if table.grouped else []) + ["---", "---"] + ["---:"] * len(table.headers)
    lines = [f"### {table.title}", "", _md_row(head), _md_row(align)]
    for row in table.rows:
        lines.append(_md_row(([row.group] if table.grouped else []) + [row.label, row.source]
                             + [c.text() for c in row.cells]))
    if table.notes:
        lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def provenance_markdown(tables: list[Table]) -> str:
    """The report's appendix: for each measured row of each table, how it was computed (one home for it)."""
    lines = ["## Appendix: provenance of the measured rows", ""]
    for table in tables:
        measured = [row for row in table.rows if row.provenance]
        if not measured:
            continue
        lines.append(f"**{table.title}**")
        lines.append("")
        for row in measured:
            for text in row.provenance.splitlines():
                lines.append(f"- {row.label}: {text}")
        lines.append("")
    return "\n".join(lines)


CSV_COLUMNS: tuple[str, ...] = ("table", "group", "method", "source", "dataset", "measure", "value", "low", "high",
                                "marks")


def to_csv(table: Table) -> str:
    """Long format, one line per (row, dataset, measure): ``value``, ``low``, ``high`` numeric percent
    (empty when absent), ``marks`` the cell's marks; the columns of :data:`CSV_COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    number = lambda v: "" if v is None or math.isnan(v) else f"{v:.4f}"  # noqa: E731
    for row in table.rows:
        cells = iter(row.cells)
        for dataset, subs in table.column_groups:
            for measure in subs:
                c = next(cells)
                writer.writerow([table.key, row.group, row.label, row.full_source or row.source, dataset, measure,
                                 number(c.value), number(c.low), number(c.high), c.marks])
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
    "−": "--",
    "°": r"$^{\circ}$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "±": r"$\pm$",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular: specials escaped, β/λ/×/°/dashes as LaTeX, `code` as \\texttt;
    any other non-ASCII character as a ``?`` (the output is pure ASCII, so it compiles with any inputenc)."""
    parts = text.split("`") if text.count("`") % 2 == 0 else [text]
    out = []
    for i, part in enumerate(parts):
        escaped = "".join(_LATEX_SPECIAL.get(ch, ch if ch.isascii() else "?") for ch in part)
        # "--" is an en-dash ligature in some typewriter fonts; "-{}-" keeps an option's two hyphens.
        out.append(f"\\texttt{{{escaped.replace('--', '-{}-')}}}" if i % 2 else escaped)
    return "".join(out)


def _latex_cell(cell: Cell, intervals: bool) -> str:
    text = Cell(cell.value, cell.low, cell.high).text(intervals)
    marks = "".join({PAPER_MARK: r"\circ", NEXT_MARK: "*"}.get(m, "") for m in cell.marks)
    return latex_escape(text) + (f"$^{{{marks}}}$" if marks else "")


def to_latex(table: Table, intervals: bool = False) -> str:
    """A booktabs ``table`` environment that fits a paper column (``tabularx`` at ``\\columnwidth``;
    needs ``\\usepackage{booktabs,tabularx}``).

    One label column and the values: the paper's rows, then (after a rule)
    the measured ones, each block headed by a spanning line (Table 4's method
    families too), values with their marks; ``intervals`` adds each measured
    value's interval. The marks' legend and the model line go under it; the
    other notes stay in the Markdown. Pure ASCII.
    """
    n = 1 + len(table.value_columns)
    # the label column takes what the values leave of the column, wrapping long labels
    spec = "@{}>{\\raggedright\\arraybackslash}X" + "".join(" " + "r" * len(subs) for _, subs in table.column_groups) + "@{}"
    out = [
        "% Generated by `reid-eval report`; needs \\usepackage{booktabs,tabularx}.",
        "\\begin{table}[t]",
        "\\centering",
        "\\footnotesize",
        "\\setlength{\\tabcolsep}{3pt}",
        f"\\caption{{{latex_escape(re.sub(r'^Table [0-9]+[.:] *', '', table.title))}}}",  # LaTeX numbers it
        f"\\label{{tab:reid-eval-{latex_escape(table.key).replace(chr(92) + '_', '-')}}}",
        f"\\begin{{tabularx}}{{\\columnwidth}}{{{spec}}}",
        "\\toprule",
    ]
    if table.show_groups:
        out.append(" & ".join([""] + [f"\\multicolumn{{{len(subs)}}}{{c}}{{{latex_escape(g)}}}"
                                      for g, subs in table.column_groups]) + " \\\\")
        start, rules = 2, []
        for _, subs in table.column_groups:
            rules.append(f"\\cmidrule(lr){{{start}-{start + len(subs) - 1}}}")
            start += len(subs)
        out.append(" ".join(rules))
    out.append(" & ".join(["Method"] + [latex_escape(s) for _, subs in table.column_groups for s in subs]) + " \\\\")
    previous = None
    both = len({row.source == MEASURED for row in table.rows}) == 2
    for row in table.rows:
        block = "Measured here" if row.source == MEASURED and both else (row.group if table.grouped else "")
        if block != previous:
            out.append("\\midrule")
            if block:
                out.append(f"\\multicolumn{{{n}}}{{l}}{{\\emph{{{latex_escape(block)}}}}} \\\\")
            previous = block
        label = row.label.replace("(measured, ", "(").replace(" (measured)", "") if row.source == MEASURED else row.label
        out.append(" & ".join([latex_escape(label)] + [_latex_cell(c, intervals) for c in row.cells]) + " \\\\")
    out += ["\\bottomrule", "\\end{tabularx}"]
    below = []
    if any(row.source != MEASURED for row in table.rows) and any(row.source == MEASURED for row in table.rows):
        below.append("Upper rows: as printed in the paper; lower rows: measured with reid-eval.")
    marks = {m for row in table.rows for c in row.cells for m in c.marks}
    if marks:
        below.append(
            (f"{PAPER_MARK}: the paper's value lies within the measured 95% identity-bootstrap interval. "
             if PAPER_MARK in marks else "")
            + (f"{NEXT_MARK}: not told apart from the next measured row (their paired interval contains 0)."
               if NEXT_MARK in marks else ""))
    below += [n for n in table.notes if n.startswith("Measured rows:")]
    if below:
        out.append("\\par\\smallskip")
        out.append("{\\footnotesize\\raggedright")
        out += [latex_escape(line) + "\\par" for line in below]
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
