"""The job queue's worker: heavy jobs in priority order, one at a time unless
``[cluster] jobs`` allows more.

Extraction and cleaning come first, then conversion, then training. Training is preemptible:
when other work waits and no slot is free (or its window closes, or the daemon stops) the
worker asks the stage to stop; training saves at its next step and the job is paused, to
resume later from that save. A job whose input is bad, or whose process crashes, is marked
failed and its input moved to ``failed/<stage>/`` with an ``.error.txt``; the worker carries
on with the next job. With several slots, two jobs of one person or model never run at once
(except extractions of different videos): their stages share that owner's folders.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hotfolders.atomic import write_text
from hotfolders.errors import InputError
from hotfolders.names import fit_name, printable
from hotfolders.safefs import ensure_dir, is_inside

from .config import Config, window_open
from .executor import Executor, LocalExecutor, Run
from .faults import backoff
from .kinds import BY_JOB, describe_needs
from .sdnotify import notify
from .store import Store

log = logging.getLogger(__name__)

PLACING_SECONDS = 10.0  # a started job not placed on a node by then is said to wait for one


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name`` cut to the byte budget, or ``<stem>.1<suffix>``... if that is taken."""
    name = fit_name(name)
    target = folder / name
    stem, suffix = os.path.splitext(name)
    n = 1
    while target.exists() or target.is_symlink():
        target = folder / f"{stem}.{n}{suffix}"
        n += 1
    return target


def move_to_failed(root: Path, stage: str, path: Path, message: str, detail: str = "") -> Path | None:
    """Move a failed input to ``failed/<stage>/`` and write ``<name>.error.txt`` beside it.

    The report is written first: a kill between the two steps leaves a report next to an
    input that is still in place, never an input in ``failed/`` without its reason. Names are
    cut to a byte budget (the report names the input in full); nothing is moved out of, or
    into, a place outside the root.
    """
    if not (path.exists() or path.is_symlink()) or not is_inside(path.parent, root):
        return None
    folder = ensure_dir(root / "failed" / stage, root)
    target = _free_name(folder, path.name)
    text = (f"what:  {stage} of {printable(path.name)} failed\n"
            f"why:   {printable(message)}\n"
            f"when:  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
            f"from:  {printable(path)}\n"
            f"to do: {BY_JOB[stage].advice if stage in BY_JOB else 'See the message above.'}\n")
    if detail and detail != "bad input":
        text += f"\ndetails:\n{detail}\n"
    write_text(folder / f"{target.name}.error.txt", text)
    try:
        os.rename(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(str(path), str(target))  # failed/ on another file system than the input
    return target


class Worker:
    """Runs queued jobs, ``[cluster] jobs`` at a time (one thread each), each in a process of
    its executor (by default a child process of the daemon: :mod:`daemon.executor`).

    It never dies: every pass of its loop is guarded (an error is logged, shown in the
    daemon's status, and retried with a back-off), writes of a job's outcome to the database
    are retried until they land, and a follow-up hook cannot change an outcome.
    """

    def __init__(self, config: Config, store: Store, params: Callable[[dict], dict[str, Any] | None],
                 verbose: bool = False, executor: Executor | None = None) -> None:
        self.config = config
        self.store = store
        self.params = params          # job row -> stage parameters, or None if not runnable yet
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.paused_reason = ""
        self.problem = ""             # why the worker cannot work right now (for the status)
        self.on_finished: Callable[[dict, str], None] | None = None
        # job row -> {topic: value} for its running child (training: the previews to render)
        self.updates: Callable[[dict], dict[str, Any]] | None = None
        self.executor: Executor = executor or LocalExecutor(verbose)
        slots = max(1, int(config.cluster.jobs))
        self._threads = [threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
                         for n in range(slots)]
        self._claim = threading.Lock()          # picking a job and marking it running
        self._running: dict[int, dict] = {}     # job id -> row, of the jobs running now
        self._attached: list[tuple[dict, Run]] = []  # runs a previous daemon left running
        self.last_tick = time.monotonic()  # liveness, for the systemd watchdog

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def resume_interrupted(self) -> None:
        """At start-up: jobs a crash or kill left running carry on where their stage outlived
        the daemon (a cluster's actor: the worker attaches to it), or run again, unless they
        were cut off :attr:`Limits.max_interruptions` times (a crash loop, an OOM kill): those
        fail, with their input in ``failed/``."""
        for job in self.store.jobs("status = 'running'"):
            run = self.executor.attach(_key(job))
            if run is not None:
                log.info("job %d: its stage outlived the last daemon; attached to it on %s",
                         job["id"], run.where or "the cluster")
                self._attached.append((job, run))
        limit = self.config.limits.max_interruptions
        for job in self.store.interrupted(skip={job["id"] for job, _ in self._attached}):
            if job["interruptions"] >= limit:
                self._fail(job, f"interrupted {job['interruptions']} times while it ran (the "
                                f"daemon crashed or was killed, maybe out of memory); not run "
                                f"again")
            else:
                self.store.transition(job["id"], "queued", "interrupted; will run again")
                log.info("job %d was interrupted; queued again", job["id"])

    # -- choosing ---------------------------------------------------------------------------
    def _runnable(self, job: dict) -> dict[str, Any] | None:
        if job["kind"] == "train" and not window_open(self.config.train.window, _minute()):
            return None
        return self.params(job)

    def _blockers(self, job: dict) -> set[int]:
        """The running jobs that work on the same person or model as ``job`` (two extractions
        of different videos may run together)."""
        return {other["id"] for other in list(self._running.values())
                if (other["person"], other["model"]) == (job["person"], job["model"])
                and not (job["kind"] == other["kind"] == "extract"
                         and Path(job["input"]).stem != Path(other["input"]).stem)}

    def _pick(self) -> tuple[dict, dict[str, Any]] | None:
        if self.paused_reason:
            return None
        for job in self.store.next_job(set(self._running)):
            if self._blockers(job) or not self.executor.has_room(job["kind"]):
                continue
            try:
                params = self._runnable(job)
            except Exception as exc:  # e.g. its model vanished: fail this job, not the worker
                log.warning("job %s cannot run: %s", job["id"], exc)
                self._fail(job, f"cannot run: {exc}", move=isinstance(exc, InputError))
                continue
            if params is not None:
                return job, params
        return None

    def _should_yield(self, job: dict) -> bool:
        """A running training job yields to a closing window, and to waiting work that cannot
        start because of it: work on its own model, or any work while every slot is busy
        or (on a cluster) no node has the GPU free. In the last two cases only the training
        that started last yields (one conversion waiting does not pause every training)."""
        if not BY_JOB[job["kind"]].preemptible:
            return False
        if not window_open(self.config.train.window, _minute()) or self.paused_reason:
            return True
        with self._claim:
            latest = max((other for other in self._running.values()
                          if BY_JOB[other["kind"]].preemptible),
                         key=lambda other: other["_started"], default=None)
            full = len(self._running) >= len(self._threads)
        try:
            for other in self.store.next_job(set(self._running)):
                if BY_JOB[other["kind"]].preemptible:
                    continue
                blockers = self._blockers(other)
                if blockers - {job["id"]} or self._runnable(other) is None:
                    continue  # pausing this training would not let it start
                if job["id"] in blockers or (latest is not None and latest["id"] == job["id"]
                                             and (full or not self.executor.has_room(
                                                 other["kind"]))):
                    return True
            return False
        except Exception:  # _pick will fail the broken job; training need not stop for it
            return False

    # -- running ----------------------------------------------------------------------------
    def _loop(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            self.last_tick = time.monotonic()
            run: Run | None = None
            try:
                with self._claim:
                    if self._attached:
                        job, run = self._attached.pop()
                        picked = job, None
                        self._running[job["id"]] = dict(job, _started=time.monotonic())
                    else:
                        picked = self._pick()
                        if picked is not None:
                            picked = self._start(*picked), picked[1]
                self.problem = ""
                delay = 1.0
            except Exception as exc:  # a locked or full database: wait, then try again
                self._trouble(f"cannot read the job queue ({exc})", delay)
                delay = min(delay * 2, 60.0)
                continue
            if picked is None:
                self.wake.wait(2.0)
                self.wake.clear()
                continue
            job, params = picked
            try:
                self._run(job, params, run)
            except Exception as exc:  # never let the worker thread die
                log.exception("job %s: internal error", job["id"])
                self._trouble(f"job {job['id']} hit an internal error ({exc})", delay)
                delay = min(delay * 2, 60.0)
                self._requeue_after_error(job)
            finally:
                with self._claim:
                    self._running.pop(job["id"], None)

    def _trouble(self, problem: str, delay: float) -> None:
        self.problem = problem
        log.error("%s; trying again in %.0f s", problem, delay)
        self.stopping.wait(delay)

    def _requeue_after_error(self, job: dict) -> None:
        try:
            if self.store.job(job["id"])["status"] == "running":
                self.store.transition(job["id"], "queued", "internal error; will run again",
                                      retry_at=time.time() + self.config.limits.retry_seconds)
        except Exception:  # the database is still unwell: the restart requeues it
            log.exception("job %s: could not requeue it", job["id"])

    def _durably(self, write: Callable[[], None]) -> None:
        """Record a job's outcome, retrying while the database refuses (locked, disk full):
        the outcome is known and must not be lost. Gives up only when the daemon stops (the
        job then stays 'running' and the restart runs it again)."""
        delay = 0.5
        while True:
            try:
                write()
                self.problem = ""
                return
            except sqlite3.Error as exc:
                if self.stopping.is_set():
                    raise
                self.problem = f"cannot write the state database ({exc})"
                log.warning("%s; retrying in %.1f s", self.problem, delay)
                self.last_tick = time.monotonic()
                self.stopping.wait(delay)
                delay = min(delay * 2, 30.0)

    def _start(self, job: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """Mark a picked job running (under the claim lock: no other slot takes it); the job
        with this attempt counted."""
        name = printable(Path(job["input"]).name)
        job = dict(job, attempts=job["attempts"] + 1)
        self.store.transition(job["id"], "running", f"{job['kind']} {name}",
                              attempts=job["attempts"], progress=None, retry_at=None, node=None)
        self._running[job["id"]] = dict(job, _started=time.monotonic())
        return job

    def _run(self, job: dict[str, Any], params: Any, run: Run | None = None) -> None:
        """Supervise one job's stage (started here, or ``run``: one a previous daemon left)."""
        job_id, kind = job["id"], job["kind"]
        log.info("job %d: %s %s", job_id, kind, printable(Path(job["input"]).name))
        notify(f"STATUS={kind} {Path(job['input']).name}")  # notify escapes what names hold
        if run is None:
            run = self.executor.start(kind, params, key=_key(job))
        placed = waiting = False  # where it runs is noted once known (a cluster places it)
        outcome: tuple | None = None
        stop_sent = False
        stall = self.config.limits.stall_seconds * BY_JOB[kind].stall_factor
        last_heard = last_yield_check = time.monotonic()
        last_update = 0.0  # the first updates go at once
        sent: dict[str, Any] = {}
        while True:
            self.last_tick = now = time.monotonic()
            try:
                message = run.receive(0.2)
            except (EOFError, OSError):  # the stage is gone (or going)
                break
            if not placed and run.where:
                placed = True
                last_heard = now  # waiting for a node is not a stall
                self._note(job_id, node=run.where)
            elif not placed and not waiting and now - last_heard > PLACING_SECONDS:
                waiting = True
                self._note(job_id, message=f"{kind}: waiting for a node with "
                                           f"{describe_needs(BY_JOB[kind])} free")
            if message is not None:
                last_heard = time.monotonic()
                if message[0] == "progress":
                    self._progress(job, message[1])
                elif message[0] == "log":
                    _, level, name, text = message
                    logging.getLogger(name).log(level, "job %d (%s): %s", job_id, kind, text)
                else:
                    outcome = message
                    break
            elif not run.alive():
                break
            # whether messages came or not: a busy stage must still hear a stop request
            if placed and now - last_heard > stall:
                run.kill()
                outcome = ("failed", f"the {kind} process stopped reporting progress for "
                                     f"{stall:.0f} s and was stopped (hung on this input?)", "")
                log.error("job %d: no progress for %.0f s; killed", job_id, stall)
                break
            if self.updates is not None and now - last_update >= 1.0:
                last_update = now
                self._send_updates(job, run, sent)
            if not stop_sent and (self.stopping.is_set() or
                                  (now - last_yield_check > 1.0 and self._should_yield(job))):
                last_yield_check = now
                if BY_JOB[kind].preemptible:
                    run.send("stop")  # training saves at the next step, then returns
                    stop_sent = True
                elif self.stopping.is_set():
                    run.terminate()  # extraction/conversion restart cleanly from temp names
                    stop_sent = True
        self._finish(job, outcome, run.finish(10), stop_sent)

    def _note(self, job_id: int, **fields: Any) -> None:
        """Record something about a running job; a database hiccup only loses this note."""
        try:
            self.store.update(job_id, **fields)
        except sqlite3.Error as exc:
            log.warning("job %d: %s not recorded (%s)", job_id, ", ".join(fields), exc)

    def _send_updates(self, job: dict, run: Run, sent: dict[str, Any]) -> None:
        """Send the stage what changed since the last look (a failure only skips this one)."""
        try:
            for topic, value in self.updates(job).items():
                if sent.get(topic) != value:
                    run.send(("update", topic, value))
                    sent[topic] = value
        except (OSError, ValueError):  # the child is going away
            pass
        except Exception:
            log.exception("job %d: updates for its process failed", job["id"])

    def _progress(self, job: dict, info: dict[str, Any]) -> None:
        """Record a progress report; a database hiccup only loses this one report."""
        try:
            self._record_progress(job, info)
        except sqlite3.Error as exc:
            log.warning("job %d: progress not recorded (%s)", job["id"], exc)

    def _record_progress(self, job: dict, info: dict[str, Any]) -> None:
        fields: dict[str, Any] = {}
        if info.get("done") is not None:
            fields["done"] = int(info["done"])
        if info.get("total"):
            fields["total"] = int(info["total"])
            fields["progress"] = min(1.0, fields.get("done", 0) / info["total"])
        if info.get("unit"):
            fields["unit"] = info["unit"]
        if info.get("message"):
            fields["message"] = info["message"]
        if job["kind"] == "train" and "loss_a" in info:
            fields["message"] = (f"iteration {info['iteration']}: loss A {info['loss_a']:.4f}, "
                                 f"B {info['loss_b']:.4f}")
            if info.get("event") == "save":
                self.store.record_loss(job["model"], info["iteration"], info["loss_a"],
                                       info["loss_b"])
            else:
                self.store.upsert_model(job["model"], iterations=info["iteration"],
                                        loss_a=info["loss_a"], loss_b=info["loss_b"],
                                        status="training")
        if fields:
            self.store.update(job["id"], **fields)

    def _finish(self, job: dict, outcome: tuple | None, exitcode: int | None, stopped: bool) -> None:
        job_id, kind = job["id"], job["kind"]
        verdict = outcome[0] if outcome else None
        if verdict == "done":
            self._durably(lambda: self._done(job, outcome[1]))
        elif verdict == "transient":
            self._durably(lambda: self._retry_later(job, outcome[1], counts=False))
        elif outcome is None and stopped and self.stopping.is_set():
            self._durably(lambda: self.store.transition(
                job_id, "queued", "interrupted by shutdown; will run again"))
            return
        elif outcome is None:  # killed by a signal (OOM killer), or died without a word
            how = (f"was killed by signal {-exitcode}" if exitcode is not None and exitcode < 0
                   else "was lost (its worker or node died)" if exitcode is None
                   else f"exited unexpectedly (exit code {exitcode})")
            self._durably(lambda: self._interrupted(job, f"the {kind} process {how}"))
        else:
            message, detail = outcome[1], outcome[2] if len(outcome) > 2 else ""
            log.error("job %d failed: %s", job_id, message)
            self._durably(lambda: self._fail(job, message, detail))
        if self.on_finished:
            try:
                self.on_finished(self.store.job(job_id), kind)
            except Exception:  # a follow-up never changes the outcome recorded above
                log.exception("job %d: the follow-up after it failed (its outcome stands)",
                              job_id)

    def _done(self, job: dict, result: dict[str, Any]) -> None:
        job_id, kind = job["id"], job["kind"]
        if kind == "train" and result.get("stopped_because") == "stop request":
            status = "queued" if self.stopping.is_set() else "paused"
            self.store.transition(job_id, status, f"paused at iteration "
                                                  f"{result['iterations']} (saved)", retries=0)
            self.store.upsert_model(job["model"], status="paused")
            return
        self.store.transition(job_id, "done", result.get("message", ""), progress=1.0,
                              output=result.get("output"), retries=0,
                              iterations=result.get("iterations"))
        if kind == "train":
            self.store.upsert_model(job["model"], status="stopped")
        log.info("job %d done: %s", job_id, result.get("message", ""))

    def _retry_later(self, job: dict, reason: str, counts: bool) -> None:
        """Keep the input where it is and run the job again after a back-off."""
        row = self.store.job(job["id"])
        retries = int(row.get("retries") or 0) + 1
        delay = backoff(self.config.limits.retry_seconds, retries)
        fields: dict[str, Any] = {"retries": retries, "retry_at": time.time() + delay}
        if counts:
            fields["interruptions"] = int(row.get("interruptions") or 0) + 1
        status = "paused" if job["kind"] == "train" else "queued"
        message = f"waiting: {reason}; trying again in {_seconds(delay)}"
        self.store.transition(job["id"], status, message, error=reason, **fields)
        if job["kind"] == "train":
            self.store.upsert_model(job["model"], status=f"paused: {reason}")
        log.warning("job %d: %s", job["id"], message)

    def _interrupted(self, job: dict, reason: str) -> None:
        """A child that died without a word: retried, unless it happened too often."""
        row = self.store.job(job["id"])
        count = int(row.get("interruptions") or 0) + 1
        if count >= self.config.limits.max_interruptions:
            self.store.update(job["id"], interruptions=count)
            self._fail(job, f"{reason}, {count} times (a crash loop, or out of memory?); "
                            "not run again")
        else:
            self._retry_later(job, reason, counts=True)

    def _fail(self, job: dict, message: str, detail: str = "", move: bool = True) -> None:
        """Record the failure; the input of a file or folder job goes to ``failed/``."""
        moved = None
        if move and BY_JOB[job["kind"]].moves_failed:
            try:
                moved = move_to_failed(self.config.root, job["kind"], Path(job["input"]),
                                       message, detail)
            except Exception as exc:  # e.g. the disk is full: the input stays where it is
                log.error("job %d: could not move its input to failed/ (%s)", job["id"], exc)
        self.store.transition(job["id"], "failed", message, error=message,
                              output=str(moved) if moved else None, retry_at=None)
        if job["kind"] == "train" and job.get("model"):
            self.store.upsert_model(job["model"], status="failed")


def _key(job: dict[str, Any]) -> str:
    """What names one attempt of a job where its stage runs: ``<id>-<attempt>``."""
    return f"{job['id']}-{job['attempts']}"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def _minute() -> int:
    t = time.localtime()
    return t.tm_hour * 60 + t.tm_min
