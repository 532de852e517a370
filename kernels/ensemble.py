"""Several checkpoints scoring one video: frame models its face crops (each with its own size and
normalisation), sequence models its faces' landmark sequences (each with its own landmark spec)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from skimage import data

from models.checkpoint import load_model
from models.lrnet import LRNet
from models.precision import PRECISIONS, auto_precision
from models.stacking import Stacking
from models.zoo import DeepfakeClassifier, to_batch
from plumbing.device import check_device, default_device
from plumbing.fileio import file_digest, write_json
from preprocessing.cropspec import CropSpec
from preprocessing.landmarks import LandmarkSpec

log = logging.getLogger(__name__)

#: Environment variable naming the folder of the probe's cached verdicts (default: the user's cache).
CACHE_ENV = "DEEPFAKE_CACHE"


def cache_dir() -> Path:
    """``$DEEPFAKE_CACHE``, else ``$XDG_CACHE_HOME/deepfake``, else ``~/.cache/deepfake``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deepfake"


def machine_id() -> str:
    """What the probe's verdict depends on besides the checkpoint: CPU model and features, torch's
    version and its thread count."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = "|".join(next((l for l in lines if l.startswith(key)), "") for key in ("model name", "flags"))
    described = f"{platform.machine()}|{cpu}|torch {torch.__version__}|{torch.get_num_threads()} threads"
    return hashlib.sha1(described.encode()).hexdigest()[:16]


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _layout(model: DeepfakeClassifier, precision: str, device: torch.device) -> DeepfakeClassifier:
    """bf16 on the CPU runs fastest in channels_last; everything else keeps the default layout."""
    channels_last = precision == "bf16" and device.type == "cpu"
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _probe(model: DeepfakeClassifier, precision: str, device: torch.device, batch: torch.Tensor) -> tuple[float, np.ndarray]:
    """Seconds for one forward pass of ``batch`` (after a warm-up) and its probabilities. The layout
    changes outside inference mode, so the weights stay usable by autograd (Grad-CAM)."""
    _layout(model, precision, device)
    if precision == "bf16" and device.type == "cpu":
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(2):
            start = time.perf_counter()
            with _autocast(precision, device):
                probs = torch.sigmoid(model(batch).float()).cpu().numpy()
    return time.perf_counter() - start, probs


def choose_precision(model: DeepfakeClassifier, precision: str, device: torch.device, digest: str = "") -> str:
    """Resolve ``auto``: on CUDA, the card's :func:`models.precision.auto_precision` (bf16 on sm_80+,
    fp16 on sm_70 / sm_75, fp32 below); on a CPU with native bf16, bf16 + channels_last where this
    machine runs this model faster that way and its probabilities on four views of a real face agree
    with fp32 within 1e-2; fp32 otherwise. The probe's verdict is cached per machine
    (:func:`machine_id`) and checkpoint (its file ``digest``) in ``cache_dir()/precision.json``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return auto_precision(device)
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "fp32"
    key = f"{machine_id()}/{digest}"
    cache = cache_dir() / "precision.json"
    verdicts = {}
    with contextlib.suppress(OSError, ValueError):
        verdicts = json.loads(cache.read_text(encoding="utf-8"))
    verdicts = verdicts if isinstance(verdicts, dict) else {}
    if digest and verdicts.get(key) in ("fp32", "bf16"):
        log.info("%s: %s, as probed earlier on this machine (%s)", model.config.encoder, verdicts[key], cache)
        return verdicts[key]
    verdict = _probe_verdict(model, device)
    if digest:
        try:
            write_json(cache, {**verdicts, key: verdict})
        except OSError as err:  # a read-only home: probe again next time
            log.debug("precision verdict not cached in %s: %s", cache, err)
    return verdict


def _probe_verdict(model: DeepfakeClassifier, device: torch.device) -> str:
    """bf16 where it runs faster than fp32 on a probe batch and agrees within 1e-2, else fp32."""
    face = data.astronaut()[40:260, 130:330]  # a real face that ships with scikit-image
    batch = to_batch([face, face[:, ::-1], face[::2, ::2], face[20:-20, 20:-20]], model.spec).to(device)
    fp32_seconds, fp32 = _probe(model, "fp32", device, batch)
    bf16_seconds, bf16 = _probe(model, "bf16", device, batch)
    faster_and_agrees = bf16_seconds < fp32_seconds and np.abs(fp32 - bf16).max() <= 1e-2
    log.info("%s: fp32 %.3f s, bf16 %.3f s per probe batch, largest difference %.4f: %s", model.config.encoder,
             fp32_seconds, bf16_seconds, np.abs(fp32 - bf16).max(), "bf16" if faster_and_agrees else "fp32")
    return "bf16" if faster_and_agrees else "fp32"


@dataclass
class Ensemble:
    """Models with names (checkpoint file stems) and weights for the mean across models: frame
    models (:class:`DeepfakeClassifier`) and sequence models (:class:`LRNet`, always fp32); or,
    where a stacking file applies (``stacking``, its sha256 ``stacking_digest``), its formula
    instead of the mean."""

    models: list[DeepfakeClassifier | LRNet]
    names: list[str]
    weights: np.ndarray
    digests: list[str]
    device: torch.device
    precisions: list[str]
    batch_size: int = 32
    paths: list[str] = field(default_factory=list)  # absolute: where another process loads the same models
    precision: str = "auto"  # as asked, before each model resolved it
    spec: dict = field(default_factory=dict)  # crop spec fields replacing every checkpoint's own
    stacking: Stacking | None = None
    stacking_digest: str | None = None

    @classmethod
    def load(cls, paths: Sequence[str | Path], weights: Sequence[float] | None = None,
             device: str | torch.device | None = None, precision: str = "auto", batch_size: int = 32,
             spec: dict | None = None, stacking: str | Path | None = None) -> "Ensemble":
        """Load every checkpoint, of either family (strictly; a bad one raises ``CheckpointError``
        naming it); ``spec``: crop spec fields that replace every frame model's own (``None`` values
        are ignored); ``stacking``: a stacking file whose members must be exactly these models, by
        name and sha256 (else a ``StackingError`` naming the file and the member), and which then
        combines them (``weights`` must then be None).

        ``device="meta"`` describes the ensemble without holding its weights (names, digests, crop
        and landmark specs, calibrations: what a driver whose models run elsewhere needs); its
        precisions stay as asked, for the processes that run the models to resolve."""
        if not paths:
            raise ValueError("no checkpoint given")
        if stacking is not None and weights is not None:
            raise ValueError(f"{stacking}: a stacking file combines the models by its own formula; give no model weights")
        if weights is not None and len(weights) != len(paths):
            raise ValueError(f"{len(weights)} model weights given for {len(paths)} checkpoints")
        device = check_device(device) if device is not None else default_device()
        models = [load_model(p, device, family=None) for p in paths]
        names, seen = [], {}
        for p in paths:
            stem = Path(p).stem
            seen[stem] = seen.get(stem, 0) + 1
            names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
        digests = [file_digest(p) for p in paths]
        stack = Stacking.load(stacking) if stacking is not None else None
        if stack is not None:
            stack.check(stacking, dict(zip(names, digests)))
        spec = {k: v for k, v in (spec or {}).items() if v is not None}
        for model in models:
            if not isinstance(model, LRNet):
                model.spec = model.spec.replace(**spec)
        precisions = ["fp32" if isinstance(m, LRNet) else precision if device.type == "meta"
                      else choose_precision(m, precision, device, d) for m, d in zip(models, digests)]
        models = [m if isinstance(m, LRNet) else _layout(m, p, device) for m, p in zip(models, precisions)]
        w = np.ones(len(paths)) if weights is None else np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"model weights must be >= 0 and not all 0, got {list(w)}")
        return cls(models, names, w / w.sum(), digests, device, precisions, batch_size,
                   [str(Path(p).resolve()) for p in paths], precision, spec, stack,
                   file_digest(stacking) if stack is not None else None)

    @property
    def frame_models(self) -> list[tuple[str, DeepfakeClassifier, str]]:
        """``(name, model, precision)`` of every frame model, in order."""
        return [(n, m, p) for n, m, p in zip(self.names, self.models, self.precisions) if not isinstance(m, LRNet)]

    @property
    def sequence_models(self) -> list[tuple[str, LRNet]]:
        """``(name, model)`` of every sequence model, in order."""
        return [(n, m) for n, m in zip(self.names, self.models) if isinstance(m, LRNet)]

    @property
    def landmark_specs(self) -> tuple[LandmarkSpec, ...]:
        """The distinct landmark specs of the sequence models, in order: how each face run must be read."""
        return tuple(dict.fromkeys(model.spec for _, model in self.sequence_models))

    @property
    def crop_specs(self) -> tuple[CropSpec, ...]:
        """One spec per distinct input key, in frame-model order: how each face must be cut and resized."""
        specs: dict[tuple, CropSpec] = {}
        for _, model, _ in self.frame_models:
            specs.setdefault(model.spec.input_key, model.spec)
        return tuple(specs.values())

    @torch.inference_mode()
    def predict(self, cuts: dict[tuple, Sequence[np.ndarray]] | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Fake probability of every face, per frame model's name, from ``cuts`` (RGB crops by input
        key, one list per :attr:`crop_specs` entry, the faces in one order, as cut or already fitted to
        the input; or one list of crops every model reads); each batch is resized once per spec."""
        if not isinstance(cuts, dict):
            cuts = {spec.input_key: cuts for spec in self.crop_specs}
        out = {name: [] for name, _, _ in self.frame_models}
        count = len(next(iter(cuts.values()), []))
        for start in range(0, count, self.batch_size):
            batches: dict[CropSpec, torch.Tensor] = {}
            for name, model, precision in self.frame_models:
                spec = model.spec
                if spec not in batches:
                    batches[spec] = to_batch(cuts[spec.input_key][start : start + self.batch_size], spec).to(self.device)
                batch = batches[spec]
                if precision == "bf16" and self.device.type == "cpu":
                    batch = batch.contiguous(memory_format=torch.channels_last)
                with _autocast(precision, self.device):
                    logits = model(batch)
                out[name].append(torch.sigmoid(logits.double()).cpu().numpy())  # float64: logits stay recoverable
        return {name: np.concatenate(probs) if probs else np.zeros(0) for name, probs in out.items()}

    @torch.inference_mode()
    def predict_blocks(self, sequences: dict[LandmarkSpec, Sequence[np.ndarray]]) -> dict[str, np.ndarray]:
        """Per sequence model's name: the fake probability of every block of its ``sequences`` ((T, 136)
        landmark sequences by landmark spec, one list per :attr:`landmark_specs` entry), sequence by
        sequence. A sequence shorter than the model's block gives none."""
        out = {}
        for name, model in self.sequence_models:
            blocks = [model.blocks(sequence) for sequence in sequences.get(model.spec, [])]
            count = sum(len(b) for b in blocks)
            out[name] = model(torch.cat(blocks).to(self.device)).double().cpu().numpy() if count else np.zeros(0)
        return out

    def combine(self, scores: dict[str, float]) -> float:
        """The video's fake probability from the per-model video scores given (a model without a
        score abstained on it): the stacking file's formula where one applies, else :meth:`mean`."""
        return self.stacking(scores) if self.stacking is not None else self.mean(scores)

    def mean(self, scores: dict[str, float]) -> float:
        """Weighted mean of the per-model scores given: a model without a score (one that abstained
        on this video) leaves the others' weights to decide, renormalised."""
        present = [(w, scores[n]) for n, w in zip(self.names, self.weights) if n in scores]
        if not present or sum(w for w, _ in present) <= 0:
            raise ValueError(f"no model with a positive weight scored this video (scores: {sorted(scores)})")
        return float(sum(w * s for w, s in present) / sum(w for w, _ in present))
