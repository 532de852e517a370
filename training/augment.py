"""The DFDC winner's augmentation recipe on albumentations 2.x, one pipeline per mode.

Images are RGB uint8 face crops; every pipeline ends with a ``size x size`` image, resized and padded
by :func:`preprocessing.geometry.resize_and_pad`, the one isotropic resize that validation and the
kernel use too. Every ``Compose`` is strict, so an argument albumentations does not know (a 2020 name
such as ``quality_lower``) is an error rather than a silent fallback to its default.

Where 2.x changed the meaning of the winner's 2020 arguments, the 2020 behaviour is spelled out:
``GaussNoise`` var 10-50 (of 255^2) is ``std_range`` 0.0124-0.0277; ``GaussianBlur(blur_limit=3)``
was OpenCV's 3-tap kernel (1/4, 1/2, 1/4), where 2.x draws the size from 0-3 and sigma from 0.5-3;
``ShiftScaleRotate`` is an ``Affine`` with one scale for both axes (2.x scales them independently).

Seed a pipeline with :func:`seed_pipeline`, never ``Compose(seed=...)`` / ``set_random_seed``: those
give every transform its own generator with the same seed, so all the coin flips come out equal.
"""
from __future__ import annotations

import math
import random
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema

from preprocessing.geometry import resize_and_pad

#: (down, up) interpolation pairs the training resize picks from, as in the winner's recipe; the
#: first is :func:`resize_and_pad`'s default, used at validation and in the kernel.
INTERPOLATIONS = (
    (cv2.INTER_AREA, cv2.INTER_CUBIC),
    (cv2.INTER_AREA, cv2.INTER_LINEAR),
    (cv2.INTER_LINEAR, cv2.INTER_LINEAR),
)
#: The 2020 ``GaussNoise`` default, variance 10-50 on the 0-255 scale, as 2.x's std fraction.
NOISE_STD_RANGE = (math.sqrt(10) / 255, math.sqrt(50) / 255)
#: The sigma whose 3-tap Gaussian is OpenCV's fixed (1/4, 1/2, 1/4): exp(-1 / (2 sigma^2)) = 1/2.
BLUR_SIGMA = 1 / math.sqrt(2 * math.log(2))


class IsotropicResize(A.DualTransform):
    """Scale the long side to ``size`` and zero-pad to a centred square: :func:`resize_and_pad` with
    the given interpolations for shrinking / enlarging (masks use nearest neighbour)."""

    class InitSchema(BaseTransformInitSchema):  # the arguments strict mode accepts
        size: int
        interpolation_down: int
        interpolation_up: int

    def __init__(self, size: int, interpolation_down: int = INTERPOLATIONS[0][0],
                 interpolation_up: int = INTERPOLATIONS[0][1], p: float = 1.0):
        if size <= 0:
            raise ValueError(f"IsotropicResize: size must be positive, not {size}")
        super().__init__(p=p)
        self.size = size
        self.interpolation_down = interpolation_down
        self.interpolation_up = interpolation_up

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_and_pad(img, self.size, self.interpolation_down, self.interpolation_up)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return resize_and_pad(mask, self.size, cv2.INTER_NEAREST, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "interpolation_down", "interpolation_up")


def train_pipeline(
    size: int,
    cutout: float = 0.2,
    compression: float = 0.5,
    noise: float = 0.1,
    blur: float = 0.05,
    flip: float = 0.5,
    color: float = 0.7,
    gray: float = 0.2,
    affine: float = 0.5,
) -> A.Compose:
    """The winner's training pipeline to a ``size`` square, each argument a transform's probability.

    Cutout (1-2 holes, each 10-25% of the crop's height and width; ours, not the winner's) comes
    first, then JPEG quality 60-100, Gaussian noise, 3x3 blur, horizontal flip, the isotropic resize
    (one of :data:`INTERPOLATIONS`), one of brightness-contrast / FancyPCA / hue-saturation-value,
    grey, and shift 10% / scale 20% / rotate 10 degrees with black borders. The result carries
    ``applied_transforms``: the (name, params) of each transform that fired.
    """
    return A.Compose(
        [
            A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.25),
                            hole_width_range=(0.1, 0.25), fill=0, p=cutout),
            A.ImageCompression(compression_type="jpeg", quality_range=(60, 100), p=compression),
            A.GaussNoise(std_range=NOISE_STD_RANGE, p=noise),
            A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(BLUR_SIGMA, BLUR_SIGMA), p=blur),
            A.HorizontalFlip(p=flip),
            A.OneOf([IsotropicResize(size, down, up) for down, up in INTERPOLATIONS], p=1.0),
            A.OneOf([A.RandomBrightnessContrast(), A.FancyPCA(), A.HueSaturationValue()], p=color),
            A.ToGray(p=gray),
            A.Affine(scale=(0.8, 1.2), keep_ratio=True, translate_percent=(-0.1, 0.1), rotate=(-10, 10),
                     border_mode=cv2.BORDER_CONSTANT, fill=0, p=affine),
        ],
        strict=True,
        save_applied_params=True,
    )


def val_pipeline(size: int) -> A.Compose:
    """Validation: only the isotropic resize and padding, exactly :func:`resize_and_pad`."""
    return A.Compose([IsotropicResize(size)], strict=True)


def applied(result: dict[str, Any]) -> list[str]:
    """Class names of the transforms that fired in a :func:`train_pipeline` result."""
    return [name for name, _ in result.get("applied_transforms", [])]


def seed_pipeline(pipeline: A.Compose, rng: np.random.Generator) -> None:
    """Give all of ``pipeline``'s transforms one shared pair of generators seeded from ``rng``."""
    numpy_seed, python_seed = rng.integers(2**63, size=2)
    pipeline.set_random_state(np.random.default_rng(numpy_seed), random.Random(int(python_seed)))
