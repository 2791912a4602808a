"""`checkpoint init --pretrained imagenet`: torchvision's weights API through torch's hub cache.

The network is made unreachable deterministically (an HTTPS proxy on a closed
local port), so the success test proves the weights come from the cache file
placed under $TORCH_HOME, and the failure test cannot depend on this machine
being offline.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision

from reid_eval_cli.main import main
from reid_eval.model import load_checkpoint


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """TORCH_HOME in tmp_path and every HTTP(S) request refused at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: connection refused
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's cached opener would keep old proxies
    return tmp_path / "torch_home"


def test_offline_init_fails_in_one_line_naming_the_convert_command(no_network, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["checkpoint", "init", "--pretrained", "imagenet", "--backbone", "resnet18", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert err.startswith("Error: --pretrained imagenet") and err.count("\n") == 1 and "Traceback" not in err
    assert url in err and "reid-eval checkpoint convert --from torchvision FILE" in err
    assert not out.exists() and not list(no_network.rglob("*.pth"))


def test_init_loads_the_cached_imagenet_file_through_the_weights_api(no_network, tmp_path, capsys):
    torch.manual_seed(21)
    reference = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = no_network / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    out = tmp_path / "imagenet.pt"
    assert main(["checkpoint", "init", "--pretrained", "imagenet", "--backbone", "resnet18", "--input-size", "64x32",
                 "--out", str(out)]) == 0
    assert "IMAGENET1K_V1" in capsys.readouterr().out
    model, config, meta = load_checkpoint(out)
    assert config.backbone == "resnet18" and config.input_size == (64, 32) and config.last_stride == 1
    assert meta["extra"]["init"] == "torchvision resnet18 IMAGENET1K_V1" and meta["extra"]["weights_url"] == url
    ours = model.backbone.state_dict()
    ref = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)


def test_ibn_backbones_are_pointed_at_the_ibn_net_files(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["checkpoint", "init", "--pretrained", "imagenet", "--backbone", "resnet50_ibn_a", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "convert --from ibn-net FILE" in err and "resnet50_ibn_a" in err and err.count("\n") == 1
    assert not out.exists()
