"""The resize filter is the model's recorded setting: it reaches the cache key and the pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reid_eval.features.preprocess import Preprocessing, load_image_array
from reid_eval.model import ModelConfig


def test_interpolation_follows_the_model_config_and_is_part_of_the_key(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 256, size=(50, 20, 3), dtype=np.uint8)).save(path)
    bicubic = Preprocessing.for_model(ModelConfig(input_size=(96, 48), interpolation="bicubic"))
    bilinear = Preprocessing.for_model(ModelConfig(input_size=(96, 48)))
    assert (bicubic.interpolation, bilinear.interpolation) == ("bicubic", "bilinear")
    assert bicubic.to_dict() != bilinear.to_dict() and bicubic.to_dict()["interpolation"] == "bicubic"
    with Image.open(path) as img:
        # fast-reid's T.Resize(..., interpolation=3) on a PIL image is PIL's bicubic resize
        want_cubic = np.asarray(img.convert("RGB").resize((48, 96), Image.Resampling.BICUBIC))
        want_linear = np.asarray(img.convert("RGB").resize((48, 96), Image.Resampling.BILINEAR))
    got_cubic, got_linear = load_image_array(path, bicubic), load_image_array(path, bilinear)
    assert np.array_equal(got_cubic, want_cubic) and np.array_equal(got_linear, want_linear)
    assert not np.array_equal(got_cubic, got_linear)
