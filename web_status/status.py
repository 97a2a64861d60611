"""The status the page, the JSON API and the metrics show: SQLite state plus hot-folder files.

Read-only for real: the database is opened through a ``file:...?mode=ro`` URI with
``PRAGMA query_only``, so even a bug here cannot write; a missing database means the daemon
has not run yet, which the page says instead of failing. The whole status is rebuilt at most
once per ``ttl`` seconds however many clients poll (one builder at a time, the others get the
fresh copy), which keeps the page fast on a root with thousands of jobs and faces.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from hotfolders.model import ModelFolder

from . import folders, queries
from .charts import LossCache

log = logging.getLogger(__name__)

API_VERSION = 1
RATE_WINDOW_S = 60.0


class _Rates:
    """Progress rate per running job from successive (updated_at, done) observations.

    A resumed training job reports absolute iterations, so done / elapsed would be wrong;
    the slope over the last minute of observations is right for every kind of job.
    """

    def __init__(self) -> None:
        self.samples: dict[int, deque[tuple[float, float]]] = {}

    def observe(self, job_id: int, at: float | None, done: float | None) -> float | None:
        if at is None or done is None:
            return None
        dq = self.samples.setdefault(job_id, deque(maxlen=256))
        if not dq or at > dq[-1][0]:
            dq.append((at, float(done)))
        while len(dq) > 2 and at - dq[0][0] > RATE_WINDOW_S:
            dq.popleft()
        (t0, d0), (t1, d1) = dq[0], dq[-1]
        if t1 - t0 >= 1.0 and d1 > d0:
            return (d1 - d0) / (t1 - t0)
        return None

    def keep(self, ids: set[int]) -> None:
        for job_id in list(self.samples):
            if job_id not in ids:
                del self.samples[job_id]


class StatusReader:
    """Builds (and briefly caches) the status dict of one root."""

    def __init__(self, root: Path, db: Path, ttl: float = 1.0,
                 settings: list[dict[str, Any]] | None = None) -> None:
        self.root = Path(root)
        self.settings = settings or []
        self.db = Path(db)
        self.ttl = ttl
        self.losses = LossCache()
        self.urls: dict[str, Callable[..., str]] = {}
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any], dict[str, bytes]] | None = None
        self._render_locks: dict[str, threading.Lock] = {}
        self._last_render: dict[str, bytes] = {}
        self._rates = _Rates()
        self._lock_rates = threading.Lock()

    def _snapshot(self) -> tuple[float, dict[str, Any], dict[str, bytes]]:
        cached = self._cached
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached
        # one thread rebuilds; the others keep serving the previous snapshot meanwhile
        # instead of queueing behind the rebuild (no latency spike every ``ttl`` seconds)
        if not self._lock.acquire(blocking=cached is None):
            return cached
        try:
            cached = self._cached
            if cached and time.monotonic() - cached[0] < self.ttl:
                return cached
            self._cached = (time.monotonic(), self.build(), {})
            return self._cached
        finally:
            self._lock.release()

    def status(self) -> dict[str, Any]:
        """The current status; rebuilt when older than ``ttl`` seconds."""
        return self._snapshot()[1]

    def rendered(self, key: str, render: Callable[[dict[str, Any]], bytes]) -> bytes:
        """``render(status)`` made once per status snapshot and shared by every request for
        it: the page, the JSON and the metrics cost one rendering per ``ttl``, not one per
        client. While one thread renders a new snapshot, others get the previous rendering."""
        _, value, renders = self._snapshot()
        out = renders.get(key)
        if out is not None:
            return out
        lock = self._render_locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            previous = self._last_render.get(key)
            if previous is not None:
                return previous
            lock.acquire()
        try:
            out = renders.get(key)
            if out is None:
                out = renders[key] = render(value)
            self._last_render[key] = out
            return out
        finally:
            lock.release()

    def daemon(self) -> dict[str, Any]:
        """Only the daemon's state (is it alive, its page's address), from the database."""
        return self._db_status(time.time())["daemon"]

    # -- building ----------------------------------------------------------------------

    def build(self) -> dict[str, Any]:
        started = time.perf_counter()
        now = time.time()
        db = self._db_status(now)
        people = folders.people(self.root)
        models = self._models(db)
        outputs = folders.outputs(self.root)
        failures = self._failures(db)
        faces = sum(p["approved_faces"] + p["review_faces"] for p in people)
        for m in models:  # a model's coverage picture is about its two people
            for p in people:
                if p["name"] in (m["a"], m["b"]):
                    p["coverage"] += m["coverage"]
        self._add_urls(people, models, outputs, db["queue"])
        status = {
            "api_version": API_VERSION,
            "generated": folders.iso(now),
            "root": str(self.root),
            "daemon": db["daemon"],
            "counts": {
                "jobs": db["jobs_by_status"],
                "queue_length": db["queue_length"],
                "faces_extracted": faces,
                "people": len(people),
                "models": len(models),
                "outputs": len(outputs),
                "failures": len(failures),
            },
            "running": db["running"],
            "queue": db["queue"],
            "people": people,
            "models": models,
            "outputs": outputs,
            "failures": failures,
            "ignored": [dict(item, path=self._relative(item["path"])) for item in db["ignored"]],
            "settings": self.settings,
        }
        status["digest"] = {
            "ignored": _digest([(i["path"], i["reason"]) for i in status["ignored"]]),
            "people": _digest([(p["name"], p["approved_faces"], p["review_faces"],
                                len(p["flagged"])) for p in people]),
            "outputs": _digest([(o["path"], o["size"]) for o in outputs]),
            "failures": _digest([(f["stage"], f["file"], f["when"]) for f in failures]),
            "models": _digest([(m["name"], len(m["snapshots"]), m["trainer"]) for m in models]),
        }
        status["build_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return status

    def _db_status(self, now: float) -> dict[str, Any]:
        empty: dict[str, Any] = {
            "daemon": {"state": "not-run", "db": False, "heartbeat": None, "url": None,
                       "message": "the daemon has not run yet on this root (start it with "
                                  "`facedrop run`)"},
            "jobs_by_status": {}, "queue_length": 0, "running": [], "queue": [],
            "failed_jobs": [], "models": {}, "ignored": [],
        }
        try:
            conn = queries.connect(self.db)
            if conn is None:
                return empty
            try:
                db = queries.read(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.warning("state database %s: %s", self.db, exc)
            empty["daemon"] = {"state": "unreadable", "db": True, "heartbeat": None, "url": None,
                               "message": f"cannot read the state database: {exc}"}
            return empty
        db["daemon"] = queries.daemon_state(db.pop("daemon_row"), now)
        with self._lock_rates:
            for job in db["running"]:
                started, updated = job.pop("_t")
                self._progress(job, started, updated, now)
            self._rates.keep({j["id"] for j in db["running"]})
        for job in db["running"] + db["queue"] + db["failed_jobs"]:
            job["input"] = self._relative(job["input"])
        for job in db["queue"]:  # a target waiting for its model: the latest preview frame
            picture = (ModelFolder(self.root / "models" / job["model"]).preview(job["id"])
                       if job["kind"] == "convert" and job.get("model") else None)
            job["preview"] = self._relative(str(picture)) if picture and picture.is_file() else None
        return db

    def _progress(self, job: dict[str, Any], started: float | None, updated: float | None,
                  now: float) -> None:
        """Rate (units/s), ETA and elapsed time of a running job."""
        done, total = job.get("done"), job.get("total")
        rate = self._rates.observe(job["id"], updated, done)
        if rate is None and job["kind"] != "train" and done and started and updated \
                and updated - started >= 2.0:
            rate = done / (updated - started)  # extraction and conversion start at 0
        job["rate"] = rate
        job["eta_s"] = (max(0.0, (total - done) / rate) if rate and total and done is not None
                        else None)
        job["elapsed_s"] = now - started if started else None

    def _relative(self, path: str) -> str:
        """Paths inside the root are shown relative to it (shorter, and no home folder)."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return path

    def _models(self, db: dict[str, Any]) -> list[dict[str, Any]]:
        models = folders.models(self.root)
        by_name = db.get("models", {})
        for m in models:
            row = by_name.get(m["name"], {})
            log_ = self.losses.get(self.root / "models" / m["name"] / "loss.csv")
            last = log_.last() if log_ is not None else {"a": None, "b": None}
            if row.get("iterations") is not None:
                m["iterations"] = max(m["iterations"] or 0, row["iterations"])
            if log_ is not None and len(log_):
                m["iterations"] = max(m["iterations"] or 0, log_.iterations[-1])
                m["loss_points"] = len(log_)
            else:
                m["loss_points"] = 0
            saved = m.pop("saved_loss", None) or {"a": None, "b": None}
            m["loss"] = {side: next((v for v in (row.get(f"loss_{side}"), last[side], saved[side])
                                     if v is not None), None) for side in ("a", "b")}
            m["a"] = row.get("a") or ""
            m["b"] = row.get("b") or ""
            m["config_error"] = None
            m["target_iterations"] = row.get("max_iterations")
            status = str(row.get("status") or ("saved" if m["iterations"] else "waiting"))
            if status.startswith("error:"):
                m["config_error"] = status[6:].strip()
                status = "error"
            m["state"] = status
            m["stop_reason"] = row.get("stop_reason") or ""
            m["stopped_at"] = row.get("stopped_at")
            m["state_key"] = status.split()[0].strip(":").lower() if status else "unknown"
            m["progress"] = _fraction(m["iterations"], m["target_iterations"])
        return models

    def _failures(self, db: dict[str, Any]) -> list[dict[str, Any]]:
        files = folders.failures(self.root)
        for f in files:
            f["source"] = "file"
        jobs = [{"stage": j.get("kind") or "", "file": j.get("name") or "", "reason":
                 j.get("error") or "(no message)", "text": j.get("error") or "",
                 "when": j.get("finished"), "job_id": j.get("id"), "source": "job"}
                for j in db.get("failed_jobs", [])]
        seen = {(f["file"]) for f in files}
        merged = files + [j for j in jobs if j["file"] not in seen]
        merged.sort(key=lambda f: f.get("when") or "", reverse=True)
        return merged[:folders.MAX_FAILURES]

    def _add_urls(self, people: list[dict], models: list[dict], outputs: list[dict],
                  queue: list[dict]) -> None:
        """Attach links (built by the app, so they are correctly quoted) to files."""
        if not self.urls:
            return
        f, t, chart = self.urls["file"], self.urls["thumb"], self.urls["chart"]
        for p in people:
            p["thumbnail_urls"] = [t(path) for path in p["thumbnails"]]
            p["coverage_urls"] = [f(path) for path in p["coverage"]]
            p["coverage_items"] = [{"url": f(path), "label": _coverage_label(path)}
                                   for path in p["coverage"]]
            for item in p["flagged"]:
                item["url"] = t(item["path"])
            for src in p["review"]:
                rep = src.get("report")
                if rep and rep.get("sheet"):
                    rep["sheet_url"] = f(rep["sheet"])
        for m in models:
            for frame in m["timelapse"]:
                frame["url"] = f(frame["path"])
            m["coverage_urls"] = [f(path) for path in m["coverage"]]
            m["chart_url"] = chart(m["name"], m["iterations"] or 0)
        for job in queue:
            job["preview_url"] = f(job["preview"]) if job.get("preview") else None
        for o in outputs:
            o["url"] = f(o["path"])
            o["manifest_url"] = f(o["manifest_path"]) if o["manifest_path"] else None


def _coverage_label(path: str) -> str:
    parts = path.split("/")
    return f"pose coverage, model {parts[1]}" if parts[0] == "models" else "pose coverage"


def _fraction(done: float | None, total: float | None) -> float | None:
    if not done or not total:
        return None
    return max(0.0, min(1.0, done / total))


def _digest(items: list) -> str:
    import hashlib

    return hashlib.sha1(repr(items).encode("utf-8", "replace")).hexdigest()[:12]


# --- Prometheus -------------------------------------------------------------------------

def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(s: dict[str, Any]) -> str:
    """The status in the Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")

    jobs = s["counts"]["jobs"]
    statuses = sorted(set(jobs) | {"queued", "running", "paused", "done", "failed"})
    metric("facedrop_jobs", "gauge", "Jobs in the state database by status.",
           [({"status": st}, jobs.get(st, 0)) for st in statuses])
    metric("facedrop_queue_length", "gauge", "Jobs waiting to run (queued or paused).",
           [({}, s["counts"]["queue_length"])])
    metric("facedrop_jobs_running", "gauge", "Jobs running now.", [({}, len(s["running"]))])
    metric("facedrop_faces_extracted", "gauge",
           "Extracted face images present in review/ and approved/.",
           [({}, s["counts"]["faces_extracted"] or 0)])
    metric("facedrop_faces", "gauge", "Face images per person and hot folder.",
           [({"person": p["name"], "folder": area}, p[f"{area}_faces"])
            for p in s["people"] for area in ("approved", "review")])
    metric("facedrop_model_iterations", "gauge", "Training iterations of each model.",
           [({"model": m["name"]}, m["iterations"] or 0) for m in s["models"]])
    metric("facedrop_model_loss", "gauge", "Latest training loss of each model and side.",
           [({"model": m["name"], "side": side}, m["loss"][side]) for m in s["models"]
            for side in ("a", "b") if m["loss"].get(side) is not None])
    metric("facedrop_outputs", "gauge", "Swapped videos in output/.", [({}, len(s["outputs"]))])
    metric("facedrop_failures", "gauge", "Recent failures shown on the page.",
           [({}, len(s["failures"]))])
    metric("facedrop_daemon_up", "gauge", "1 when the daemon's heartbeat is recent.",
           [({}, 1 if s["daemon"].get("state") == "running" else 0)])
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
