"""Linking per-frame detections into face tracks, so two people in one video stay two tracks."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .geometry import box_iou, grow_boxes


def match_boxes(boxes: np.ndarray, last: np.ndarray, link_margin: float, min_iou: float) -> np.ndarray:
    """Index into ``last`` (tracks' latest boxes) for each of ``boxes`` (-1: none), by IoU of the
    boxes grown by ``link_margin`` per side, at least ``min_iou``, best overlaps first, one box per track."""
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


class Linker:
    """The running state of :func:`link_tracks`: each track's latest box and its face sides, fed
    one frame at a time (:meth:`link` matches boxes to tracks, :meth:`record` adds boxes whose track
    is already known), then :meth:`numbering` applies the drop rules."""

    def __init__(self, min_iou: float = 0.3, link_margin: float = 1.0):
        self.min_iou, self.link_margin = min_iou, link_margin
        self.last: list[np.ndarray] = []
        self.sides: list[list[float]] = []

    def link(self, boxes) -> np.ndarray:
        """Track ids (raw, in order of creation) of one frame's ``boxes``; unmatched boxes start tracks."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = match_boxes(boxes, np.asarray(self.last).reshape(-1, 4), self.link_margin, self.min_iou)
        for det in np.flatnonzero(ids == -1):
            ids[det] = len(self.last)
            self.last.append(boxes[det])
            self.sides.append([])
        self.record(boxes, ids)
        return ids

    def record(self, boxes, ids) -> None:
        """Add one frame's ``boxes`` to the tracks ``ids`` (existing raw ids, one box per track)."""
        for box, track in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), ids):
            self.last[track] = box
            self.sides[track].append(float(np.sqrt(np.prod(box[2:] - box[:2]))))

    def numbering(self, min_length: float = 0.2, min_size: float = 0.4) -> np.ndarray:
        """Final id of each raw id (-1: dropped), by :func:`link_tracks`'s rules."""
        if not self.last:
            return np.zeros(0, dtype=np.int64)
        lengths = np.array([len(s) for s in self.sides])
        median_side = np.array([np.median(s) for s in self.sides])
        kept = (lengths >= min_length * lengths.max()) & (median_side >= min_size * median_side.max())
        order = sorted(np.flatnonzero(kept), key=lambda t: (-lengths[t], t))
        renumber = np.full(len(self.last), -1, dtype=np.int64)
        renumber[order] = np.arange(len(order))
        return renumber


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
    linker = Linker(min_iou, link_margin)
    raw_ids = [linker.link(boxes) for boxes in frame_boxes]
    renumber = linker.numbering(min_length, min_size)
    return [renumber[ids] for ids in raw_ids]
