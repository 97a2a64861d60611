"""Show what the daemon is doing: running job, queue, models, recent failures.

Reads the state database only (works while the daemon runs, or after it stopped).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="facedrop root (default: $FACEDROP_ROOT, else ./facedrop-data)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _progress(job: dict) -> str:
    if job.get("total"):
        return f" {job.get('done') or 0}/{job['total']} {job.get('unit') or ''}".rstrip()
    return ""


def run(args: argparse.Namespace) -> int:
    from hotfolders.names import printable

    from ..store import snapshot

    def say(line: str) -> None:  # names come from hot folders: no raw control characters
        print(printable(line))

    from ..config import Config, root_from_environment

    root = (args.root or root_from_environment() or Config().root).expanduser().resolve()
    state = snapshot(root / ".facedrop" / "state.db")
    if args.json:
        print(json.dumps({"root": str(root), **state}, indent=2, default=str))
        return 0
    daemon = state["daemon"]
    if daemon is None:
        say(f"{root}: the daemon has not run here yet (facedrop run --root {root})")
        return 0
    age = time.time() - float(daemon.get("heartbeat", 0))
    alive = daemon.get("state") != "stopped" and age < 30
    say(f"daemon: {'running' if alive else 'not running'} — {daemon.get('message', '')}"
        + (f" — {daemon['url']}" if alive and daemon.get("url") else ""))
    for job in state["running"]:
        say(f"running: #{job['id']} {job['kind']} {Path(job['input']).name}{_progress(job)}"
            f" {job.get('message') or ''}")
    say(f"queue: {len(state['queue'])} job(s)")
    for job in state["queue"][:10]:
        waiting = f" ({job['message']})" if str(job.get("message") or "").startswith(
            "waiting:") else ""
        say(f"  #{job['id']} {job['kind']:8} {job['status']:7} {Path(job['input']).name}{waiting}")
    for model in state["models"]:
        loss = (f", loss A {model['loss_a']:.4f} B {model['loss_b']:.4f}"
                if model.get("loss_a") is not None else "")
        say(f"model {model['name']}: {model.get('a')} -> {model.get('b')}, "
            f"{model.get('iterations') or 0} iterations{loss} ({model.get('status')})")
    for job in state["failures"][:5]:
        say(f"failed: #{job['id']} {job['kind']} {Path(job['input']).name}: {job['error']}")
    for item in state["ignored"][:10]:
        say(f"ignored: {item['path']}: {item['reason']}")
    if len(state["ignored"]) > 10:
        say(f"ignored: {len(state['ignored']) - 10} more (see the status page)")
    return 0
