"""`reid-eval masks` on small generated data with randomly initialised weights
saved to a file (everything but the masks' accuracy, which needs real weights):
the layout `train --masks` reads, resume after SIGKILL, offline errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from reid_eval_cli.main import main
from reid_eval.datasets import load_manifest
from reid_eval.datasets.synthetic import SyntheticConfig, generate_synthetic_dataset
from reid_eval.errors import ReidEvalError
from reid_eval.training import training_images
from reid_eval.training.data import mask_file
from reid_eval.training.masks import MASK_MODELS, MASK_RECORD, load_segmentation_model, person_masks

MODEL = "lraspp_mobilenet_v3_large"  # the smallest: the test checks plumbing, not accuracy


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("masks") / "synthetic_occluded"
    generate_synthetic_dataset(root, SyntheticConfig(seed=4, num_train_ids=4, num_test_ids=2, train_images_per_id=3,
                                                     gallery_images_per_id=1, query_images_per_id=1,
                                                     height=64, width=32))
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = torchvision.models.get_model(MODEL, weights=None, weights_backbone=None, num_classes=21)
    path = tmp_path_factory.mktemp("weights") / f"{MODEL}.pth"
    torch.save(model.state_dict(), path)
    return path


def _cli(data_root: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["masks", "--dataset", "synthetic_occluded", "--root", str(data_root), "--out", str(out), "--model", MODEL,
            "--weights", str(weights), "--size", "64x32", "--batch-size", "4", "--device", "cpu", *extra]


def test_cli_models_match_the_library():
    from cli.mask_commands import _MODELS

    assert _MODELS == MASK_MODELS


def test_masks_mirror_the_dataset_and_are_what_the_model_says(data_root, weights, tmp_path, capsys):
    out = tmp_path / "masks"
    assert main(_cli(data_root, out, weights, "--splits", "train,query")) == 0
    assert "14 masks written, 0 already there" in capsys.readouterr().out
    table = load_manifest("synthetic_occluded", data_root)
    wanted = sorted(str(p) for p in table.loc[table["split"].isin(["train", "query"]), "path"])
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == sorted(str(Path(p).with_suffix(".png")) for p in wanted)
    # each file is the model's decision at the image's own size
    model, person = load_segmentation_model(MODEL, weights)
    from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch

    prep = Preprocessing(resize="fixed", size=(64, 32), stride=8, min_height=8)
    rel = wanted[0]
    x = to_tensor_batch([load_image_array(data_root / rel, prep)], prep)
    expected = person_masks(model, person, x, [(64, 32)])[0]
    got = np.asarray(Image.open(mask_file(out, rel)))
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 255} and np.array_equal(got, expected)
    # train reads them: every training image finds its mask
    images = training_images("synthetic_occluded", data_root, out, need_masks=True)
    assert images.mask_paths == [mask_file(out, p) for p in images.paths]


def test_resume_after_sigkill_writes_only_the_missing_masks(data_root, weights, tmp_path):
    out = tmp_path / "masks"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "REID_EVAL_TEST_KILL_AFTER_MASKS": "5"}  # SIGKILL right after the 5th of 12 files is in place
    cmd = [sys.executable, "-m", "reid_eval_cli", *_cli(data_root, out, weights, "--batch-size", "2")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert len(before) == 5, sorted(before)  # mid-batch: the 3rd batch's second mask was never written
    for p in before:  # atomic writes: whatever exists is a whole PNG
        Image.open(p).load()
    assert main(_cli(data_root, out, weights)) == 0
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert len(after) == 12 and all(after[p] == t for p, t in before.items())
    # no temporary files left; the one other file records the model
    assert [p.name for p in out.rglob("*") if p.is_file() and p.suffix != ".png"] == [MASK_RECORD]
    assert main(_cli(data_root, out, weights)) == 0  # a finished folder: nothing to do


def test_offline_without_weights_and_bad_weights_are_one_line_errors(data_root, weights, tmp_path, capsys,
                                                                   monkeypatch):
    import urllib.error

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ReidEvalError, match=r"cannot get the deeplabv3_resnet101 weights \(https://.*--weights FILE"):
        load_segmentation_model("deeplabv3_resnet101")
    args = _cli(data_root, tmp_path / "m", weights)
    no_weights = args[:args.index("--weights")] + args[args.index("--weights") + 2:]
    assert main(no_weights) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot get the") and "--weights FILE" in err and len(err.strip().splitlines()) == 1
    wrong = _cli(data_root, tmp_path / "m", weights)
    wrong[wrong.index(MODEL)] = "fcn_resnet50"
    assert main(wrong) == 1
    err = capsys.readouterr().err
    assert "--weights" in err and "do not fit fcn_resnet50" in err and len(err.strip().splitlines()) == 1
    assert main(_cli(data_root, tmp_path / "m", tmp_path / "missing.pth")) == 1
    assert "missing.pth does not exist" in capsys.readouterr().err
    assert main(_cli(data_root, tmp_path / "m", weights, "--splits", "nope")) == 1
    assert "--splits" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").rglob("*.png"))


def test_a_folder_of_one_models_masks_refuses_other_settings(data_root, weights, tmp_path, capsys):
    out = tmp_path / "masks"
    assert main(_cli(data_root, out, weights)) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    other = _cli(data_root, out, weights)
    other[other.index("64x32")] = "32x32"
    assert main(other) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--out {out} holds masks made with" in err
    assert '"size": [64, 32]' in err and '"size": [32, 32]' in err and "use another --out" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing touched
