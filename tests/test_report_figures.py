"""Report figures from a small cache written by the features writer: sizes, probes, foreground maps, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reid_eval.errors import ReidEvalError
from reid_eval.evaluation import evaluate_ranking, query_stats
from reid_eval.report import build_report
from reid_eval.report import figures as fig
from reid_eval.report.cache import ReportCache
from reid_eval.report.results import load_results
from test_report_helpers import G_PIDS, foreground_values, make_cache, write_result


def png_size(path):
    with Image.open(path) as image:
        return image.size


def test_sizes_in_pixels():
    assert fig.retrieval_size(10, 2) == (130 + 80 * 11, 48 + 180 * 2)
    assert fig.retrieval_size(2, 1) == (130 + 80 * 6, 228)  # at least five gallery columns
    assert fig.foreground_size(6) == (24 + 152 * 6 + 110, 56 + 2 * 296)  # tiles of 128×256 pixels
    assert fig.cmc_size(3) == (640, 400 + 40 + 3 * 16)  # a legend line per curve, below the axes


def test_probe_choice_and_retrieval_rows_use_the_evaluation_ranks():
    q_pids, g_pids = np.array([1, 2, 3, 2]), np.array([1, 2, 3, 1, 9])
    q_cams, g_cams = np.array([1, 1, 1, 1]), np.array([2, 2, 2, 1, 2])
    d = np.array(
        [
            [0.3, 0.1, 0.2, 0.0, 0.5],  # gallery 3 is pid 1 camera 1: junk for query 0, so its match ranks 2
            [0.9, 0.1, 0.5, 0.5, 0.5],  # rank 0
            [0.1, 0.2, 0.3, 0.4, 0.0],  # rank 3 (gallery 3 counts: pid 1 is another person)
            [0.2, 0.2, 0.7, 0.7, 0.7],  # tie between gallery 0 (wrong) and 1 (correct): gallery order, rank 1
        ]
    )
    stats = query_stats(d, q_pids, g_pids, q_cams, g_cams, top_k=5)
    ranks = stats.first_rank
    assert ranks.tolist() == [2, 0, 3, 1]
    assert evaluate_ranking(d, q_pids, g_pids, q_cams, g_cams, max_rank=2).cmc.tolist() == [0.25, 0.5]
    # The row drawn for a probe (top_gallery) shows its first correct image exactly where the CMC counts it.
    for q in range(4):
        shown = stats.top_gallery[q][stats.top_gallery[q] >= 0]
        assert int(np.flatnonzero(g_pids[shown] == q_pids[q])[0]) == ranks[q]
    assert stats.top_gallery[0].tolist() == [1, 2, 0, 4, -1]  # gallery 3 is junk for query 0
    ap = stats.ap("standard")
    assert ap.tolist() == [1 / 3, 1.0, 0.25, 0.5]  # one correct match each, at ranks 3, 1, 4, 2
    picked = fig.choose_probes({"FPR": ap}, "FPR", 1, 1)
    assert [(c.index, c.reason) for c in picked] == [(1, "best query for FPR: AP 1.00"), (2, "worst query for FPR: AP 0.25")]
    # Against other metrics, per query the best of them: query 2 gains most (0.25 vs 0.05), query 0
    # loses most (1/3 vs 0.5); queries 1 and 3 tie with their best other: the lower index comes first
    dsr, base = np.array([0.5, 0.1, 0.05, 0.5]), np.array([0.2, 1.0, 0.01, np.nan])
    picked = fig.choose_probes({"FPR": ap, "DSR": dsr, "Baseline": base}, "FPR", 1, 2)
    assert [c.index for c in picked] == [2, 0, 1]
    assert picked[0].reason == "best query for FPR: AP change +0.20 against the best other method (FPR 0.25, DSR 0.05)"
    assert picked[1].reason == "worst query for FPR: AP change -0.17 against the best other method (FPR 0.33, DSR 0.50)"
    assert picked[2].reason == ("2nd worst query for FPR: AP change +0.00 against the best other method "
                                "(FPR 1.00, Baseline 1.00)")
    assert fig.choose_probes({"FPR": np.array([np.nan, np.nan])}, "FPR") == []


def test_foreground_map_is_the_finest_level(tmp_path):
    cache = make_cache(tmp_path)
    with ReportCache(cache) as view:
        fmap = view.foreground_map("query", 2)
        assert view.dataset_root == tmp_path / "images"
        assert view.split("gallery").pids.tolist() == G_PIDS.tolist()
    np.testing.assert_allclose(fmap, foreground_values(4)[2, :6].reshape(3, 2))


def test_report_draws_retrieval_foreground_cmc_and_beta(tmp_path):
    cache = make_cache(tmp_path, missing_images=("gallery/0001_c2_4.png",))
    results = tmp_path / "results"
    write_result(results, "partial_reid", "fpr", 0.75, 0.7, cache_file=cache)
    write_result(results, "partial_reid", "euclidean", 0.5, 0.45, beta=None, cache_file=cache)
    write_result(results, "partial_reid", "fpr", 0.6, 0.55, beta=0.1, cache_file=cache)
    warnings = []
    summary = build_report(results, top_k=3, warn=warnings.append)
    figures = results / "figures"
    names = {p.name for p in summary.figure_files}
    assert {"cmc_partial_reid.png", "cmc_partial_reid.pdf", "beta_sweep_partial_reid.png", "foreground_partial_reid.png"} <= names
    # Best probe: query 0, where FPR ranks its match first and the Baseline last; worst after it.
    retrievals = sorted(n for n in names if n.startswith("retrieval_") and n.endswith(".png"))
    assert len(retrievals) == 4 and "retrieval_partial_reid_q0.png" in retrievals
    assert png_size(figures / "retrieval_partial_reid_q0.png") == fig.retrieval_size(3, 2) == (610, 408)
    assert png_size(figures / "foreground_partial_reid.png") == fig.foreground_size(4)
    assert png_size(figures / "cmc_partial_reid.png") == fig.cmc_size(3)
    assert png_size(figures / "beta_sweep_partial_reid.png") == (960, 400)
    assert (figures / "retrieval_partial_reid_q0.pdf").read_bytes().startswith(b"%PDF")
    # The β=0.1 results have no matrix of their own (distances/fpr holds β=0.01): said, not drawn wrongly.
    assert any("β=0.1" in w and "left out" in w for w in warnings)
    # The missing gallery image (pid 1, FPR's second hit for query 0) is a grey tile with a warning.
    assert any("0001_c2_4.png" in w and "grey" in w for w in warnings)
    image = np.asarray(Image.open(figures / "retrieval_partial_reid_q0.png").convert("RGB"))
    # FPR row (second), third tile: grey 128 inside its green border.
    x = 130 + 2 * 80 + 8 + 32
    y = 48 + 180 + 10 + 64
    assert all(126 <= v <= 129 for v in image[y, x].tolist())  # 0.5 grey
    neighbour = image[y - 40, x - 80].tolist()  # FPR's first hit, a real (reddish) image
    assert neighbour[0] > 150 and neighbour[2] < 100


def test_chosen_probes_and_out_of_range(tmp_path):
    cache = make_cache(tmp_path)
    results = tmp_path / "results"
    write_result(results, "partial_reid", "fpr", 0.75, 0.7, cache_file=cache)
    summary = build_report(results, probes=[3], top_k=2)
    assert sorted(p.name for p in summary.figure_files if p.name.startswith("retrieval")) == [
        "retrieval_partial_reid_q3.pdf",
        "retrieval_partial_reid_q3.png",
    ]
    assert png_size(results / "figures" / "retrieval_partial_reid_q3.png") == fig.retrieval_size(2, 1)
    with pytest.raises(ReidEvalError, match="--probes: no index of 4 is a query"):
        build_report(results, probes=[4])
    # Some indices in range: those are drawn (for every dataset), the others named in a warning.
    other = make_cache(tmp_path / "other", "occluded_reid", distances={"fpr": (np.zeros((4, 6)), {"beta": 0.01})})
    write_result(results, "occluded_reid", "fpr", 0.5, 0.5, cache_file=other)
    warnings = []
    summary = build_report(results, probes=[1, 7], top_k=2, warn=warnings.append)
    drawn = sorted(p.name for p in summary.figure_files if p.suffix == ".png" and p.name.startswith("retrieval"))
    assert drawn == ["retrieval_occluded_reid_q1.png", "retrieval_partial_reid_q1.png"]
    assert "--probes: index 7 out of range for occluded_reid (4 queries); left out" in warnings


def test_missing_cache_keeps_tables_and_cmc(tmp_path):
    write_result(tmp_path, "occluded_reid", "fpr", 0.75, 0.7, cache_file=tmp_path / "gone.h5")
    warnings = []
    summary = build_report(tmp_path, warn=warnings.append)
    assert sorted(p.name for p in summary.figure_files) == ["cmc_occluded_reid.pdf", "cmc_occluded_reid.png"]
    assert any("gone.h5 not found" in w for w in warnings)
    assert (tmp_path / "tables" / "table3.csv").is_file()


def test_cache_found_in_cache_dir(tmp_path):
    cache = make_cache(tmp_path)
    results = tmp_path / "results"
    write_result(results, "partial_reid", "fpr", 0.75, 0.7, cache_file=tmp_path / "moved.h5")
    summary = build_report(results, cache_dir=tmp_path / "cache", probes=[0], top_k=2)
    assert cache.parent.parent == tmp_path / "cache"
    assert any(p.name == "retrieval_partial_reid_q0.png" for p in summary.figure_files)


def test_load_tile_grey_for_missing(tmp_path):
    warnings = []
    tile, ok = fig.load_tile(tmp_path / "nope.png", warnings.append)
    assert not ok and tile.shape == (256, 128, 3) and np.all(tile == 0.5)
    assert "nope.png" in warnings[0]
    Image.fromarray(np.full((10, 5, 3), 255, np.uint8)).save(tmp_path / "white.png")
    tile, ok = fig.load_tile(tmp_path / "white.png")
    assert ok and tile.shape == (256, 128, 3) and np.all(tile == 1.0)


def test_a_partial_crop_keeps_its_aspect(tmp_path):
    # a 64×51 (width × height) upper-body crop: as wide as the box, 102 of 256 rows tall, not stretched
    Image.fromarray(np.full((51, 64, 3), 255, np.uint8)).save(tmp_path / "crop.png")
    tile, ok = fig.load_tile(tmp_path / "crop.png")
    assert ok and tile.shape == (102, 128, 3) and fig.fitted_size(51, 64) == (102, 128)
    assert fig.fitted_size(400, 100) == (256, 64)  # taller than the box: fitted to its height
    # drawn top-aligned at that aspect: the box below the crop stays the figure's white
    base = tmp_path / "fg"
    fig.foreground_figure(base, "t", [tile], [np.zeros((2, 2))], ["c"])
    image = np.asarray(Image.open(base.with_suffix(".png")).convert("RGB")).astype(int)
    left, top = 24 + (152 - 128) // 2, 56 + 5
    assert image[top + 50, left + 64].tolist() == [255, 255, 255]  # the white crop
    assert image[top + 200, left + 64].tolist() == [255, 255, 255]  # empty box: figure background
    masked = image[56 + 296 + 5 + 50, left + 64]  # the map row: the crop under a blue (P=0) overlay
    assert masked[2] > masked[0] + 50
    below = image[56 + 296 + 5 + 200, left + 64]  # below the crop in the map row: no overlay
    assert below.tolist() == [255, 255, 255]


def test_beta_groups_need_two_betas(tmp_path):
    write_result(tmp_path, "partial_reid", "fpr", 0.75, 0.7)
    write_result(tmp_path, "partial_reid", "dsr", 0.6, 0.5, beta=0.1)
    assert fig.beta_groups(load_results(tmp_path)) == {}
    write_result(tmp_path, "partial_reid", "fpr", 0.7, 0.6, beta=1.0)
    groups = fig.beta_groups(load_results(tmp_path))
    assert list(groups) == ["FPR (standard AP)"] and [r.beta for r in groups["FPR (standard AP)"]] == [0.01, 1.0]
    # Another checkpoint's FPR at another β is no point of this sweep: the lines name their checkpoints.
    other = write_result(tmp_path, "partial_reid", "fpr", 0.1, 0.1, beta=0.1, sha="ab" * 32)
    other.rename(other.with_name("other_ckpt.json"))
    groups = fig.beta_groups(load_results(tmp_path))
    assert {k: [r.beta for r in v] for k, v in groups.items()} == {"FPR (standard AP, ckpt 01234567)": [0.01, 1.0]}


def test_altered_cache_skips_its_figures_not_the_report(tmp_path):
    import h5py

    cache = make_cache(tmp_path)
    with h5py.File(cache, "r+") as f:
        f.attrs["manifest_sha256"] = "0" * 64  # attributes no longer hash to the file name
    results = tmp_path / "results"
    write_result(results, "partial_reid", "fpr", 0.75, 0.7, cache_file=cache)
    warnings = []
    summary = build_report(results, warn=warnings.append)
    assert sorted(p.name for p in summary.figure_files) == ["cmc_partial_reid.pdf", "cmc_partial_reid.png"]
    assert any(cache.name in w and "does not match its key" in w and "skipped" in w for w in warnings), warnings
    with pytest.raises(ReidEvalError, match="does not match its key"):
        ReportCache(cache)
