"""Show what the daemon is doing: running job, queue, models, recent failures.

Reads the state database only (works while the daemon runs, or after it stopped), through the
same reader as the status page: `--json` prints exactly what the page's /api/status serves.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="facedrop root (default: $FACEDROP_ROOT, else ./facedrop-data)")
    parser.add_argument("--json", action="store_true",
                        help="print the status as JSON (the status page's /api/status shape)")


def _progress(job: dict) -> str:
    if job.get("total"):
        return f" {job.get('done') or 0}/{job['total']} {job.get('unit') or ''}".rstrip()
    return ""


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    from hotfolders.names import printable
    from web_status.status import StatusReader

    from ..config import Config, root_from_environment

    def say(line: str) -> None:  # names come from hot folders: no raw control characters
        print(printable(line))

    root = (args.root or root_from_environment() or Config().root).expanduser().resolve()
    s = StatusReader(root, root / ".facedrop" / "state.db").build()
    if args.json:
        print(json.dumps(s, indent=2, ensure_ascii=False))
        return 0
    daemon = s["daemon"]
    if daemon["state"] == "not-run":
        say(f"{root}: the daemon has not run here yet (facedrop run --root {root})")
        return 0
    say(f"daemon: {daemon['state']} — {daemon.get('message') or ''}"
        + (f" — {daemon['url']}" if daemon["state"] == "running" and daemon.get("url") else ""))
    for job in s["running"]:
        node = f" on {job['node']}" if job.get("node") else ""
        say(f"running: #{job['id']} {job['kind']} {job['name']}{node}{_progress(job)}"
            f" {job.get('message') or ''}")
    say(f"queue: {s['counts']['queue_length']} job(s)")
    for job in s["queue"][:10]:
        waiting = f" ({job['message']})" if str(job.get("message") or "").startswith(
            "waiting") else ""
        say(f"  #{job['id']} {job['kind']:8} {job['status']:7} {job['name']}{waiting}")
    for m in s["models"]:
        say(f"model {m['name']}: {m['a']} -> {m['b']}, {m['iterations'] or 0} iterations, "
            f"loss A {_loss(m['loss']['a'])} B {_loss(m['loss']['b'])} ({m['state']})"
            + (f"; {m['stop_reason']}" if m.get("stop_reason") else ""))
    for f in s["failures"][:5]:
        say(f"failed: {f['stage']} {f['file']}: {f['reason']}")
    for item in s["ignored"][:10]:
        say(f"ignored: {item['path']}: {item['reason']}")
    if len(s["ignored"]) > 10:
        say(f"ignored: {len(s['ignored']) - 10} more (see the status page)")
    return 0
