"""The numbers the FPR paper reports, as data (``paper_tables.json`` beside this module).

Every row is quoted from He et al., ICCV 2019 (its ``source`` says which table);
values are percentages exactly as printed, ``None`` where the paper leaves the
entry empty. The JSON file's ``notes`` record where the paper contradicts itself
or where a column's meaning had to be decided (CUHK03 labeled vs detected).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

PAPER_SOURCE = "He et al. ICCV 2019"


@dataclass(frozen=True)
class PaperColumn:
    """One dataset column of a paper table: our dataset name and the paper's label."""

    dataset: str
    label: str


@dataclass(frozen=True)
class PaperRow:
    """One quoted row. ``values[dataset] = (R1, mAP)`` in percent, each None when the paper prints '-'."""

    method: str
    source: str
    values: dict[str, tuple[float | None, float | None]]
    group: str = ""
    venue: str = ""
    ref: int | None = None
    measured_metric: str | None = None  # our metric that reproduces this row, if any

    @property
    def label(self) -> str:
        """The method as the paper's table prints it, without the citation number."""
        return f"{self.method} ({self.venue})" if self.venue else self.method


@dataclass(frozen=True)
class PaperTable:
    """A paper table: key ('table3'), title, dataset columns, quoted rows, notes on the quotation."""

    key: str
    title: str
    source: str
    columns: tuple[PaperColumn, ...]
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    cuhk03_variant: str | None = None

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(c.dataset for c in self.columns)


@lru_cache(maxsize=1)
def load_paper_tables() -> dict[str, PaperTable]:
    """Tables 3 and 4 of the paper, keyed 'table3' and 'table4', from the packaged JSON."""
    text = resources.files("reid_eval.report").joinpath("paper_tables.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    tables: dict[str, PaperTable] = {}
    for key, spec in raw["tables"].items():
        columns = tuple(PaperColumn(c["dataset"], c["label"]) for c in spec["columns"])
        rows = []
        for r in spec["rows"]:
            values = {ds: (_opt(v[0]), _opt(v[1])) for ds, v in r["values"].items()}
            missing = set(c.dataset for c in columns) - set(values)
            if missing:
                raise ValueError(f"paper_tables.json: row {r['method']!r} of {key} lacks {sorted(missing)}")
            rows.append(
                PaperRow(
                    method=r["method"],
                    source=r["source"],
                    values=values,
                    group=r.get("group", ""),
                    venue=r.get("venue", ""),
                    ref=r.get("ref"),
                    measured_metric=r.get("measured_metric"),
                )
            )
        tables[key] = PaperTable(
            key=key,
            title=spec["title"],
            source=spec["source"],
            columns=columns,
            rows=tuple(rows),
            notes=tuple(spec.get("notes", ())),
            cuhk03_variant=spec.get("cuhk03_variant"),
        )
    return tables


def _opt(value: float | None) -> float | None:
    return None if value is None else float(value)
