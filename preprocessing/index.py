"""Index a dataset: one table of every video with its label, original, method and leak-free group.

Three layouts are read, none of them by decoding a video:

- ``dfdc``: every ``metadata.json`` under the root (``dfdc_train_part_*/``, ``train_sample_videos/``),
  ``{"name.mp4": {"label": "FAKE"|"REAL", "original": "other.mp4"|null, ...}}``; a fake's original
  lies in the same folder. A part is never split across folds.
- ``ffpp``: FaceForensics++'s ``original_sequences/{youtube,actors}/<comp>/videos/X.mp4`` and
  ``manipulated_sequences/<Method>/<comp>/videos/X_Y.mp4`` (original ``X``, face of ``Y``; the
  DeepFakeDetection fakes ``A_B__scene__code.mp4`` have the original ``A__scene``). ``X``, ``Y`` and
  every fake made from either share a group, whatever the compression.
- ``folder``: any folder with a ``labels.csv`` of ``path,label[,original][,group][,method]``; paths
  (the original's too) relative to the root, labels ``0``/``1`` or ``REAL``/``FAKE``.

The table (:data:`INDEX_COLUMNS`) names a video by its path relative to the root without the
extension (``/``-separated); ``path`` is absolute; ``label`` is 0 for real, 1 for fake;
``original`` is the original's id or ``""``. Files that are listed but absent are logged once,
left out of the table and returned in :attr:`Index.absent`. A fake whose original is absent stays
in (``prepare`` crops it with its own detections).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from .folds import connected_groups
from .video import VIDEO_EXTENSIONS, find_videos

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["video", "path", "label", "original", "dataset", "method", "group"]
DATASETS = ("dfdc", "ffpp", "folder")
LABEL_NAMES = {"0": 0, "1": 1, "real": 0, "fake": 1}
FOLDER_COLUMNS = ("path", "label", "original", "group", "method", "dataset")

#: FF++ fakes: ``X_Y`` (YouTube ids) and ``A_B__scene__code`` (DeepFakeDetection actors).
_YOUTUBE_FAKE = re.compile(r"^(?P<x>[^_]+)_(?P<y>[^_]+)$")
_ACTOR_FAKE = re.compile(r"^(?P<x>[^_]+)_(?P<y>[^_]+)__(?P<scene>.+)__[^_]+$")


class Index(NamedTuple):
    """``videos``: the table (:data:`INDEX_COLUMNS`); ``absent``: ids listed but not found, sorted."""

    videos: pd.DataFrame
    absent: list[str]


def video_id(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, without its extension, ``/``-separated."""
    return path.relative_to(root).with_suffix("").as_posix()


def _table(rows: list[dict], keys: list[list[str]], root: Path, absent: list[str], source: str) -> Index:
    if absent:
        log.warning("%d of %d videos listed in %s are absent and left out (e.g. %s)",
                    len(absent), len(absent) + len(rows), source, ", ".join(sorted(absent)[:3]))
    table = pd.DataFrame(rows, columns=[c for c in INDEX_COLUMNS if c != "group"])
    duplicated = table["video"][table["video"].duplicated()]
    if len(duplicated):
        raise ValueError(f"{root}: two files share the video id {duplicated.iloc[0]!r} (same name, other extension)")
    table["group"] = connected_groups(keys) if rows else []
    table["label"] = table["label"].astype("int64")
    orphans = table[(table["original"] != "") & ~table["original"].isin(table["video"])]
    if len(orphans):
        log.info("%d fakes have no original present; they will be cropped with their own detections", len(orphans))
    return Index(table.sort_values("video", ignore_index=True), sorted(absent))


def index_dfdc(root: str | Path) -> Index:
    """Index every ``metadata.json`` under ``root`` (DFDC); each folder holding one is a group."""
    root = Path(root).resolve()
    files = sorted(root.rglob("metadata.json"))
    if not files:
        raise FileNotFoundError(f"{root}: no metadata.json found (expected dfdc_train_part_*/metadata.json)")
    rows, keys, absent = [], [], []
    for meta in files:
        part = meta.parent
        part_name = root.name if part == root else part.relative_to(root).as_posix()
        try:
            entries = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{meta}: not a readable metadata.json ({err})") from None
        for name, entry in sorted(entries.items()):
            path = part / name
            vid = video_id(path, root)
            if not path.is_file():
                absent.append(vid)
                continue
            if entry.get("label") not in ("REAL", "FAKE"):
                raise ValueError(f"{meta}: {name} has label {entry.get('label')!r}, expected REAL or FAKE")
            original = video_id(part / entry["original"], root) if entry.get("original") else ""
            rows.append({"video": vid, "path": str(path), "label": int(entry["label"] == "FAKE"),
                         "original": original, "dataset": "dfdc", "method": ""})
            keys.append(["dfdc:" + part_name, "video:" + (original or vid)])
    return _table(rows, keys, root, absent, f"{len(files)} metadata.json file(s)")


def _ffpp_fake(path: Path, root: Path) -> tuple[str, list[str]] | None:
    """The original's id and the identity keys of an FF++ fake, or None for an unknown name."""
    comp = path.parts[-3]
    actor = _ACTOR_FAKE.match(path.stem)
    if actor:
        original = root / "original_sequences" / "actors" / comp / "videos" / f"{actor['x']}__{actor['scene']}"
        return original.relative_to(root).as_posix(), [f"ffpp:actors:{actor['x']}", f"ffpp:actors:{actor['y']}"]
    youtube = _YOUTUBE_FAKE.match(path.stem)
    if youtube:
        original = root / "original_sequences" / "youtube" / comp / "videos" / youtube["x"]
        return original.relative_to(root).as_posix(), [f"ffpp:youtube:{youtube['x']}", f"ffpp:youtube:{youtube['y']}"]
    return None


def index_ffpp(root: str | Path) -> Index:
    """Index a FaceForensics++ download (``original_sequences`` and ``manipulated_sequences``)."""
    root = Path(root).resolve()
    if not (root / "original_sequences").is_dir() and not (root / "manipulated_sequences").is_dir():
        raise FileNotFoundError(f"{root}: neither original_sequences/ nor manipulated_sequences/ found")
    rows, keys = [], []
    for path in find_videos(root / "original_sequences"):
        source = path.relative_to(root).parts[1]
        identity = path.stem.split("__")[0] if source == "actors" else path.stem
        rows.append({"video": video_id(path, root), "path": str(path), "label": 0, "original": "",
                     "dataset": "ffpp", "method": ""})
        keys.append([f"ffpp:{source}:{identity}"])
    for path in find_videos(root / "manipulated_sequences"):
        parts = path.relative_to(root).parts
        if len(parts) != 5 or parts[2] == "masks" or parts[3] != "videos":
            continue  # the masks/ videos and anything outside <Method>/<comp>/videos
        parsed = _ffpp_fake(path, root)
        if parsed is None:
            log.warning("%s: not an FF++ fake name (X_Y or A_B__scene__code); left out", path)
            continue
        original, identities = parsed
        rows.append({"video": video_id(path, root), "path": str(path), "label": 1, "original": original,
                     "dataset": "ffpp", "method": parts[1]})
        keys.append(identities)
    return _table(rows, keys, root, [], str(root))


def _label(value: str, where: str) -> int:
    label = LABEL_NAMES.get(str(value).strip().lower())
    if label is None:
        raise ValueError(f"{where}: label {value!r} is not one of 0, 1, REAL, FAKE")
    return label


def index_folder(root: str | Path, labels_csv: str | Path | None = None) -> Index:
    """Index the videos a ``labels.csv`` (default ``root/labels.csv``) lists; paths relative to ``root``."""
    root = Path(root).resolve()
    labels_csv = Path(labels_csv) if labels_csv else root / "labels.csv"
    if not labels_csv.is_file():
        raise FileNotFoundError(f"{labels_csv}: no such labels file "
                                f"(columns {', '.join(FOLDER_COLUMNS)}; path and label required)")
    table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise ValueError(f"{labels_csv}: missing column(s) {missing}; columns are {', '.join(FOLDER_COLUMNS)}")
    ignored = sorted(set(table.columns) - set(FOLDER_COLUMNS))
    if ignored:
        log.info("%s: ignoring column(s) %s", labels_csv, ", ".join(ignored))
    rows, keys, absent = [], [], []
    for line, record in enumerate(table.to_dict("records"), start=2):
        path = root / record["path"]
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise ValueError(f"{labels_csv}:{line}: {record['path']!r} does not end in a video extension")
        vid = video_id(path, root)
        if not path.is_file():
            absent.append(vid)
            continue
        original = record.get("original", "")
        original = video_id(root / original, root) if original else ""
        rows.append({"video": vid, "path": str(path), "label": _label(record["label"], f"{labels_csv}:{line}"),
                     "original": original, "dataset": record.get("dataset") or "folder",
                     "method": record.get("method", "")})
        keys.append(["video:" + (original or vid)] + (["group:" + record["group"]] if record.get("group") else []))
    return _table(rows, keys, root, absent, str(labels_csv))


def build_index(dataset: str, root: str | Path, labels_csv: str | Path | None = None) -> Index:
    """Index ``root`` as ``dataset`` (one of :data:`DATASETS`).

    A ``root`` that is not a folder, or whose index holds no video present on disk, is a
    :class:`FileNotFoundError` naming it.
    """
    indexers = {"dfdc": index_dfdc, "ffpp": index_ffpp, "folder": lambda r: index_folder(r, labels_csv)}
    if dataset not in indexers:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    index = indexers[dataset](root)
    if index.videos.empty:
        raise FileNotFoundError(f"{root}: no video found ({len(index.absent)} listed but absent)")
    return index
