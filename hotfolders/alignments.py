"""The alignments file: ``alignments.json.gz``, versioned JSON in gzip, never pickle.

One entry per frame (index, timestamp) and per face the box, the 68-point landmarks, the full
mesh, the alignment matrix and small masks with their own matrix. Writes are atomic (temp
file, fsync, rename) and a ``.bak`` copy of the previous file is kept before any change, so a
crash or a bad run never costs the user a good alignments file.
"""
from __future__ import annotations

import base64
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from isal import igzip, isal_zlib

from . import atomic, safefs
from .errors import InputError

ALIGNMENTS_VERSION = 1
ALIGNMENTS_NAME = "alignments.json.gz"
MASK_STORE_SIZE = 128
# about 13 KB of JSON per face: 1 GiB holds some 80 000 faces (53 minutes of 25 fps video
# with every frame kept); more is refused before it is inflated (a gzip bomb costs nothing)
ALIGNMENTS_LIMIT = 1 << 30


def _round(points: np.ndarray, digits: int) -> list:
    return np.round(np.asarray(points, dtype=np.float64), digits).tolist()


def encode_mask(mask: np.ndarray) -> str:
    import cv2

    ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return base64.b64encode(buf.tobytes()).decode("ascii")


def decode_mask(data: str) -> np.ndarray:
    import cv2

    raw = np.frombuffer(base64.b64decode(data), np.uint8)
    mask = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError("stored mask is not a PNG")
    return mask


@dataclass
class FaceEntry:
    """One detected face of one frame, in frame coordinates."""

    box: list[float]                # x, y, w, h
    landmarks: np.ndarray           # 68x2
    mesh: np.ndarray                # 478x2 (or 468x2)
    matrix: np.ndarray              # 2x3: frame -> aligned crop of ``size`` px
    size: int
    masks: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {size, matrix, png}

    def to_json(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": _round(self.landmarks, 2),
            "mesh": _round(self.mesh, 1),
            "matrix": _round(self.matrix, 6),
            "size": self.size,
            "masks": self.masks,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FaceEntry":
        return cls(
            box=list(data["box"]),
            landmarks=np.asarray(data["landmarks"], dtype=np.float32).reshape(68, 2),
            mesh=np.asarray(data.get("mesh") or [], dtype=np.float32).reshape(-1, 2),
            matrix=np.asarray(data["matrix"], dtype=np.float64).reshape(2, 3),
            size=int(data["size"]),
            masks=dict(data.get("masks") or {}),
        )

    def mask(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A stored mask and its 2x3 matrix (frame -> mask pixels)."""
        entry = self.masks[name]
        return decode_mask(entry["png"]), np.asarray(entry["matrix"], dtype=np.float64)


@dataclass
class Alignments:
    """All faces found in one source file."""

    source: dict[str, Any]                       # name, sha256, width, height, fps, frames
    frames: dict[int, dict[str, Any]] = field(default_factory=dict)  # index -> {timestamp, faces}
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    version: int = ALIGNMENTS_VERSION

    def add(self, frame: int, timestamp: float, faces: list[FaceEntry]) -> None:
        self.frames[frame] = {"timestamp": round(float(timestamp), 6), "faces": faces}

    def faces(self, frame: int) -> list[FaceEntry]:
        entry = self.frames.get(frame)
        return entry["faces"] if entry else []

    def __iter__(self) -> Iterator[tuple[int, float, list[FaceEntry]]]:
        for index in sorted(self.frames):
            entry = self.frames[index]
            yield index, entry["timestamp"], entry["faces"]

    @property
    def face_count(self) -> int:
        return sum(len(e["faces"]) for e in self.frames.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "facedrop-alignments",
            "version": self.version,
            "created": self.created,
            "source": self.source,
            "settings": self.settings,
            "frames": [
                {"frame": i, "timestamp": ts, "faces": [f.to_json() for f in faces]}
                for i, ts, faces in self
            ],
        }

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> "Alignments":
        if not isinstance(data, dict) or data.get("format") != "facedrop-alignments":
            raise InputError(path, "not a facedrop alignments file")
        version = data.get("version")
        if not isinstance(version, int) or version > ALIGNMENTS_VERSION:
            raise InputError(path, f"alignments version {version!r} is newer than this facedrop "
                                   f"understands ({ALIGNMENTS_VERSION}); upgrade facedrop")
        try:
            result = cls(source=dict(data["source"]), settings=dict(data.get("settings") or {}),
                         created=str(data.get("created", "")), version=version)
            for entry in data["frames"]:
                faces = [FaceEntry.from_json(f) for f in entry["faces"]]
                result.add(int(entry["frame"]), float(entry["timestamp"]), faces)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"alignments file is corrupt ({type(exc).__name__}: {exc})") from None
        return result


def load(path: str | Path) -> Alignments:
    """Read an alignments file; any damage is an :class:`InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "alignments file not found")
    try:
        with safefs.open_regular(path, ALIGNMENTS_LIMIT) as fh:
            raw = igzip.GzipFile(fileobj=fh).read(ALIGNMENTS_LIMIT + 1)
        if len(raw) > ALIGNMENTS_LIMIT:
            raise InputError(path, f"alignments file holds more than {ALIGNMENTS_LIMIT >> 20} MB "
                                   "of landmarks; split the video into shorter parts")
        data = json.loads(raw)
    except (OSError, EOFError, ValueError, RecursionError, isal_zlib.error) as exc:
        raise InputError(path, f"alignments file is corrupt or truncated ({type(exc).__name__})") from None
    return Alignments.from_json(data, path)


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def save(alignments: Alignments, path: str | Path, backup: bool = True) -> None:
    """Write atomically; copy any existing file to ``<name>.bak`` first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ISA-L's gzip: a standard .gz, 20x faster than zlib's level 6 and 10% larger
    data = igzip.compress(json.dumps(alignments.to_json(), separators=(",", ":")).encode("utf-8"),
                          compresslevel=2, mtime=0)
    if backup and path.exists():
        shutil.copy2(path, backup_path(path))
    atomic.write_bytes(path, data)
