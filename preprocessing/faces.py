"""From sampled frames to face records: detect, link into tracks, crop with a margin."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import FaceDetector
from .geometry import DEFAULT_MARGIN, expand_box
from .tracks import link_tracks
from .video import Frames


@dataclass
class Face:
    """One face in one frame. Coordinates are full-frame pixels; ``crop`` is RGB uint8.

    ``crop_box`` is the margin-grown, clipped box the crop was cut with, so a point ``(x, y)`` of
    the frame sits at ``(x - crop_box[0], y - crop_box[1])`` in the crop.
    """

    frame: int
    track: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    crop_box: tuple[int, int, int, int]
    crop: np.ndarray

    @property
    def crop_landmarks(self) -> np.ndarray:
        """The five landmarks in crop pixels."""
        return self.landmarks - np.asarray(self.crop_box[:2], dtype=np.float32)

    def to_record(self) -> dict:
        """JSON-ready description (everything but the pixels)."""
        return {
            "frame": int(self.frame),
            "track": int(self.track),
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 5),
            "landmarks": np.round(self.landmarks.astype(float), 2).tolist(),
            "crop_box": [int(v) for v in self.crop_box],
        }


def key_frames(count: int, every: int) -> list[int]:
    """Positions (0..count-1) of the frames detection runs on: every ``every``-th, and the last."""
    return sorted(set(range(0, count, every)) | {count - 1}) if count else []


def _fill_between(found: dict[int, tuple], positions: list[int]) -> dict[int, tuple]:
    """One track's ``(box, score, landmarks)`` at every position between its first and last
    detection: boxes and landmarks linearly interpolated, the score the lower of the two neighbours."""
    filled = dict(found)
    for a, b in zip(positions, positions[1:]):
        (box_a, score_a, lm_a), (box_b, score_b, lm_b) = found[a], found[b]
        for q in range(a + 1, b):
            t = (q - a) / (b - a)
            filled[q] = ((1 - t) * box_a + t * box_b, min(score_a, score_b), (1 - t) * lm_a + t * lm_b)
    return filled


def find_faces(frames: Frames, detector: FaceDetector, margin: float = DEFAULT_MARGIN,
               detect_every: int = 1) -> list[Face]:
    """Detect faces in ``frames``, link them into tracks and crop each with ``margin``.

    With ``detect_every`` k > 1, MTCNN runs on every k-th frame (and the last) only, and each
    track's box and landmarks are interpolated on the frames between two of its detections: about
    k times less detection for faces that move little between sampled frames. Detections that
    belong to no kept track (see :func:`link_tracks`) are dropped. Faces come out ordered by frame,
    then track.
    """
    keys = key_frames(len(frames), max(1, detect_every))
    detections = detector([frames.images[i] for i in keys])
    track_ids = link_tracks([d.boxes for d in detections])
    tracks: dict[int, dict[int, tuple]] = {}
    for position, det, ids in zip(keys, detections, track_ids):
        for k, track in enumerate(ids):
            if track >= 0:
                tracks.setdefault(int(track), {})[position] = (det.boxes[k], float(det.scores[k]), det.landmarks[k])
    faces = [_face(frames, position, track, box, score, landmarks, margin) for track, found in tracks.items()
             for position, (box, score, landmarks) in _fill_between(found, sorted(found)).items()]
    return sorted(faces, key=lambda f: (f.frame, f.track))


def every_face(frames: Frames, detector: FaceDetector, margin: float = DEFAULT_MARGIN,
               per_frame: int | None = None) -> list[Face]:
    """Every face MTCNN finds in every frame, cropped with ``margin``, in frame order and MTCNN's
    order within a frame, all in track 0: no linking, no dropping (the DFDC winner's kernel); with
    ``per_frame``, only that many of each frame's faces, the most confident first (Polimi kept one)."""
    faces = []
    for position, det in enumerate(detector(frames.images)):
        # most confident first, the later of tied scores first: Polimi's argsort(scores)[::-1]
        order = np.argsort(det.scores, kind="stable")[::-1][:per_frame] if per_frame else range(len(det.scores))
        faces += [_face(frames, position, 0, det.boxes[k], det.scores[k], det.landmarks[k], margin) for k in order]
    return faces


def _face(frames: Frames, position: int, track: int, box, score, landmarks, margin: float) -> Face:
    image = frames.images[position]
    x1, y1, x2, y2 = crop_box = expand_box(box, margin, image.shape[1], image.shape[0])
    return Face(int(frames.indices[position]), track, np.asarray(box, np.float32), float(score),
                np.asarray(landmarks, np.float32), crop_box, image[y1:y2, x1:x2].copy())
