"""Self-blended pseudo-fakes (Shiohara & Yamasaki, CVPR 2022): fakes made from a real face crop alone.

A crop (the *target*) is blended with a transformed copy of itself (the *source*: colour and sharpness
changed, shifted and scaled a little) through a soft mask around the face, or around one face part
(eyes, nose, mouth). What remains is what every face swap leaves and no single generator owns: a
blending boundary and a colour / sharpness mismatch between the face and its surroundings.

Conventions as in :mod:`training.dropout`: RGB uint8 ``H x W x 3`` crops, ``(5, 2)`` MTCNN landmarks in
crop pixels. The blend mask is float32 ``H x W`` in [0, 1], the source's weight at each pixel: the
result equals the crop exactly where it is 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from .augment import seed_pipeline
from .dropout import PART_REGIONS, PARTS, face_axes

#: What a blend mask covers: the whole face, or one of the :data:`training.dropout.PARTS`.
REGIONS = ("face", *PARTS)
#: The blend ratios the source's weight is scaled by, drawn uniformly (Shiohara & Yamasaki's list).
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
#: Points on the face ellipse (:func:`training.dropout.face_axes`) whose convex hull makes a face mask.
HULL_POINTS = 16


def source_pipeline(shift: float, scale: float) -> A.Compose:
    """The source's transforms: always one colour change and one sharpness change, then a shift of up
    to ``shift`` of the crop's size and a scale change of up to ``scale``, borders reflected."""
    return A.Compose(
        [
            A.OneOf([A.RGBShift(r_shift_limit=20, g_shift_limit=20, b_shift_limit=20),
                     A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10),
                     A.RandomBrightnessContrast(brightness_limit=(-0.1, 0.1), contrast_limit=(-0.1, 0.1))], p=1.0),
            A.OneOf([A.Sharpen(alpha=(0.2, 0.5), lightness=(0.5, 1.0)),
                     A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.5, 1.5)),
                     A.Downscale(scale_range=(0.5, 0.8),
                                interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR})], p=1.0),
            A.Affine(scale=(1 - scale, 1 + scale), keep_ratio=True, translate_percent=(-shift, shift),
                     border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        ],
        strict=True,
    )


def hull_mask(shape: tuple[int, ...], landmarks: np.ndarray, rng: np.random.Generator,
              jitter: float = 0.15) -> np.ndarray:
    """The convex hull of the five landmarks and of :data:`HULL_POINTS` points on the face ellipse,
    each point's distance from the centre scaled by a factor drawn from ``1 ± jitter``: bool ``H x W``."""
    centre, across, along, half_width, half_height = face_axes(landmarks)
    angles = np.linspace(0, 2 * np.pi, HULL_POINTS, endpoint=False)
    radii = rng.uniform(1 - jitter, 1 + jitter, HULL_POINTS)
    outline = centre + radii[:, None] * (np.cos(angles)[:, None] * half_width * across
                                         + np.sin(angles)[:, None] * half_height * along)
    points = np.concatenate([outline, np.asarray(landmarks, np.float64)])
    hull = cv2.convexHull(np.rint(points).astype(np.int32))
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def deform(mask: np.ndarray, rng: np.random.Generator, amplitude: float, grid: int = 4) -> np.ndarray:
    """Elastic deformation: ``mask`` (float) resampled along a smooth random displacement field (a
    ``grid x grid`` lattice of offsets of up to ``amplitude`` pixels, interpolated bicubically)."""
    height, width = mask.shape
    field = rng.uniform(-amplitude, amplitude, (2, grid, grid)).astype(np.float32)
    dx, dy = (cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in field)
    ys, xs = np.indices((height, width), dtype=np.float32)
    return cv2.remap(mask, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@dataclass(frozen=True)
class SelfBlend:
    """The pseudo-fake generator, its settings as fields:

    - ``parts``: probability that the mask covers one face part (eyes, nose or mouth, equally likely)
      instead of the whole face;
    - ``shift`` / ``scale``: the source's largest shift (fraction of the crop) and scale change;
    - ``deform``: the mask's elastic displacement, in eye distances;
    - ``blur``: the range of the Gaussian blur that softens the mask's edge, in eye distances.

    The blend ratio is drawn from :data:`BLEND_RATIOS`.
    """

    parts: float = 0.25
    shift: float = 0.03
    scale: float = 0.05
    deform: float = 0.08
    blur: tuple[float, float] = (0.05, 0.2)

    def __post_init__(self):
        if not (0 <= self.parts <= 1 and 0 <= self.shift < 0.5 and 0 <= self.scale < 0.5 and self.deform >= 0
                and len(self.blur) == 2 and 0 < self.blur[0] <= self.blur[1]):
            raise ValueError(f"SelfBlend: parts must be in [0, 1], shift and scale in [0, 0.5), deform >= 0 and "
                             f"blur a range 0 < low <= high; got {self}")
        object.__setattr__(self, "blur", tuple(self.blur))
        object.__setattr__(self, "_source", source_pipeline(self.shift, self.scale))

    def mask(self, shape: tuple[int, ...], landmarks: np.ndarray, rng: np.random.Generator,
             region: str | None = None) -> np.ndarray:
        """A soft blend mask over ``region`` (one of :data:`REGIONS`; drawn when None): the region,
        elastically deformed, blurred, scaled to peak at a ratio from :data:`BLEND_RATIOS`. A part that
        lies outside the crop (landmarks of a face cut by the frame's edge) gives way to the face; all
        zeros when that is outside too."""
        if region is None:
            region = str(rng.choice(PARTS)) if rng.random() < self.parts else "face"
        if region not in REGIONS:
            raise ValueError(f"blend region must be one of {REGIONS}, not {region!r}")
        lm = np.asarray(landmarks, np.float64)
        area = PART_REGIONS[region](shape, lm) if region != "face" else None
        if area is None or not area.any():
            area = hull_mask(shape, lm, rng)
        eye_distance = max(float(np.linalg.norm(lm[1] - lm[0])), 1.0)
        mask = deform(area.astype(np.float32), rng, self.deform * eye_distance)
        sigma = rng.uniform(*self.blur) * eye_distance
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
        peak = float(mask.max())
        if peak <= 0:
            return mask
        mask = mask / peak * float(rng.choice(BLEND_RATIOS))
        mask[mask < 0.5 / 255] = 0  # weights too small to change a pixel: not part of the blend
        return mask

    def __call__(self, image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                 region: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(pseudo_fake, mask)``: ``image`` blended with its transformed copy through :meth:`mask`;
        uint8, the crop's size; equal to ``image`` wherever ``mask`` is 0."""
        mask = self.mask(image.shape, landmarks, rng, region)
        seed_pipeline(self._source, rng)
        source = self._source(image=image)["image"]
        weight = mask[..., None]
        blended = image * (1 - weight) + source * weight
        return np.clip(np.rint(blended), 0, 255).astype(np.uint8), mask
