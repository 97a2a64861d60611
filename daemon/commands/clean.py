"""Prune the alignments file to the faces kept after review, and restore their names.

Run it after deleting the bad faces of a sorted folder: every face whose image is gone is
removed from the alignments file (the old file is kept as FILE.bak), and the faces left get
their extraction names back. Faces are matched by the metadata inside each PNG, not by file
name. Faces of another video or another extraction are refused, with nothing changed.
Running it again changes nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, metavar="DIR", help="folder of reviewed faces")
    parser.add_argument("--alignments", type=Path, metavar="FILE",
                        help="alignments file of these faces (default: DIR/alignments.json.gz)")


def run(args: argparse.Namespace) -> int:
    from hotfolders.alignments import ALIGNMENTS_NAME
    from hotfolders.clean import clean

    path = args.alignments or args.folder / ALIGNMENTS_NAME
    result = clean(args.folder, path)
    print(result.describe())
    return 0
