"""Score a folder of videos into a Kaggle DFDC submission, under a deadline.

    python -m kernels.predict --videos DIR --out submission/submission.csv [--weights W.pt ...]
                              [--stacking S.json] [--frames 32] [--deadline SECONDS] [--strategy confident]

Writes ``filename,label`` for every video (sorted, probabilities clipped to [eps, 1 - eps]) and a
per-video detail file beside it. The submission is rewritten atomically as videos finish, so a
complete, valid file exists from the first second; videos not reached by the deadline, unreadable
or without faces get the prior. A killed run restarted with the same arguments resumes. The device
failing (CUDA out of memory, a CUDA error) stops the run with exit code 4 and one error line, what was
scored kept: the same command resumes it.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

if __name__ == "__main__":  # the detection workers' fork server imports what this command does, beside it
    from plumbing.processes import start_early

    start_early(["kernels.predict"])

from models.checkpoint import CheckpointError
from plumbing.cli import add_field_flag, exit_on_sigterm
from plumbing.cluster import add_engine_arguments
from plumbing.device import DeviceError
from plumbing.logs import configure_logging
from preprocessing.detect import add_detector_arguments, detector_settings
from preprocessing.video import RUN_LENGTH

from .aggregate import STRATEGIES
from .ensemble import PRECISIONS, Ensemble
from .inputs import STACKING, WEIGHTS_DIR, named_videos, resolve_models, shard
from .kaggle import default_submission
from .pipeline import Workers
from .presets import PRESETS, Preset
from .runner import ScoringFailed, details_path, run
from .scoring import Settings

log = logging.getLogger("kernels.predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kernels.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Settings()
    p.add_argument("--videos", type=Path, nargs="*",
                   help="a folder (searched recursively) or video files; default: the Kaggle test folder "
                        "if present, else the embedded astronaut sample")
    p.add_argument("--out", type=Path, default=default_submission(),
                   help="submission CSV (default: submission.csv inside Kaggle, else submission/submission.csv)")
    p.add_argument("--weights", type=Path, nargs="+",
                   help=f"checkpoints (default: the members of {STACKING.relative_to(WEIGHTS_DIR.parent)} where it "
                        "exists, else every frame model in weights/)")
    p.add_argument("--stacking", type=Path, help="a stacking file (python -m kernels.calibrate --stack) that combines "
                   "the models instead of the mean; its members, from beside it, unless --weights names them")
    p.add_argument("--model-weights", type=float, nargs="+", help="one weight per checkpoint for the ensemble mean")
    add_field_flag(p, default, "frames", "frames per video while time allows")
    add_field_flag(p, default, "min_frames", "fewest frames when short of time")
    add_field_flag(p, default, "runs", f"runs of {RUN_LENGTH} consecutive frames per video for sequence models "
                   "(read only when one is given)")
    add_field_flag(p, default, "detect_every", "run MTCNN on the whole of every k-th frame, around each face's last box between")
    p.add_argument("--deadline", type=float, help="seconds for the whole folder, from start to written CSV")
    add_field_flag(p, default, "strategy", "frame -> video aggregation; None: each checkpoint's own, from its crop spec",
                   choices=sorted(STRATEGIES))
    p.add_argument("--margin", type=float,
                   help="crop margin per side, a fraction of the box (default: each checkpoint's own)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a published solution's inference recipe (frames, detection, faces kept); "
                        "flags given explicitly still win")
    add_field_flag(p, default, "prior", "label for videos that cannot be scored")
    add_field_flag(p, default, "eps", "clip labels to [eps, 1 - eps]")
    p.add_argument("--shard", help="i/n: score only shard i of n (0-based); join shards with submission.merge")
    add_field_flag(p, default, "workers", "decode+detect processes beside the models, started while the models load "
                   "(0: all in one process; by default one per CPU up to 4, 1 with a GPU and one CPU, else 0)")
    add_engine_arguments(p, default)
    add_field_flag(p, default, "video_timeout", "give up on a video after this many seconds")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: on CUDA by the card (bf16 on sm_80+, fp16 on sm_70/75, fp32 below; docs/gpu.md); "
                        "on a CPU, bf16 + channels_last for each model that a probe at start shows faster and "
                        "within 1e-2 of fp32, else fp32")
    p.add_argument("--fresh", action="store_true", help="ignore the progress of an earlier run")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_detector_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    parser = build_parser()
    preset = PRESETS.get(parser.parse_known_args(argv)[0].preset) or Preset()
    parser.set_defaults(**preset.flags)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    detector = {**detector_settings(args), **preset.detector}
    local = args.workers if args.engine == "local" else 0  # on Ray, detection runs in Ray's tasks
    with exit_on_sigterm(), Workers(detector, local) as workers:  # they start while the models load
        return score_folder(args, detector, preset, workers, started)


def score_folder(args: argparse.Namespace, detector: dict, preset: Preset, workers: Workers, started: float) -> int:
    """The command's work once its detection workers are starting; returns the exit status."""
    try:
        weights, stacking = resolve_models(args.weights, args.stacking)
        if not weights:
            log.error("no checkpoint in %s: pass --weights (see docs/train.md)", WEIGHTS_DIR)
            return 2
        device = "meta" if args.engine == "ray" else args.device  # on Ray the replicas hold the weights
        ensemble = Ensemble.load(weights, args.model_weights, device, args.precision, spec={"margin": args.margin},
                                 stacking=stacking)
    except (CheckpointError, ValueError) as err:
        log.error("%s", err)
        return 2
    try:
        named = shard(named_videos(args.videos, args.out.parent / "sample_videos"), args.shard)
    except ValueError as err:
        log.error("%s", err)
        return 2
    settings = Settings(frames=args.frames, min_frames=args.min_frames, detect_every=args.detect_every,
                        strategy=args.strategy, prior=args.prior,
                        eps=args.eps, deadline=args.deadline, workers=args.workers,
                        video_timeout=args.video_timeout, detector=detector, runs=args.runs,
                        engine=args.engine, address=args.address, **preset.settings)
    log.info("%d videos, model(s) %s in %s, strategy %s, combined by %s", len(named), ensemble.names,
             ensemble.precisions, settings.strategy or "each model's own", stacking or "their mean")
    try:
        details = run(named, ensemble, args.out, settings, args.fresh, started, workers=workers)
    except OSError as err:  # a read-only folder, a full disk: earlier outputs stay as they were
        log.error("cannot write the outputs beside %s: %s", args.out, err)
        return 3
    except (ScoringFailed, DeviceError) as err:  # the device failed (or Ray has none the flag asks for)
        log.error("%s", err)
        return 4
    log.info("wrote %s (%d rows) and %s: %d scored, %d got the prior", args.out, len(details),
             details_path(args.out), int((details["status"] == "ok").sum()), int((details["status"] != "ok").sum()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

