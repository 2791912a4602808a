"""Checkpoints: our format's round trip and architecture checks; conversion from
torchvision, fast-reid (PartialReID/DSR) and torchreid layouts built from local state dicts."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision

from reid_eval_cli.main import main
from reid_eval.errors import ReidEvalError
from reid_eval.model import ModelConfig, build_model, convert_checkpoint, file_sha256, load_checkpoint, save_checkpoint

SMALL = ModelConfig(backbone="resnet18", input_size=(64, 32))


@pytest.fixture(scope="module")
def tv_resnet18():
    """A torchvision resnet18 (random, weights=None) standing in for ImageNet weights."""
    torch.manual_seed(11)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # non-trivial BN statistics, so a dropped buffer would show
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _trunk_equal(model, tv):
    own, ref = model.backbone.state_dict(), {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    return own.keys() == ref.keys() and all(torch.equal(own[k], ref[k]) for k in own)


def test_round_trip_keeps_weights_config_and_sha(tmp_path):
    torch.manual_seed(5)
    model = build_model(SMALL)
    path = save_checkpoint(tmp_path / "m.pt", model, SMALL, extra={"note": "x"})
    loaded, config, meta = load_checkpoint(path)
    assert config == SMALL and meta["sha256"] == file_sha256(path) and meta["extra"] == {"note": "x", "foreground_trained": False}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert not loaded.training


def test_architecture_differences_are_named_in_one_line(tmp_path):
    model = build_model(SMALL)
    save_checkpoint(tmp_path / "m.pt", model, SMALL)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    state = payload["state_dict"]
    del state["backbone.layer2.0.conv1.weight"]
    state["backbone.extra.weight"] = torch.zeros(1)
    state["foreground.weight"] = torch.zeros(3, 512, 1, 1)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ReidEvalError) as info:
        load_checkpoint(tmp_path / "bad.pt")
    msg = str(info.value)
    assert "\n" not in msg and "bad.pt" in msg
    assert "missing keys: backbone.layer2.0.conv1.weight" in msg
    assert "unexpected keys: backbone.extra.weight" in msg
    assert "foreground.weight (3, 512, 1, 1) vs (2, 512, 1, 1)" in msg


def test_foreign_or_broken_files_are_refused(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ReidEvalError, match="not a reid-eval checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(ReidEvalError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ReidEvalError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_convert_torchvision_keeps_the_trunk_and_its_forward(tmp_path, tv_resnet18):
    torch.save(tv_resnet18.state_dict(), tmp_path / "tv.pth")
    model, config, extra = convert_checkpoint("torchvision", tmp_path / "tv.pth", input_size=(64, 32))
    assert config.backbone == "resnet18" and config.input_size == (64, 32) and _trunk_equal(model, tv_resnet18)
    assert extra["foreground"].startswith("random")
    # with last stride 2 our trunk is torchvision's forward up to layer4
    m2, _, _ = convert_checkpoint("torchvision", tmp_path / "tv.pth", last_stride=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tv = tv_resnet18
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        torch.testing.assert_close(m2.feature_map(x), ref)
        torch.testing.assert_close(m2(x).global_features, tv.avgpool(ref).flatten(1))
    with pytest.raises(ReidEvalError, match="resnet18 weights, not the requested --backbone resnet50"):
        convert_checkpoint("torchvision", tmp_path / "tv.pth", backbone="resnet50")


def test_convert_fast_reid_maps_the_mask_layer_onto_the_foreground_softmax(tmp_path, tv_resnet18):
    torch.manual_seed(2)
    w, b = torch.randn(1, 512) * 0.05, torch.tensor([0.3])
    state = {f"backbone.{k}": v for k, v in tv_resnet18.state_dict().items() if not k.startswith("fc.")}
    state.update({
        "heads.occ_unit.mask_layer.weight": w,
        "heads.occ_unit.mask_layer.bias": b,
        "heads.bnneck.weight": torch.ones(512),
        "heads.classifier.weight": torch.zeros(10, 512),
        "pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1),
    })
    torch.save({"model": state, "iteration": 7}, tmp_path / "dsr.pth")
    model, config, extra = convert_checkpoint("fast-reid", tmp_path / "dsr.pth", input_size=(128, 64))
    assert _trunk_equal(model, tv_resnet18) and "mask layer" in extra["foreground"]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 64))
        # fast-reid's OcclusionUnit: sigmoid(Linear(pyramid feature))
        torch.testing.assert_close(out.foreground, torch.sigmoid(out.local @ w[0] + b[0]), rtol=1e-5, atol=1e-6)
    # the older DSR head's 1×1 conv mask layer without bias
    state.pop("heads.occ_unit.mask_layer.weight"), state.pop("heads.occ_unit.mask_layer.bias")
    state["heads.mask_layer.weight"] = w.reshape(1, 512, 1, 1)
    torch.save({"model": state}, tmp_path / "old.pth")
    model2, _, _ = convert_checkpoint("fast-reid", tmp_path / "old.pth")
    torch.testing.assert_close(model2.foreground.weight[1].flatten(), w[0])
    assert torch.all(model2.foreground.weight[0] == 0) and torch.all(model2.foreground.bias == 0)


def test_convert_torchreid_strips_module_and_drops_the_classifier(tmp_path, tv_resnet18):
    state = {f"module.{k}": v for k, v in tv_resnet18.state_dict().items() if not k.startswith("fc.")}
    state["module.classifier.weight"], state["module.classifier.bias"] = torch.zeros(751, 512), torch.zeros(751)
    torch.save({"state_dict": state, "epoch": 60, "rank1": 0.9}, tmp_path / "tr.pth.tar")
    model, config, _ = convert_checkpoint("torchreid", tmp_path / "tr.pth.tar")
    assert config.backbone == "resnet18" and _trunk_equal(model, tv_resnet18)
    ibn = dict(state)
    ibn["module.layer1.0.IN.weight"] = torch.ones(32)
    torch.save({"state_dict": ibn}, tmp_path / "ibn.pth")
    with pytest.raises(ReidEvalError, match="layer1.0.IN.weight"):
        convert_checkpoint("torchreid", tmp_path / "ibn.pth")
    torch.save({"state_dict": {"module.something": torch.zeros(1)}}, tmp_path / "empty.pth")
    with pytest.raises(ReidEvalError, match="empty.pth"):
        convert_checkpoint("torchreid", tmp_path / "empty.pth")


def test_checkpoint_cli_init_and_convert(tmp_path, tv_resnet18, capsys):
    out = tmp_path / "init.pt"
    assert main(["checkpoint", "init", "--out", str(out), "--backbone", "resnet18", "--seed", "4", "--input-size", "96x48"]) == 0
    assert "resnet18" in capsys.readouterr().out
    _, config, meta = load_checkpoint(out)
    assert config == ModelConfig(backbone="resnet18", input_size=(96, 48)) and meta["extra"]["seed"] == 4
    # the same seed gives the same file content
    again = tmp_path / "again.pt"
    main(["checkpoint", "init", "--out", str(again), "--backbone", "resnet18", "--seed", "4", "--input-size", "96x48"])
    a, b = load_checkpoint(out)[0].state_dict(), load_checkpoint(again)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.save(tv_resnet18.state_dict(), tmp_path / "tv.pth")
    assert main(["checkpoint", "convert", "--from", "torchvision", str(tmp_path / "tv.pth"), "--out", str(tmp_path / "c.pt")]) == 0
    assert load_checkpoint(tmp_path / "c.pt")[1].backbone == "resnet18"
    capsys.readouterr()
    assert main(["checkpoint", "convert", "--from", "torchvision", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "missing.pth" in err and "Traceback" not in err


# --------------------------------------------------------------------------- files that are not checkpoints


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory):
    from test_extract_cache import make_partial_reid

    return make_partial_reid(tmp_path_factory.mktemp("tree") / "Partial-REID", ids=2, per_side=1)


def _bad_checkpoints(tmp_path, tv_resnet18) -> list[tuple[str, object, str]]:
    """(label, path, what the message must say) for every kind of non-checkpoint tried."""
    import random
    import zipfile

    cases = [("system text file", "/etc/hostname", "is not a PyTorch checkpoint")] if os.path.isfile("/etc/hostname") else []
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(random.Random(0).randbytes(4096))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    plain_zip = tmp_path / "archive.zip"
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("readme.txt", "not torch")
    good = save_checkpoint(tmp_path / "good.pt", build_model(SMALL), SMALL)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    pickled = tmp_path / "pickled_module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    foreign = tmp_path / "torchvision.pth"
    torch.save(tv_resnet18.state_dict(), foreign)
    wrong_arch = tmp_path / "wrong_arch.pt"
    save_checkpoint(wrong_arch, build_model(SMALL), ModelConfig(backbone="resnet34", input_size=(64, 32)))
    return cases + [
        ("text file", text, "is not a PyTorch checkpoint"),
        ("random bytes", rnd, "is not a PyTorch checkpoint"),
        ("empty file", empty, "is not a PyTorch checkpoint (an empty file)"),
        ("zip that is not torch", plain_zip, "is not a PyTorch checkpoint (a zip archive without torch's data.pkl)"),
        ("truncated checkpoint", truncated, "is not a PyTorch checkpoint (a truncated or damaged zip archive)"),
        ("pickled module", pickled, "holding pickled Python objects (torch.nn.modules.linear.Linear)"),
        ("foreign weights", foreign, "not a reid-eval checkpoint; if it holds torchvision"),
        ("different architecture", wrong_arch, "do not fit the resnet34 model its config describes"),
        ("missing file", tmp_path / "missing.pt", "does not exist"),
    ]


def test_extract_names_a_bad_checkpoint_in_one_line(tmp_path, tiny_tree, tv_resnet18, capsys):
    for label, path, says in _bad_checkpoints(tmp_path, tv_resnet18):
        capsys.readouterr()
        status = main(["extract", "--dataset", "partial_reid", "--root", str(tiny_tree), "--checkpoint", str(path),
                       "--cache-dir", str(tmp_path / "cache"), "--allow-mismatch", "--device", "cpu"])
        err = capsys.readouterr().err
        assert status == 1 and err.startswith("Error: ") and err.count("\n") == 1, (label, err)
        assert str(path) in err and says in err and "Traceback" not in err and "weights_only" not in err, (label, err)
        assert "reid-eval checkpoint init" in err and "reid-eval checkpoint convert" in err, (label, err)
    assert not list((tmp_path / "cache").rglob("*.h5"))
    (tmp_path / "a_folder.pt").mkdir()  # the CLI's option parsing refuses folders before the library sees them
    with pytest.raises(ReidEvalError, match="a_folder.pt is a folder"):
        load_checkpoint(tmp_path / "a_folder.pt")


def test_convert_refuses_a_file_that_is_not_torch_and_says_which_source_fits(tmp_path, tv_resnet18, capsys):
    (tmp_path / "junk.pth").write_bytes(b"\x00junk" * 50)
    assert main(["checkpoint", "convert", "--from", "fast-reid", str(tmp_path / "junk.pth"), "--out", str(tmp_path / "o.pt")]) == 1
    err = capsys.readouterr().err
    assert "fast-reid checkpoint" in err and "junk.pth is not a PyTorch checkpoint" in err and err.count("\n") == 1
    torch.save(tv_resnet18.state_dict(), tmp_path / "tv.pth")
    assert main(["checkpoint", "convert", "--from", "fast-reid", str(tmp_path / "tv.pth"), "--out", str(tmp_path / "o.pt")]) == 1
    assert "reads as --from torchvision or torchreid\n" in capsys.readouterr().err  # not ibn-net: resnet18 is no IBN-a trunk
    assert not (tmp_path / "o.pt").exists()


def test_torchreid_file_written_with_numpy_1_reads(tmp_path, tv_resnet18):
    """NumPy 1.x pickles its scalars as numpy.core.multiarray.scalar; legacy torch format, as torchreid's era wrote."""
    import io

    import numpy as np

    payload = {"state_dict": tv_resnet18.state_dict(), "epoch": 3, "rank1": np.float64(0.75), "mAP": np.float32(0.5)}
    buf = io.BytesIO()
    torch.save(payload, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    assert raw.count(b"numpy._core.multiarray\nscalar") == 1  # pickle memoises the global
    (tmp_path / "np1.pth.tar").write_bytes(raw.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    model, config, _ = convert_checkpoint("torchreid", tmp_path / "np1.pth.tar")
    assert config.backbone == "resnet18" and _trunk_equal(model, tv_resnet18)
    from reid_eval.model import read_torch_file

    loaded = read_torch_file(tmp_path / "np1.pth.tar")
    assert type(loaded["rank1"]) is float and loaded["rank1"] == 0.75 and type(loaded["mAP"]) is float


def test_fast_reid_files_with_foreign_normalisation_or_half_a_neck_are_refused(tmp_path, tv_resnet18):
    trunk = {f"backbone.{k}": v for k, v in tv_resnet18.state_dict().items() if not k.startswith("fc.")}
    w = torch.randn(1, 512)
    torch.save({"model": {**trunk, "heads.occ_unit.mask_layer.weight": w, "pixel_mean": torch.tensor([0.5, 0.5, 0.5])}}, tmp_path / "a.pth")
    with pytest.raises(ReidEvalError, match="pixel_mean is .*not ImageNet's"):
        convert_checkpoint("fast-reid", tmp_path / "a.pth")
    torch.save({"model": {**trunk, "heads.occ_unit.mask_layer.weight": w, "heads.bnneck_occ.0.weight": torch.ones(512)}}, tmp_path / "b.pth")
    with pytest.raises(ReidEvalError, match="lacks heads.bnneck_occ.0.bias"):
        convert_checkpoint("fast-reid", tmp_path / "b.pth")
    # no neck: the plain average, and asking for the occlusion-weighted feature is refused
    torch.save({"model": {**trunk, "heads.occ_unit.mask_layer.weight": w}}, tmp_path / "c.pth")
    _, config, _ = convert_checkpoint("fast-reid", tmp_path / "c.pth")
    assert config.global_feature == "average" and config.stem == "fast-reid"
    with pytest.raises(ReidEvalError, match="no occlusion unit with a BN neck"):
        convert_checkpoint("fast-reid", tmp_path / "c.pth", global_feature="occlusion-weighted")
    torch.save({"model": {**trunk, "backbone.NL_1.0.g.weight": torch.zeros(1)}}, tmp_path / "d.pth")
    with pytest.raises(ReidEvalError, match="NL_1.0.g.weight"):
        convert_checkpoint("fast-reid", tmp_path / "d.pth")


def test_trainer_objects_in_a_foreign_file_are_ignored_without_running_them(tmp_path, tv_resnet18):
    """Trainers often pickle their arguments and helpers beside the weights; only the tensors are read."""
    import argparse
    import collections

    payload = {"state_dict": tv_resnet18.state_dict(), "args": argparse.Namespace(lr=0.1, arch="resnet18"),
               "history": collections.deque([1, 2]), "best": 0.5}
    for legacy in (False, True):
        torch.save(payload, tmp_path / "t.pth", _use_new_zipfile_serialization=not legacy)
        model, config, _ = convert_checkpoint("torchreid", tmp_path / "t.pth")
        assert config.backbone == "resnet18" and _trunk_equal(model, tv_resnet18)
        # our own checkpoints are never read that leniently
        with pytest.raises(ReidEvalError, match=r"holding pickled Python objects \((argparse.Namespace|collections.deque)\)"):
            load_checkpoint(tmp_path / "t.pth")
