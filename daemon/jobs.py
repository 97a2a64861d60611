"""The job queue's one worker: heavy jobs run one at a time, in priority order.

Extraction and cleaning come first, then conversion, then training. Training is preemptible:
when other work waits (or its window closes, or the daemon stops) the worker asks the child to
stop; training saves at its next step and the job is paused, to resume later from that save.
A job whose input is bad, or whose child crashes, is marked failed and its input moved to
``failed/<stage>/`` with an ``.error.txt``; the worker carries on with the next job.
"""
from __future__ import annotations

import logging
import multiprocessing
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Config, window_open
from .store import Store

log = logging.getLogger(__name__)

ADVICE = {
    "extract": "Check that the file plays and shows a face, then drop it into inbox/<person>/ again.",
    "clean": "Check the folder holds the faces of one extraction and its alignments.json.gz, "
             "then move it into approved/<person>/ again.",
    "convert": "Check that the video plays and that its model has trained, then drop it into "
               "targets/<model>/ again.",
    "train": "Check the approved faces of both people and the model.toml, then restart the daemon.",
}


def move_to_failed(root: Path, stage: str, path: Path, message: str, detail: str = "") -> Path | None:
    """Move a failed input to ``failed/<stage>/`` and write ``<name>.error.txt`` beside it."""
    if not path.exists():
        return None
    folder = root / "failed" / stage
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    shutil.move(str(path), str(target))
    text = (f"what:  {stage} of {path.name} failed\n"
            f"why:   {message}\n"
            f"when:  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
            f"from:  {path}\n"
            f"to do: {ADVICE.get(stage, 'See the message above.')}\n")
    if detail and detail != "bad input":
        text += f"\ndetails:\n{detail}\n"
    (folder / f"{target.name}.error.txt").write_text(text)
    return target


class Worker:
    """Runs queued jobs one at a time in child processes."""

    def __init__(self, config: Config, store: Store, params: Callable[[dict], dict[str, Any] | None],
                 verbose: bool = False) -> None:
        self.config = config
        self.store = store
        self.params = params          # job row -> stage parameters, or None if not runnable yet
        self.verbose = verbose
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.paused_reason = ""
        self.on_finished: Callable[[dict, str], None] | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._thread = threading.Thread(target=self._loop, name="worker", daemon=True)
        self.last_tick = time.monotonic()  # liveness, for the systemd watchdog

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.wake.set()
        self._thread.join(timeout)

    # -- choosing ---------------------------------------------------------------------------
    def _runnable(self, job: dict) -> dict[str, Any] | None:
        if job["kind"] == "train" and not window_open(self.config.train.window, _minute()):
            return None
        return self.params(job)

    def _pick(self) -> tuple[dict, dict[str, Any]] | None:
        if self.paused_reason:
            return None
        for job in self.store.next_job(set()):
            try:
                params = self._runnable(job)
            except Exception as exc:  # e.g. its model vanished: fail this job, not the worker
                log.exception("job %s cannot run", job["id"])
                self.store.transition(job["id"], "failed", f"cannot run: {exc}", error=str(exc))
                continue
            if params is not None:
                return job, params
        return None

    def _should_yield(self, job: dict) -> bool:
        """A running training job yields to waiting work and to a closing window."""
        if job["kind"] != "train":
            return False
        if not window_open(self.config.train.window, _minute()) or self.paused_reason:
            return True
        try:
            return any(other["kind"] != "train" and self._runnable(other) is not None
                       for other in self.store.next_job({job["id"]}))
        except Exception:  # _pick will fail the broken job; training need not stop for it
            return False

    # -- running ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.last_tick = time.monotonic()
            picked = self._pick()
            if picked is None:
                self.wake.wait(2.0)
                self.wake.clear()
                continue
            job, params = picked
            try:
                self._run(job, params)
            except Exception:  # never let the worker thread die
                log.exception("job %s crashed the worker", job["id"])
                self.store.transition(job["id"], "failed", "internal error (see the log)")

    def _run(self, job: dict, params: dict[str, Any]) -> None:
        from .stages import child_main

        job_id = job["id"]
        name = Path(job["input"]).name
        self.store.transition(job_id, "running", f"{job['kind']} {name}",
                              attempts=job["attempts"] + 1, progress=None)
        log.info("job %d: %s %s", job_id, job["kind"], name)
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=child_main, args=(job["kind"], params, child, self.verbose),
                                 name=f"facedrop-{job['kind']}", daemon=True)
        proc.start()
        child.close()
        outcome: tuple | None = None
        stop_sent = False
        last_yield_check = 0.0
        while True:
            self.last_tick = time.monotonic()
            if parent.poll(0.2):
                try:
                    message = parent.recv()
                except (EOFError, OSError):
                    message = None
                if message is None:
                    pass
                elif message[0] == "progress":
                    self._progress(job, message[1])
                    continue
                else:
                    outcome = message
            if outcome is not None or not proc.is_alive():
                break
            now = time.monotonic()
            if not stop_sent and (self.stopping.is_set() or
                                  (now - last_yield_check > 1.0 and self._should_yield(job))):
                last_yield_check = now
                if job["kind"] == "train":
                    parent.send("stop")  # saves at the next step, then returns
                    stop_sent = True
                elif self.stopping.is_set():
                    proc.terminate()  # extraction/conversion restart cleanly from temp names
                    stop_sent = True
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
        self._finish(job, outcome, proc.exitcode, stop_sent)

    def _progress(self, job: dict, info: dict[str, Any]) -> None:
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
        if outcome is not None and outcome[0] == "done":
            result = outcome[1]
            if kind == "train" and result.get("stopped_because") == "stop request":
                status = "queued" if self.stopping.is_set() else "paused"
                self.store.transition(job_id, status, f"paused at iteration "
                                                      f"{result['iterations']} (saved)")
                self.store.upsert_model(job["model"], status="paused")
                return
            self.store.transition(job_id, "done", result.get("message", ""), progress=1.0,
                                  output=result.get("output"))
            if kind == "train":
                self.store.upsert_model(job["model"], status="trained")
            log.info("job %d done: %s", job_id, result.get("message", ""))
        elif outcome is None and stopped and self.stopping.is_set():
            self.store.transition(job_id, "queued", "interrupted by shutdown; will run again")
            return
        else:
            if outcome is None:
                message, detail = f"the {kind} process crashed (exit code {exitcode})", ""
            else:
                message, detail = outcome[1], outcome[2]
            log.error("job %d failed: %s", job_id, message)
            moved = None
            if kind in ("extract", "clean", "convert"):
                moved = move_to_failed(self.config.root, kind, Path(job["input"]), message, detail)
            self.store.transition(job_id, "failed", message, error=message,
                                  output=str(moved) if moved else None)
            if kind == "train":
                self.store.upsert_model(job["model"], status="failed")
        if self.on_finished:
            self.on_finished(self.store.job(job_id), kind)


def _minute() -> int:
    t = time.localtime()
    return t.tm_hour * 60 + t.tm_min
