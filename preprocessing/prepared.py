"""The prepared folder's format (``python -m preprocessing.prepare`` writes it): its tables' columns,
the writer of its tables, and the one reader of its tables and image files that training and the
kernels share.

``OUT/videos.csv`` has a row per video (:data:`VIDEO_COLUMNS`), ``OUT/crops.csv`` a row per face
crop (:data:`CROP_COLUMNS`; landmarks in crop pixels); crops and masks are PNGs named by ``crop`` and
``mask`` relative to ``OUT``, in a folder per video (:func:`video_dir`) that holds the video's record,
``faces.json`` (:data:`DONE`), or why it failed, ``failed.json`` (:data:`FAILED`).
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from plumbing.fileio import atomic_write

VIDEO_COLUMNS = ("video", "path", "label", "original", "dataset", "method", "group", "fold",
                 "frame_count", "width", "height", "status", "boxes_from")
LANDMARK_COLUMNS = tuple(f"lm{i}_{axis}" for i in range(5) for axis in "xy")
CROP_COLUMNS = ("video", "crop", "mask", "real_crop", "frame", "track", "label", "group", "fold", *LANDMARK_COLUMNS)
#: What a reader needs of ``videos.csv`` (a hand-made folder may leave the rest out).
REQUIRED_VIDEO_COLUMNS = ("video", "status")
DONE, FAILED = "faces.json", "failed.json"


def video_dir(out: Path, video: str) -> Path:
    """The folder of ``video``'s crops, masks and record."""
    return out / "crops" / video


def _crop_rows(video: pd.Series, record: dict) -> Iterable[list]:
    for face in record["faces"]:
        landmarks = np.asarray(face["landmarks"], dtype=np.float64) - face["crop_box"][:2]
        yield [video["video"], face["crop"], face["mask"], face["real_crop"], face["frame"], face["track"],
               video["label"], video["group"], video["fold"], *np.round(landmarks, 2).ravel().tolist()]


def write_tables(out: Path, table: pd.DataFrame) -> dict:
    """Write ``videos.csv`` and ``crops.csv`` from the per-video records of the videos of ``table``
    (the index's columns and ``fold``), one video at a time; returns the counts of ``crops``,
    ``masks``, videos with ``no_face``, ``self_boxed_fakes`` and the ``failures`` (video -> cause)."""
    details = []
    counts = {"crops": 0, "masks": 0, "no_face": 0, "self_boxed_fakes": 0, "failures": {}}
    with atomic_write(out / "crops.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CROP_COLUMNS)
        for _, video in table.iterrows():
            folder = video_dir(out, video["video"])
            if (folder / DONE).is_file():
                record = json.loads((folder / DONE).read_text())
                rows = list(_crop_rows(video, record))
                writer.writerows(rows)
                counts["crops"] += len(rows)
                counts["masks"] += sum(1 for face in record["faces"] if face["mask"])
                counts["no_face"] += int(not rows)
                counts["self_boxed_fakes"] += int(video["label"] == 1 and record["boxes_from"] == "self")
                details.append({k: record[k] for k in ("frame_count", "width", "height", "status", "boxes_from")})
            else:
                record = json.loads((folder / FAILED).read_text())
                counts["failures"][video["video"]] = record["status"].removeprefix("failed: ")
                details.append({"status": record["status"], "boxes_from": "self"})
    videos = pd.concat([table.reset_index(drop=True), pd.DataFrame(details)], axis=1)
    for column in ("frame_count", "width", "height"):
        videos[column] = videos.get(column, pd.Series(dtype="float")).astype("Int64")
    with atomic_write(out / "videos.csv", "w", newline="", encoding="utf-8") as f:
        videos[list(VIDEO_COLUMNS)].to_csv(f, index=False)
    return counts


class PreparedDataError(ValueError):
    """The prepared folder breaks its contract: a missing table or column, or an unreadable crop."""


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A prepared table as strings ('' where empty); :class:`PreparedDataError` when it or a column is missing."""
    if not path.is_file():
        raise PreparedDataError(f"{path}: missing (run python -m preprocessing.prepare first)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PreparedDataError(f"{path}: missing column(s) {missing}")
    return table


def read_prepared(root: str | Path) -> pd.DataFrame:
    """``crops.csv`` of the videos ``videos.csv`` marks ``ok``, typed: ``frame``, ``track``, ``label``
    and ``fold`` int, landmarks float (NaN where absent), ``mask`` / ``real_crop`` '' where absent."""
    root = Path(root)
    crops = read_table(root / "crops.csv", CROP_COLUMNS)
    videos = read_table(root / "videos.csv", REQUIRED_VIDEO_COLUMNS)
    unknown = sorted(set(crops["video"]) - set(videos["video"]))
    if unknown:
        raise PreparedDataError(f"{root / 'crops.csv'}: video(s) absent from videos.csv: {unknown[:5]}")
    crops = crops[crops["video"].isin(videos.loc[videos["status"] == "ok", "video"])].copy()
    try:
        for column in ("frame", "track", "label", "fold"):
            crops[column] = crops[column].astype(int)
        for column in LANDMARK_COLUMNS:
            crops[column] = pd.to_numeric(crops[column].replace("", np.nan))
    except ValueError as err:
        raise PreparedDataError(f"{root / 'crops.csv'}: {err}") from err
    bad = sorted(set(crops["label"]) - {0, 1})
    if bad:
        raise PreparedDataError(f"{root / 'crops.csv'}: labels must be 0 or 1, found {bad}")
    return crops.reset_index(drop=True)


def _read_image(path: Path, flag: int, kind: str) -> np.ndarray:
    image = cv2.imread(str(path), flag) if path.is_file() else None
    if image is None:
        cause = "cannot be decoded (empty, truncated or not an image)" if path.is_file() else "missing"
        raise PreparedDataError(f"{kind} file {path}: {cause}")
    return image


def read_crop(path: Path) -> np.ndarray:
    """An RGB uint8 crop; :class:`PreparedDataError` naming the file when it is missing or undecodable."""
    return cv2.cvtColor(_read_image(path, cv2.IMREAD_COLOR, "crop"), cv2.COLOR_BGR2RGB)


def read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """An 8-bit difference mask of a crop of ``shape``; :class:`PreparedDataError` naming the file when
    it is missing, undecodable or not the crop's size."""
    mask = _read_image(path, cv2.IMREAD_GRAYSCALE, "mask")
    if mask.shape != shape[:2]:
        raise PreparedDataError(f"mask file {path}: size {mask.shape} differs from its crop's {shape[:2]}")
    return mask
