"""Server-side SVG loss chart for a model's ``loss.csv``: no JavaScript library, no CDN.

The page must work offline and under a strict Content-Security-Policy, so the chart is a
small hand-written SVG: one faint line of the raw loss per side (bucket-averaged when there
are many rows) and one bold exponentially smoothed trend line, the same view faceswap's
graph gives its users to decide when the gain has become small. The y axis switches to a
log scale when the losses span more than a factor of four (early iterations would otherwise
flatten the part people look at).
"""
from __future__ import annotations

import csv
import math
import os
import re
import threading
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

COLOURS = {"a": "#2563eb", "b": "#ea580c"}
ITERATION_NAMES = ("iteration", "iterations", "iter", "step", "steps")
SIDE_PATTERNS = {
    "a": re.compile(r"^(loss[_ -]?a|a[_ -]?loss|face[_ -]?a|a)$", re.I),
    "b": re.compile(r"^(loss[_ -]?b|b[_ -]?loss|face[_ -]?b|b)$", re.I),
}


@dataclass
class LossLog:
    """Loss history of one model: iterations and the loss of each side (A and B)."""

    iterations: list[int] = field(default_factory=list)
    sides: dict[str, list[float]] = field(default_factory=lambda: {"a": [], "b": []})

    def __len__(self) -> int:
        return len(self.iterations)

    def last(self) -> dict[str, float | None]:
        """The latest finite loss of each side (None when there is none)."""
        out: dict[str, float | None] = {}
        for side, values in self.sides.items():
            out[side] = next((v for v in reversed(values) if math.isfinite(v)), None)
        return out


def _columns(header: list[str]) -> tuple[int, dict[str, int]]:
    """Find the iteration and per-side loss columns of a header (tolerant of naming)."""
    names = [h.strip().lower() for h in header]
    it = next((i for i, n in enumerate(names) if n in ITERATION_NAMES), 0)
    sides: dict[str, int] = {}
    for side, pattern in SIDE_PATTERNS.items():
        hit = next((i for i, n in enumerate(names) if pattern.match(n)), None)
        if hit is not None:
            sides[side] = hit
    rest = [i for i in range(len(names)) if i != it and i not in sides.values()
            and "time" not in names[i]]
    for side in ("a", "b"):
        if side not in sides and rest:
            sides[side] = rest.pop(0)
    return it, sides


class LossParser:
    """``loss.csv`` parsed as it grows: :meth:`feed` takes complete lines, in order."""

    def __init__(self) -> None:
        self.log = LossLog()
        self._columns: tuple[int, dict[str, int]] | None = None

    def feed(self, text: str) -> "LossParser":
        for row in csv.reader(text.splitlines()):
            if not row:
                continue
            if self._columns is None:  # the first row: a header, or already data
                try:
                    [float(x) for x in row if x.strip()]
                    self._columns = (0, {"a": 1, "b": 2})
                except ValueError:
                    self._columns = _columns(row)
                    continue
            it_col, side_cols = self._columns
            try:
                iteration = int(float(row[it_col]))
                values = {side: float(row[col]) if col < len(row) and row[col].strip()
                          else math.nan for side, col in side_cols.items()}
            except (ValueError, IndexError, OverflowError):
                continue
            self.log.iterations.append(iteration)
            for side in ("a", "b"):
                self.log.sides[side].append(values.get(side, math.nan))
        return self


def parse_loss_csv(text: str) -> LossLog:
    """Parse ``loss.csv`` text; a header row is optional, malformed rows are skipped."""
    return LossParser().feed(text).log


LOSS_LIMIT = 256 << 20   # a loss.csv larger than this (some 6 million rows) is not charted
READ_STEP = 8 << 20      # bytes read per request: a huge file costs a few requests, not one


class LossCache:
    """Parsed ``loss.csv`` files keyed by path, read incrementally as training appends.

    Training appends a row per iteration and the page asks for the latest loss on every
    poll: only the bytes added since the last read are parsed (complete lines only; at most
    :data:`READ_STEP` per call). A file that shrank or was replaced is read from the start.
    The file is opened as a regular file with a size cap (a FIFO named ``loss.csv`` is
    refused, not waited on).
    """

    def __init__(self, limit: int = 64) -> None:
        self._lock = threading.Lock()
        self._items: dict[Path, tuple[int, int, LossParser]] = {}  # inode, offset, parser
        self._limit = limit

    def get(self, path: Path) -> LossLog | None:
        from hotfolders import safefs
        from hotfolders.errors import InputError

        with self._lock:
            try:
                with safefs.open_regular(path, LOSS_LIMIT) as fh:
                    st = os.fstat(fh.fileno())
                    inode, offset, parser = self._items.get(path, (st.st_ino, 0, None))
                    if parser is None or inode != st.st_ino or st.st_size < offset:
                        inode, offset, parser = st.st_ino, 0, LossParser()
                    if st.st_size > offset:
                        fh.seek(offset)
                        data = fh.read(READ_STEP)
                        complete = data[:data.rfind(b"\n") + 1]
                        parser.feed(complete.decode("utf-8", errors="replace"))
                        offset += len(complete)
            except (InputError, OSError):
                self._items.pop(path, None)
                return None
            if path not in self._items and len(self._items) >= self._limit:
                self._items.pop(next(iter(self._items)))
            self._items[path] = (inode, offset, parser)
            return parser.log


def _bucket(xs: list[int], ys: list[float], buckets: int) -> tuple[list[float], list[float]]:
    """Average (x, y) into at most ``buckets`` groups of consecutive points, skipping NaN."""
    pts = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if len(pts) <= buckets:
        return [float(x) for x, _ in pts], [y for _, y in pts]
    size = len(pts) / buckets
    bx, by = [], []
    for b in range(buckets):
        chunk = pts[int(b * size):int((b + 1) * size)] or pts[int(b * size):int(b * size) + 1]
        bx.append(sum(p[0] for p in chunk) / len(chunk))
        by.append(sum(p[1] for p in chunk) / len(chunk))
    return bx, by


def _smooth(ys: list[float]) -> list[float]:
    """Centred moving average over about 5% of the plotted points: a trend without lag."""
    n = len(ys)
    half = max(1, int(n * 0.025))
    prefix = [0.0]
    for y in ys:
        prefix.append(prefix[-1] + y)
    out = []
    for i in range(n):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        out.append((prefix[hi] - prefix[lo]) / (hi - lo))
    return out


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:.3g}"


def loss_svg(log: LossLog | None, title: str = "", width: int = 640, height: int = 240,
             max_points: int = 400) -> str:
    """An SVG document with the loss curves of both sides (or a 'no data yet' panel)."""
    pad_l, pad_r, pad_t, pad_b = 52, 14, 26, 30
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(("loss of " + title) if title else "loss")}" '
            f'font-family="system-ui, sans-serif" font-size="11">'
            f'<title>{escape(("loss: " + title) if title else "loss")}</title>'
            f'<rect width="{width}" height="{height}" rx="6" fill="#ffffff"/>')
    series = {}
    if log is not None and len(log):
        for side in ("a", "b"):
            xs, ys = _bucket(log.iterations, log.sides[side], max_points)
            if xs:
                series[side] = (xs, ys, _smooth(ys))
    if not series:
        return (head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                f'fill="#64748b">no loss recorded yet</text></svg>')
    all_x = [x for xs, _, _ in series.values() for x in xs]
    all_y = sorted(y for _, ys, _ in series.values() for y in ys)
    x0, x1 = min(all_x), max(all_x)
    if x1 <= x0:
        x1 = x0 + 1
    # robust range: ignore the top 1% (the first few iterations) so the tail stays readable
    y_lo = all_y[0]
    y_hi = all_y[min(len(all_y) - 1, int(len(all_y) * 0.99))]
    if y_hi <= y_lo:
        y_hi = y_lo + (abs(y_lo) * 0.1 or 1.0)
    use_log = y_lo > 0 and y_hi / y_lo > 4
    if use_log:
        margin = (math.log10(y_hi) - math.log10(y_lo)) * 0.06
        f_lo, f_hi = math.log10(y_lo) - margin, math.log10(y_hi) + margin
        fy = (lambda y: math.log10(max(y, 1e-12)))
    else:
        margin = (y_hi - y_lo) * 0.08
        f_lo, f_hi = y_lo - margin, y_hi + margin
        fy = (lambda y: y)

    def px(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * w

    def py(y: float) -> float:
        v = (fy(y) - f_lo) / (f_hi - f_lo)
        return pad_t + (1 - min(max(v, -0.02), 1.02)) * h

    parts = [head]
    if use_log:
        for steps in ((1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
            ticks = [round(10 ** e * m, 12) for e in range(math.floor(f_lo), math.ceil(f_hi) + 1)
                     for m in steps if f_lo <= math.log10(10 ** e * m) <= f_hi]
            if len(ticks) >= 4:
                break
        if len(ticks) < 2:
            ticks = [y_lo, y_hi]
    else:
        ticks = _nice_ticks(f_lo, f_hi)
    for t in ticks:
        y = py(t)
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e2e8f0"/><text x="{pad_l - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end" fill="#64748b">{_fmt(t)}</text>')
    for t in _nice_ticks(x0, x1, 6):
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad_t}" y2="{pad_t + h}" '
                     f'stroke="#f1f5f9"/><text x="{x:.1f}" y="{pad_t + h + 16}" '
                     f'text-anchor="middle" fill="#64748b">{_fmt(t)}</text>')
    parts.append(f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" '
                 f'stroke="#cbd5e1"/>')
    for side, (xs, ys, sm) in series.items():
        colour = COLOURS[side]
        raw = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
        trend = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, sm))
        parts.append(f'<polyline class="raw side-{side}" points="{raw}" fill="none" '
                     f'stroke="{colour}" stroke-opacity="0.25" stroke-width="1"/>')
        parts.append(f'<polyline class="trend side-{side}" points="{trend}" fill="none" '
                     f'stroke="{colour}" stroke-width="2" stroke-linejoin="round"/>')
    legend_x = pad_l + 4
    for side, (_, _, sm) in series.items():
        label = f"{side.upper()}  {sm[-1]:.4g}"
        parts.append(f'<rect x="{legend_x}" y="8" width="10" height="10" rx="2" '
                     f'fill="{COLOURS[side]}"/><text x="{legend_x + 14}" y="17" '
                     f'fill="#334155">{escape(label)}</text>')
        legend_x += 96
    scale = "log scale" if use_log else "linear"
    parts.append(f'<text x="{pad_l + w}" y="17" text-anchor="end" fill="#94a3b8">'
                 f'loss ({scale}) by iteration</text>')
    parts.append("</svg>")
    return "".join(parts)
