"""Atomic file writes (a reader never sees a half-written file under its final name) and file digests."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success ``os.replace`` it onto ``path``.

    On any exception the temporary file is removed and ``path`` keeps its earlier content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)


def changed_settings(path: str | os.PathLike, settings: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """``key=<recorded> (now <given>)`` for each of ``keys`` whose value in ``settings`` differs from the
    one the JSON file ``path`` records (both compared as JSON), so a resumed output made with other
    settings can be refused; none where the file does not exist yet."""
    path = Path(path)
    if not path.is_file():
        return []
    earlier, current = json.loads(path.read_text()), json.loads(json.dumps(settings))
    return [f"{key}={earlier.get(key)!r} (now {current[key]!r})" for key in keys if earlier.get(key) != current[key]]


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB (or single-channel) uint8 image as a lossless PNG, atomically."""
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_write(path, "wb") as f:
        f.write(encoded.tobytes())


def write_figure(path: str | os.PathLike, figure: Any, dpi: int = 100) -> None:
    """Write a matplotlib ``Figure`` as a PNG at ``dpi``, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex): identifies a checkpoint or a stacking file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
