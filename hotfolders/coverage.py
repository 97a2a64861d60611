"""Pose coverage: does person B's training set show the poses and expressions A shows?

Entry point: :func:`coverage`. A swap only looks right where B's training faces cover what A
does in the target video (the walkthrough's main lesson). For every face of both sets it
reads the head pose (yaw, pitch from :func:`hotfolders.align.pose_angles` on the landmarks in
the face metadata; no pixels are decoded) and how open the mouth and eyes are. An A face is
covered when some B face lies within :data:`POSE_RADIUS` degrees of its pose; uncovered A
faces are grouped into yaw/pitch cells of :data:`CELL` degrees, and cells holding enough of
them are reported as missing regions. Mouth and eye openness are compared by level (closed,
open, wide) the same way. An optional heat-map PNG shows both sets side by side, missing
cells outlined in red.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import atomic
from . import embedding as emb
from .errors import InputError
from .sort import FaceFile, read_folder

log = logging.getLogger(__name__)

CELL = 10.0           # degrees per heat-map cell (cells are centred on multiples of CELL)
POSE_RADIUS = 8.0     # an A face is covered by a B face within this many degrees
YAW_RANGE = 60.0      # the map spans +-YAW_RANGE (faces beyond land in the edge cells)
PITCH_RANGE = 40.0
MOUTH_LEVELS = (("closed", 0.0, 0.08), ("open", 0.08, 0.35), ("wide open", 0.35, math.inf))
# eye shapes differ between people, so only blinks (closed eyes) are told apart
EYE_LEVELS = (("closed", 0.0, 0.15), ("open", 0.15, math.inf))


@dataclass
class FacePose:
    name: str
    yaw: float
    pitch: float
    mouth: float
    eyes: float


@dataclass
class MissingRegion:
    """A yaw/pitch cell (or an expression level) that A shows and B's set lacks."""

    kind: str                      # "pose", "mouth" or "eyes"
    a_count: int
    b_count: int
    yaw: tuple[float, float] | None = None
    pitch: tuple[float, float] | None = None
    level: str | None = None

    def label(self) -> str:
        if self.kind == "pose":
            return (f"yaw {self.yaw[0]:+.0f}..{self.yaw[1]:+.0f}, "
                    f"pitch {self.pitch[0]:+.0f}..{self.pitch[1]:+.0f}")
        return f"{'mouth' if self.kind == 'mouth' else 'eyes'} {self.level}"


@dataclass
class CoverageReport:
    """How well B covers A. ``fraction_covered``: share of A's faces with a B face nearby."""

    a_count: int
    b_count: int
    fraction_covered: float
    missing_regions: list[MissingRegion] = field(default_factory=list)
    a_faces: list[FacePose] = field(default_factory=list, repr=False)
    b_faces: list[FacePose] = field(default_factory=list, repr=False)
    min_count: int = 2
    image_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.missing_regions

    @property
    def missing_poses(self) -> list[MissingRegion]:
        return [r for r in self.missing_regions if r.kind == "pose"]

    def describe(self) -> str:
        """A short table for people: what fraction is covered and which regions B lacks."""
        lines = [f"pose coverage: {self.fraction_covered:.0%} of A's {self.a_count} faces have a "
                 f"B face within {POSE_RADIUS:.0f} degrees of their pose (B: {self.b_count} faces)"]
        poses = self.missing_poses
        if poses:
            lines.append("B lacks these poses of A (A faces without a B face nearby):")
            lines.append(f"  {'yaw (deg)':<12}{'pitch (deg)':<13}{'A faces':>7}")
            for r in poses:
                lines.append(f"  {r.yaw[0]:+4.0f}..{r.yaw[1]:+4.0f}  "
                             f"{r.pitch[0]:+4.0f}..{r.pitch[1]:+4.0f}   {r.a_count:>7}")
        for r in self.missing_regions:
            if r.kind != "pose":
                lines.append(f"B has no faces with {r.label()} (A has {r.a_count})")
        if self.ok:
            lines.append("B covers every pose and expression A shows.")
        else:
            lines.append("Add B faces in these poses/expressions, or expect weak swaps there.")
        if self.image_path:
            lines.append(f"heat-map: {self.image_path}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "a_count": self.a_count, "b_count": self.b_count,
            "fraction_covered": round(self.fraction_covered, 4),
            "pose_radius": POSE_RADIUS, "cell": CELL, "min_count": self.min_count,
            "missing_regions": [asdict(r) for r in self.missing_regions],
            "image": str(self.image_path) if self.image_path else None,
        }


def _dirs(dirs: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(dirs, (str, Path)):
        return [Path(dirs)]
    return [Path(d) for d in dirs]


def _faces_of(folder: Path) -> list[FaceFile]:
    """Faces of a folder and of its sub-folders one level down: a person's folder
    (``approved/<person>/``) holds one folder per source video."""
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    faces = read_folder(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        faces += read_folder(sub)
    if not faces:
        raise InputError(folder, "no face images (PNG files written by facedrop extract) here "
                                 "or in its sub-folders")
    return faces


def face_poses(dirs: str | Path | Iterable[str | Path]) -> list[FacePose]:
    """Pose and openness of every face in the folders (metadata only, fast)."""
    poses = []
    for folder in _dirs(dirs):
        for face in _faces_of(folder):
            yaw, pitch = emb.pose(face.meta)
            poses.append(FacePose(face.path.name, yaw, pitch, emb.mouth_openness(face.meta),
                                  emb.eye_openness(face.meta)))
    return poses


def cell_of(yaw: float, pitch: float) -> tuple[int, int]:
    """Cell indices (centred on multiples of CELL), clamped to the map."""
    ny, np_ = int(YAW_RANGE // CELL), int(PITCH_RANGE // CELL)
    return (int(np.clip(round(yaw / CELL), -ny, ny)), int(np.clip(round(pitch / CELL), -np_, np_)))


def _level(value: float, levels: Sequence[tuple[str, float, float]]) -> str:
    for name, lo, hi in levels:
        if lo <= value < hi:
            return name
    return levels[-1][0]


def coverage(a_dirs: str | Path | Iterable[str | Path], b_dirs: str | Path | Iterable[str | Path],
             out_image: str | Path | None = None, min_count: int | None = None) -> CoverageReport:
    """Compare A's poses/expressions (the target) with B's (the training faces).

    ``min_count`` (default: 2, or 2 % of A's faces if more) is how many uncovered A faces a
    region needs before it is reported, so one odd frame does not raise an alarm. Raises
    :class:`InputError` for empty folders or files that are not facedrop faces.
    """
    if out_image is not None and Path(out_image).suffix.lower() != ".png":
        raise InputError(out_image, "the heat-map is written as PNG: give a .png file name")
    a, b = face_poses(a_dirs), face_poses(b_dirs)
    if min_count is None:
        min_count = max(2, int(math.ceil(0.02 * len(a))))
    a_pose = np.array([(f.yaw, f.pitch) for f in a], dtype=np.float64)
    b_pose = np.array([(f.yaw, f.pitch) for f in b], dtype=np.float64)
    gaps = np.concatenate([  # nearest B pose of each A face, in blocks to bound memory
        np.sqrt(((block[:, None, :] - b_pose[None, :, :]) ** 2).sum(-1)).min(axis=1)
        for block in np.array_split(a_pose, max(1, len(a_pose) // 512))])
    covered = gaps <= POSE_RADIUS
    report = CoverageReport(a_count=len(a), b_count=len(b),
                            fraction_covered=float(covered.mean()), a_faces=a, b_faces=b,
                            min_count=min_count)
    uncovered: dict[tuple[int, int], int] = {}
    for face, ok in zip(a, covered):
        if not ok:
            key = cell_of(face.yaw, face.pitch)
            uncovered[key] = uncovered.get(key, 0) + 1
    b_cells: dict[tuple[int, int], int] = {}
    for face in b:
        key = cell_of(face.yaw, face.pitch)
        b_cells[key] = b_cells.get(key, 0) + 1
    for (cy, cp), count in sorted(uncovered.items(), key=lambda kv: (-kv[1], kv[0])):
        if count >= min_count:
            report.missing_regions.append(MissingRegion(
                kind="pose", a_count=count, b_count=b_cells.get((cy, cp), 0),
                yaw=((cy - 0.5) * CELL, (cy + 0.5) * CELL),
                pitch=((cp - 0.5) * CELL, (cp + 0.5) * CELL)))
    for kind, levels, attr in (("mouth", MOUTH_LEVELS, "mouth"), ("eyes", EYE_LEVELS, "eyes")):
        a_levels = [_level(getattr(f, attr), levels) for f in a]
        b_levels = {_level(getattr(f, attr), levels) for f in b}
        for name, _lo, _hi in levels:
            count = a_levels.count(name)
            if count >= min_count and name not in b_levels:
                report.missing_regions.append(MissingRegion(kind=kind, a_count=count, b_count=0,
                                                            level=name))
    if out_image is not None:
        report.image_path = Path(out_image)
        write_heatmap(report, report.image_path)
    log.debug("coverage: %.0f%% of %d A faces covered by %d B faces, %d missing regions",
              100 * report.fraction_covered, len(a), len(b), len(report.missing_regions))
    return report


def _grid(faces: list[FacePose]) -> np.ndarray:
    ny, np_ = int(YAW_RANGE // CELL), int(PITCH_RANGE // CELL)
    grid = np.zeros((2 * np_ + 1, 2 * ny + 1))
    for f in faces:
        cy, cp = cell_of(f.yaw, f.pitch)
        grid[np_ - cp, cy + ny] += 1  # row 0 = looking up (top of the image)
    return grid


def heatmap_image(report: CoverageReport) -> np.ndarray:
    """BGR image: A's and B's yaw/pitch histograms side by side, missing cells in red."""
    import cv2

    ny, np_ = int(YAW_RANGE // CELL), int(PITCH_RANGE // CELL)
    cols, rows = 2 * ny + 1, 2 * np_ + 1
    px = 30
    left, top, bottom, gap = 64, 58, 64, 40
    pw, ph = cols * px, rows * px
    width = left + 2 * pw + gap + 20
    height = top + ph + bottom
    img = np.full((height, width, 3), 250, np.uint8)
    missing = {(np_ - int(round(sum(r.pitch) / 2 / CELL)), int(round(sum(r.yaw) / 2 / CELL)) + ny)
               for r in report.missing_poses}
    font = cv2.FONT_HERSHEY_SIMPLEX
    title = (f"pose coverage: {report.fraction_covered:.0%} of A's {report.a_count} faces have a "
             f"B face within {POSE_RADIUS:.0f} deg")
    cv2.putText(img, title, (left, 20), font, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    for panel, (name, faces) in enumerate((("A (target)", report.a_faces),
                                           ("B (training faces)", report.b_faces))):
        grid = _grid(faces)
        x0 = left + panel * (pw + gap)
        cv2.putText(img, f"{name}: {len(faces)} faces", (x0, top - 12), font, 0.45,
                    (20, 20, 20), 1, cv2.LINE_AA)
        scale = np.log1p(grid) / max(np.log1p(grid).max(), 1e-9)
        colours = cv2.applyColorMap((scale * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
        for r in range(rows):
            for c in range(cols):
                y, x = top + r * px, x0 + c * px
                colour = colours[r, c].tolist() if grid[r, c] else (238, 238, 238)
                cv2.rectangle(img, (x, y), (x + px - 1, y + px - 1), colour, -1)
                cv2.rectangle(img, (x, y), (x + px - 1, y + px - 1), (214, 214, 214), 1)
                if grid[r, c]:
                    text = str(int(grid[r, c])) if grid[r, c] < 1000 else "1k+"
                    bright = scale[r, c] > 0.6
                    cv2.putText(img, text, (x + 3, y + px // 2 + 4), font, 0.32,
                                (0, 0, 0) if bright else (255, 255, 255), 1, cv2.LINE_AA)
        for r, c in missing:
            y, x = top + r * px, x0 + c * px
            cv2.rectangle(img, (x, y), (x + px - 1, y + px - 1), (0, 0, 230), 2)
            if panel == 1:
                cv2.line(img, (x + 4, y + 4), (x + px - 5, y + px - 5), (0, 0, 230), 1)
                cv2.line(img, (x + px - 5, y + 4), (x + 4, y + px - 5), (0, 0, 230), 1)
        cv2.rectangle(img, (x0 - 1, top - 1), (x0 + pw, top + ph), (120, 120, 120), 1)
        for c in range(0, cols, 2):  # yaw ticks every 2 cells
            value = (c - ny) * CELL
            cv2.putText(img, f"{value:+.0f}" if value else "0", (x0 + c * px + 2, top + ph + 14),
                        font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
        cv2.putText(img, "yaw (deg, + = turned to image right)", (x0, top + ph + 32), font, 0.38,
                    (60, 60, 60), 1, cv2.LINE_AA)
    for r in range(0, rows, 2):
        value = (np_ - r) * CELL
        cv2.putText(img, f"{value:+.0f}" if value else "0", (left - 30, top + r * px + px // 2 + 4),
                    font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    label = np.full((16, ph, 3), 250, np.uint8)  # vertical axis title, drawn then rotated
    cv2.putText(label, "pitch (deg, + = looking up)", (ph // 2 - 90, 12), font, 0.38,
                (60, 60, 60), 1, cv2.LINE_AA)
    img[top:top + ph, 6:22] = np.rot90(label)
    legend = (f"red: {len(missing)} cell(s) where A has >= {report.min_count} faces with no B face "
              f"nearby" if missing else "no missing pose regions")
    cv2.putText(img, legend, (left, height - 10), font, 0.42,
                (0, 0, 200) if missing else (0, 120, 0), 1, cv2.LINE_AA)
    return img


def write_heatmap(report: CoverageReport, path: str | Path) -> Path:
    """Write the heat-map PNG (atomically) and return its path."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", heatmap_image(report))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return atomic.write_bytes(path, buf.tobytes(), durable=False)


def report_json(report: CoverageReport) -> str:
    return json.dumps(report.to_json(), indent=1)
