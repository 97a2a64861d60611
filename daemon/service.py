"""``facedrop run``: wires the watcher, the job queue, the scheduler and the status page.

The daemon only wires stages together; the stages themselves live in :mod:`hotfolders`.
One daemon per root (``.facedrop/daemon.lock``, flock): a second one would requeue the first
one's running jobs and break exactly-once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import stat
import threading
import time
from pathlib import Path
from typing import Any

from hotfolders.digest import sha256_file
from hotfolders.names import plain_name, printable
from hotfolders.safefs import confine, confinement, is_inside

from .config import Config, ConfigError, ModelSettings, init_root, load_model
from .jobs import Worker, move_to_failed
from .scheduler import Scheduler, housekeeping
from .sdnotify import notify, watchdog_interval
from .store import Store
from .watcher import Candidate, Watcher, ignored, tree

log = logging.getLogger("facedrop")

WEB_THREADS = 4  # waitress threads for the status page (one poll per client every 2 s)
STUCK_SECONDS = 300.0  # a loop silent this long is hung (a huge file's sha256 takes far less)

def _folder_signature(folder: Path) -> str:
    """A cheap content signature of a folder (names, sizes): did a person change it?
    Links are not followed (a link's own size counts)."""
    items = sorted((os.path.relpath(path, folder), st.st_size) for path, st in tree(folder)
                   if not stat.S_ISDIR(st.st_mode))
    return hashlib.sha256(repr(items).encode("utf-8", "surrogateescape")).hexdigest()


def _safe_name(name: str) -> bool:
    return plain_name(name) is not None and not ignored(name)


class AlreadyRunning(RuntimeError):
    """Another daemon holds this root."""


class Service:
    def __init__(self, config: Config, verbose: bool = False, serve_web: bool = True) -> None:
        self.config = config
        self.root = config.root
        self.verbose = verbose
        self.serve_web = serve_web
        self.stop_event = threading.Event()
        self.lock = threading.RLock()
        self.store: Store | None = None
        self.worker: Worker | None = None
        self.watcher: Watcher | None = None
        self.scheduler: Scheduler | None = None
        self.web = None
        self.web_url = ""
        self._confined_before: Path | None = None

    # -- intake: a settled candidate becomes a job --------------------------------------------
    def on_ready(self, cand: Candidate) -> None:
        if cand.kind in ("inbox", "target"):
            fingerprint = self._fingerprint(cand)  # hashing runs outside the lock
            if fingerprint is None:
                return
            with self.lock:
                self._file_job(cand, *fingerprint)
        else:
            with self.lock:
                {"approved": self._approved, "model": self._model}[cand.kind](cand)
        if self.worker is not None:
            self.worker.wake.set()

    def _fingerprint(self, cand: Candidate) -> tuple[str, os.stat_result] | None:
        """(sha256, stat) of a dropped file, or None when it is unchanged since it was taken
        (same path, size and modification time, also across restarts)."""
        if not _safe_name(cand.owner):
            return None
        path = cand.path
        st = path.stat()
        seen = self.store.seen(path)
        if seen and seen["size"] == st.st_size and seen["mtime"] == st.st_mtime:
            return None
        keepalive = self.watcher.keepalive if self.watcher else None
        return sha256_file(path, progress=keepalive), st

    def _file_job(self, cand: Candidate, sha: str, st: os.stat_result) -> None:
        store, path = self.store, cand.path
        kind, owner = ("extract", "person") if cand.kind == "inbox" else ("convert", "model")
        twin = store.by_sha(sha)
        twin_job = store.job(twin["job_id"]) if twin and twin["job_id"] else None
        if twin_job is not None and twin_job["status"] != "failed":  # a failure may be retried
            if twin["path"] == str(path):  # touched, or copied again with the same content
                store.remember(path, sha, st.st_size, st.st_mtime, twin["job_id"])
                log.info("%s changed its time but not its content; not processed again",
                         path.name)
                return
            if Path(twin["path"]).parent == path.parent:
                store.remember(path, sha, st.st_size, st.st_mtime, twin["job_id"])
                store.event(twin["job_id"], "duplicate",
                            f"{printable(path.name)} has the same content as "
                            f"{printable(Path(twin['path']).name)}; not processed again")
                log.info("%s is a duplicate of %s; skipped", path.name, Path(twin["path"]).name)
                return
        job_id = store.add_job(kind, path, input_sha256=sha, **{owner: cand.owner})
        store.remember(path, sha, st.st_size, st.st_mtime, job_id)

    def _approved(self, cand: Candidate) -> None:
        store, folder = self.store, cand.path
        if not _safe_name(cand.owner):
            return
        signature = _folder_signature(folder)
        seen = store.seen(folder)
        if seen and seen["sha256"] == signature or store.active_job_for("clean", folder):
            return
        job_id = store.add_job("clean", folder, person=cand.owner)
        store.remember(folder, signature, 0, 0.0, job_id)

    def _model(self, cand: Candidate) -> None:
        name = cand.owner
        settings = self._model_settings(name)
        if settings is None:
            return
        self.store.upsert_model(name, a=settings.a, b=settings.b,
                                status="waiting for approved faces")
        self.maybe_train(name)

    def _model_settings(self, name: str) -> ModelSettings | None:
        """A model's validated ``model.toml``; a bad one marks that model "error: ..." (and
        only that model) and gives None."""
        path = self.root / "models" / name / "model.toml"
        try:
            return load_model(path, self.config.train)
        except ConfigError as exc:
            message = str(exc).replace(f"{path}: ", "model.toml ")
            self.store.upsert_model(name, status=f"error: {printable(message)}")
            log.error("%s", exc)
            return None

    def maybe_train(self, name: str | None = None) -> None:
        """Queue training for models whose two people both have approved faces."""
        for model in self.store.db["models"].rows_where("a IS NOT NULL" + (" AND name = ?" if name else ""),
                                                        [name] if name else []):
            try:
                self._maybe_train_one(model)
            except Exception as exc:  # one broken model must not keep the others waiting
                log.exception("model %s: cannot schedule training", model["name"])
                self.store.upsert_model(model["name"], status=f"error: {printable(exc)}")

    def _maybe_train_one(self, model: dict[str, Any]) -> None:
        folder = self.root / "models" / model["name"]
        if self.store.active_job_for("train", folder):
            return
        if not (folder / "model.toml").is_file() or not is_inside(folder, self.root):
            return
        settings = self._model_settings(model["name"])
        if settings is None:
            return
        ready = all(self._approved_faces(p) for p in (settings.a, settings.b))
        cleaning = self.store.jobs("kind = 'clean' AND status IN ('queued','running')")
        if not ready or cleaning:
            return
        if int(model.get("iterations") or 0) >= settings.train.iterations:
            return
        self.store.add_job("train", folder, model=model["name"])
        self.store.upsert_model(model["name"], status="queued")

    def _approved_faces(self, person: str) -> bool:
        folder = self.root / "approved" / person
        return (folder.is_dir() and is_inside(folder, self.root)
                and any(p.suffix == ".png" for p in folder.rglob("*.png")))

    # -- job -> stage parameters ------------------------------------------------------------
    def params(self, job: dict) -> dict[str, Any] | None:
        c, root = self.config, str(self.root)
        kind = job["kind"]
        if kind == "extract":
            return {"root": root, "input": job["input"], "person": job["person"],
                    "every_n": c.extract.every_n, "size": c.extract.size,
                    "min_size": c.extract.min_size}
        if kind == "clean":
            return {"root": root, "input": job["input"]}
        if kind == "train":
            settings = load_model(Path(job["input"]) / "model.toml", c.train)
            t = settings.train
            return {"root": root, "model_dir": job["input"], "a": settings.a, "b": settings.b,
                    "trainer": t.trainer, "iterations": t.iterations,
                    "batch_size": t.batch_size, "save_every": t.save_every,
                    "snapshot_every": t.snapshot_every, "keep_snapshots": c.train.keep_snapshots,
                    "precision": t.precision, "gpu": c.gpu}
        if kind == "convert":
            model_dir = self.root / "models" / job["model"]
            from hotfolders.model import has_save

            if not has_save(model_dir):  # save/, save.bak/, best/ or a snapshot: as the CLI
                return None  # waits for the model's first save
            return {"root": root, "input": job["input"], "model": job["model"],
                    "model_dir": str(model_dir), "color": c.convert.color, "mask": c.convert.mask,
                    "sharpen": c.convert.sharpen, "face_select": c.convert.face_select,
                    "label": c.convert.label, "gpu": c.gpu}
        return None

    def finished(self, job: dict, kind: str) -> None:
        """After a job ended (the worker has recorded its outcome already: nothing here can
        change it)."""
        if job["status"] == "failed" and job.get("output"):
            self.store.forget(Path(job["input"]))  # moved to failed/: back again is new work
        if kind == "clean" and job["status"] == "done":
            folder = Path(job["input"])
            if folder.exists():  # cleaning renamed files: remember the cleaned state
                self.store.remember(folder, _folder_signature(folder), 0, 0.0, job["id"])
        if kind in ("clean", "extract"):
            with self.lock:
                self.maybe_train()

    def window_changed(self, is_open: bool) -> None:
        """The training window opened or closed: let the worker act on it now."""
        if is_open:
            with self.lock:
                self.maybe_train()
        self.worker.wake.set()

    # -- housekeeping -----------------------------------------------------------------------
    def heartbeat(self) -> None:
        free_gb = shutil.disk_usage(self.root).free / 1e9
        low = free_gb < self.config.min_free_gb
        reason = f"disk almost full ({free_gb:.1f} GB free); new work paused" if low else ""
        if reason != self.worker.paused_reason:
            (log.warning if low else log.info)(reason or "disk space is back; resuming")
            self.worker.paused_reason = reason
            self.worker.wake.set()
        running = self.store.jobs("status = 'running'")
        status = reason or self.worker.problem or (
            f"{running[0]['kind']} {printable(Path(running[0]['input']).name)}" if running
            else "idle")
        self.store.set_daemon(heartbeat=time.time(), state="paused" if low else "running",
                              message=status, url=self.web_url)
        notify(f"STATUS={status}")

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        init_root(self.root)
        self._confined_before = confinement()
        confine(self.root)  # this process (and the page in it) reads and writes only here
        self._lock_root()
        self.store = Store(self.config.db_path)
        self.worker = Worker(self.config, self.store, self.params, self.verbose)
        self.worker.on_finished = self.finished
        self.worker.resume_interrupted()
        housekeeping(self.root, self.store, min_age=0.0)  # nothing runs yet: all temps are stale
        self.watcher = Watcher(self.root, self.on_ready, self.config.settle_seconds,
                               self.config.rescan_seconds, self.config.poll_seconds,
                               on_ignored=self.store.set_ignored)
        self.scheduler = Scheduler(self.config, self.store, self.window_changed)
        self.heartbeat()  # checks the disk before the worker may start anything
        self.worker.start()
        self.watcher.start()
        self.scheduler.start()
        if self.serve_web:
            self._start_web()
        self.heartbeat()
        notify("READY=1", f"STATUS=watching {self.root}")
        log.info("facedrop is watching %s%s", self.root,
                 f"; status page {self.web_url}" if self.web_url else "")

    def _lock_root(self) -> None:
        """One daemon per root: a second one would requeue the first one's running jobs."""
        import fcntl

        self._lock_file = (self.config.state_dir / "daemon.lock").open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "?"
            self._lock_file.close()
            raise AlreadyRunning(f"another facedrop daemon (pid {holder}) is already running "
                                 f"on {self.root}") from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def _start_web(self) -> None:
        from waitress.server import create_server

        from web_status.app import create_app

        app = create_app(self.root, allowed_hosts=[self.config.host, *self.config.allowed_hosts])
        self.web = create_server(app, host=self.config.host, port=self.config.port,
                                 threads=WEB_THREADS, ident="facedrop")
        port = self.web.effective_port
        self.web_url = f"http://{self.config.host}:{port}/"
        threading.Thread(target=self.web.run, name="web", daemon=True).start()

    def health(self) -> str:
        """Why the daemon is stuck, or "" — a hung loop must stop the watchdog keep-alives."""
        now = time.monotonic()
        if not self.worker.alive() or now - self.worker.last_tick > STUCK_SECONDS:
            return "the job worker stopped responding"
        if (not self.watcher.alive()
                or now - self.watcher.last_pass > self.config.rescan_seconds + STUCK_SECONDS):
            return "the folder watcher stopped responding"
        return ""

    def wait(self) -> None:
        interval = min(5.0, watchdog_interval() or 5.0)
        while not self.stop_event.wait(interval):
            problem = self.health()
            if problem:  # no keep-alive: systemd restarts the daemon after WatchdogSec
                log.error("%s; withholding the watchdog keep-alive", problem)
            else:
                notify("WATCHDOG=1")
            try:
                self.heartbeat()
            except Exception:
                log.exception("heartbeat failed")

    def stop(self) -> None:
        notify("STOPPING=1")
        log.info("stopping (training saves first)")
        if self.scheduler:
            self.scheduler.stop()
        if self.watcher:
            self.watcher.stop()
        if self.worker:
            self.worker.stop(timeout=60)
        if self.web is not None:
            self.web.close()
        if self.store:
            self.store.set_daemon(state="stopped", message="stopped", heartbeat=time.time())
            self.store.close()
        confine(self._confined_before)


def setup_file_logging(config: Config, verbose: bool) -> None:
    from .logs import add_file

    config.state_dir.mkdir(parents=True, exist_ok=True)
    add_file(config.state_dir / "facedrop.log", verbose)


def run(config: Config, verbose: bool = False, serve_web: bool = True) -> int:
    """Run until SIGTERM or Ctrl-C."""
    service = Service(config, verbose, serve_web)
    setup_file_logging(config, verbose)

    def request_stop(signum, frame) -> None:
        service.stop_event.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        service.start()
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 1
    try:
        service.wait()
    finally:
        service.stop()
    return 0


__all__ = ["AlreadyRunning", "Service", "move_to_failed", "run"]
