"""OSNet trunks against an independent functional forward over torchreid's state-dict keys, and the zoo file's conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid_eval.errors import ReidEvalError
from reid_eval.model import ModelConfig, build_model, convert_state, load_checkpoint, save_checkpoint
from reid_eval.model.checkpoint import foreground_trained
from reid_eval.model.convert import convert_checkpoint
from reid_eval.model.osnet import OSNET_NAMES

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / "osnet_x0_25_market1501.pth"
needs_weights = pytest.mark.skipif(not SHARED_WEIGHTS.exists(), reason=f"{SHARED_WEIGHTS} is absent (the shared torchreid OSNet)")


# --------------------------------------------------------------------------- an independent forward, from the keys alone


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)


def _in(x, sd, p):
    return F.instance_norm(x, weight=sd[p + ".weight"], bias=sd[p + ".bias"], eps=1e-5)


def _norm(x, sd, p):
    """BatchNorm where the key has running statistics, instance norm where it has none (torchreid's IN stem)."""
    return _bn(x, sd, p) if p + ".running_mean" in sd else _in(x, sd, p)


def _conv_unit(x, sd, p, relu=True, stride=1, padding=0):
    x = F.conv2d(x, sd[p + ".conv.weight"], stride=stride, padding=padding)
    if p + ".bn.weight" in sd:
        x = _norm(x, sd, p + ".bn")
    return F.relu(x) if relu else x


def _light(x, sd, p):
    x = F.conv2d(x, sd[p + ".conv1.weight"])
    x = F.conv2d(x, sd[p + ".conv2.weight"], padding=1, groups=x.shape[1])
    return F.relu(_bn(x, sd, p + ".bn"))


def _gate(x, sd, p):
    g = F.conv2d(x.mean(dim=(2, 3), keepdim=True), sd[p + ".fc1.weight"], sd[p + ".fc1.bias"])
    g = F.conv2d(F.relu(g), sd[p + ".fc2.weight"], sd[p + ".fc2.bias"])
    return x * torch.sigmoid(g)


def _stream_prefixes(sd, p):
    """The light-conv prefixes of each of a block's four streams, in either key layout."""
    if p + ".conv2a.conv1.weight" in sd:  # plain / IBN: conv2a, conv2b.0-1, conv2c.0-2, conv2d.0-3
        return [[p + ".conv2a"]] + [[f"{p}.conv2{c}.{i}" for i in range(n)] for c, n in (("b", 2), ("c", 3), ("d", 4))]
    return [[f"{p}.conv2.{t}.layers.{i}" for i in range(t + 1)] for t in range(4)]  # AIN


def _block(x, sd, p):
    x1 = _conv_unit(x, sd, p + ".conv1")
    x2 = 0
    for stream in _stream_prefixes(sd, p):
        y = x1
        for q in stream:
            y = _light(y, sd, q)
        x2 = x2 + _gate(y, sd, p + ".gate")
    x3 = _conv_unit(x2, sd, p + ".conv3", relu=False)
    inside = p + ".IN.weight" in sd and p + ".conv3.bn.weight" not in sd
    if inside:
        x3 = _in(x3, sd, p + ".IN")
    shortcut = _conv_unit(x, sd, p + ".downsample", relu=False) if p + ".downsample.conv.weight" in sd else x
    out = x3 + shortcut
    if p + ".IN.weight" in sd and not inside:
        out = _in(out, sd, p + ".IN")
    return F.relu(out)


def _transition(x, sd, p):
    return F.avg_pool2d(_conv_unit(x, sd, p), 2, stride=2)


def osnet_reference(sd, images):
    """(conv5 map [B, C, h, w], test-time feature [B, 512]) of torchreid's OSNet, from the state dict only."""
    x = _conv_unit(images, sd, "conv1", stride=2, padding=3)
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for stage in ("conv2", "conv3", "conv4"):
        i = 0
        while f"{stage}.{i}.conv1.conv.weight" in sd:
            x = _block(x, sd, f"{stage}.{i}")
            i += 1
        if f"{stage}.{i}.0.conv.weight" in sd:  # plain / IBN: the transition is the stage's last entry
            x = _transition(x, sd, f"{stage}.{i}.0")
        pool = "pool" + stage[-1]
        if f"{pool}.0.conv.weight" in sd:  # AIN: the transition stands beside the stage
            x = _transition(x, sd, f"{pool}.0")
    fmap = _conv_unit(x, sd, "conv5")
    v = fmap.mean(dim=(2, 3))
    v = F.linear(v, sd["fc.0.weight"], sd["fc.0.bias"])
    v = F.relu(F.batch_norm(v, sd["fc.1.running_mean"], sd["fc.1.running_var"], sd["fc.1.weight"], sd["fc.1.bias"], False, 0.0, 1e-5))
    return fmap, v


def _pyramid(fmap, kernels=(2, 4, 6, 8), stride=2):
    levels = [F.max_pool2d(fmap, k, stride=stride).flatten(2) for k in kernels if k <= min(fmap.shape[-2:])]
    return torch.cat(levels, dim=2).transpose(1, 2)


def _randomised(model):
    """Give every BatchNorm non-trivial statistics and affine terms, so the comparison sees them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", ".bias")) or (name.endswith(".weight") and t.dim() == 1):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1.0 if name.endswith(".weight") else 0.0))
    return model


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", OSNET_NAMES)
def test_trunk_equals_the_functional_forward_of_its_keys(name):
    torch.manual_seed(0)
    config = ModelConfig(backbone=name, input_size=(256, 128), global_feature="embedding")
    model = _randomised(build_model(config)).eval()
    images = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        out = model(images)
        fmap, embedding = osnet_reference(model.backbone.state_dict(), images)
    assert out.map_size == (16, 8) == config.map_size(256, 128)
    assert out.local.shape == (2, 70, config.feature_dim) and config.num_locations() == 70
    torch.testing.assert_close(out.local, _pyramid(fmap), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.global_features, embedding, rtol=1e-4, atol=1e-5)


def test_a_pyramid_level_larger_than_the_map_is_skipped():
    config = ModelConfig(backbone="osnet_x0_25", input_size=(96, 64), global_feature="embedding")
    model = build_model(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 64))
    # 96x64 -> 6x4: kernels 2 and 4 fit (3x2 + 2x1 cells), 6 and 8 do not
    assert out.map_size == (6, 4) and out.grid == [(3, 2), (2, 1), (0, 0), (0, 0)] and out.local.shape[1] == 8


def test_osnet_config_refuses_resnet_only_settings():
    with pytest.raises(ValueError, match="output stride"):
        ModelConfig(backbone="osnet_x1_0", last_stride=2)
    with pytest.raises(ValueError, match="embedding"):
        ModelConfig(backbone="resnet50", global_feature="embedding")


@pytest.mark.parametrize("name", ["osnet_x0_5", "osnet_ibn_x1_0", "osnet_ain_x1_0"])
def test_convert_infers_width_and_variant_from_a_zoo_state_dict(name):
    torch.manual_seed(2)
    source = build_model(ModelConfig(backbone=name, global_feature="embedding")).backbone.state_dict()
    zoo = {**source, "classifier.weight": torch.randn(751, 512), "classifier.bias": torch.zeros(751)}
    trainer_file = {"state_dict": {"module." + k: v for k, v in zoo.items()}, "epoch": 60, "rank1": np.float64(0.9)}
    for payload in (zoo, trainer_file):
        model, config, extra = convert_state("torchreid", payload, "zoo.pth")
        assert config.backbone == name and config.input_size == (256, 128) and config.interpolation == "bilinear"
        assert config.global_feature == "embedding" and extra["dropped"] == ["classifier.*"]
        assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in source.items())
        assert extra["foreground_trained"] is False


def test_imagenet_start_for_an_osnet_names_the_torchreid_file_to_convert():
    from reid_eval.model import imagenet_model

    with pytest.raises(ReidEvalError, match="convert --from torchreid"):
        imagenet_model(ModelConfig(backbone="osnet_x1_0"))


def test_a_state_dict_with_unknown_osnet_keys_is_refused_by_name():
    zoo = build_model(ModelConfig(backbone="osnet_x0_25", global_feature="embedding")).backbone.state_dict()
    zoo["attention.weight"] = torch.zeros(3)
    with pytest.raises(ReidEvalError, match="attention.weight"):
        convert_state("torchreid", zoo, "odd.pth")


@needs_weights
def test_the_shared_market1501_osnet_converts_and_matches_the_reference_on_real_images(tmp_path):
    model, config, extra = convert_checkpoint("torchreid", SHARED_WEIGHTS)
    assert config.backbone == "osnet_x0_25" and config.feature_dim == 128 and config.global_dim == 512
    assert not foreground_trained(extra)
    path = save_checkpoint(tmp_path / "osnet.pt", model, config, extra=extra)
    loaded, config2, meta = load_checkpoint(path)
    assert config2 == config and meta["extra"]["foreground_trained"] is False
    from reid_eval.features.preprocess import Preprocessing, load_image_array, to_tensor_batch

    prep = Preprocessing.for_model(config)
    folder = SHARED_WEIGHTS.parents[1] / "data" / "Partial-REID_Dataset" / "whole_body_images"
    images = to_tensor_batch([load_image_array(p, prep) for p in sorted(folder.glob("*.jpg"))[:4]], prep)
    sd = {k: v.float() for k, v in torch.load(SHARED_WEIGHTS, map_location="cpu", weights_only=True).items()}
    with torch.no_grad():
        out = loaded(images)
        fmap, embedding = osnet_reference(sd, images)
    torch.testing.assert_close(out.local, _pyramid(fmap), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.global_features, embedding, rtol=1e-4, atol=1e-5)
    assert out.global_features.shape == (4, 512) and bool((out.global_features >= 0).all())  # after fc's ReLU
