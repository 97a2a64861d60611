"""Sort extracted faces so the bad ones come first (rename with a rank prefix, undoable).

Methods: face (least typical first: no face, another person, occluded; then look-alike
faces together), hist (colour histogram, the same way), blur (blurriest first), dark
(darkest first), yaw / pitch (most turned or tilted first), size (smallest in the source
first). Only file names change, never pixels; `--undo` restores the names from the record
kept in DIR/.facedrop-sort.json. With `--keep OUTDIR` the ranked faces are copied there and
DIR is left alone. A review report (review.json + review.jpg contact sheet of suspect faces)
is written beside the sorted faces unless `--no-report` is given.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hotfolders.sort import METHODS

    parser.add_argument("folder", type=Path, metavar="DIR", help="folder of extracted faces")
    parser.add_argument("--by", choices=METHODS, default="face", metavar="METHOD",
                        help=f"sort method: {', '.join(METHODS)} (default: face)")
    parser.add_argument("--keep", type=Path, metavar="OUTDIR",
                        help="copy the faces under their ranked names into OUTDIR (new or "
                             "empty) instead of renaming them in DIR")
    parser.add_argument("--undo", action="store_true",
                        help="give the faces of DIR back the names they had before sorting")
    parser.add_argument("--no-report", action="store_true",
                        help="do not write review.json / review.jpg")


def run(args: argparse.Namespace) -> int:
    from hotfolders.review import describe, review_report
    from hotfolders.sort import sort_faces, undo_sort

    from ..progress import progress_bar

    if args.undo:
        if args.keep:
            raise UsageError("--undo and --keep do not go together")
        count = undo_sort(args.folder)
        print(f"{args.folder}: restored {count} names from before the sort")
        return 0
    with progress_bar(f"sort {args.folder.name} by {args.by}", unit="face") as update:
        result = sort_faces(args.folder, by=args.by, keep_dir=args.keep, progress=update)
    print(result.describe())
    if not args.no_report:
        with progress_bar("review", unit="face") as update:
            report = review_report(result.target, progress=update)
        print(describe(report, result.target))
    if not result.copied:
        print(f"undo with: facedrop sort {result.target} --undo")
    return 0
