"""Draw landmarks, the face-mesh oval and a mask on frames, to check alignments by eye.

Writes one JPEG per frame that has faces in the alignments file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hotfolders.masks import MASK_TYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="the video or photo the alignments were made from")
    parser.add_argument("--alignments", type=Path, required=True, metavar="FILE",
                        help="alignments file (alignments.json.gz)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the overlays")
    parser.add_argument("--mask", choices=MASK_TYPES, default="extended",
                        help="mask to tint (default: extended)")
    parser.add_argument("--every-n", type=int, default=1, metavar="N",
                        help="draw every Nth frame (default: 1)")


def run(args: argparse.Namespace) -> int:
    from hotfolders.draw import draw

    from ..progress import progress_bar

    with progress_bar(f"draw {args.input.name}") as update:
        count = draw(args.input, args.alignments, args.output, mask=args.mask,
                     every_n=args.every_n, progress=update)
    print(f"{count} frames drawn to {args.output}")
    return 0
