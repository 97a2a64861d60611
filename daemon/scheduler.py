"""Timed work with APScheduler: the training window's edges and housekeeping.

The worker checks the training window itself before it starts or keeps a training job, so the
window is enforced even if a timed call is missed (clock change, suspend). The scheduler makes
the edges prompt: when the window opens it wakes the worker and queues waiting models, and
when it closes it wakes the worker, which asks training to save and pauses the job.

Snapshots are not timed here: training takes one every ``train.snapshot_every`` iterations
and keeps the newest ``train.keep_snapshots`` (only the training process holds a consistent
state to copy); the rotating log file trims itself.

Housekeeping removes what a kill -9 leaves behind — hidden temp outputs (``.<stem>.partial``
extraction folders in ``review/``, ``.<name>.<pid>.part.mp4`` conversions in ``output/``) — and
trims the events of long-finished jobs. It never touches a temp name that may still be in use:
only ones untouched for ``min_age`` seconds while no job of that kind runs (at start-up, before
the worker starts, nothing runs, so everything stale goes).
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .config import Config, parse_window
from .kinds import KINDS
from .store import Store

log = logging.getLogger(__name__)

EVENTS_KEEP_DAYS = 30
HOUSEKEEPING_MINUTES = 60


def stale_temps(root: Path) -> list[tuple[str, Path]]:
    """(kind, path) of every temp name the stages write (``review/``, ``output/``: each kind
    in :mod:`daemon.kinds` says where and which)."""
    found: list[tuple[str, Path]] = []
    for kind in KINDS:
        if kind.temp_folder is None:
            continue
        for owner in (root / kind.temp_folder).glob("*"):
            if owner.is_dir() and not owner.is_symlink():  # never delete through a link
                found += [(kind.job, p) for p in owner.iterdir() if kind.temp(p)]
    return found


def housekeeping(root: Path, store: Store, min_age: float = 3600.0,
                 now: float | None = None) -> list[Path]:
    """Remove abandoned temp outputs and old events; returns the paths removed."""
    now = time.time() if now is None else now
    running = {j["kind"] for j in store.jobs("status = 'running'")}
    removed = []
    for kind, path in stale_temps(root):
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue
        if kind in running or age < min_age:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
        log.info("housekeeping: removed abandoned temp output %s", path.relative_to(root))
    cutoff = now - EVENTS_KEEP_DAYS * 86400
    with store.lock:
        store.db.execute(
            "DELETE FROM events WHERE at < ? AND job_id IN "
            "(SELECT id FROM jobs WHERE status IN ('done', 'failed') AND finished_at < ?)",
            [cutoff, cutoff])
    return removed


class Scheduler:
    """An APScheduler ``BackgroundScheduler`` with the daemon's timed jobs."""

    def __init__(self, config: Config, store: Store, on_window: Callable[[bool], None]) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.config = config
        self.store = store
        self.on_window = on_window
        self.scheduler = BackgroundScheduler(daemon=True, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 300})

    def start(self) -> None:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        window = parse_window(self.config.train.window)
        if window is not None:
            for minute, is_open in ((window[0], True), (window[1], False)):
                self.scheduler.add_job(self._edge, CronTrigger(hour=minute // 60,
                                                               minute=minute % 60),
                                       args=[is_open], id=f"window-{'open' if is_open else 'close'}")
        self.scheduler.add_job(self._housekeeping, IntervalTrigger(minutes=HOUSEKEEPING_MINUTES),
                               id="housekeeping")
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def jobs(self) -> list[str]:
        return sorted(job.id for job in self.scheduler.get_jobs())

    def _edge(self, is_open: bool) -> None:
        log.info("training window %s (%s)", "opened" if is_open else "closed",
                 self.config.train.window)
        self.on_window(is_open)

    def _housekeeping(self) -> None:
        try:
            housekeeping(self.config.root, self.store)
        except Exception:  # a housekeeping hiccup must not stop the scheduler
            log.exception("housekeeping failed")
