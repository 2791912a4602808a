"""Checkpoints: our format's round trip and architecture checks; conversion from
torchvision, fast-reid (PartialReID/DSR) and torchreid layouts built from local state dicts."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cli.main import main
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
    assert config == SMALL and meta["sha256"] == file_sha256(path) and meta["extra"] == {"note": "x"}
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
    assert main(["checkpoint", "init", "--out", str(out), "--backbone", "resnet18", "--seed", "4", "--input-size", "96", "48"]) == 0
    assert "resnet18" in capsys.readouterr().out
    _, config, meta = load_checkpoint(out)
    assert config == ModelConfig(backbone="resnet18", input_size=(96, 48)) and meta["extra"]["seed"] == 4
    # the same seed gives the same file content
    again = tmp_path / "again.pt"
    main(["checkpoint", "init", "--out", str(again), "--backbone", "resnet18", "--seed", "4", "--input-size", "96", "48"])
    a, b = load_checkpoint(out)[0].state_dict(), load_checkpoint(again)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.save(tv_resnet18.state_dict(), tmp_path / "tv.pth")
    assert main(["checkpoint", "convert", "--from", "torchvision", str(tmp_path / "tv.pth"), "--out", str(tmp_path / "c.pt")]) == 0
    assert load_checkpoint(tmp_path / "c.pt")[1].backbone == "resnet18"
    capsys.readouterr()
    assert main(["checkpoint", "convert", "--from", "torchvision", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "x.pt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "missing.pth" in err and "Traceback" not in err
