"""What each kind of job does: the wiring from hot folders to the engine's stage functions.

Each job runs in a child process (spawned, so a crash in native code cannot take the daemon
down). The child reports progress through a pipe and listens on it for a stop request, which
training honours at its next step by saving first.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hotfolders.digest import sha256_file

Report = Callable[[dict[str, Any]], None]


def _source_sha(folder: Path) -> str | None:
    """The sha256 of the video a face folder was extracted from (its alignments file says)."""
    from hotfolders.alignments import ALIGNMENTS_NAME, load
    from hotfolders.errors import InputError

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


def extract_stage(p: dict[str, Any], report: Report, stop: threading.Event) -> dict[str, Any]:
    """inbox/<person>/<file> -> review/<person>/<stem>/ (faces sorted worst-first + report)."""
    from hotfolders.extract import extract
    from hotfolders.review import review_report
    from hotfolders.sort import sort_faces

    source = Path(p["input"])
    sha = sha256_file(source) if source.is_file() else None  # the content as it is now
    final, done = review_folder(Path(p["root"]), p["person"], source.stem, sha)
    if done:
        return {"output": str(final), "message": "already extracted"}
    work = final.with_name(f".{final.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    summary = extract(source, work, every_n=p["every_n"], size=p["size"], min_size=p["min_size"],
                      sha256=sha,
                      progress=lambda done, total: report({"done": done, "total": total,
                                                           "unit": "frames"}))
    report({"message": "sorting faces for review"})
    sort_faces(work, by="face")
    review_report(work, name=final.name)
    os.replace(work, final)  # the folder appears in review/ only when complete
    return {"output": str(final), "message": summary.describe()}


def clean_stage(p: dict[str, Any], report: Report, stop: threading.Event) -> dict[str, Any]:
    """approved/<person>/<source>/: prune the alignments to the kept faces, restore names."""
    from hotfolders.alignments import ALIGNMENTS_NAME
    from hotfolders.clean import clean

    folder = Path(p["input"])
    result = clean(folder, folder / ALIGNMENTS_NAME)
    return {"output": str(folder), "message": result.describe()}


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


def output_path(root: Path, model: str, source: Path, sha: str | None) -> Path:
    """``output/<model>/<stem>_swapped.mp4``, or ``<stem>-2_swapped.mp4``... when that name
    already holds the swap of *other* content (its provenance manifest names the input's
    sha256). The swap of this very content is replaced: a restart after a kill -9 redoes it.
    """
    from hotfolders.provenance import manifest_path

    folder = root / "output" / model
    n = 1
    while True:
        stem = source.stem if n == 1 else f"{source.stem}-{n}"
        out = folder / f"{stem}_swapped.mp4"
        existing = [p for p in (out, out.with_suffix(".png")) if p.exists()]
        if not existing:
            return out
        try:
            manifest = json.loads(manifest_path(existing[0]).read_text())
            same = sha is not None and manifest["input"]["sha256"] == sha
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if same:
            return out
        n += 1


def convert_stage(p: dict[str, Any], report: Report, stop: threading.Event) -> dict[str, Any]:
    """targets/<model>/<video> -> output/<model>/<stem>_swapped.mp4 (+ provenance)."""
    from hotfolders.convert import convert

    source = Path(p["input"])
    sha = sha256_file(source) if source.is_file() else None
    out = output_path(Path(p["root"]), p["model"], source, sha)
    result = convert(source, p["model_dir"], out, color=p["color"], mask=p["mask"],
                     sharpen=p["sharpen"], face_select=p["face_select"], label=p["label"],
                     sha256=sha,
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
