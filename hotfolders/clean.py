"""Approved stage: prune the alignments file to the faces a person kept, restore their names.

Entry point: :func:`clean`. After a person deleted the bad faces of a folder, every face
whose image is gone is removed from the alignments file (a ``.bak`` copy of the old file is
written first, by :func:`hotfolders.alignments.save`), and the faces that remain get their
extraction names back (sorting prefixed them with a rank).

Faces are matched to alignments entries by their metadata, never by file name: the source's
sha256, the frame index, and the face's landmarks as the alignments entry places them in the
crop. The geometry check makes the match safe even when a frame lost one of several faces
(the faces after it move up one index: their PNG metadata is updated to the new index, the
pixel data is left byte for byte as it was) and when a face comes from another extraction of
the same video. Anything that does not match is refused before a single byte changes.

Running it twice changes nothing the second time, and the alignments file is not rewritten.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import alignments as al
from . import atomic, safefs
from .align import transform_points
from .errors import InputError
from .faceimage import face_name, read_meta_bytes, replace_meta
from .names import plain_png_name, printable
from .sort import TEMP_PREFIX, FaceFile, clear_record, read_folder

log = logging.getLogger(__name__)

# a face matches an alignments entry when its landmarks agree within this share of the crop
MATCH_TOLERANCE = 0.005


@dataclass
class CleanResult:
    """What a clean did (``changed`` False: the folder and file were already consistent)."""

    folder: Path
    alignments_path: Path
    kept: int = 0
    removed: list[tuple[str, int, int]] = field(default_factory=list)
    renamed: int = 0
    reindexed: int = 0
    backup_path: Path | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.renamed or self.reindexed)

    def describe(self) -> str:
        if not self.changed:
            return (f"{self.folder}: nothing to do, {self.kept} faces already match "
                    f"{self.alignments_path.name}")
        text = (f"{self.folder}: kept {self.kept} faces, removed {len(self.removed)} from "
                f"{self.alignments_path.name}, restored {self.renamed} names")
        if self.reindexed:
            text += f", renumbered {self.reindexed} faces in frames that lost a face"
        if self.backup_path:
            text += f"; backup: {self.backup_path.name}"
        return text + f" ({self.seconds:.1f} s)"


def _match(meta: dict[str, Any], entries: list[al.FaceEntry], preferred: int) -> int | None:
    """Index of the entry of this frame that this face was cut from, or None."""
    lm = np.asarray(meta.get("landmarks") or [], dtype=np.float64)
    if lm.shape != (68, 2):
        return None
    size = float(meta.get("size") or 0)
    order = [preferred] + [i for i in range(len(entries)) if i != preferred]
    for index in order:
        if not 0 <= index < len(entries):
            continue
        entry = entries[index]
        if entry.size != size:
            continue
        placed = transform_points(entry.landmarks, entry.matrix)
        if np.abs(placed - lm).mean() <= MATCH_TOLERANCE * size + 0.05:
            return index
    return None


def _plan(faces: list[FaceFile], data: al.Alignments, alignments_path: Path):
    """Match faces to entries; returns (new alignments or None, removed keys, per-face plan)."""
    sha = data.source.get("sha256")
    matched: dict[tuple[int, int], FaceFile] = {}
    for face in faces:
        meta = face.meta
        if meta.get("source_sha256") != sha:
            raise InputError(face.path, f"this face comes from {meta.get('source')!r} (sha256 "
                                        f"{str(meta.get('source_sha256'))[:12]}...), not from "
                                        f"{data.source.get('name')!r}, the source of "
                                        f"{alignments_path.name}; refusing to clean")
        frame = int(meta["frame"])
        entries = data.faces(frame)
        index = _match(meta, entries, int(meta["face"])) if entries else None
        if index is None:
            raise InputError(face.path, f"no face of frame {frame} in {alignments_path.name} "
                                        "matches this image's landmarks: it belongs to another "
                                        "alignments file (another extraction of the same "
                                        "source?); refusing to clean")
        other = matched.get((frame, index))
        if other is not None:
            raise InputError(face.path, f"the same face as {other.path.name}; delete one copy")
        matched[(frame, index)] = face
    removed: list[tuple[str, int, int]] = []
    plan: list[tuple[FaceFile, int, int]] = []  # (face, frame, new index)
    pruned = al.Alignments(source=data.source, settings=data.settings, created=data.created,
                           version=data.version)
    for frame, timestamp, entries in data:
        kept = []
        for index, entry in enumerate(entries):
            face = matched.get((frame, index))
            if face is None:
                removed.append((sha, frame, index))
                continue
            plan.append((face, frame, len(kept)))
            kept.append(entry)
        if kept:
            pruned.add(frame, timestamp, kept)
    return (pruned if removed else None), removed, plan


def _stored_name(face: FaceFile) -> str | None:
    """The ``original_name`` a face's metadata holds, if it is a plain ``*.png`` base name.

    The metadata is whatever the file says: a name like ``../../.facedrop/state.db`` would
    rename the face over another file, so it is refused (and logged) and the caller derives
    the extraction name instead.
    """
    stored = face.meta.get("original_name")
    name = plain_png_name(stored)
    if stored is not None and name is None:
        log.warning("%s: ignored the name %s stored in its metadata (not a plain .png name); "
                    "it gets its extraction name", printable(face.path), printable(repr(stored)))
    return name


def clean(folder: str | Path, alignments_path: str | Path) -> CleanResult:
    """Prune ``alignments_path`` to the faces still in ``folder`` and restore their names.

    Raises :class:`InputError` (nothing changed on disk) for a missing or corrupt alignments
    file, an empty folder, files that are not facedrop faces, or faces of another source or
    extraction.
    """
    started = time.perf_counter()
    folder = Path(folder)
    alignments_path = Path(alignments_path)
    data = al.load(alignments_path)
    # temporary names left by an interrupted sort or clean count too: they get their names back
    faces = read_folder(folder, include_temp=True)
    if not faces:
        raise InputError(folder, "no face images left; refusing to empty the alignments file "
                                 "(delete the folder instead if no face was any good)")
    pruned, removed, plan = _plan(faces, data, alignments_path)
    result = CleanResult(folder=folder, alignments_path=alignments_path, kept=len(plan),
                         removed=removed)

    rewrites: list[tuple[Path, bytes]] = []
    moves: list[tuple[str, str]] = []
    for face, frame, index in plan:
        meta = face.meta
        if index == int(meta["face"]):
            target = _stored_name(face) or face_name(Path(str(meta["source"])).stem, frame, index)
        else:  # a face before it in the frame was deleted: it moves up one index
            target = face_name(Path(str(meta["source"])).stem, frame, index)
            new_meta = {**meta, "face": index, "original_name": target}
            raw = safefs.read_bytes(face.path, safefs.IMAGE_LIMIT)
            rewrites.append((face.path, replace_meta(raw, new_meta)))
            read_meta_bytes(rewrites[-1][1], face.path)  # the new chunk must read back
        if face.path.name != target:
            moves.append((face.path.name, target))
    targets = [t for _, t in moves]
    staying = {f.path.name for f in faces} - {m[0] for m in moves}
    if len(set(targets)) != len(targets) or staying & set(targets):
        clash = next(t for t in targets if targets.count(t) > 1 or t in staying)
        raise InputError(folder / clash, "two faces would get this name; rename one by hand")

    # order: metadata, then alignments, then names. The landmark match recovers from a
    # crash between any two steps, because it does not rely on the face index alone.
    for path, raw in rewrites:
        atomic.write_bytes(path, raw, durable=False)
    result.reindexed = len(rewrites)
    if pruned is not None:
        al.save(pruned, alignments_path)
        result.backup_path = al.backup_path(alignments_path)
    for i, (current, _target) in enumerate(moves):
        os.replace(folder / current, folder / f"{TEMP_PREFIX}clean-{i}.png")
    for i, (_current, target) in enumerate(moves):
        os.replace(folder / f"{TEMP_PREFIX}clean-{i}.png", folder / target)
    result.renamed = len(moves)
    if moves:
        clear_record(folder)  # the names a sort record would restore are gone now
    result.seconds = time.perf_counter() - started
    log.debug(result.describe())
    return result


__all__ = ["clean", "CleanResult"]
