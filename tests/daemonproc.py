"""The real daemon as a subprocess on a temp root, for the integration tests.

One helper, shared by the workflow, hostile-input and fault tests: it starts ``facedrop run``
(optionally with the status page on a free port and extra environment), reads the jobs from
SQLite read-only, waits with a deadline and fails with the daemon's log tail.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

FAST = """settle_seconds = 0.3
rescan_seconds = 5
min_free_gb = 0.0
[extract]
every_n = 10
size = 96
[train]
batch_size = 4
iterations = 20
save_every = 10
precision = "float32"
threads = "shared"
[limits]
retry_seconds = 0.5
"""


def cli(*args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    """``facedrop ARGS`` in a child process (the real console entry point's module)."""
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True,
                          text=True, check=check, timeout=kw.pop("timeout", 300), **kw)


def init_root(root: Path, config: str = FAST) -> Path:
    cli("init", str(root))
    (root / "facedrop.toml").write_text(config)
    return root


class Daemon:
    def __init__(self, root: Path, web: bool = False, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.web = web
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log = root.parent / f"{root.name}-daemon.log"

    def start(self) -> "Daemon":
        web = ["--port", "0"] if self.web else ["--no-web"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--root", str(self.root), *web],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(self.env or {})})
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the daemon and its stage child
        self.proc.wait(10)

    def term(self) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.alive():
            self.kill9()

    def query(self, sql: str, *params: Any) -> list[dict]:
        db = self.root / ".facedrop" / "state.db"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def jobs(self) -> list[dict]:
        return self.query("SELECT * FROM jobs ORDER BY id")

    def job_for(self, name: str) -> dict | None:
        found = [j for j in self.jobs() if Path(j["input"]).name == name]
        return found[-1] if found else None

    def ignored(self) -> dict[str, str]:
        return {r["path"]: r["reason"] for r in self.query("SELECT path, reason FROM ignored")}

    def model(self, name: str) -> dict | None:
        rows = self.query("SELECT * FROM models WHERE name = ?", name)
        return rows[0] if rows else None

    def daemon_row(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self.query("SELECT key, value FROM daemon")}

    def children(self) -> list[int]:
        """Process ids of the daemon's stage children."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            if ppid == self.proc.pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        return out

    def url(self) -> str:
        self.wait_for("the status page", lambda: self.daemon_row().get("url"), timeout=60)
        return self.daemon_row()["url"].rstrip("/")

    def get(self, path: str, host: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
        """GET ``path`` from the status page (with another ``Host`` header if given)."""
        request = urllib.request.Request(self.url() + path)
        if host is not None:
            request.add_unredirected_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status_json(self) -> dict:
        return json.loads(cli("status", "--root", str(self.root), "--json").stdout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"daemon exited while waiting for {what}:\n{self.log_text()[-3000:]}")
            value = check()
            if value:
                return value
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}; jobs: {self.jobs()}\n"
                    f"{self.log_text()[-3000:]}")

    def wait_job(self, name: str, statuses: tuple[str, ...] = ("done", "failed"),
                 timeout: float = 120) -> dict:
        """The newest job for input ``name`` once its status is one of ``statuses``."""
        return self.wait_for(f"{name} to be {'/'.join(statuses)}", lambda: (
            (j := self.job_for(name)) is not None and j["status"] in statuses and j), timeout)


def files_under(folder: Path) -> dict[str, tuple[int, float]]:
    """Every entry below ``folder`` (links not followed): relative path -> (size, mtime)."""
    out = {}
    for current, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(current, name)
            st = os.lstat(path)
            out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime)
    return out
