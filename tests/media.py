"""Test media built from real faces that ship inside installed packages, with known motion.

``astronaut.png`` (scikit-image) and ``grace_hopper.jpg`` (matplotlib) are public domain. A
test video places the photo on a canvas and moves it by a known similarity transform per frame
(rotation, scale, translation), with a sine-tone audio track, so tests can compare detected
landmarks with the ground truth: the landmarks of the still photo moved by the same transform.
"""
from __future__ import annotations

from pathlib import Path

# the builders live in the package (the demo needs them too); re-exported for the tests
from hotfolders.samples import (
    FACES,
    Motion,
    astronaut_path,
    frame_matrix,
    grace_hopper_path,
    load_face,
    make_video,
    render_frames,
    write_video,
)

__all__ = ["FACES", "Motion", "astronaut_path", "frame_matrix", "grace_hopper_path", "load_face",
           "make_video", "render_frames", "write_video", "set_display_rotation", "two_people"]


def two_people(count: int, grace_from: int = 0):
    """``count`` 640x360 frames: the astronaut large on the left and, from frame
    ``grace_from`` on, Grace Hopper small on the right, both drifting right 1 px a frame.

    Returns the frames and the (rows, columns) slices that hold each face in frame 3.
    """
    import cv2
    import numpy as np

    astro = cv2.resize(load_face("astronaut")[0:260, 120:350], None, fx=1.2, fy=1.2)
    grace = cv2.resize(load_face("grace")[0:360, 100:420], None, fx=0.55, fy=0.55)
    alone = np.full((360, 640, 3), 50, np.uint8)
    ay, ax, gy, gx = 30, 40, 90, 400
    alone[ay:ay + astro.shape[0], ax:ax + astro.shape[1]] = astro
    both = alone.copy()
    both[gy:gy + grace.shape[0], gx:gx + grace.shape[1]] = grace
    frames = [np.roll(both if i >= grace_from else alone, i, axis=1) for i in range(count)]
    big = (slice(ay, ay + astro.shape[0]), slice(ax + 6, ax + astro.shape[1]))
    small = (slice(gy, gy + grace.shape[0]), slice(gx + 6, gx + grace.shape[1]))
    return frames, big, small


def set_display_rotation(path: Path, clockwise: int = 90) -> Path:
    """Mark an mp4 as "turn ``clockwise`` degrees for display" in its track header matrix.

    Phones store portrait video sideways plus this matrix; a reader that ignores it sees the
    faces lying on their side.
    """
    import struct

    raw = bytearray(Path(path).read_bytes())
    at = raw.find(b"tkhd")
    assert at > 0 and raw[at + 4] == 0, "expects a version-0 track header"
    # size+type, version/flags, creation, modification, track id, reserved, duration,
    # reserved(8), layer, alternate group, volume, reserved -> the 3x3 matrix (16.16 / 2.30)
    offset = at + 4 + 4 + 4 + 4 + 4 + 4 + 4 + 8 + 2 + 2 + 2 + 2
    one = 0x10000
    matrices = {90: (0, one, 0, -one, 0, 0, 0, 0, 0x40000000),
                180: (-one, 0, 0, 0, -one, 0, 0, 0, 0x40000000),
                270: (0, -one, 0, one, 0, 0, 0, 0, 0x40000000)}
    raw[offset:offset + 36] = struct.pack(">9i", *matrices[clockwise % 360])
    Path(path).write_bytes(bytes(raw))
    return Path(path)
