"""Landmark jitter and lag against known motion (shared by the tests and bench/extract.py).

A clip of a real face moved by a known similarity transform per frame is written as H.264 and
read back (so the codec's noise is in it), landmarks are found by the extraction's tracker,
with or without the One Euro filter, and compared with the ground truth (the still photo's
landmarks moved by the same transform):

- **jitter**: the error of the frame-to-frame *differences*, per point, as a share of the
  inter-ocular distance — what a viewer sees as shaking, independent of a constant offset;
- **error**: the plain per-frame landmark error, same unit;
- **lag**: how late the landmarks follow the motion, in milliseconds: the time shift of the
  ground truth that best explains the landmarks' centroid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hotfolders.samples import Motion, frame_matrix, load_face, render_frames, write_video

__all__ = ["Clip", "Motion", "fast_motion", "make_clip", "measure", "track"]

FPS = 25
CANVAS = (640, 480)


def fast_motion() -> Motion:
    """A head turning quickly from side to side: 120 px amplitude, once a second (peak about
    30 px a frame), with the usual slow rotation and scale."""
    return Motion(dx=lambda t: 120.0 * math.sin(2 * math.pi * t / 1.0))


@dataclass
class Clip:
    path: Path
    motion: Motion
    seconds: float


def make_clip(path: Path, motion: Motion, seconds: float = 4.0) -> Clip:
    if not path.exists():
        frames, _ = render_frames("astronaut", seconds, FPS, CANVAS, motion)
        write_video(path, frames, FPS, audio_hz=None)
    return Clip(path, motion, seconds)


def track(clip: Clip) -> list[tuple[float, np.ndarray | None]]:
    """(timestamp, 478-point mesh or None) per frame, as extraction sees them."""
    from hotfolders.landmarks import FaceTracker
    from hotfolders.video import read_frames

    out: list[tuple[float, np.ndarray | None]] = []
    with FaceTracker(max_faces=1) as tracker:
        for frame in read_frames(clip.path):
            found = tracker.detect(frame.image)
            out.append((frame.timestamp, found[0].mesh if found else None))
    return out


def measure(clip: Clip, meshes: list[tuple[float, np.ndarray | None]], photo,
            smoothing: dict[str, float] | None) -> dict[str, float]:
    """Jitter, error (shares of the inter-ocular distance) and lag (ms) of ``meshes`` with
    the One Euro filter set by ``smoothing`` (None: raw landmarks)."""
    from hotfolders.align import transform_points
    from hotfolders.landmarks import MESH_TO_68
    from hotfolders.smoothing import TrackSmoother

    shape = load_face("astronaut").shape
    canvas = (CANVAS[1], CANVAS[0])
    smoother = TrackSmoother(**smoothing) if smoothing is not None else None
    truth = lambda t: transform_points(photo.landmarks, frame_matrix(clip.motion, t, shape,
                                                                     canvas))
    times, found, expected, scales = [], [], [], []
    for t, mesh in meshes:
        if mesh is None:
            continue
        if smoother is not None:
            size = float(np.ptp(mesh, axis=0).max())
            (mesh,) = smoother([mesh], t, [size])
        m = frame_matrix(clip.motion, t, shape, canvas)
        times.append(t)
        found.append(mesh[list(MESH_TO_68)])
        expected.append(truth(t))
        scales.append(photo.interocular * math.sqrt(abs(np.linalg.det(m[:, :2]))))
    found_a, expected_a, unit = np.array(found), np.array(expected), np.array(scales)[:, None]
    step = np.diff(found_a, axis=0) - np.diff(expected_a, axis=0)
    jitter = float((np.linalg.norm(step, axis=2) / unit[1:]).mean())
    error = float((np.linalg.norm(found_a - expected_a, axis=2) / unit).mean())
    centre = found_a.mean(axis=1)
    shifts = np.arange(-40, 161, 2) / 1000.0
    residual = [float(np.abs(centre - np.array([truth(t - s).mean(axis=0) for t in times]))
                      .mean()) for s in shifts]
    lag = float(shifts[int(np.argmin(residual))] * 1000)
    return {"jitter": jitter, "error": error, "lag_ms": lag, "frames": len(times)}
