"""What each kind of job does: the wiring from hot folders to the engine's stage functions.

Each job runs in a child process (spawned, so a crash in native code cannot take the daemon
down). The child reports progress through a pipe and listens on it for a stop request, which
training honours at its next step by saving first.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

Report = Callable[[dict[str, Any]], None]


def extract_stage(p: dict[str, Any], report: Report, stop: threading.Event) -> dict[str, Any]:
    """inbox/<person>/<file> -> review/<person>/<stem>/ (faces sorted worst-first + report)."""
    from hotfolders.extract import extract
    from hotfolders.review import review_report
    from hotfolders.sort import sort_faces

    source = Path(p["input"])
    final = Path(p["root"]) / "review" / p["person"] / source.stem
    if final.exists():
        return {"output": str(final), "message": "already extracted"}
    work = final.with_name(f".{final.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    summary = extract(source, work, every_n=p["every_n"], size=p["size"], min_size=p["min_size"],
                      progress=lambda done, total: report({"done": done, "total": total,
                                                           "unit": "frames"}))
    report({"message": "sorting faces for review"})
    sort_faces(work, by="face")
    review_report(work)
    os.replace(work, final)  # the folder appears in review/ only when complete
    return {"output": str(final), "message": summary.describe()}


def clean_stage(p: dict[str, Any], report: Report, stop: threading.Event) -> dict[str, Any]:
    """approved/<person>/<source>/: prune the alignments to the kept faces, restore names."""
    from hotfolders.alignments import ALIGNMENTS_NAME
    from hotfolders.clean import clean

    folder = Path(p["input"])
    result = clean(folder, folder / ALIGNMENTS_NAME)
    return {"output": str(folder), "message": getattr(result, "describe", lambda: str(result))()}


def train_stage(p: dict[str, Any], report: Report, stop: threading.Event) -> dict[str, Any]:
    """models/<name>/: train on every approved source of persons a and b."""
    from hotfolders.training import train

    root = Path(p["root"])
    dirs = {side: sorted(d for d in (root / "approved" / p[side]).iterdir()
                         if d.is_dir() and not d.name.startswith("."))
            for side in ("a", "b")}
    last = [0.0]

    def callback(event: dict[str, Any]) -> None:
        now = time.monotonic()
        if event.get("event") == "save" or now - last[0] > 0.5:
            last[0] = now
            report({"done": event["iteration"], "total": p["iterations"], "unit": "iterations",
                    **event})

    result = train(dirs["a"], dirs["b"], p["model_dir"], trainer=p.get("trainer"),
                   batch_size=p["batch_size"], iterations=p["iterations"],
                   save_every=p["save_every"], snapshot_every=p["snapshot_every"],
                   keep_snapshots=p["keep_snapshots"], precision=p["precision"],
                   callback=callback, stop_event=stop)
    return {"output": str(p["model_dir"]), "iterations": result.iterations,
            "stopped_because": result.stopped_because,
            "message": f"{result.iterations} iterations, stopped: {result.stopped_because}"}


def convert_stage(p: dict[str, Any], report: Report, stop: threading.Event) -> dict[str, Any]:
    """targets/<model>/<video> -> output/<model>/<stem>_swapped.mp4 (+ provenance)."""
    from hotfolders.convert import convert

    source = Path(p["input"])
    out = Path(p["root"]) / "output" / p["model"] / f"{source.stem}_swapped.mp4"
    result = convert(source, p["model_dir"], out, color=p["color"], mask=p["mask"],
                     sharpen=p["sharpen"], label=p["label"],
                     progress=lambda done, total: report({"done": done, "total": total,
                                                          "unit": "frames"}))
    return {"output": str(result.output), "message": result.describe()}


STAGES = {"extract": extract_stage, "clean": clean_stage, "train": train_stage,
          "convert": convert_stage}


def _die_with_parent() -> None:
    """Ask Linux to kill this child if the daemon dies (even by kill -9)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def child_main(kind: str, params: dict[str, Any], conn, verbose: bool = False) -> None:
    """Entry point of a job's child process."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when to stop
    os.environ["FACEDROP_VERBOSE"] = "1" if verbose else "0"
    from hotfolders import quiet
    from hotfolders.errors import InputError

    quiet.silence(verbose)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format=f"%(levelname)s {kind}: %(message)s")
    stop = threading.Event()
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    def listen() -> None:
        try:
            while conn.recv() != "stop":
                pass
        except (EOFError, OSError):
            pass
        stop.set()

    threading.Thread(target=listen, name="stop-listener", daemon=True).start()
    try:
        result = STAGES[kind](params, lambda info: send(("progress", info)), stop)
        send(("done", result))
    except InputError as exc:
        send(("failed", str(exc), "bad input"))
    except Exception as exc:  # reported, not raised: the daemon records and carries on
        send(("failed", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
