import cv2
import numpy as np
import pytest

from preprocessing.geometry import box_iou, crop_faces, expand_box, grow_boxes, resize_and_pad


@pytest.mark.parametrize(
    "box, size, expected",
    [
        ((100, 100, 200, 300), (1000, 1000), (70, 40, 230, 360)),  # 30% of 100 wide, of 200 high
        ((10, 20, 110, 120), (1000, 1000), (0, 0, 140, 150)),  # clipped at the top-left
        ((900, 900, 990, 980), (1000, 950), (873, 876, 1000, 950)),  # clipped at the bottom-right
        ((100.4, 100.6, 199.5, 200.2), (1000, 1000), (70, 70, 230, 231)),  # snapped outward
        ((-100, -100, -50, -50), (640, 480), (0, 0, 0, 0)),  # wholly outside: empty
    ],
)
def test_expand_box_adds_30_percent_per_side_and_clips(box, size, expected):
    assert expand_box(box, 0.3, *size) == expected


def test_expanded_boxes_never_leave_the_frame():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        width, height = rng.integers(1, 2000, size=2)
        x1, y1 = rng.uniform(-500, 2500, size=2)
        w, h = rng.uniform(0, 800, size=2)
        ex1, ey1, ex2, ey2 = expand_box((x1, y1, x1 + w, y1 + h), rng.uniform(0, 1), width, height)
        assert 0 <= ex1 <= width and 0 <= ex2 <= width and 0 <= ey1 <= height and 0 <= ey2 <= height
        assert ex1 <= ex2 and ey1 <= ey2


def test_grow_boxes_keeps_centre_and_scales_size():
    grown = grow_boxes([[10, 20, 30, 60]], 0.5)[0]
    np.testing.assert_allclose(grown, [0, 0, 40, 80])


def test_crop_faces_cuts_the_expanded_box():
    frame = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3).astype(np.uint8)
    boxes = np.array([[100, 100, 200, 300], [600, 400, 640, 480]], np.float32)
    crops = crop_faces(frame, boxes, 0.3)
    assert crops[0].shape == (320, 160, 3)
    np.testing.assert_array_equal(crops[0], frame[40:360, 70:230])
    assert crops[1].shape == (480 - 376, 640 - 588, 3)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 1 / 3),
        ([0, 0, 10, 10], [0, 0, 5, 5], 0.25),
    ],
)
def test_box_iou(a, b, expected):
    assert box_iou([a], [b])[0, 0] == pytest.approx(expected)


@pytest.mark.parametrize("shape", [(100, 50, 3), (50, 100, 3), (400, 300, 3), (64, 64)])
def test_resize_and_pad_is_isotropic_and_centred(shape):
    image = np.full(shape, 200, np.uint8)
    out = resize_and_pad(image, 128)
    assert out.shape == (128, 128) + shape[2:]
    rows, cols = np.nonzero(out.reshape(128, 128, -1)[..., 0])
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert max(height, width) == 128
    assert height / width == pytest.approx(shape[0] / shape[1], rel=0.05)
    assert abs((rows.min() + rows.max()) / 2 - 63.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 63.5) <= 1


def test_resize_and_pad_uses_the_interpolation_it_is_given():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    area = resize_and_pad(image, 100, interpolation_down=cv2.INTER_AREA)
    nearest = resize_and_pad(image, 100, interpolation_down=cv2.INTER_NEAREST)
    assert not np.array_equal(area, nearest)
    np.testing.assert_array_equal(nearest, cv2.resize(image, (100, 100), interpolation=cv2.INTER_NEAREST))


def test_resize_and_pad_rejects_an_empty_image():
    with pytest.raises(ValueError, match="empty image"):
        resize_and_pad(np.zeros((0, 10, 3), np.uint8), 64)
