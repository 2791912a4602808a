"""report stage: the paper's Tables 3 and 4 beside measured rows, and the figures.

``build_report(results_dir, out_dir=None, cache_dir=None, probes=None, top_k=10)``
reads the results JSON files that `reid-eval match` writes (and, for the
retrieval and foreground figures, the HDF5 caches they name) and writes
Markdown, CSV and LaTeX tables under ``<out_dir>/tables/`` and PNG/PDF figures
under ``<out_dir>/figures/``. The paper's numbers are data
(``paper_tables.json``), each row quoted from He et al., ICCV 2019.
"""

from reid_eval.report.build import ReportSummary, build_report
from reid_eval.report.paper import PaperRow, PaperTable, load_paper_tables
from reid_eval.report.results import ResultRecord, load_results
from reid_eval.report.tables import Table, build_dataset_table, build_paper_table, to_csv, to_latex, to_markdown

__all__ = [
    "PaperRow",
    "PaperTable",
    "ReportSummary",
    "ResultRecord",
    "Table",
    "build_dataset_table",
    "build_paper_table",
    "build_report",
    "load_paper_tables",
    "load_results",
    "to_csv",
    "to_latex",
    "to_markdown",
]
