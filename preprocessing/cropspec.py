"""A model's input contract, declared once: from a detected face box to the array the model reads,
and from its frame scores to the video's.

``prepare`` writes the crop part it used (``<out>/config.json``: ``crop_spec``), training stores the
whole spec in every checkpoint, and the kernel resolves each checkpoint's spec (explicit flags
override it) and cuts each face once per distinct :attr:`CropSpec.crop_key`. A checkpoint without a
spec gets :class:`CropSpec`'s defaults with its model's size and normalisation: what every model of
ours was trained on before the spec existed.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from plumbing.strict import strict_fields

from .geometry import DEFAULT_MARGIN, PIL_BILINEAR, expand_box, resize, resize_and_pad, square_box, truncated_box

#: Box rules: ``outward``: grow the float box by the margin, snap outward, clip (:func:`expand_box`);
#: ``truncate``: the DFDC winner's integer corners and ``floor(margin * side)`` pads (:func:`truncated_box`);
#: ``square``: Polimi's square of the longer side around the box grown by ``margin`` times its
#: height, twice at the top (:func:`square_box`; one margin, a square input).
BOX_RULES = ("outward", "truncate", "square")
#: Resize rules: ``pad``: long side to fit, centred on black (:func:`resize_and_pad`); ``stretch``:
#: straight to width x height.
RESIZE_RULES = ("pad", "stretch")
INTERPOLATIONS = {"area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR,
                  "nearest": cv2.INTER_NEAREST, PIL_BILINEAR: PIL_BILINEAR}


class CropSpecError(ValueError):
    """A crop spec names an unknown key or an impossible value."""


@dataclass(frozen=True)
class CropSpec:
    """How a face box becomes a model's input, and its frame scores a video score.

    ``margin``: (x, y) added on each side, as fractions of the box's width and height; ``box_rule``:
    how the grown box snaps to pixels (:data:`BOX_RULES`; ``truncate`` also truncates the resized
    sizes, as the DFDC winner's ``int`` did, where ``outward`` rounds them); ``resize``: :data:`RESIZE_RULES`;
    ``shrink``/``enlarge``: the interpolation (:data:`INTERPOLATIONS`) when the crop is made smaller or
    larger; ``size``: the input's (width, height) in pixels; ``mean``/``std``: per-channel
    normalisation of RGB in [0, 1]; ``aggregate``: the model's frame -> video rule (a name of
    ``kernels.aggregate.STRATEGIES``).
    """

    size: tuple[int, int]
    margin: tuple[float, float] = (DEFAULT_MARGIN, DEFAULT_MARGIN)
    box_rule: str = "outward"
    resize: str = "pad"
    shrink: str = "area"
    enlarge: str = "cubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    aggregate: str = "confident"

    def __post_init__(self):
        for name, length, kind in (("size", 2, int), ("margin", 2, float), ("mean", 3, float), ("std", 3, float)):
            value = getattr(self, name)
            value = (value, value) if name == "margin" and isinstance(value, (int, float)) else value
            if len(value) != length:
                raise CropSpecError(f"crop spec: {name} needs {length} values, got {list(value)}")
            object.__setattr__(self, name, tuple(kind(v) for v in value))
        problems = [f"{name} {getattr(self, name)!r} is not one of {list(choices)}" for name, choices in
                    (("box_rule", BOX_RULES), ("resize", RESIZE_RULES), ("shrink", INTERPOLATIONS),
                     ("enlarge", INTERPOLATIONS)) if getattr(self, name) not in choices]
        if min(self.size) <= 0 or min(self.std) <= 0 or min(self.margin) < 0:
            problems.append("size and std must be > 0, margin >= 0")
        if self.box_rule == "square" and (self.size[0] != self.size[1] or self.margin[0] != self.margin[1]):
            problems.append("the square box rule needs a square size and one margin")
        if problems:
            raise CropSpecError(f"crop spec: {'; '.join(problems)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CropSpec":
        return cls(**strict_fields(cls, values, "crop spec", CropSpecError))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "CropSpec":
        """A copy with ``changes`` (``None`` values ignored: a flag left unset keeps the spec's value)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def crop_key(self) -> tuple:
        """What the cut depends on: specs with one key share their crops."""
        return self.margin, self.box_rule, self.size if self.box_rule == "square" else None

    @property
    def input_key(self) -> tuple:
        """What the model's input (the crop after :meth:`fit`) depends on: specs with one key share it."""
        return self.crop_key, self.size, self.resize, self.shrink, self.enlarge

    def crop_box(self, box, width: int, height: int) -> tuple[int, int, int, int]:
        """The pixel box ``(x1, y1, x2, y2)`` cut for the face ``box`` in a ``width x height`` frame."""
        if self.box_rule == "truncate":
            return truncated_box(box, self.margin, width, height)
        if self.box_rule == "square":
            return square_box(box, self.margin[1], self.size[0], width, height)
        return expand_box(box, self.margin, width, height)

    def cut(self, frame: np.ndarray, box) -> np.ndarray:
        """The crop of ``frame`` (H x W x C) for the face ``box``, a copy."""
        x1, y1, x2, y2 = self.crop_box(box, frame.shape[1], frame.shape[0])
        return frame[y1:y2, x1:x2].copy()

    def fit(self, crop: np.ndarray) -> np.ndarray:
        """``crop`` resized to the input's ``size`` by the spec's resize rule (uint8, H x W x C)."""
        down, up = INTERPOLATIONS[self.shrink], INTERPOLATIONS[self.enlarge]
        if self.resize == "pad":
            return resize_and_pad(crop, self.size, down, up, truncate=self.box_rule == "truncate")
        height, width = crop.shape[:2]
        if height == 0 or width == 0:
            raise ValueError(f"cannot resize an empty image of shape {crop.shape}")
        larger = self.size[0] * self.size[1] > width * height
        return resize(crop, self.size, up if larger else down)


def crop_entry(margin: float) -> dict[str, Any]:
    """The crop part of the spec ``prepare`` cuts with: its ``config.json`` entry ``crop_spec``."""
    return {"margin": [float(margin)] * 2, "box_rule": "outward"}


def read_crop_entry(folder: str | os.PathLike) -> dict[str, Any]:
    """The crop part of the spec a prepared ``folder`` was cut with (a folder prepared before the
    spec existed: its ``margin``; none: {}, the defaults)."""
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    if "crop_spec" in config:
        return config["crop_spec"]
    return crop_entry(config["margin"]) if "margin" in config else {}
