"""Review stage, part 2: a report of suspect faces for the person cleaning a folder.

Entry point: :func:`review_report`. It measures every face of a folder (sharpness,
brightness, size in the source, head pose, distance to the set's typical face) and flags the
ones a person will most likely delete, each with its reasons:

- ``blurred``: far less fine detail than the set's median face (or almost none at all);
- ``dark``: a dim face region (absolutely, or against the set);
- ``tiny``: the face was small in the source frame, so the crop is upscaled mush;
- ``extreme-pose``: turned or tilted beyond what a model learns well from few examples;
- ``other-person``: far from the set's typical face: possibly another person, no face at
  all, or an occluded face.

It writes ``review.json`` (for the status page and scripts) and ``review.jpg`` (a contact
sheet: flagged faces first, framed in red with their reasons, then a few typical faces for
comparison). Nothing in the folder is changed apart from these two files.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import atomic
from . import embedding as emb
from .faceimage import read_face
from .sort import read_faces

log = logging.getLogger(__name__)

REPORT_JSON = "review.json"
REPORT_IMAGE = "review.jpg"
REASONS = {
    "blurred": "blurred",
    "dark": "dark",
    "tiny": "tiny",
    "extreme-pose": "extreme pose",
    "other-person": "other person?",
}
# absolute limits; each reason also has a limit relative to the set's median
BLUR_ABS, BLUR_REL = 0.15, 0.3          # normalised sharpness (see embedding.measure)
DARK_ABS, DARK_REL = 50.0, 0.45         # mean luma 0..255
TINY_ABS, TINY_REL = 64.0, 0.5          # face size in the source frame, px
YAW_LIMIT, PITCH_LIMIT = 40.0, 30.0     # degrees
SHEET_TILE, SHEET_TEXT, SHEET_COLUMNS, SHEET_CONTEXT, SHEET_MAX_FLAGGED = 120, 44, 8, 16, 160


def _flags(m: emb.FaceMeasures, distance: float, outlier: bool,
           limits: dict[str, float]) -> tuple[list[str], list[str]]:
    reasons, notes = [], []
    if m.sharpness < limits["sharpness"]:
        reasons.append("blurred")
        notes.append(f"sharpness {m.sharpness:.2f} < {limits['sharpness']:.2f}")
    if m.brightness < limits["brightness"]:
        reasons.append("dark")
        notes.append(f"brightness {m.brightness:.0f} < {limits['brightness']:.0f}")
    if m.size < limits["size"]:
        reasons.append("tiny")
        notes.append(f"{m.size:.0f} px in the source < {limits['size']:.0f}")
    if abs(m.yaw) > YAW_LIMIT or abs(m.pitch) > PITCH_LIMIT:
        reasons.append("extreme-pose")
        notes.append(f"yaw {m.yaw:+.0f}, pitch {m.pitch:+.0f} degrees")
    if outlier:
        reasons.append("other-person")
        notes.append(f"distance {distance:.2f} to the typical face > {limits['distance']:.2f}")
    return reasons, notes


def review_report(folder: str | Path, out_dir: str | Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  name: str | None = None) -> dict[str, Any]:
    """Measure the faces of ``folder``, write ``review.json`` + ``review.jpg`` into ``out_dir``
    (default: the folder itself) and return the report as a dict.

    ``name`` is the set's name as people know it (default: the folder's name; the daemon
    writes the report into a staging folder that is renamed when it is complete). The report
    names its files relative to its own folder, so it stays right when the folder moves
    from ``review/`` to ``approved/``.

    Raises :class:`hotfolders.errors.InputError` for an empty folder or a file that is not a
    facedrop face.
    """
    started = time.perf_counter()
    folder = Path(folder)
    out_dir = Path(out_dir) if out_dir is not None else folder
    faces = read_faces(folder)
    measures, thumbs = [], []
    for i, face in enumerate(faces):
        image, _ = read_face(face.path)
        measures.append(emb.measure(image, face.meta))
        thumbs.append(_thumbnail(image))  # small copies only: folders hold thousands
        if progress:
            progress(i + 1, len(faces))
    typ = emb.typicality(np.array([m.appearance for m in measures]))
    medians = {
        "sharpness": float(np.median([m.sharpness for m in measures])),
        "brightness": float(np.median([m.brightness for m in measures])),
        "size": float(np.median([m.size for m in measures])),
        "distance": float(np.median(typ.distance)),
    }
    limits = {
        "sharpness": max(BLUR_ABS, BLUR_REL * medians["sharpness"]),
        "brightness": max(DARK_ABS, DARK_REL * medians["brightness"]),
        "size": max(TINY_ABS, TINY_REL * medians["size"]),
        "distance": float(typ.threshold),
        "yaw": YAW_LIMIT, "pitch": PITCH_LIMIT,
    }
    items = []
    for face, m, dist, out in zip(faces, measures, typ.distance, typ.outlier):
        reasons, notes = _flags(m, float(dist), bool(out), limits)
        items.append({
            "name": face.path.name,
            "source": face.meta.get("source"),
            "frame": int(face.meta["frame"]),
            "face": int(face.meta["face"]),
            "reasons": reasons,
            "notes": notes,
            "metrics": {"sharpness": round(m.sharpness, 4), "brightness": round(m.brightness, 1),
                        "size": round(m.size, 1), "yaw": round(m.yaw, 1),
                        "pitch": round(m.pitch, 1), "distance": round(float(dist), 4)},
        })

    def severity(i: int) -> tuple:
        """Most reasons first, then farthest from the typical face; the rest by name."""
        flagged = bool(items[i]["reasons"])
        return (-len(items[i]["reasons"]), -float(typ.distance[i]) if flagged else 0.0,
                items[i]["name"])

    order = sorted(range(len(items)), key=severity)
    items = [items[i] for i in order]
    thumbs = [thumbs[i] for i in order]
    counts: dict[str, int] = {reason: 0 for reason in REASONS}
    for item in items:
        for reason in item["reasons"]:
            counts[reason] += 1
    flagged = sum(1 for item in items if item["reasons"])
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "format": "facedrop-review",
        "version": 1,
        "folder": name or folder.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "faces": len(items),
        "flagged": flagged,
        "counts": counts,
        "medians": {k: round(v, 4) for k, v in medians.items()},
        "limits": {k: round(v, 4) for k, v in limits.items()},
        "json": REPORT_JSON,
        "image": REPORT_IMAGE,
        "items": items,
    }
    atomic.write_bytes(out_dir / REPORT_IMAGE, contact_sheet(items, thumbs, name or folder.name),
                       durable=False)
    atomic.write_json(out_dir / REPORT_JSON, report, durable=False)
    log.debug("review of %s: %d of %d faces flagged (%.1f s)", folder, flagged, len(items),
              time.perf_counter() - started)
    return report


def describe(report: dict[str, Any], folder: str | Path | None = None) -> str:
    """One line for the command's summary (``folder``: where the report was written)."""
    counts = ", ".join(f"{n} {REASONS[r]}" for r, n in report["counts"].items() if n)
    sheet = Path(folder) / report["image"] if folder is not None else report["image"]
    return (f"review: {report['flagged']} of {report['faces']} faces flagged"
            + (f" ({counts})" if counts else "") + f"; sheet: {sheet}")


def _short(name: str, limit: int = 17) -> str:
    """A file name that fits under a thumbnail: start and end kept (rank and frame show)."""
    name = name[:-4] if name.lower().endswith(".png") else name
    return name if len(name) <= limit else f"{name[:7]}..{name[-(limit - 9):]}"


def _thumbnail(image: np.ndarray) -> np.ndarray:
    import cv2

    side = SHEET_TILE - 8
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _tile(image: np.ndarray, lines: list[str], colour: tuple[int, int, int]) -> np.ndarray:
    """One labelled thumbnail (BGR): the face in a coloured frame, name and reasons below."""
    import cv2

    t = SHEET_TILE
    tile = np.full((t + SHEET_TEXT, t, 3), 24, np.uint8)
    face = cv2.cvtColor(_thumbnail(image), cv2.COLOR_RGB2BGR)
    tile[:t] = colour
    tile[4:t - 4, 4:t - 4] = face
    for row, text in enumerate(lines[:3]):
        if row == 0:
            shade = (235, 235, 235)
        else:
            shade = (150, 170, 255) if colour[2] > 150 else (170, 170, 170)
        cv2.putText(tile, text, (3, t + 12 + 13 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.34,
                    shade, 1, cv2.LINE_AA)
    return tile


def contact_sheet(items: list[dict[str, Any]], images: list[np.ndarray], title: str) -> bytes:
    """JPEG bytes of the contact sheet: flagged faces first, then a sample of typical ones."""
    import cv2

    flagged = [i for i, item in enumerate(items) if item["reasons"]][:SHEET_MAX_FLAGGED]
    rest = [i for i, item in enumerate(items) if not item["reasons"]]
    if len(rest) > SHEET_CONTEXT:
        rest = [rest[int(j)] for j in np.linspace(0, len(rest) - 1, SHEET_CONTEXT)]
    tiles = []
    for i in flagged:
        labels = [REASONS[r] for r in items[i]["reasons"]]
        if len(labels) > 2:
            labels = [labels[0], ", ".join(labels[1:])]
        tiles.append(_tile(images[i], [_short(items[i]["name"])] + labels, (40, 40, 220)))
    gap = (-len(tiles)) % SHEET_COLUMNS  # typical faces start on a new row
    for i in rest:
        tiles.append(_tile(images[i], [_short(items[i]["name"]), "ok"], (90, 90, 90)))
    t = SHEET_TILE
    cols = SHEET_COLUMNS
    cells = len(flagged) + (gap if rest and flagged else 0) + len(rest)
    rows = max(1, -(-cells // cols))
    header = 44
    sheet = np.full((header + rows * (t + SHEET_TEXT + 4), cols * (t + 4) + 4, 3), 16, np.uint8)
    n_flag = len([item for item in items if item["reasons"]])
    cv2.putText(sheet, f"facedrop review: {title}", (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                (255, 255, 255), 1, cv2.LINE_AA)
    summary = (f"{n_flag} of {len(items)} faces flagged (red frames, worst first); grey: typical "
               f"faces for comparison") if n_flag else f"no suspect faces among {len(items)}"
    cv2.putText(sheet, summary, (8, 36), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (200, 200, 200), 1,
                cv2.LINE_AA)
    cell = 0
    for k, tile in enumerate(tiles):
        if k == len(flagged) and flagged and rest:
            cell += gap
        r, c = divmod(cell, cols)
        y, x = header + r * (t + SHEET_TEXT + 4), 4 + c * (t + 4)
        sheet[y:y + tile.shape[0], x:x + t] = tile
        cell += 1
    ok, buf = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
