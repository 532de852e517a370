"""Where a model looks: Grad-CAM on the last feature map of any timm encoder, mapped onto the crop;
and, for a model trained with a map head, where it says the crop was manipulated.

Works through timm's ``forward_features`` / ``forward_head`` split, so EfficientNet, Xception and
MobileNetV3 (whose head convolution comes after pooling) are handled alike. Heat maps are float32
in [0, 1] with the crop's height and width (pixels of the crop as given, RGB uint8).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from models.zoo import DeepfakeClassifier, to_batch
from preprocessing.prepared import read_crop, read_mask, read_prepared, read_table


def unpad(square: np.ndarray, height: int, width: int) -> np.ndarray:
    """Undo ``preprocessing.geometry.resize_and_pad``: the part of a ``size x size`` map that holds the
    ``height x width`` image (centred, long side = size), resized back to ``height x width``."""
    size = square.shape[0]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return cv2.resize(square[top : top + new_h, left : left + new_w], (width, height), interpolation=cv2.INTER_LINEAR)


def gradcam(model: DeepfakeClassifier, crops: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Grad-CAM of the fake logit for each RGB crop: heat maps (crop-sized, [0, 1]; all zero where no
    feature pushes towards fake) and the fake probabilities. The model is put in eval mode."""
    if any(t.is_inference() for t in model.parameters()):
        # weights created or moved under torch.inference_mode cannot take part in autograd: work on
        # a plain copy
        model = copy.deepcopy(model)
    model.eval()
    device = next(model.parameters()).device
    batch = to_batch(list(crops), model.config).to(device)
    with torch.no_grad():  # the gradient is needed only from the last feature map on
        features = model.encoder.forward_features(batch).float()
    features.requires_grad_(True)
    with torch.enable_grad():
        logits = model.head(model.dropout(model.encoder.forward_head(features))).squeeze(1)
        (grad,) = torch.autograd.grad(logits.sum(), features)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * features).sum(dim=1, keepdim=True)).detach()
    cams = torch.nn.functional.interpolate(cams, size=batch.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    heat = []
    for cam, crop in zip(cams.cpu().numpy(), crops):
        cam = unpad(cam, *crop.shape[:2])
        heat.append((cam / cam.max() if cam.max() > 0 else cam).astype(np.float32))
    return heat, torch.sigmoid(logits.detach()).cpu().numpy()


@torch.no_grad()
def manipulation_map(model: DeepfakeClassifier, crops: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The map head's probability that each pixel was manipulated, for each RGB crop (crop-sized, in
    [0, 1], not rescaled), and the fake probabilities. ValueError for a model without a map head."""
    model.eval()
    batch = to_batch(list(crops), model.config).to(next(model.parameters()).device)
    logits, maps = model(batch, with_map=True)
    maps = torch.sigmoid(torch.nn.functional.interpolate(maps.float(), size=batch.shape[-2:], mode="bilinear",
                                                         align_corners=False))[:, 0].cpu().numpy()
    return ([unpad(m, *crop.shape[:2]).astype(np.float32) for m, crop in zip(maps, crops)],
            torch.sigmoid(logits.float()).cpu().numpy())


def overlay(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The crop (RGB uint8) blended with the heat map in the jet colour map (red = hot)."""
    colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(crop, 1 - alpha, colour, alpha, 0)


def share_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the heat's mass on the mask's pixels (``mask`` > 0); NaN for a heat map of zeros."""
    total = float(heat.sum())
    return float(heat[mask > 0].sum()) / total if total > 0 else float("nan")


def mask_shares(prepared: str | Path, model: DeepfakeClassifier, batch_size: int = 16) -> pd.DataFrame:
    """For every fake crop of a prepared folder (``preprocessing.prepare``) that has a difference mask:
    the share of Grad-CAM heat inside the mask on the fake crop (``fake_share``) and on the
    pixel-aligned real crop (``real_share``), the mask's share of the crop's pixels (``mask_area``: what
    heat spread evenly would give) and both probabilities. One row per crop, with ``video`` and
    ``method`` (from ``videos.csv``)."""
    prepared = Path(prepared)
    crops = read_prepared(prepared)
    crops = crops[(crops["label"] == 1) & (crops["mask"] != "") & (crops["real_crop"] != "")].reset_index(drop=True)
    methods = read_table(prepared / "videos.csv", ("video", "method")).set_index("video")["method"]
    rows = []
    for start in range(0, len(crops), batch_size):
        part = crops.iloc[start : start + batch_size]
        fakes = [read_crop(prepared / c) for c in part["crop"]]
        reals = [read_crop(prepared / c) for c in part["real_crop"]]
        masks = [read_mask(prepared / m, fake.shape) for m, fake in zip(part["mask"], fakes)]
        fake_heat, fake_probs = gradcam(model, fakes)
        real_heat, real_probs = gradcam(model, reals)
        for i, (_, crop) in enumerate(part.iterrows()):
            rows.append({"video": crop["video"], "method": methods.get(crop["video"], ""), "frame": crop["frame"],
                         "track": crop["track"], "prob_fake": float(fake_probs[i]), "prob_real": float(real_probs[i]),
                         "mask_area": float((masks[i] > 0).mean()), "fake_share": share_inside(fake_heat[i], masks[i]),
                         "real_share": share_inside(real_heat[i], masks[i])})
    return pd.DataFrame(rows)
