"""From sampled frames to face records: detect, link into tracks, crop with a margin."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import FaceDetector
from .follow import DETECT_EVERY, follow_faces
from .geometry import DEFAULT_MARGIN, expand_box
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


def find_faces(frames: Frames, detector: FaceDetector, margin: float = DEFAULT_MARGIN,
               detect_every: int = DETECT_EVERY) -> list[Face]:
    """Find and follow the faces of ``frames`` (see :func:`follow_faces`: MTCNN on the whole frame
    every ``detect_every``-th frame, the last, and where a track is lost; around each track's last
    box in between) and crop each with ``margin``. Detections that belong to no kept track (see
    :func:`link_tracks`) are dropped. Faces come out ordered by frame, then track.
    """
    followed = follow_faces(frames.images, detector, detect_every)
    faces = [_face(frames, position, int(track), det.boxes[k], det.scores[k], det.landmarks[k], margin)
             for position, (det, ids) in enumerate(zip(followed.detections, followed.tracks))
             for k, track in enumerate(ids)]
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
