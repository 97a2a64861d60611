"""What each kind of job does: the wiring from hot folders to the engine's stage functions.

Each job runs in a process of the worker's executor (:mod:`daemon.executor`; by default a
spawned child, so a crash in native code cannot take the daemon down). Whatever runs it,
:func:`run_stage` reports progress and the outcome, and :class:`Control` takes a stop request,
which training honours at its next step by saving first, and updates (the previews training
should render). Each stage takes one small frozen parameter object, made by the service from
the settings; nothing but those values crosses into the job's process.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotfolders.devices import select_gpus
from hotfolders.digest import sha256_file
from hotfolders.errors import InputError
from hotfolders.names import fit, printable
from hotfolders.safefs import check_inside, ensure_dir, is_inside, load_json

Report = Callable[[dict[str, Any]], None]
PROGRESS_INTERVAL = 0.25  # seconds between progress reports a child sends


@dataclass(frozen=True)
class ExtractParams:
    root: str
    input: str
    person: str
    every_n: int
    size: int
    min_size: int


@dataclass(frozen=True)
class CleanParams:
    root: str
    input: str


@dataclass(frozen=True)
class TrainParams:
    root: str
    model_dir: str
    a: str
    b: str
    train: dict[str, Any]      # the engine's keywords (daemon.settings.engine_kwargs)
    gpu: str = "auto"


@dataclass(frozen=True)
class MaskParams:
    root: str
    person: str
    steps: int                 # [train] mask_steps


@dataclass(frozen=True)
class ConvertParams:
    root: str
    input: str
    model: str
    model_dir: str
    convert: dict[str, Any]    # the engine's keywords (daemon.settings.engine_kwargs)
    gpu: str = "auto"


@dataclass
class Control:
    """What the daemon tells a running stage: stop (at the next safe point), and the latest
    value of each update topic (``previews``: the waiting targets training renders)."""

    stop: threading.Event = field(default_factory=threading.Event)
    latest: dict[str, Any] = field(default_factory=dict)

    def deliver(self, message: Any) -> bool:
        """Take one message from the daemon; False once it asked to stop."""
        if message == "stop":
            self.stop.set()
            return False
        if isinstance(message, tuple) and len(message) == 3 and message[0] == "update":
            self.latest[message[1]] = message[2]
        return True


def _source_sha(folder: Path) -> str | None:
    """The sha256 of the video a face folder was extracted from (its alignments file says)."""
    from hotfolders.alignments import ALIGNMENTS_NAME, load

    try:
        return load(folder / ALIGNMENTS_NAME).source.get("sha256")
    except (InputError, OSError, ValueError):  # missing or unreadable: not the same source
        return None


def review_folder(root: Path, person: str, stem: str, sha: str | None) -> tuple[Path, bool]:
    """Where the faces of one source go, and whether that source was extracted already.

    ``review/<person>/<stem>/`` unless that name (in review/ or approved/) holds the faces of
    *other* content — ``clip.mp4`` and ``clip.mov`` both dropped — then ``<stem>-2``, ``-3``...
    A folder holding this very content means a restart after the folder was finished.
    """
    n = 1
    while True:
        name = stem if n == 1 else f"{stem}-{n}"
        taken = [d for d in (root / "review" / person / name, root / "approved" / person / name)
                 if d.exists()]
        if not taken:
            return root / "review" / person / name, False
        if sha and any(_source_sha(d) == sha for d in taken):
            return taken[0], True
        n += 1


def extract_stage(p: ExtractParams, report: Report, control: Control) -> dict[str, Any]:
    """inbox/<person>/<file> -> review/<person>/<stem>/ (faces sorted worst-first + report)."""
    from hotfolders.extract import extract
    from hotfolders.review import review_report
    from hotfolders.sort import sort_faces

    report({"message": "reading the input"})
    source = Path(p.input)
    sha = sha256_file(source) if source.is_file() else None  # the content as it is now
    final, done = review_folder(Path(p.root), p.person, fit(source.stem), sha)
    if done:
        return {"output": str(final), "message": "already extracted"}
    ensure_dir(final.parent)  # never through a link out of the root
    work = final.with_name(f".{final.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    summary = extract(source, work, every_n=p.every_n, size=p.size, min_size=p.min_size,
                      sha256=sha,
                      progress=lambda done, total: report({"done": done, "total": total,
                                                           "unit": "frames"}))
    report({"message": "sorting faces for review"})
    sort_faces(work, by="face", progress=lambda done, total: report(
        {"message": f"sorting faces for review ({done}/{total})"}))
    review_report(work, name=final.name)
    os.replace(work, final)  # the folder appears in review/ only when complete
    return {"output": str(final), "message": summary.describe()}


def clean_stage(p: CleanParams, report: Report, control: Control) -> dict[str, Any]:
    """approved/<person>/<source>/: prune the alignments to the kept faces, restore names."""
    from hotfolders.alignments import ALIGNMENTS_NAME
    from hotfolders.clean import clean

    report({"message": "matching faces to their alignments"})
    folder = check_inside(Path(p.input))
    result = clean(folder, folder / ALIGNMENTS_NAME)
    return {"output": str(folder), "message": result.describe()}


def approved_sets(root: Path, person: str) -> list[Path]:
    """The approved face folders of ``person`` (links that lead out of the root skipped)."""
    folder = check_inside(root / "approved" / person)
    found = []
    for d in sorted(folder.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        if not is_inside(d):
            logging.getLogger(__name__).warning("%s leads outside the facedrop root; skipped",
                                                printable(d))
            continue
        found.append(d)
    return found


def train_stage(p: TrainParams, report: Report, control: Control) -> dict[str, Any]:
    """models/<name>/: train on every approved source of persons a and b; at each save, render
    the preview frames of the targets waiting for this model."""
    from hotfolders.training import train

    report({"message": "loading faces and building the model"})
    select_gpus(p.gpu)
    root = Path(p.root)
    check_inside(p.model_dir)
    last = [0.0]
    total = p.train.get("iterations")

    def callback(event: dict[str, Any]) -> None:
        now = time.monotonic()
        if event.get("event") == "save" or now - last[0] > 0.5:
            last[0] = now
            report({"done": event["iteration"], "total": total, "unit": "iterations", **event})

    def previews() -> list[tuple[Path, Path]]:
        """The waiting targets (the daemon's latest word), each checked to be a target of
        this model inside the root, and where its preview goes."""
        folder = root / "targets" / Path(p.model_dir).name
        return [(Path(src), Path(pic)) for src, pic in control.latest.get("previews", ())
                if Path(src).parent == folder and is_inside(src, root)
                and Path(pic).parent == Path(p.model_dir) / "previews"]

    result = train(approved_sets(root, p.a), approved_sets(root, p.b), p.model_dir,
                   callback=callback, stop_event=control.stop, previews=previews, **p.train)
    return {"output": str(p.model_dir), "iterations": result.iterations,
            "stopped_because": result.stopped_because,
            "message": f"{result.iterations} iterations, stopped: {result.stopped_because}"}


def output_path(root: Path, model: str, source: Path, sha: str | None) -> Path:
    """``output/<model>/<stem>_swapped.mp4``, or ``<stem>-2_swapped.mp4``... when that name
    already holds the swap of *other* content (its provenance manifest names the input's
    sha256). The swap of this very content is replaced: a restart after a kill -9 redoes it.
    """
    from hotfolders.provenance import manifest_path

    folder = root / "output" / model
    base = fit(source.stem)
    n = 1
    while True:
        stem = base if n == 1 else f"{base}-{n}"
        out = folder / f"{stem}_swapped.mp4"
        existing = [p for p in (out, out.with_suffix(".png")) if p.exists()]
        if not existing:
            return out
        try:
            manifest = load_json(manifest_path(existing[0]))
            same = sha is not None and manifest["input"]["sha256"] == sha
        except (InputError, OSError, KeyError, TypeError):
            same = False
        if same:
            return out
        n += 1


def convert_stage(p: ConvertParams, report: Report, control: Control) -> dict[str, Any]:
    """targets/<model>/<video> -> output/<model>/<stem>_swapped.mp4 (+ provenance)."""
    from hotfolders.convert import convert

    report({"message": "loading the model"})
    select_gpus(p.gpu)
    source = Path(p.input)
    sha = sha256_file(source) if source.is_file() else None
    out = output_path(Path(p.root), p.model, source, sha)
    ensure_dir(out.parent)
    result = convert(source, p.model_dir, out, sha256=sha, **p.convert,
                     progress=lambda done, total: report({"done": done, "total": total,
                                                          "unit": "frames"}))
    return {"output": str(result.output), "iterations": result.iterations,
            "message": result.describe()}


def mask_stage(p: MaskParams, report: Report, control: Control) -> dict[str, Any]:
    """approved/<person>/: train that person's occlusion network on all their approved sets;
    the weights go beside the sets."""
    from hotfolders.occlusion import WEIGHTS_NAME, train_occlusion

    report({"message": "loading faces for the occlusion mask"})
    root = Path(p.root)
    weights = check_inside(root / "approved" / p.person) / WEIGHTS_NAME
    result = train_occlusion(approved_sets(root, p.person), weights, steps=p.steps,
                             progress=lambda i, n, loss: report(
                                 {"done": i, "total": n, "unit": "steps",
                                  "message": f"occlusion mask: loss {loss:.3f}"}))
    return {"output": str(result.weights),
            "message": f"occlusion mask of {p.person}: {result.steps} steps in "
                       f"{result.seconds:.0f} s, loss {result.loss:.3f}"}


STAGES = {"extract": extract_stage, "clean": clean_stage, "train": train_stage,
          "mask": mask_stage, "convert": convert_stage}


def _die_with_parent() -> None:
    """Ask Linux to kill this child if the daemon dies (even by kill -9), and to pick this
    child before the daemon when memory runs out (the daemon then retries the job)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("500")
    except OSError:
        pass


def quiet_logging(kind: str, verbose: bool) -> None:
    """A job's process logs warnings (everything with ``--verbose``), TensorFlow and MediaPipe
    silenced, each line naming the kind of job."""
    os.environ["FACEDROP_VERBOSE"] = "1" if verbose else "0"
    from hotfolders import quiet

    from .logs import formatter

    quiet.silence(verbose)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(f"%(levelname)s {kind}: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler],
                        force=True)


OWN_LOGGERS = ("hotfolders", "daemon")  # whose records a stage hands to the daemon's log


class ForwardLog(logging.Handler):
    """Hands facedrop's own log records (INFO and up; everything with ``--verbose``) to the
    daemon as ``("log", level, logger, text)``, which writes them to its log with the job's
    number: what a stage chose and did (a training's precision, its convolutions, its
    saves) belongs in ``facedrop.log`` beside the rest of the service's story. Third-party
    output stays on the process's stderr, at warnings."""

    def __init__(self, send: Callable[[tuple], None], level: int) -> None:
        super().__init__(level)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self._send(("log", record.levelno, record.name, text))
        except Exception:  # the daemon is gone: nothing to tell
            self.handleError(record)


def _forward_own_logs(send: Callable[[tuple], None]) -> Callable[[], None]:
    """Route facedrop's loggers to the daemon instead of stderr; returns the undo."""
    from hotfolders.quiet import is_verbose

    handler = ForwardLog(send, logging.DEBUG if is_verbose() else logging.INFO)
    loggers = [logging.getLogger(name) for name in OWN_LOGGERS]
    before = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(handler.level)
        lg.propagate = False  # not a second time on stderr: the daemon logs it there too

    def undo() -> None:
        for lg, (level, propagate) in zip(loggers, before):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate

    return undo


def run_stage(kind: str, params: Any, send: Callable[[tuple], None], control: Control) -> None:
    """Run one job's stage and report through ``send``: its log records (:class:`ForwardLog`),
    progress (a few reports a second at most), then the outcome (``done``, ``failed`` or
    ``transient``). Every executor runs stages through this, so a stage behaves the same
    wherever it runs."""
    undo_logs = _forward_own_logs(send)
    try:
        _run_stage(kind, params, send, control)
    finally:
        undo_logs()


def _run_stage(kind: str, params: Any, send: Callable[[tuple], None], control: Control) -> None:
    from hotfolders.safefs import confine

    from .faults import transient_reason

    confine(params.root)  # whatever the input says, nothing outside the root is touched
    last = [0.0]

    def progress(info: dict[str, Any]) -> None:
        """At most a few reports a second reach the daemon (events such as saves always)."""
        now = time.monotonic()
        if info.get("event") or now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            send(("progress", info))

    progress({"message": f"starting {kind}"})
    try:
        result = STAGES[kind](params, progress, control)
        send(("done", result))
    except Exception as exc:  # reported, not raised: the daemon records and carries on
        reason = transient_reason(exc)
        if reason is not None:  # the machine's fault, not the input's: retried later
            send(("transient", reason, traceback.format_exc()))
        elif isinstance(exc, InputError):
            send(("failed", str(exc), "bad input"))
        else:
            send(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def child_main(kind: str, params: Any, conn, verbose: bool = False) -> None:
    """Entry point of a job's child process (the local executor): messages go through a pipe."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when to stop
    quiet_logging(kind, verbose)
    control = Control()
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    def listen() -> None:
        try:
            while control.deliver(conn.recv()):
                pass
        except (EOFError, OSError):
            pass
        control.stop.set()

    threading.Thread(target=listen, name="stop-listener", daemon=True).start()
    run_stage(kind, params, send, control)
