"""Check that B's training faces cover the poses and expressions A shows.

A_DIR holds faces of person A (the target video's person), B_DIR the training faces of B;
each may be a folder of faces or a person's folder with one sub-folder per source.
Prints which yaw/pitch regions (and mouth/eye states) of A have no B face nearby, and the
share of A's faces that are covered. A swap looks weak where B has no examples; add B
footage in those poses. `--image` writes a heat-map PNG (put it outside the face folders).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a_dir", type=Path, metavar="A_DIR", help="faces of person A (target)")
    parser.add_argument("b_dir", type=Path, metavar="B_DIR", help="training faces of person B")
    parser.add_argument("--image", type=Path, metavar="OUT.png",
                        help="write a yaw/pitch heat-map of both sets to this PNG")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--min-count", type=int, metavar="N",
                        help="A faces a region needs to be reported (default: 2, or 2%% of A)")


def run(args: argparse.Namespace) -> int:
    from hotfolders.coverage import coverage, report_json

    if args.min_count is not None and args.min_count < 1:
        raise UsageError("--min-count must be at least 1")
    report = coverage(args.a_dir, args.b_dir, out_image=args.image, min_count=args.min_count)
    print(report_json(report) if args.json else report.describe())
    return 0
