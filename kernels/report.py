"""One self-contained HTML page that shows what the detector saw in every video of a folder.

    python -m kernels.report --videos DIR --out report/ [--weights W.pt ...] [--labels labels.csv]

Scores the folder with the kernel (:func:`kernels.api.score_videos`, outputs in ``--out``), then
writes ``--out/report.html``: with ``--labels``, the folder's metrics, ROC curve and reliability
diagram (``submission.score``'s) and a histogram of scores by label; then every video, most fake
first, with its face-crop strip, each model's Grad-CAM on those crops, its frame-probability
timeline per track and its track table.
Images are embedded as base64 PNG: the page opens from disk in a browser, without a server.
"""
from __future__ import annotations

import argparse
import base64
import html
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from models.checkpoint import CheckpointError
from plumbing.cli import add_field_flag
from plumbing.fileio import atomic_write, write_json
from plumbing.logs import configure_logging
from preprocessing.detect import add_detector_arguments, detector_settings
from submission.io import SubmissionError
from submission.score import match, plot, read_labels, score

from . import plots
from .aggregate import STRATEGIES
from .api import Scores, load_ensemble, score_videos
from .ensemble import PRECISIONS, Ensemble
from .scoring import Settings

log = logging.getLogger("kernels.report")

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1100px}
section{border-top:1px solid #ccc;padding:.6em 0}h2{font-size:1.05em;margin:.3em 0}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 6px}
img{max-width:100%;display:block;margin:.3em 0}.fake{color:#b00}.real{color:#070}.prior{color:#777}"""


def img(png: bytes, alt: str) -> str:
    """An ``<img>`` carrying ``png`` as a base64 data URI."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def folder_section(scores: Scores, labels: pd.DataFrame) -> str:
    """Metrics, ROC, reliability and score histogram of the labelled videos."""
    matched = match(scores.videos[["filename", "label"]], labels)
    table = score(matched).to_html(index=False, float_format=lambda v: f"{v:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        images = [img(p.read_bytes(), p.stem) for p in plot(matched, Path(tmp), "folder")]
    images.append(img(plots.png_bytes(plots.histogram(matched["prob"], matched["y"])), "histogram"))
    return f"<section><h2>Folder: {len(matched)} labelled videos</h2>{table}{''.join(images)}</section>"


def video_section(scores: Scores, filename: str, max_crops: int, ensemble: Ensemble | None = None) -> str:
    """One video: its score, status, crop strip (and one Grad-CAM strip per model of ``ensemble``, and
    a manipulation-map strip per model with a map head), timeline and track table."""
    one = scores.video(filename)
    row = one.videos.iloc[0]
    kind = "prior" if row["status"] != "ok" else ("fake" if row["label"] > 0.5 else "real")
    head = (f'<h2 id="{html.escape(filename)}">{html.escape(filename)} · '
            f'<span class="{kind}">P(fake) = {row["label"]:.3f}</span></h2>')
    if row["status"] != "ok":
        return f"<section>{head}<p class=prior>prior: {html.escape(str(row['reason']))}</p></section>"
    parts = [head, f"<p>{row['faces']} faces in {row['frames_read']} frames, {row['tracks']} track(s)</p>"]
    if one.frames["crop"].notna().all():
        parts.append(img(plots.png_bytes(plots.crop_strip(one.frames, max_crops)), f"{filename} crops"))
        for name, model, _ in ensemble.frame_models if ensemble else ():
            strip = plots.crop_strip(one.frames, max_crops, model=model)
            parts.append(f"<p>Grad-CAM of {html.escape(name)}</p>" + img(plots.png_bytes(strip), f"{filename} gradcam {name}"))
            if model.decoder is not None:
                strip = plots.crop_strip(one.frames, max_crops, model=model, view="map")
                parts.append(f"<p>Manipulation map of {html.escape(name)}</p>"
                             + img(plots.png_bytes(strip), f"{filename} map {name}"))
    parts.append(img(plots.png_bytes(plots.timeline(one.frames, row["label"], scores.strategy)), f"{filename} timeline"))
    parts.append(one.tracks.drop(columns="filename").to_html(index=False, float_format=lambda v: f"{v:.3f}"))
    return f"<section>{''.join(parts)}</section>"


def render(scores: Scores, labels: pd.DataFrame | None = None, max_crops: int = 8,
           ensemble: Ensemble | None = None, title: str = "Deepfake report") -> str:
    """The whole page as a string (see the module docstring); ``labels`` as ``submission.score.read_labels``;
    with the ``ensemble`` that scored, each video also gets its models' Grad-CAM strips."""
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(scores.videos)} videos · models {', '.join(scores.models)} · strategy {scores.strategy}</p>"]
    if labels is not None:
        body.append(folder_section(scores, labels))
    body += [video_section(scores, name, max_crops, ensemble) for name in scores.videos["filename"]]
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kernels.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=Path, nargs="*", help="a folder (searched recursively) or video files; "
                   "default: the Kaggle test folder if present, else the embedded astronaut sample")
    p.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: %(default)s)")
    p.add_argument("--weights", type=Path, nargs="+", help="checkpoints (default: every frame model in weights/)")
    p.add_argument("--labels", type=Path, help="labels.csv (path/filename, label) or metadata.json: adds folder plots")
    p.add_argument("--frames", type=int, default=16, help="frames per video (default: %(default)s)")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), default="confident", help="default: %(default)s")
    p.add_argument("--max-crops", type=int, default=8, help="crops shown per video (default: %(default)s)")
    p.add_argument("--no-gradcam", action="store_true", help="leave out the Grad-CAM strips (one backward pass per crop shown) and the map-head strips")
    add_field_flag(p, Settings(), "workers", "decode+detect processes (0: in this process); as kernels.predict's")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as kernels.predict")
    p.add_argument("--fresh", action="store_true", help="rescore every video (crops of resumed videos are not shown)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_detector_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    start = time.monotonic()
    try:
        labels = read_labels(args.labels) if args.labels else None
        ensemble = load_ensemble(args.weights, device=args.device, precision=args.precision)
    except (CheckpointError, SubmissionError, ValueError, OSError) as err:
        named = args.labels is None or str(args.labels) in str(err) or isinstance(err, CheckpointError)
        log.error("%s", err if named else f"{args.labels}: {err}")
        return 2
    settings = dict(frames=args.frames, min_frames=min(8, args.frames), strategy=args.strategy,
                    workers=args.workers, detector=detector_settings(args))
    try:  # a missing or video-less --videos fails here, before anything is written
        scores = score_videos(args.videos, ensemble, args.out / "submission.csv", fresh=args.fresh, **settings)
        page = render(scores, labels, args.max_crops, None if args.no_gradcam else ensemble)
    except (SubmissionError, ValueError) as err:
        log.error("%s", err)
        return 2
    write_json(args.out / "config.json", {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                                             if k not in ("videos", "weights")},
                                          "videos": [str(v) for v in args.videos or []],
                                          "weights": [str(w) for w in args.weights or []],
                                          "models": ensemble.names, **settings})
    with atomic_write(args.out / "report.html", "w", encoding="utf-8") as f:
        f.write(page)
    log.info("wrote %s: %d videos in %.0f s", args.out / "report.html", len(scores.videos), time.monotonic() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
