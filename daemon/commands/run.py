"""Run the daemon: watch the hot folders, run jobs, serve the status page.

Stops cleanly on SIGTERM or Ctrl-C (training saves first). Logs go to stderr (the journal
under systemd) and to ROOT/.facedrop/facedrop.log.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="facedrop root (default: $FACEDROP_ROOT, else `root` in the config, "
                             "else ./facedrop-data)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="settings file (default: ROOT/facedrop.toml)")
    parser.add_argument("--host", default=None, help="status page address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="status page port (default: 8765; "
                                                               "0 picks a free one)")
    parser.add_argument("--poll", type=float, default=None, metavar="SECONDS",
                        help="poll the folders every SECONDS instead of inotify (network shares)")
    parser.add_argument("--no-web", action="store_true", help="do not serve the status page")


def run(args: argparse.Namespace) -> int:
    from .. import config as cfg
    from ..service import run as run_service

    from dataclasses import replace

    config = cfg.load(args.root or cfg.root_from_environment(), args.config)  # exit 3 if bad
    given = {"host": args.host, "port": args.port, "poll_seconds": args.poll}
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    return run_service(config, getattr(args, "verbose", False), serve_web=not args.no_web)
