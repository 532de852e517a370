"""A video's runs of consecutive frames -> one landmark sequence per face followed through a run.

A sequence model (LRNet) reads the landmarks of one face over consecutive frames at the video's own
rate. :func:`read_frames` reads the runs (``Frames.runs``) in the decode that serves the frame
models; here each run's faces are found and followed (:func:`find_faces`: MTCNN on the run's first
and last frames, the faces followed between), and each face present in every frame of a run
becomes one sequence, made as a :class:`LandmarkSpec` says.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detect import FaceDetector
from .faces import find_faces
from .landmarks import LandmarkDetector, LandmarkSpec
from .video import Frames


@dataclass
class FaceSequence:
    """One face followed through one run: ``run`` (its index in ``Frames.runs``), ``track`` (the
    face's track in that run, 0 the longest), ``frames`` (stream indices), ``landmarks`` (T, 136)
    float32, the sequence model's input as its :class:`LandmarkSpec` makes it."""

    run: int
    track: int
    frames: np.ndarray
    landmarks: np.ndarray


def run_sequences(frames: Frames, detector: FaceDetector, landmarks: dict[LandmarkSpec, LandmarkDetector]
                  ) -> dict[LandmarkSpec, list[FaceSequence]]:
    """Per landmark spec (with its detector, ``landmarks``): the sequence of every face followed
    through a whole run of ``frames.runs``, in run order, then track order. A face missing from any
    frame of a run (lost, or entering late) gives no sequence for that run."""
    out: dict[LandmarkSpec, list[FaceSequence]] = {spec: [] for spec in landmarks}
    for number, run in enumerate(frames.runs):
        faces = find_faces(run, detector, detect_every=max(1, len(run) - 1))
        for track in sorted({face.track for face in faces}):
            found = [face for face in faces if face.track == track]
            if len(found) < len(run):
                continue
            boxes = np.stack([face.box for face in found])
            for spec, landmarker in landmarks.items():
                out[spec].append(FaceSequence(number, track, run.indices.copy(),
                                              spec.sequence(run.images, boxes, landmarker)))
    return out
