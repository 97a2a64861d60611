"""Read-only SQL over the daemon's state database (schema: see :mod:`daemon.store`).

The one reader of the store: the status page, its JSON API and ``facedrop status`` all come
through here. The connection is a ``file:...?mode=ro`` URI with ``PRAGMA query_only``, so
even a bug here cannot write. Every query is bounded and served by
the ``jobs_status`` index, so a database with 10 000 jobs costs a few milliseconds.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

QUEUE_LIMIT = 25
FAILED_LIMIT = 20
IGNORED_LIMIT = 50
HEARTBEAT_STALE_S = 30.0  # the daemon beats every 5 s; `facedrop status` uses the same limit
WAITING = ("queued", "paused")
JOB_FIELDS = ("id", "kind", "input", "person", "model", "status", "priority", "progress", "done",
              "total", "unit", "message", "error", "output", "attempts", "iterations", "node",
              "created_at", "started_at", "finished_at", "updated_at")


def connect(db: Path) -> sqlite3.Connection | None:
    """A read-only connection, or None when the daemon has not created the database yet."""
    if not Path(db).exists():
        return None
    conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA busy_timeout = 2000")
    return conn


def iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = {k: row[k] for k in JOB_FIELDS}
    path = job.pop("input") or ""
    job["input"] = path
    job["name"] = Path(path).name
    for key in ("created", "started", "finished", "updated"):
        job[key] = iso(job.pop(f"{key}_at"))
    return job


def read(conn: sqlite3.Connection) -> dict[str, Any]:
    """Jobs by status, running and waiting jobs, recent failures, models, daemon heartbeat."""
    cols = ", ".join(JOB_FIELDS)
    by_status = {str(s): n for s, n in conn.execute(
        "SELECT status, COUNT(*) FROM jobs GROUP BY status")}
    running = [dict(_job(r), _t=(r["started_at"], r["updated_at"])) for r in conn.execute(
        f"SELECT {cols} FROM jobs WHERE status = 'running' ORDER BY id")]
    queue = [_job(r) for r in conn.execute(
        f"SELECT {cols} FROM jobs WHERE status IN ('queued', 'paused') "
        "ORDER BY priority, id LIMIT ?", (QUEUE_LIMIT,))]
    failed = [_job(r) for r in conn.execute(
        f"SELECT {cols} FROM jobs WHERE status = 'failed' ORDER BY finished_at DESC LIMIT ?",
        (FAILED_LIMIT,))]
    models = {r["name"]: dict(r) for r in conn.execute(
        "SELECT name, a, b, iterations, loss_a, loss_b, status, max_iterations, stopped_at, "
        "stop_reason, updated_at FROM models")}
    daemon = {str(k): v for k, v in conn.execute("SELECT key, value FROM daemon")}
    try:
        ignored = [{"path": r["path"], "reason": r["reason"], "since": iso(r["at"])}
                   for r in conn.execute("SELECT path, reason, at FROM ignored ORDER BY path "
                                         "LIMIT ?", (IGNORED_LIMIT,))]
    except sqlite3.OperationalError:  # a database from before schema version 2
        ignored = []
    return {"jobs_by_status": by_status, "ignored": ignored,
            "queue_length": sum(by_status.get(s, 0) for s in WAITING),
            "running": running, "queue": queue, "failed_jobs": failed, "models": models,
            "daemon_row": daemon}


def daemon_state(row: dict[str, str], now: float) -> dict[str, Any]:
    """Is the daemon alive? From the heartbeat it writes every few seconds."""
    if not row:
        return {"state": "not-run", "db": True, "heartbeat": None, "url": None,
                "message": "the daemon has not run yet on this root (start it with "
                           "`facedrop run`)"}
    try:
        beat = float(row.get("heartbeat") or 0)
    except ValueError:
        beat = 0.0
    age = now - beat
    state = row.get("state") or "unknown"
    message = row.get("message") or ""
    if state == "stopped":
        message = (f"the daemon is not running (stopped {_ago(age)} ago); start it with "
                   "`facedrop run`")
    elif age > HEARTBEAT_STALE_S:
        state = "stale"
        message = (f"no heartbeat from the daemon for {_ago(age)}: it may have crashed or been "
                   "killed; what is shown is the last state it recorded")
    return {"state": state, "db": True, "heartbeat": iso(beat), "url": row.get("url"),
            "message": message}


def _ago(seconds: float) -> str:
    from .fmt import duration

    return duration(seconds)
