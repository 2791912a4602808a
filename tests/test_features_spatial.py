import numpy as np
import pytest

from reid_eval.features import SpatialFeatures


def make(counts=(2, 0, 3), d=4, fg=True):
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    local = np.arange(offsets[-1] * d, dtype=np.float32).reshape(-1, d)
    foreground = np.linspace(0.1, 0.9, offsets[-1]).astype(np.float32) if fg else None
    return SpatialFeatures(local, offsets, foreground)


def test_accessors():
    f = make()
    assert len(f) == 3 and f.dim == 4
    assert f.counts.tolist() == [2, 0, 3]
    assert [f.num_locations(i) for i in range(3)] == [2, 0, 3]
    np.testing.assert_array_equal(f.image(2), f.local[2:5])
    assert f.image(1).shape == (0, 4)
    np.testing.assert_array_equal(f.image_foreground(0), f.foreground[:2])
    assert f.image(-1).shape == (3, 4)
    with pytest.raises(IndexError):
        f.image(3)


def test_dtypes_converted():
    f = SpatialFeatures(np.ones((3, 2)), np.array([0, 1, 3], dtype=np.int32), np.ones(3))
    assert f.local.dtype == np.float32 and f.offsets.dtype == np.int64 and f.foreground.dtype == np.float32


@pytest.mark.parametrize("indices", [[2, 0], np.array([0, 0, 2]), slice(1, 3), np.array([True, False, True]), [-1]])
def test_subset_matches_images(indices):
    f = make()
    sub = f.subset(indices)
    expected = np.arange(3)[indices] if not isinstance(indices, list) else np.array(indices) % 3
    assert len(sub) == len(expected)
    for k, i in enumerate(expected):
        np.testing.assert_array_equal(sub.image(k), f.image(int(i)))
        np.testing.assert_array_equal(sub.image_foreground(k), f.image_foreground(int(i)))
    assert sub.offsets[0] == 0 and sub.offsets[-1] == sub.local.shape[0]


def test_getitem_and_empty_subset():
    f = make(fg=False)
    assert len(f[[]]) == 0 and f[[]].local.shape == (0, 4)
    np.testing.assert_array_equal(f[[2]].local, f.image(2))
    assert f[[2]].foreground is None
    with pytest.raises(TypeError):
        f[0]
    with pytest.raises(IndexError):
        f.subset([5])


@pytest.mark.parametrize(
    "local, offsets, fg, message",
    [
        (np.ones((3, 2)), [1, 3], None, "offsets\\[0\\] must be 0"),
        (np.ones((3, 2)), [0, 2, 1, 3], None, "non-decreasing: image 1"),
        (np.ones((3, 2)), [0, 2], None, "does not match the 3 rows"),
        (np.ones(3), [0, 3], None, "2-D"),
        (np.ones((3, 2)), [0, 3], np.ones(2), "foreground must have shape"),
        (np.ones((3, 2)), [0.0, 3.0], None, "integers"),
    ],
)
def test_validation(local, offsets, fg, message):
    with pytest.raises(ValueError, match=message):
        SpatialFeatures(local, np.asarray(offsets), fg)


def test_non_finite_names_image():
    local = np.ones((5, 2), dtype=np.float32)
    local[3, 1] = np.nan
    with pytest.raises(ValueError, match="image 2"):
        SpatialFeatures(local, np.array([0, 2, 3, 5]))
    fg = np.ones(5, dtype=np.float32)
    fg[0] = np.inf
    with pytest.raises(ValueError, match="foreground of image 0"):
        SpatialFeatures(np.ones((5, 2)), np.array([0, 2, 3, 5]), fg)
