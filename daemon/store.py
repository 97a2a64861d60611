"""The daemon's state in SQLite (``<root>/.facedrop/state.db``, WAL), via sqlite-utils.

One writer: the daemon's main process owns the only writing connection and serialises writes
with a lock; the status page and ``facedrop status`` open the file read-only, through one
reader (:mod:`web_status.queries`, :class:`web_status.status.StatusReader`).

Schema (version 1):

``jobs``      id, kind (extract|clean|train|convert), input (path), input_sha256, person, model,
              status (queued|running|paused|done|failed), priority (lower runs first), progress
              (0..1), done, total, unit, message, error, output, attempts, created_at,
              started_at, finished_at, updated_at (unix seconds)
``events``    id, job_id, at, status, message — every transition of every job
``files``     path, sha256, size, mtime, job_id — inputs already taken (duplicates by sha256)
``models``    name, a, b, iterations, loss_a, loss_b, status, updated_at
``losses``    model, iteration, loss_a, loss_b — one row per save (the curve's points)
``daemon``    key, value — heartbeat (unix seconds), state (running|paused|stopped), message
              (one line: what it does now, or why new work is paused), url (status page)
``migrations`` version, applied_at

Version 2 adds ``jobs.retry_at`` (a job waiting out a transient fault — disk full, an I/O
error, a killed child — is not started before then), ``jobs.retries`` (transient faults in a
row: the back-off doubles with each), ``jobs.interruptions`` (how often a
running job was cut off by a crash, a kill or a signal: at the limit it fails instead of
running again) and the ``ignored`` table: path, reason, at — what the watcher saw in a hot
folder and will not touch (links out of the root, FIFOs, files that are not media), for the
page.

Version 3 adds ``jobs.iterations`` (the model iterations a training job reached or a
conversion used: a target is converted again when its model stopped at more),
``models.trained_with`` (what the last training ran with: the stop settings and the approved
faces; a stopped model resumes when that changes and its cap allows), ``models.stopped_at``
(the iteration where the model stopped by itself, NULL while it may train) and
``models.stop_reason`` (where and why it stopped, for the page) and ``models.max_iterations``
(its cap, from its settings: the page reads no settings files).

Version 4 adds ``jobs.node``: where the job's stage runs or ran ("local", or a cluster node's
name and address), for the page.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from .kinds import PRIORITY

ACTIVE = ("queued", "running", "paused")

# how long a write waits for another writer (a reader never blocks one: WAL) before the
# caller sees 'database is locked' and retries on its own schedule
BUSY_SECONDS = 30.0

MIGRATIONS: list[list[str]] = [
    [  # 1
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY, kind TEXT NOT NULL, input TEXT NOT NULL, input_sha256 TEXT,
            person TEXT, model TEXT, status TEXT NOT NULL DEFAULT 'queued',
            priority INTEGER NOT NULL DEFAULT 50, progress REAL, done INTEGER, total INTEGER,
            unit TEXT, message TEXT, error TEXT, output TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, started_at REAL, finished_at REAL, updated_at REAL)""",
        "CREATE INDEX jobs_status ON jobs(status, priority, id)",
        "CREATE INDEX jobs_input ON jobs(input)",
        """CREATE TABLE events (id INTEGER PRIMARY KEY, job_id INTEGER, at REAL NOT NULL,
            status TEXT, message TEXT)""",
        "CREATE INDEX events_job ON events(job_id)",
        """CREATE TABLE files (path TEXT PRIMARY KEY, sha256 TEXT, size INTEGER, mtime REAL,
            job_id INTEGER)""",
        "CREATE INDEX files_sha ON files(sha256)",
        """CREATE TABLE models (name TEXT PRIMARY KEY, a TEXT, b TEXT, iterations INTEGER DEFAULT 0,
            loss_a REAL, loss_b REAL, status TEXT, updated_at REAL)""",
        """CREATE TABLE losses (model TEXT NOT NULL, iteration INTEGER NOT NULL, loss_a REAL,
            loss_b REAL, PRIMARY KEY (model, iteration))""",
        "CREATE TABLE daemon (key TEXT PRIMARY KEY, value TEXT)",
    ],
    [  # 2
        "ALTER TABLE jobs ADD COLUMN retry_at REAL",
        "ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0",
        "CREATE TABLE ignored (path TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL)",
    ],
    [  # 3
        "ALTER TABLE jobs ADD COLUMN iterations INTEGER",
        "ALTER TABLE models ADD COLUMN trained_with TEXT",
        "ALTER TABLE models ADD COLUMN stopped_at INTEGER",
        "ALTER TABLE models ADD COLUMN stop_reason TEXT",
        "ALTER TABLE models ADD COLUMN max_iterations INTEGER",
    ],
    [  # 4
        "ALTER TABLE jobs ADD COLUMN node TEXT",
    ],
]


class Store:
    """The writing side. Thread-safe: every method takes the lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=BUSY_SECONDS,
                               isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.lock = threading.RLock()
        self.migrate()

    # -- schema -----------------------------------------------------------------------------
    def migrate(self) -> int:
        with self.lock:
            self.db.execute("CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, "
                            "applied_at REAL)")
            done = {r[0] for r in self.db.execute("SELECT version FROM migrations").fetchall()}
            for version, statements in enumerate(MIGRATIONS, 1):
                if version in done:
                    continue
                with self.db.conn:  # one transaction per migration
                    self.db.execute("BEGIN")
                    for sql in statements:
                        self.db.execute(sql)
                    self.db.execute("INSERT INTO migrations VALUES (?, ?)", [version, time.time()])
            return len(MIGRATIONS)

    # -- jobs -------------------------------------------------------------------------------
    def add_job(self, kind: str, input: str | Path, **fields: Any) -> int:
        now = time.time()
        with self.lock:
            row = {"kind": kind, "input": str(input), "status": "queued",
                   "priority": PRIORITY.get(kind, 50), "created_at": now, "updated_at": now,
                   **fields}
            job_id = self.db["jobs"].insert(row).last_pk
            self.event(job_id, "queued", f"{kind} {Path(str(input)).name}")
            return int(job_id)

    def job(self, job_id: int) -> dict[str, Any]:
        return self.db["jobs"].get(job_id)

    def jobs(self, where: str = "", params: list | tuple = ()) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.db["jobs"].rows_where(where or None, params, order_by="priority, id"))

    def active_job_for(self, kind: str, input: str | Path) -> dict[str, Any] | None:
        rows = self.jobs("kind = ? AND input = ? AND status IN ('queued','running','paused')",
                         (kind, str(input)))
        return rows[0] if rows else None

    def update(self, job_id: int, **fields: Any) -> None:
        with self.lock:
            self.db["jobs"].update(job_id, {**fields, "updated_at": time.time()})

    def transition(self, job_id: int, status: str, message: str = "", **fields: Any) -> None:
        now = time.time()
        extra: dict[str, Any] = {}
        if status == "running":
            extra = {"started_at": now, "error": None}
        elif status in ("done", "failed"):
            extra = {"finished_at": now}
        with self.lock:
            self.db["jobs"].update(job_id, {"status": status, "updated_at": now,
                                            **({"message": message} if message else {}),
                                            **extra, **fields})
            self.event(job_id, status, message)

    def event(self, job_id: int | None, status: str, message: str = "") -> None:
        with self.lock:
            self.db["events"].insert({"job_id": job_id, "at": time.time(), "status": status,
                                      "message": message})

    def next_job(self, skip: set[int], now: float | None = None) -> Iterator[dict[str, Any]]:
        """Queued or paused jobs in the order they should run (not those waiting for a retry)."""
        now = time.time() if now is None else now
        for job in self.jobs("status IN ('queued', 'paused') AND "
                             "(retry_at IS NULL OR retry_at <= ?)", (now,)):
            if job["id"] not in skip:
                yield job

    def next_retry(self) -> float | None:
        """When the earliest job waiting out a transient fault may run again."""
        row = self.db.execute("SELECT MIN(retry_at) FROM jobs WHERE status IN ('queued', "
                              "'paused') AND retry_at IS NOT NULL").fetchone()
        return row[0] if row else None

    def interrupted(self, skip: set[int] = frozenset()) -> list[dict[str, Any]]:
        """At start-up: jobs left 'running' by a crash or kill (but those in ``skip``), each
        with its interruption counted (the caller requeues them, or fails those interrupted
        too often)."""
        with self.lock:
            rows = [job for job in self.jobs("status = 'running'") if job["id"] not in skip]
            for job in rows:
                job["interruptions"] = int(job.get("interruptions") or 0) + 1
                self.update(job["id"], interruptions=job["interruptions"])
            return rows

    # -- files (duplicates) -----------------------------------------------------------------
    def seen(self, path: Path) -> dict[str, Any] | None:
        rows = list(self.db["files"].rows_where("path = ?", [str(path)]))
        return rows[0] if rows else None

    def by_sha(self, sha: str) -> dict[str, Any] | None:
        """The newest file taken with this content (its job tells whether it succeeded)."""
        rows = list(self.db["files"].rows_where("sha256 = ?", [sha], order_by="job_id DESC",
                                                limit=1))
        return rows[0] if rows else None

    def remember(self, path: Path, sha: str, size: int, mtime: float, job_id: int | None) -> None:
        with self.lock:
            self.db["files"].upsert({"path": str(path), "sha256": sha, "size": size,
                                     "mtime": mtime, "job_id": job_id}, pk="path")

    def forget(self, path: Path) -> None:
        """The input left its place (moved to failed/): if it comes back, it is new work."""
        with self.lock:
            self.db.execute("DELETE FROM files WHERE path = ?", [str(path)])

    # -- what the watcher will not touch ----------------------------------------------------
    def set_ignored(self, items: dict[str, str]) -> None:
        """Replace the list of ignored hot-folder entries (path -> reason)."""
        now = time.time()
        with self.lock, self.db.conn:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM ignored")
            self.db.conn.executemany("INSERT INTO ignored (path, reason, at) VALUES (?, ?, ?)",
                                     [(p, r, now) for p, r in sorted(items.items())])

    # -- models -----------------------------------------------------------------------------
    def upsert_model(self, name: str, **fields: Any) -> None:
        with self.lock:
            self.db["models"].upsert({"name": name, **fields, "updated_at": time.time()}, pk="name")

    def model(self, name: str) -> dict[str, Any] | None:
        rows = list(self.db["models"].rows_where("name = ?", [name]))
        return rows[0] if rows else None

    def record_loss(self, model: str, iteration: int, loss_a: float, loss_b: float) -> None:
        with self.lock:
            self.db["losses"].upsert({"model": model, "iteration": iteration, "loss_a": loss_a,
                                      "loss_b": loss_b}, pk=("model", "iteration"))
            self.upsert_model(model, iterations=iteration, loss_a=loss_a, loss_b=loss_b)

    # -- daemon heartbeat -------------------------------------------------------------------
    def set_daemon(self, **values: Any) -> None:
        with self.lock:
            for key, value in values.items():
                self.db["daemon"].upsert({"key": key, "value": str(value)}, pk="key")

    def close(self) -> None:
        self.db.conn.close()
