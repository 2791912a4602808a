"""The report's figures, PNG and PDF, drawn with matplotlib's Agg backend.

* retrieval rows (paper Fig. 6): a probe and its top-k gallery images under
  each metric, one row per metric, green border = same identity, red = not,
  each with its distance; each row says the metric's AP for the probe and the
  rank of its first correct match (also when that is beyond the top k), and
  the title says why the probe was chosen. Gallery images the protocol drops
  for that probe (same identity and camera, pid −1) are left out and ties go
  by gallery index, as in the evaluation stage, whose per-query ranks and APs
  also pick the probes (:func:`choose_probes`);
* foreground probability maps (Fig. 4): each image above its finest pyramid
  level's probabilities drawn over it as a heatmap, at twice the retrieval
  tiles' scale;
* CMC curves per dataset, one line per results file with its 95 %
  identity-bootstrap band where the results file has one, the legend below
  the axes;
* β sweep: R1 and mAP against β when results for several β exist.

Figure sizes are fixed in pixels (the ``*_size`` functions) so a figure pasted
into a paper keeps its tile scale. Every image keeps its aspect ratio: it is
scaled to fit a 64×128 box (a half-body crop is drawn as wide as a whole body
and shorter), top-aligned. An image that cannot be read becomes a grey box and
a warning.
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
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from reid_eval.atomic import write_atomically  # noqa: E402
from reid_eval.errors import ReidEvalError  # noqa: E402
from reid_eval.experiments.record import PAPER_BETA  # noqa: E402
from reid_eval.features.images import load_rgb  # noqa: E402
from reid_eval.report.results import ResultRecord  # noqa: E402

DPI = 100
TILE_W, TILE_H = 64, 128  # the box an image is fitted into, in the retrieval figure's pixels
LOAD_SCALE = 2  # images are read at twice the box, so the foreground figure's larger tiles stay sharp
CELL_W = 80  # a tile's column including its margins, pixels
RETRIEVAL_LABEL_W, RETRIEVAL_TITLE_H, RETRIEVAL_ROW_H = 130, 48, 180
FG_SCALE = 2  # the foreground figure's tiles: 128×256 pixels
FOREGROUND_CBAR_W, FOREGROUND_TITLE_H, FOREGROUND_ROW_H, FOREGROUND_MARGIN = 110, 56, FG_SCALE * TILE_H + 40, 24
FOREGROUND_CELL_W = FG_SCALE * TILE_W + 24
CMC_W, CMC_AXES_H, CMC_LEGEND_LINE_H = 640, 400, 16
BETA_SIZE = (960, 400)
GREY = 0.5
CORRECT, WRONG, PROBE = "#1a9850", "#d73027", "#4575b4"

Warn = Callable[[str], None]


def retrieval_size(top_k: int, n_rows: int) -> tuple[int, int]:
    """(width, height) in pixels of a retrieval figure with ``n_rows`` metrics and ``top_k`` gallery images.

    At least five gallery columns wide, so that the two title lines fit.
    """
    return RETRIEVAL_LABEL_W + CELL_W * (max(top_k, 5) + 1), RETRIEVAL_TITLE_H + RETRIEVAL_ROW_H * n_rows


def foreground_size(n_images: int) -> tuple[int, int]:
    """(width, height) in pixels of a foreground-map figure of ``n_images`` images (image row + map row).

    At least four image columns wide, so that the title fits.
    """
    return (FOREGROUND_MARGIN + FOREGROUND_CELL_W * max(n_images, 4) + FOREGROUND_CBAR_W,
            FOREGROUND_TITLE_H + 2 * FOREGROUND_ROW_H)


def cmc_size(n_lines: int) -> tuple[int, int]:
    """(width, height) in pixels of a CMC figure: the axes, and a legend row per line below them."""
    return CMC_W, CMC_AXES_H + 40 + CMC_LEGEND_LINE_H * max(n_lines, 1)


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


def fitted_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of an image of that size scaled, keeping its aspect, to fit the tile box at LOAD_SCALE."""
    box_h, box_w = LOAD_SCALE * TILE_H, LOAD_SCALE * TILE_W
    scale = min(box_h / max(height, 1), box_w / max(width, 1))
    return max(1, round(height * scale)), max(1, round(width * scale))


def load_tile(path: Path | None, warn: Warn | None = None) -> tuple[np.ndarray, bool]:
    """The image at ``path`` as float32 RGB in [0, 1], [h, w, 3] with its own aspect fitted into
    the tile box (:func:`fitted_size`); a grey box of the whole tile (and False) if unreadable."""
    if path is not None:
        try:
            rgb = load_rgb(path)  # extraction's reader: upright by EXIF, PIL's warnings kept from the user
            h, w = fitted_size(rgb.height, rgb.width)
            rgb = rgb.resize((w, h), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.float32) / 255.0, True
        except ReidEvalError as exc:
            if warn:
                warn(f"{exc}; drawn as a grey tile")
    elif warn:
        warn("image location unknown (cache has no dataset_root); drawn as a grey tile")
    return np.full((LOAD_SCALE * TILE_H, LOAD_SCALE * TILE_W, 3), GREY, dtype=np.float32), False


def _pixel_axes(fig: plt.Figure, size: tuple[int, int], left: float, top: float, width: float, height: float) -> plt.Axes:
    """Axes placed in pixels from the figure's top-left corner."""
    w, h = size
    ax = fig.add_axes((left / w, 1.0 - (top + height) / h, width / w, height / h))
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _tile(ax: plt.Axes, tile: np.ndarray, border: str | None) -> tuple[float, float, float, float]:
    """Draw ``tile`` in the box of ``ax`` (data units: the TILE_W×TILE_H box), centred and top-aligned at its
    own aspect, with a coloured frame around the image itself; returns the image's extent for overlays."""
    h, w = tile.shape[:2]
    scale = min(TILE_H / h, TILE_W / w)
    dw, dh = w * scale, h * scale
    x0 = (TILE_W - dw) / 2
    extent = (x0, x0 + dw, dh, 0.0)
    ax.imshow(tile, extent=extent, interpolation="bilinear")
    ax.set_xlim(0, TILE_W)
    ax.set_ylim(TILE_H, 0)
    ax.set_aspect("equal")
    for spine in ax.spines.values():
        spine.set_visible(False)
    if border is not None:
        ax.add_patch(Rectangle((x0, 0), dw, dh, fill=False, edgecolor=border, linewidth=3, clip_on=False))
    return extent


# ---------------------------------------------------------------- ranking


@dataclass(frozen=True)
class ProbeChoice:
    """A query to draw and why it was chosen (the line under the figure's title)."""

    index: int
    reason: str


def _ordinal(n: int) -> str:
    """'' for 1 (the best), '2nd ', '3rd ', '4th ', ... (up to the 20th)."""
    return {1: "", 2: "2nd ", 3: "3rd "}.get(n, f"{n}th ")


def choose_probes(ap: dict[str, np.ndarray], primary: str, n_best: int = 2, n_worst: int = 2) -> list[ProbeChoice]:
    """Queries to draw: where ``primary``'s AP gains most and loses most against the best other metric.

    ``ap``: per metric label, float64 [P] per-query AP (NaN for a query
    without a correct match), as :meth:`reid_eval.evaluation.QueryStats.ap`
    gives it, the APs the mAP is the mean of. With other metrics the score of
    a query is ``AP(primary) − max AP(others)``: the largest gains are the
    cases Fig. 6 shows (FPR finds what DSR misses), the largest losses the
    opposite. With one metric: its highest and lowest AP. Queries without a
    correct match are never chosen. Ties: lower index first.
    """
    mine = np.asarray(ap[primary], dtype=np.float64)
    usable = np.flatnonzero(np.isfinite(mine))
    if usable.size == 0:
        return []
    others = {name: np.asarray(v, dtype=np.float64) for name, v in ap.items() if name != primary}
    if others:
        stacked = np.stack([np.nan_to_num(v, nan=-np.inf) for v in others.values()])
        best_other = stacked.max(axis=0)
        rival = [list(others)[int(i)] for i in stacked.argmax(axis=0)]
        score = mine - best_other
    else:
        score = mine.copy()
    order = usable[np.lexsort((usable, -score[usable]))]  # highest score first, then lower index
    best = [int(i) for i in order[:n_best]]
    low_first = usable[np.lexsort((usable, score[usable]))]
    worst = [int(i) for i in low_first if int(i) not in best][:n_worst]

    def why(i: int, rank: int, gain: bool) -> str:
        which = f"{_ordinal(rank)}{'best' if gain else 'worst'} query for {primary}"
        if not others:
            return f"{which}: AP {mine[i]:.2f}"
        return (f"{which}: AP change {score[i]:+.2f} against the best other method "
                f"({primary} {mine[i]:.2f}, {rival[i]} {best_other[i]:.2f})")

    return ([ProbeChoice(i, why(i, n, True)) for n, i in enumerate(best, 1)]
            + [ProbeChoice(i, why(i, n, False)) for n, i in enumerate(worst, 1)])


# ---------------------------------------------------------------- figures


@dataclass
class RetrievalRow:
    """One metric's row: its label, the gallery indices shown, their distances, whether each is correct,
    the probe's AP under this metric (NaN: no correct match) and the 0-based rank of its first correct
    match among the non-junk gallery images (−1: none)."""

    label: str
    gallery: list[int]
    distances: list[float]
    correct: list[bool]
    ap: float = float("nan")
    first_rank: int = -1


def _row_caption(row: RetrievalRow) -> str:
    found = f"1st correct: rank {row.first_rank + 1}" if row.first_rank >= 0 else "no correct match"
    ap = f"AP {row.ap:.2f}" if np.isfinite(row.ap) else "AP —"
    return f"{row.label}\n{ap}\n{found}"


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
        fig.text(8 / size[0], 1.0 - (top + TILE_H / 2) / size[1], _row_caption(row), ha="left", va="center",
                 fontsize=8, linespacing=1.4)
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
    fig.text(0.5, 1.0 - 8 / size[1], title, ha="center", va="top", fontsize=11)
    tw, th = FG_SCALE * TILE_W, FG_SCALE * TILE_H
    image = None
    for i, (tile, fmap, caption) in enumerate(zip(tiles, maps, captions)):
        left = FOREGROUND_MARGIN + i * FOREGROUND_CELL_W + (FOREGROUND_CELL_W - tw) / 2
        ax = _pixel_axes(fig, size, left, FOREGROUND_TITLE_H + 5, tw, th)
        _tile(ax, tile, None)
        ax.set_xlabel(caption, fontsize=10)
        ax = _pixel_axes(fig, size, left, FOREGROUND_TITLE_H + FOREGROUND_ROW_H + 5, tw, th)
        extent = _tile(ax, tile, None)
        image = ax.imshow(fmap, extent=extent, cmap="jet", vmin=0.0, vmax=1.0, alpha=0.55, interpolation="bilinear")
        ax.set_xlabel(f"mean {float(np.mean(fmap)):.2f}", fontsize=10)
    if image is not None:
        cax = _pixel_axes(fig, size, size[0] - FOREGROUND_CBAR_W + 20, FOREGROUND_TITLE_H + FOREGROUND_ROW_H + 5, 16, th)
        bar = fig.colorbar(image, cax=cax)
        bar.ax.tick_params(labelsize=10)
        bar.set_label("P(foreground)", fontsize=10)
    return _save(fig, base)


def cmc_figure(base: Path, title: str, records: Sequence[ResultRecord], max_rank: int = 20) -> list[Path]:
    """CMC curves (percent against rank 1..max_rank, as far as each curve goes), one line per results file,
    each with its recorded 95 % identity-bootstrap band; the legend (R1 and mAP) below the axes."""
    size = cmc_size(len(records))
    fig = _figure(size)
    legend_h = size[1] - CMC_AXES_H
    ax = _pixel_axes(fig, size, 64, 36, size[0] - 88, CMC_AXES_H - 36 - 44)
    several = len({r.checkpoint_sha256 for r in records}) > 1  # then each line names its checkpoint
    banded = False
    for record in records:
        ranks = np.arange(1, min(len(record.cmc), max_rank) + 1)
        label = f"{record.label(checkpoint=several)}: R1 {100 * record.cmc[0]:.2f}, mAP {100 * record.mAP:.2f}"
        (line,) = ax.plot(ranks, 100 * record.cmc[: len(ranks)], marker="o", markersize=3, label=label)
        band = (record.result.intervals or {}).get("cmc_ci") or []
        if len(band) >= len(ranks) and all(b is not None for b in band[: len(ranks)]):
            low, high = (100 * np.array([b[j] for b in band[: len(ranks)]], dtype=np.float64) for j in (0, 1))
            ax.fill_between(ranks, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
            banded = True
    ax.set_xlabel("rank")
    longest = max((min(len(r.cmc), max_rank) for r in records), default=0)
    ax.set_xticks(np.arange(1, longest + 1, 1 if longest <= 20 else 5))
    ax.set_yticks(np.arange(0, 101, 20))
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title + ("\nbands: 95% identity-bootstrap intervals" if banded else ""), fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="upper left", frameon=False,
               bbox_to_anchor=(64 / size[0], (legend_h - 8) / size[1]))
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

