"""Shared fixtures: the real clips of ``../shared/data`` (or ``$DEEPFAKE_DATA``) and one detector."""
from __future__ import annotations

import os
from pathlib import Path

# The suite runs offline: keep albumentations and the Hugging Face hub from reaching the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

DATA_ENV = "DEEPFAKE_DATA"
REPO = Path(__file__).resolve().parents[1]


def find_data() -> Path | None:
    """The data folder, or None; for parametrising at collection time (tests still use ``data_dir``)."""
    candidates = [os.environ.get(DATA_ENV), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "labels.csv").is_file():
            return Path(candidate)
    return None


def link_tree(source: Path, target: Path, paths) -> Path:
    """Recreate ``paths`` (relative to ``source``) under ``target`` as symbolic links: a dataset
    layout of a few real clips, without copying them. Returns ``target``."""
    for path in paths:
        link = target / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source / path)
    return target


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real labelled clips. Under CI its absence fails the test instead of skipping it."""
    found = find_data()
    if found is None:
        message = f"shared data not found: set {DATA_ENV} or place it at {REPO.parent / 'shared' / 'data'}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def labels(data_dir: Path) -> pd.DataFrame:
    """``labels.csv`` with an absolute ``file`` column added."""
    table = pd.read_csv(data_dir / "labels.csv", dtype=str, keep_default_na=False)
    table["file"] = [str(data_dir / p) for p in table["path"]]
    return table


@pytest.fixture(scope="session")
def detector():
    """One MTCNN detector with the default (kernel) settings, shared by the whole session."""
    from preprocessing.detect import FaceDetector

    return FaceDetector()


#: Frame-aligned FF++ c40 pairs for ``prepared_dir``: (original, group, fold, fakes as ``Method/X_Y``).
PREPARED_SOURCES = (
    ("183", "ffpp:youtube:183", 0, ("Deepfakes/183_253", "FaceSwap/183_253", "NeuralTextures/183_253")),
    ("481", "ffpp:youtube:469", 1, ("Deepfakes/481_469",)),
)


def build_prepared(data_dir: Path, out: Path, frames: int = 2) -> Path:
    """Write a small prepared folder that follows the README's prepared-data contract, from real data.

    MTCNN (training thresholds) finds the faces on ``frames`` frames of each original in
    :data:`PREPARED_SOURCES`; every fake is cropped with its original's boxes on the same frames, and
    its difference mask is where the blurred crops differ by more than 20 levels in some channel.
    """
    import cv2
    import numpy as np

    from preprocessing.detect import TRAINING_THRESHOLDS, FaceDetector
    from preprocessing.faces import find_faces
    from preprocessing.fileio import atomic_write, write_json, write_png
    from preprocessing.video import read_frames

    detector = FaceDetector(thresholds=TRAINING_THRESHOLDS)
    root = data_dir / "ffpp"
    videos, crops = [], []

    def add_video(video_id, clip, label, original, method, group, fold):
        videos.append({
            "video": video_id, "path": str(root / f"{video_id}.mp4"), "label": label, "original": original,
            "dataset": "ffpp", "method": method, "group": group, "fold": fold, "frame_count": clip.frame_count,
            "width": clip.images[0].shape[1], "height": clip.images[0].shape[0], "status": "ok",
            "boxes_from": "original" if label else "self",
        })

    def add_crop(video_id, face, crop, label, group, fold, mask="", real_crop=""):
        name = f"crops/{video_id}/{face.frame:05d}_{face.track}"
        write_png(out / f"{name}.png", crop)
        landmarks = {f"lm{i}_{axis}": round(float(v), 2)
                     for i, point in enumerate(face.crop_landmarks) for axis, v in zip("xy", point)}
        crops.append({"video": video_id, "crop": f"{name}.png", "mask": mask, "real_crop": real_crop,
                      "frame": face.frame, "track": face.track, "label": label, "group": group, "fold": fold,
                      **landmarks})
        return f"{name}.png"

    for original, group, fold, fakes in PREPARED_SOURCES:
        original_id = f"original_sequences/youtube/c40/videos/{original}"
        real = read_frames(root / f"{original_id}.mp4", frames)
        faces = find_faces(real, detector)
        add_video(original_id, real, 0, "", "", group, fold)
        real_paths = [add_crop(original_id, face, face.crop, 0, group, fold) for face in faces]
        for fake in fakes:
            method = fake.split("/")[0]
            fake_id = f"manipulated_sequences/{method}/c40/videos/{fake.split('/')[1]}"
            clip = read_frames(root / f"{fake_id}.mp4", frames)
            assert list(clip.indices) == list(real.indices), f"{fake_id} is not frame-aligned with {original_id}"
            add_video(fake_id, clip, 1, original_id, method, group, fold)
            for face, real_path in zip(faces, real_paths):
                x1, y1, x2, y2 = face.crop_box
                crop = clip.images[list(clip.indices).index(face.frame)][y1:y2, x1:x2]
                blurred = [cv2.GaussianBlur(c, (5, 5), 0).astype(np.int16) for c in (face.crop, crop)]
                mask = np.where(np.abs(blurred[0] - blurred[1]).max(axis=2) > 20, 255, 0).astype(np.uint8)
                mask_path = f"crops/{fake_id}/{face.frame:05d}_{face.track}_mask.png"
                write_png(out / mask_path, mask)
                add_crop(fake_id, face, crop, 1, group, fold, mask_path, real_path)

    for name, rows in (("videos.csv", videos), ("crops.csv", crops)):
        with atomic_write(out / name, "w", newline="") as f:
            pd.DataFrame(rows).to_csv(f, index=False)
    write_json(out / "config.json", {"dataset": "ffpp", "root": str(root), "frames": frames, "margin": 0.3,
                                     "thresholds": list(TRAINING_THRESHOLDS), "built_by": "tests/conftest.py"})
    write_json(out / "summary.json", {"videos": len(videos), "crops": len(crops), "failed": []})
    return out


@pytest.fixture(scope="session")
def prepared_dir(data_dir: Path, tmp_path_factory) -> Path:
    """A small prepared folder (the README's contract) built from real FF++ c40 pairs: 2 originals in
    folds 0 and 1, 4 fakes cropped with their originals' boxes, with difference masks and landmarks.
    Shared by the session: copy it before changing it."""
    return build_prepared(data_dir, tmp_path_factory.mktemp("prepared"))


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread: tiny models gain nothing from more, and two OpenMP threads
    spin against each other on a busy 2-core machine (measured: 0.06 s vs 8 s for one training step)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
