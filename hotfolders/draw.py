"""Overlays to check alignments by eye: landmarks, face-mesh oval and a mask on each frame.

Entry point: :func:`draw`. The mask drawn is the one stored in the alignments file (warped back
from its own small matrix), so what you see is exactly what training and conversion will use.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import alignments as al
from .errors import InputError
from .masks import MASK_TYPES, MESH_FACE_OVAL
from .video import read_frames

log = logging.getLogger(__name__)

_MASK_TINT = np.array([255, 64, 160], dtype=np.float32)  # magenta, visible on skin


def overlay(frame: np.ndarray, faces: list[al.FaceEntry], mask: str = "extended") -> np.ndarray:
    """A copy of ``frame`` with each face's mask tinted and its landmarks drawn."""
    import cv2

    out = frame.astype(np.float32)
    h, w = frame.shape[:2]
    for face in faces:
        if mask in face.masks:
            small, matrix = face.mask(mask)
            full = cv2.warpAffine(small, cv2.invertAffineTransform(matrix), (w, h),
                                  flags=cv2.INTER_LINEAR) / 255.0
            out = out * (1 - 0.35 * full[..., None]) + _MASK_TINT * (0.35 * full[..., None])
    out = np.clip(out, 0, 255).astype(np.uint8)
    for face in faces:
        scale = max(1, int(round(max(face.box[2], face.box[3]) / 150)))
        if len(face.mesh):
            oval = np.round(face.mesh[list(MESH_FACE_OVAL)]).astype(np.int32)
            cv2.polylines(out, [oval], True, (0, 200, 255), scale, cv2.LINE_AA)
        for x, y in np.round(face.landmarks).astype(int):
            cv2.circle(out, (int(x), int(y)), scale + 1, (255, 255, 0), -1, cv2.LINE_AA)
        x, y, bw, bh = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x, y), (x + bw, y + bh), (0, 255, 0), scale, cv2.LINE_AA)
    return out


def draw(input_path: str | Path, alignments_path: str | Path, out_dir: str | Path,
         mask: str = "extended", every_n: int = 1, progress=None) -> int:
    """Write ``<stem>_<frame>.jpg`` overlays for frames that have faces; returns the count."""
    import cv2

    if mask not in MASK_TYPES:
        raise ValueError(f"unknown mask {mask!r}")
    source = Path(input_path)
    data = al.load(alignments_path)
    if data.source.get("name") not in (None, source.name):
        log.warning("alignments were made from %s, drawing on %s", data.source.get("name"),
                    source.name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for n, frame in enumerate(read_frames(source, every_n)):
        faces = data.faces(frame.index)
        if faces:
            image = overlay(frame.image, faces, mask)
            path = out_dir / f"{source.stem}_{frame.index:06d}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            written += 1
        if progress:
            progress(n + 1, 0)
    if written == 0:
        raise InputError(Path(alignments_path), f"no faces of {source.name} in this alignments file")
    return written
