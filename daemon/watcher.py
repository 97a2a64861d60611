"""Watching the hot folders: which inputs exist, and which have settled.

watchdog (inotify, or polling for network shares) only *wakes* the scanner and says which
candidates an event touched; the scanner itself lists the hot folders, so a missed event costs
at most one rescan interval, and start-up finds everything dropped while the daemon was down.
A candidate is handed on once its size and modification time (for a folder: of everything
inside it) have not changed for the settle time — a file still being copied is never taken.

What the scanner will not touch is *ignored*, with a reason the page shows: a symbolic link
that leads out of the root (links inside it work), a FIFO, socket or device, a file in
``inbox/`` or ``targets/`` that is not a video or photo, a file or folder where a person
folder belongs. Whoever can write into a hot folder is untrusted; nothing they put there
makes the daemon read, move or write outside the root.

Cost: listing the hot folders is a few ``scandir`` calls; a candidate's *signature* (for an
approved folder of 20 000 faces, 20 000 ``stat`` calls) is recomputed only when an event
touched it, while it settles, or at the periodic full rescan — never 4 times a second for
everything because one file is being copied.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hotfolders.safefs import is_inside, kind_of
from hotfolders.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

from .kinds import KINDS, SETTINGS_FILE, WATCHED, Kind

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".crdownload", ".tmp", ".partial", ".download", "~")
LITTER = {".DS_Store", "Thumbs.db", "desktop.ini", "@eaDir", ".Trashes", "__MACOSX",
          ".stfolder", ".Spotlight-V100", "$RECYCLE.BIN"}
MEDIA = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
MEDIA_LIST = " ".join(sorted(e.lstrip(".") for e in VIDEO_EXTENSIONS))


def ignored(name: str) -> bool:
    """OS litter, hidden files and names of files still being written."""
    return (name.startswith(".") or name in LITTER  # hidden, including macOS's ._ files
            or name.lower().endswith(TEMP_SUFFIXES))


@dataclass(frozen=True)
class Candidate:
    """Something in a hot folder that may become a job."""

    kind: str    # the job it becomes (daemon.kinds): "extract", "clean", "train", "convert"
    path: Path
    owner: str   # the person or model name (the folder it sits in)


class Listing:
    """One pass over the hot folders: the candidates, and what is ignored (path -> reason)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.candidates: list[Candidate] = []
        self.ignored: dict[str, str] = {}

    def ignore(self, path: Path, reason: str) -> None:
        self.ignored[str(path)] = reason

    def entries(self, folder: Path) -> tuple[list[Path], list[Path]]:
        """(files, folders) in ``folder``, sorted; links out of the root, special files and
        dangling links are ignored with a reason, litter and temp names silently."""
        files: list[Path] = []
        dirs: list[Path] = []
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError:
            return files, dirs
        for entry in found:
            if ignored(entry.name):
                continue
            path = Path(entry.path)
            link = False
            try:
                link = entry.is_symlink()  # from the listing itself where it can
                if link and not is_inside(path, self.root):
                    self.ignore(path, "a symbolic link that leads outside the facedrop root; "
                                      "not followed")
                    continue
                mode = os.stat(path).st_mode  # follows a link that stays inside the root
            except FileNotFoundError:
                if link:
                    self.ignore(path, "a link to nothing")
                # else gone since the listing (a training save swapped in, a file moved
                # away): nothing to say, the next pass sees what is there then
                continue
            except (OSError, ValueError) as exc:  # a loop of links, no permission, ...
                self.ignore(path, f"unreadable ({getattr(exc, 'strerror', None) or exc})")
                continue
            if stat.S_ISDIR(mode):
                dirs.append(path)
            elif stat.S_ISREG(mode):
                files.append(path)
            else:
                self.ignore(path, f"{kind_of(mode)}, not a "
                                  "regular file; never opened")
        return files, dirs

    def media(self, kind: Kind, owner: Path) -> None:
        where = f"{kind.folder}/{owner.name}/"
        files, dirs = self.entries(owner)
        for f in files:
            if f.suffix.lower() in MEDIA:
                self.candidates.append(Candidate(kind.job, f, owner.name))
            elif f.suffix.lower() not in kind.sidecars:  # a target's own settings stay
                self.ignore(f, f"not a video ({MEDIA_LIST}) or photo; {where} takes only those")
        for d in dirs:
            self.ignore(d, f"a folder inside {where}; drop the videos themselves")

    def folders(self, kind: Kind, owner: Path) -> None:
        self.candidates += [Candidate(kind.job, d, owner.name) for d in self.entries(owner)[1]]

    def settings(self, kind: Kind, owner: Path) -> None:
        toml = owner / SETTINGS_FILE
        if toml in self.entries(owner)[0]:
            self.candidates.append(Candidate(kind.job, toml, owner.name))


def list_hot_folders(root: Path) -> Listing:
    """Everything in the hot folders that could be work (in a stable order), and what is
    ignored there."""
    out = Listing(root)
    for kind in KINDS:
        if kind.takes == "follow-up":
            continue
        top = root / kind.folder
        if not is_inside(top, root):
            out.ignore(top, "the hot folder itself leads outside the facedrop root")
        files, owners = out.entries(top)
        if kind.takes == "media":
            for f in files:
                out.ignore(f, f"drop files into a sub-folder named for the {kind.owner} "
                              f"(e.g. {kind.folder}/{'alice' if kind.owner == 'person' else '<model>'}/)")
        take = {"media": out.media, "folders": out.folders, "settings": out.settings}[kind.takes]
        for owner in owners:
            take(kind, owner)
    return out


_BY_SETTINGS = {k.folder for k in KINDS if k.takes == "settings"}


def list_candidates(root: Path) -> list[Candidate]:
    return list_hot_folders(root).candidates


def tree(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``folder`` with its own ``lstat`` (links are not followed; an entry
    that vanishes meanwhile is skipped)."""
    for current, dirs, files in os.walk(folder):
        for name in files + dirs:
            path = os.path.join(current, name)
            try:
                yield path, os.lstat(path)
            except OSError:
                continue


def _signature(path: Path) -> tuple[int, float, int] | None:
    """(size, newest mtime, entry count) of a file or a whole folder; None if it vanished.
    Links inside a folder are not followed (their own size and time count)."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, st.st_mtime, 1
    size, mtime, count = 0, st.st_mtime, 0
    for _, item in tree(path):
        size += item.st_size if stat.S_ISREG(item.st_mode) else 0
        mtime = max(mtime, item.st_mtime)
        count += 1
    return size, mtime, count


class SettleTracker:
    """Remembers each candidate's signature and when it last changed."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle = settle_seconds
        self._seen: dict[Candidate, tuple[tuple, float]] = {}
        self.settling: set[Candidate] = set()

    def signature(self, cand: Candidate) -> tuple | None:
        seen = self._seen.get(cand)
        return seen[0] if seen else None

    def update(self, candidates: list[Candidate], now: float,
               fresh: Callable[[Candidate], bool] = lambda c: True
               ) -> tuple[list[Candidate], bool]:
        """Settled candidates, and whether any is still settling (so a rescan is due soon).

        A candidate's signature is recomputed when ``fresh(candidate)`` says it may have
        changed, or while it settles; otherwise its last one stands.
        """
        ready, waiting = [], False
        current = set(candidates)
        for gone in [c for c in self._seen if c not in current]:
            del self._seen[gone]
        self.settling &= current
        for cand in candidates:
            previous = self._seen.get(cand)
            if previous is None or cand in self.settling or fresh(cand):
                sig = _signature(cand.path)
            else:
                sig = previous[0]
            if sig is None:
                continue
            if previous is None or previous[0] != sig:
                self._seen[cand] = (sig, now)
                self.settling.add(cand)
                waiting = True
            elif now - previous[1] >= self.settle:
                ready.append(cand)
                self.settling.discard(cand)
            else:
                waiting = True
        return ready, waiting


class Watcher:
    """Calls ``on_ready(candidate)`` for each settled candidate, once per change, and
    ``on_ignored({path: reason})`` whenever the set of ignored entries changes."""

    def __init__(self, root: Path, on_ready: Callable[[Candidate], None], settle_seconds: float,
                 rescan_seconds: float = 30.0, poll_seconds: float = 0.0,
                 on_ignored: Callable[[dict[str, str]], None] | None = None) -> None:
        self.root = root
        self.on_ready = on_ready
        self.on_ignored = on_ignored
        self.tracker = SettleTracker(settle_seconds)
        self.rescan = rescan_seconds
        self.poll = poll_seconds
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self._handed: dict[Candidate, tuple] = {}  # already handed on, with its signature
        self._ignored: dict[str, str] | None = None
        self._dirty: set[Path] = set()             # candidate paths an event touched
        self._dirty_lock = threading.Lock()
        self._last_full = 0.0
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
                watcher.touched(event.src_path, getattr(event, "dest_path", "") or "")

        self._observer = PollingObserver(timeout=self.poll) if self.poll else Observer()
        for name in WATCHED:
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            self._observer.schedule(Wake(), str(folder), recursive=True)
        self._observer.start()
        self._thread.start()

    def touched(self, *paths: str | bytes) -> None:
        """An event: mark the candidates it may have changed and wake the scanner."""
        marks = set()
        for raw in paths:
            if not raw:
                continue
            parts = Path(os.fsdecode(raw)).parts
            base = self.root.parts
            if parts[:len(base)] != base or len(parts) <= len(base) + 2:
                continue
            top = parts[len(base):len(base) + 3]
            marks.add(self.root.joinpath(*top[:2], SETTINGS_FILE) if top[0] in _BY_SETTINGS
                      else self.root.joinpath(*top))
        if marks:
            with self._dirty_lock:
                self._dirty |= marks
        self.wake.set()

    def keepalive(self) -> None:
        """Long work on this thread (hashing a 30 GB file) says it is not hung."""
        self.last_pass = time.monotonic()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        self._thread.join(timeout=5)

    def scan_once(self, now: float | None = None, full: bool = True) -> bool:
        """One pass; returns whether something is still settling. ``full`` recomputes every
        candidate's signature (the periodic safety net); otherwise only those an event
        touched and those still settling."""
        listing = list_hot_folders(self.root)
        candidates = listing.candidates
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        ready, waiting = self.tracker.update(
            candidates, time.time() if now is None else now,
            fresh=(lambda c: True) if full else (lambda c: c.path in dirty))
        current = set(candidates)
        for gone in [c for c in self._handed if c not in current]:
            del self._handed[gone]
        if listing.ignored != self._ignored:
            self._report_ignored(listing.ignored)
        for cand in ready:
            sig = self.tracker.signature(cand)
            if self._handed.get(cand) == sig:
                continue
            try:
                self.on_ready(cand)
                self._handed[cand] = sig
            except Exception:  # one bad candidate must not stop the watcher; retried later
                log.exception("could not queue %s", cand.path)
            self.keepalive()
        return waiting

    def _report_ignored(self, items: dict[str, str]) -> None:
        new = set(items) - set(self._ignored or {})
        for path in sorted(new):
            log.warning("ignored %s: %s", path, items[path])
        if self.on_ignored is not None:
            self.on_ignored(items)
        self._ignored = dict(items)

    def _loop(self) -> None:
        backoff = 1.0
        while not self.stopped.is_set():
            waiting = False
            try:
                now = time.monotonic()
                full = now - self._last_full >= self.rescan
                waiting = self.scan_once(full=full)
                if full:
                    self._last_full = now
                backoff = 1.0
            except Exception:  # e.g. the share went away, the database is locked: retry
                log.exception("scanning %s failed; trying again in %.0f s", self.root, backoff)
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            self.last_pass = time.monotonic()
            # while something settles, look again soon; otherwise sleep until an event
            timeout = min(0.25, max(self.tracker.settle / 4, 0.05)) if waiting else self.rescan
            self.wake.wait(timeout)
            self.wake.clear()
