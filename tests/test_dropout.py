"""Structured dropout: each region covers what its landmarks say and little else; the chain fires at
its probabilities; a fake's difference mask always stays visible enough."""
import math

import numpy as np
import pandas as pd
import pytest

from training.dataset import LANDMARK_COLUMNS, read_crop, read_mask
from training.dropout import (
    EYE_WIDTH, FACE_SIDES, IMAGE_HALVES, MOUTH_WIDTH, PART_ODDS, PARTS, StructuredDropout, blank, eye_band,
    face_axes, half_face, half_image, mouth_band, nose_line, visible_fraction,
)

SHAPE = (240, 200, 3)


def face(eye_distance=60.0, roll_degrees=0.0, centre=(100.0, 110.0)):
    """Five landmarks of a frontal face: eyes ``eye_distance`` apart, rolled by ``roll_degrees``."""
    unit = np.array([[-0.5, 0.0], [0.5, 0.0], [0.02, 0.6], [-0.42, 1.05], [0.4, 1.05]])
    angle = math.radians(roll_degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (unit * eye_distance) @ rotation.T + np.asarray(centre) - np.array([0.0, 0.5 * eye_distance])


FACES = {
    "frontal": face(),
    "rolled 30": face(roll_degrees=30),
    "rolled -20": face(roll_degrees=-20, centre=(90, 120)),
    "small": face(eye_distance=24, centre=(60, 70)),
    "near the edge": face(centre=(40, 60)),
}


def inside(region, point) -> bool:
    x, y = np.rint(point).astype(int)
    return bool(region[y, x])


def stadium_area(length, radius):
    return 2 * radius * length + math.pi * radius**2


def fully_inside(landmarks):
    """Whether the regions lie wholly inside SHAPE, so their areas can be checked."""
    return landmarks.min() > 40


@pytest.fixture(scope="module")
def real_faces(prepared_dir):
    """(crop, landmarks, mask) of every crop of the prepared fixture."""
    table = pd.read_csv(prepared_dir / "crops.csv", keep_default_na=False)
    out = []
    for row in table.itertuples():
        crop = read_crop(prepared_dir / row.crop)
        mask = read_mask(prepared_dir / row.mask, crop.shape) if row.mask else None
        landmarks = np.array([getattr(row, c) for c in LANDMARK_COLUMNS], dtype=np.float32).reshape(5, 2)
        out.append((crop, landmarks, mask))
    return out


# --- part regions -------------------------------------------------------------------------------

PART_CASES = [
    # region function, landmarks it must cover, landmarks it must leave, segment ends, width factor
    (eye_band, [0, 1], [2, 3, 4], lambda lm: (lm[0], lm[1]), lambda lm: EYE_WIDTH * np.linalg.norm(lm[1] - lm[0])),
    (mouth_band, [3, 4], [0, 1, 2], lambda lm: (lm[3], lm[4]), lambda lm: MOUTH_WIDTH * np.linalg.norm(lm[4] - lm[3])),
    (nose_line, [2], [0, 1, 3, 4], lambda lm: (lm[2], (lm[0] + lm[1]) / 2),
     lambda lm: EYE_WIDTH * np.linalg.norm(lm[1] - lm[0])),
]


@pytest.mark.parametrize("case", FACES)
@pytest.mark.parametrize("region_fn, covered, left, ends, radius", PART_CASES,
                         ids=[c[0].__name__ for c in PART_CASES])
def test_part_region_covers_its_landmarks_and_little_else(case, region_fn, covered, left, ends, radius):
    landmarks = FACES[case]
    region = region_fn(SHAPE, landmarks)
    assert region.shape == SHAPE[:2] and region.dtype == bool
    for k in covered:
        assert inside(region, landmarks[k]), f"landmark {k} not blanked"
    for k in left:
        assert not inside(region, landmarks[k]), f"landmark {k} blanked too"
    a, b = ends(landmarks)
    expected = stadium_area(np.linalg.norm(b - a), radius(landmarks))
    if fully_inside(landmarks):
        assert region.sum() == pytest.approx(expected, rel=0.08)
    else:
        assert 0 < region.sum() <= expected * 1.08


def test_part_regions_on_real_crops(real_faces):
    for crop, landmarks, _ in real_faces:
        eyes, mouth, nose = (fn(crop.shape, landmarks) for fn in (eye_band, mouth_band, nose_line))
        assert inside(eyes, landmarks[0]) and inside(eyes, landmarks[1]) and not inside(eyes, landmarks[3])
        assert inside(mouth, landmarks[3]) and inside(mouth, landmarks[4]) and not inside(mouth, landmarks[0])
        assert inside(nose, landmarks[2]) and not inside(nose, landmarks[4])
        for region in (eyes, mouth, nose):  # a part, not the face: under a tenth of the crop
            assert 0 < region.mean() < 0.1


# --- half face ----------------------------------------------------------------------------------

SIDE_LANDMARKS = {  # side -> (landmarks inside it, landmarks outside it)
    "left": ([0, 3], [1, 4]),
    "right": ([1, 4], [0, 3]),
    "top": ([0, 1, 2], [3, 4]),
    "bottom": ([3, 4], [0, 1]),
}


@pytest.mark.parametrize("case", FACES)
@pytest.mark.parametrize("side", FACE_SIDES)
def test_half_face_covers_one_side_of_the_centre(case, side):
    landmarks = FACES[case]
    region = half_face(SHAPE, landmarks, side)
    centre, across, along, half_width, half_height = face_axes(landmarks)
    ys, xs = np.nonzero(region)
    offsets = np.stack([xs, ys], 1) - centre
    signed = {"left": -offsets @ across, "right": offsets @ across, "top": -offsets @ along, "bottom": offsets @ along}
    assert (signed[side] > 0).all()
    covered, left = SIDE_LANDMARKS[side]
    assert all(inside(region, landmarks[k]) for k in covered)
    assert not any(inside(region, landmarks[k]) for k in left)
    if fully_inside(landmarks):
        assert region.sum() == pytest.approx(math.pi * half_width * half_height / 2, rel=0.05)
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[side]
    assert not (region & half_face(SHAPE, landmarks, opposite)).any()


def test_half_face_rejects_an_unknown_side():
    with pytest.raises(ValueError, match="face side must be one of"):
        half_face(SHAPE, FACES["frontal"], "middle")


# --- half image and the difference mask -------------------------------------------------------

@pytest.mark.parametrize("shape", [(240, 200), (101, 77)])
def test_image_halves_are_halves(shape):
    regions = {half: half_image(shape, half) for half in IMAGE_HALVES}
    for a, b in (("top", "bottom"), ("left", "right"), ("diagonal", "antidiagonal")):
        assert (regions[a] ^ regions[b]).all(), f"{a} and {b} are not complements"
    for half, region in regions.items():
        assert region.mean() == pytest.approx(0.5, abs=0.02), half
    assert regions["top"][0].all() and not regions["top"][-1].any()


@pytest.mark.parametrize("covered, expected", [(slice(0, 0), 1.0), (slice(0, 10), 0.5), (slice(0, 20), 0.0)])
def test_visible_fraction(covered, expected):
    mask = np.zeros((20, 20), np.uint8)
    mask[:, 5:15] = 255
    mask[0, 0] = 101  # under the threshold: not manipulated
    region = np.zeros((20, 20), bool)
    region[covered] = True
    assert visible_fraction(mask, region) == pytest.approx(expected)


def test_a_mask_that_marks_nothing_is_fully_visible():
    assert visible_fraction(np.zeros((8, 8), np.uint8), np.ones((8, 8), bool)) == 1.0


# --- the chain ------------------------------------------------------------------------------------

def blanked(before, after):
    return (after == 0).all(axis=2) & (before != 0).any(axis=2)


def run(dropout, n, landmarks=None, mask=None, fake=False, shape=(48, 40, 3)):
    image = np.full(shape, 128, np.uint8)
    names = [dropout(image, np.random.default_rng(seed), landmarks, mask, fake)[1] for seed in range(n)]
    return pd.Series(names).value_counts(normalize=True)


def test_chain_fires_at_its_probabilities():
    n = 4000
    landmarks = face(eye_distance=16, centre=(20, 24))
    rates = run(StructuredDropout(), n, landmarks)
    expected = {part: 0.7 * odds for part, odds in zip(PARTS, PART_ODDS)}
    expected |= {"half_face": 0.3 * 0.2, "half_image": 0.3 * 0.8 * 0.1}
    expected["none"] = 1 - sum(expected.values())
    for name, p in expected.items():
        assert rates.get(name, 0) == pytest.approx(p, abs=4.5 * math.sqrt(p * (1 - p) / n)), name


def test_without_landmarks_only_the_half_image_fires():
    n = 4000
    rates = run(StructuredDropout(), n, landmarks=np.full((5, 2), np.nan))
    assert set(rates.index) == {"half_image", "none"}
    assert rates["half_image"] == pytest.approx(0.1, abs=4.5 * math.sqrt(0.09 / n))


@pytest.mark.parametrize("name, dropout, region_fn", [
    ("eyes", StructuredDropout(parts=1.0), lambda shape, lm: eye_band(shape, lm)),
    ("half_face", StructuredDropout(parts=0.0, half_face=1.0), None),
    ("half_image", StructuredDropout(parts=0.0, half_face=0.0, half_image=1.0), None),
])
def test_dropout_blanks_exactly_its_region(real_faces, name, dropout, region_fn):
    crop, landmarks, _ = real_faces[0]
    crop = np.maximum(crop, 1)  # so every blanked pixel shows
    for seed in range(40):
        out, fired = dropout(crop, np.random.default_rng(seed), landmarks)
        if fired != name:
            continue
        region = blanked(crop, out)
        assert (out[~region] == crop[~region]).all()
        if region_fn is not None:
            assert (region == region_fn(crop.shape, landmarks)).all()
        elif name == "half_face":
            assert any((region == half_face(crop.shape, landmarks, side)).all() for side in FACE_SIDES)
        else:
            assert any((region == half_image(crop.shape, half)).all() for half in IMAGE_HALVES)
        break
    else:
        pytest.fail(f"{name} never fired in 40 draws")


def test_difference_guided_blackout_keeps_a_fakes_mask_visible(real_faces):
    dropout = StructuredDropout(parts=0.0, half_face=0.0, half_image=1.0)
    fakes = [(np.maximum(c, 1), lm, m) for c, lm, m in real_faces if m is not None and (m >= 102).any()]
    assert fakes
    fired = 0
    for crop, _, mask in fakes:
        for seed in range(10):
            out, name = dropout(crop, np.random.default_rng(seed), mask=mask, fake=True)
            region = blanked(crop, out)
            assert visible_fraction(mask, region) >= dropout.min_visible
            fired += name == "half_image"
    assert fired > 0


def test_difference_guard_refuses_halves_that_hide_the_manipulation():
    mask = np.zeros((48, 40), np.uint8)
    mask[:, :8] = 255  # the manipulation sits in the left fifth: only halves that keep it are allowed
    dropout = StructuredDropout(parts=0.0, half_face=0.0, half_image=1.0, tries=50)
    image = np.full((48, 40, 3), 128, np.uint8)
    seen = set()
    for seed in range(60):
        out, name = dropout(image, np.random.default_rng(seed), mask=mask, fake=True)
        assert name == "half_image"
        region = blanked(image, out)
        assert visible_fraction(mask, region) >= 0.3
        seen.add(next(h for h in IMAGE_HALVES if (half_image(image.shape, h) == region).all()))
    assert seen == {"top", "bottom", "right", "diagonal", "antidiagonal"}  # never "left"


@pytest.mark.parametrize("fake, mask, expected", [
    (True, None, "none"),  # a fake without a mask: nothing shows the blackout would leave it fake
    (False, None, "half_image"),  # a real can lose any half
])
def test_half_image_needs_a_mask_on_fakes(fake, mask, expected):
    rates = run(StructuredDropout(parts=0.0, half_face=0.0, half_image=1.0), 20, fake=fake, mask=mask)
    assert list(rates.index) == [expected]


def test_part_dropout_that_would_hide_a_fakes_mask_is_skipped():
    landmarks = FACES["frontal"]
    mask = eye_band(SHAPE, landmarks).astype(np.uint8) * 255  # the manipulation is the eyes only
    dropout = StructuredDropout(parts=1.0)
    image = np.full(SHAPE, 128, np.uint8)
    names = {dropout(image, np.random.default_rng(s), landmarks, mask, fake=True)[1] for s in range(40)}
    assert "eyes" not in names and {"mouth", "nose"} <= names


def test_same_seed_same_dropout(real_faces):
    crop, landmarks, mask = real_faces[-1]
    first, second = (StructuredDropout()(crop, np.random.default_rng(7), landmarks, mask, True) for _ in range(2))
    assert first[1] == second[1] and (first[0] == second[0]).all()


def test_blank_copies():
    image = np.full((4, 4, 3), 9, np.uint8)
    region = np.zeros((4, 4), bool)
    region[0] = True
    out = blank(image, region)
    assert (out[0] == 0).all() and (out[1:] == 9).all() and (image == 9).all()
