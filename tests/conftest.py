"""Shared fixtures: the real clips of ``../shared/data`` (or ``$DEEPFAKE_DATA``) and one detector."""
from __future__ import annotations

import os
import time
from pathlib import Path

# The suite runs offline: keep albumentations and the Hugging Face hub from reaching the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

DATA_ENV = "DEEPFAKE_DATA"
REPO = Path(__file__).resolve().parents[1]
#: The earlier demo checkpoint (MobileNetV3, random init, 160 px): a real trained model for tests of the
#: notebook API, the report and Grad-CAM, where what matters is the mechanics, not the detector.
DEMO_WEIGHTS = REPO / "tests" / "fixtures" / "cpu_demo.pt"


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


def assert_group_ends(group: int, timeout: float = 30.0) -> None:
    """Fail unless every process of process group ``group`` is gone within ``timeout`` seconds (what
    a command stopped by SIGTERM must leave: no orphaned worker)."""
    limit = time.monotonic() + timeout
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < limit, f"processes of group {group} outlived the command"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real labelled clips. Under CI its absence fails the test instead of skipping it."""
    found = find_data()
    if found is None:
        missing(f"shared data not found: set {DATA_ENV} or place it at {REPO.parent / 'shared' / 'data'}")
    return found


def missing(message: str) -> None:
    """Stop a test whose shared input is absent: fail under CI, skip elsewhere, saying ``message``."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def lrnet_dir(data_dir: Path) -> Path:
    """``published/lrnet`` beside the data folder: the LRNet authors' weights, demo landmark files and
    videos, and their own outputs (``reference_outputs.json``); as for ``data_dir``, absent: skip (CI: fail)."""
    found = data_dir.parent / "published" / "lrnet"
    if not (found / "reference_outputs.json").is_file():
        missing(f"LRNet's published files not found at {found}")
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


#: Frame-aligned FF++ c40 clips for ``prepared_dir``: two originals and four fakes cropped with their boxes.
PREPARED_CLIPS = (
    "original_sequences/youtube/c40/videos/183.mp4",
    "manipulated_sequences/Deepfakes/c40/videos/183_253.mp4",
    "manipulated_sequences/FaceSwap/c40/videos/183_253.mp4",
    "manipulated_sequences/NeuralTextures/c40/videos/183_253.mp4",
    "original_sequences/youtube/c40/videos/481.mp4",
    "manipulated_sequences/Deepfakes/c40/videos/481_469.mp4",
)


def build_prepared(data_dir: Path, folder: Path, frames: int = 2) -> Path:
    """Run ``preprocessing.prepare`` on :data:`PREPARED_CLIPS` (linked under ``folder/ffpp``) into
    ``folder/prepared`` and return that: 2 originals in folds 0 and 1, 4 fakes cropped with their
    originals' boxes, with difference masks and landmarks."""
    from preprocessing.prepare import PrepareConfig, prepare

    root = link_tree(data_dir / "ffpp", folder / "ffpp", PREPARED_CLIPS)
    prepare(PrepareConfig("ffpp", str(root), str(folder / "prepared"), frames=frames, folds=2, workers=0))
    return folder / "prepared"


@pytest.fixture(scope="session")
def prepared_dir(data_dir: Path, tmp_path_factory) -> Path:
    """:func:`build_prepared` at 2 frames, shared by the session: copy it before changing it."""
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


@pytest.fixture
def cpu_only(monkeypatch):
    """Run a test as on a CPU-only machine, in this process and the ones it forks: for tests that
    compare numbers bit for bit with CPU runs, or fork after CUDA may have been initialised."""
    from tests.fakecuda import hide_cuda

    hide_cuda(monkeypatch)


#: Two 256x256 DFDC face clips (one face; two faces) for the notebook API and report tests.
DEMO_CLIPS = ("dfdc_face_crops/FAKE/0_aaqaifqrwn.mp4_0_0.mp4", "dfdc_face_crops/REAL/0_aayrffkzxn.mp4_0_0.mp4")


@pytest.fixture(scope="session")
def demo_scores(data_dir: Path, tmp_path_factory):
    """``kernels.api.score_videos`` on :data:`DEMO_CLIPS` plus an unreadable ``broken.mp4``, with the
    shipped demo checkpoint, 3 frames, strategy ``confident``, crops kept as arrays. Returns
    ``(scores, ensemble, folder, out)``; shared by the session: do not change it."""
    from kernels.api import load_ensemble, score_videos

    folder = link_tree(data_dir / "dfdc_face_crops", tmp_path_factory.mktemp("demo") / "videos",
                       [Path(c).relative_to("dfdc_face_crops") for c in DEMO_CLIPS])
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    ensemble = load_ensemble([DEMO_WEIGHTS], precision="fp32")
    out = folder.parent / "out" / "submission.csv"
    return score_videos(folder, ensemble, out, frames=3, workers=0, strategy="confident"), ensemble, folder, out


def _teaching_crops(data_dir: Path) -> list[np.ndarray]:
    """Two frames of every other ``dfdc_face_crops`` clip but the demo clips: 256 px face crops (RGB)."""
    from preprocessing.video import read_frames

    clips = [p for p in sorted((data_dir / "dfdc_face_crops").rglob("*.mp4"))
             if p.relative_to(data_dir).as_posix() not in DEMO_CLIPS]
    return [image for clip in clips[::2] for image in read_frames(clip, 2).images]


def red_minus_blue(crops) -> np.ndarray:
    """Mean red minus mean blue of each RGB crop: what :func:`checkpoint` learnt to score."""
    return np.array([c[..., 0].mean(dtype=np.float64) - c[..., 2].mean(dtype=np.float64) for c in crops])


@pytest.fixture(scope="session")
def checkpoint(data_dir: Path, tmp_path_factory) -> Path:
    """A tiny zoo model (mobilenetv3_small_050 at 64 px, ImageNet normalisation) in the project's
    checkpoint format whose scores differ clearly between crops: trained here (60 Adam steps on 20
    face crops, about 3 s) to give as its logit the crop's standardised mean red minus mean blue.
    So a colour-channel swap, another normalisation or another crop moves its output by about 0.1
    (its fp32 scores spread about 0.2 across faces), far above bf16's rounding (under 1e-2)."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.zoo import ModelConfig, build_model, to_batch

    crops = _teaching_crops(data_dir)
    rule = red_minus_blue(crops)
    target = torch.tensor(1.5 * (rule - rule.mean()) / rule.std(), dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(ModelConfig("mobilenetv3_small_050", 64))
    batch = to_batch(crops, model.config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, model.eval())
    return path
