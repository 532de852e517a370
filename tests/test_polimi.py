"""Polimi's published checkpoints (icpr2020dfdc): each of the five architectures converted exactly,
refused when its layout is off by one key, and scored by ``kernels.predict --preset polimi`` as their
own inference scores it (``tests/polimi_reference.py``, written from their source, given the same
MTCNN boxes)."""
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from kernels import predict
from models.checkpoint import load_model, read_checkpoint
from models.zoo import to_batch
from tests import polimi_reference as polimi
from tests.clips import floor_spaced_frames
from tests.conftest import DEMO_CLIPS
from training import convert

CLIP = "dfdc/train_sample_videos/abqwwspghj.mp4"  # 1080p, one face
FRAMES = 3  # the preset's 32, cut for a 2-core test machine
SETTLING = ("dfdc_face_crops/FAKE/0_aaqaifqrwn.mp4_0_0.mp4", "dfdc_face_crops/REAL/0_aayrffkzxn.mp4_0_0.mp4",
            "ffpp/original_sequences/youtube/c40/videos/183.mp4")


def reference_faces(path: Path, detector) -> tuple[list[int], list[np.ndarray], int]:
    """Each frame's most confident MTCNN face, cut as Polimi cut it: frame ids, crops, and the most
    faces MTCNN found in one frame (an image is one frame)."""
    if path.suffix == ".png":
        ids, frames = [0], [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)]
    else:
        ids, frames = floor_spaced_frames(path, FRAMES)
    found = detector(frames)
    kept = [(i, polimi.crop(frame, det.boxes[polimi.best_face(det.boxes, det.scores)]))
            for i, frame, det in zip(ids, frames, found) if len(det)]
    return [i for i, _ in kept], [c for _, c in kept], max(len(det) for det in found)


@pytest.fixture(scope="module")
def settling_crops(data_dir, detector) -> torch.Tensor:
    """Real faces, cut the Polimi way, to set the random models' batch-norm statistics by."""
    crops = []
    for clip in SETTLING:
        crops += reference_faces(data_dir / clip, detector)[1]
    return polimi.normalise(crops)


@pytest.fixture(scope="module")
def published(settling_crops, tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Each architecture as a published file (their names, their layout, random weights settled on
    real faces so that outputs spread) and the reference model it holds."""
    folder = tmp_path_factory.mktemp("polimi")
    files = {}
    for seed, name in enumerate(polimi.ARCHITECTURES):
        torch.manual_seed(seed)
        model = polimi.settle(polimi.build(name), settling_crops, seed=seed)
        path = folder / f"{name}_DFDC_bestval-0123abcd.pth"
        torch.save(model.state_dict(), path)
        files[name] = path, model
    return files


@pytest.fixture(scope="module")
def converted(published, tmp_path_factory) -> dict[str, Path]:
    """All five converted in one call, the format guessed from the keys."""
    out = tmp_path_factory.mktemp("converted")
    assert convert.main([str(path) for path, _ in published.values()] + ["--out", str(out)]) == 0
    return {name: out / f"{path.stem}.pt" for name, (path, _) in published.items()}


def test_each_architecture_is_told_from_its_keys_and_carries_polimi_s_spec(published, converted):
    for name, path in converted.items():
        assert read_checkpoint(path)["source"] == {"format": "polimi", "architecture": name,
                                                   "file": published[name][0].name}
        model = load_model(path)
        spec = model.spec
        assert (spec.size, spec.margin, spec.box_rule, spec.resize, spec.shrink, spec.aggregate) == \
            ((224, 224), (0.2, 0.2), "square", "stretch", "pil-bilinear", "logitmean")
        assert model.config.attention_block == (9 if "Att" in name else None)
        assert model.config.encoder.startswith("legacy_xception" if name == "Xception" else "tf_efficientnet_b4")


@pytest.mark.parametrize("name", polimi.ARCHITECTURES)
def test_the_converted_model_gives_the_published_model_s_logits(published, converted, settling_crops, name):
    crops = [np.asarray(c) for c in polimi_crops(settling_crops)]
    model = load_model(converted[name]).eval()
    with torch.no_grad():
        ours = model(to_batch(crops, model.spec)).double().numpy()
    theirs = polimi.logits(published[name][1], crops)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.ptp(theirs) > 0.1  # the logits spread between faces: a wrong layer would show


def polimi_crops(batch: torch.Tensor) -> list[np.ndarray]:
    """The uint8 crops behind a normalised batch (rounding undoes the normalisation exactly)."""
    mean, std = np.array(polimi.MEAN) * 255, np.array(polimi.STD) * 255
    return list(np.rint(batch.permute(0, 2, 3, 1).numpy() * std + mean).clip(0, 255).astype(np.uint8))


def test_their_current_padding_would_be_caught(published, settling_crops):
    """efficientnet-pytorch 0.7, which their code installs today, pads block 6 by 2 on every side at
    224 px where the 0.6 they trained with (and timm) pads (1, 2): the parity test tells them apart."""
    model = published["EfficientNetB4"][1]
    crops = polimi_crops(settling_crops)
    trained = polimi.logits(model, crops)
    conv = model.efficientnet._blocks[6]._depthwise_conv
    saved = conv.static_padding
    conv.static_padding = torch.nn.ZeroPad2d(2)
    try:
        today = polimi.logits(model, crops)
    finally:
        conv.static_padding = saved
    assert np.abs(today - trained).max() > 1e-3


@pytest.mark.parametrize("damage, architecture, named", [
    (lambda sd: sd.pop("efficientnet._blocks.6._depthwise_conv.weight"), "EfficientNetB4",
     "missing keys efficientnet._blocks.6._depthwise_conv.weight"),
    (lambda sd: sd.update({"classifier.1.weight": sd.pop("classifier.weight")}), "EfficientNetB4",
     "unexpected keys classifier.1.weight"),
    (lambda sd: sd.update({"efficientnet.attconv.weight": torch.zeros(1, 48, 1, 1)}), "EfficientNetAutoAttB4",
     "efficientnet.attconv.weight (1, 48, 1, 1) in file vs (1, 56, 1, 1)"),
    (lambda sd: sd.pop("classifier.0.running_var"), "EfficientNetB4ST", "missing keys classifier.0.running_var"),
    (lambda sd: sd.pop("feat_ext.classifier.bias"), "EfficientNetAutoAttB4ST", "missing keys feat_ext.classifier.bias"),
    (lambda sd: sd.pop("xception.block12.skipbn.running_mean"), "Xception",
     "missing keys xception.block12.skipbn.running_mean"),
])
def test_a_layout_off_by_one_key_is_refused_with_the_key_named(published, damage, architecture, named):
    weights = dict(published[architecture][1].state_dict())
    damage(weights)
    with pytest.raises(convert.ConvertError, match=f"bad: not the polimi layout \\({architecture}\\): .*{re.escape(named)}"):
        convert.our_weights(weights, "polimi", Path("bad"))


def test_the_polimi_preset_scores_as_their_own_inference(published, converted, data_dir, detector, tmp_path):
    """Per-face and per-video scores of ``--preset polimi`` (all five models in one ensemble) equal
    Polimi's inference re-implemented, fp32, given the same MTCNN boxes, on a 1080p clip and on a
    picture of two people, of whom only the more confident face is scored."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").symlink_to(data_dir / CLIP)
    # two people in one picture: the first frames of the two demo face clips side by side
    two = [floor_spaced_frames(data_dir / clip, 2)[1][0] for clip in DEMO_CLIPS]
    cv2.imwrite(str(videos / "two.png"), cv2.cvtColor(np.hstack(two), cv2.COLOR_RGB2BGR))
    out = tmp_path / "submission.csv"
    assert predict.main(["--videos", str(videos), "--out", str(out), "--weights", *map(str, converted.values()),
                         "--preset", "polimi", "--frames", str(FRAMES), "--workers", "0", "--precision", "fp32",
                         "--device", "cpu"]) == 0
    details = pd.read_csv(out.with_name("submission_details.csv")).set_index("filename")
    records = {r["filename"]: r for r in map(json.loads, out.with_suffix(".progress.jsonl").read_text().splitlines())
               if "filename" in r}
    most = {}
    for video, frames in (("clip.mp4", FRAMES), ("two.png", 1)):
        ids, crops, most[video] = reference_faces(videos / video, detector)
        record, row = records[video], details.loc[video]
        assert record["frame_ids"] == ids and row["faces"] == len(crops) == frames
        scores = []
        for name, path in converted.items():
            theirs = polimi.logits(published[name][1], crops)
            np.testing.assert_allclose(record["probs"][path.stem], 1 / (1 + np.exp(-theirs)), atol=1e-5)
            scores.append(polimi.video_score(theirs))
            assert math.isclose(row[f"score_{path.stem}"], scores[-1], abs_tol=1e-4)
        assert math.isclose(row["label"], np.mean(scores), abs_tol=1e-4)
    assert most == {"clip.mp4": 1, "two.png": 2}  # two people: the more confident face was the one scored


def test_the_square_crop_equals_theirs_pixel_for_pixel_on_awkward_boxes():
    """Their margin, 512-px window and ``extract_bb`` square, box by box: faces at the edges and
    corners, bigger than the window, tiny, with .5 fractions, and sides whose ``int(224 / (224 / h))``
    is h - 1 (100, 200); on a noise frame, where a pixel off shows."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    boxes = [(900, 400, 1000, 500), (900, 400, 990, 600), (-20, -30, 150, 160), (1800, 950, 1930, 1090),
             (700, 300, 1400, 1000), (10.5, 20.5, 14.5, 30.5), (960.5, 540.5, 1060.5, 640.5)]
    x, y = rng.uniform(-50, 1900, 200), rng.uniform(-50, 1060, 200)
    boxes += list(zip(x, y, x + rng.uniform(5, 700, 200), y + rng.uniform(5, 700, 200)))
    spec = convert.POLIMI_SPEC
    for box in np.asarray(boxes, dtype=np.float32):
        np.testing.assert_array_equal(spec.fit(spec.cut(frame, box)), polimi.crop(frame, box), err_msg=str(box))
