"""Published checkpoints: converted exactly, refused when the layout is off by one key, and scored by
the kernel's preset as their own solution scored them (an independent re-implementation, here)."""
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from kernels import predict
from tests.clips import floor_spaced_frames
from training import convert
from models.checkpoint import load_model, read_checkpoint

CLIP = "dfdc/train_sample_videos/abqwwspghj.mp4"  # one face in every frame, 1080p
FRAMES = 3  # the preset's 32, cut for a 2-core test machine; int(149.5) tells floor from round
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


class WinnerClassifier(torch.nn.Module):
    """The 1st-place model as its training/zoo/classifiers.py builds it: the whole timm
    tf_efficientnet_b7_ns (1000-class head included, unused) and a 2560 -> 1 Linear on the
    average-pooled forward_features."""

    def __init__(self):
        super().__init__()
        self.encoder = timm.create_model("tf_efficientnet_b7.ns_jft_in1k", pretrained=False)
        self.fc = torch.nn.Linear(2560, 1)

    def forward(self, x):
        return self.fc(self.encoder.forward_features(x).mean(dim=(2, 3)))


# --- the winner's inference, re-written from its description (kernel_utils.py, predict_folder.py) ----

def winner_faces(frames, mtcnn):
    faces = []
    for frame in frames:
        image = Image.fromarray(frame)
        boxes, _ = mtcnn.detect(image.resize(size=[s // 2 for s in image.size]), landmarks=False)
        for box in [] if boxes is None else boxes:
            xmin, ymin, xmax, ymax = [int(b * 2) for b in box]
            p_w, p_h = (xmax - xmin) // 3, (ymax - ymin) // 3
            faces.append(frame[max(ymin - p_h, 0):ymax + p_h, max(xmin - p_w, 0):xmax + p_w])
    return faces


def winner_input(face, size=380):
    h, w = face.shape[:2]
    if max(w, h) != size:
        if w > h:
            scale = size / w
            w, h = size, h * scale
        else:
            scale = size / h
            w, h = w * scale, size
        face = cv2.resize(face, (int(w), int(h)), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    square = np.zeros((size, size, 3), np.uint8)
    top, left = (size - face.shape[0]) // 2, (size - face.shape[1]) // 2
    square[top:top + face.shape[0], left:left + face.shape[1]] = face
    return square


def winner_confident(pred, t=0.8):
    fakes = np.count_nonzero(pred > t)
    if fakes > len(pred) // 2.5 and fakes > 11:
        return np.mean(pred[pred > t])
    if np.count_nonzero(pred < 0.2) > 0.9 * len(pred):
        return np.mean(pred[pred < 0.2])
    return np.mean(pred)


def winner_score(path, models, mtcnn):
    """The video's score and the first model's face probabilities."""
    faces = winner_faces(floor_spaced_frames(path, FRAMES)[1], mtcnn)[:127]
    x = torch.tensor(np.stack([winner_input(f) for f in faces]), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    x = (x - torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)) / torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = [torch.sigmoid(m(x).squeeze(1)).numpy() for m in models]
    return float(np.mean([winner_confident(p) for p in probs])), probs[0]


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def published(data_dir, tmp_path_factory):
    """A file in the winner's exact layout: random weights, batch-norm statistics from a train-mode
    pass over real face crops, the head scaled so its logits spread (std 2) over those faces."""
    torch.manual_seed(0)
    model = WinnerClassifier()
    images = sorted((data_dir / "face_images" / "dfdc").rglob("*.png"))[:4]
    crops = [winner_input(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)) for p in images]
    batch = (torch.tensor(np.stack(crops), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0 - 0.45) / 0.225
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average of the passes
    model.train()
    with torch.no_grad():
        model.encoder.forward_features(batch)
        model.eval()
        logits = model(batch).squeeze(1)  # then logits of mean 0 and std 2 on these faces
        model.fc.weight.mul_(2 / logits.std())
        model.fc.bias.sub_(model(batch).mean())
    path = tmp_path_factory.mktemp("published") / "final_111_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36"
    torch.save({"epoch": 37, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "bce_best": np.float64(0.21)}, path)
    return path, model


@pytest.fixture(scope="module")
def published_payload(published):
    return torch.load(published[0], weights_only=False)


@pytest.fixture(scope="module")
def converted(published, tmp_path_factory):
    out = tmp_path_factory.mktemp("weights") / "selim0.pt"
    assert convert.main([str(published[0]), "--out", str(out)]) == 0  # the format guessed from the keys
    return out


# --- tests ----------------------------------------------------------------------------------------

def test_the_converted_file_describes_itself_and_loads_strictly(converted, published):
    payload = read_checkpoint(converted)
    assert payload["source"] == {"format": "selim", "architecture": "DeepFakeClassifier", "file": published[0].name,
                                 "epoch": 37, "bce_best": 0.21}
    spec = load_model(converted).spec
    assert (spec.size, spec.margin, spec.box_rule, spec.shrink, spec.enlarge) == ((380, 380), (1 / 3, 1 / 3), "truncate", "area", "cubic")
    torch.testing.assert_close(payload["state_dict"]["head.weight"], published[1].fc.weight, rtol=0, atol=0)


@pytest.mark.parametrize("damage, named", [
    (lambda sd: sd.pop("module.encoder.conv_head.weight"), "missing keys module.encoder.conv_head.weight"),
    (lambda sd: sd.update({"module.fc2.weight": sd.pop("module.fc.weight")}), "unexpected keys module.fc2.weight"),
    (lambda sd: sd.update({"module.fc.weight": torch.zeros(1, 1792)}), "module.fc.weight (1, 1792) in file vs (1, 2560)"),
    (lambda sd: sd.pop("module.encoder.classifier.bias"), "missing keys module.encoder.classifier.bias"),
])
def test_a_layout_off_by_one_key_is_refused_with_the_key_named(published_payload, damage, named):
    payload = {**published_payload, "state_dict": dict(published_payload["state_dict"])}
    damage(payload["state_dict"])
    with pytest.raises(convert.ConvertError, match=f"bad: not the selim layout .*{re.escape(named)}"):
        convert.our_weights(payload, "selim", Path("bad"))


def test_a_wrapper_with_other_entries_is_refused_and_nothing_written(published_payload, tmp_path, caplog):
    torch.save({**published_payload, "state_dict": {}, "optimizer": {}}, tmp_path / "extra")
    assert convert.main([str(tmp_path / "extra"), "--format", "selim", "--out", str(tmp_path / "extra.pt")]) == 2
    assert "exactly the keys ['bce_best', 'epoch', 'state_dict'], found ['bce_best', 'epoch', 'optimizer', 'state_dict']" \
        in caplog.text
    assert not (tmp_path / "extra.pt").exists()


def test_the_selim_preset_scores_as_the_winner_s_own_inference(converted, published, data_dir, tmp_path):
    """Per-video scores of ``kernels.predict --preset selim`` equal the re-implemented winner's, fp32."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").symlink_to(data_dir / CLIP)
    out = tmp_path / "submission.csv"
    assert predict.main(["--videos", str(videos), "--out", str(out), "--weights", str(converted), "--preset", "selim",
                         "--frames", str(FRAMES), "--workers", "0", "--precision", "fp32", "--device", "cpu"]) == 0
    row = pd.read_csv(out.with_name("submission_details.csv")).set_index("filename").loc["clip.mp4"]
    record = json.loads(out.with_suffix(".progress.jsonl").read_text().splitlines()[1])
    expected, faces = winner_score(data_dir / CLIP, [published[1]], MTCNN(margin=0, thresholds=[0.7, 0.8, 0.8], device="cpu"))
    assert record["frame_ids"] == [0, 149, 299] and row["faces"] == len(faces) == 3
    np.testing.assert_allclose(record["probs"]["selim0"], faces, atol=1e-4)
    assert math.isclose(row["score_selim0"], expected, abs_tol=1e-4)
    assert np.ptp(faces) > 1e-2  # the scores spread between faces: a crop one pixel off would show
