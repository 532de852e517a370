"""Extract face crops from a folder of videos.

    python -m preprocessing.extract_faces --videos DIR --out DIR [--frames 32]

Per video ``<out>/<relative video path>/`` receives one PNG per face, ``<frame>_<track>.png`` (frame
index zero-padded to 5 digits), and ``faces.json`` with the sampled frame indices, boxes, scores,
landmarks, crop boxes and track ids. ``faces.json`` is written last and atomically, so a video whose
``faces.json`` exists is complete and is skipped when the command is run again. Videos that cannot
be read are reported on one line each and listed in ``<out>/summary.json``.
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from plumbing.fileio import write_json, write_png
from plumbing.logs import configure_logging

from .detect import FaceDetector, add_detector_arguments, detector_settings
from .faces import find_faces
from .geometry import DEFAULT_MARGIN
from .sample import resolve_videos
from .image import read_input
from .video import FRAMES, VideoReadError

log = logging.getLogger("extract_faces")

DEFAULT_OUT = Path("output/faces")


@dataclass
class Summary:
    videos: int = 0
    done: int = 0
    resumed: int = 0
    faces: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return (f"{self.videos} videos: {self.done} extracted, {self.resumed} already done, "
                f"{len(self.failures)} failed; {self.faces} faces")


def extract_video(path: Path, out_dir: Path, detector: FaceDetector, frames: int, margin: float) -> int:
    """Extract one video's faces into ``out_dir``; returns the number of faces written."""
    sampled = read_input(path, frames)
    faces = find_faces(sampled, detector, margin)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.png"):
        stale.unlink()
    records = []
    for face in faces:
        name = f"{face.frame:05d}_{face.track}.png"
        write_png(out_dir / name, face.crop)
        records.append({**face.to_record(), "crop": name})
    height, width = sampled.images[0].shape[:2]
    write_json(out_dir / "faces.json", {
        "video": str(path),
        "width": width,
        "height": height,
        "frame_count": sampled.frame_count,
        "fps": sampled.fps,
        "scale": sampled.scale,
        "frames": sampled.indices.tolist(),
        "margin": margin,
        "tracks": len({f.track for f in faces}),
        "faces": records,
    })
    return len(faces)


def output_dir(video: Path, root: Path | None, out: Path) -> Path:
    """``out`` / the video's path relative to the input folder (its file name if given alone)."""
    return out / (video.relative_to(root) if root is not None else Path(video.name))


def run(videos: list[Path], root: Path | None, out: Path, detector: FaceDetector,
        frames: int = FRAMES, margin: float = DEFAULT_MARGIN, overwrite: bool = False) -> Summary:
    """Extract faces from ``videos`` into ``out``, resuming where an earlier run stopped."""
    summary = Summary(videos=len(videos))
    with logging_redirect_tqdm():
        for video in tqdm(videos, desc="extract faces", unit="video"):
            target = output_dir(video, root, out)
            if not overwrite and (target / "faces.json").exists():
                summary.resumed += 1
                continue
            try:
                summary.faces += extract_video(video, target, detector, frames, margin)
                summary.done += 1
            except VideoReadError as err:
                log.warning("skipped %s", err)
                summary.failures[str(video)] = err.cause
    write_json(out / "summary.json", {**summary.__dict__, "line": summary.line()})
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m preprocessing.extract_faces", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, nargs="*",
                        help="a folder (searched recursively) or video files; default: the Kaggle test "
                             "folder if present, else the embedded astronaut sample")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=FRAMES, help="evenly spaced frames per video (default: %(default)s)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="crop margin per side, as a fraction of the box (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="redo videos that are already done")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_detector_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        videos, root = resolve_videos(args.videos, args.out.parent / "sample_videos")
    except ValueError as err:
        log.error("%s", err)
        return 2
    detector = FaceDetector(**detector_settings(args))
    try:
        summary = run(videos, root, args.out, detector, args.frames, args.margin, args.overwrite)
    except OSError as err:  # a read-only folder, a full disk: finished videos stay done
        log.error("cannot write to %s: %s", args.out, err)
        return 3
    log.info("%s; output in %s", summary.line(), os.fspath(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
