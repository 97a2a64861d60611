"""Extraction stage: video or photo -> aligned faces (PNG + metadata) and an alignments file.

Entry point: :func:`extract`. Faces are written into a hidden staging folder and moved into
place only when the whole input has been read, and the alignments file is written atomically,
so a bad input or a crash never leaves half a result where a person or the daemon would take
it for a finished one.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import alignments as al
from .align import EXTRACT_PADDING, compose, crop_matrix, transform_points, warp
from .digest import sha256_file
from .errors import InputError
from .faceimage import face_name, write_face
from .heap import frozen_heap
from .landmarks import Detection, FaceTracker, PhotoFaces, plausibility
from .masks import MASK_TYPES, landmark_mask
from .smoothing import TrackSmoother
from .video import VideoInfo, is_image, prefetch, probe, read_frames

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (frames done, frames expected or 0)


@dataclass
class ExtractSummary:
    """What an extraction did, for the command's summary line and the daemon's records."""

    source: Path
    output_dir: Path
    alignments_path: Path
    frames_read: int = 0
    faces_written: int = 0
    rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    frames_with_faces: int = 0

    def describe(self) -> str:
        rejected = ", ".join(f"{n} {reason}" for reason, n in sorted(self.rejected.items()))
        return (f"{self.source.name}: {self.frames_read} frames read, {self.faces_written} faces "
                f"written to {self.output_dir}"
                + (f", rejected: {rejected}" if rejected else "")
                + f" ({self.seconds:.1f} s)")


def face_record(det_landmarks: np.ndarray, det_mesh: np.ndarray, size: int,
                padding: float = EXTRACT_PADDING, mask_types=MASK_TYPES,
                mask_size: int = al.MASK_STORE_SIZE) -> al.FaceEntry:
    """The alignments entry of one face: matrix, box and small masks, all from the landmarks."""
    matrix = crop_matrix(det_landmarks, size, padding)
    to_mask = compose(np.array([[mask_size / size, 0, 0], [0, mask_size / size, 0]]), matrix)
    lm_m = transform_points(det_landmarks, to_mask)
    mesh_m = transform_points(det_mesh, to_mask)
    masks = {
        kind: {"size": mask_size, "matrix": np.round(to_mask, 6).tolist(),
               "png": al.encode_mask(landmark_mask(kind, lm_m, mask_size, mesh_m))}
        for kind in mask_types
    }
    x0, y0 = det_mesh.min(axis=0)
    x1, y1 = det_mesh.max(axis=0)
    return al.FaceEntry(box=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        landmarks=det_landmarks, mesh=det_mesh, matrix=matrix, size=size,
                        masks=masks)


def _face_meta(entry: al.FaceEntry, source: Path, sha: str, frame: int, face: int,
               timestamp: float, padding: float, name: str) -> dict:
    return {
        "source": source.name,
        "source_sha256": sha,
        "frame": frame,
        "face": face,
        "timestamp": round(timestamp, 6),
        "size": entry.size,
        "centering": "face",
        "padding": padding,
        "matrix": np.round(entry.matrix, 6).tolist(),
        "landmarks": np.round(transform_points(entry.landmarks, entry.matrix), 2).tolist(),
        "mesh": np.round(transform_points(entry.mesh, entry.matrix), 1).tolist(),
        "source_box": [round(v, 1) for v in entry.box],
        "alignments_version": al.ALIGNMENTS_VERSION,
        "original_name": name,
    }


def _process_face(frame: np.ndarray, det: Detection, size: int, padding: float,
                  source: Path, sha: str, index: int, face: int, timestamp: float,
                  staging: Path | None) -> al.FaceEntry:
    """Alignments entry (and, for training sets, the face PNG) of one detection.

    Runs on the writer pool so that only face detection stays on the main thread.
    """
    entry = face_record(det.landmarks, det.mesh, size, padding)
    if staging is not None:
        name = face_name(source.stem, index, face)
        meta = _face_meta(entry, source, sha, index, face, timestamp, padding, name)
        write_face(staging / name, warp(frame, entry.matrix, entry.size, fast=True), meta)
    return entry


@frozen_heap()
def extract(input_path: str | Path, out_dir: str | Path, *, every_n: int = 1, size: int = 512,
            min_size: int = 48, alignments_path: str | Path | None = None,
            smooth: bool | None = None, max_faces: int = 4, write_faces: bool = True,
            padding: float = EXTRACT_PADDING, progress: Progress | None = None,
            info: VideoInfo | None = None, sha256: str | None = None) -> ExtractSummary:
    """Extract every face of every ``every_n``-th frame of ``input_path`` into ``out_dir``.

    ``smooth`` (default: on for videos, off for photos) runs the One Euro landmark filter.
    ``write_faces=False`` only builds the alignments file (conversion targets need no PNGs).
    Raises :class:`InputError` for unreadable input or when no face is found at all.
    """
    started = time.perf_counter()
    source = Path(input_path)
    out_dir = Path(out_dir)
    info = info or probe(source)  # InputError for missing/empty/non-video files
    sha = sha256 or sha256_file(source)
    still = info.is_image
    smooth = (not still) if smooth is None else smooth
    alignments_path = Path(alignments_path) if alignments_path else out_dir / al.ALIGNMENTS_NAME
    summary = ExtractSummary(source, out_dir, alignments_path)
    result = al.Alignments(
        source={"name": source.name, "sha256": sha, "width": info.width, "height": info.height,
                "fps": float(info.fps), "frames": info.frames, "rotation": info.rotation},
        settings={"every_n": every_n, "size": size, "min_size": min_size, "padding": padding,
                  "smoothing": smooth, "detector": "mediapipe-face-mesh-0.10.21"},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".facedrop-partial-{os.getpid()}"
    if write_faces:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    expected = -(-info.frames // every_n) if info.frames else 0
    smoother = TrackSmoother() if smooth else None
    pending: list[tuple[int, float, list[Future]]] = []

    def settle(limit: int) -> None:
        # keep memory bounded: at most ``limit`` frames' faces in flight, added in order
        while len(pending) > limit:
            index, timestamp, futures = pending.pop(0)
            result.add(index, timestamp, [f.result() for f in futures])

    ok = False
    try:
        landmarker = (PhotoFaces(max_faces=max_faces) if still
                      else FaceTracker(max_faces=max_faces, min_size=min_size))
        with landmarker, \
                ThreadPoolExecutor(max_workers=2, thread_name_prefix="face-writer") as pool:
            for frame in prefetch(read_frames(source, every_n)):
                summary.frames_read += 1
                detections = landmarker.detect(frame.image)
                if smoother is not None and detections:
                    meshes = smoother([d.mesh for d in detections], frame.timestamp,
                                      [d.size for d in detections])
                    detections = [Detection(m) for m in meshes]
                kept = []
                for det in detections:
                    reason = plausibility(det, frame.image.shape, min_size)
                    if reason:
                        summary.rejected[reason] += 1
                    else:
                        kept.append(det)
                if kept:
                    summary.frames_with_faces += 1
                    summary.faces_written += len(kept)
                    pending.append((frame.index, frame.timestamp, [
                        pool.submit(_process_face, frame.image, det, size, padding, source, sha,
                                    frame.index, i, frame.timestamp,
                                    staging if write_faces else None)
                        for i, det in enumerate(kept)]))
                    settle(8)
                if progress:
                    progress(summary.frames_read, expected)
            settle(0)
        if summary.faces_written == 0:
            detail = ", ".join(f"{n} rejected as {r}" for r, n in summary.rejected.items())
            raise InputError(source, f"no usable face found in {summary.frames_read} frame(s)"
                             + (f" ({detail})" if detail else ""))
        if write_faces:
            for item in staging.iterdir():
                os.replace(item, out_dir / item.name)
        al.save(result, alignments_path)
        ok = True
    finally:
        if write_faces:
            shutil.rmtree(staging, ignore_errors=True)
        if not ok:
            log.debug("extraction of %s did not finish; nothing was kept", source)
    summary.seconds = time.perf_counter() - started
    log.debug(summary.describe())
    return summary


__all__ = ["extract", "ExtractSummary", "face_record", "is_image"]
