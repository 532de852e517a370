"""The winner's pipelines on albumentations 2.x: every transform fires at its probability with the
2020 meaning of its arguments, draws are independent, and validation is exactly resize_and_pad."""
import math

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest

from preprocessing.geometry import resize_and_pad
from training.augment import (
    INTERPOLATIONS, NOISE_STD_RANGE, IsotropicResize, applied, seed_pipeline, train_pipeline, val_pipeline,
)

SIZE = 48
DRAWS = 2000
#: transform -> probability of firing in the default train pipeline
FIRING = {
    "CoarseDropout": 0.2,
    "ImageCompression": 0.5,
    "GaussNoise": 0.1,
    "GaussianBlur": 0.05,
    "HorizontalFlip": 0.5,
    "IsotropicResize": 1.0,
    "RandomBrightnessContrast": 0.7 / 3,
    "FancyPCA": 0.7 / 3,
    "HueSaturationValue": 0.7 / 3,
    "ToGray": 0.2,
    "Affine": 0.5,
}


@pytest.fixture(scope="module")
def crop(prepared_dir):
    """A real face crop, shrunk so thousands of draws stay fast."""
    path = prepared_dir / pd.read_csv(prepared_dir / "crops.csv")["crop"][0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (60, 84), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def draws(crop):
    """DRAWS runs of the default train pipeline: (output images, applied (name, params) lists)."""
    pipeline = train_pipeline(SIZE)
    seed_pipeline(pipeline, np.random.default_rng(0))
    results = [pipeline(image=crop) for _ in range(DRAWS)]
    return [r["image"] for r in results], [r["applied_transforms"] for r in results]


def params_of(draws, name):
    return [params for run in draws[1] for n, params in run if n == name]


@pytest.mark.parametrize("name, p", FIRING.items())
def test_each_transform_fires_at_its_probability(draws, name, p):
    rate = sum(any(n == name for n, _ in run) for run in draws[1]) / DRAWS
    assert rate == pytest.approx(p, abs=4.5 * math.sqrt(p * (1 - p) / DRAWS) + 1e-9)


def test_every_output_is_a_square_of_the_input_size(draws):
    assert {(image.shape, image.dtype) for image in draws[0]} == {((SIZE, SIZE, 3), np.dtype(np.uint8))}


def test_transforms_fire_independently(draws):
    """One shared generator, not one per transform with the same seed (which makes all coins agree)."""
    names = [{n for n, _ in run} for run in draws[1]]
    both = sum({"ImageCompression", "HorizontalFlip"} <= s for s in names) / DRAWS
    assert both == pytest.approx(0.25, abs=4.5 * math.sqrt(0.25 * 0.75 / DRAWS))


def test_jpeg_quality_spans_60_to_100(draws):
    qualities = [p["quality"] for p in params_of(draws, "ImageCompression")]
    assert min(qualities) >= 60 and max(qualities) <= 100
    assert min(qualities) <= 62 and max(qualities) >= 98  # not 2.x's default of 99-100


def test_noise_has_the_2020_strength(draws):
    stds = [p["noise_map"].std() / 255 for p in params_of(draws, "GaussNoise")]
    low, high = NOISE_STD_RANGE
    assert low * 0.9 <= min(stds) and max(stds) <= high * 1.1  # not 2.x's default of 0.2-0.44


def test_blur_is_the_2020_three_tap_kernel(draws):
    kernels = [p["kernel"] for p in params_of(draws, "GaussianBlur")]
    expected = cv2.getGaussianKernel(3, 0).ravel()  # OpenCV's kernel for ksize 3, sigma 0: 1/4, 1/2, 1/4
    assert kernels and all(np.allclose(k, expected) for k in kernels)


def test_affine_is_shift_scale_rotate(draws):
    affines = params_of(draws, "Affine")
    scales = np.array([(p["scale"]["x"], p["scale"]["y"]) for p in affines])
    assert (scales[:, 0] == scales[:, 1]).all(), "2020 ShiftScaleRotate used one scale for both axes"
    assert 0.8 <= scales.min() < 0.85 and 1.15 < scales.max() <= 1.2
    rotations = [p["rotate"] for p in affines]
    assert -10 <= min(rotations) < -9 and 9 < max(rotations) <= 10


def test_cutout_holes_are_relative_to_the_crop(draws, crop):
    holes = np.concatenate([p["holes"] for p in params_of(draws, "CoarseDropout")])
    heights, widths = holes[:, 3] - holes[:, 1], holes[:, 2] - holes[:, 0]
    assert heights.min() >= int(0.1 * crop.shape[0]) and heights.max() <= math.ceil(0.25 * crop.shape[0])
    assert widths.min() >= int(0.1 * crop.shape[1]) and widths.max() <= math.ceil(0.25 * crop.shape[1])


@pytest.mark.parametrize("scale", [1.0, 0.4], ids=["shrink", "enlarge"])
def test_the_resize_picks_among_the_interpolations(crop, scale):
    image = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    pipeline = train_pipeline(SIZE, cutout=0, compression=0, noise=0, blur=0, flip=0, color=0, gray=0, affine=0)
    seed_pipeline(pipeline, np.random.default_rng(1))
    outputs = {pipeline(image=image)["image"].tobytes() for _ in range(60)}
    expected = {resize_and_pad(image, SIZE, down, up).tobytes() for down, up in INTERPOLATIONS}
    assert outputs == expected and len(expected) == 2  # AREA or LINEAR to shrink, CUBIC or LINEAR to enlarge


def test_seeded_pipelines_repeat(crop):
    runs = []
    for _ in range(2):
        pipeline = train_pipeline(SIZE)
        seed_pipeline(pipeline, np.random.default_rng(5))
        runs.append([pipeline(image=crop)["image"] for _ in range(20)])
    assert all((a == b).all() for a, b in zip(*runs))


@pytest.mark.parametrize("shape", [(84, 60, 3), (60, 84, 3), (20, 13, 3), (500, 380, 3), (48, 48, 3)])
def test_val_pipeline_is_resize_and_pad(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = val_pipeline(SIZE)(image=image)["image"]
    assert out.shape == (SIZE, SIZE, 3)
    assert (out == resize_and_pad(image, SIZE)).all()


def test_isotropic_resize_moves_a_mask_with_its_image():
    image = np.zeros((90, 60, 3), np.uint8)
    image[30:60, 10:40] = 255
    mask = (image[..., 0] > 0).astype(np.uint8)
    out = A.Compose([IsotropicResize(SIZE)], strict=True)(image=image, mask=mask)
    assert out["mask"].shape == (SIZE, SIZE)
    assert ((out["mask"] > 0) == (out["image"][..., 0] > 127)).mean() > 0.98


@pytest.mark.filterwarnings("ignore:Argument")
def test_strict_pipelines_reject_unknown_arguments():
    with pytest.raises(ValueError, match="'max_side' are not valid for transform IsotropicResize"):
        A.Compose([IsotropicResize(SIZE, max_side=SIZE)], strict=True)


def test_isotropic_resize_needs_a_positive_size():
    with pytest.raises(ValueError, match="size must be positive, not 0"):
        IsotropicResize(0)


def test_applied_names_what_fired():
    result = {"image": None, "applied_transforms": [("HorizontalFlip", {}), ("ToGray", {})]}
    assert applied(result) == ["HorizontalFlip", "ToGray"]


# --- the preview ----------------------------------------------------------------------------------

def test_preview_writes_a_grid_of_the_asked_size(prepared_dir, tmp_path):
    from training.preview_augs import main

    out = tmp_path / "grid.png"
    assert main(["--crops", str(prepared_dir), "--out", str(out), "--samples", "10", "--cols", "5",
                 "--size", "64"]) == 0
    grid = cv2.imread(str(out))
    assert grid.shape[:2] == (2 * 290, 5 * 260)  # 2 rows of 5 tiles at 2.6 x 2.9 inches, 100 dpi


def test_preview_of_a_folder_without_tables_fails_clearly(tmp_path, caplog):
    from training.preview_augs import main

    assert main(["--crops", str(tmp_path), "--out", str(tmp_path / "grid.png")]) == 1
    assert f"{tmp_path / 'crops.csv'}: missing" in caplog.text
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("source, target, expected", [("real", 0.0, "real 0.00"), ("real", 0.01, "real 0.01"),
                                                      ("fake", 0.37, "mix 0.37"), ("fake", 0.99, "fake 0.99"),
                                                      ("pseudo", 0.99, "pseudo 0.99")])
def test_preview_captions_name_the_kind_of_sample(source, target, expected):
    from training.preview_augs import caption

    item = {"target": target, "source": source, "dropout": "eyes+cutout",
            "video": "manipulated_sequences/Deepfakes/c40/videos/183_253"}
    assert caption(item) == f"{expected} | eyes+cutout\n…uences/Deepfakes/c40/videos/183_253"  # 36 characters
    assert caption(item | {"video": "abc"}).endswith("\nabc")
