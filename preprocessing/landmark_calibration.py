"""LRNet's landmark calibration (Sun et al., CVPR 2021, §3; their ``demo/utils/landmark_utils.py``):
each frame's detected landmarks are merged with the previous frame's calibrated landmarks carried
forward by pyramidal Lucas-Kanade optical flow, through a Kalman filter per point.

Everything here works in pixels of the 400 x 400 face crops (:mod:`preprocessing.landmarks`), on
integer coordinates as the authors' pipeline does: the published LRNet weights were trained on its
output, so its parameters, its rounding (``rint`` of the flow, truncation of the merged point) and
its merge rule are kept exactly. Frames may be RGB or BGR: the flow treats channels alike.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

#: ``cv2.calcOpticalFlowPyrLK`` settings: 15 x 15 window, 3 pyramid levels above the image, at most
#: 10 iterations or a step under 0.03 px.
LK_PARAMS = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03))
#: A point whose forward-then-backward flow misses its start by more than this (crop pixels) is not
#: tracked: the detection is taken as it is.
FEEDBACK_LIMIT = 2.0
#: Variance added to each point's prediction per frame (the filter's process noise).
PROCESS_NOISE = 0.3


def flow(prev_face: np.ndarray, next_face: np.ndarray, start: np.ndarray, guess: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track ``start`` (n, 2) from ``prev_face`` to ``next_face`` (LK from the initial ``guess``, the
    next frame's detections) and back. Returns the forward points and the backward points, both
    rounded to integers, and whether both directions found each point (bool, n)."""
    forward, ok_forward, _ = cv2.calcOpticalFlowPyrLK(prev_face, next_face, start.astype(np.float32),
                                                      guess.astype(np.float32), flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                                                      **LK_PARAMS)
    backward, ok_backward, _ = cv2.calcOpticalFlowPyrLK(next_face, prev_face, forward, start.astype(np.float32),
                                                        flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **LK_PARAMS)
    found = (ok_forward.reshape(-1) != 0) & (ok_backward.reshape(-1) != 0)
    return np.rint(forward).astype(np.int64), np.rint(backward).astype(np.int64), found


class PointFilter:
    """One Kalman filter per 2-D point (``cv2.KalmanFilter``, state = the point, identity dynamics).
    The prediction moves each point by its optical flow (the control input); the measurement is the
    detector's point, whose variance is its motion relative to the flow's (``|detected step| / |flow
    step|``): a detector that jumps where the flow does not is trusted less. Points the flow lost
    skip their filter: they take the detection, their variance unchanged."""

    def __init__(self, n: int, process_noise: float = PROCESS_NOISE):
        self.filters = []
        for _ in range(n):
            kalman = cv2.KalmanFilter(2, 2, 2, cv2.CV_64F)
            kalman.transitionMatrix = np.eye(2)
            kalman.controlMatrix = np.eye(2)
            kalman.measurementMatrix = np.eye(2)
            kalman.processNoiseCov = process_noise * np.eye(2)
            kalman.errorCovPost = np.zeros((2, 2))
            self.filters.append(kalman)

    def step(self, tracked: np.ndarray, predicted: np.ndarray, detected_prev: np.ndarray, detected: np.ndarray,
             trusted: np.ndarray) -> np.ndarray:
        """Merge one frame. ``tracked``: the previous frame's calibrated points; ``predicted``: them
        moved by the flow; ``detected_prev``/``detected``: the detector's points in the previous and
        this frame; ``trusted``: points whose flow passed the checks. All (n, 2) integer crop pixels;
        returns the merged (n, 2) integers (truncated, as the authors' integer arrays did)."""
        flow_step = np.linalg.norm(predicted - tracked, axis=1)
        flow_step[flow_step == 0] = 1
        noise = np.linalg.norm(detected - detected_prev, axis=1) / flow_step
        merged = detected.copy()
        for p in np.flatnonzero(trusted):
            kalman = self.filters[p]
            kalman.statePost = tracked[p].reshape(2, 1).astype(np.float64)
            kalman.predict((predicted[p] - tracked[p]).reshape(2, 1).astype(np.float64))
            kalman.measurementNoiseCov = noise[p] * np.eye(2)
            merged[p] = kalman.correct(detected[p].reshape(2, 1).astype(np.float64)).reshape(2).astype(np.int64)
        return merged


def calibrate(faces: Sequence[np.ndarray], locations: np.ndarray) -> np.ndarray:
    """Calibrate one face track. ``faces``: its T face crops (uint8, all one size); ``locations``
    (T, 68, 2): the detector's landmarks in crop pixels (integers). Returns (T, 68, 2) int64: the
    first frame as detected, each later frame merged from the flow of the previous calibrated frame
    and its own detection."""
    locations = np.asarray(locations, np.int64)
    merged = [locations[0]]
    points = PointFilter(locations.shape[1])
    for i in range(1, len(locations)):
        forward, backward, found = flow(faces[i - 1], faces[i], merged[-1], locations[i])
        trusted = found & (np.linalg.norm(backward - merged[-1], axis=1) <= FEEDBACK_LIMIT)
        merged.append(points.step(merged[-1], forward, locations[i - 1], locations[i], trusted))
    return np.stack(merged)
