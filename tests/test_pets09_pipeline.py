"""The whole pipeline on real surveillance crops: PETS09-S2L1 (../shared/data/pets09_s2l1).

Manifest, extraction with a ResNet-18 at the demo's geometry (128×64 wide,
keep-aspect, last stride 1, pyramid kernels 1, 2, 4 with stride 1), matching
with the Baseline, DSR and FPR through the CLI, and the report. The network is
randomly initialised with its foreground head set to zero, so every location's
foreground probability is exactly 0.5: FPR must then equal DSR. Nothing here
asserts an accuracy: a random network on ten people says nothing about methods.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_eval_cli.main import main
from reid_eval.datasets import load_manifest
from reid_eval.features import SpatialFeatures, extract_dataset, read_distances, read_split
from reid_eval.matching import fpr_distance_reference, fpr_distances
from reid_eval.model import ModelConfig, build_model, save_checkpoint
from test_pets09_protocol import PETS_DATA_ROOT, PETS_ROOT, needs_pets

pytestmark = needs_pets

DEMO_GEOMETRY = ModelConfig(backbone="resnet18", input_size=(128, 64), last_stride=1,
                            pyramid_kernels=(1, 2, 4), pyramid_stride=1)
METRICS = ("euclidean", "dsr", "fpr")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run shared by the tests: checkpoint, extract (library), match ×3 and report, tables only (CLI)."""
    base = tmp_path_factory.mktemp("pets09")
    torch.manual_seed(0)
    model = build_model(DEMO_GEOMETRY)
    with torch.no_grad():  # logits (0, 0) at every location: foreground probability 0.5 everywhere
        model.foreground.weight.zero_()
        model.foreground.bias.zero_()
    ckpt = save_checkpoint(base / "uniform-foreground.pt", model, DEMO_GEOMETRY)
    cache_dir, results = base / "cache", base / "results"
    cache_file = extract_dataset("pets09_s2l1", PETS_ROOT, ckpt, cache_dir, device="cpu", batch_size=32,
                                 resize="keep-aspect")
    for metric in METRICS:
        uniform = ["--untrained-foreground"] if metric == "fpr" else []  # the zeroed head was never trained
        assert main(["match", "--metric", metric, *uniform, "--dataset", "pets09_s2l1", "--cache-dir", str(cache_dir),
                     "--results-dir", str(results)]) == 0
    assert main(["report", "--results-dir", str(results), "--cache-dir", str(cache_dir), "--no-figures"]) == 0
    records = {}
    for path in results.glob("pets09_s2l1__*.json"):
        record = json.loads(path.read_text())
        records[record["metric"]] = record
    return {"cache": cache_file, "results": results, "records": records}


def test_real_crops_have_varied_sizes_and_give_varied_pyramids(run):
    table = load_manifest("pets09_s2l1", PETS_ROOT)
    sizes = {Image.open(PETS_ROOT / p).size for p in table["path"]}
    assert len(sizes) > 50  # real boxes: no two people, no two frames cut alike
    for split in ("query", "gallery"):
        data = read_split(run["cache"], split)
        assert sorted(data.paths) == sorted(table.loc[table["split"] == split, "path"])
        assert not data.skipped
        locations = np.diff(data.spatial.offsets)
        # keep-aspect: a taller crop (relative to its width) gives a taller map and more locations.
        assert locations.min() > 0 and len(set(locations.tolist())) > 3
        assert np.isfinite(data.spatial.local).all() and np.isfinite(data.global_features).all()
        np.testing.assert_array_equal(data.spatial.foreground, np.float32(0.5))


def test_every_query_has_a_valid_match_and_results_are_rates(run):
    assert set(run["records"]) == set(METRICS)
    for metric, record in run["records"].items():
        assert (record["num_query"], record["num_valid_query"], record["num_gallery"]) == (80, 80, 125), metric
        cmc = np.asarray(record["cmc"])
        assert np.all((0 <= cmc) & (cmc <= 1)) and np.all(np.diff(cmc) >= 0)
        assert 0 < record["mINP"] <= record["mAP"] <= 1


def test_distances_are_finite_non_negative_and_fpr_equals_dsr_under_uniform_foreground(run):
    matrices = {m: read_distances(run["cache"], name)[0] for m, name in _stored_names(run["cache"]).items()}
    for metric, D in matrices.items():
        assert D.shape == (80, 125) and D.dtype == np.float32, metric
        assert np.isfinite(D).all() and (D >= 0).all(), metric
        assert np.unique(D).size > 1000, metric  # no collapsed features
    np.testing.assert_allclose(matrices["fpr"], matrices["dsr"], rtol=1e-6, atol=1e-7)
    fpr, dsr = run["records"]["fpr"], run["records"]["dsr"]
    assert fpr["cmc"] == pytest.approx(dsr["cmc"]) and fpr["mAP"] == pytest.approx(dsr["mAP"])


def _stored_names(cache: Path) -> dict[str, str]:
    """metric -> name of its stored distance matrix (the plain, default-parameter one)."""
    from reid_eval.features import list_distances

    names: dict[str, str] = {}
    for name in list_distances(cache):
        metric = name.split("__")[0]
        if metric in METRICS and (metric not in names or len(name) < len(names[metric])):
            names[metric] = name
    assert set(names) == set(METRICS), names
    return names


def test_engine_agrees_with_the_float64_reference_on_real_features_with_a_real_foreground(run):
    q, g = read_split(run["cache"], "query"), read_split(run["cache"], "gallery")
    # Eight real probes (every tenth query) with a non-uniform foreground: the upper body weighs more.
    qo, go = q.spatial.offsets, g.spatial.offsets
    rows = np.arange(0, 80, 10)
    local = np.concatenate([q.spatial.local[qo[i]:qo[i + 1]] for i in rows])
    counts = np.diff(qo)[rows]
    h = np.concatenate([np.linspace(1.0, 0.05, n, dtype=np.float32) for n in counts])
    probe = SpatialFeatures(local, np.concatenate([[0], np.cumsum(counts)]), h)
    D = fpr_distances(probe, g.spatial, beta=0.01, weighted=True, backend="numpy")
    dsr = fpr_distances(probe, g.spatial, beta=0.01, weighted=False, backend="numpy")
    assert not np.allclose(D, dsr, rtol=1e-4)  # the weights matter
    po = probe.offsets
    for i, j in zip(range(len(rows)), np.random.default_rng(0).integers(0, 125, len(rows))):
        want = fpr_distance_reference(local[po[i]:po[i + 1]], g.spatial.local[go[j]:go[j + 1]],
                                      h[po[i]:po[i + 1]], beta=0.01)
        assert D[i, j] == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_a_gallery_crop_is_reconstructed_best_from_itself(run):
    g = read_split(run["cache"], "gallery")
    go, rows = g.spatial.offsets, np.arange(0, 125, 12)
    local = np.concatenate([g.spatial.local[go[i]:go[i + 1]] for i in rows])
    probe = SpatialFeatures(local, np.concatenate([[0], np.cumsum(np.diff(go)[rows])]))
    D = fpr_distances(probe, g.spatial, beta=0.01, weighted=False, backend="numpy")
    np.testing.assert_array_equal(np.argmin(D, axis=1), rows)


def test_report_has_a_pets09_table_with_the_three_methods(run):
    tables = run["results"] / "tables"
    found = [p for p in tables.glob("*.md") if "pets09_s2l1" in p.name or "PETS09-S2L1" in p.read_text()]
    assert found, sorted(p.name for p in tables.iterdir())
    text = "\n".join(p.read_text() for p in found)
    for metric in ("euclidean", "dsr", "fpr"):
        assert metric in text.lower()


def test_extract_cli_finds_the_real_set_under_the_shared_data_root(run, tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    config = ModelConfig(backbone="resnet18", input_size=(64, 32), pyramid_kernels=(1, 2))
    save_checkpoint(ckpt, build_model(config), config)
    assert main(["extract", "--dataset", "pets09_s2l1", "--data-root", str(PETS_DATA_ROOT), "--checkpoint",
                 str(ckpt), "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--resize", "fixed"]) == 0
    (cache,) = (tmp_path / "cache").rglob("*.h5")
    assert len(read_split(cache, "query").paths) == 80 and len(read_split(cache, "gallery").paths) == 125
