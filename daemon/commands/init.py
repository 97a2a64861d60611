"""Create a facedrop root: the hot-folder tree and a commented facedrop.toml.

Existing folders and an existing facedrop.toml are left as they are.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, nargs="?", default=Path("facedrop-data"),
                        help="folder to create (default: ./facedrop-data)")


def run(args: argparse.Namespace) -> int:
    from ..config import HOT_FOLDERS, init_root

    root = args.root.expanduser().resolve()
    made = init_root(root)
    print(f"facedrop root: {root} ({len(made)} created)")
    for name in HOT_FOLDERS:
        print(f"  {name + '/':<10} {(root / name)}")
    print(f"settings: {root / 'facedrop.toml'}\nnext: facedrop run --root {root}")
    return 0
