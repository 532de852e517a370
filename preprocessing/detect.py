"""Face detection with facenet-pytorch's MTCNN, at a resolution chosen by the frame's size.

Boxes are ``(x1, y1, x2, y2)`` float pixels and landmarks ``(x, y)`` float pixels, both in the
coordinates of the full-resolution frame that was passed in, whatever scale detection ran at.
Landmarks are MTCNN's five points in its order: left eye, right eye, nose, left and right mouth
corner (left/right as seen in the image).
"""
from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import bbreg, imresample, rerec
from PIL import Image

from plumbing.device import check_device, default_device

from .geometry import box_iou

#: MTCNN stage thresholds for inference: the DFDC winner's kernel setting. Low enough to keep the
#: profile and blurred faces a fake may hide in; false positives are removed by ``min_score`` and
#: by tracking.
KERNEL_THRESHOLDS = (0.7, 0.8, 0.8)
#: Stricter thresholds for building training crops (the winner's preprocessing): a missed face costs
#: one training sample, a false positive teaches the model a wrong label.
TRAINING_THRESHOLDS = (0.85, 0.95, 0.95)
#: facenet-pytorch's default ``min_face_size``: the smallest face MTCNN's pyramid looks for, in pixels.
MTCNN_MIN_FACE = 20
#: :meth:`FaceDetector.refine` confirms a face only where its last step moved the box this little
#: (IoU with the step before): O-Net's regression has settled on a face, not still walking toward one.
REFINE_SETTLED = 0.8


def detection_scale(height: int, width: int) -> float:
    """Factor to resize a frame by before detection (the DFDC winner's rule, by the long side).

    ×2 below 300 px, ×1 up to 1000 px, ×0.5 above 1000 px, ×0.33 above 1900 px: MTCNN's pyramid
    then sees faces at a size it handles well, and 1080p frames cost a ninth of the pixels.
    """
    side = max(height, width)
    if side < 300:
        return 2.0
    if side <= 1000:
        return 1.0
    if side <= 1900:
        return 0.5
    return 0.33


def min_face_size(min_size: float, height: int, width: int) -> float:
    """MTCNN's ``min_face_size`` for a ``height`` x ``width`` frame: the smallest face kept (``min_size``
    of the short side) in pixels of the frame MTCNN sees (after :func:`detection_scale`), never below
    :data:`MTCNN_MIN_FACE`. The pyramid then starts at the first size a kept face can have: a larger
    ``min_size`` means fewer, smaller levels, and MTCNN still finds faces down to about 0.6 of it.
    """
    return max(float(MTCNN_MIN_FACE), min_size * min(height, width) * detection_scale(height, width))


@dataclass
class Detections:
    """Faces found in one frame: ``boxes`` (k, 4), ``scores`` (k,), ``landmarks`` (k, 5, 2), float32."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep], self.landmarks[keep])


class FaceDetector:
    """MTCNN with the project's scale rule and explicit filters.

    Args:
        thresholds: MTCNN's three stage thresholds (see :data:`KERNEL_THRESHOLDS`).
        min_score: drop detections whose final MTCNN probability is lower.
        min_size: drop boxes whose shorter side is below this fraction of the frame's shorter side
            (1.5% is about 16 px in a 1080p frame: too small to judge a fake by); MTCNN's pyramid
            starts at this size (:func:`min_face_size`).
        batch_size: frames per MTCNN call (default 32: a video's frames at once). Batching pays on
            a GPU, and on this 2-core CPU too: 1.58 s vs 1.72 s per video of 32 frames in a loop
            (``tests/benchmarks/bench_extract.py``).
        device: torch device; CUDA when present by default.
        scale: a fixed detection scale instead of :func:`detection_scale`'s rule: frames resized to
            ``int(side * scale)``, boxes divided by ``scale`` (0.5: the DFDC winner's half size, boxes x 2).
        resample: ``cv2`` (INTER_AREA down, INTER_LINEAR up) or ``pil`` (PIL's default bicubic resize,
            the DFDC winner's).
        region_grow: :meth:`search_regions` searches a square this many times a face's longer side,
            centred on it (2: half a face of room on each side for the face to move).
        region_size: ... and resizes it to this many pixels a side, so the face is searched for at
            about ``region_size / region_grow`` pixels whatever its size in the frame; all regions
            of a call then batch through MTCNN together.
        refine_steps: between full searches, :meth:`refine` follows each face by MTCNN's last stage
            (O-Net) alone, this many times from its last box, before any region search; a face it
            does not confirm is searched for in its region. 0: region searches only.
    """

    def __init__(
        self,
        thresholds: Sequence[float] = KERNEL_THRESHOLDS,
        min_score: float = 0.9,
        min_size: float = 0.015,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        scale: float | None = None,
        resample: str = "cv2",
        region_grow: float = 2.0,
        region_size: int = 160,
        refine_steps: int = 2,
    ):
        if resample not in ("cv2", "pil"):
            raise ValueError(f"resample must be 'cv2' or 'pil', got {resample!r}")
        self.scale, self.resample = scale, resample
        self.device = check_device(device) if device is not None else default_device()
        self.thresholds = tuple(float(t) for t in thresholds)
        self.min_score = min_score
        self.min_size = min_size
        self.batch_size = batch_size
        self.region_grow, self.region_size = region_grow, region_size
        self.refine_steps = refine_steps
        self.mtcnn = MTCNN(keep_all=True, thresholds=list(self.thresholds), device=self.device)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in RGB frames of one size (the frames of one video); one result per frame."""
        if len(frames) == 0:
            return []
        height, width = frames[0].shape[:2]
        if self.scale is None:
            scale = detection_scale(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            factors = (width / size[0], height / size[1])
        else:
            size = (max(1, int(width * self.scale)), max(1, int(height * self.scale)))
            factors = (1 / self.scale, 1 / self.scale)
        self.mtcnn.min_face_size = min_face_size(self.min_size, height, width)
        results = []
        for start in range(0, len(frames), self.batch_size):
            small = np.stack([self._resize(f, size) for f in frames[start : start + self.batch_size]])
            boxes, scores, points = self.mtcnn.detect(small, landmarks=True)
            for b, s, p in zip(boxes, scores, points):
                results.append(self._to_frame(b, s, p, factors, (0.0, 0.0), (width, height)))
        return results

    def region(self, box) -> tuple[int, int, int]:
        """The square :meth:`search_regions` searches for the face ``box`` (xyxy frame pixels):
        ``(x0, y0, side)`` in frame pixels, centred on the box, possibly reaching past the frame."""
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(1, round(self.region_grow * max(x2 - x1, y2 - y1)))
        return round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2), side

    def search_regions(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[Detections]:
        """Faces near ``boxes[i]`` in RGB ``frames[i]``, one result per pair, in frame pixels.

        Each pair's :meth:`region` (the part outside the frame black) is resized to ``region_size``
        and MTCNN runs on all of them in batches of ``batch_size``; its pyramid starts at half the
        face's expected size (``region_size / region_grow``), so P-Net searches a few thousand
        pixels per region instead of a whole frame. Filters as for full frames (``min_size`` of
        the frame's short side).
        """
        size = self.region_size
        self.mtcnn.min_face_size = size / self.region_grow / 2
        results = []
        for start in range(0, len(frames), self.batch_size):
            pairs = list(zip(frames[start : start + self.batch_size], boxes[start : start + self.batch_size]))
            squares = [self.region(box) for _, box in pairs]
            patches = np.stack([self._resize(_cut(frame, *square), (size, size))
                                for (frame, _), square in zip(pairs, squares)])
            found = self.mtcnn.detect(patches, landmarks=True)
            for (frame, _), (x0, y0, side), b, s, p in zip(pairs, squares, *found):
                results.append(self._to_frame(b, s, p, (side / size, side / size), (x0, y0),
                                              (frame.shape[1], frame.shape[0])))
        return results

    def refine(self, frame: np.ndarray, boxes: np.ndarray) -> list[Detections]:
        """Each of ``boxes`` (xyxy, frame pixels) followed into RGB ``frame`` by MTCNN's last stage
        alone, one result per box: the box squared as MTCNN squares its candidates, cut, resized to
        O-Net's 48 pixels and regressed, ``refine_steps`` times, all boxes in one O-Net batch per step.

        A face comes back only where O-Net confirms it: its probability passes the third threshold
        and ``min_score``, the last step moved the box by little (IoU ≥ :data:`REFINE_SETTLED` with
        the step before) and it passes ``min_size``; otherwise the result is empty. About 2 ms a
        face and step on one CPU thread, against about 25 ms for :meth:`search_regions`.
        """
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if self.refine_steps < 1 or len(boxes) == 0:
            return [Detections() for _ in boxes]
        height, width = frame.shape[:2]
        current = torch.as_tensor(boxes)
        for _ in range(self.refine_steps):
            before, squares = current, rerec(current.clone())
            # MTCNN's crop of a square (pixels trunc(x1) - 1 .. trunc(x2) - 1), black where it leaves the frame
            corners = squares.trunc().int().tolist()
            patches = [imresample(torch.as_tensor(_cut(frame, x1 - 1, y1 - 1, x2 - x1 + 1)).permute(2, 0, 1)[None].float(),
                                  (48, 48)) for x1, y1, x2, _ in corners]
            with torch.no_grad():
                regression, points, probs = self.mtcnn.onet((torch.cat(patches).to(self.device) - 127.5) * 0.0078125)
            side = squares[:, 2:] - squares[:, :2] + 1  # MTCNN's box width and height
            landmarks = torch.stack([side[:, None, 0] * points[:, :5].cpu() + squares[:, None, 0] - 1,
                                     side[:, None, 1] * points[:, 5:].cpu() + squares[:, None, 1] - 1], dim=-1)
            current = bbreg(squares, regression.cpu())
        probs = probs[:, 1].cpu().numpy()
        settled = np.diag(box_iou(current.numpy(), before.numpy())) >= REFINE_SETTLED
        keep = settled & (probs >= self.thresholds[2])
        return [self._to_frame(box[None], prob[None], mark[None], (1.0, 1.0), (0.0, 0.0), (width, height))
                if ok else Detections() for box, prob, mark, ok in zip(current.numpy(), probs, landmarks.numpy(), keep)]

    def _resize(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if self.resample == "pil":
            return np.asarray(Image.fromarray(frame).resize(size))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if size[0] < frame.shape[1] else cv2.INTER_LINEAR)

    def _to_frame(self, boxes, scores, points, factors, offset, full_size) -> Detections:
        """Convert one image's MTCNN output (object arrays, ``None`` for no face) to frame pixels
        (``factors``: frame pixels per detection pixel, x and y; ``offset``: the frame position of
        the image's top-left corner) and filter it."""
        if boxes is None:
            return Detections()
        (fx, fy), (ox, oy) = factors, offset
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * [fx, fy, fx, fy] + [ox, oy, ox, oy]
        points = np.asarray(points, np.float32).reshape(-1, 5, 2) * [fx, fy] + [ox, oy]
        det = Detections(boxes.astype(np.float32), np.asarray(scores, np.float32).reshape(-1), points.astype(np.float32))
        short_side = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
        keep = (det.scores >= self.min_score) & (short_side >= self.min_size * min(full_size))
        return det.select(keep)


def _cut(frame: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` square of ``frame`` at ``(x0, y0)``, black where it leaves the frame."""
    patch = np.zeros((side, side, frame.shape[2]), frame.dtype)
    height, width = frame.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if xa < xb and ya < yb:
        patch[ya - y0 : yb - y0, xa - x0 : xb - x0] = frame[ya:yb, xa:xb]
    return patch


#: :class:`FaceDetector`'s keyword defaults: the one place the flags and ``prepare``'s config read them from.
DEFAULTS = {name: param.default for name, param in inspect.signature(FaceDetector).parameters.items()
            if param.default is not param.empty}


def add_detector_arguments(parser: argparse.ArgumentParser, thresholds: Sequence[float] = KERNEL_THRESHOLDS) -> None:
    """The detection flags every command shares: ``--thresholds --min-score --min-size --batch-size
    --region-grow --region-size --refine-steps --device``."""
    group = parser.add_argument_group("face detection")
    group.add_argument("--thresholds", type=float, nargs=3, default=tuple(thresholds), metavar="T",
                       help="MTCNN stage thresholds (default: %(default)s)")
    group.add_argument("--min-score", type=float, default=DEFAULTS["min_score"], help="drop weaker faces (default: %(default)s)")
    group.add_argument("--min-size", type=float, default=DEFAULTS["min_size"],
                       help="drop faces smaller than this fraction of the frame's short side (default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="frames per MTCNN call (default: %(default)s)")
    group.add_argument("--region-grow", type=float, default=DEFAULTS["region_grow"],
                       help="between full-frame detections, search a square this many times the face's side "
                            "around its last box (default: %(default)s)")
    group.add_argument("--region-size", type=int, default=DEFAULTS["region_size"],
                       help="... resized to this many pixels a side (default: %(default)s)")
    group.add_argument("--refine-steps", type=int, default=DEFAULTS["refine_steps"],
                       help="... but first follow each face from its last box by MTCNN's last stage alone, this many "
                            "steps; 0: region searches only (default: %(default)s)")
    group.add_argument("--device", help="torch device (default: cuda if available, else cpu)")


def detector_settings(args: argparse.Namespace) -> dict:
    """:class:`FaceDetector` keyword arguments from the flags of :func:`add_detector_arguments`."""
    return {"thresholds": tuple(args.thresholds), "min_score": args.min_score, "min_size": args.min_size,
            "batch_size": args.batch_size, "region_grow": args.region_grow, "region_size": args.region_size,
            "refine_steps": args.refine_steps, "device": args.device}
