"""Human formatting for the page (numbers, durations, ages, sizes); plain strings only, so
the template's autoescaping still applies to everything these return."""
from __future__ import annotations

import math
import time
from calendar import timegm
from typing import Any

from hotfolders import precision


def num(value: Any) -> str:
    if value is None or value == "":
        return "–"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {(s % 3600) // 60}m"


def _parse_iso(value: str) -> float | None:
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return float(timegm(time.strptime(value[:19] + ("Z" if pattern.endswith("Z") else ""),
                                              pattern)))
        except (ValueError, TypeError):
            continue
    return None


def ago(value: Any) -> str:
    """'3m 20s ago' for an ISO time or a Unix time ('' when unknown)."""
    if value in (None, ""):
        return ""
    ts = float(value) if isinstance(value, (int, float)) else _parse_iso(str(value))
    if ts is None:
        return str(value)
    delta = time.time() - ts
    if delta < 5:
        return "just now"
    return f"{duration(delta)} ago"


def clock(value: Any) -> str:
    """HH:MM:SS (UTC) of an ISO time, for the 'updated' indicator."""
    ts = _parse_iso(str(value)) if value else None
    return time.strftime("%H:%M:%S", time.gmtime(ts)) + " UTC" if ts else ""


def loss(value: Any) -> str:
    if value is None:
        return "–"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return "–"


def rate(value: Any) -> str:
    """A learning rate as people write it: 3e-4, 1.5e-4, 7.5e-5."""
    try:
        mantissa, exponent = f"{float(value):.2e}".split("e")
    except (TypeError, ValueError):
        return "–"
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def speed(value: Any) -> str:
    """Training images per second as the log and ``facedrop doctor`` write them."""
    try:
        return precision.speed(float(value))
    except (TypeError, ValueError):
        return "–"


def filesize(value: Any) -> str:
    try:
        size = float(value)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def jobline(job: dict[str, Any]) -> str:
    """'42.0% · 120 / 300 frames · 12.5 frames/s · ETA 14s' for a running job."""
    parts = []
    unit = job.get("unit") or ""
    if job.get("progress") is not None:
        parts.append(f"{job['progress'] * 100:.1f}%")
    if job.get("total"):
        parts.append(f"{num(job.get('done'))} / {num(job['total'])} {unit}".rstrip())
    elif job.get("done"):
        parts.append(f"{num(job['done'])} {unit}".rstrip())
    if job.get("rate"):
        parts.append(f"{job['rate']:.3g} {unit}/s")
    if job.get("eta_s") is not None:
        parts.append(f"ETA {duration(job['eta_s'])}")
    if job.get("elapsed_s"):
        parts.append(f"running {duration(job['elapsed_s'])}")
    return " · ".join(parts)
