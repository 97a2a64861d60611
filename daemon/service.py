"""``facedrop run``: wires the watcher, the job queue, the scheduler and the status page.

The daemon only wires stages together; the stages themselves live in :mod:`hotfolders`.
One daemon per root (``.facedrop/daemon.lock``, flock): a second one would requeue the first
one's running jobs and break exactly-once.
"""
from __future__ import annotations

import hashlib
import logging
import logging.handlers
import os
import shutil
import signal
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from hotfolders.digest import sha256_file

from .config import Config, init_root
from .jobs import Worker, move_to_failed
from .scheduler import Scheduler, housekeeping
from .sdnotify import notify, watchdog_interval
from .store import Store
from .watcher import Candidate, Watcher, ignored

log = logging.getLogger("facedrop")

WEB_THREADS = 4  # waitress threads for the status page (one poll per client every 2 s)
STUCK_SECONDS = 300.0  # a loop silent this long is hung (a huge file's sha256 takes far less)

MODEL_KEYS = {"a", "b", "trainer", "iterations", "batch_size", "save_every", "snapshot_every",
              "precision"}


def _folder_signature(folder: Path) -> str:
    """A cheap content signature of a folder (names, sizes): did a person change it?"""
    items = sorted((p.relative_to(folder).as_posix(), p.stat().st_size)
                   for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(repr(items).encode()).hexdigest()


def _safe_name(name: str) -> bool:
    return bool(name) and not ignored(name) and "/" not in name and name not in (".", "..")


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

    # -- intake: a settled candidate becomes a job --------------------------------------------
    def on_ready(self, cand: Candidate) -> None:
        with self.lock:
            {"inbox": self._inbox, "approved": self._approved, "model": self._model,
             "target": self._target}[cand.kind](cand)
            self.worker.wake.set()

    def _file_job(self, kind: str, cand: Candidate, **fields: Any) -> None:
        store, path = self.store, cand.path
        st = path.stat()
        seen = store.seen(path)
        if seen and seen["size"] == st.st_size and seen["mtime"] == st.st_mtime:
            return  # taken before (also across restarts)
        sha = sha256_file(path)
        twin = store.by_sha(sha)
        twin_job = store.job(twin["job_id"]) if twin and twin["job_id"] else None
        if (twin and twin["path"] != str(path) and Path(twin["path"]).parent == path.parent
                and not (twin_job and twin_job["status"] == "failed")):  # a failure may be retried
            store.remember(path, sha, st.st_size, st.st_mtime, twin["job_id"])
            store.event(twin["job_id"], "duplicate", f"{path.name} has the same content as "
                                                     f"{Path(twin['path']).name}; not processed again")
            log.info("%s is a duplicate of %s; skipped", path.name, Path(twin["path"]).name)
            return
        job_id = store.add_job(kind, path, input_sha256=sha, **fields)
        store.remember(path, sha, st.st_size, st.st_mtime, job_id)

    def _inbox(self, cand: Candidate) -> None:
        if _safe_name(cand.owner):
            self._file_job("extract", cand, person=cand.owner)

    def _target(self, cand: Candidate) -> None:
        if _safe_name(cand.owner):
            self._file_job("convert", cand, model=cand.owner)

    def _approved(self, cand: Candidate) -> None:
        store, folder = self.store, cand.path
        signature = _folder_signature(folder)
        seen = store.seen(folder)
        if seen and seen["sha256"] == signature or store.active_job_for("clean", folder):
            return
        job_id = store.add_job("clean", folder, person=cand.owner)
        store.remember(folder, signature, 0, 0.0, job_id)

    def _model(self, cand: Candidate) -> None:
        name = cand.owner
        try:
            settings = tomllib.loads(cand.path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            self.store.upsert_model(name, status=f"error: model.toml is not valid TOML ({exc})")
            log.error("%s: not valid TOML: %s", cand.path, exc)
            return
        unknown = set(settings) - MODEL_KEYS
        a, b = settings.get("a"), settings.get("b")
        if unknown or not isinstance(a, str) or not isinstance(b, str) or not (
                _safe_name(a) and _safe_name(b)):
            problem = (f"unknown keys {sorted(unknown)}" if unknown
                       else 'needs a = "<person>" and b = "<person>"')
            self.store.upsert_model(name, status=f"error: model.toml {problem}")
            log.error("%s: %s", cand.path, problem)
            return
        self.store.upsert_model(name, a=a, b=b, status="waiting for approved faces")
        self.maybe_train(name)

    def maybe_train(self, name: str | None = None) -> None:
        """Queue training for models whose two people both have approved faces."""
        for model in self.store.db["models"].rows_where("a IS NOT NULL" + (" AND name = ?" if name else ""),
                                                        [name] if name else []):
            if self.store.active_job_for("train", self.root / "models" / model["name"]):
                continue
            toml = self.root / "models" / model["name"] / "model.toml"
            if not toml.exists():
                continue
            ready = all(self._approved_faces(model[s]) for s in ("a", "b"))
            cleaning = self.store.jobs("kind = 'clean' AND status IN ('queued','running')")
            if not ready or cleaning:
                continue
            target = int(self._model_settings(model["name"]).get("iterations",
                                                                  self.config.train.iterations))
            if int(model.get("iterations") or 0) >= target:
                continue
            self.store.add_job("train", self.root / "models" / model["name"], model=model["name"])
            self.store.upsert_model(model["name"], status="queued")

    def _approved_faces(self, person: str) -> bool:
        folder = self.root / "approved" / person
        return folder.is_dir() and any(p.suffix == ".png" for p in folder.rglob("*.png"))

    def _model_settings(self, name: str) -> dict[str, Any]:
        try:
            return tomllib.loads((self.root / "models" / name / "model.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return {}

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
            model = self.store.db["models"].get(job["model"])
            s = self._model_settings(job["model"])
            return {"root": root, "model_dir": job["input"], "a": model["a"], "b": model["b"],
                    "trainer": s.get("trainer", c.train.trainer),
                    "iterations": int(s.get("iterations", c.train.iterations)),
                    "batch_size": int(s.get("batch_size", c.train.batch_size)),
                    "save_every": int(s.get("save_every", c.train.save_every)),
                    "snapshot_every": int(s.get("snapshot_every", c.train.snapshot_every)),
                    "keep_snapshots": c.train.keep_snapshots,
                    "precision": s.get("precision", c.train.precision)}
        if kind == "convert":
            model_dir = self.root / "models" / job["model"]
            if not (model_dir / "save").exists() and not (model_dir / "save.bak").exists():
                return None  # waits for the model's first save
            return {"root": root, "input": job["input"], "model": job["model"],
                    "model_dir": str(model_dir), "color": c.convert.color, "mask": c.convert.mask,
                    "sharpen": c.convert.sharpen, "face_select": c.convert.face_select,
                    "label": c.convert.label}
        return None

    def finished(self, job: dict, kind: str) -> None:
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
        status = reason or (f"{running[0]['kind']} {Path(running[0]['input']).name}"
                            if running else "idle")
        self.store.set_daemon(heartbeat=time.time(), state="paused" if low else "running",
                              message=status, url=self.web_url)
        notify(f"STATUS={status}")

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        init_root(self.root)
        self._lock_root()
        self.store = Store(self.config.db_path)
        requeued = self.store.requeue_interrupted()
        if requeued:
            log.info("%d interrupted job(s) queued again", requeued)
        housekeeping(self.root, self.store, min_age=0.0)  # nothing runs yet: all temps are stale
        self.worker = Worker(self.config, self.store, self.params, self.verbose)
        self.worker.on_finished = self.finished
        self.watcher = Watcher(self.root, self.on_ready, self.config.settle_seconds,
                               self.config.rescan_seconds, self.config.poll_seconds)
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

        app = create_app(self.root)
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


def setup_file_logging(config: Config, verbose: bool) -> None:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(config.state_dir / "facedrop.log",
                                                   maxBytes=5_000_000, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger().addHandler(handler)


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
