"""What the hot folders hold, read straight from the file system (never written).

People (``review/`` and ``approved/``), models (``models/<name>/``), outputs (``output/``) and
failures (``failed/<stage>/*.error.txt``) exist as files whether or not the daemon has run,
so this half of the status needs no database. Every listing is bounded (a person with 5 000
faces costs one ``stat`` per source folder while it is unchanged, one ``scandir`` when it
changed, never 5 000 ``stat`` calls) and tolerant: a folder that vanishes mid-listing or a
malformed JSON file is skipped, never fatal.
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from hotfolders import safefs
from hotfolders.errors import InputError
from hotfolders.model import ModelFolder
from hotfolders.precision import label

log = logging.getLogger(__name__)

FACE_SUFFIX = ".png"
MAX_PEOPLE = 100
MAX_THUMBS = 8
MAX_FLAGGED = 8
MAX_OUTPUTS = 50
MAX_FAILURES = 30
MAX_TIMELAPSE = 200
ERROR_SUFFIX = ".error.txt"
OUTPUT_SUFFIXES = ("_swapped.mp4", "_swapped.png")  # a video target, a photo target
MANIFEST_SUFFIX = ".provenance.json"
REVIEW_JSON, REVIEW_IMAGE = "review.json", "review.jpg"
COVERAGE_RE = re.compile(r"^coverage[\w.-]*\.(png|jpe?g)$", re.I)


# A folder's listing is read again only when the folder changed: adding, removing or renaming
# an entry changes the folder's mtime. File-system clocks tick coarsely, so a listing is only
# trusted if the folder had already been unchanged for STABLE_NS when it was read (a change
# within the same tick as that read would not show in the mtime); busy folders are re-read.
STABLE_NS = 1_000_000_000
MAX_CACHED_FOLDERS = 4096


class Listing:
    """The names in one folder, sorted, and (computed once per listing) selections of them."""

    def __init__(self, files: list[str], dirs: list[str], stamp: tuple[int, int, int]) -> None:
        self.files, self.dirs = tuple(sorted(files)), tuple(sorted(dirs))
        self.stamp = stamp  # mtime_ns, inode, when read (ns)
        self._picked: dict[str, tuple[str, ...]] = {}

    def ending(self, suffix: str) -> tuple[str, ...]:
        """The files whose name ends with ``suffix`` (any case)."""
        if suffix not in self._picked:
            self._picked[suffix] = tuple(n for n in self.files if n.lower().endswith(suffix))
        return self._picked[suffix]

    def matching(self, pattern: re.Pattern) -> tuple[str, ...]:
        """The files whose name matches ``pattern``."""
        key = f"re:{pattern.pattern}"
        if key not in self._picked:
            self._picked[key] = tuple(n for n in self.files if pattern.match(n))
        return self._picked[key]


EMPTY = Listing([], [], (0, 0, 0))
_listings: dict[str, Listing] = {}
_listings_lock = threading.Lock()


def _entries(folder: Path) -> Listing:
    """The files and folders in ``folder`` without dot-names or symlinks (a link could point
    anywhere; the file routes refuse targets outside the root anyway)."""
    key = os.fspath(folder)
    try:
        st = os.stat(key)
    except OSError:
        return EMPTY
    hit = _listings.get(key)
    if (hit is not None and hit.stamp[:2] == (st.st_mtime_ns, st.st_ino)
            and hit.stamp[2] - st.st_mtime_ns >= STABLE_NS):
        return hit
    read_at = time.time_ns()
    files: list[str] = []
    dirs: list[str] = []
    try:
        with os.scandir(key) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    if e.is_file(follow_symlinks=False):
                        files.append(e.name)
                    elif e.is_dir(follow_symlinks=False):
                        dirs.append(e.name)
                except OSError:
                    continue
    except OSError:
        return EMPTY
    listing = Listing(files, dirs, (st.st_mtime_ns, st.st_ino, read_at))
    with _listings_lock:
        if len(_listings) >= MAX_CACHED_FOLDERS:
            _listings.clear()
        _listings[key] = listing
    return listing


def _coverage_images(folder: Path) -> list[str]:
    """The pose-coverage pictures in ``folder`` (``coverage*.png``, ``.jpg``)."""
    return list(_entries(folder).matching(COVERAGE_RE))


def visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders a person made (not ``@eaDir``, ``__MACOSX`` or other litter), by name."""
    return [folder / name for name in _entries(folder).dirs if not name.startswith(("@", "__"))]


def _files(folder: Path, suffix: str | None = None) -> tuple[str, ...]:
    """Names of the visible files in ``folder`` (ending in ``suffix``), sorted."""
    listing = _entries(folder)
    return listing.files if suffix is None else listing.ending(suffix)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_json(path: Path, limit: int = safefs.JSON_LIMIT) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when missing, not a regular file (a FIFO would
    block the page forever), too large or malformed."""
    try:
        data = safefs.load_json(path, limit)
    except (InputError, OSError):
        return None
    return data if isinstance(data, dict) else None


def iso(ts: float | None) -> str | None:
    """UTC ISO-8601 for a Unix time (what the JSON API gives)."""
    if not ts:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def rel(root: Path, path: Path | str) -> str:
    """``path`` relative to ``root``, with forward slashes (what the page's URLs use)."""
    p, r = os.fspath(path), os.fspath(root)
    if p.startswith(r + os.sep):  # the common case, without pathlib's parsing
        return p[len(r) + 1:].replace(os.sep, "/")
    return Path(path).relative_to(root).as_posix()


# --- people -----------------------------------------------------------------------------

def _source_folder(root: Path, folder: Path, with_report: bool) -> dict[str, Any]:
    faces = _files(folder, FACE_SUFFIX)
    info: dict[str, Any] = {"name": folder.name, "path": rel(root, folder), "faces": len(faces),
                            "sample": faces[:MAX_THUMBS], "report": None, "coverage": []}
    if with_report:
        info["report"] = review_report(root, folder, set(faces))
    info["coverage"] = [rel(root, folder / name) for name in _coverage_images(folder)]
    return info


def review_report(root: Path, folder: Path, present: set[str]) -> dict[str, Any] | None:
    """The flagged faces of ``review.json`` (written by the review stage) still present."""
    data = _read_json(folder / REVIEW_JSON)
    if data is None:
        return None
    items = data.get("items") if isinstance(data.get("items"), list) else []
    flagged = []
    for item in items:
        if not isinstance(item, dict) or not item.get("reasons"):
            continue
        name = str(item.get("name", ""))
        if name not in present or "/" in name:
            continue  # deleted by the person since the report was written
        flagged.append({"name": name, "path": rel(root, folder / name),
                        "reasons": [str(r) for r in item.get("reasons", [])][:6],
                        "notes": [str(n) for n in item.get("notes", [])][:6]})
    counts = data.get("counts") if isinstance(data.get("counts"), dict) else {}
    sheet = folder / REVIEW_IMAGE
    return {
        "faces": int(data.get("faces", 0) or 0),
        "flagged": int(data.get("flagged", len(flagged)) or 0),
        "flagged_present": len(flagged),
        "counts": {str(k): int(v) for k, v in counts.items() if isinstance(v, int) and v},
        "created": data.get("created"),
        "items": flagged[:MAX_FLAGGED],
        "sheet": rel(root, sheet) if sheet.is_file() else None,
        "json": rel(root, folder / REVIEW_JSON),
    }


def people(root: Path) -> list[dict[str, Any]]:
    """Per person: face sets waiting in ``review/`` and approved in ``approved/``."""
    found: dict[str, dict[str, Any]] = {}
    for area in ("approved", "review"):
        for person in visible_dirs(root / area)[:MAX_PEOPLE]:
            entry = found.setdefault(person.name, {
                "name": person.name, "approved_faces": 0, "review_faces": 0,
                "approved": [], "review": [], "coverage": []})
            person_dir = person
            entry["coverage"] += [rel(root, person_dir / name)
                                  for name in _coverage_images(person_dir)]
            for source in visible_dirs(person_dir):
                info = _source_folder(root, source, with_report=area == "review")
                entry[area].append(info)
                entry[f"{area}_faces"] += info["faces"]
                entry["coverage"] += info["coverage"]
            # photos or faces dropped directly into the person folder count too
            loose = [name for name in _files(person_dir, FACE_SUFFIX)
                     if not COVERAGE_RE.match(name)]
            if loose:
                entry[area].append({"name": ".", "path": rel(root, person_dir),
                                    "faces": len(loose), "sample": loose[:MAX_THUMBS],
                                    "report": None, "coverage": []})
                entry[f"{area}_faces"] += len(loose)
    out = []
    for entry in sorted(found.values(), key=lambda e: e["name"].lower()):
        thumbs = []
        for area in ("approved", "review"):
            for src in entry[area]:
                base = src["path"]
                thumbs += [f"{base}/{name}" for name in src["sample"]]
        entry["thumbnails"] = thumbs[:MAX_THUMBS]
        entry["flagged"] = [item for src in entry["review"] if src["report"]
                            for item in src["report"]["items"]][:MAX_FLAGGED]
        out.append(entry)
    return out


# --- models -----------------------------------------------------------------------------

def _numbered(folder: Path, suffix: str | None) -> list[tuple[int, str]]:
    """Names ``<iterations>`` (folders) or ``<iterations><suffix>`` (files), by number."""
    listing = _entries(folder)
    out = []
    for name in (listing.dirs if suffix is None else listing.ending(suffix)):
        stem = name if suffix is None else name[: -len(suffix)]
        if stem.isdigit():
            out.append((int(stem), name))
    return sorted(out)


def models(root: Path) -> list[dict[str, Any]]:
    """Per model folder: trainer, iterations, timelapse frames, snapshots and pose coverage,
    as the engine's :class:`~hotfolders.model.ModelFolder` lays them out. Its pair, state and
    settings come from the daemon's store (it reads ``model.toml``; the page does not)."""
    out = []
    for path in visible_dirs(root / "models"):
        folder = ModelFolder(path)
        state = _read_json(folder / folder.STATE) or {}
        iterations = state.get("iterations")
        snapshots = [{"iterations": n, "name": name,
                      "modified": iso(_mtime(folder.snapshots / name))}
                     for n, name in _numbered(folder.snapshots, None)]
        timelapse = [{"iterations": n, "path": rel(root, folder.timelapse / name)}
                     for n, name in _numbered(folder.timelapse, ".jpg")[-MAX_TIMELAPSE:]]
        cov_json = _read_json(folder / folder.COVERAGE_JSON)
        out.append({
            "name": folder.name,
            "trainer": str(state["trainer"]) if isinstance(state.get("trainer"), str) else None,
            "iterations": int(iterations) if isinstance(iterations, (int, float)) else None,
            "saved_loss": _pair(state.get("last_loss")),
            "precision": _precision(state),
            "threads": _threads(state),
            "learning_rate": _number(state.get("learning_rate")),
            "diverged": _divergences(state.get("diverged")),
            "warp_off_from": _iteration(state.get("warp_off_from")),
            "saved": iso(_mtime(folder / folder.STATE)) if state else None,
            "has_loss": folder.loss_log.is_file(),
            "timelapse": timelapse,
            "snapshots": snapshots[::-1],
            "coverage": [rel(root, folder / name) for name in _coverage_images(folder.path)],
            "coverage_fraction": (cov_json or {}).get("fraction_covered"),
            "coverage_missing": [str(r.get("kind", "")) for r in (cov_json or {}).get(
                "missing_regions", []) if isinstance(r, dict)][:20],
        })
    return out


def _precision(state: dict[str, Any]) -> dict[str, Any] | None:
    """The precision a model trains in and, when ``auto`` chose it, what was measured:
    ``{"policy": "bfloat16", "setting": "auto", "images_per_second": {"float32": 143.0, ...}}``."""
    policy = state.get("precision")
    if not isinstance(policy, str):
        return None
    setting = state.get("precision_setting")
    return {"policy": label(policy),
            "setting": setting if isinstance(setting, str) else None,
            "images_per_second": _measured(state.get("precision_choice"), label)
            if setting == "auto" else {}}


def _threads(state: dict[str, Any]) -> dict[str, Any] | None:
    """TensorFlow's thread layout a model trains in and, when ``auto`` chose it, what was
    measured: ``{"layout": "per-op", "setting": "auto", "images_per_second": {"shared": ...}}``
    (None where training left TensorFlow's default, unchosen)."""
    layout = state.get("threads")
    if not isinstance(layout, str):
        return None
    setting = state.get("threads_setting")
    return {"layout": layout, "setting": setting if isinstance(setting, str) else None,
            "images_per_second": _measured(state.get("threads_choice"))
            if setting == "auto" else {}}


def _measured(choice: Any, name: Callable[[str], str] = str) -> dict[str, float]:
    """The images per second an ``auto`` choice recorded, by candidate (numbers only)."""
    rates = choice.get("images_per_second") if isinstance(choice, dict) else None
    if not isinstance(rates, dict):
        return {}
    return {name(str(k)): float(v) for k, v in rates.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _number(value: Any) -> float | None:
    """A finite JSON number as float, anything else (bool, NaN, a string) as None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _iteration(value: Any) -> int | None:
    """An iteration count from state.json: a finite number >= 0, else None."""
    number = _number(value)
    return int(number) if number is not None and number >= 0 else None


def _divergences(value: Any, keep: int = 10) -> list[dict[str, Any]]:
    """The times the loss blew up and training went back to a save at a lower rate (the
    trainer's ``diverged`` list), newest last: only numbers and a time, checked, at most
    ``keep``."""
    out = []
    for d in value if isinstance(value, list) else []:
        if not isinstance(d, dict):
            continue
        iteration, rate = _number(d.get("iteration")), _number(d.get("learning_rate"))
        if iteration is None or rate is None:
            continue
        at = d.get("at")
        out.append({"iteration": int(iteration), "learning_rate": rate,
                    "at": at if isinstance(at, str) else None})
    return out[-keep:]


def _pair(value: Any) -> dict[str, float] | None:
    """``[loss_a, loss_b]`` from state.json as ``{"a": .., "b": ..}``."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) for v in value):
        return {"a": float(value[0]), "b": float(value[1])}
    return None


def outputs(root: Path) -> list[dict[str, Any]]:
    """Swapped videos and photos in ``output/<model>/`` (newest first) with their provenance
    manifest (``<stem>.provenance.json`` beside each)."""
    found = []
    for folder in visible_dirs(root / "output"):
        for suffix in OUTPUT_SUFFIXES:
            for name in _files(folder, suffix):
                found.append((_mtime(folder / name), folder.name, folder, name))
    found.sort(key=lambda t: -t[0])
    out = []
    for mtime, model, folder, name in found[:MAX_OUTPUTS]:
        manifest_path = folder / (Path(name).stem + MANIFEST_SUFFIX)
        manifest = _read_json(manifest_path, limit=1 << 20)
        try:
            size = (folder / name).stat().st_size
        except OSError:
            size = 0
        out.append({
            "model": model, "name": name, "path": rel(root, folder / name), "size": size,
            "modified": iso(mtime),
            "manifest_path": rel(root, manifest_path) if manifest is not None else None,
            "manifest": manifest,
            "summary": _manifest_summary(manifest),
        })
    return out


def _manifest_summary(m: dict[str, Any] | None) -> dict[str, Any]:
    """The few manifest fields worth a column (the layout ``hotfolders.provenance`` writes);
    the full manifest stays available."""
    m = m if isinstance(m, dict) else {}

    def part(name: str) -> dict[str, Any]:
        value = m.get(name)
        return value if isinstance(value, dict) else {}

    return {
        "input": part("input").get("name"),
        "input_sha256": part("input").get("sha256"),
        "output_sha256": part("output").get("sha256"),
        "model": part("model").get("name"),
        "iterations": part("model").get("iterations"),
        "created": m.get("created"),
        "version": part("generator").get("version"),
        "synthetic": m.get("synthetic"),
    }


def failures(root: Path) -> list[dict[str, Any]]:
    """``failed/<stage>/<file>.error.txt`` reports, newest first, with their first lines."""
    found = []
    failed = root / "failed"
    for stage in visible_dirs(failed):
        for name in _files(stage, ERROR_SUFFIX):
            found.append((_mtime(stage / name), stage.name, stage / name))
    # inputs dropped straight into failed/ (no stage folder)
    for name in _files(failed, ERROR_SUFFIX):
        found.append((_mtime(failed / name), "", failed / name))
    found.sort(key=lambda t: -t[0])
    out = []
    for mtime, stage, path in found[:MAX_FAILURES]:
        try:
            text = safefs.read_head(path, 4096).decode("utf-8", errors="replace")
        except (InputError, OSError):
            continue
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        out.append({"stage": stage, "file": path.name[: -len(ERROR_SUFFIX)],
                    "reason": _reason(lines), "text": text, "when": iso(mtime)})
    return out


def _reason(lines: list[str]) -> str:
    """The line of an error report that says why (a ``why:``/``reason:`` line if present)."""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip().lower() in ("why", "reason", "error") and value.strip():
            return value.strip()[:300]
    return (lines[0] if lines else "(empty report)")[:300]
