"""Per-query records: one row per query with its outcome under the protocol.

The table that ``match`` writes beside each results JSON, and that the report
and ``reid-eval compare`` read instead of recomputing. Every number comes from
:func:`reid_eval.evaluation.ranking.query_stats` (one rank rule for the CMC,
AP, INP and the top-k list).

Columns, one row per query in query order:

- ``query_index`` (int): row of the query in the distance matrix.
- ``path`` (str), ``pid`` (int), ``camid`` (int): the query image.
- ``num_good`` (int): its correct matches (same pid, other camera); 0 where
  the query is not valid (no correct match: it scores 0 in the official
  ``market1501`` averages and is left out of the others).
- ``first_rank`` (int or empty): 1-based rank of its first correct match
  among its non-junk gallery images; empty where not valid.
- ``ap`` (float or empty): its AP in the results' flavour (``ap_flavour`` in
  the results JSON); ``inp`` (float or empty): its INP.
- ``single_shot_r1`` (float, CUHK03 classic only): the share of its
  single-gallery-shot draws whose drawn correct match ranked first.
- ``top1`` ... ``top<k>`` (int): whole-gallery indices of its first k
  non-junk gallery images in ranking order, -1 past the end of the gallery.

Format: CSV (``<results stem>.queries.csv``). Parquet would need pyarrow,
which is not a dependency; the table is small (Market-1501: 3,368 rows,
about 0.3 MB), CSV is read by every tool, and floats are written with 17
significant digits so a read gives back exactly the computed values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from reid_eval.atomic import write_atomically
from reid_eval.evaluation.ranking import QueryStats

DEFAULT_TOP_K = 10
RECORDS_SUFFIX = ".queries.csv"
# pandas < 3 parses floats with a fast, not always exact, parser unless asked;
# pandas 3 parses exactly and deprecates the option.
_ROUND_TRIP: dict[str, str] = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}
BASE_COLUMNS: tuple[str, ...] = ("query_index", "path", "pid", "camid", "num_good", "first_rank", "ap", "inp")


def records_path(results_file: str | os.PathLike) -> Path:
    """The per-query table beside a results JSON: ``x.json`` -> ``x.queries.csv``."""
    p = Path(results_file)
    return p.with_name(p.stem + RECORDS_SUFFIX)


def query_records(
    stats: QueryStats,
    paths: list[str] | np.ndarray,
    q_pids: np.ndarray,
    q_camids: np.ndarray,
    ap: str = "standard",
) -> pd.DataFrame:
    """The per-query table (columns in the module docstring) from a whole matrix's stats.

    ``stats`` from :func:`query_stats` over all queries (with ``top_k`` > 0
    for the top-k columns); ``paths``, ``q_pids``, ``q_camids`` [num_query].
    """
    n = stats.num_query
    for name, values in (("paths", paths), ("q_pids", q_pids), ("q_camids", q_camids)):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries, the stats {n}")
    first = pd.array(np.where(stats.valid, stats.first_rank + 1, 0), dtype="Int64")
    first[~stats.valid] = pd.NA
    table: dict[str, object] = {
        "query_index": np.arange(n, dtype=np.int64),
        "path": [str(p) for p in paths],
        "pid": np.asarray(q_pids, dtype=np.int64),
        "camid": np.asarray(q_camids, dtype=np.int64),
        "num_good": stats.num_good.astype(np.int64),
        "first_rank": first,
        "ap": stats.ap(ap),
        "inp": stats.inp,
    }
    if stats.single_shot_rank is not None:
        hit = (stats.single_shot_rank == 0).mean(axis=1)
        table["single_shot_r1"] = np.where(stats.valid, hit, np.nan)
    if stats.top_gallery is not None:
        for j in range(stats.top_gallery.shape[1]):
            table[f"top{j + 1}"] = stats.top_gallery[:, j]
    return pd.DataFrame(table)


def write_query_records(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the table atomically (reid_eval.atomic: a failure keeps the file there before); returns the path."""
    return write_atomically(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.17g"),
                            "per-query records", "`reid-eval match`")


def read_query_records(path: str | os.PathLike) -> pd.DataFrame:
    """Read a per-query table; ValueError naming the file when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no per-query records (run `reid-eval match` again to write them)")
    try:
        table = pd.read_csv(
            p, dtype={"path": str}, keep_default_na=False, **_ROUND_TRIP,
            na_values={c: [""] for c in ("first_rank", "ap", "inp", "single_shot_r1")},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a per-query records CSV ({exc})") from None
    missing = [c for c in BASE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{p}: not a per-query records CSV (missing column(s) {', '.join(missing)})")
    for column in table.columns:
        if column == "path":
            continue
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = numbers.isna() & table[column].notna()
        if column in ("query_index", "pid", "camid", "num_good") or column.startswith("top"):
            bad |= table[column].isna() | (numbers.notna() & (numbers != numbers.round()))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{p}: column {column} of query row {row} holds {table[column].iloc[row]!r}, not a number; "
                             "rerun `reid-eval match` to write the table again")
        table[column] = numbers
    table["first_rank"] = table["first_rank"].astype("Int64")
    return table


def recorded_ranks(table: pd.DataFrame, top_k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(first_rank, top_gallery)`` as :class:`QueryStats` holds them, read back from a per-query table.

    ``first_rank`` int64 [n]: 0-based, -1 where not valid; ``top_gallery``
    int64 [n, top_k]. None when the table lists fewer than ``top_k`` images
    per query (the caller then recomputes them).
    """
    columns = [f"top{j + 1}" for j in range(top_k)]
    if any(c not in table.columns for c in columns):
        return None
    first = table["first_rank"].to_numpy(dtype=np.float64, na_value=np.nan)
    first_rank = np.where(np.isnan(first), -1, first - 1).astype(np.int64)
    return first_rank, table[columns].to_numpy(dtype=np.int64)
