"""The ``facedrop`` console script: one sub-command per module in :mod:`daemon.commands`.

Each command module has a docstring (its help text), ``add_arguments(parser)`` and
``run(args) -> int``. Errors become one line on stderr and an exit code a service manager
can act on (:data:`EXIT_CODES`): bad input or usage 2, a configuration error 3 (systemd's
``RestartPreventExitStatus=3``: a typo in ``facedrop.toml`` is reported once, not retried
forever). ``--verbose`` shows the library chatter and tracebacks.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMANDS = ("init", "run", "status", "demo", "extract", "draw", "sort", "clean", "coverage",
            "mask", "train", "convert", "doctor")
EXIT_OK = 0
EXIT_FAILURE = 1      # the command could not do its work (e.g. a daemon already runs there)
EXIT_BAD_INPUT = 2    # bad input file or folder, or a bad option
EXIT_CONFIG = 3       # facedrop.toml (or --config) is missing, unreadable or invalid
EXIT_CODES = {EXIT_OK: "success", EXIT_FAILURE: "the work could not be done",
              EXIT_BAD_INPUT: "bad input or usage", EXIT_CONFIG: "configuration error"}


class UsageError(Exception):
    """A bad combination or value of options, found after parsing (exit code 2)."""


def _version() -> str:
    from hotfolders import version

    return version()


def _load(name: str):
    return importlib.import_module(f"daemon.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facedrop",
        description="facedrop: a hot-folder face-swap service (extract -> review -> train -> "
                    "convert). Run `facedrop init ROOT` once, then `facedrop run`; or use the "
                    "stage commands directly.",
        epilog="exit codes: " + ", ".join(f"{code} {text}" for code, text in EXIT_CODES.items())
               + ".\n\nOnly swap faces of people who have given their consent. Every output is "
               "labelled as synthetic.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"facedrop {_version()}")
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
    from hotfolders.names import printable

    from .config import ConfigError

    def fail(code: int, exc: BaseException) -> int:
        if verbose:
            logging.exception("%s", EXIT_CODES[code])
        print(printable(f"facedrop {args.command}: error: {exc}"), file=sys.stderr)
        return code

    try:
        return int(args._module.run(args) or 0)
    except ConfigError as exc:
        return fail(EXIT_CONFIG, exc)
    except (InputError, UsageError) as exc:
        return fail(EXIT_BAD_INPUT, exc)
    except KeyboardInterrupt:
        print(f"facedrop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
