"""Published solutions' inference recipes, for ``python -m kernels.predict --preset NAME``.

A preset sets flag defaults (a flag given explicitly still wins) and the settings no flag reaches;
the model side of each recipe (crop, resize, normalisation, frame -> video rule) travels in the
converted checkpoints' crop specs (``python -m training.convert``).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    """``flags``: argparse defaults of ``kernels.predict``; ``settings``: :class:`kernels.scoring.Settings`
    fields; ``detector``: :class:`preprocessing.detect.FaceDetector` keyword arguments."""

    flags: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    detector: dict = field(default_factory=dict)


PRESETS = {
    # 1st place (selimsef/dfdc_deepfake_challenge, kernel_utils.py): 32 frames at int(linspace(0, n - 1, 32)),
    # MTCNN 0.7/0.8/0.8 on each frame alone (batched MTCNN moves boxes by a float32 ulp, and int() can
    # turn that into a pixel), halved with PIL (boxes x 2); every face of every frame, at most 127.
    "selim": Preset(
        flags={"frames": 32, "thresholds": (0.7, 0.8, 0.8), "min_score": 0.0, "min_size": 0.0, "batch_size": 1},
        settings={"tracking": False, "max_faces": 127, "floor": True},
        detector={"scale": 0.5, "resample": "pil"},
    ),
    # Polimi (icpr2020dfdc, blazeface/read_video.py and face_extract.py): 32 frames at
    # int(linspace(0, n - 1, 32)), each frame's most confident face (keep_only_best_face); their
    # detector is BlazeFace, ours MTCNN at its defaults.
    "polimi": Preset(
        flags={"frames": 32},
        settings={"tracking": False, "per_frame": 1, "floor": True},
    ),
}
