"""Reading and writing submission files: ``filename,label`` with one row per video.

This room stands alone (pandas only), so a submission can be checked and scored without torch.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["filename", "label"]
#: File endings that count as videos and still images; the same rules as ``preprocessing.video`` and
#: ``preprocessing.image`` (a test keeps them equal).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


class SubmissionError(ValueError):
    """A submission file is malformed; the message names the file and every problem found."""


def problems(table: pd.DataFrame, expected: list[str] | None = None) -> list[str]:
    """What is wrong with a submission table (empty when it is valid)."""
    if list(table.columns) != COLUMNS:
        return [f"columns are {list(table.columns)}, expected {COLUMNS}"]
    found = []
    labels = pd.to_numeric(table["label"], errors="coerce")
    if labels.isna().any():
        found.append(f"{int(labels.isna().sum())} label(s) missing or not numbers, e.g. {table['filename'][labels.isna()].iloc[0]}")
    elif not labels.between(0, 1).all():
        found.append(f"{int((~labels.between(0, 1)).sum())} label(s) outside [0, 1]")
    duplicated = table["filename"][table["filename"].duplicated()]
    if len(duplicated):
        found.append(f"{len(duplicated)} duplicated filename(s), e.g. {duplicated.iloc[0]}")
    if expected is not None:
        missing = sorted(set(expected) - set(table["filename"]))
        extra = sorted(set(table["filename"]) - set(expected))
        if missing:
            found.append(f"{len(missing)} video(s) missing, e.g. {missing[0]}")
        if extra:
            found.append(f"{len(extra)} row(s) for no video in the folder, e.g. {extra[0]}")
    return found


def read_submission(path: str | os.PathLike, expected: list[str] | None = None) -> pd.DataFrame:
    """Read and check a submission; raises :class:`SubmissionError` listing its problems."""
    try:
        table = pd.read_csv(path, dtype={"filename": str}, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SubmissionError(f"{path}: cannot be read as CSV ({err})") from err
    found = problems(table, expected)
    if found:
        raise SubmissionError(f"{path}: " + "; ".join(found))
    return table.astype({"label": np.float64})


def write_submission(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write ``table`` sorted by filename, atomically (a temporary file renamed into place). A table
    :func:`problems` finds fault with (a NaN label, say) raises :class:`SubmissionError` and leaves
    the file as it was."""
    path = Path(path)
    found = problems(table.reset_index(drop=True)[COLUMNS])
    if found:
        raise SubmissionError(f"{path}: not written: " + "; ".join(found))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
        table.sort_values("filename")[COLUMNS].to_csv(f, index=False, float_format="%.6f")
    os.replace(tmp, path)


def videos_in(folder: str | os.PathLike) -> list[str]:
    """Names (relative, ``/``-separated) of the videos and images under ``folder``, as the kernel writes them."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS and p.is_file())
