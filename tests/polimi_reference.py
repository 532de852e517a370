"""Ground truth for tests/test_polimi.py: the inference of Polimi's ICPR 2020 DFDC solution
(github.com/polimi-ispl/icpr2020dfdc), re-written from that solution's source.

It rebuilds their five published networks with the exact state_dict layout of their .pth files
(architectures/fornet.py, architectures/externals/xception.py), their face crop (the BlazeFace
extractor's margin, extract_faces.py's 512-px window, isplutils extract_bb's 'scale' policy), their
test-time normalisation and their video score. It is deliberately independent of this project: it
imports nothing from models/preprocessing/kernels/training and does not use timm, so that our
converter and kernel are checked against a second, separately written implementation.
EfficientNet comes from the `efficientnet_pytorch` package, as in their code.

Two things this module does not reproduce, on purpose:
- the detector: their faces come from BlazeFace, ours from MTCNN; parity is judged given the same box;
- the JPEG round trip: extract_faces.py saves the 512-px window as JPEG (quality 95, 4:4:4) and the
  loader crops the decoded JPEG. `crop` crops the window in memory instead (JPEG is lossy and
  encoder-dependent, and our pipeline never writes one).
"""
import numpy as np
import scipy.special
import torch
from efficientnet_pytorch import EfficientNet
from PIL import Image
from torch import nn
from torch.nn import functional as F

ARCHITECTURES = ("EfficientNetB4", "EfficientNetB4ST", "EfficientNetAutoAttB4", "EfficientNetAutoAttB4ST", "Xception")

# FeatureExtractor.get_normalizer(): ImageNet statistics, for every one of their networks (Xception too).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------------------------------
# EfficientNet-B4 (efficientnet_pytorch)
#
# Padding. efficientnet_pytorch builds B4 with TF-"SAME" *static* padding (Conv2dStaticSamePadding) computed at
# construction for the model's nominal 380-px input, whatever size is fed later. Up to 0.6.3 (March 2020, the
# version current when Polimi trained: their environment.yml does not pin it, their paper is from April 2020)
# every conv's padding is computed from 380 px itself; for a stride-2 conv that is k - 2 in total, split
# (k//2 - 1, k//2), which is exactly what dynamic SAME padding gives the even sizes a 224-px input reaches
# (112, 56, 28, 14): fed 224 px, 0.6.3's B4 is timm's dynamically padded one. From 0.7.0 (August 2020,
# efficientnet-pytorch PR #179; their issue #262 "Models trained in v0.6.3 give wrong output in v0.7.0") each
# block's padding comes from its own input size at 380 px, and _blocks.6._depthwise_conv (5x5 s2, built for an
# odd 95-px input) pads (2, 2) instead of (1, 2): what a fresh install of their code runs today. This reference
# is the trained model: requirements-dev.txt pins efficientnet-pytorch==0.6.3.
# --------------------------------------------------------------------------------------------------


class _EfficientNetAutoAtt(EfficientNet):
    """EfficientNet with Polimi's attention: after flat block `att_block_idx` (9, the last block of
    stage 3, 56 channels), the features are multiplied by sigmoid(attconv(features))."""

    att_block_idx = 9

    def add_attention(self):
        self.attconv = nn.Conv2d(in_channels=56, out_channels=1, kernel_size=1)  # width 0: one 1x1 conv

    def extract_features(self, inputs):
        x = self._swish(self._bn0(self._conv_stem(inputs)))
        for idx, block in enumerate(self._blocks):
            rate = self._global_params.drop_connect_rate
            if rate:
                rate *= float(idx) / len(self._blocks)
            x = block(x, drop_connect_rate=rate)
            if idx == self.att_block_idx:
                x = x * torch.sigmoid(self.attconv(x))
        return self._swish(self._bn1(self._conv_head(x)))


class _EfficientNetClassifier(nn.Module):
    """fornet.EfficientNetGen / EfficientNetGenAutoAtt: `efficientnet` (its `_fc` deleted) and a
    1792 -> 1 `classifier` on the average-pooled features."""

    def __init__(self, attention: bool):
        super().__init__()
        # from_name builds what from_pretrained builds (from_pretrained = from_name + load weights), offline.
        if attention:
            self.efficientnet = _EfficientNetAutoAtt.from_name("efficientnet-b4")
            self.efficientnet.add_attention()  # registered after _fc/_swish, as init_att does after from_pretrained
        else:
            self.efficientnet = EfficientNet.from_name("efficientnet-b4")
        self.classifier = nn.Linear(self.efficientnet._conv_head.out_channels, 1)
        del self.efficientnet._fc

    def features(self, x):
        x = self.efficientnet.extract_features(x)
        return self.efficientnet._avg_pooling(x).flatten(start_dim=1)

    def forward(self, x):
        return self.classifier(self.efficientnet._dropout(self.features(x)))


# --------------------------------------------------------------------------------------------------
# Xception (tstandley's port as adapted by Cadene, architectures/externals/xception.py)
# --------------------------------------------------------------------------------------------------


class _SeparableConv2d(nn.Module):
    """Depthwise 3x3 (`conv1`) then pointwise 1x1 (`pointwise`), no biases."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, padding=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, kernel_size, stride, padding, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.conv1(x))


class _XceptionBlock(nn.Module):
    """`rep`: `reps` times (ReLU, separable conv, BN), the width change on the first unit (grow_first) or
    the last, the leading ReLU dropped when not start_with_relu (which shifts the `rep.N` indices), a 3x3
    max-pool when strided; plus a 1x1 conv + BN shortcut (`skip`, `skipbn`) when shape changes."""

    def __init__(self, cin, cout, reps, stride=1, start_with_relu=True, grow_first=True):
        super().__init__()
        if cout != cin or stride != 1:
            self.skip = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(cout)
        else:
            self.skip = None

        def unit(a, b):
            # Their ReLUs are in-place except the first; out-of-place everywhere is numerically the same.
            return [nn.ReLU(), _SeparableConv2d(a, b), nn.BatchNorm2d(b)]

        layers = unit(cin, cout) if grow_first else []
        width = cout if grow_first else cin
        for _ in range(reps - 1):
            layers += unit(width, width)
        if not grow_first:
            layers += unit(cin, cout)
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, inp):
        shortcut = inp if self.skip is None else self.skipbn(self.skip(inp))
        return self.rep(inp) + shortcut


class _XceptionNet(nn.Module):
    """externals.xception() with `fc` renamed `last_linear` and replaced by Linear(2048, 1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.block1 = _XceptionBlock(64, 128, 2, 2, start_with_relu=False, grow_first=True)
        self.block2 = _XceptionBlock(128, 256, 2, 2)
        self.block3 = _XceptionBlock(256, 728, 2, 2)
        for i in range(4, 12):
            setattr(self, f"block{i}", _XceptionBlock(728, 728, 3, 1))
        self.block12 = _XceptionBlock(728, 1024, 2, 2, grow_first=False)
        self.conv3 = _SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = _SeparableConv2d(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)
        self.last_linear = nn.Linear(2048, 1)

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for i in range(1, 13):
            x = getattr(self, f"block{i}")(x)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.bn4(self.conv4(x))  # no ReLU: `logits` (and fornet.Xception.features) apply it

    def pooled(self, x):
        return F.adaptive_avg_pool2d(F.relu(self.features(x)), (1, 1)).flatten(start_dim=1)

    def forward(self, x):
        return self.last_linear(self.pooled(x))


class _Xception(nn.Module):
    """fornet.Xception: the network under `xception`; features = ReLU + average pool of its features."""

    def __init__(self):
        super().__init__()
        self.xception = _XceptionNet()

    def features(self, x):
        return self.xception.pooled(x)

    def forward(self, x):
        return self.xception(x)


class _SiameseTuning(nn.Module):
    """fornet.SiameseTuning (lastonly=True): `feat_ext` (a whole plain model, its own classifier unused)
    and `classifier` = BatchNorm1d + Linear(., 1) on feat_ext.features."""

    def __init__(self, feat_ext: nn.Module, num_feat: int):
        super().__init__()
        self.feat_ext = feat_ext
        self.classifier = nn.Sequential(nn.BatchNorm1d(num_feat), nn.Linear(num_feat, 1))

    def features(self, x):
        return self.feat_ext.features(x)

    def forward(self, x):
        with torch.no_grad():
            x = self.features(x)
        return self.classifier(x)


def build(name: str) -> nn.Module:
    """The published architecture `name` (one of ARCHITECTURES), random weights, eval mode, float32, CPU,
    with the state_dict keys and shapes of their .pth files."""
    makers = {
        "EfficientNetB4": lambda: _EfficientNetClassifier(attention=False),
        "EfficientNetAutoAttB4": lambda: _EfficientNetClassifier(attention=True),
        "EfficientNetB4ST": lambda: _SiameseTuning(_EfficientNetClassifier(attention=False), 1792),
        "EfficientNetAutoAttB4ST": lambda: _SiameseTuning(_EfficientNetClassifier(attention=True), 1792),
        "Xception": _Xception,
    }
    if name not in makers:
        raise ValueError(f"unknown architecture {name!r}; expected one of {ARCHITECTURES}")
    return makers[name]().float().eval()


# --------------------------------------------------------------------------------------------------
# Settling a random model
# --------------------------------------------------------------------------------------------------


def _reinit(model: nn.Module, generator: torch.Generator) -> None:
    """Seeded re-initialisation. Convolutions followed by a BatchNorm (all bias-free) get He-normal fan-out
    weights (their scale is then set by the BatchNorm); the convolutions with a bias, which no BatchNorm
    follows (squeeze-excitation, attention), get 1/sqrt(fan-in) weights (0.5/sqrt(fan-in) for the attention,
    whose input is the unnormalised residual stream) and small biases, so that their sigmoid gates vary
    rather than saturate at 0 or 1. BatchNorm affine parameters are made non-trivial; linear layers get
    1/sqrt(fan-in) normal weights."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                if m.bias is None:
                    fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                    std = (2.0 / fan_out) ** 0.5
                else:
                    fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                    std = (0.5 if name.endswith("attconv") else 1.0) / fan_in ** 0.5
                    m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.6 + 0.8 * torch.rand(m.weight.shape, generator=generator))
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.2)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) / m.in_features ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)


def _head(model: nn.Module):
    """(input of the Linear that produces the logit, as a function of the image batch; that Linear)."""
    if isinstance(model, _SiameseTuning):
        return (lambda x: model.classifier[0](model.features(x))), model.classifier[1]
    if isinstance(model, _Xception):
        return model.xception.pooled, model.xception.last_linear
    return model.features, model.classifier  # dropout before it is the identity in eval mode


def settle(model: nn.Module, crops: torch.Tensor, seed: int = 0, passes: int = 2,
           spread: float = 1.0) -> nn.Module:
    """Make a random model's outputs spread like a trained one's, deterministically in `seed`.

    `crops`: a normalised (N, 3, 224, 224) float batch of real face crops (see `normalise`). Steps:
    (1) seeded re-initialisation of every weight (BatchNorm affine included, see `_reinit`);
    (2) `passes` forward passes under torch.no_grad with only the BatchNorm layers in training mode
        (dropout and drop-connect stay off) and cumulative-average momentum, alternately over the crops and
        their mirror images, so every running mean/var (the ST BatchNorm1d's included) reflects real faces;
    (3) the final Linear is redrawn inside the span of the crops' centred features, the directions a
        trained head would look along: a ridge regression (ridge = 0.1 x the mean eigenvalue of their Gram
        matrix) of seeded random targets. A random direction mostly reads the features' common part, so a
        useful spread needs a large weight that amplifies float32 rounding (measured ~8x worse); a plain
        random combination of the centred features is dominated by the gap between videos and leaves
        near-identical frames of one video a few thousandths apart; the ridge spreads them by ~0.1-0.4
        while the float32 error of the logits stays ~1e-5 (measured against float64). The weight is then
        scaled so that the logits of `crops` have standard deviation `spread`, and the bias set so that
        their mean is -0.5 (sigmoid ~0.38: away from 0.5 and from saturation). With a single crop (or
        identical ones) the Linear keeps its random direction.
    Returns the model in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    _reinit(model, generator)
    crops = crops.float()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    saved = [m.momentum for m in norms]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes
            m.train()
        for i in range(max(passes, 1)):
            model(crops if i % 2 == 0 else crops.flip(-1))
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()

        head_input, linear = _head(model)
        h = head_input(crops).double()  # (N, D)
        centred = h - h.mean(dim=0)
        gram = centred @ centred.T  # (N, N)
        ridge = 0.1 * float(torch.trace(gram)) / len(h)
        if ridge > 0:
            targets = torch.randn(len(h), generator=generator, dtype=torch.float64)
            coef = torch.linalg.solve(gram + ridge * torch.eye(len(h), dtype=torch.float64), targets)
            linear.weight.copy_((coef @ centred)[None].float())
        z = h @ linear.weight[0].double()
        std = float(z.std()) if len(z) > 1 else 0.0
        scale = spread / std if std > 0 else 1.0
        linear.weight.mul_(scale)
        linear.bias.fill_(-float(z.mean()) * scale - 0.5)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Face crop
# --------------------------------------------------------------------------------------------------


def _adapt_bb(frame_height, frame_width, bb_height, bb_width, left, top, right, bottom):
    """isplutils.utils.adapt_bb: a bb_height x bb_width box centred on the given box (centre by floor
    division of the coordinate sums, in whatever dtype the inputs carry), pushed inside the frame at the
    top/left (max 0) and then CLIPPED, not shifted, at the bottom/right: near those edges it comes out
    smaller than asked."""
    x_ctr = (left + right) // 2
    y_ctr = (bottom + top) // 2
    new_top = max(y_ctr - bb_height // 2, 0)
    new_bottom = min(new_top + bb_height, frame_height)
    new_left = max(x_ctr - bb_width // 2, 0)
    new_right = min(new_left + bb_width, frame_width)
    return new_left, new_top, new_right, new_bottom


def _pil_box(box):
    """The integer box PIL's Image.crop uses: it applies int(round(v)) to each coordinate itself (round half
    to even on the floats adapt_bb returns). Every value reaching it here is already integral, so this only
    makes the conversion explicit."""
    return tuple(int(round(float(v))) for v in box)


def _blazeface_margin(box, frame_height: int, frame_width: int, margin: float) -> np.ndarray:
    """FaceExtractor._add_margin_to_detections on one detection, in float32 torch as theirs runs: returns
    (ymin, xmin, ymax, xmax) as float32. offset = torch.round(margin * height) (half to even); the top moves
    up by 2 * offset (detections miss the forehead), the other sides by offset; ymin and xmin are clamped at
    0 only, ymax at H and xmax at W only."""
    x1, y1, x2, y2 = (float(v) for v in box)
    det = torch.tensor([[y1, x1, y2, x2]], dtype=torch.float32)  # BlazeFace's ymin, xmin, ymax, xmax order
    offset = torch.round(margin * (det[:, 2] - det[:, 0]))
    out = det.clone()
    out[:, 0] = torch.clamp(det[:, 0] - offset * 2, min=0)
    out[:, 1] = torch.clamp(det[:, 1] - offset, min=0)
    out[:, 2] = torch.clamp(det[:, 2] + offset, max=frame_height)
    out[:, 3] = torch.clamp(det[:, 3] + offset, max=frame_width)
    return out[0].numpy()


def crop(frame: np.ndarray, box, size: int = 224, margin: float = 0.2, window: int = 512) -> np.ndarray:
    """Polimi's face crop of an RGB uint8 H x W x 3 `frame` given a detector box (x1, y1, x2, y2) in frame
    pixels (float32 values, as a detector gives). Returns a size x size x 3 uint8 RGB array.

    (1) the BlazeFace extractor's margin (`_blazeface_margin`), float32;
    (2) extract_faces.process_video: a `window`-px square from adapt_bb centred on that box, cropped from
        the frame with PIL, and the box made relative to it and stored as int16 (truncation toward zero);
    (3) load time, extract_bb(window_image, relative_box, 'scale', size): a square of side
        int(size / min(size / h, size / w)) centred on the int16 box by adapt_bb, clipped to the window,
        PIL crop, then resize((size, size), BILINEAR).
    Where the dtype was a choice, see the comments: the steps mirror their types.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("frame must be an H x W x 3 uint8 RGB array")
    height, width = frame.shape[:2]

    # (1) margin, float32 (their detections are a float32 torch tensor, then .cpu().numpy()).
    ymin, xmin, ymax, xmax = _blazeface_margin(box, height, width, margin)

    # (2) the window. process_video passes the np.float32 scalars straight to adapt_bb: left + right is a
    # float32 sum (rounded to float32: kept), `// 2` floors it. Under NumPy >= 2 the result stays float32, under
    # the NumPy 1.x they ran it is float64, but floor(s / 2) of a float32 s is exact in both, so the window is
    # the same integral box. max(..., 0) may return the int 0.
    win_box = _adapt_bb(height, width, window, window, xmin, ymin, xmax, ymax)
    full = Image.fromarray(frame)
    window_image = full.crop(_pil_box(win_box))
    # face_dict[key] -= cropping_bb[...]: a float32 coordinate minus an integral value; the difference is exact
    # in float32 and float64 alike (|difference| <= coordinate, integral offset), so computing it in float32 is
    # not a choice that matters. The DataFrame then casts with astype(np.int16): truncation toward zero (a
    # box sticking out of the window above/left gives e.g. -3.7 -> -3, not -4).
    left_off, top_off = np.float32(win_box[0]), np.float32(win_box[1])
    relative = np.array([xmin - left_off, ymin - top_off, xmax - left_off, ymax - top_off], dtype=np.float32)
    left, top, right, bottom = relative.astype(np.int16)

    # (3) extract_bb(..., 'scale', size) on the window. Python-float arithmetic: size / (size / h) is not
    # always h again (224 / (224 / 100) = 99.99999999999999, which int() truncates to 99): kept as written.
    bb_width = int(right) - int(left)
    bb_height = int(bottom) - int(top)
    ratio = min(size / bb_height, size / bb_width) if (bb_width > 0 and bb_height > 0) else 1.0
    side = int(size / ratio)
    # adapt_bb receives the np.int16 scalars (centre by int16 floor division; values are far from overflow,
    # so Python ints give the same numbers under either NumPy's promotion rules).
    square = _adapt_bb(window_image.height, window_image.width, side, side,
                       int(left), int(top), int(right), int(bottom))
    face = window_image.crop(_pil_box(square)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(face, dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def normalise(crops) -> torch.Tensor:
    """uint8 RGB size x size x 3 crops -> the (N, 3, size, size) float32 batch their test transform gives:
    get_transformer('scale', size, normalizer, train=False) = PadIfNeeded(size) (+ Resize(size) in later
    versions), both no-ops on size x size crops, then albumentations' Normalize in float32 as it computes it
    (mean * 255 subtracted, times the reciprocal of std * 255) and ToTensorV2 (HWC -> CHW)."""
    x = np.stack([np.asarray(c) for c in crops]).astype(np.float32)
    mean = np.array(MEAN, dtype=np.float32) * np.float32(255.0)
    inverse = np.reciprocal(np.array(STD, dtype=np.float32) * np.float32(255.0))
    x = (x - mean) * inverse
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def logits(model: nn.Module, crops) -> np.ndarray:
    """float64 logits of `crops` (uint8 RGB size x size x 3): normalised as `normalise` does, one float32
    forward in eval mode without gradients."""
    model.eval()
    with torch.no_grad():
        out = model(normalise(crops).float())
    return out[:, 0].double().numpy()


def video_score(frame_logits) -> float:
    """Their video score: sigmoid of the mean of the frame logits (expit(faces_pred.mean()))."""
    return float(scipy.special.expit(np.mean(np.asarray(frame_logits, dtype=np.float64))))


def best_face(boxes, scores):
    """FaceExtractor.keep_only_best_face after _soft_faces_by_descending_score: the index of the most
    confident detection of a frame (None when there is none). They sort with np.argsort(scores)[::-1] on the
    float32 scores, so among exactly tied best scores the LAST one wins (NumPy 1.x's argsort is stable on
    such short arrays, and the order is reversed); with one detection no sort happens at all."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if boxes is not None and len(boxes) != len(scores):
        raise ValueError("boxes and scores differ in length")
    if len(scores) == 0:
        return None
    # Written out rather than calling np.argsort: NumPy >= 2 may sort float32 with a SIMD quicksort that is
    # not stable, whereas the NumPy 1.x introsort they ran is (insertion sort below 17 elements).
    return max(range(len(scores)), key=lambda i: (scores[i], i))
