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


def find_faces(frames: Frames, detector: FaceDetector, margin: float = DEFAULT_MARGIN) -> list[Face]:
    """Detect faces in ``frames``, link them into tracks and crop each with ``margin``.

    Detections that belong to no kept track (see :func:`link_tracks`) are dropped. Faces come out
    ordered by frame, then track.
    """
    detections = detector(frames.images)
    track_ids = link_tracks([d.boxes for d in detections])
    faces = []
    for index, image, det, ids in zip(frames.indices, frames.images, detections, track_ids):
        height, width = image.shape[:2]
        for k in np.argsort(ids, kind="stable"):
            if ids[k] < 0:
                continue
            x1, y1, x2, y2 = crop_box = expand_box(det.boxes[k], margin, width, height)
            faces.append(
                Face(int(index), int(ids[k]), det.boxes[k], float(det.scores[k]), det.landmarks[k],
                     crop_box, image[y1:y2, x1:x2].copy())
            )
    return faces
