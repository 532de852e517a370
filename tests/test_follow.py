"""Following faces between full-frame detections (O-Net refinement, region searches), on real clips and real MTCNN."""
from functools import lru_cache

import numpy as np

from preprocessing.detect import FaceDetector
from preprocessing.follow import follow_faces, key_frames
from preprocessing.geometry import box_iou
from preprocessing.video import read_frames
from tests.conftest import find_data

YOUTUBE = "ffpp/original_sequences/youtube/c40/videos/"


@lru_cache(maxsize=None)
def frames_of(name: str, count: int) -> tuple:
    return tuple(read_frames(find_data() / name, count).images)


def shifted(image: np.ndarray, dx: int) -> np.ndarray:
    """``image`` moved ``dx`` pixels right, black where it left the frame (a camera pan)."""
    out = np.zeros_like(image)
    out[:, dx:] = image[:, : image.shape[1] - dx]
    return out


def assert_matches_full_detection(followed, images, detector, min_iou=0.8):
    for position, (found, full) in enumerate(zip(followed.detections, detector(list(images)))):
        assert len(found) == len(full), position
        assert box_iou(found.boxes, full.boxes).max(axis=1).min() >= min_iou, position


def test_key_frames_are_every_kth_and_the_last():
    assert key_frames(10, 4) == [0, 4, 8, 9] and key_frames(1, 8) == [0] and key_frames(0, 8) == []


def test_a_face_moving_across_the_frame_is_followed(data_dir, detector):
    """183's subject, panned 60 px right a frame (about a quarter of her face), is followed without
    another full search from the first frame to the last, her boxes where full detection puts them."""
    images = [shifted(image, 60 * i) for i, image in enumerate(frames_of(YOUTUBE + "183.mp4", 8))]
    followed = follow_faces(images, detector, every=8)
    assert followed.full == [0, 7]
    assert [ids.tolist() for ids in followed.tracks] == [[0]] * 8
    assert_matches_full_detection(followed, images, detector)
    positions, faces = followed.track(0)
    assert positions.tolist() == list(range(8)) and faces.landmarks.shape == (8, 5, 2)
    assert faces.boxes[-1, 0] - faces.boxes[0, 0] > 300  # she did cross the frame


def test_a_lost_track_triggers_a_full_detection(data_dir, detector):
    """183's subject jumps 400 px right between positions 3 and 4 (a cut): refinement from her last
    box finds no face and the region around it at most a cut one, so that frame is searched in full
    and she is followed on from there."""
    images = [shifted(image, 400 if i >= 4 else 0) for i, image in enumerate(frames_of(YOUTUBE + "183.mp4", 8))]
    followed = follow_faces(images, detector, every=8)
    assert followed.full == [0, 4, 7]
    assert [len(ids) for ids in followed.tracks] == [1] * 8
    assert_matches_full_detection(followed, images, detector)


def test_a_face_entering_between_key_frames_is_found_at_the_next(data_dir, detector):
    """Two people side by side, the second appearing at position 2: found at key frame 4, then
    followed; the two stay two tracks, each in its own half."""
    left, right = (frames_of(YOUTUBE + name, 8) for name in ("183.mp4", "599.mp4"))
    images = [np.hstack([a, b if i >= 2 else np.full_like(b, 90)]) for i, (a, b) in enumerate(zip(left, right))]
    followed = follow_faces(images, detector, every=4)
    assert followed.full == [0, 4, 7]
    first, second = followed.track(0), followed.track(1)
    assert first[0].tolist() == list(range(8)) and second[0].tolist() == [4, 5, 6, 7]
    assert np.all(first[1].boxes[:, 2] <= 1280) and np.all(second[1].boxes[:, 0] >= 1280)
    for position in range(4, 8):
        full = detector([images[position]])[0]
        assert len(full) == 2 and box_iou(followed.detections[position].boxes, full.boxes).max(axis=1).min() >= 0.8


def test_a_face_after_empty_frames_is_searched_for_in_full_until_found(data_dir, detector):
    """A video that opens on two empty frames: with nothing to follow, every frame is searched in full
    until the face appears (position 2), not only at the next key frame; then it is followed."""
    images = frames_of(YOUTUBE + "183.mp4", 8)
    images = [np.full_like(images[0], 90)] * 2 + list(images[2:])
    followed = follow_faces(images, detector, every=8)
    assert followed.full == [0, 1, 2, 7]
    assert [ids.tolist() for ids in followed.tracks] == [[], []] + [[0]] * 6


def test_known_faces_start_the_tracks(data_dir, detector):
    """Faces already known at the first frame are followed without a full search there."""
    images = frames_of(YOUTUBE + "183.mp4", 8)[:4]
    start = detector([images[0]])[0]
    followed = follow_faces(images, detector, every=8, start=start)
    assert followed.full == [3]
    assert followed.tracks[0].tolist() == [0]
    np.testing.assert_array_equal(followed.detections[0].boxes, start.boxes)


def pnet_pixels(detector: FaceDetector, search) -> tuple[int, list]:
    """Pixels P-Net was run on (all pyramid levels, all images) by ``search()``, and its result."""
    pixels = []
    hook = detector.mtcnn.pnet.register_forward_hook(lambda m, i, o: pixels.append(int(np.prod(i[0].shape[-3:]))))
    try:
        found = search()
    finally:
        hook.remove()
    return sum(pixels) // 3, found


def test_the_region_search_pyramid_is_a_small_fraction_of_the_full_one(data_dir, detector):
    first, second = frames_of(YOUTUBE + "183.mp4", 8)[:2]
    box = detector([first])[0].boxes[0]
    full_pixels, full = pnet_pixels(detector, lambda: detector([second])[0])
    region_pixels, (region,) = pnet_pixels(detector, lambda: detector.search_regions([second], [box]))
    assert region_pixels < full_pixels / 20  # about 4.7 thousand against 167 thousand (720p at half size)
    assert box_iou(region.boxes, full.boxes).max() > 0.8


def mtcnn_inputs(detector: FaceDetector, run) -> tuple[dict[str, list[tuple]], object]:
    """The input shapes of each of MTCNN's three networks while ``run()`` runs, and its result."""
    shapes = {name: [] for name in ("pnet", "rnet", "onet")}
    hooks = [getattr(detector.mtcnn, name).register_forward_hook(lambda m, i, o, name=name: shapes[name].append(tuple(i[0].shape)))
             for name in shapes]
    try:
        found = run()
    finally:
        for hook in hooks:
            hook.remove()
    return shapes, found


def test_a_steady_face_is_followed_by_o_net_alone(data_dir, detector):
    """Between the key frames of a real clip, 183's subject is followed by MTCNN's last stage from her
    last box: no P-Net or R-Net call beyond the key frames' one batch, one O-Net image per step, and
    boxes and landmarks where full detection puts them."""
    images = frames_of(YOUTUBE + "183.mp4", 8)
    shapes, followed = mtcnn_inputs(detector, lambda: follow_faces(images, detector, every=8))
    assert followed.full == [0, 7] and [ids.tolist() for ids in followed.tracks] == [[0]] * 8
    assert {shape[0] for shape in shapes["pnet"]} == {2} and len(shapes["rnet"]) == 1  # the key frames, one batch
    refined = [shape for shape in shapes["onet"] if shape[0] == 1]
    assert len(refined) == 6 * detector.refine_steps  # positions 1-6, one face, each step one O-Net call
    assert_matches_full_detection(followed, images, detector)
    for found, full in zip(followed.detections, detector(list(images))):
        assert np.abs(found.landmarks - full.landmarks).max() < 0.1 * (full.boxes[0, 2] - full.boxes[0, 0])


def test_refinement_confirms_only_a_settled_face(data_dir, detector):
    """O-Net refinement returns the face from a box near it once its steps settle, and nothing from a
    box on a wall of no face or in a blank frame: those are left to the region search."""
    first, second = frames_of(YOUTUBE + "183.mp4", 8)[:2]
    box = detector([first])[0].boxes[0]
    width = box[2] - box[0]
    on_wall = box + np.array([-2, 0, -2, 0], np.float32) * width  # two face widths left: background
    off = box + np.array([0.1, 0, 0.1, 0], np.float32) * width  # IoU 0.57 with her face in the second frame
    near, wall, moved = detector.refine(second, np.stack([box, on_wall, off]))
    (full,) = detector([second])
    for found in (near, moved):
        assert len(found) == 1 and box_iou(found.boxes, full.boxes).max() > 0.85 and found.scores[0] >= detector.min_score
    assert len(wall) == 0
    assert len(detector.refine(np.full_like(second, 90), box[None])[0]) == 0
    # one step from the box off her face still moves it by much: not settled, left to the region search
    assert len(FaceDetector(refine_steps=1).refine(second, off[None])[0]) == 0


def test_without_refinement_the_frames_between_are_region_searches(data_dir):
    """``refine_steps=0`` follows by region searches alone, as before refinement: one P-Net pyramid per
    position between the key frames."""
    images = frames_of(YOUTUBE + "183.mp4", 8)
    detector = FaceDetector(refine_steps=0)
    shapes, followed = mtcnn_inputs(detector, lambda: follow_faces(images, detector, every=8))
    assert followed.full == [0, 7] and [len(ids) for ids in followed.tracks] == [1] * 8
    largest = max(shape[-1] for shape in shapes["pnet"] if shape[0] == 1)  # a region's first pyramid level
    assert largest < 100 and shapes["pnet"].count((1, 3, largest, largest)) == 6  # one region pyramid per position
