"""Published checkpoints -> checkpoints of ours, with the input spec their authors used.

    python -m training.convert [--format selim|polimi] --out weights/NAME.pt FILE
    python -m training.convert [--format selim|polimi] --out weights/ FILE [FILE...]
    python -m training.convert --format lrnet --out weights/NAME.pt G1 G2

Formats: ``selim`` (the 1st place's seven EfficientNet-B7 files) and ``polimi`` (icpr2020dfdc:
EfficientNetB4, EfficientNetB4ST, EfficientNetAutoAttB4, EfficientNetAutoAttB4ST and Xception, each
told from its keys): one output per input (``--out`` a folder when several files are given: each
named after its input). ``lrnet`` (frederickszk/LRNet, PyTorch): the pair ``g1.pth`` (landmark
positions) and ``g2.pth`` (their differences), in that order, becomes one sequence-model checkpoint.
A file must match its layout exactly: a missing, extra, renamed or reshaped key is refused with the
key named, never loaded loosely. ``--format`` is guessed from the keys when omitted. The output
loads with :func:`models.checkpoint.load_model` and runs in ``kernels.predict`` (``--preset selim``
or ``--preset polimi`` for the solution's whole recipe).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from plumbing.logs import configure_logging
from preprocessing.cropspec import CropSpec
from preprocessing.geometry import PIL_BILINEAR
from preprocessing.landmarks import LandmarkSpec

from models.checkpoint import save_checkpoint
from models.lrnet import GRUBranch, LRNet, LRNetConfig
from models.statedict import layout_mismatch
from models.zoo import ModelConfig, build_model

log = logging.getLogger("training.convert")

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


class ConvertError(ValueError):
    """A file is unreadable or does not match the layout of its format."""


Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Layout:
    """One published architecture's file: the model it holds (``config``, built by ``build``), how
    its inputs were made and scored (``spec``: a crop spec, or a landmark spec), the wrapper around
    its weights (``entries``: the top-level keys of a dict, or None for a bare state dict), ``names``:
    our key -> theirs for every key copied as it is (given our keys' shapes), ``extra``: their other
    keys with their shapes (dropped, checked all the same, or read by ``derive``: our keys computed
    from theirs), ``marker``: a key only this layout holds."""

    name: str
    config: ModelConfig | LRNetConfig
    spec: CropSpec | LandmarkSpec
    entries: frozenset[str] | None
    names: Callable[[Shapes], dict[str, str]]
    extra: Callable[[Shapes], Shapes]
    marker: str
    derive: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    build: Callable[[Any], nn.Module] = build_model

    def weights(self, payload: Any, path: Path) -> dict[str, torch.Tensor]:
        if self.entries is None:
            return payload
        if not isinstance(payload, dict) or set(payload) != self.entries:
            found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise ConvertError(f"{path}: expected a dict with exactly the keys {sorted(self.entries)}, found {found}")
        return payload["state_dict"]


# --- selim: 1st place, selimsef/dfdc_deepfake_challenge ---------------------------------------------
# training/zoo/classifiers.py DeepFakeClassifier: timm tf_efficientnet_b7_ns with its unused
# 1000-class head, fc on the average-pooled forward_features, saved under DataParallel ("module.");
# kernel_utils.py for the crop: box corners int(), h // 3 and w // 3 per side, isotropic resize to
# 380 (INTER_AREA down, INTER_CUBIC up, int sizes), centred on black.

SELIM = Layout(
    name="DeepFakeClassifier",
    config=ModelConfig("tf_efficientnet_b7.ns_jft_in1k", 380, **IMAGENET),
    spec=CropSpec((380, 380), margin=(1 / 3, 1 / 3), box_rule="truncate", resize="pad", shrink="area",
                  enlarge="cubic", aggregate="confident", **IMAGENET),
    entries=frozenset({"epoch", "state_dict", "bce_best"}),
    names=lambda ours: {k: "module.fc." + k[5:] if k.startswith("head.") else "module." + k for k in ours},
    extra=lambda ours: {"module.encoder.classifier.weight": (1000, ours["head.weight"][1]),
                        "module.encoder.classifier.bias": (1000,)},
    marker="module.fc.weight",
)

# --- polimi: polimi-ispl/icpr2020dfdc ----------------------------------------------------------------
# architectures/fornet.py: efficientnet-pytorch's B4, _fc deleted, a 1792 -> 1 classifier (the
# efficientnet-pytorch 0.6 they trained with pads every layer as for 380 px: at 224 px, timm's dynamic
# "same" padding, exactly; 0.7, which their code installs today, pads block 6 otherwise); AutoAtt: a
# 1x1 conv gate after block 9; ST: the plain model as feat_ext (its own classifier unused) under
# BatchNorm1d + Linear; Xception: Cadene's, with last_linear 2048 -> 1. isplutils/utils.py extract_bb "scale" + blazeface/face_extract.py for the crop
# (preprocessing.geometry.square_box), ImageNet normalisation, video score sigmoid(mean(logits)).

POLIMI_SPEC = CropSpec((224, 224), margin=(0.2, 0.2), box_rule="square", resize="stretch", shrink=PIL_BILINEAR,
                       enlarge=PIL_BILINEAR, aggregate="logitmean", **IMAGENET)
B4 = ModelConfig("tf_efficientnet_b4.aa_in1k", 224, **IMAGENET)
# timm's names -> efficientnet-pytorch's: the stem and head, then a block with and without expansion
_STEM_HEAD = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
_SE = {"se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand"}
_EXPANDED = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1", **_SE,
             "conv_pwl": "_project_conv", "bn3": "_bn2"}
_DEPTHWISE = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", **_SE, "conv_pw": "_project_conv", "bn2": "_bn2"}


def _efficientnet_names(ours: Shapes, prefix: str) -> dict[str, str]:
    """Our B4's keys -> efficientnet-pytorch's under ``prefix`` (its blocks numbered over all stages);
    the head is the ``classifier`` Linear, unless ``prefix`` holds a Siamese-tuned feature extractor."""
    blocks = sorted({(int(k.split(".")[2]), int(k.split(".")[3])) for k in ours if k.startswith("encoder.blocks.")})
    flat = {block: i for i, block in enumerate(blocks)}
    names = {}
    for key in ours:
        parts = key.split(".")
        if parts[0] == "attention":
            names[key] = f"{prefix}efficientnet.attconv.{parts[-1]}"
        elif parts[0] == "head":
            if not prefix:
                names[key] = f"classifier.{parts[-1]}"
        elif parts[1] == "blocks":
            stage, index, layer = int(parts[2]), int(parts[3]), ".".join(parts[4:-1])
            table = _EXPANDED if f"encoder.blocks.{stage}.{index}.conv_pwl.weight" in ours else _DEPTHWISE
            names[key] = f"{prefix}efficientnet._blocks.{flat[stage, index]}.{table[layer]}.{parts[-1]}"
        else:
            names[key] = f"{prefix}efficientnet.{_STEM_HEAD[parts[1]]}.{parts[-1]}"
    return names


def _tuned_head(ours: Shapes) -> Shapes:
    """A Siamese-tuned model's keys beside its feature extractor's: the extractor's unused classifier
    and the BatchNorm1d + Linear head."""
    width = ours["head.weight"][1]
    return {"feat_ext.classifier.weight": (1, width), "feat_ext.classifier.bias": (1,),
            **{f"classifier.0.{k}": (width,) for k in ("weight", "bias", "running_mean", "running_var")},
            "classifier.0.num_batches_tracked": (), "classifier.1.weight": (1, width), "classifier.1.bias": (1,)}


def _fold_batchnorm(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tuned head (BatchNorm1d in eval mode, then Linear) as one Linear: the same map, in float64."""
    bn = {k: weights[f"classifier.0.{k}"].double() for k in ("weight", "bias", "running_mean", "running_var")}
    scale = bn["weight"] / torch.sqrt(bn["running_var"] + torch.nn.BatchNorm1d(1).eps)
    weight, bias = weights["classifier.1.weight"].double(), weights["classifier.1.bias"].double()
    return {"head.weight": (weight * scale).float(), "head.bias": (bias + weight @ (bn["bias"] - bn["running_mean"] * scale)).float()}


def _polimi_b4(name: str, attention: bool, tuned: bool) -> Layout:
    prefix = "feat_ext." if tuned else ""
    return Layout(
        name=name, config=dataclasses.replace(B4, attention_block=9 if attention else None), spec=POLIMI_SPEC,
        entries=None, names=functools.partial(_efficientnet_names, prefix=prefix),
        extra=_tuned_head if tuned else lambda ours: {},
        marker=f"{prefix}efficientnet.{'attconv' if attention else '_conv_stem'}.weight",
        derive=_fold_batchnorm if tuned else None)


POLIMI = (
    _polimi_b4("EfficientNetAutoAttB4ST", attention=True, tuned=True),
    _polimi_b4("EfficientNetB4ST", attention=False, tuned=True),
    _polimi_b4("EfficientNetAutoAttB4", attention=True, tuned=False),
    _polimi_b4("EfficientNetB4", attention=False, tuned=False),
    Layout(name="Xception", config=ModelConfig("legacy_xception.tf_in1k", 224, **IMAGENET), spec=POLIMI_SPEC,
           entries=None, names=lambda ours: {k: "xception.last_linear." + k[5:] if k.startswith("head.")
                                             else "xception." + k[8:] for k in ours},
           extra=lambda ours: {}, marker="xception.last_linear.weight"),
)

# --- lrnet: frederickszk/LRNet ------------------------------------------------------------------------
# training/utils/model.py LRNet, one file per branch (g1, g2), a bare state dict: the GRU's initial
# state "hidden_state", the bidirectional "gru", then "dense": Dropout, Residual(FeedForward: Linear,
# ReLU, Dropout, Linear) at 1, Dropout, the 2-class Linear at 3 (models.lrnet.GRUBranch).

_LRNET_MODULES = {"mlp.0": "dense.1.fn.net.0", "mlp.3": "dense.1.fn.net.3", "head": "dense.3"}


def _lrnet_names(ours: Shapes) -> dict[str, str]:
    """Our branch's keys -> the authors' (the GRU's are PyTorch's own on both sides)."""
    names = {}
    for key in ours:
        module, _, parameter = key.rpartition(".")
        names[key] = "hidden_state" if key == "initial" else key if module == "gru" \
            else f"{_LRNET_MODULES[module]}.{parameter}"
    return names


LRNET = Layout(name="LRNet branch", config=LRNetConfig(), spec=LandmarkSpec(), entries=None,
               names=_lrnet_names, extra=lambda ours: {}, marker="hidden_state", build=GRUBranch)

#: Format name -> its layouts, the most specific marker first.
FORMATS: dict[str, tuple[Layout, ...]] = {"selim": (SELIM,), "polimi": POLIMI, "lrnet": (LRNET,)}
#: Formats whose model is several published files, one per named part, given in this order.
PARTS = {"lrnet": ("g1", "g2")}


def _read(path: Path) -> Any:
    """The file's contents, loaded without running code (numpy scalars, as in the winner's files, allowed)."""
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    scalar = np._core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *{type(np.dtype(t)) for t in "fdl"}]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvertError(f"{path}: not a readable torch file ({first})") from err


def _keys(payload: Any) -> dict:
    keys = payload.get("state_dict", payload) if isinstance(payload, dict) else {}
    return keys if isinstance(keys, dict) else {}


def guess_format(payload: Any) -> str | None:
    """The format one of whose layouts' marker key the file holds, or None."""
    keys = _keys(payload)
    return next((name for name, layouts in FORMATS.items() if any(lay.marker in keys for lay in layouts)), None)


@functools.lru_cache(maxsize=None)
def our_layout(layout: Layout) -> Shapes:
    """Every key of our model for ``layout``, with its shape (built on the meta device: no memory,
    no initialisation)."""
    with torch.device("meta"):
        model = layout.build(layout.config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def their_layout(layout: Layout) -> Shapes:
    """Every key a file in ``layout`` holds, with its shape."""
    ours = our_layout(layout)
    names = layout.names(ours)
    return {names[key]: ours[key] for key in names} | layout.extra(ours)


def layout_of(payload: Any, name: str) -> Layout:
    """The layout of format ``name`` that the file holds: the first whose marker key it has, else the
    nearest by keys (whose check then names what differs)."""
    keys = _keys(payload)
    marked = [layout for layout in FORMATS[name] if layout.marker in keys]
    return marked[0] if marked else min(FORMATS[name], key=lambda layout: len(set(their_layout(layout)) ^ set(keys)))


def our_weights(payload: Any, name: str, source: Path) -> tuple[Layout, dict[str, torch.Tensor]]:
    """The layout of format ``name`` that the published ``payload`` (read from ``source``) holds, and
    its weights under our names, after checking that they match that layout exactly;
    :class:`ConvertError` names what does not."""
    layout = layout_of(payload, name)
    weights = layout.weights(payload, source)
    mismatch = layout_mismatch(their_layout(layout), weights) if isinstance(weights, dict) else "not a state dict"
    if mismatch:
        raise ConvertError(f"{source}: not the {name} layout ({layout.name}): {mismatch}")
    names = layout.names(our_layout(layout))
    return layout, {key: weights[theirs] for key, theirs in names.items()} | (layout.derive(weights) if layout.derive else {})


def convert(source: str | os.PathLike, target: str | os.PathLike, format: str | None = None) -> str:
    """Write the published file ``source`` as a checkpoint of ours at ``target``; returns the format.
    Raises :class:`ConvertError` naming the file and the keys that do not fit."""
    source = Path(source)
    payload = _read(source)
    name = format or guess_format(payload)
    if name not in FORMATS:
        raise ConvertError(f"{source}: " + (f"unknown format {name!r}" if name else "cannot tell the format from its keys")
                           + f"; choose one of {sorted(FORMATS)} with --format")
    if name in PARTS:
        raise ConvertError(f"{source}: one part of a {name} model: convert its files "
                           f"({', '.join(PARTS[name])}) together with --format {name} --out NAME.pt")
    layout, weights = our_weights(payload, name, source)
    with torch.device("meta"):
        model = layout.build(layout.config)
    model.load_state_dict(weights, strict=True, assign=True)
    model.spec = layout.spec
    extra = {k: float(v) if isinstance(v, np.generic) else v for k, v in payload.items() if k != "state_dict"} \
        if layout.entries else {}
    save_checkpoint(target, model.eval(), source={"format": name, "architecture": layout.name, "file": source.name, **extra})
    return name


def convert_lrnet(sources: Sequence[str | os.PathLike], target: str | os.PathLike) -> None:
    """Write the published LRNet pair ``sources`` (g1, g2: each one branch's file) as one
    sequence-model checkpoint at ``target``. Raises :class:`ConvertError` naming the file and the keys
    that do not fit."""
    if len(sources) != len(PARTS["lrnet"]):
        raise ConvertError(f"lrnet takes {len(PARTS['lrnet'])} files ({', '.join(PARTS['lrnet'])}), got {len(sources)}")
    weights = {}
    for part, source in zip(PARTS["lrnet"], map(Path, sources)):
        _, branch = our_weights(_read(source), "lrnet", source)
        weights |= {f"{part}.{key}": value for key, value in branch.items()}
    model = LRNet(LRNET.config)
    model.load_state_dict(weights, strict=True)
    model.spec = LRNET.spec
    files = [f"{Path(s).parent.name}/{Path(s).name}" for s in sources]
    save_checkpoint(target, model.eval(), source={"format": "lrnet", "architecture": "LRNet", "files": files})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE", help="published checkpoint file(s)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the output .pt (one FILE), or a folder: one <FILE name>.pt each")
    parser.add_argument("--format", choices=sorted(FORMATS), help="the layout (default: guessed from the keys)")
    args = parser.parse_args(argv)
    configure_logging(False)
    if args.format in PARTS:
        if args.out.suffix != ".pt":
            parser.error(f"--format {args.format} writes one checkpoint: --out must name a .pt file")
        try:
            convert_lrnet(args.files, args.out)
        except ConvertError as err:
            log.error("%s", err)
            return 2
        log.info("%s (%s) -> %s", " + ".join(map(str, args.files)), args.format, args.out)
        return 0
    single = len(args.files) == 1 and args.out.suffix == ".pt"
    failed = 0
    for file in args.files:
        target = args.out if single else args.out / f"{file.stem}.pt"
        try:
            name = convert(file, target, args.format)
        except ConvertError as err:
            log.error("%s", err)
            failed += 1
            continue
        log.info("%s (%s) -> %s", file, name, target)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
