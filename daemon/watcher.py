"""Watching the hot folders: which inputs exist, and which have settled.

watchdog (inotify, or polling for network shares) only *wakes* the scanner; the scanner itself
lists the hot folders, so a missed event costs at most one rescan interval, and start-up finds
everything dropped while the daemon was down. A candidate is handed on once its size and
modification time (for a folder: of everything inside it) have not changed for the settle
time — a file still being copied is never taken.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".partial", ".download", "~")
LITTER = {".DS_Store", "Thumbs.db", "desktop.ini", "@eaDir", ".Trashes", "__MACOSX",
          ".stfolder", ".Spotlight-V100", "$RECYCLE.BIN"}


def ignored(name: str) -> bool:
    """OS litter, hidden files and names of files still being written."""
    return (name.startswith(".") or name in LITTER  # hidden, including macOS's ._ files
            or name.lower().endswith(TEMP_SUFFIXES))


@dataclass(frozen=True)
class Candidate:
    """Something in a hot folder that may become a job."""

    kind: str    # "inbox" | "approved" | "model" | "target"
    path: Path
    owner: str   # the person or model name (the folder it sits in)


def _signature(path: Path) -> tuple[int, float, int] | None:
    """(size, newest mtime, entry count) of a file or a whole folder; None if it vanished."""
    try:
        if path.is_file():
            st = path.stat()
            return st.st_size, st.st_mtime, 1
        size, mtime, count = 0, path.stat().st_mtime, 0
        for item in path.rglob("*"):
            st = item.stat()
            size += st.st_size if item.is_file() else 0
            mtime = max(mtime, st.st_mtime)
            count += 1
        return size, mtime, count
    except OSError:
        return None


def list_candidates(root: Path) -> list[Candidate]:
    """Everything in the hot folders that could be work, in a stable order."""
    found: list[Candidate] = []

    def children(folder: Path):
        try:
            return sorted(p for p in folder.iterdir() if not ignored(p.name))
        except OSError:
            return []

    for owner in children(root / "inbox"):
        if owner.is_dir():
            found += [Candidate("inbox", f, owner.name) for f in children(owner) if f.is_file()]
    for owner in children(root / "approved"):
        if owner.is_dir():
            found += [Candidate("approved", d, owner.name) for d in children(owner) if d.is_dir()]
    for model in children(root / "models"):
        toml = model / "model.toml"
        if model.is_dir() and toml.is_file():
            found.append(Candidate("model", toml, model.name))
    for model in children(root / "targets"):
        if model.is_dir():
            found += [Candidate("target", f, model.name) for f in children(model) if f.is_file()]
    return found


class SettleTracker:
    """Remembers each candidate's signature and when it last changed."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle = settle_seconds
        self._seen: dict[Candidate, tuple[tuple, float]] = {}

    def update(self, candidates: list[Candidate], now: float) -> tuple[list[Candidate], bool]:
        """Settled candidates, and whether any is still settling (so a rescan is due soon)."""
        ready, waiting = [], False
        current = set(candidates)
        for gone in [c for c in self._seen if c not in current]:
            del self._seen[gone]
        for cand in candidates:
            sig = _signature(cand.path)
            if sig is None:
                continue
            previous = self._seen.get(cand)
            if previous is None or previous[0] != sig:
                self._seen[cand] = (sig, now)
                waiting = True
            elif now - previous[1] >= self.settle:
                ready.append(cand)
            else:
                waiting = True
        return ready, waiting


class Watcher:
    """Calls ``on_ready(candidate)`` for each settled candidate, once per change."""

    def __init__(self, root: Path, on_ready: Callable[[Candidate], None], settle_seconds: float,
                 rescan_seconds: float = 30.0, poll_seconds: float = 0.0) -> None:
        self.root = root
        self.on_ready = on_ready
        self.tracker = SettleTracker(settle_seconds)
        self.rescan = rescan_seconds
        self.poll = poll_seconds
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self._handed: dict[Candidate, tuple] = {}  # already handed on, with its signature
        self._observer = None
        self._thread = threading.Thread(target=self._loop, name="watcher", daemon=True)
        self.last_pass = time.monotonic()  # liveness, for the systemd watchdog

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        watcher = self

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                watcher.wake.set()

        self._observer = PollingObserver(timeout=self.poll) if self.poll else Observer()
        for name in ("inbox", "approved", "models", "targets"):
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            self._observer.schedule(Wake(), str(folder), recursive=True)
        self._observer.start()
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        self._thread.join(timeout=5)

    def scan_once(self, now: float | None = None) -> bool:
        """One pass; returns whether something is still settling."""
        candidates = list_candidates(self.root)
        ready, waiting = self.tracker.update(candidates, time.time() if now is None else now)
        for gone in [c for c in self._handed if c not in set(candidates)]:
            del self._handed[gone]
        for cand in ready:
            sig = self.tracker._seen[cand][0]
            if self._handed.get(cand) == sig:
                continue
            self._handed[cand] = sig
            try:
                self.on_ready(cand)
            except Exception:  # one bad candidate must not stop the watcher
                log.exception("could not queue %s", cand.path)
        return waiting

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                waiting = self.scan_once()
            except Exception:  # e.g. the share went away: try again at the next rescan
                log.exception("scanning %s failed", self.root)
                waiting = False
            self.last_pass = time.monotonic()
            # while something settles, look again soon; otherwise sleep until an event
            timeout = min(0.25, max(self.tracker.settle / 4, 0.05)) if waiting else self.rescan
            self.wake.wait(timeout)
            self.wake.clear()
