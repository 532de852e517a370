"""Structured dropout: blank a part of a face crop chosen from its five MTCNN landmarks, or half the
image when a fake's difference mask shows enough of the manipulation stays visible.

Conventions: images are ``H x W x C`` uint8 RGB crops; ``landmarks`` are ``(5, 2)`` float ``(x, y)``
in crop pixels, in MTCNN order (left eye, right eye, nose, left and right mouth corner, "left" as
seen in the image); pixel ``[i, j]`` sits at the point ``(x=j, y=i)``. A *region* is an ``H x W``
bool array, True where pixels are blanked (set to 0). The region functions are pure;
:class:`StructuredDropout` holds the probabilities and draws from the generator it is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEFT_EYE, RIGHT_EYE, NOSE, LEFT_MOUTH, RIGHT_MOUTH = range(5)
#: Half-width of the eye band and of the nose line, in eye distances (the DFDC winner's ``w // 4``).
EYE_WIDTH = 0.25
#: Half-width of the mouth band, in mouth widths (the winner's ``w // 3``).
MOUTH_WIDTH = 1 / 3
#: The face as an ellipse: centre below the eye midpoint by this fraction of the eye-to-mouth
#: distance, semi-axes across the face in eye distances and along it in eye-to-mouth distances
#: (eyebrows to chin).
FACE_CENTRE, FACE_HALF_WIDTH, FACE_HALF_HEIGHT = 0.75, 1.0, 1.2
#: A difference-mask pixel counts as manipulated from this value up (the winner's 0.4 x 255).
MASK_THRESHOLD = 102

PARTS = ("eyes", "mouth", "nose")
#: Odds among the parts once part dropout fires (the winner's nested coin flips, 4 : 2 : 1).
PART_ODDS = (4 / 7, 2 / 7, 1 / 7)
FACE_SIDES = ("left", "right", "top", "bottom")
#: Ways to blank half the image: four halves and the two diagonal pairs of quadrants.
IMAGE_HALVES = ("top", "bottom", "left", "right", "diagonal", "antidiagonal")


def segment_distance(shape: tuple[int, ...], a, b) -> np.ndarray:
    """Distance in pixels from every pixel of an ``shape[:2]`` grid to the segment ``a``-``b``."""
    a = np.asarray(a, dtype=np.float32)
    d = np.asarray(b, dtype=np.float32) - a
    ys, xs = np.indices(shape[:2], dtype=np.float32)
    px, py = xs - a[0], ys - a[1]
    t = np.clip((px * d[0] + py * d[1]) / max(float(d @ d), 1e-12), 0.0, 1.0)
    return np.hypot(px - t * d[0], py - t * d[1])


def _eye_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE]))


def eye_band(shape: tuple[int, ...], landmarks, width: float = EYE_WIDTH) -> np.ndarray:
    """The band around the line joining the eyes, ``width`` eye distances to each side."""
    lm = np.asarray(landmarks, dtype=np.float32)
    return segment_distance(shape, lm[LEFT_EYE], lm[RIGHT_EYE]) <= width * _eye_distance(lm)


def mouth_band(shape: tuple[int, ...], landmarks, width: float = MOUTH_WIDTH) -> np.ndarray:
    """The band around the line joining the mouth corners, ``width`` mouth widths to each side."""
    lm = np.asarray(landmarks, dtype=np.float32)
    mouth = float(np.linalg.norm(lm[RIGHT_MOUTH] - lm[LEFT_MOUTH]))
    return segment_distance(shape, lm[LEFT_MOUTH], lm[RIGHT_MOUTH]) <= width * mouth


def nose_line(shape: tuple[int, ...], landmarks, width: float = EYE_WIDTH) -> np.ndarray:
    """The band around the line from the nose tip up to the eyes' midpoint, ``width`` eye distances wide."""
    lm = np.asarray(landmarks, dtype=np.float32)
    between_eyes = (lm[LEFT_EYE] + lm[RIGHT_EYE]) / 2
    return segment_distance(shape, lm[NOSE], between_eyes) <= width * _eye_distance(lm)


def face_axes(landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """The face ellipse: ``(centre, across, along, half_width, half_height)``; ``across`` is the unit
    vector from the left to the right eye, ``along`` the unit vector perpendicular to it pointing to
    the mouth; points and half-axes in crop pixels."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eyes = (lm[LEFT_EYE] + lm[RIGHT_EYE]) / 2
    mouth = (lm[LEFT_MOUTH] + lm[RIGHT_MOUTH]) / 2
    eye_distance = max(_eye_distance(lm), 1e-6)
    across = (lm[RIGHT_EYE] - lm[LEFT_EYE]) / eye_distance
    along = np.array([-across[1], across[0]])
    if (mouth - eyes) @ along < 0:
        along = -along
    eye_to_mouth = float(np.linalg.norm(mouth - eyes))
    centre = eyes + FACE_CENTRE * (mouth - eyes)
    return centre, across, along, FACE_HALF_WIDTH * eye_distance, FACE_HALF_HEIGHT * eye_to_mouth


def face_frame(shape: tuple[int, ...], landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pixel of an ``shape[:2]`` grid in the face's frame: ``(u, v, inside)``, its offsets from
    the ellipse's centre across the face (towards the right eye) and along it (towards the mouth), in
    crop pixels, and whether it lies inside the face ellipse (see :func:`face_axes`)."""
    centre, across, along, half_width, half_height = face_axes(landmarks)
    ys, xs = np.indices(shape[:2], dtype=np.float64)
    u = (xs - centre[0]) * across[0] + (ys - centre[1]) * across[1]
    v = (xs - centre[0]) * along[0] + (ys - centre[1]) * along[1]
    return u, v, (u / max(half_width, 1e-6)) ** 2 + (v / max(half_height, 1e-6)) ** 2 <= 1


def half_face(shape: tuple[int, ...], landmarks, side: str) -> np.ndarray:
    """One half of the face ellipse (see :func:`face_axes`), split through its centre: ``left``
    (the left eye's side), ``right``, ``top`` (the eyes' side) or ``bottom`` (the mouth's side)."""
    if side not in FACE_SIDES:
        raise ValueError(f"face side must be one of {FACE_SIDES}, not {side!r}")
    u, v, inside = face_frame(shape, landmarks)
    signed = {"left": -u, "right": u, "top": -v, "bottom": v}[side]
    return inside & (signed > 0)


def half_image(shape: tuple[int, ...], half: str) -> np.ndarray:
    """Half of the image, split at its centre row / column: see :data:`IMAGE_HALVES`."""
    if half not in IMAGE_HALVES:
        raise ValueError(f"image half must be one of {IMAGE_HALVES}, not {half!r}")
    height, width = shape[:2]
    cy, cx = height // 2, width // 2
    region = np.zeros((height, width), dtype=bool)
    if half == "top":
        region[:cy] = True
    elif half == "bottom":
        region[cy:] = True
    elif half == "left":
        region[:, :cx] = True
    elif half == "right":
        region[:, cx:] = True
    else:
        region[:cy, :cx] = region[cy:, cx:] = True
        if half == "antidiagonal":
            region = ~region
    return region


def visible_fraction(mask: np.ndarray, region: np.ndarray) -> float:
    """Fraction of the manipulated pixels of ``mask`` (8-bit, >= :data:`MASK_THRESHOLD`) left outside
    ``region``; 1.0 when the mask marks nothing."""
    manipulated = mask >= MASK_THRESHOLD
    total = int(np.count_nonzero(manipulated))
    return 1.0 if total == 0 else int(np.count_nonzero(manipulated & ~region)) / total


def blank(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with ``region`` set to 0."""
    out = image.copy()
    out[region] = 0
    return out


PART_REGIONS = {"eyes": eye_band, "mouth": mouth_band, "nose": nose_line}


@dataclass(frozen=True)
class StructuredDropout:
    """The winner's chain of dropouts, at most one per crop, probabilities as fields:

    - with landmarks, ``parts``: blank the eyes, the mouth or the nose (odds :data:`PART_ODDS`);
    - else, with landmarks, ``half_face``: blank one half of the face;
    - else ``half_image``: blank half the image, trying up to ``tries`` halves.

    For a fake, a region is only accepted when at least ``min_visible`` of its difference mask stays
    visible, so dropout never turns a fake into an unlabelled real; a fake without a mask never gets
    the half-image blackout (nothing shows it would stay a fake).
    """

    parts: float = 0.7
    half_face: float = 0.2
    half_image: float = 0.1
    min_visible: float = 0.3
    tries: int = 6

    def __call__(
        self,
        image: np.ndarray,
        rng: np.random.Generator,
        landmarks: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        fake: bool = False,
    ) -> tuple[np.ndarray, str]:
        """Return ``(image, name)``: the image with the chosen region blanked (a copy) and the
        dropout's name (one of :data:`PARTS`, ``half_face``, ``half_image``) or ``none``."""
        shape = image.shape
        has_landmarks = landmarks is not None and bool(np.isfinite(landmarks).all())

        def keeps_fake(region: np.ndarray) -> bool:
            return not fake or mask is None or visible_fraction(mask, region) >= self.min_visible

        if has_landmarks and rng.random() < self.parts:
            name = str(rng.choice(PARTS, p=PART_ODDS))
            region = PART_REGIONS[name](shape, landmarks)
        elif has_landmarks and rng.random() < self.half_face:
            name, region = "half_face", half_face(shape, landmarks, str(rng.choice(FACE_SIDES)))
        elif rng.random() < self.half_image and not (fake and mask is None):
            for _ in range(self.tries):
                region = half_image(shape, str(rng.choice(IMAGE_HALVES)))
                if keeps_fake(region):
                    return blank(image, region), "half_image"
            return image, "none"
        else:
            return image, "none"
        return (blank(image, region), name) if keeps_fake(region) else (image, "none")
