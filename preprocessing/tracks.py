"""Linking per-frame detections into face tracks, so two people in one video stay two tracks."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .geometry import box_iou, grow_boxes


def _match(boxes: np.ndarray, last: np.ndarray, link_margin: float, min_iou: float) -> np.ndarray:
    """Track index for each box (-1: none), best overlaps first, one box per track."""
    ids = np.full(len(boxes), -1, dtype=np.int64)
    if len(boxes) == 0 or len(last) == 0:
        return ids
    iou = box_iou(grow_boxes(boxes, link_margin), grow_boxes(last, link_margin))
    taken = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        det, track = np.unravel_index(flat, iou.shape)
        if iou[det, track] < min_iou:
            break
        if ids[det] == -1 and track not in taken:
            ids[det] = track
            taken.add(track)
    return ids


def link_tracks(
    frame_boxes: Sequence[np.ndarray],
    min_iou: float = 0.3,
    link_margin: float = 1.0,
    min_length: float = 0.2,
    min_size: float = 0.4,
) -> list[np.ndarray]:
    """Give every detection a track id; returns one int array per frame, aligned with its boxes.

    Frames are visited in order and each detection joins the track whose latest box overlaps it
    most, both boxes grown by ``link_margin`` per side so that a face that moved between two
    sampled frames still overlaps its earlier box (IoU >= ``min_iou``; best pairs first, one box
    per track and frame). A track whose face was missed in some frames carries on. Unmatched
    detections start new tracks.

    Then two rules drop whole tracks (their detections get id -1):

    - ``min_length``: seen in fewer than this fraction of the longest track's frames (a passing
      false positive);
    - ``min_size``: median face side below this fraction of the largest track's (a bystander far
      behind the subject, a face on a poster or a screen).

    Kept tracks are numbered 0, 1, ... from the longest down (ties by first appearance).
    """
    last: list[np.ndarray] = []
    raw_ids = []
    sides: list[list[float]] = []
    for boxes in frame_boxes:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = _match(boxes, np.asarray(last).reshape(-1, 4), link_margin, min_iou)
        for det in np.flatnonzero(ids == -1):
            ids[det] = len(last)
            last.append(boxes[det])
            sides.append([])
        for det, track in enumerate(ids):
            last[track] = boxes[det]
            sides[track].append(float(np.sqrt(np.prod(boxes[det, 2:] - boxes[det, :2]))))
        raw_ids.append(ids)
    if not last:
        return raw_ids

    lengths = np.array([len(s) for s in sides])
    median_side = np.array([np.median(s) for s in sides])
    kept = (lengths >= min_length * lengths.max()) & (median_side >= min_size * median_side.max())
    order = sorted(np.flatnonzero(kept), key=lambda t: (-lengths[t], t))
    renumber = np.full(len(last), -1, dtype=np.int64)
    renumber[order] = np.arange(len(order))
    return [renumber[ids] for ids in raw_ids]
