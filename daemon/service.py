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
from hotfolders.errors import InputError
from hotfolders.model import ModelFolder, describe_stop, stopped
from hotfolders.names import plain_name, printable
from hotfolders.occlusion import WEIGHTS_NAME as OCCLUSION_WEIGHTS
from hotfolders.safefs import confine, confinement, is_inside

from .config import Config, ConfigError, ModelSettings, init_root, load_model, load_target
from .executor import Executor, make_executor
from .jobs import Worker, move_to_failed
from .kinds import BY_JOB
from .settings import engine_kwargs, in_section, parse_convert_when
from .stages import CleanParams, ConvertParams, ExtractParams, MaskParams, TrainParams
from .scheduler import Scheduler, housekeeping
from .sdnotify import notify, watchdog_interval
from .store import Store
from .watcher import Candidate, Watcher, ignored, tree

log = logging.getLogger("facedrop")

WEB_THREADS = 4  # waitress threads for the status page (one poll per client every 2 s)
STUCK_SECONDS = 300.0  # a loop silent this long is hung (a huge file's sha256 takes far less)
MAX_PREVIEWS = 8       # waiting targets a training run renders a preview frame of

def _folder_signature(folder: Path) -> str:
    """A cheap content signature of a folder (names, sizes): did a person change it?
    Links are not followed (a link's own size counts)."""
    items = sorted((os.path.relpath(path, folder), st.st_size) for path, st in tree(folder)
                   if not stat.S_ISDIR(st.st_mode))
    return hashlib.sha256(repr(items).encode("utf-8", "surrogateescape")).hexdigest()


def _safe_name(name: str) -> bool:
    return plain_name(name) is not None and not ignored(name)


class CannotStart(RuntimeError):
    """The daemon cannot start; the message says why."""


class AlreadyRunning(CannotStart):
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
        self.executor: Executor | None = None
        self.watcher: Watcher | None = None
        self.scheduler: Scheduler | None = None
        self.web = None
        self.web_url = ""
        self._confined_before: Path | None = None

    # -- intake: a settled candidate becomes a job --------------------------------------------
    def on_ready(self, cand: Candidate) -> None:
        kind = BY_JOB[cand.kind]
        if kind.takes == "media":
            fingerprint = self._fingerprint(cand)  # hashing runs outside the lock
            if fingerprint is None:
                return
            with self.lock:
                self._file_job(cand, *fingerprint)
        else:
            with self.lock:
                (self._folder_job if kind.takes == "folders" else self._model)(cand)
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
        kind, owner = cand.kind, BY_JOB[cand.kind].owner
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

    def _folder_job(self, cand: Candidate) -> None:
        store, folder = self.store, cand.path
        if not _safe_name(cand.owner):
            return
        signature = _folder_signature(folder)
        seen = store.seen(folder)
        if seen and seen["sha256"] == signature or store.active_job_for(cand.kind, folder):
            return
        job_id = store.add_job(cand.kind, folder, **{BY_JOB[cand.kind].owner: cand.owner})
        store.remember(folder, signature, 0, 0.0, job_id)

    def _model(self, cand: Candidate) -> None:
        name = cand.owner
        settings = self._model_settings(name)
        if settings is None:
            return
        self.store.upsert_model(name, a=settings.a, b=settings.b,
                                max_iterations=settings.train.max_iterations)
        self.maybe_train(name)

    def _model_settings(self, name: str) -> ModelSettings | None:
        """A model's validated ``model.toml``; a bad one marks that model "error: ..." (and
        only that model) and gives None."""
        path = self.root / "models" / name / "model.toml"
        try:
            return load_model(path, self.config)
        except ConfigError as exc:
            message = str(exc).replace(f"{path}: ", "model.toml: ")
            self.store.upsert_model(name, status=f"error: {printable(message)}")
            log.error("%s", exc)
            return None

    def maybe_train(self, name: str | None = None) -> None:
        """Queue training for models whose two people both have approved faces, unless they
        stopped by themselves and nothing since lets them train further."""
        for model in self.store.db["models"].rows_where("a IS NOT NULL" + (" AND name = ?" if name else ""),
                                                        [name] if name else []):
            try:
                self._maybe_train_one(model)
            except Exception as exc:  # one broken model must not keep the others waiting
                log.exception("model %s: cannot schedule training", model["name"])
                self.store.upsert_model(model["name"], status=f"error: {printable(exc)}")

    def _maybe_train_one(self, model: dict[str, Any]) -> None:
        name = model["name"]
        folder = ModelFolder(self.root / "models" / name)
        if self.store.active_job_for("train", folder.path):
            return
        if not (folder / "model.toml").is_file() or not is_inside(folder.path, self.root):
            return
        settings = self._model_settings(name)
        if settings is None:
            return
        if not all(self._approved_faces(p) for p in (settings.a, settings.b)):
            self.store.upsert_model(name, status="waiting for approved faces")
            return
        if self.store.jobs("kind = 'clean' AND status IN ('queued','running')"):
            return  # faces are changing; decide once they are clean
        state = folder.state()  # InputError if damaged: the model shows "error: ..."
        signature = self._train_signature(settings)
        stop = stopped(state)
        if stop is not None:
            known = model.get("trained_with") or signature  # stopped before we knew it
            capped = int(state.get("iterations") or 0) >= settings.train.max_iterations
            if known == signature or capped:
                self.store.upsert_model(name, status="stopped", trained_with=known,
                                        stopped_at=int(stop.get("iteration") or 0),
                                        stop_reason=describe_stop(stop))
                return
            log.info("model %s stopped at iteration %s; its settings or faces changed: "
                     "training resumes", name, stop.get("iteration"))
        self.store.add_job("train", folder.path, model=name)
        self.store.upsert_model(name, status="queued", trained_with=signature, stopped_at=None,
                                stop_reason=None)

    def _train_signature(self, settings: ModelSettings) -> str:
        """What decides whether a stopped model may train further: its stop settings and the
        approved faces of its two people."""
        t = settings.train
        faces = [sorted((d.name, _folder_signature(d)) for d in (self.root / "approved" / p)
                        .iterdir() if d.is_dir())  # the sets (not the occlusion weights)
                 for p in (settings.a, settings.b)]
        text = repr((t.stop, t.max_iterations, t.plateau_gain, faces))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def _approved_faces(self, person: str) -> bool:
        folder = self.root / "approved" / person
        return (folder.is_dir() and is_inside(folder, self.root)
                and any(p.suffix == ".png" for p in folder.rglob("*.png")))

    # -- job -> stage parameters ------------------------------------------------------------
    def params(self, job: dict) -> Any | None:
        """The stage's parameters for a job, or None while it must wait."""
        c, root = self.config, str(self.root)
        kind = job["kind"]
        if kind == "extract":
            return ExtractParams(root, job["input"], job["person"], c.extract.every_n,
                                 c.extract.size, c.extract.min_size)
        if kind == "clean":
            return CleanParams(root, job["input"])
        if kind == "train":
            return self._train_params(job)
        if kind == "convert":
            return self._convert_params(job)
        if kind == "mask":
            return MaskParams(root, job["person"], self.config.train.mask_steps)
        return None

    def _train_params(self, job: dict) -> TrainParams | None:
        folder = ModelFolder(job["input"])
        settings = load_model(folder / "model.toml", self.config)
        if self._train_mask(folder.name, settings) == "occlusion":  # waits for both networks
            missing = [p for p in (settings.a, settings.b)
                       if not (self.root / "approved" / p / OCCLUSION_WEIGHTS).is_file()]
            for person in missing:
                self._queue_mask(person)
            if missing:
                message = f"waiting for the occlusion mask of {' and '.join(missing)}"
                if job.get("message") != message:
                    self.store.update(job["id"], message=message)
                return None
        train = engine_kwargs(settings.train, "train")
        if folder.state() is not None:  # fixed at creation: only model.toml may insist
            for s in in_section("train"):
                if s.frozen and s.name not in settings.explicit:
                    train[s.arg or s.name] = None
        return TrainParams(str(self.root), str(folder.path), settings.a, settings.b, train,
                           self.config.gpu)

    def _convert_params(self, job: dict) -> ConvertParams | None:
        folder = ModelFolder(self.root / "models" / job["model"])
        settings = (self._model_settings(job["model"])
                    if (folder / "model.toml").is_file() else None)
        convert = settings.convert if settings else self.config.convert
        own = Path(job["input"]).with_suffix(".toml")
        if own.is_file() and is_inside(own, self.root):
            try:  # the target's own settings: a bad one fails this target, with the reason
                convert = load_target(own, convert)
            except ConfigError as exc:
                raise InputError(Path(job["input"]), str(exc)) from None
        why = self._not_ready(job, folder, convert.convert_when)
        if why:
            message = f"waiting for model {job['model']} ({why})"
            if job.get("message") != message:
                self.store.update(job["id"], message=message)
            return None
        options = engine_kwargs(convert, "convert")
        if convert.mask == "occlusion" and settings is not None:  # the input person's network
            person = settings.b if convert.swap else settings.a
            weights = self.root / "approved" / person / OCCLUSION_WEIGHTS
            if not weights.is_file():
                self._queue_mask(person)
                message = f"waiting for the occlusion mask of {person}"
                if job.get("message") != message:
                    self.store.update(job["id"], message=message)
                return None
            options["occlusion"] = str(weights)
        return ConvertParams(str(self.root), job["input"], job["model"], str(folder.path),
                             options, self.config.gpu)

    def _queue_mask(self, person: str) -> None:
        """Train ``person``'s occlusion network (once at a time; again after new faces)."""
        folder = self.root / "approved" / person
        if (folder.is_dir() and is_inside(folder, self.root)
                and not self.store.active_job_for("mask", folder)):
            self.store.add_job("mask", folder, person=person)

    def _wants_occlusion(self, person: str) -> bool:
        """Whether a conversion of ``person`` uses the occlusion mask (facedrop.toml, or a
        model of theirs)."""
        if "occlusion" in (self.config.convert.mask, self.config.train.mask):
            return True
        for model in self.store.db["models"].rows_where("a = ? OR b = ?", [person, person]):
            settings = self._model_settings(model["name"])
            if settings is not None and "occlusion" in (settings.convert.mask,
                                                        self._train_mask(model["name"], settings)):
                return True
        return False

    def _train_mask(self, name: str, settings: ModelSettings) -> str:
        """The loss mask of a model: as it was created, or as its settings say for a new one."""
        try:
            state = ModelFolder(self.root / "models" / name).state()
        except InputError:
            state = None
        return str((state or {}).get("mask") or settings.train.mask)

    def _not_ready(self, job: dict, folder: ModelFolder, convert_when: str) -> str:
        """Why a target of ``folder`` must wait (``convert_when``), or "" when it may run."""
        try:
            state = folder.state()
        except InputError as exc:
            return f"its state cannot be read: {exc.reason}"
        if state is None or not folder.has_save():
            return "no save yet"
        when, at = parse_convert_when(convert_when)
        iterations = int(state.get("iterations") or 0)
        done = stopped(state) is not None and not self.store.active_job_for("train", folder.path)
        if when == "first-save" or done or (when == "iterations" and iterations >= at):
            return ""
        goal = f"converts at iteration {at}" if when == "iterations" else "converts when it stops"
        return f"iteration {iterations}, {goal}"

    def updates(self, job: dict) -> dict[str, Any]:
        """What a running job's child should know now: training renders a preview frame of
        each target waiting for its model (newest first, at most :data:`MAX_PREVIEWS`)."""
        if job["kind"] != "train":
            return {}
        folder = ModelFolder(job["input"])
        waiting = self.store.jobs("kind = 'convert' AND model = ? AND status = 'queued'",
                                  (job["model"],))
        return {"previews": [(w["input"], str(folder.preview(w["id"])))
                             for w in sorted(waiting, key=lambda w: -w["id"])[:MAX_PREVIEWS]]}

    def finished(self, job: dict, kind: str) -> None:
        """After a job ended (the worker has recorded its outcome already: nothing here can
        change it)."""
        if job["status"] == "failed" and job.get("output"):
            self.store.forget(Path(job["input"]))  # moved to failed/: back again is new work
        if kind == "clean" and job["status"] == "done":
            folder = Path(job["input"])
            if folder.exists():  # cleaning renamed files: remember the cleaned state
                self.store.remember(folder, _folder_signature(folder), 0, 0.0, job["id"])
            if job.get("person") and self._wants_occlusion(job["person"]):
                with self.lock:  # new faces: the person's occlusion mask learns them too
                    self._queue_mask(job["person"])
        if kind == "convert" and job["status"] in ("done", "failed"):
            ModelFolder(self.root / "models" / job["model"]).preview(job["id"]).unlink(
                missing_ok=True)
        if kind == "train" and job["status"] == "done":
            with self.lock:
                self.maybe_train(job["model"])  # records where and why it stopped
                self._convert_again(job["model"])
        if kind in ("clean", "extract"):
            with self.lock:
                self.maybe_train()

    def _convert_again(self, name: str) -> None:
        """The model stopped at more iterations than its outputs were made with: convert
        those targets again (each still in ``targets/<name>/``), once."""
        model = self.store.model(name)
        if not model or model.get("stopped_at") is None:
            return
        latest = {job["input"]: job for job in sorted(  # the newest job of each target
            self.store.jobs("kind = 'convert' AND model = ?", (name,)), key=lambda j: j["id"])}
        for path, job in latest.items():
            if (job["status"] != "done" or int(job.get("iterations") or 0) >= model["stopped_at"]
                    or not Path(path).is_file() or not is_inside(path, self.root)):
                continue
            seen = self.store.seen(Path(path))
            if seen and job["input_sha256"] and seen["sha256"] != job["input_sha256"]:
                continue  # replaced by other content: the watcher has queued that already
            new = self.store.add_job("convert", path, model=name, input_sha256=job["input_sha256"])
            self.store.event(new, "queued", f"converting again: the model stopped at iteration "
                                            f"{model['stopped_at']}, the last output used "
                                            f"{job.get('iterations')}")
            log.info("%s: converting %s again with iteration %s", name, Path(path).name,
                     model["stopped_at"])

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
            f"{running[0]['kind']} {printable(Path(running[0]['input']).name)}"
            + (f" and {len(running) - 1} more" if len(running) > 1 else "") if running
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
        self.executor = make_executor(self.config.cluster, self.root, self.config.gpu,
                                      self.verbose)
        try:  # a cluster whose nodes do not see the root stops us here
            self.executor.connect()
        except Exception as exc:
            raise CannotStart(f"cannot run jobs on the Ray cluster at "
                              f"{self.config.cluster.address}: {exc}") from exc
        self.worker = Worker(self.config, self.store, self.params, self.verbose,
                             executor=self.executor)
        self.worker.on_finished = self.finished
        self.worker.updates = self.updates
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

        from .settings import describe

        app = create_app(self.root, allowed_hosts=[self.config.host, *self.config.allowed_hosts],
                         settings=describe(self.config))
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
        if self.executor is not None:
            self.executor.close()
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
    except CannotStart as exc:
        log.error("%s", exc)
        service.stop()
        return 1
    try:
        service.wait()
    finally:
        service.stop()
    return 0


__all__ = ["AlreadyRunning", "CannotStart", "Service", "move_to_failed", "run"]
