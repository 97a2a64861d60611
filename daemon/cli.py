"""The ``facedrop`` console script: one sub-command per module in :mod:`daemon.commands`.

Each command module has a docstring (its help text), ``add_arguments(parser)`` and
``run(args) -> int``. Bad input (:class:`hotfolders.errors.InputError`) becomes a one-line
message on stderr and exit code 2; ``--verbose`` shows the library chatter and tracebacks.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMANDS = ("init", "run", "status", "demo", "extract", "draw", "sort", "clean", "coverage",
            "train", "convert")
EXIT_BAD_INPUT = 2


def _load(name: str):
    return importlib.import_module(f"daemon.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facedrop",
        description="facedrop: a hot-folder face-swap service (extract -> review -> train -> "
                    "convert). Run `facedrop init ROOT` once, then `facedrop run`; or use the "
                    "stage commands directly.",
        epilog="Only swap faces of people who have given their consent. Every output is "
               "labelled as synthetic.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show debug logging and TensorFlow/MediaPipe messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name)
        doc = (module.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else name
        cmd = sub.add_parser(name, help=summary, description=doc,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show debug logging and TensorFlow/MediaPipe messages")
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def setup_logging(verbose: bool) -> None:
    from .logs import setup

    setup(verbose)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    os.environ["FACEDROP_VERBOSE"] = "1" if verbose else "0"
    from hotfolders import quiet

    quiet.silence(verbose)
    quiet.filter_native_stderr()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 0
    setup_logging(verbose)
    from hotfolders.errors import InputError

    try:
        return int(args._module.run(args) or 0)
    except InputError as exc:
        if verbose:
            logging.exception("bad input")
        print(f"facedrop {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"facedrop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
