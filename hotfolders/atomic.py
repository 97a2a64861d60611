"""Atomic file writes: whoever reads a file (a person, the status page, a restarted daemon)
sees the old content or the new, never half of it.

Data go to a hidden temp name beside the target (same file system, so the rename is atomic;
the pid in the name keeps two processes apart; ``.tmp`` at the end lets clean-ups find what a
kill left), then the temp file is renamed over the target. ``durable=True`` also fsyncs the
file before the rename and the folder after it, for state a power cut must not lose or
reorder (alignments, model state, manifests); bulk previews skip that cost.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(folder: str | Path) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: str | Path) -> Path:
    """The hidden temp name a write of ``path`` goes through."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically; returns ``path``."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str, *, durable: bool = True) -> Path:
    return write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | Path, data: Any, *, indent: int | None = 1,
               durable: bool = True) -> Path:
    return write_text(path, json.dumps(data, indent=indent) + "\n", durable=durable)


__all__ = ["fsync_dir", "temp_path", "write_bytes", "write_json", "write_text"]
