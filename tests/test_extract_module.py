"""Bring your own network: extraction with a module defined here, then the unchanged pipeline on its cache."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid_eval.errors import ReidEvalError
from reid_eval.features import ModuleSettings, extract_with_module, read_attrs, read_split
from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch
from reid_eval_cli.main import main
from test_extract_cache import make_partial_reid


class TinyNet(nn.Module):
    """[B, 3, H, W] -> a [B, 8, H/16, W/16] map; optionally a foreground map and a 5-d global feature."""

    def __init__(self, outputs: str = "map"):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 16, stride=16)
        self.fg = nn.Conv2d(8, 1, 1)
        self.head = nn.Linear(8, 5)
        self.outputs = outputs

    def forward(self, x):
        fmap = F.relu(self.conv(x))
        if self.outputs == "map":
            return fmap
        fg = torch.sigmoid(self.fg(fmap))
        if self.outputs == "tuple":
            return fmap, fg, self.head(fmap.mean(dim=(2, 3)))
        return {"map": fmap, "foreground": fg[:, 0]}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_partial_reid(tmp_path_factory.mktemp("data") / "Partial-REID")


def _extract(tree, cache_dir, module, identity="tiny-v1", **kw):
    return extract_with_module("partial_reid", tree, module, cache_dir, identity=identity,
                               settings=ModuleSettings(input_size=(64, 32)), allow_mismatch=True, device="cpu",
                               batch_size=4, **kw)


def test_cache_holds_the_modules_pyramid_foreground_and_global(tree, tmp_path):
    net = TinyNet("tuple")
    path = _extract(tree, tmp_path, net)
    query = read_split(path, "query")
    prep = Preprocessing(resize="fixed", size=(64, 32), stride=16, min_height=32)
    first = tree / query.paths[0]
    images = to_tensor_batch([load_image_array(first, prep)], prep)
    with torch.no_grad():
        fmap, fg, glob = net.eval()(images)
    # a 64x32 input gives a 4x2 map: kernel 2 fits (2x1 cells), 4, 6 and 8 do not
    local = F.max_pool2d(fmap, 2, stride=2).flatten(2).transpose(1, 2)[0].numpy()
    fg_loc = F.avg_pool2d(fg, 2, stride=2).flatten()[:2].numpy()
    rows = slice(int(query.spatial.offsets[0]), int(query.spatial.offsets[1]))
    np.testing.assert_allclose(query.spatial.local[rows], local, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(query.spatial.foreground[rows], fg_loc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(query.global_features[0], glob[0].numpy(), rtol=1e-5, atol=1e-6)
    attrs = read_attrs(path)
    assert attrs["checkpoint_file"] == "module:tiny-v1" and attrs["model_name"] == "tiny-v1"
    assert bool(attrs["foreground_trained"]) is True


def test_identity_keys_the_cache_and_a_map_only_module_has_no_trained_foreground(tree, tmp_path):
    a = _extract(tree, tmp_path, TinyNet("map"), identity="tiny-v1")
    again = _extract(tree, tmp_path, TinyNet("map"), identity="tiny-v1")
    other = _extract(tree, tmp_path, TinyNet("map"), identity="tiny-v2")
    assert a == again and other != a
    with h5py.File(a, "r") as f:
        assert not bool(f.attrs["foreground_trained"]) and f["query"]["global"].shape[1] == 8
        assert np.all(f["query"]["foreground"][...] == 1.0)


def test_bad_module_output_is_one_line_naming_what_is_wrong(tree, tmp_path):
    class Flat(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.raises(ReidEvalError, match=r"\[B, C, h, w\]"):
        _extract(tree, tmp_path, Flat())
    with pytest.raises(ReidEvalError, match="identity"):
        _extract(tree, tmp_path, TinyNet(), identity=" ")


def test_match_and_report_work_unchanged_on_a_module_cache(tree, tmp_path, capsys):
    cache_dir, results = tmp_path / "cache", tmp_path / "results"
    _extract(tree, cache_dir, TinyNet("dict"))
    for metric in ("euclidean", "dsr", "fpr"):
        assert main(["match", "--dataset", "partial_reid", "--metric", metric, "--cache-dir", str(cache_dir),
                     "--results-dir", str(results)]) == 0, capsys.readouterr().err
    files = sorted(p.name for p in results.glob("partial_reid__*.json"))
    assert len(files) == 3, files
    assert main(["report", "--cache-dir", str(cache_dir), "--results-dir", str(results)]) == 0
