"""Converted models equal the models their source code builds.

The references here are written from the published definitions, without
importing reid-eval's model code: fast-reid's ResNet (plain or IBN-a, its
2020+ stem MaxPool2d(3, 2, padding=0, ceil_mode=True), last stride 1) with the
PartialReID occlusion unit and ``bnneck_occ``; torchreid's ResNet-50 (stem with
padding 1, last stride 2, or 1 with the fc512 embedding). They are filled with
random weights (and random BN statistics), saved in their source's checkpoint
layout, converted with ``reid-eval checkpoint convert`` and compared on random
inputs: pyramid locations, foreground probabilities and global feature to
float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid_eval_cli.main import main
from reid_eval.model import load_checkpoint

BLOCKS_50 = (3, 4, 6, 3)


# --------------------------------------------------------------------------- reference models


class RefIBN(nn.Module):
    """IBN-a norm: InstanceNorm2d(affine) on the first half of the channels, BatchNorm2d on the rest."""

    def __init__(self, planes: int):
        super().__init__()
        self.half = planes // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        a, b = x[:, : self.half], x[:, self.half :]
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], 1)


class RefBottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, ibn: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = RefIBN(planes) if ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNet50(nn.Module):
    """ResNet-50 trunk; ``ibn`` puts IBN-a norms in layer1–3; ``fast_reid_stem`` is padding 0 + ceil mode."""

    def __init__(self, ibn: bool, fast_reid_stem: bool, last_stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True) if fast_reid_stem else nn.MaxPool2d(3, 2, padding=1)
        inplanes = 64
        for i, (planes, blocks, stride) in enumerate(zip((64, 128, 256, 512), BLOCKS_50, (1, 2, 2, last_stride))):
            layer = []
            for j in range(blocks):
                layer.append(RefBottleneck(inplanes, planes, stride if j == 0 else 1, ibn and planes != 512))
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class RefOcclusionUnit(nn.Module):
    """fast-reid PartialReID's OcclusionUnit: pyramid max pooling 2/4/6/8 (stride 2), sigmoid mask,
    global feature = first level weighted by its L1-normalised mask."""

    def __init__(self, d: int, bias: bool):
        super().__init__()
        self.pools = [nn.MaxPool2d(k, 2) for k in (2, 4, 6, 8)]
        self.mask_layer = nn.Linear(d, 1, bias=bias)

    def forward(self, fmap):
        levels = [p(fmap) for p in self.pools if min(fmap.shape[-2:]) >= p.kernel_size]
        spatial = torch.cat([lv.flatten(2) for lv in levels], 2).transpose(1, 2)  # [n, m, c]
        mask = torch.sigmoid(self.mask_layer(spatial)[:, :, 0])
        first = levels[0].shape[2] * levels[0].shape[3]
        score = F.normalize(mask[:, :first], p=1, dim=1).unsqueeze(1)
        glob = score.matmul(levels[0].flatten(2).transpose(1, 2)).view(fmap.shape[0], -1)
        return spatial, mask, glob


def _randomise(module: nn.Module, seed: int) -> None:
    """Random weights and BN statistics that keep a 50-layer forward at a sane scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.InstanceNorm2d)):
                n = m.weight.numel()
                scale = 0.2 if name.endswith("bn3") else 1.0  # residual branches small, as after training
                m.weight.copy_(scale * (0.5 + torch.rand(n, generator=g)))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                if m.running_mean is not None:
                    m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight.shape[1] ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def _convert(tmp_path, source: str, payload, *options: str):
    src, out = tmp_path / f"{source}.pth", tmp_path / f"{source}-converted.pt"
    torch.save(payload, src)
    assert main(["checkpoint", "convert", "--from", source, str(src), "--out", str(out), *options]) == 0
    model, config, _ = load_checkpoint(out)
    return model, config


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal to float32 rounding, relative to the tensor's scale."""
    scale = float(ref.abs().max())
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * scale)


# --------------------------------------------------------------------------- fast-reid


def _fast_reid_checkpoint(ibn: bool, mask_bias: bool, neck_prefix: str, seed: int):
    trunk = RefResNet50(ibn=ibn, fast_reid_stem=True, last_stride=1)
    occ = RefOcclusionUnit(2048, bias=mask_bias)
    neck = nn.BatchNorm1d(2048)
    for i, m in enumerate((trunk, occ, neck)):
        _randomise(m, seed + i)
    for m in (trunk, occ, neck):
        m.eval()
    state = {f"backbone.{k}": v for k, v in trunk.state_dict().items()}
    state.update({f"heads.occ_unit.{k}": v for k, v in occ.state_dict().items()})
    state.update({f"heads.{neck_prefix}{k}": v for k, v in neck.state_dict().items()})
    state.update({
        "heads.bnneck.weight": torch.ones(2048), "heads.bnneck.bias": torch.zeros(2048),
        "heads.classifier.weight": torch.zeros(5, 2048), "heads.classifier_occ.weight": torch.zeros(5, 2048),
        "pixel_mean": torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1),
        "pixel_std": torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1),
    })
    # fast-reid's Checkpointer: {"model": state_dict, "optimizer": ..., "scheduler": ..., "iteration": int}
    return {"model": state, "iteration": 1234}, trunk, occ, neck


def _check_fast_reid(model, trunk, occ, neck, x):
    with torch.no_grad():
        fmap = trunk(x)
        spatial, mask, glob = occ(fmap)
        ref_global = neck(glob)
        out = model(x)
    assert out.map_size == tuple(fmap.shape[-2:])
    _close(out.local, spatial)
    _close(out.foreground, mask)
    _close(out.global_features, ref_global)
    assert float((out.global_features - glob).abs().max()) > 0.01  # the neck is applied, not skipped


@pytest.fixture(scope="module")
def fast_reid_ibn(tmp_path_factory):
    """A fast-reid IBN-a PartialReID checkpoint (current layout: mask bias, bnneck_occ.0.*), converted at 128×64."""
    tmp = tmp_path_factory.mktemp("fast_reid_ibn")
    payload, trunk, occ, neck = _fast_reid_checkpoint(True, True, "bnneck_occ.0.", seed=3)
    model, config = _convert(tmp, "fast-reid", payload, "--input-size", "128x64")
    return {"source": tmp / "fast-reid.pth", "converted": tmp / "fast-reid-converted.pt", "model": model,
            "config": config, "trunk": trunk, "occ": occ, "neck": neck}


def test_fast_reid_ibn_checkpoint_converts_to_equal_outputs(fast_reid_ibn):
    config = fast_reid_ibn["config"]
    assert config.backbone == "resnet50_ibn_a"
    assert (config.stem, config.interpolation, config.last_stride, config.global_feature) == (
        "fast-reid", "bicubic", 1, "occlusion-weighted")
    # an odd height: the stems differ in map size too (torchvision's padding would give 9 rows)
    x = torch.randn(2, 3, 130, 64, generator=torch.Generator().manual_seed(1))
    f = fast_reid_ibn
    _check_fast_reid(f["model"], f["trunk"], f["occ"], f["neck"], x)
    assert f["model"](x[:1]).map_size == (8, 4)


def test_plain_fast_reid_2020_layout_converts_to_equal_outputs(tmp_path):
    """No IBN, mask layer without bias, neck keys without the ``.0``."""
    payload, trunk, occ, neck = _fast_reid_checkpoint(False, False, "bnneck_occ.", seed=7)
    model, config = _convert(tmp_path, "fast-reid", payload, "--input-size", "128x64")
    assert config.backbone == "resnet50" and config.global_feature == "occlusion-weighted"
    _check_fast_reid(model, trunk, occ, neck, torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(5)))


def test_fast_reid_stem_matters(fast_reid_ibn, tmp_path, capsys):
    """The same weights with torchvision's stem are a different network (the defect this guards)."""
    out = tmp_path / "tv-stem.pt"
    capsys.readouterr()
    assert main(["checkpoint", "convert", "--from", "fast-reid", str(fast_reid_ibn["source"]), "--out", str(out),
                 "--input-size", "128x64", "--stem", "torchvision"]) == 0
    said = capsys.readouterr().out
    assert "global_feature, interpolation, last_stride (override" in said and "ceil_mode" not in said
    model, config, _ = load_checkpoint(out)
    assert config.stem == "torchvision"
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        spatial, _, _ = fast_reid_ibn["occ"](fast_reid_ibn["trunk"](x))
        local = model(x).local
    assert local.shape == spatial.shape
    assert float((local - spatial).abs().max()) > 1e-3 * float(spatial.abs().max())


def test_fast_reid_ibn_checkpoint_extracts_with_bicubic_resizing(fast_reid_ibn, tmp_path):
    """convert -> extract on a generated Partial-REID tree; the cache holds fast-reid's features of bicubic-resized images."""
    from PIL import Image

    from reid_eval.features import read_attrs, read_split
    from test_extract_cache import make_partial_reid

    tree = make_partial_reid(tmp_path / "Partial-REID", ids=2, per_side=1)
    cache = tmp_path / "cache"
    assert main(["extract", "--dataset", "partial_reid", "--root", str(tree), "--checkpoint", str(fast_reid_ibn["converted"]),
                 "--resize", "fixed", "--device", "cpu", "--batch-size", "4", "--allow-mismatch", "--cache-dir", str(cache)]) == 0
    (cache_file,) = cache.rglob("*.h5")
    settings = read_attrs(cache_file)["settings"]
    assert settings["preprocessing"]["interpolation"] == "bicubic" and settings["model"]["stem"] == "fast-reid"
    gallery = read_split(cache_file, "gallery")
    img = Image.open(tree / gallery.paths[0]).convert("RGB").resize((64, 128), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)[None]
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        spatial, mask, glob = fast_reid_ibn["occ"](fast_reid_ibn["trunk"](x))
        ref_global = fast_reid_ibn["neck"](glob)
    _close(torch.from_numpy(gallery.global_features[0])[None], ref_global)
    _close(torch.from_numpy(gallery.spatial.image(0))[None], spatial)
    _close(torch.from_numpy(gallery.spatial.image_foreground(0))[None], mask)


# --------------------------------------------------------------------------- torchreid


class RefTorchreidResNet50(nn.Module):
    """torchreid's ResNet-50 layout: trunk, optional fc512 embedding (Linear + BN1d + ReLU), classifier."""

    def __init__(self, fc512: bool, num_classes: int = 7):
        super().__init__()
        trunk = RefResNet50(ibn=False, fast_reid_stem=False, last_stride=1 if fc512 else 2)
        for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(trunk, name))
        self.maxpool = trunk.pool
        self.fc = nn.Sequential(nn.Linear(2048, 512), nn.BatchNorm1d(512), nn.ReLU()) if fc512 else None
        self.classifier = nn.Linear(512 if fc512 else 2048, num_classes)

    def feature_map(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _torchreid_trainer_checkpoint(model: nn.Module, data_parallel: bool) -> dict:
    """What torchreid's engine passes to torchreid.utils.save_checkpoint (rank1 from NumPy's CMC)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[20, 40])
    state = model.state_dict()
    if data_parallel:
        state = {f"module.{k}": v for k, v in state.items()}
    cmc = np.array([0.8125, 0.9, 0.95])
    return {"state_dict": state, "epoch": 60, "rank1": cmc[0], "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}


@pytest.mark.parametrize("fc512", [False, True], ids=["resnet50", "resnet50_fc512"])
def test_torchreid_trainer_checkpoint_converts_to_equal_trunk(tmp_path, fc512):
    ref = RefTorchreidResNet50(fc512)
    _randomise(ref, 11 if fc512 else 12)
    ref.eval()
    payload = _torchreid_trainer_checkpoint(ref, data_parallel=not fc512)
    assert isinstance(payload["rank1"], np.floating)
    model, config = _convert(tmp_path, "torchreid", payload, "--input-size", "128x64")
    assert config.backbone == "resnet50" and config.stem == "torchvision" and config.interpolation == "bilinear"
    assert config.last_stride == (1 if fc512 else 2)  # torchreid's own choice for each model
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        fmap = ref.feature_map(x)
        out = model(x)
        ours = model.feature_map(x)
    _close(ours, fmap)
    levels = [nn.MaxPool2d(k, 2)(fmap).flatten(2) for k in (2, 4, 6, 8) if min(fmap.shape[-2:]) >= k]
    _close(out.local, torch.cat(levels, 2).transpose(1, 2))
    _close(out.global_features, fmap.mean(dim=(2, 3)))  # torchreid's global_avgpool before the embedding


# --------------------------------------------------------------------------- IBN-Net ImageNet files


def test_ibn_net_imagenet_file_converts_to_equal_trunk(tmp_path, capsys):
    """The IBN-Net authors' release: {"state_dict": {"module.*"}} with an fc layer, torchvision's stem."""
    ref = RefResNet50(ibn=True, fast_reid_stem=False, last_stride=2)
    _randomise(ref, 21)
    ref.eval()
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    state["module.fc.weight"], state["module.fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    model, config = _convert(tmp_path, "ibn-net", {"state_dict": state}, "--input-size", "128x64", "--last-stride", "2")
    assert (config.backbone, config.stem, config.interpolation, config.global_feature) == (
        "resnet50_ibn_a", "torchvision", "bilinear", "average")
    x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        _close(model.feature_map(x), ref(x))
    capsys.readouterr()
    assert main(["checkpoint", "convert", "--from", "torchvision", str(tmp_path / "ibn-net.pth"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "holds a resnet50_ibn_a trunk, which --from torchvision does not hold; use --from ibn-net" in capsys.readouterr().err
