"""Render a grid of augmented training samples (what the model sees) with their sources, targets and
the dropout each received.

    python -m training.preview_augs --crops OUT --out grid.png [--mix 0.5 0 0.5]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from models.zoo import ModelConfig
from plumbing.fileio import write_figure
from plumbing.logs import configure_logging

from .dataset import SOURCES, CropDataset

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.preview_augs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=Path, required=True, help="prepared folder (with crops.csv and videos.csv)")
    parser.add_argument("--out", type=Path, default=Path("grid.png"), help="PNG to write (default: grid.png)")
    parser.add_argument("--samples", type=int, default=16, help="samples to show (default: 16)")
    parser.add_argument("--cols", type=int, default=4, help="grid columns (default: 4)")
    parser.add_argument("--size", type=int, default=380, help="model input size in pixels (default: 380)")
    parser.add_argument("--mixup", type=float, default=0.25, help="probability of paired mixup (default: 0.25)")
    parser.add_argument("--mix", type=float, nargs=3, default=(0.5, 0.5, 0.0), metavar=("REAL", "FAKE", "PSEUDO"),
                        help="shares of real crops, fake crops and self-blended pseudo-fakes (default: 0.5 0.5 0)")
    parser.add_argument("--fold", type=int, default=None, help="show the training folds of this fold (default: all)")
    parser.add_argument("--epoch", type=int, default=0, help="first epoch whose balanced draw to show (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def to_rgb(image, config: ModelConfig) -> np.ndarray:
    """Undo the normalisation of a ``(3, S, S)`` sample tensor: RGB uint8 ``S x S x 3``."""
    rgb = image.permute(1, 2, 0).numpy() * np.asarray(config.std) + np.asarray(config.mean)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def caption(item: dict, width: int = 36) -> str:
    """``pseudo 0.99 | eyes`` (source, target, dropout) over the end of the video id; ``mix`` when
    mixup blended the sample."""
    target = float(item["target"])
    kind = item["source"] if target <= 0.01 or target >= 0.99 else "mix"
    video = item["video"] if len(item["video"]) <= width else "…" + item["video"][1 - width:]
    return f"{kind} {target:.2f} | {item['dropout']}\n{video}"


def render(dataset: CropDataset, samples: int, cols: int) -> Figure:
    """A ``cols``-wide grid of ``samples`` samples: the dataset's current epoch, then the next ones."""
    first_epoch = dataset.epoch
    rows = max(1, -(-samples // cols))
    figure = Figure(figsize=(2.6 * cols, 2.9 * rows))
    axes = figure.subplots(rows, cols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < samples:
            dataset.set_epoch(first_epoch + index // len(dataset))
            item = dataset[index % len(dataset)]
            ax.imshow(to_rgb(item["image"], dataset.config))
            ax.set_title(caption(item), fontsize=8)
    figure.suptitle(f"{dataset.root.name}: from epoch {first_epoch}, seed {dataset.seed}, "
                    f"{dataset.config.input_size} px, mixup {dataset.mixup}, mix {dataset.mix}", fontsize=9)
    figure.tight_layout()
    return figure


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    config = ModelConfig(encoder="preview", input_size=args.size)
    try:
        dataset = CropDataset(args.crops, config, fold=args.fold, train=True, mixup=args.mixup,
                              mix=dict(zip(SOURCES, args.mix)), seed=args.seed)
        dataset.set_epoch(args.epoch)
        figure = render(dataset, args.samples, args.cols)
    except ValueError as err:  # PreparedDataError or an impossible --mix
        log.error("%s", err)
        return 1
    write_figure(args.out, figure)
    log.info("wrote %s (%d samples)", args.out, args.samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
