"""Difference masks as pure functions, on a real face crop with a known edit and known noise."""
import cv2
import numpy as np
import pytest

from preprocessing.masks import DEFAULT_THRESHOLDS, MASK_METHODS, difference_mask, dissimilarity, share_inside

EDIT = (40, 60, 90, 110)  # x1, y1, x2, y2 of the pasted patch, pixels


@pytest.fixture(scope="module")
def face(data_dir):
    bgr = cv2.imread(str(data_dir / "face_images/ffpp/REAL/real__000__000.png"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def edited(face: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    """``face`` with the EDIT box replaced by a flipped, darker copy, plus Gaussian noise everywhere."""
    fake = face.astype(np.float64)
    x1, y1, x2, y2 = EDIT
    fake[y1:y2, x1:x2] = fake[y1:y2, x1:x2][::-1, ::-1] * 0.6
    fake += np.random.default_rng(seed).normal(0, noise, fake.shape)
    return np.clip(fake, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("method", MASK_METHODS)
def test_identical_crops_give_an_empty_mask(face, method):
    mask = difference_mask(face, face.copy(), method)
    assert mask.shape == face.shape[:2] and mask.dtype == np.uint8
    assert not mask.any()
    assert np.isnan(share_inside(mask, (0, 0, 10, 10)))


@pytest.mark.parametrize("method", MASK_METHODS)
@pytest.mark.parametrize("noise", [0.0, 2.0, 4.0])
def test_mask_marks_the_edit_and_ignores_noise(face, method, noise):
    mask = difference_mask(face, edited(face, noise), method)
    assert set(np.unique(mask)) == {0, 255}
    x1, y1, x2, y2 = EDIT
    grown = (x1 - 5, y1 - 5, x2 + 5, y2 + 5)  # the blur spreads the edit's edge by a few pixels
    assert share_inside(mask, grown) >= 0.95
    assert (mask[y1:y2, x1:x2] > 0).mean() >= 0.5


def test_without_blur_strong_noise_floods_the_mask_and_the_blur_removes_it(face):
    fake = edited(face, noise=8.0)
    x1, y1, x2, y2 = EDIT
    grown = (x1 - 5, y1 - 5, x2 + 5, y2 + 5)
    assert share_inside(difference_mask(face, fake, "pixel", blur=0), grown) < 0.5
    assert share_inside(difference_mask(face, fake, "pixel"), grown) >= 0.95


@pytest.mark.parametrize("method", MASK_METHODS)
def test_dissimilarity_is_bounded_and_grows_with_the_change(face, method):
    small, large = (dissimilarity(face, np.clip(face * f, 0, 255).astype(np.uint8), method) for f in (0.9, 0.5))
    for d in (small, large):
        assert d.dtype == np.float32 and d.min() >= 0 and d.max() <= 1
    assert large.mean() > small.mean()


def test_threshold_controls_the_mask_and_defaults_per_method(face):
    fake = edited(face, noise=0.0)
    d = dissimilarity(face, fake, "pixel")
    for threshold in (0.05, 0.2, 0.5):
        assert ((difference_mask(face, fake, "pixel", threshold=threshold) > 0) == (d >= threshold)).all()
    assert ((difference_mask(face, fake, "pixel") > 0) == (d >= DEFAULT_THRESHOLDS["pixel"])).all()


@pytest.mark.parametrize("box, expected", [((0, 0, 4, 4), 1.0), ((0, 0, 2, 4), 0.5), ((-5, -5, 2, 2), 0.25),
                                           ((4, 4, 9, 9), 0.0), ((1.6, 0, 4.4, 4), 0.5)])
def test_share_inside_counts_mass_in_the_clipped_rounded_box(box, expected):
    mask = np.zeros((8, 8), np.uint8)
    mask[0:4, 0:4] = 255
    assert share_inside(mask, box) == pytest.approx(expected)


@pytest.mark.parametrize("real, fake, message", [
    (np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11, 3), np.uint8),
     r"one size; got real \(10, 10, 3\), fake \(10, 11, 3\)"),
    (np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8), r"H x W x 3"),
])
def test_mismatched_crops_are_rejected(real, fake, message):
    with pytest.raises(ValueError, match=message):
        difference_mask(real, fake)


def test_unknown_method_is_rejected(face):
    with pytest.raises(ValueError, match="unknown mask method 'lpips'; choose one of pixel, ssim"):
        dissimilarity(face, face, "lpips")
