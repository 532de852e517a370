"""Following faces through a video's frames: a full-frame search only where it is needed.

MTCNN's full-frame search costs its whole image pyramid; between two frames a face barely moves
and keeps its size. So :func:`follow_faces` searches the whole frame at key frames only and, in
between, follows each track from its last box: MTCNN's last stage alone (:meth:`FaceDetector.refine`),
else a small region around the box (:meth:`FaceDetector.search_regions`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .detect import Detections, FaceDetector
from .geometry import box_iou
from .tracks import Linker, match_boxes

#: Full-frame detection on every this many-th frame by default (``--detect-every``): chosen by
#: measurement (``python -m tests.benchmarks.bench_follow``, docs/benchmarks.md).
DETECT_EVERY = 8


def key_frames(count: int, every: int) -> list[int]:
    """Positions (0..count-1) searched in full: every ``every``-th, and the last."""
    return sorted(set(range(0, count, every)) | {count - 1}) if count else []


@dataclass
class Followed:
    """What :func:`follow_faces` found, by frame position (0..n-1 in the order the frames were given).

    ``detections[i]``: the faces kept in frame ``i`` (boxes xyxy and landmarks ``(x, y)`` in that
    frame's pixels, MTCNN's five points, MTCNN's probability); ``tracks[i]``: the track id of each
    (0, 1, ... from the longest track down, as :func:`link_tracks` numbers them); ``full``: the
    positions where the whole frame was searched.
    """

    detections: list[Detections]
    tracks: list[np.ndarray]
    full: list[int]

    def track(self, track: int) -> tuple[np.ndarray, Detections]:
        """The positions where ``track`` was found and its box, score and landmarks there."""
        hits = [(i, np.flatnonzero(ids == track)) for i, ids in enumerate(self.tracks)]
        hits = [(i, k) for i, k in hits if len(k)]
        return np.array([i for i, _ in hits], np.int64), _join(*(self.detections[i].select(k) for i, k in hits))


def follow_faces(frames: Sequence[np.ndarray], detector: FaceDetector, every: int = DETECT_EVERY,
                 start: Detections | None = None) -> Followed:
    """Find and follow the faces of one video's RGB ``frames`` (one size, in time order: sampled
    frames spread over a video or a run of consecutive ones).

    The whole frame is searched (the key frames, in one batch) at position 0, every ``every``-th
    position and the last; elsewhere, each track followed into the previous frame is refined from
    its last box by MTCNN's last stage alone (:meth:`FaceDetector.refine`), and where that does not
    confirm a face, searched for only in :meth:`FaceDetector.search_regions`' square around the
    box, all tracks of a frame in one batch. A track the region search loses makes that frame a
    full search too; one that the full search does not find either is still searched for around
    its last box on the frames that follow (a face missed once, turned away for a moment), without
    another full search, up to the next key frame.
    A frame where no face is followed (none found yet, or all gone) is searched in full too, so a
    video whose first frames show no face costs what a full search of every frame costs until one
    appears. Otherwise a face that enters between key frames is found at the next key frame.
    ``every=1`` searches every frame in full.

    ``start``: faces already known at position 0 (frame pixels), which then is not searched; the
    id the ``i``-th of them got is ``tracks[0][i]`` (-1 if its track was dropped). Tracks are
    linked and dropped as :func:`link_tracks` does (a passing false positive, a far bystander).
    """
    count = len(frames)
    keys = key_frames(count, max(1, every))
    searched = [k for k in keys if not (k == 0 and start is not None)]
    key_found = dict(zip(searched, detector([frames[k] for k in searched])))
    if start is not None and count:
        key_found[0] = start
    linker = Linker()
    full, detections, raw_ids = list(searched), [], []
    followed: dict[int, np.ndarray] = {}  # raw track id -> its box in the frame before
    missing: dict[int, np.ndarray] = {}  # raw track id -> its last box, for tracks lost since the last key frame
    for position, frame in enumerate(frames):
        if position in key_found:
            found = key_found[position]
            ids = linker.link(found.boxes)
            more, more_ids, _ = _search(detector, frame, {t: box for t, box in {**followed, **missing}.items()
                                                          if t not in ids}, found.boxes, linker)
            found, ids = _join(found, more), np.concatenate([ids, more_ids])
            linker.record(more.boxes, more_ids)
            missing = {}
        else:
            found, ids, lost = _search(detector, frame, {**followed, **missing}, np.zeros((0, 4)), linker)
            # nothing to follow (no face yet, or all gone) or a followed face lost: search the whole frame
            if not (followed or missing) or lost & followed.keys():
                full.append(position)
                found = detector([frame])[0]
                ids = linker.link(found.boxes)
            else:
                linker.record(found.boxes, ids)
            missing = {t: box for t, box in {**followed, **missing}.items() if t not in ids}
        followed = {int(t): box for t, box in zip(ids, found.boxes)}
        detections.append(found)
        raw_ids.append(ids)
    numbering = linker.numbering()
    final = [numbering[ids] for ids in raw_ids]
    return Followed([d.select(ids >= 0) for d, ids in zip(detections, final)],
                    [ids[ids >= 0] for ids in final], sorted(full))


def _search(detector: FaceDetector, frame: np.ndarray, tracks: dict[int, np.ndarray], taken: np.ndarray,
            linker: Linker) -> tuple[Detections, np.ndarray, set[int]]:
    """Each of ``tracks`` (raw id -> last box) followed into ``frame``: refined from its last box
    (:meth:`FaceDetector.refine`), else, where that does not confirm a face, searched for in the
    region around it. Returns the faces found (one per track at most: the one ``linker`` would link
    to its last box), their track ids, and the tracks lost: nothing found, or a face cut by its
    region's edge (it moved too far to be seen whole, so its box is unreliable). A face that
    overlaps one already ``taken`` or claimed by an earlier track (IoU > 0.5: two tracks on one
    face) is left out."""
    parts, ids, lost = [], [], set()
    if tracks:
        refined = dict(zip(tracks, detector.refine(frame, np.array(list(tracks.values())))))
        unconfirmed = [track for track, found in refined.items() if not len(found)]
        searched = dict(zip(unconfirmed, detector.search_regions([frame] * len(unconfirmed),
                                                                 [tracks[track] for track in unconfirmed])))
        for track, box in tracks.items():
            found = searched.get(track, refined[track])
            linked = match_boxes(found.boxes, np.asarray(box)[None], linker.link_margin, linker.min_iou)
            match = np.flatnonzero(linked == 0)
            if len(match) == 0 or (track in searched and _at_edge(found.boxes[match[0]], detector.region(box), frame.shape)):
                lost.add(track)
                continue
            face = found.select(match)
            if len(taken) == 0 or box_iou(face.boxes, taken).max() <= 0.5:
                parts.append(face)
                ids.append(track)
                taken = np.concatenate([np.reshape(taken, (-1, 4)), face.boxes])
    return _join(*parts), np.array(ids, np.int64), lost


def _at_edge(box: np.ndarray, region: tuple[int, int, int], shape: tuple, slack: float = 0.02) -> bool:
    """Whether ``box`` reaches within ``slack`` of the region's side of an edge of the region that
    lies inside the frame (a face the region cut)."""
    x0, y0, side = region
    height, width = shape[:2]
    pad = slack * side
    end = x0 + side, y0 + side
    return bool((box[0] < x0 + pad and x0 > 0) or (box[1] < y0 + pad and y0 > 0)
                or (box[2] > end[0] - pad and end[0] < width) or (box[3] > end[1] - pad and end[1] < height))


def _join(*parts: Detections) -> Detections:
    """The faces of ``parts`` in one :class:`Detections`."""
    parts = (Detections(), *parts)
    return Detections(*(np.concatenate(arrays).astype(np.float32) for arrays in
                        zip(*((d.boxes, d.scores, d.landmarks) for d in parts))))
