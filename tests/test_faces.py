"""Real MTCNN on real clips: scale rule, boxes, landmarks, tracks and margins."""
from functools import lru_cache

import numpy as np
import pytest

from preprocessing.detect import MTCNN_MIN_FACE, FaceDetector, detection_scale, min_face_size
from preprocessing.faces import find_faces
from preprocessing.geometry import box_iou, expand_box
from preprocessing.tracks import link_tracks
from preprocessing.video import Frames, read_frames
from tests.clips import sideways_copy
from tests.conftest import find_data

DATA = find_data()
FFPP_CLIPS = sorted(p.relative_to(DATA).as_posix() for p in (DATA / "ffpp").rglob("*.mp4")) if DATA else [None]
DFDC_CLIP = "dfdc/train_sample_videos/abqwwspghj.mp4"
#: Clips whose subject is truly out of view in some sampled frames, and the share they must reach.
PARTLY_OUT_OF_VIEW = {
    "01__kitchen_pan.mp4": 0.9,  # the camera pans onto her: first frames show only her shoulder
    "09__walking_down_street_outside_angry.mp4": 0.9,  # ~10 px tall far away, then walks out of frame
}


@lru_cache(maxsize=None)
def faces_of(path: str, n: int = 32) -> tuple[Frames, tuple]:
    """Frames (without pixels) and faces of one clip, computed once per session."""
    frames = read_frames(path, n)
    faces = tuple(find_faces(frames, FaceDetector()))
    frames.images = [im[:1, :1] for im in frames.images]  # keep shapes' channels, drop pixels
    return frames, faces


@pytest.mark.parametrize("size, scale", [((200, 150), 2.0), ((299, 299), 2.0), ((300, 200), 1.0),
                                         ((1000, 700), 1.0), ((1280, 720), 0.5), ((1900, 1080), 0.5),
                                         ((1920, 1080), 0.33), ((1080, 1920), 0.33), ((7680, 4320), 0.33)])
def test_detection_scale_follows_the_long_side(size, scale):
    assert detection_scale(size[1], size[0]) == scale


@pytest.mark.parametrize("clip", FFPP_CLIPS)
def test_every_ffpp_clip_has_one_face_track_in_nearly_every_frame(data_dir, clip):
    frames, faces = faces_of(str(data_dir / clip))
    assert len(frames) == 32
    share = len({f.frame for f in faces}) / len(frames)
    assert share >= PARTLY_OUT_OF_VIEW.get(clip.rsplit("/", 1)[-1], 0.95), f"face in {share:.0%} of frames"
    assert {f.track for f in faces} == {0}
    assert len(faces) == len({f.frame for f in faces}), "one face per frame"


def test_fakes_are_cropped_where_their_originals_are(data_dir, labels):
    """FF++ fakes are frame-aligned with their originals, which training preparation relies on.

    MTCNN's box moves a little on a swapped face: measured here, median IoU 0.84-0.96 per pair,
    worst frame 0.76.
    """
    clips = labels[(labels["kind"] == "video") & labels["path"].str.startswith("ffpp/")]
    originals = clips[clips["label"] == "REAL"]
    originals = originals.set_index(originals["path"].str.rsplit("/", n=1).str[-1])
    checked = 0
    for fake in clips[clips["label"] == "FAKE"].itertuples():
        original = originals.loc[fake.original] if fake.original in originals.index else None
        if original is None or original["frame_count"] != fake.frame_count:
            continue  # not frame-aligned in this sample
        boxes = [{f.frame: f.box for f in faces_of(p)[1]} for p in (fake.file, original["file"])]
        common = sorted(set(boxes[0]) & set(boxes[1]))
        ious = np.array([box_iou(boxes[0][i], boxes[1][i])[0, 0] for i in common])
        assert len(common) >= 30, fake.path
        assert np.median(ious) >= 0.8 and ious.min() >= 0.7, (fake.path, ious.round(2))
        checked += 1
    assert checked >= 15


def assert_upright_faces(frames: Frames, faces: list) -> None:
    height, width = frames.images[0].shape[:2]
    assert len({f.frame for f in faces}) == len(frames)
    for face in faces:
        box, (left_eye, right_eye, nose, mouth_left, mouth_right) = face.box, face.landmarks
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
        assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
        assert np.all((face.landmarks >= box[:2]) & (face.landmarks <= box[2:]))


def test_dfdc_1080p_faces_are_upright_at_full_resolution(data_dir, detector):
    frames = read_frames(data_dir / DFDC_CLIP, 4)
    assert frames.images[0].shape == (1080, 1920, 3)
    faces = find_faces(frames, detector)
    assert_upright_faces(frames, faces)
    sides = np.array([[f.box[2] - f.box[0], f.box[3] - f.box[1]] for f in faces])
    assert sides.min() > 100  # ~150 px wide in the 1080p frame: full-resolution pixels, not the detector's


def test_a_portrait_phone_clip_comes_out_upright(data_dir, detector, tmp_path):
    frames = read_frames(data_dir / DFDC_CLIP, 3)
    rotated = read_frames(sideways_copy(frames, tmp_path / "portrait.mp4"), 3)
    assert rotated.images[0].shape == (1080, 1920, 3)  # shown landscape, as recorded
    assert_upright_faces(rotated, find_faces(rotated, detector))


def test_two_people_side_by_side_are_two_tracks(data_dir, detector):
    left, right = (read_frames(data_dir / "ffpp/original_sequences/youtube/c40/videos" / name, 6)
                   for name in ("183.mp4", "599.mp4"))
    images = [np.hstack([a, b]) for a, b in zip(left.images, right.images)]
    faces = find_faces(Frames("pair", left.indices, images, left.frame_count, left.fps), detector)
    tracks = {t: [f.box for f in faces if f.track == t] for t in {f.track for f in faces}}
    assert sorted(tracks) == [0, 1] and all(len(b) == 6 for b in tracks.values())
    halves = sorted(np.mean([b[0] < 1280 for b in boxes]) for boxes in tracks.values())
    assert halves == [0.0, 1.0]  # each track stays in its own half
    assert all(np.all(np.array(b)[:, 2] <= 1280) or np.all(np.array(b)[:, 0] >= 1280) for b in tracks.values())


def test_crops_carry_the_30_percent_margin_and_their_landmarks(data_dir):
    frames, faces = faces_of(str(data_dir / "ffpp/original_sequences/youtube/c40/videos/183.mp4"))
    for face in faces:
        assert face.crop_box == expand_box(face.box, 0.3, 1280, 720)
        x1, y1, x2, y2 = face.crop_box
        assert face.crop.shape == (y2 - y1, x2 - x1, 3)
        width, height = face.box[2] - face.box[0], face.box[3] - face.box[1]
        if x1 > 0 and x2 < 1280 and y1 > 0 and y2 < 720:  # not clipped: 30% on each side
            assert face.crop.shape[1] == pytest.approx(1.6 * width, abs=2)
            assert face.crop.shape[0] == pytest.approx(1.6 * height, abs=2)
        lm = face.crop_landmarks
        assert np.all((lm >= 0) & (lm < [face.crop.shape[1], face.crop.shape[0]]))


def pyramid_levels(detector: FaceDetector, image: np.ndarray) -> tuple[int, list]:
    """P-Net calls (one per pyramid level) and the detections of one frame."""
    calls = []
    hook = detector.mtcnn.pnet.register_forward_hook(lambda *_: calls.append(1))
    try:
        found = detector([image])
    finally:
        hook.remove()
    return len(calls), found[0]


def test_the_pyramid_starts_at_the_smallest_face_kept(data_dir):
    """``--min-size`` sets MTCNN's ``min_face_size``: fewer levels, and a face just above it is still found."""
    image = read_frames(data_dir / "ffpp/original_sequences/youtube/c40/videos/183.mp4", 1).images[0]
    height, width = image.shape[:2]
    default_levels, found = pyramid_levels(FaceDetector(), image)
    side = float(min(found.boxes[0, 2] - found.boxes[0, 0], found.boxes[0, 3] - found.boxes[0, 1]))
    limit = side / 1.05 / min(height, width)  # the face is 5% above the smallest kept
    assert min_face_size(limit, height, width) > 2 * MTCNN_MIN_FACE  # the test means something
    levels, near_limit = pyramid_levels(FaceDetector(min_size=limit), image)
    assert len(near_limit) == 1 and box_iou(near_limit.boxes, found.boxes)[0, 0] > 0.9
    assert levels <= default_levels - 2  # each level is 0.709 of the last: 2+ levels per doubling
    assert min_face_size(0.015, 1080, 1920) == MTCNN_MIN_FACE  # never deeper than MTCNN's default


def test_batched_and_looped_detection_agree(data_dir):
    images = read_frames(data_dir / "ffpp/original_sequences/youtube/c40/videos/469.mp4", 6).images
    looped, batched = FaceDetector(batch_size=1)(images), FaceDetector(batch_size=6)(images)
    for a, b in zip(looped, batched):
        assert len(a) == len(b) == 1
        assert box_iou(a.boxes, b.boxes)[0, 0] > 0.98


def test_a_frame_without_a_face_gives_empty_arrays(detector):
    (empty,) = detector([np.full((360, 640, 3), 90, np.uint8)])
    assert empty.boxes.shape == (0, 4) and empty.scores.shape == (0,) and empty.landmarks.shape == (0, 5, 2)


def _boxes(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def test_link_tracks_keeps_two_people_apart_across_a_missed_frame():
    frames = [_boxes([100 + 5 * i, 100, 200 + 5 * i, 220], [600 - 5 * i, 90, 700 - 5 * i, 210]) for i in range(8)]
    frames[3] = frames[3][1:]  # the first face is missed once
    ids = link_tracks(frames)
    # the second face, seen in all 8 frames, is the longest track: 0
    assert [i.tolist() for i in ids[:3]] == [[1, 0]] * 3 and ids[3].tolist() == [0]
    assert [i.tolist() for i in ids[4:]] == [[1, 0]] * 4


def test_link_tracks_follows_fast_motion_only_with_grown_boxes():
    frames = [_boxes([100 + 80 * i, 100, 200 + 80 * i, 220]) for i in range(6)]  # 0.8 box widths a step
    assert {int(i[0]) for i in link_tracks(frames)} == {0}
    assert len({int(i[0]) for i in link_tracks(frames, link_margin=0.0, min_length=0)}) == 6


@pytest.mark.parametrize(
    "extra, reason",
    [({4: [500, 300, 600, 400]}, "a one-frame false positive"),
     ({i: [600, 100, 630, 130] for i in range(10)}, "a background face under 40% of the subject's size")],
)
def test_link_tracks_drops_spurious_tracks(extra, reason):
    frames = [_boxes([100, 100, 200, 220], *([extra[i]] if i in extra else [])) for i in range(10)]
    ids = link_tracks(frames)
    assert all(i[0] == 0 for i in ids), reason
    assert all(i[1] == -1 for i in ids if len(i) == 2), reason


def test_link_tracks_on_no_detections():
    assert [i.tolist() for i in link_tracks([_boxes(), _boxes()])] == [[], []]
