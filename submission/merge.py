"""Join the submissions of several shards into one, refusing duplicates and gaps.

    python -m submission.merge SHARD.csv [SHARD.csv ...] --out submission.csv [--videos DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .io import SubmissionError, problems, read_submission, videos_in, write_submission


def merge(paths: list[Path], expected: list[str] | None = None) -> pd.DataFrame:
    """The shards' rows together; raises :class:`SubmissionError` on any duplicate or gap."""
    shards = [read_submission(p) for p in paths]
    table = pd.concat(shards, ignore_index=True)
    found = problems(table, expected)
    if found:
        raise SubmissionError(f"merging {', '.join(map(str, paths))}: " + "; ".join(found))
    return table.sort_values("filename", ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m submission.merge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", type=Path, nargs="+", help="shard submissions")
    parser.add_argument("--out", type=Path, required=True, help="merged submission to write")
    parser.add_argument("--videos", type=Path, help="folder whose videos must all be covered")
    args = parser.parse_args(argv)
    try:
        table = merge(args.shards, videos_in(args.videos) if args.videos else None)
    except SubmissionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_submission(args.out, table)
    print(f"wrote {args.out}: {len(table)} videos from {len(args.shards)} shards")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
