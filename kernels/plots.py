"""Pictures of scored videos: face-crop strips, frame timelines, score histograms.

Every function takes the tables of :mod:`kernels.api` and returns a matplotlib ``Figure`` built
without pyplot (no backend is switched, nothing global is kept; a notebook displays it, ``savefig``
writes it); :func:`png_bytes` turns one into PNG bytes. Probabilities are fake probabilities.
The ROC curve and the reliability diagram of a labelled folder are ``submission.score.plot``'s.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from models.zoo import DeepfakeClassifier
from preprocessing.geometry import resize_and_pad

from .gradcam import gradcam, manipulation_map, overlay


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def load_crop(crop) -> np.ndarray:
    """A crop cell of ``Scores.frames`` (RGB uint8 array or PNG path) as an RGB array."""
    if isinstance(crop, np.ndarray):
        return crop
    if crop is None or (isinstance(crop, float) and np.isnan(crop)):
        raise ValueError("this frame's crop was not kept (a video resumed from an earlier run): score it with fresh=True")
    image = cv2.imread(str(crop), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{crop}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def spread(count: int, keep: int) -> np.ndarray:
    """``keep`` (or all ``count``) evenly spaced positions in ``range(count)``, first and last included."""
    return np.unique(np.linspace(0, count - 1, min(count, keep)).round().astype(int)) if count else np.zeros(0, int)


def crop_strip(frames: pd.DataFrame, max_crops: int = 8, size: int = 112,
               model: DeepfakeClassifier | None = None, view: str = "gradcam") -> Figure:
    """One video's face crops in frame order (at most ``max_crops``, evenly chosen), each titled with its
    frame index, track and probability; the border is red for p > 0.5, green otherwise. With ``model``,
    each crop is overlaid with that model's Grad-CAM heat (``view="gradcam"``; red: pushes towards
    fake) or its map head's manipulation map (``view="map"``; red: manipulated) and titled with its
    probability."""
    rows = frames.sort_values(["frame", "track"]).iloc[spread(len(frames), max_crops)]
    images = [load_crop(c) for c in rows["crop"]]
    if model is not None and images:
        heat, probs = {"gradcam": gradcam, "map": manipulation_map}[view](model, images)
        images = [overlay(image, h) for image, h in zip(images, heat)]
        rows = rows.assign(prob=probs)
    fig = Figure(figsize=(1.6 * max(len(rows), 1), 2.0))
    axes = fig.subplots(1, max(len(rows), 1), squeeze=False)
    for ax, image, (_, row) in zip(axes[0], images, rows.iterrows()):
        ax.imshow(resize_and_pad(image, size))
        ax.set_title(f"frame {row['frame']} · t{row['track']}\np = {row['prob']:.2f}", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(color="tab:red" if row["prob"] > 0.5 else "tab:green", linewidth=3)
    if rows.empty:
        axes[0, 0].set_axis_off()
        axes[0, 0].set_title("no face found", fontsize=9)
    return fig


def timeline(frames: pd.DataFrame, video_score: float, strategy: str = "") -> Figure:
    """Frame probability against frame index, one line per face track, the video's score dashed."""
    fig = Figure(figsize=(6, 2.6))
    ax = fig.subplots()
    for track, part in frames.sort_values("frame").groupby("track"):
        ax.plot(part["frame"], part["prob"], "o-", markersize=4, label=f"track {track}")
    ax.axhline(video_score, color="black", linestyle="--", label=f"video {video_score:.2f} {strategy}".rstrip())
    ax.axhline(0.5, color="grey", linewidth=0.5)
    ax.set(ylim=(0, 1), xlabel="frame index", ylabel="P(fake)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


def histogram(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> Figure:
    """Video scores of reals and of fakes over [0, 1] (``y``: 1 fake, 0 real)."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y)
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    edges = np.linspace(0, 1, bins + 1)
    ax.hist([probs[y == 0], probs[y == 1]], bins=edges, label=[f"real ({(y == 0).sum()})", f"fake ({(y == 1).sum()})"],
            color=["tab:green", "tab:red"])
    ax.set(xlim=(0, 1), xlabel="video P(fake)", ylabel="videos", title="Scores by label")
    ax.legend()
    return fig

