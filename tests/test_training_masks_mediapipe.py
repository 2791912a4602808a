"""`reid-eval masks --model mediapipe-pose`: the padding geometry and the preview grid (everywhere), the
offline refusals (everywhere: they must fire before MediaPipe tries a download), and masks of real CUHK03
crops where mediapipe is installed and ../shared/data is beside the repository."""

from __future__ import annotations

import builtins
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_eval_cli.main import main
from reid_eval.datasets import load_manifest
from reid_eval.errors import ReidEvalError
from reid_eval.training import masks_mediapipe as mmp
from reid_eval.training.data import mask_file
from reid_eval.training.mask_preview import BACKGROUND_DIM, OUTLINE_RGB, outline_panel, preview_grid, spread
from reid_eval.training.masks import MASK_RECORD, PREVIEW_FILE, mask_settings

SHARED_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CUHK03_ROOT = SHARED_DATA_ROOT / "CUHK03_pair1"
try:
    import mediapipe  # noqa: F401

    HAVE_MEDIAPIPE = hasattr(mediapipe, "solutions")
except ImportError:
    HAVE_MEDIAPIPE = False
needs_mediapipe = pytest.mark.skipif(not HAVE_MEDIAPIPE, reason=f"mediapipe is not installed ({mmp.INSTALL_HINT})")
needs_cuhk03 = pytest.mark.skipif(
    not (CUHK03_ROOT / "detected" / "train").is_dir(),
    reason=f"the CUHK03 pair-1 crops are not at {CUHK03_ROOT} (../shared/data/CUHK03_pair1 beside the repository)")


def test_pad_to_square_centres_the_crop_on_grey():
    image = np.arange(10 * 4 * 3, dtype=np.uint8).reshape(10, 4, 3)
    square, box = mmp.pad_to_square(image, 0.6, size=16, grey=128)  # pad 3 = round(10 * 0.6 / 2) each side
    assert box == (3, 6, 16) and square.shape == (16, 16, 3)
    assert np.array_equal(square[3:13, 6:10], image)
    outside = np.ones((16, 16), bool)
    outside[3:13, 6:10] = False
    assert (square[outside] == 128).all()
    resized, box = mmp.pad_to_square(image, 0.0, size=64)
    assert box == (0, 3, 10) and resized.shape == (64, 64, 3)  # odd padding: the extra column on the right


def test_crop_back_cuts_the_crops_box_out_of_the_model_map():
    rng = np.random.default_rng(0)
    prob = rng.random((16, 16)).astype(np.float32)
    mask = mmp.crop_back(prob, 10, 4, (3, 6, 16), threshold=0.5)
    assert mask.dtype == np.uint8 and mask.shape == (10, 4)
    assert np.array_equal(mask, np.where(prob[3:13, 6:10] >= 0.5, 255, 0))
    # a map at the model's size is resized to the square first: a map that is 1 exactly on the crop's box
    # (upsampled by 4) comes back all person with a background of 0
    big = np.zeros((64, 64), np.float32)
    big[12:52, 24:40] = 1.0
    assert (mmp.crop_back(big, 10, 4, (3, 6, 16), 0.5) == 255).all()
    assert not mmp.crop_back(big, 16, 16, (0, 0, 16), 0.5)[:2].any()


@pytest.mark.parametrize(
    ("recipe", "needle"),
    [
        (mmp.PoseRecipe(margins=()), "--margins must be numbers from 0 to 4"),
        (mmp.PoseRecipe(margins=(0.6, -0.1)), "--margins must be numbers from 0 to 4"),
        (mmp.PoseRecipe(size=32), "--size for MediaPipe is one square side"),
        (mmp.PoseRecipe(complexity=3), "--complexity must be 0, 1 or 2"),
        (mmp.PoseRecipe(threshold=1.0), "--threshold must lie strictly between 0 and 1"),
    ],
)
def test_bad_recipes_name_the_option(recipe, needle):
    with pytest.raises(ReidEvalError, match=needle):
        recipe.validate()


def test_settings_record_what_makes_the_masks():
    settings, _, recipe = mask_settings("mediapipe-pose", (384,))
    assert recipe.size == 384 and settings == {"model": "mediapipe-pose", "mediapipe": {
        "margins": [0.6, 0.3, 1.0], "size": 384, "complexity": 1, "threshold": 0.5, "fallback": True, "grey": 128}}
    assert mask_settings("mediapipe-pose", (512, 512))[2].size == 512
    assert "complexity" not in mask_settings("mediapipe-selfie")[0]["mediapipe"]
    assert mask_settings("lraspp_mobilenet_v3_large", (64, 32))[0] == {"model": "lraspp_mobilenet_v3_large",
                                                                        "size": [64, 32]}
    with pytest.raises(ReidEvalError, match="one square side such as 512, got 512x256"):
        mask_settings("mediapipe-pose", (512, 256))
    with pytest.raises(ReidEvalError, match="--model must be one of"):
        mask_settings("sam")


def test_spread_takes_first_last_and_even_steps():
    items = [str(i) for i in range(10)]
    assert spread(items, 4) == ["0", "3", "6", "9"]
    assert spread(items, 1) == ["0"] and spread(items, 20) == items


def test_outline_panel_dims_background_and_draws_the_border():
    image = np.full((11, 11, 3), 200, np.uint8)
    mask = np.zeros((11, 11), np.uint8)
    mask[1:10, 1:10] = 255
    out = outline_panel(image, mask)
    red = (out == OUTLINE_RGB).all(axis=2)
    assert red.sum() == 81 - 25  # a 9x9 person eroded by 2 pixels keeps a 5x5 inside
    assert (out[3:8, 3:8] == 200).all() and (out[0] == int(200 * BACKGROUND_DIM)).all()


def test_preview_grid_lays_out_triplets():
    images = [np.zeros((20, 10, 3), np.uint8)] * 5
    masks = [np.zeros((20, 10), np.uint8)] * 5
    grid = preview_grid(images, masks, cell_height=192, per_row=4, gap=6)
    # each triplet: 3 panels of 96 px and two 2-px separators; 4 triplets and 5 gaps on a row; 2 rows
    assert grid.size == (4 * (3 * 96 + 4) + 5 * 6, 2 * (192 + 6) + 6)
    with pytest.raises(ValueError):
        preview_grid(images, masks[:2])


def _tiny_tree(root: Path) -> Path:
    for folder, names in (("train", ["0000_00.jpg", "0000_05.jpg"]), ("val", ["0000_01.jpg", "0000_06.jpg"])):
        (root / "detected" / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (40, 100), (128, 128, 128)).save(root / "detected" / folder / name)
    return root


def test_without_mediapipe_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_mediapipe(name, *args, **kwargs):
        if name == "mediapipe" or name.startswith("mediapipe."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mediapipe)
    for key in [k for k in sys.modules if k == "mediapipe" or k.startswith("mediapipe.")]:
        monkeypatch.delitem(sys.modules, key)
    root = _tiny_tree(tmp_path / "CUHK03_pair1")
    assert main(["masks", "--dataset", "cuhk03_pair1", "--root", str(root), "--model", "mediapipe-pose",
                 "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pip install 'reid-eval[mediapipe]'" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("complexity", [0, 2])
def test_a_pose_model_that_would_download_fails_offline_in_one_line(tmp_path, capsys, monkeypatch, complexity):
    folder = tmp_path / "mediapipe"
    (folder / "modules" / "pose_landmark").mkdir(parents=True)
    (folder / "modules" / "pose_landmark" / mmp.POSE_MODEL_FILES[1]).write_bytes(b"shipped")
    monkeypatch.setattr(mmp, "mediapipe_folder", lambda: folder)
    if complexity == 2:  # an empty file (a download that died) is no model either
        (folder / "modules" / "pose_landmark" / mmp.POSE_MODEL_FILES[2]).write_bytes(b"")
    root = _tiny_tree(tmp_path / "CUHK03_pair1")
    assert main(["masks", "--dataset", "cuhk03_pair1", "--root", str(root), "--model", "mediapipe-pose",
                 "--complexity", str(complexity), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    name = mmp.POSE_MODEL_FILES[complexity]
    assert len(err.strip().splitlines()) == 1, err
    assert f"--complexity {complexity} needs {name}" in err and f"mediapipe-assets/{name}" in err
    assert str(folder / "modules" / "pose_landmark" / name) in err and "--complexity 1" in err
    assert not (tmp_path / "m").exists()  # nothing written, no record of a run that never ran
    assert mmp.check_pose_model(1) == folder / "modules" / "pose_landmark" / mmp.POSE_MODEL_FILES[1]


@needs_mediapipe
def test_a_crop_without_a_person_gets_an_empty_mask():
    masker = mmp.MediaPipeMasker("mediapipe-pose", mmp.PoseRecipe(fallback=False))
    try:
        mask, source = masker(np.full((120, 50, 3), 128, np.uint8))
    finally:
        masker.close()
    assert source == mmp.SOURCE_EMPTY and mask.shape == (120, 50) and not mask.any()


@needs_mediapipe
@needs_cuhk03
def test_mediapipe_masks_of_real_cuhk03_crops(tmp_path, capsys):
    out = tmp_path / "masks"
    args = ["masks", "--dataset", "cuhk03_pair1", "--data-root", str(SHARED_DATA_ROOT), "--model", "mediapipe-pose",
            "--out", str(out), "--preview", "4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "4 masks written, 0 already there" in printed and f"preview: {out / PREVIEW_FILE}" in printed
    table = load_manifest("cuhk03_pair1", CUHK03_ROOT)
    picked = spread([str(p) for p in table.loc[table["split"] == "train", "path"]], 4)
    masker = mmp.MediaPipeMasker("mediapipe-pose")
    try:
        for rel in picked:
            image = np.asarray(Image.open(CUHK03_ROOT / rel).convert("RGB"))
            got = np.asarray(Image.open(mask_file(out, rel)))
            assert got.shape == image.shape[:2] and set(np.unique(got)) <= {0, 255}
            expected, source = masker(image)
            assert source == mmp.SOURCE_POSE and np.array_equal(got, expected)
            # a detected pedestrian box: the person fills a good share of it, and its middle column mostly
            person = got > 0
            assert 0.25 < person.mean() < 0.9, (rel, person.mean())
            assert person[:, person.shape[1] // 2].mean() > 0.6, rel
    finally:
        masker.close()
    assert Image.open(out / PREVIEW_FILE).size[0] > 0
    assert json.loads((out / MASK_RECORD).read_text())["model"] == "mediapipe-pose"
    assert main(args) == 0 and "0 masks written, 4 already there" in capsys.readouterr().out
    assert main([*args, "--margins", "0.5"]) == 1
    assert "holds masks made with" in capsys.readouterr().err
