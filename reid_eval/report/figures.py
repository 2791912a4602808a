"""The report's figures, PNG and PDF, drawn with matplotlib's Agg backend.

* retrieval rows (paper Fig. 6): a probe and its top-k gallery images under
  each metric, one row per metric, green border = same identity, red = not,
  each with its distance; gallery images the protocol drops for that probe
  (same identity and camera, pid −1) are left out and ties go by gallery
  index, as in the evaluation stage, whose per-query ranks also pick the probes;
* foreground probability maps (Fig. 4): each image above its finest pyramid
  level's probabilities drawn over it as a heatmap;
* CMC curves per dataset, one line per results file;
* β sweep: R1 and mAP against β when results for several β exist.

Figure sizes are fixed in pixels (the ``*_size`` functions) so a figure pasted
into a paper keeps its tile scale; images are resized to 64×128 tiles. An
image that cannot be read becomes a grey tile and a warning.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from reid_eval.atomic import write_atomically  # noqa: E402
from reid_eval.errors import ReidEvalError  # noqa: E402
from reid_eval.experiments.record import PAPER_BETA  # noqa: E402
from reid_eval.features.images import load_rgb  # noqa: E402
from reid_eval.report.results import ResultRecord  # noqa: E402

DPI = 100
TILE_W, TILE_H = 64, 128  # image tile, pixels
CELL_W = 80  # a tile's column including its margins, pixels
RETRIEVAL_LABEL_W, RETRIEVAL_TITLE_H, RETRIEVAL_ROW_H = 110, 40, 180
FOREGROUND_CBAR_W, FOREGROUND_TITLE_H, FOREGROUND_ROW_H, FOREGROUND_MARGIN = 80, 40, 160, 20
CMC_SIZE = (640, 480)
BETA_SIZE = (960, 400)
GREY = 0.5
CORRECT, WRONG, PROBE = "#1a9850", "#d73027", "#4575b4"

Warn = Callable[[str], None]


def retrieval_size(top_k: int, n_rows: int) -> tuple[int, int]:
    """(width, height) in pixels of a retrieval figure with ``n_rows`` metrics and ``top_k`` gallery images.

    At least four gallery columns wide, so that the title fits.
    """
    return RETRIEVAL_LABEL_W + CELL_W * (max(top_k, 4) + 1), RETRIEVAL_TITLE_H + RETRIEVAL_ROW_H * n_rows


def foreground_size(n_images: int) -> tuple[int, int]:
    """(width, height) in pixels of a foreground-map figure of ``n_images`` images (image row + map row).

    At least four image columns wide, so that the title fits.
    """
    return FOREGROUND_MARGIN + CELL_W * max(n_images, 4) + FOREGROUND_CBAR_W, FOREGROUND_TITLE_H + 2 * FOREGROUND_ROW_H


def _figure(size: tuple[int, int]) -> plt.Figure:
    return plt.figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)


def _save(fig: plt.Figure, base: Path) -> list[Path]:
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    try:
        for path in paths:
            # no bbox_inches="tight": the pixel size stays the designed one
            write_atomically(path, lambda tmp, kind=path.suffix[1:]: fig.savefig(tmp, dpi=DPI, format=kind),
                             "figure", "`reid-eval report`")
    finally:
        plt.close(fig)
    return paths


def safe_name(text: str) -> str:
    """A file-name-safe version of a dataset or metric name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)


def load_tile(path: Path | None, warn: Warn | None = None) -> tuple[np.ndarray, bool]:
    """The image at ``path`` as a [128, 64, 3] float32 RGB tile in [0, 1]; grey (and False) if unreadable."""
    if path is not None:
        try:
            rgb = load_rgb(path).resize((TILE_W, TILE_H), Image.BILINEAR)  # upright by EXIF, PIL's warnings kept back
            return np.asarray(rgb, dtype=np.float32) / 255.0, True
        except ReidEvalError as exc:
            if warn:
                warn(f"{exc}; drawn as a grey tile")
    elif warn:
        warn("image location unknown (cache has no dataset_root); drawn as a grey tile")
    return np.full((TILE_H, TILE_W, 3), GREY, dtype=np.float32), False


def _pixel_axes(fig: plt.Figure, size: tuple[int, int], left: float, top: float, width: float, height: float) -> plt.Axes:
    """Axes placed in pixels from the figure's top-left corner."""
    w, h = size
    ax = fig.add_axes((left / w, 1.0 - (top + height) / h, width / w, height / h))
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _tile(ax: plt.Axes, tile: np.ndarray, border: str | None) -> None:
    ax.imshow(tile, extent=(0, TILE_W, TILE_H, 0), interpolation="bilinear")
    for spine in ax.spines.values():
        spine.set_visible(border is not None)
        if border is not None:
            spine.set_edgecolor(border)
            spine.set_linewidth(3)


# ---------------------------------------------------------------- ranking


def choose_probes(ranks: dict[str, np.ndarray], primary: str, n_best: int = 2, n_worst: int = 2) -> list[int]:
    """Probe indices to show: where ``primary`` does best and worst.

    ``ranks``: per metric, int64 [P] 0-based first-match ranks, −1 for a probe
    without a correct match — the ``first_rank`` of
    :func:`reid_eval.evaluation.query_stats`, the ranks the CMC is built from.

    With other metrics present, "best" are the probes where the primary
    metric's first correct match ranks highest relative to the best other
    metric (the cases Fig. 6 shows, where FPR finds what DSR misses); "worst"
    the opposite. With one metric: lowest and highest first-match rank.
    Probes without any correct match are never chosen. Ties: lower index first.
    """
    mine = ranks[primary]
    usable = np.flatnonzero(mine >= 0)
    if usable.size == 0:
        return []
    others = [r for name, r in ranks.items() if name != primary]
    if others:
        other_best = np.min(np.stack([np.where(r >= 0, r, np.iinfo(np.int64).max // 2) for r in others]), axis=0)
        score = mine - other_best
    else:
        score = mine.copy()
    order = usable[np.lexsort((usable, mine[usable], score[usable]))]
    best = list(order[:n_best])
    worst = [i for i in order[::-1][: n_worst + n_best] if i not in best][:n_worst]
    return [int(i) for i in best + worst]


# ---------------------------------------------------------------- figures


@dataclass
class RetrievalRow:
    """One metric's row: its label, the gallery indices shown, their distances, whether each is correct."""

    label: str
    gallery: list[int]
    distances: list[float]
    correct: list[bool]


def retrieval_figure(
    base: Path,
    title: str,
    probe_tile: np.ndarray,
    rows: Sequence[RetrievalRow],
    gallery_tile: Callable[[int], np.ndarray],
    top_k: int,
) -> list[Path]:
    """Draws the probe and each metric's top-k; writes ``base``.png/.pdf of :func:`retrieval_size`."""
    size = retrieval_size(top_k, len(rows))
    fig = _figure(size)
    fig.text(0.5, 1.0 - 6 / size[1], title, ha="center", va="top", fontsize=8)
    for r, row in enumerate(rows):
        top = RETRIEVAL_TITLE_H + r * RETRIEVAL_ROW_H + 10
        fig.text(8 / size[0], 1.0 - (top + TILE_H / 2) / size[1], row.label, ha="left", va="center", fontsize=8, wrap=True)
        ax = _pixel_axes(fig, size, RETRIEVAL_LABEL_W + (CELL_W - TILE_W) / 2, top, TILE_W, TILE_H)
        _tile(ax, probe_tile, PROBE)
        ax.set_xlabel("probe", fontsize=7)
        for c, (g, d, ok) in enumerate(zip(row.gallery, row.distances, row.correct), start=1):
            left = RETRIEVAL_LABEL_W + c * CELL_W + (CELL_W - TILE_W) / 2
            ax = _pixel_axes(fig, size, left, top, TILE_W, TILE_H)
            _tile(ax, gallery_tile(g), CORRECT if ok else WRONG)
            ax.set_xlabel(f"{d:.3g}", fontsize=7)
    return _save(fig, base)


def foreground_figure(base: Path, title: str, tiles: Sequence[np.ndarray], maps: Sequence[np.ndarray], captions: Sequence[str]) -> list[Path]:
    """Each image above its foreground probability map ([h, w] in [0, 1]) drawn over it; :func:`foreground_size` pixels."""
    size = foreground_size(len(tiles))
    fig = _figure(size)
    fig.text(0.5, 1.0 - 8 / size[1], title, ha="center", va="top", fontsize=8, wrap=True)
    image = None
    for i, (tile, fmap, caption) in enumerate(zip(tiles, maps, captions)):
        left = FOREGROUND_MARGIN + i * CELL_W + (CELL_W - TILE_W) / 2
        ax = _pixel_axes(fig, size, left, FOREGROUND_TITLE_H + 5, TILE_W, TILE_H)
        _tile(ax, tile, None)
        ax.set_xlabel(caption, fontsize=7)
        ax = _pixel_axes(fig, size, left, FOREGROUND_TITLE_H + FOREGROUND_ROW_H + 5, TILE_W, TILE_H)
        _tile(ax, tile, None)
        image = ax.imshow(fmap, extent=(0, TILE_W, TILE_H, 0), cmap="jet", vmin=0.0, vmax=1.0, alpha=0.55, interpolation="bilinear")
        ax.set_xlabel(f"mean {float(np.mean(fmap)):.2f}", fontsize=7)
    if image is not None:
        cax = _pixel_axes(fig, size, size[0] - FOREGROUND_CBAR_W + 15, FOREGROUND_TITLE_H + FOREGROUND_ROW_H + 5, 12, TILE_H)
        bar = fig.colorbar(image, cax=cax)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("P(foreground)", fontsize=7)
    return _save(fig, base)


def cmc_figure(base: Path, title: str, records: Sequence[ResultRecord], max_rank: int = 20) -> list[Path]:
    """CMC curves (percent against rank 1..max_rank, as far as each curve goes), one line per results file, legend with R1 and mAP."""
    fig = _figure(CMC_SIZE)
    ax = fig.add_axes((0.1, 0.12, 0.86, 0.8))
    several = len({r.checkpoint_sha256 for r in records}) > 1  # then each line names its checkpoint
    for record in records:
        ranks = np.arange(1, min(len(record.cmc), max_rank) + 1)
        label = f"{record.label(checkpoint=several)}: R1 {100 * record.cmc[0]:.2f}, mAP {100 * record.mAP:.2f}"
        ax.plot(ranks, 100 * record.cmc[: len(ranks)], marker="o", markersize=3, label=label)
    ax.set_xlabel("rank")
    longest = max((min(len(r.cmc), max_rank) for r in records), default=0)
    ax.set_xticks(np.arange(1, longest + 1, 1 if longest <= 20 else 5))
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, base)


def beta_groups(records: Sequence[ResultRecord]) -> dict[str, list[ResultRecord]]:
    """Results of one dataset that differ only in β, grouped (every other identity field and the checkpoint equal).

    Kept only where ≥2 distinct β exist; each group sorted by β, keyed by its
    label ('FPR', 'FPR (λ=0.5, standard AP)').
    """
    several = len({r.checkpoint_sha256 for r in records}) > 1
    groups: dict[tuple, list[ResultRecord]] = {}
    labels: dict[tuple, str] = {}
    for record in records:
        if record.beta is None:
            continue
        same_beta = ResultRecord(record.path, dataclasses.replace(record.result, params=dataclasses.replace(record.params, beta=PAPER_BETA)))
        key = same_beta.params.identity()
        extras = [e for e in (same_beta.variant_label, same_beta.ap_label, f"ckpt {record.short_sha}" if several else "") if e]
        labels[key] = record.method_name + (f" ({', '.join(extras)})" if extras else "")
        groups.setdefault(key, []).append(record)
    return {labels[k]: sorted(v, key=lambda r: r.beta) for k, v in groups.items() if len({r.beta for r in v}) >= 2}


def beta_sweep_figure(base: Path, title: str, groups: dict[str, list[ResultRecord]]) -> list[Path]:
    """R1 and mAP (percent) against β on a log axis, one line per metric."""
    fig = _figure(BETA_SIZE)
    axes = [fig.add_axes((0.07, 0.14, 0.4, 0.72)), fig.add_axes((0.57, 0.14, 0.4, 0.72))]
    for name, recs in groups.items():
        betas = [r.beta for r in recs]
        axes[0].plot(betas, [100 * r.cmc[0] for r in recs], marker="o", label=name)
        axes[1].plot(betas, [100 * r.mAP for r in recs], marker="o", label=name)
    for ax, what in zip(axes, ("R1 (%)", "mAP (%)")):
        ax.set_xscale("log")
        ax.set_xlabel("β")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3, which="both")
        ax.axvline(PAPER_BETA, color="grey", linestyle=":", linewidth=1)  # the paper's β
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, base)

