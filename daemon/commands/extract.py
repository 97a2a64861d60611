"""Extract aligned faces, landmarks and masks from a video or photo.

Writes one PNG per face (`<source-stem>_<frame>_<face>.png`, metadata inside) and an
alignments file (`alignments.json.gz`) into the output folder. Keep every Nth frame for
training sets (4 at 25 fps is a good start); every frame (1) for conversion targets.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="video (mp4, mov, mkv, avi, webm) or photo")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the faces")
    parser.add_argument("--every-n", type=int, default=1, metavar="N",
                        help="keep every Nth frame (default: 1, every frame)")
    parser.add_argument("--size", type=int, default=512, metavar="PX",
                        help="side of the aligned face crop in pixels (default: 512)")
    parser.add_argument("--min-size", type=int, default=48, metavar="PX",
                        help="reject faces smaller than this in the source frame (default: 48)")
    parser.add_argument("--alignments", type=Path, metavar="FILE",
                        help="alignments file to write (default: OUTPUT/alignments.json.gz)")
    parser.add_argument("--no-smoothing", action="store_true",
                        help="turn off the temporal landmark filter (on for videos by default)")
    parser.add_argument("--max-faces", type=int, default=4, metavar="N",
                        help="most faces to look for in one frame (default: 4)")


def run(args: argparse.Namespace) -> int:
    from hotfolders.extract import extract

    from ..progress import progress_bar

    if args.every_n < 1:
        raise UsageError("--every-n must be at least 1")
    if args.size < 64:
        raise UsageError("--size must be at least 64")
    with progress_bar(f"extract {args.input.name}") as update:
        summary = extract(args.input, args.output, every_n=args.every_n, size=args.size,
                          min_size=args.min_size, alignments_path=args.alignments,
                          smooth=False if args.no_smoothing else None,
                          max_faces=args.max_faces, progress=update)
    print(summary.describe())
    print(f"alignments: {summary.alignments_path}")
    return 0
