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
           "make_video", "render_frames", "write_video", "set_display_rotation"]


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
