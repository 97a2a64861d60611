"""Review stage, part 1: sort a folder of extracted faces so that the bad ones come first.

Entry points: :func:`sort_faces` and :func:`undo_sort`. Sorting renames each face with a
rank prefix (``0001_<name>``), or copies the faces under those names into a ``keep_dir``.
It never touches a pixel: files are only renamed (or copied byte for byte). The names before
sorting are recorded in ``.facedrop-sort.json`` beside the faces, keyed by each face's
metadata (source sha256, frame, face), so :func:`undo_sort` restores them even after the
person deleted or renamed some files, and a crash half-way through a sort is finished on
the next run instead of losing track of the files.

Methods (least wanted first, as a person cleaning the folder wants them):

- ``face``: least typical faces of the set first (no face, another person, occluded), then
  similar faces next to each other (see :mod:`hotfolders.embedding`);
- ``hist``: the same with colour histograms;
- ``blur``: blurriest first; ``dark``: darkest first; ``size``: smallest in the source first;
- ``yaw`` / ``pitch``: most turned (or most tilted) first.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import atomic, safefs
from . import embedding as emb
from .errors import InputError
from .faceimage import extraction_name, face_key, read_face, read_face_meta
from .names import plain_png_name, printable

log = logging.getLogger(__name__)

METHODS = ("face", "hist", "blur", "dark", "yaw", "pitch", "size")
RECORD_NAME = ".facedrop-sort.json"
RECORD_VERSION = 1
TEMP_PREFIX = ".facedrop-sorting-"
REPORT_FILES = ("review.json", "review.jpg")
# files a face folder may hold besides faces: ours, and what operating systems leave behind
_SIDECAR = re.compile(r".*\.json\.gz(\.bak)?$|^review\.(json|jpg)$|^(thumbs\.db|desktop\.ini)$",
                      re.IGNORECASE)
_RANK = re.compile(r"^\d{4,}_")
Progress = Callable[[int, int], None]


@dataclass
class FaceFile:
    """One face image of a folder and its metadata (pixels are read only when needed)."""

    path: Path
    meta: dict[str, Any]

    @property
    def key(self) -> tuple[str, int, int]:
        return face_key(self.meta)


def read_folder(folder: str | Path, include_temp: bool = False) -> list[FaceFile]:
    """Every face PNG of ``folder`` with its metadata, validated before anything is changed.

    Hidden files, alignments files, review reports and OS litter are skipped; any other file
    (a JPEG, a video, a PNG without facedrop metadata) is an :class:`InputError`, because
    sorting or cleaning a folder that holds something else would be guesswork.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    faces: list[FaceFile] = []
    for path in sorted(folder.iterdir()):
        name = path.name
        if path.is_dir():
            continue
        if name.startswith("."):
            if include_temp and name.startswith(TEMP_PREFIX) and name.endswith(".png"):
                faces.append(FaceFile(path, read_face_meta(path)))
            continue
        if _SIDECAR.match(name):
            continue
        if path.suffix.lower() != ".png":
            raise InputError(path, "not a face image: only facedrop face PNGs belong in this "
                                   "folder (move other files out first)")
        faces.append(FaceFile(path, read_face_meta(path)))
    return faces


def read_faces(folder: str | Path) -> list[FaceFile]:
    """Like :func:`read_folder`, but an empty folder is an error too."""
    faces = read_folder(folder)
    if not faces:
        raise InputError(folder, "no face images (PNG files written by facedrop extract) here")
    return faces


def base_name(name: str) -> str:
    """A face's name without a rank prefix this module added."""
    return _RANK.sub("", name, count=1)


@dataclass
class SortedFace:
    rank: int
    name: str        # name after sorting
    old_name: str    # name before the first sort (what undo restores)
    score: float     # the method's measure (see :data:`SCORE_LABELS`)
    flagged: bool = False  # an outlier of the face/hist methods


SCORE_LABELS = {
    "face": "distance to the typical face", "hist": "histogram distance to the typical face",
    "blur": "sharpness", "dark": "brightness", "yaw": "yaw (deg)", "pitch": "pitch (deg)",
    "size": "size in source (px)",
}


@dataclass
class SortResult:
    """What a sort did: the new order, where it went, how to undo it."""

    folder: Path
    method: str
    target: Path                 # the folder that now holds the sorted names
    faces: list[SortedFace] = field(default_factory=list)
    record_path: Path | None = None
    copied: bool = False
    seconds: float = 0.0

    @property
    def outliers(self) -> int:
        return sum(f.flagged for f in self.faces)

    def describe(self) -> str:
        what = "copied" if self.copied else "sorted"
        text = f"{what} {len(self.faces)} faces by {self.method}"
        if self.copied:
            text += f" into {self.target}"
        if self.method in ("face", "hist"):
            text += f", {self.outliers} far from the typical face"
        if self.faces:
            first = self.faces[0]
            text += f"; first: {first.name} ({SCORE_LABELS[self.method]} {first.score:.3g})"
        return text + f" ({self.seconds:.1f} s)"


def _scores(faces: list[FaceFile], method: str,
            progress: Progress | None) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(order, score per face, outlier flag per face) for one method."""
    n = len(faces)
    flags = np.zeros(n, bool)
    if method in ("yaw", "pitch", "size"):  # metadata only, no pixels
        if method == "size":
            scores = np.array([emb.source_size(f.meta) for f in faces])
            order = np.argsort(scores, kind="stable")
        else:
            axis = 0 if method == "yaw" else 1
            scores = np.array([emb.pose(f.meta)[axis] for f in faces])
            order = np.argsort(-np.abs(scores), kind="stable")
        return [int(i) for i in order], scores, flags
    measures = []
    for i, face in enumerate(faces):
        image, _meta = read_face(face.path)
        measures.append(emb.measure(image, face.meta))
        if progress:
            progress(i + 1, n)
    if method == "blur":
        scores = np.array([m.sharpness for m in measures])
        return [int(i) for i in np.argsort(scores, kind="stable")], scores, flags
    if method == "dark":
        scores = np.array([m.brightness for m in measures])
        return [int(i) for i in np.argsort(scores, kind="stable")], scores, flags
    vectors = np.array([m.appearance if method == "face" else m.histogram for m in measures])
    typ = emb.typicality(vectors)
    order = emb.similarity_order(typ.embedding, typ.distance, typ.outlier)
    return order, typ.distance, typ.outlier


def _load_record(folder: Path) -> dict[str, Any] | None:
    """The sort record of ``folder``, or None. Its names are whatever the file says, so each
    is kept only if it is a plain ``*.png`` base name; a refused one becomes None (logged),
    and the face it belongs to gets its extraction name instead."""
    path = folder / RECORD_NAME
    if not path.exists():
        return None
    try:
        record = safefs.load_json(path, safefs.JSON_LIMIT)
        if record.get("version") != RECORD_VERSION or not isinstance(record.get("files"), list):
            raise ValueError("unknown layout")
        for entry in record["files"]:
            if not (isinstance(entry.get("key"), list) and len(entry["key"]) == 3
                    and isinstance(entry.get("old"), str) and isinstance(entry.get("name"), str)):
                raise ValueError("an entry lacks its key or names")
            entry["key"] = [str(entry["key"][0]), int(entry["key"][1]), int(entry["key"][2])]
            for field_ in ("old", "name"):
                if plain_png_name(entry[field_]) is None:
                    log.warning("%s: ignored the name %s (not a plain .png name)",
                                printable(path), printable(repr(entry[field_])))
                    entry[field_] = None
        return record
    except (ValueError, TypeError, AttributeError, InputError) as exc:
        raise InputError(path, f"sort record is unreadable ({exc}); delete it to start "
                               "over") from None


def _recover(folder: Path) -> None:
    """Finish a sort (or an undo) that was interrupted between its two rename passes.

    Temporary files are matched to the record by their metadata key, never by name.
    """
    temps = sorted(folder.glob(TEMP_PREFIX + "*.png"))
    if not temps:
        return
    record = _load_record(folder) or {"files": []}
    by_key = {tuple(e["key"]): e for e in record["files"]}
    for tmp in temps:
        meta = read_face_meta(tmp)
        entry = by_key.get(face_key(meta))
        name = None
        if entry is not None:
            name = (entry["old"] if tmp.name.startswith(TEMP_PREFIX + "undo-")
                    else entry["name"]) or extraction_name(meta)
        if not name or (folder / name).exists():
            raise InputError(tmp, "left over from an interrupted sort and not in the sort "
                                  "record; rename it to a .png name by hand")
        os.replace(tmp, folder / name)
    log.info("finished an interrupted sort in %s (%d files)", folder, len(temps))


def _rename_all(folder: Path, moves: list[tuple[str, str, str]]) -> None:
    """Rename (current, tmp, final) in two passes, so names can swap without collisions."""
    for current, tmp, _final in moves:
        os.replace(folder / current, folder / tmp)
    for _current, tmp, final in moves:
        os.replace(folder / tmp, folder / final)


def sort_faces(folder: str | Path, by: str = "face", keep_dir: str | Path | None = None,
               progress: Progress | None = None) -> SortResult:
    """Sort the faces of ``folder`` by ``by`` (one of :data:`METHODS`), worst first.

    Renames in place (rank prefix), or with ``keep_dir`` copies the faces there under the
    ranked names and leaves ``folder`` untouched. Returns a :class:`SortResult`. Raises
    :class:`InputError` for an unknown method, an empty folder or a file that is not a
    facedrop face, before anything on disk changes.
    """
    started = time.perf_counter()
    if by not in METHODS:
        raise InputError(None, f"unknown sort method {by!r}; use one of {', '.join(METHODS)}")
    folder = Path(folder)
    if keep_dir is None and folder.is_dir():
        _recover(folder)
    faces = read_faces(folder)
    target = Path(keep_dir) if keep_dir is not None else folder
    if keep_dir is not None:
        if target.resolve() == folder.resolve():
            raise InputError(target, "--keep must name another folder than the one sorted")
        if target.exists() and (not target.is_dir() or any(target.glob("*.png"))):
            raise InputError(target, "the --keep folder already holds faces; name an empty "
                                     "or new folder")
    counts = Counter(f.key for f in faces)
    if len(counts) != len(faces):
        dupes = sorted(f.path.name for f in faces if counts[f.key] > 1)
        raise InputError(folder, f"the same face is here more than once: {', '.join(dupes[:4])}")

    order, scores, flags = _scores(faces, by, progress)

    # names before the first sort: from an earlier record where this face is listed
    previous = {}
    if keep_dir is None:
        for entry in (_load_record(folder) or {}).get("files", []):
            if entry["old"] is not None:
                previous[tuple(entry["key"])] = entry["old"]
    width = max(4, len(str(len(faces))))
    result = SortResult(folder=folder, method=by, target=target, copied=keep_dir is not None)
    entries = []
    for rank, index in enumerate(order, start=1):
        face = faces[index]
        old = previous.get(face.key, face.path.name)
        name = f"{rank:0{width}d}_{base_name(old)}"
        result.faces.append(SortedFace(rank, name, old, float(scores[index]), bool(flags[index])))
        entries.append({"key": list(face.key), "old": old, "name": name,
                        "tmp": f"{TEMP_PREFIX}{rank:0{width}d}.png", "src": face.path.name})
    record = {"version": RECORD_VERSION, "method": by,
              "sorted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "files": [{k: e[k] for k in ("key", "old", "name", "tmp")} for e in entries]}
    record_path = target / RECORD_NAME
    if keep_dir is not None:
        target.mkdir(parents=True, exist_ok=True)
        for e in entries:
            tmp = target / e["tmp"]
            shutil.copy2(folder / e["src"], tmp)
            os.replace(tmp, target / e["name"])
        atomic.write_json(record_path, record)
    else:
        # the record goes first: an interrupted rename is finished (or undone) from it
        atomic.write_json(record_path, record)
        _rename_all(folder, [(e["src"], e["tmp"], e["name"]) for e in entries
                             if e["src"] != e["name"]])
    result.record_path = record_path
    result.seconds = time.perf_counter() - started
    log.debug(result.describe())
    return result


def undo_sort(folder: str | Path) -> int:
    """Give the faces of ``folder`` back the names they had before sorting; returns how many
    files were renamed. Faces the person deleted meanwhile are simply gone; faces added after
    the sort keep their names. Raises :class:`InputError` when there is nothing to undo.
    """
    folder = Path(folder)
    record = _load_record(folder) if folder.is_dir() else None
    if record is None:
        raise InputError(folder, "nothing to undo: this folder has no sort record")
    olds: dict[tuple, list[dict]] = {}
    for entry in record["files"]:
        olds.setdefault(tuple(entry["key"]), []).append(entry)
    faces = read_folder(folder, include_temp=True)
    moves, taken = [], set()
    for i, face in enumerate(faces):
        candidates = olds.get(face.key)
        if not candidates:
            continue
        entry = next((e for e in candidates if e["name"] == face.path.name), candidates[0])
        candidates.remove(entry)
        old = entry["old"] or extraction_name(face.meta)
        if old in taken:
            continue
        taken.add(old)
        if face.path.name != old:
            moves.append((face.path.name, f"{TEMP_PREFIX}undo-{i}.png", old))
    unmoved = {f.path.name for f in faces} - {m[0] for m in moves}
    clash = sorted(unmoved & {m[2] for m in moves})
    if clash:
        raise InputError(folder / clash[0], "a file not made by the sort already has the "
                                            "name a face had before it; rename it first")
    _rename_all(folder, moves)
    (folder / RECORD_NAME).unlink(missing_ok=True)
    log.debug("undid the sort of %s: %d files renamed", folder, len(moves))
    return len(moves)


def clear_record(folder: str | Path) -> None:
    """Forget a sort (after names were restored some other way, e.g. by ``clean``)."""
    (Path(folder) / RECORD_NAME).unlink(missing_ok=True)


__all__ = ["sort_faces", "undo_sort", "SortResult", "SortedFace", "METHODS", "read_folder",
           "read_faces", "FaceFile", "RECORD_NAME", "clear_record", "base_name"]
