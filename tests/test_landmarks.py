"""68-point landmarks and LRNet's calibrated, normalised input (preprocessing.landmarks, landmark_calibration)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from preprocessing.landmark_calibration import calibrate
from preprocessing.landmarks import (LandmarkDetector, LandmarkSpec, LandmarkSpecError, face_crops, landmark_sequence,
                                     steady_shapes)
from tests.clips import first_frames

#: Frames read per demo video: enough for the calibration to settle, few enough to stay fast.
DEMO_FRAMES = 30
#: Mean distance allowed between our calibrated landmarks and the authors' (their FAN landmarks,
#: their calibration), in pixels of the 400 px face crop (a face is about 330 px wide there).
#: Measured on these frames: 7.1 (dfo_fake), 10.8 (dfo_real), 9.1 (ff_fake), 9.3 (ff_real) px.
DEMO_LIMIT_PX = 12.0


def face_boxes(frames, detector, every: int = 10) -> np.ndarray:
    """The face box of each frame (T, 4): MTCNN's most confident box on every ``every``-th frame
    (MTCNN costs seconds per frame on this loaded CPU), linearly interpolated between them."""
    keys = list(range(0, len(frames), every))
    found = detector([frames[i] for i in keys])
    assert all(len(d) for d in found), "a frame without a face"
    boxes = np.stack([d.boxes[np.argmax(d.scores)] for d in found])
    return np.stack([np.interp(np.arange(len(frames)), keys, boxes[:, j]) for j in range(4)], axis=1)


@pytest.fixture(scope="module")
def landmarker() -> LandmarkDetector:
    return LandmarkDetector()


def authors_calibration(faces, locations) -> np.ndarray:
    """The LK + Kalman step written from the authors' description (paper §3, their landmark_utils):
    per frame, LK (15 px window, 3 levels, 10 iterations / 0.03 px, the next detection as the first
    guess) forward from the last calibrated points and back; a point whose backward track misses
    its start by more than 2 px, or that either LK call lost, takes the detection. Otherwise a
    scalar Kalman filter per point: P += 0.3; R = |detection step| / |flow step| (a zero flow step
    counts 1); K = P / (P + R); point = flow + K (detection - flow), truncated to an integer;
    P = (1 - K) P."""
    params = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03),
                  flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    out = [np.array(locations[0], dtype=int)]
    variance = [0.0] * 68
    for i in range(1, len(locations)):
        start = out[-1].astype(np.float32)
        fwd, st1, _ = cv2.calcOpticalFlowPyrLK(faces[i - 1], faces[i], start, locations[i].astype(np.float32), **params)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(faces[i], faces[i - 1], fwd, start.copy(), **params)
        fwd, back = np.rint(fwd).astype(int), np.rint(back).astype(int)
        point = np.array(locations[i], dtype=int)
        for p in range(68):
            if np.hypot(*(back[p] - out[-1][p])) > 2 or not st1[p, 0] or not st2[p, 0]:
                continue
            flow_step = np.hypot(*(fwd[p] - out[-1][p])) or 1.0
            noise = np.hypot(*(locations[i][p] - locations[i - 1][p])) / flow_step
            variance[p] += 0.3
            gain = variance[p] / (variance[p] + noise)
            point[p] = [int(fwd[p][k] + gain * (locations[i][p][k] - fwd[p][k])) for k in range(2)]
            variance[p] = (1 - gain) * variance[p]
        out.append(point)
    return np.stack(out)


def test_calibration_equals_a_reimplementation_of_the_authors_step_on_a_real_clip(data_dir, detector, landmarker):
    frames = first_frames(data_dir / "ffpp/original_sequences/youtube/c40/videos/183.mp4", 30)
    boxes = face_boxes(frames, detector)
    raw = np.stack([landmarker(f, b[None])[0] for f, b in zip(frames, boxes)]).astype(int)
    faces, locations = face_crops(frames, *steady_shapes(raw))
    ours = calibrate(faces, locations)
    assert np.array_equal(ours, authors_calibration(faces, locations))
    moved = np.abs(ours - locations).max(axis=2)
    assert (moved > 0).mean() > 0.2, "the calibration left the detections as they were"


def test_landmarks_follow_a_planted_face_moved_by_a_known_shift(data_dir, detector, landmarker):
    face = first_frames(data_dir / "ffpp/original_sequences/youtube/c40/videos/183.mp4", 1)[0]
    box = face_boxes([face], detector)[0]
    x1, y1, x2, y2 = np.rint(box + [-30, -40, 30, 30]).astype(int)
    patch = face[y1:y2, x1:x2]
    shift = np.array([3, -2])
    frames, boxes = [], []
    for t in range(12):
        canvas = np.full((720, 960, 3), 90, np.uint8)
        left, top = np.array([150, 200]) + t * shift
        canvas[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
        frames.append(canvas)
        boxes.append(box - [x1, y1, x1, y1] + [left, top, left, top])
    raw = np.stack([landmarker(f, b[None])[0] for f, b in zip(frames, boxes)])
    steps = raw - raw[:1]
    expected = np.arange(12)[:, None, None] * shift
    assert np.abs(steps - expected).max() <= 1.0
    # two faces in one frame: one row of points per box, each on its own face
    twice = frames[0].copy()
    twice[200:200 + patch.shape[0], 560:560 + patch.shape[1]] = patch
    both = landmarker(twice, np.stack([boxes[0], boxes[0] + [410, 0, 410, 0]]))
    assert both.shape == (2, 68, 2) and np.abs(both[1] - both[0] - [410, 0]).max() <= 1.0
    # the crop follows the face, so its normalised landmarks stay put (1 crop px = 0.005)
    sequence = landmark_sequence(frames, np.stack(boxes), landmarker)
    assert np.abs(sequence - sequence[0]).max() <= 2 * 0.005
    # and it is the detection in its crop: 400 px crops of 1.2 x the face, so about +-0.8 at the jaw
    assert 0.6 < np.abs(sequence[0]).max() < 1.0


@pytest.mark.parametrize("video", ["dfo_fake", "dfo_real", "ff_fake", "ff_real"])
def test_landmarks_lie_near_the_authors_on_their_demo_videos(video, lrnet_dir, detector, landmarker):
    frames = first_frames(lrnet_dir / "demo_videos" / f"{video}.mp4", DEMO_FRAMES)
    ours = landmark_sequence(frames, face_boxes(frames, detector), landmarker)
    theirs = np.loadtxt(lrnet_dir / "demo_landmarks" / f"{video}.txt", max_rows=DEMO_FRAMES)
    assert ours.shape == theirs.shape == (DEMO_FRAMES, 136) and ours.dtype == np.float32
    distance = np.linalg.norm((ours - theirs).reshape(-1, 68, 2), axis=2) * 200
    assert distance.mean() < DEMO_LIMIT_PX, f"{video}: {distance.mean():.2f} crop px from the authors' landmarks"


def test_a_spec_round_trips_refuses_unknown_keys_and_rebuilds_the_pipeline(data_dir, detector):
    spec = LandmarkSpec(calibrate=False)
    assert LandmarkSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(LandmarkSpecError, match="smoothing"):
        LandmarkSpec.from_dict({"smoothing": 3})
    with pytest.raises(LandmarkSpecError, match="detector"):
        LandmarkSpec(detector="fan")
    frames = first_frames(data_dir / "ffpp/original_sequences/youtube/c40/videos/183.mp4", 4)
    boxes = face_boxes(frames, detector)
    landmarker = spec.build_detector()
    assert np.array_equal(spec.sequence(frames, boxes, landmarker),
                          landmark_sequence(frames, boxes, landmarker, calibrate=False))
