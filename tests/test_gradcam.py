"""Grad-CAM: equal to the class activation map where theory says so, mapped back onto the crop."""
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from skimage import data

from kernels.gradcam import gradcam, mask_shares, overlay, share_inside, unpad
from models.checkpoint import load_model
from models.zoo import ModelConfig, build_model, to_batch
from preprocessing.geometry import resize_and_pad
from tests.conftest import DEMO_WEIGHTS

FACE = data.astronaut()[40:260, 130:330]  # 220 x 200 RGB


@pytest.mark.parametrize("height, width", [(100, 50), (50, 100), (64, 64), (37, 91), (220, 200)])
@pytest.mark.parametrize("size", [64, 160])
def test_unpad_undoes_resize_and_pad(height, width, size):
    y, x = np.mgrid[0:height, 0:width]
    image = (255 * (0.5 + 0.25 * np.sin(y / height * 3) + 0.25 * np.cos(x / width * 3))).astype(np.float32)
    back = unpad(resize_and_pad(image, size), height, width)
    assert back.shape == (height, width)
    assert np.abs(back - image).mean() < 6  # one pixel of offset costs more than 10 grey levels here


@pytest.mark.parametrize("encoder", ["efficientnet_b0", "legacy_xception"])
def test_gradcam_equals_the_class_activation_map_for_pooling_and_a_linear_head(encoder, one_torch_thread):
    """With global average pooling then one linear unit, Grad-CAM's channel weights are the head's
    weights / (h w): the heat is relu(sum_c w_c A_c) (Zhou et al.'s CAM), normalised to max 1."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder, 64)).eval()
    crops = [FACE, FACE[:110]]
    heat, probs = gradcam(model, crops)
    with torch.no_grad():
        batch = to_batch(crops, model.config)
        features = model.encoder.forward_features(batch)
        cam = torch.relu(torch.einsum("c,bchw->bhw", model.head.weight[0], features))[:, None]
        cam = torch.nn.functional.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[:, 0].numpy()
        np.testing.assert_allclose(probs, torch.sigmoid(model(batch)).numpy(), atol=1e-6)
    for h, c, crop in zip(heat, cam, crops):
        expected = unpad(c, *crop.shape[:2])
        assert h.shape == crop.shape[:2] and h.max() == pytest.approx(1.0)
        np.testing.assert_allclose(h, expected / expected.max(), atol=1e-4)


def test_gradcam_runs_through_mobilenetv3s_head_convolution_and_overlays():
    model = load_model(DEMO_WEIGHTS, "cpu")  # mobilenetv3_small_100: conv_head after pooling
    heat, probs = gradcam(model, [FACE])
    assert heat[0].shape == FACE.shape[:2] and 0 <= heat[0].min() and heat[0].max() == pytest.approx(1.0)
    assert heat[0].std() > 0.05  # a map with a place, not a constant
    blended = overlay(FACE, heat[0])
    assert blended.shape == FACE.shape and blended.dtype == np.uint8
    hot = np.unravel_index(heat[0].argmax(), heat[0].shape)
    assert blended[hot][2] <= 0.55 * FACE[hot][2] + 1 < blended[hot][0] - 0.55 * FACE[hot][0] + 1  # hot: jet's red, no blue


def test_gradcam_works_on_weights_laid_out_under_inference_mode():
    """The kernel's bf16 probe converts models to channels_last inside torch.inference_mode."""
    plain = load_model(DEMO_WEIGHTS, "cpu")
    with torch.inference_mode():
        touched = load_model(DEMO_WEIGHTS, "cpu").to(memory_format=torch.channels_last)
    (expected,), _ = gradcam(plain, [FACE])
    (heat,), _ = gradcam(touched, [FACE])
    np.testing.assert_allclose(heat, expected, atol=1e-4)


@pytest.mark.parametrize("heat, mask, expected", [
    (np.ones((4, 4)), np.eye(4), 0.25),                       # heat everywhere: the mask's area
    (np.eye(4), np.eye(4) * 255, 1.0),                        # heat only on the mask
    (np.eye(4)[::-1], np.eye(4), 0.0),                        # heat only off it (4x4 anti-diagonal)
    (np.zeros((4, 4)), np.eye(4), np.nan),                    # no heat
])
def test_share_inside(heat, mask, expected):
    assert share_inside(heat, mask) == pytest.approx(expected, nan_ok=True)


def test_mask_shares_covers_every_masked_fake_crop(prepared_dir):
    crops = pd.read_csv(prepared_dir / "crops.csv", keep_default_na=False)
    masked = crops[(crops["label"] == 1) & (crops["mask"] != "")]
    model = load_model(DEMO_WEIGHTS, "cpu")
    shares = mask_shares(prepared_dir, model)
    assert len(shares) == len(masked) > 0
    assert set(shares["method"]) == {"Deepfakes", "FaceSwap", "NeuralTextures"}
    for column in ("mask_area", "fake_share", "real_share", "prob_fake", "prob_real"):
        assert shares[column].between(0, 1).all(), column
    assert (shares["mask_area"] > 0).all()

    # Each row against its own computation from the files: the fake crop's heat and probability are
    # the fake's, the real crop's the real's (swapped, the two would trade places).
    rows = shares.merge(masked, on=["video", "frame", "track"], validate="one_to_one")
    assert (rows["prob_fake"] - rows["prob_real"]).abs().max() > 1e-3  # a swap would show
    for row in rows.head(3).itertuples():
        crop, real = (cv2.cvtColor(cv2.imread(str(prepared_dir / name)), cv2.COLOR_BGR2RGB) for name in (row.crop, row.real_crop))
        mask = cv2.imread(str(prepared_dir / row.mask), cv2.IMREAD_GRAYSCALE)
        (heat_fake, heat_real), probs = gradcam(model, [crop, real])
        assert (row.prob_fake, row.prob_real) == pytest.approx(tuple(probs), abs=1e-5)
        assert (row.fake_share, row.real_share) == pytest.approx((share_inside(heat_fake, mask), share_inside(heat_real, mask)), abs=1e-5)
