"""What a kernel run scores with and what it scores: the shipped checkpoints (and stacking file), the
videos of a folder named by their relative paths, and one shard of them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from models.checkpoint import checkpoint_family
from models.stacking import Stacking
from preprocessing.sample import resolve_videos

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: The stacking file a run without ``--weights`` applies where it exists (``python -m kernels.calibrate --stack``).
STACKING = WEIGHTS_DIR / "stacking.json"


def default_weights() -> list[Path]:
    """The frame-model checkpoints shipped in ``weights/`` (``*.pt``), sorted; a sequence model
    (``lrnet_*.pt``) runs only where ``--weights`` names it. Raises ``CheckpointError`` for an unreadable file."""
    return sorted(path for path in WEIGHTS_DIR.glob("*.pt") if checkpoint_family(path) == "frame")


def resolve_models(weights: Sequence[str | Path] | None, stacking: str | Path | None) -> tuple[list[Path], Path | None]:
    """The checkpoints and the stacking file of a run. ``stacking`` given: its members, loaded from
    beside it, unless ``weights`` names them; neither given: :data:`STACKING` and its members where
    that file exists, else :func:`default_weights`, averaged; ``weights`` alone: those, averaged.
    Raises ``StackingError`` for a bad stacking file or a member's checkpoint missing."""
    if stacking is None and not weights and STACKING.is_file():
        stacking = STACKING
    if weights:
        return [Path(w) for w in weights], None if stacking is None else Path(stacking)
    if stacking is not None:
        return Stacking.load(stacking).checkpoints(stacking), Path(stacking)
    return default_weights(), None


def named_videos(given: Sequence[Path] | None, sample_dir: Path) -> list[tuple[str, Path]]:
    """``(filename, path)`` for every video of ``given`` (folders searched recursively; none: the
    Kaggle test folder or the embedded sample rendered into ``sample_dir``), named by the path
    relative to the folder given, or the bare file name."""
    listed, root = resolve_videos(given, sample_dir)
    return [((p.relative_to(root) if root else Path(p.name)).as_posix(), p) for p in listed]


def shard(videos: list[tuple[str, Path]], spec: str | None) -> list[tuple[str, Path]]:
    """Keep shard ``i`` of ``n`` (``"i/n"``, 0-based): every n-th video of the sorted list from i."""
    if not spec:
        return videos
    try:
        i, n = (int(v) for v in spec.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        raise ValueError(f"--shard must be i/n with 0 <= i < n, got {spec!r}") from None
    return videos[i::n]
