"""Check a submission file: header, one row per video, labels in [0, 1], no NaN.

    python -m submission.validate SUBMISSION.csv [--videos DIR]

Exit code 0 when valid; otherwise 1 with one line listing the problems.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .io import SubmissionError, read_submission, videos_in


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submission.validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submission", type=Path, help="the CSV to check")
    parser.add_argument("--videos", type=Path, help="folder whose videos must each appear exactly once")
    args = parser.parse_args(argv)
    expected = videos_in(args.videos) if args.videos else None
    try:
        table = read_submission(args.submission, expected)
    except SubmissionError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return 1
    print(f"valid: {args.submission}: {len(table)} videos, labels {table['label'].min():.3f}..{table['label'].max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
